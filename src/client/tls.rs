//! The CLI and TLS: its own side of a TLS connection (`--ca-cert`,
//! `--client-cert`, `--client-key`), one-line explanations of TLS
//! failures, and `drover tls …` (making and reading certificates, offline).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{ClientOpts, Failure, Output, EXIT_FAILED, EXIT_USAGE};
use crate::tls::certs::{self, Subject, CA_DAYS, CERT_DAYS};

/// The CLI's TLS settings, loaded from the files the flags name.
pub struct ClientTls {
    ca: Certificate,
    identity: Option<Identity>,
}

impl ClientTls {
    /// None without `--ca-cert`; a missing file is a usage error.
    pub fn load(opts: &ClientOpts) -> Result<Option<ClientTls>, Failure> {
        if opts.client_cert.is_some() != opts.client_key.is_some() {
            return Err(Failure {
                message: "give both --client-cert and --client-key (DROVER_CLIENT_CERT, \
                          DROVER_CLIENT_KEY), or neither"
                    .into(),
                code: EXIT_USAGE,
            });
        }
        let Some(ca_path) = &opts.ca_cert else {
            return Ok(None);
        };
        let read = |path: &PathBuf, flag: &str| {
            std::fs::read(path).map_err(|e| Failure {
                message: format!("cannot read {} ({flag}): {e}", path.display()),
                code: EXIT_USAGE,
            })
        };
        let ca = Certificate::from_pem(read(ca_path, "--ca-cert / DROVER_CACERT")?);
        if let Some(cert) = &opts.client_cert {
            // A node refuses an expired certificate only after the TLS 1.3
            // handshake, as a cut connection: say why before trying.
            if let Ok(inspected) = certs::inspect(cert) {
                if inspected.expires_in_secs < 0 {
                    return Err(Failure {
                        message: format!(
                            "the client certificate {} (--client-cert / DROVER_CLIENT_CERT) \
                             expired on {}: renew it with `drover tls cert create --client ...`",
                            cert.display(),
                            inspected.not_after
                        ),
                        code: super::EXIT_UNREACHABLE,
                    });
                }
            }
        }
        let identity = match (&opts.client_cert, &opts.client_key) {
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read(cert, "--client-cert / DROVER_CLIENT_CERT")?,
                read(key, "--client-key / DROVER_CLIENT_KEY")?,
            )),
            _ => None,
        };
        super::failure::without_client_cert(identity.is_none());
        Ok(Some(ClientTls { ca, identity }))
    }
}

/// The endpoint of one address: with TLS loaded, `host:port` and
/// `https://…` speak TLS (verifying the node's certificate against the
/// address's host name or IP); `http://…` is plaintext either way.
pub fn endpoint(raw: &str, tls: Option<&ClientTls>) -> Result<Endpoint, String> {
    let url = match (raw.contains("://"), tls) {
        (true, _) => raw.to_string(),
        (false, Some(_)) => format!("https://{raw}"),
        (false, None) => format!("http://{raw}"),
    };
    let endpoint = Endpoint::from_shared(url).map_err(|_| "not a valid address".to_string())?;
    let (Some(tls), true) = (tls, raw.starts_with("https://") || !raw.contains("://")) else {
        return Ok(endpoint);
    };
    let mut config = ClientTlsConfig::new().ca_certificate(tls.ca.clone());
    if let Some(identity) = &tls.identity {
        config = config.identity(identity.clone());
    }
    endpoint
        .tls_config(config)
        .map_err(|e| format!("cannot set up TLS: {e}"))
}

/// A TLS failure (the whole error chain of a failed connect) in one line
/// naming the cause and the flag that fixes it; None if it is not one.
pub fn explain_failure(chain: &str, tls: bool) -> Option<String> {
    let says = |needle: &str| chain.contains(needle);
    let why = if says("UnknownIssuer") || says("BadSignature") {
        "the node's certificate is not signed by the CA given: check --ca-cert / DROVER_CACERT"
    } else if says("NotValidForName") || says("not valid for name") {
        "the node's certificate is not valid for this address: connect by a name or IP it \
         carries (see `drover tls cert inspect`), or reissue it with --dns / --ip"
    } else if says("Expired") || says("certificate expired") {
        "a certificate has expired: renew it with `drover tls cert create` (see `drover tls \
         cert inspect` for its dates)"
    } else if says("CertificateRequired") || says("HandshakeFailure") && tls {
        "the node requires a client certificate signed by its CA: pass --client-cert and \
         --client-key (DROVER_CLIENT_CERT, DROVER_CLIENT_KEY)"
    } else if tls
        && (says("InvalidContentType") || says("corrupt message") || says("record overflow"))
    {
        "the node does not speak TLS: drop --ca-cert, or use an http:// address"
    } else if !tls
        && (says("connection reset") || says("broken pipe") || says("frame with invalid size"))
    {
        "the connection was cut at once: if the cluster uses TLS, pass --ca-cert (DROVER_CACERT)"
    } else {
        return None;
    };
    Some(why.to_string())
}

