//! The `drover` binary: the agent (a cluster node) and the CLI in one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use drover::client::{
    self, AclCommand, ClientOpts, JobCommand, NodeCommand, RaftCommand, SnapshotCommand,
};
use drover::config::Config;

/// glibc's malloc showed up as the largest single cost of a busy node
/// (allocation-heavy paths: gRPC frames, sled pages, log entries); mimalloc
/// serves the same workload with far less CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "drover",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("DROVER_COMMIT"), ")"),
    about = "A durable distributed job scheduler for shell commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand, Debug)]
enum Top {
    /// Run a cluster node.
    Agent(AgentArgs),
    /// Submit and inspect jobs.
    Job {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Inspect and drain the nodes that run jobs.
    Node {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Print a shell completion script, e.g.
    /// `drover completions bash > /etc/bash_completion.d/drover`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `drover man | man -l -`; with
    /// `--out-dir DIR`, write one page per command there (drover.1,
    /// drover-job-run.1, …) for `/usr/local/share/man/man1`.
    Man {
        /// Write every command's page into this directory instead.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Access control: bootstrap, tokens.
    Acl {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: AclCommand,
    },
    /// Cluster operations.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// TLS certificates: make a CA, node and client certificates; inspect one.
    Tls {
        #[command(subcommand)]
        command: client::tls::TlsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum OperatorCommand {
    /// Raft membership and leadership.
    Raft {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: RaftCommand,
    },
    /// Backups: save, inspect, restore (online, or offline into a new node).
    Snapshot {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

#[derive(clap::Args, Debug)]
struct AgentArgs {
    /// One node on 127.0.0.1 with embedded defaults, data in ./drover-data.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// Node configuration file (see config/).
    #[arg(long, required_unless_present = "dev")]
    config: Option<PathBuf>,
    /// Overrides the data directory of the config (and DROVER_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Validate the configuration (file, DROVER_* overrides, flags), print
    /// the effective configuration and exit without starting.
    #[arg(long)]
    check: bool,
    /// Log format, overriding `log.format` of the config: `text` (human)
    /// or `json` (one object per line, for log shippers).
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let cli = parse_args();
    if !matches!(cli.command, Top::Agent(_)) {
        quiet_on_closed_stdout();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drover: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Top::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "drover", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if let Top::Man { out_dir } = &cli.command {
        return man(out_dir.as_deref());
    }
    if let Top::Tls { command } = cli.command {
        return client::tls::tls(command);
    }
    runtime.block_on(async move {
        match cli.command {
            Top::Completions { .. } | Top::Tls { .. } | Top::Man { .. } => ExitCode::SUCCESS,
            Top::Agent(args) => agent(args).await,
            Top::Job { opts, command } => {
                client::run(opts, |c, o| client::job(c, o, command)).await
            }
            Top::Node { mut opts, command } => {
                if let NodeCommand::Join { addr, .. } = &command {
                    opts.address = addr.clone();
                }
                client::run(opts, |c, o| client::node(c, o.output, command)).await
            }
            Top::Acl { opts, command } => {
                client::run(opts, |c, o| client::acl(c, o.output, command)).await
            }
            Top::Operator {
                command: OperatorCommand::Raft { opts, command },
            } => {
                client::run(opts, |c, o| async move {
                    client::raft(c, o, command).await.map(|()| 0)
                })
                .await
            }
            Top::Operator {
                command: OperatorCommand::Snapshot { opts, command },
            } => {
                if command.is_offline() {
                    client::snapshot_offline(opts.output, command)
                } else {
                    client::run(opts, |c, o| client::snapshot_online(c, o.output, command)).await
                }
            }
        }
    })
}

/// The command line, or exit 2 with clap's message; a mistyped command
/// gets the nearest real one suggested (clap's own tip misses swapped
/// letters such as `jbo` for `job`).
fn parse_args() -> Cli {
    let error = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(error) => error,
    };
    let tip = match error.kind() {
        clap::error::ErrorKind::InvalidSubcommand => nearest_subcommand(&error),
        _ => None,
    };
    let _ = error.print();
    if let Some(name) = tip {
        eprintln!("\ntip: did you mean `{name}`?");
    }
    std::process::exit(error.exit_code());
}

/// The subcommand closest to the unknown one (at most 2 edits away), among
/// those of the command it was given to.
fn nearest_subcommand(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(unknown)) = error.get(ContextKind::InvalidSubcommand) else {
        return None;
    };
    let mut command = Cli::command();
    for word in std::env::args().skip(1) {
        if word == *unknown {
            break;
        }
        if let Some(sub) = command.find_subcommand(&word).cloned() {
            command = sub;
        }
    }
    if error.to_string().contains("similar") {
        return None; // clap already suggests one
    }
    command
        .get_subcommands()
        .map(|c| {
            (
                strsim::damerau_levenshtein(unknown, c.get_name()),
                c.get_name(),
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, name)| name.to_string())
}

/// `drover man`: the manual, generated from the same definition as `--help`.
fn man(out_dir: Option<&std::path::Path>) -> ExitCode {
    let written = match out_dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), dir)),
        None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover: cannot write the manual: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A CLI whose output is piped into `head` or `grep -q` ends quietly when
/// the reader goes away, as Unix tools do (exit 141, as if by SIGPIPE),
/// rather than with a panic message. SIGPIPE itself stays ignored: a node
/// that cuts a (TLS) connection must be an error the CLI explains, not a
/// signal that kills it without a word.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // println! and clap_complete panic so on a closed stdout; nothing
        // network-facing in the CLI unwraps a write.
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

async fn agent(args: AgentArgs) -> ExitCode {
    // File (or embedded dev defaults), then DROVER_* variables, then flags.
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with("DROVER_"))
        .collect();
    let mut config = match Config::load(args.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("drover: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    config.log.format = args.log_format.unwrap_or(config.log.format);
    if args.check {
        return check(&config);
    }
    init_logging(&config);
    let node = match drover::node::Node::start(config) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("drover: {e}");
            return ExitCode::FAILURE;
        }
    };
    match drover::api::serve(node, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `drover agent --check`: the effective configuration on stdout; the
/// listen addresses that cannot be bound now as warnings on stderr (the node
/// itself may be the one holding them).
fn check(config: &Config) -> ExitCode {
    let text = match config.to_toml() {
        Ok(text) => text,
        Err(e) => {
            eprintln!("drover: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{text}");
    let listeners = [
        ("listen.api", Some(config.listen.api)),
        ("listen.raft", Some(config.listen.raft)),
        ("listen.http", config.listen.http),
    ];
    for (key, addr) in listeners {
        if let Some(addr) = addr {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                eprintln!(
                    "warning: {key} {addr} cannot be bound now: {e} (fine if this node is running)"
                );
            }
        }
    }
    eprintln!("config OK");
    ExitCode::SUCCESS
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file, a pipe or journald
    // gets plain text (and NO_COLOR is honoured, as 12-factor tools do).
    use std::io::IsTerminal as _;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                let signal = tokio::select! {
                    _ = ctrl_c => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                };
                tracing::info!(
                    "{signal} received: stopping (leadership handed over first if this node leads)"
                );
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
