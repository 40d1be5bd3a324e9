//! `drover acl bootstrap|token create|list|revoke|self`.

use clap::Subcommand;

use super::{call, human_time, Client, Failure, Output, CALL_TIMEOUT};
use crate::api::json::{self, TokenJson, TokenSecretJson};
use crate::proto::v1 as pb;

/// `drover acl …`
#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Create the first admin token (once per cluster) and print its secret.
    Bootstrap,
    /// Manage tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `drover acl token …`
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown this once).
    Create {
        /// A human label, e.g. ci or alice.
        #[arg(long)]
        name: String,
        /// admin, operator, submitter or viewer.
        #[arg(long)]
        role: String,
    },
    /// List every token (never their secrets).
    List,
    /// Revoke a token by accessor id; refused on every reachable node once
    /// this returns.
    Revoke { accessor: String },
    /// Show the token this CLI is using.
    #[command(name = "self")]
    Whoami,
}

fn print_secret(output: Output, message: &pb::AclTokenSecret) {
    let shown = TokenSecretJson::from(message);
    match output {
        Output::Json => println!("{}", json::to_value(&shown)),
        Output::Table | Output::Wide => {
            println!("Accessor ID = {}", shown.token.accessor);
            println!("Secret      = {}", shown.secret);
            println!("Name        = {}", shown.token.name);
            println!("Role        = {}", shown.token.role);
            eprintln!("Keep the secret safe: it is not stored and cannot be shown again.");
        }
    }
    warn_unconfirmed(&shown.unconfirmed_nodes);
}

fn warn_unconfirmed(nodes: &[u64]) {
    if !nodes.is_empty() {
        eprintln!(
            "warning: nodes {nodes:?} did not confirm the change in time (down or cut off); it takes effect there once they catch up"
        );
    }
}

fn print_tokens(output: Output, tokens: &[pb::AclToken]) {
    let tokens: Vec<TokenJson> = tokens.iter().map(TokenJson::from).collect();
    match output {
        Output::Json => println!("{}", json::to_value(&tokens)),
        Output::Table | Output::Wide => {
            println!("{:<26}  {:<20}  {:<9}  CREATED", "ACCESSOR", "NAME", "ROLE");
            for t in &tokens {
                let created = match t.created_at_ms {
                    0 => "-".to_string(),
                    ms => human_time(ms),
                };
                println!(
                    "{:<26}  {:<20}  {:<9}  {}",
                    t.accessor, t.name, t.role, created
                );
            }
        }
    }
}

/// Runs a `drover acl` command.
pub async fn acl(mut client: Client, output: Output, cmd: AclCommand) -> Result<u8, Failure> {
    match cmd {
        AclCommand::Bootstrap => {
            let message = client
                .acl_bootstrap(call(pb::AclBootstrapRequest {}, CALL_TIMEOUT))
                .await?
                .into_inner();
            print_secret(output, &message);
        }
        AclCommand::Token(TokenCommand::Create { name, role }) => {
            let message = client
                .create_token(call(pb::CreateTokenRequest { name, role }, CALL_TIMEOUT))
                .await?
                .into_inner();
            print_secret(output, &message);
        }
        AclCommand::Token(TokenCommand::List) => {
            let message = client
                .list_tokens(call(pb::ListTokensRequest {}, CALL_TIMEOUT))
                .await?
                .into_inner();
            print_tokens(output, &message.tokens);
        }
        AclCommand::Token(TokenCommand::Revoke { accessor }) => {
            let message = client
                .revoke_token(call(pb::RevokeTokenRequest { accessor }, CALL_TIMEOUT))
                .await?
                .into_inner();
            let token = message.token.unwrap_or_default();
            match output {
                Output::Json => println!("{}", json::to_value(&TokenJson::from(&token))),
                Output::Table | Output::Wide => {
                    println!("revoked {} ({})", token.accessor, token.name)
                }
            }
            warn_unconfirmed(&message.unconfirmed_nodes);
        }
        AclCommand::Token(TokenCommand::Whoami) => {
            let token = client
                .who_am_i(call(pb::WhoAmIRequest {}, CALL_TIMEOUT))
                .await?
                .into_inner();
            print_tokens(output, &[token]);
        }
    }
    Ok(0)
}