/// `drover tls …`
#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// The cluster's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Node and client certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

/// `drover tls ca …`
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Make a CA: writes DIR/ca.pem and DIR/ca-key.pem (keep the key offline).
    Create {
        /// Where to write the files.
        #[arg(long)]
        out_dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = CA_DAYS)]
        days: u32,
    },
}

/// `drover tls cert …`
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Make a node certificate (`--node ID --cluster NAME`: DIR/node-ID.pem)
    /// or a client certificate (`--client NAME`: DIR/client-NAME.pem),
    /// signed by the CA in --ca-dir; existing files are replaced (renewal).
    Create {
        /// The directory holding ca.pem and ca-key.pem.
        #[arg(long)]
        ca_dir: PathBuf,
        /// A node certificate for this node id.
        #[arg(long, conflicts_with = "client", requires = "cluster")]
        node: Option<u64>,
        /// The node's cluster id.
        #[arg(long, requires = "node")]
        cluster: Option<String>,
        /// Another DNS name the node is reached at (repeatable).
        #[arg(long, requires = "node")]
        dns: Vec<String>,
        /// An IP address the node is reached at (repeatable).
        #[arg(long, requires = "node")]
        ip: Vec<IpAddr>,
        /// A client certificate with this name.
        #[arg(long)]
        client: Option<String>,
        /// Where to write the files.
        #[arg(long)]
        out_dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = CERT_DAYS)]
        days: u32,
    },
    /// Print a certificate's subject, names, kind (ca/node/client) and expiry.
    Inspect {
        /// A PEM certificate file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// Runs a `drover tls` command (files only, no cluster).
pub fn tls(command: TlsCommand) -> ExitCode {
    let outcome = match command {
        TlsCommand::Ca {
            command: CaCommand::Create { out_dir, days },
        } => certs::create_ca(&out_dir, days).map(|w| print_written(&w)),
        TlsCommand::Cert {
            command:
                CertCommand::Create {
                    ca_dir,
                    node,
                    cluster,
                    dns,
                    ip,
                    client,
                    out_dir,
                    days,
                },
        } => {
            let subject = match (node, cluster, client) {
                (Some(id), Some(cluster), None) => Subject::Node {
                    id,
                    cluster,
                    dns,
                    ips: ip,
                },
                (None, None, Some(name)) => Subject::Client { name },
                _ => {
                    eprintln!("drover: give either --node ID --cluster NAME, or --client NAME");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            certs::create_cert(&ca_dir, &subject, &out_dir, days).map(|w| print_written(&w))
        }
        TlsCommand::Cert {
            command: CertCommand::Inspect { file, output },
        } => certs::inspect(&file).map(|c| print_inspected(&c, output)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(certs::CertError::Usage(message)) => {
            eprintln!("drover: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("drover: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn print_written(written: &certs::Written) {
    println!("wrote {}", written.cert.display());
    println!("wrote {} (mode 0600)", written.key.display());
}

fn print_inspected(cert: &certs::Inspected, output: Output) {
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "subject": cert.subject,
                "issuer": cert.issuer,
                "kind": cert.kind.as_str(),
                "dns_names": cert.dns_names,
                "ips": cert.ips,
                "not_before": cert.not_before,
                "not_after": cert.not_after,
                "expires_in_secs": cert.expires_in_secs,
            })
        ),
        Output::Table | Output::Wide => {
            println!("Subject    = {}", cert.subject);
            println!("Issuer     = {}", cert.issuer);
            println!("Kind       = {}", cert.kind.as_str());
            println!("DNS names  = {}", cert.dns_names.join(", "));
            println!("IPs        = {}", cert.ips.join(", "));
            println!("Not before = {}", cert.not_before);
            let days = cert.expires_in_secs / 86_400;
            let left = match cert.expires_in_secs {
                s if s < 0 => format!("EXPIRED {} days ago", -days),
                _ => format!("in {days} days"),
            };
            println!("Not after  = {} ({left})", cert.not_after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::explain_failure;

    #[test]
    fn tls_failures_as_rustls_words_them_are_explained_with_the_fix() {
        // Error chains as the CLI met them (rustls 0.23 through tonic).
        let mismatch = "transport error: invalid peer certificate: certificate not valid for \
                        name \"localhost\"; certificate is only valid for DnsName(\"node-1.c.drover\")";
        assert!(explain_failure(mismatch, true).is_some_and(|w| w.contains("--dns / --ip")));
        let expired = "transport error: invalid peer certificate: certificate expired: \
                       verification time 1767225600 (UNIX), but certificate is not valid after 1";
        assert!(explain_failure(expired, true).is_some_and(|w| w.contains("renew")));
        let unknown = "transport error: invalid peer certificate: UnknownIssuer";
        assert!(explain_failure(unknown, true).is_some_and(|w| w.contains("--ca-cert")));
        assert_eq!(
            explain_failure("tcp connect error: Connection refused", true),
            None
        );
    }
}
