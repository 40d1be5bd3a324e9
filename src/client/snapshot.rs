//! `drover operator snapshot save|inspect|restore`: backups of the job
//! table and the tokens (through `node::backup`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::{call, Client, Failure, Output, EXIT_FAILED, EXIT_USAGE};
use crate::node::backup::{self, BackupSummary};
use crate::proto::v1 as pb;

/// A backup may take long to build and move: a generous deadline.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// `drover operator snapshot …`
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save a consistent backup of the cluster (jobs, tokens, as of now)
    /// from the leader into FILE.
    Save { file: PathBuf },
    /// Verify FILE and print its header and its jobs by state. Offline.
    Inspect { file: PathBuf },
    /// Restore FILE. Online (default): replaces the cluster's jobs and
    /// tokens with the backup's, on every node. Offline, with --data-dir:
    /// seeds an empty data directory as the only member of a new cluster
    /// (disaster recovery; add the other nodes with add-peer).
    Restore {
        file: PathBuf,
        /// Offline: the empty data directory of the new node.
        #[arg(long, requires = "node_id")]
        data_dir: Option<PathBuf>,
        /// Offline: the new node's id (its config's node_id).
        #[arg(long, requires = "data_dir")]
        node_id: Option<u64>,
        /// Offline: the new cluster's id (its config's cluster_id);
        /// default: the backup's.
        #[arg(long, requires = "data_dir")]
        cluster_id: Option<String>,
        /// Offline: where the new node's peers reach its Raft listener.
        #[arg(long, default_value = "127.0.0.1:7701", requires = "data_dir")]
        raft_addr: String,
        /// Offline: where clients and peers reach its API.
        #[arg(long, default_value = "127.0.0.1:7700", requires = "data_dir")]
        api_addr: String,
    },
}

impl SnapshotCommand {
    /// Whether the command works on files only (no cluster to reach).
    pub fn is_offline(&self) -> bool {
        matches!(
            self,
            SnapshotCommand::Inspect { .. }
                | SnapshotCommand::Restore {
                    data_dir: Some(_),
                    ..
                }
        )
    }
}

fn failed(message: String) -> Failure {
    Failure {
        message,
        code: EXIT_FAILED,
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure {
        message: format!("cannot read {}: {e}", path.display()),
        code: EXIT_USAGE,
    })
}

fn print_summary(output: Output, summary: &BackupSummary) {
    match output {
        Output::Json => println!("{}", crate::api::json::to_value(summary)),
        Output::Table | Output::Wide => {
            let h = &summary.header;
            println!("Format       = {}", h.format);
            println!("Cluster      = {}", h.cluster_id);
            println!("Index        = {}", h.index);
            println!("Term         = {}", h.term);
            println!("Created      = {}", super::human_time(h.created_at_ms));
            println!("Body         = {} bytes ({})", h.body_bytes, h.compression);
            println!("Body SHA-256 = {}", h.body_sha256);
            println!("Members      = {:?}", summary.members);
            println!("Tokens       = {}", summary.tokens);
            println!("Jobs         = {}", summary.jobs);
            for (state, n) in &summary.jobs_by_state {
                println!("  {state:<10} {n}");
            }
        }
    }
}

/// The commands that need no cluster: inspect, offline restore.
pub fn offline(output: Output, cmd: SnapshotCommand) -> ExitCode {
    let outcome = match cmd {
        SnapshotCommand::Inspect { file } => read_file(&file).and_then(|bytes| {
            let summary =
                backup::inspect(&bytes).map_err(|e| failed(format!("{}: {e}", file.display())))?;
            print_summary(output, &summary);
            Ok(())
        }),
        SnapshotCommand::Restore {
            file,
            data_dir: Some(data_dir),
            node_id: Some(node_id),
            cluster_id,
            raft_addr,
            api_addr,
        } => seed(
            output, &file, &data_dir, node_id, cluster_id, raft_addr, api_addr,
        ),
        _ => Err(Failure {
            message: "this command needs a cluster".into(),
            code: EXIT_USAGE,
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("drover: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn seed(
    output: Output,
    file: &Path,
    data_dir: &Path,
    node_id: u64,
    cluster_id: Option<String>,
    raft_addr: String,
    api_addr: String,
) -> Result<(), Failure> {
    if node_id == 0 {
        return Err(Failure {
            message: "--node-id must be positive".into(),
            code: EXIT_USAGE,
        });
    }
    let bytes = read_file(file)?;
    let peer = crate::raft::PeerInfo {
        raft_addr: raft_addr.clone(),
        api_addr: api_addr.clone(),
    };
    let seeded = backup::seed_data_dir(&bytes, data_dir, node_id, cluster_id, peer)
        .map_err(|e| failed(format!("{}: {e}", file.display())))?;
    let cluster_id = seeded.cluster_id.clone();
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "data_dir": data_dir.display().to_string(),
                "cluster_id": cluster_id,
                "node_id": node_id,
                "index": seeded.index,
                "jobs": seeded.jobs,
                "tokens": seeded.tokens,
            })
        ),
        Output::Table | Output::Wide => {
            println!(
                "seeded {} as node {node_id} of cluster {cluster_id}: {} jobs, {} tokens, at log index {}",
                data_dir.display(),
                seeded.jobs,
                seeded.tokens,
                seeded.index
            );
            eprintln!(
                "next: start it with a config whose node_id = {node_id}, cluster_id = \"{cluster_id}\", \
                 data_dir = \"{}\", listening where {raft_addr} and {api_addr} reach it (no initial_members needed); \
                 then add each new node with `drover operator raft add-peer`",
                data_dir.display()
            );
        }
    }
    Ok(())
}

/// The commands that talk to the cluster: save, online restore.
pub async fn online(
    mut client: Client,
    output: Output,
    cmd: SnapshotCommand,
) -> Result<u8, Failure> {
    match cmd {
        SnapshotCommand::Save { file } => {
            let mut stream = client
                .save_snapshot(call(pb::SaveSnapshotRequest {}, BACKUP_TIMEOUT))
                .await?
                .into_inner();
            let mut bytes = Vec::new();
            let mut bar: Option<indicatif::ProgressBar> = None;
            while let Some(chunk) = stream.message().await? {
                if bar.is_none() && output != Output::Json {
                    let b = indicatif::ProgressBar::with_draw_target(
                        Some(chunk.total_bytes),
                        indicatif::ProgressDrawTarget::stderr(),
                    );
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    bar = Some(b);
                }
                bytes.extend_from_slice(&chunk.data);
                if let Some(b) = &bar {
                    b.set_position(bytes.len() as u64);
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            // Checked before it is written: what lands on disk verifies.
            let summary = backup::inspect(&bytes)
                .map_err(|e| failed(format!("the cluster sent a bad backup: {e}")))?;
            backup::write_backup_file(&file, &bytes)
                .map_err(|e| failed(format!("cannot write {}: {e}", file.display())))?;
            match output {
                Output::Json => println!("{}", crate::api::json::to_value(&summary)),
                Output::Table | Output::Wide => println!(
                    "saved {} ({} bytes): cluster {}, index {}, {} jobs, {} tokens",
                    file.display(),
                    bytes.len(),
                    summary.header.cluster_id,
                    summary.header.index,
                    summary.jobs,
                    summary.tokens
                ),
            }
        }
        SnapshotCommand::Restore { file, .. } => {
            let bytes = read_file(&file)?;
            // Refuse a damaged or foreign file before touching the cluster.
            let summary =
                backup::inspect(&bytes).map_err(|e| failed(format!("{}: {e}", file.display())))?;
            let chunks: Vec<pb::SnapshotChunk> = bytes
                .chunks(1 << 20)
                .map(|c| pb::SnapshotChunk {
                    data: c.to_vec(),
                    total_bytes: 0,
                })
                .collect();
            let mut request = tonic::Request::new(futures::stream::iter(chunks));
            request.set_timeout(BACKUP_TIMEOUT);
            let response = client.restore_snapshot(request).await?.into_inner();
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({
                        "index": response.index,
                        "jobs": response.jobs,
                        "tokens": response.tokens,
                        "backup_cluster_id": response.backup_cluster_id,
                        "backup_index": response.backup_index,
                    })
                ),
                Output::Table | Output::Wide => println!(
                    "restored {} (cluster {}, index {}): {} jobs, {} tokens, in effect at log index {}",
                    file.display(),
                    summary.header.cluster_id,
                    summary.header.index,
                    response.jobs,
                    response.tokens,
                    response.index
                ),
            }
        }
        SnapshotCommand::Inspect { .. } => {
            return Err(Failure {
                message: "inspect needs no cluster".into(),
                code: EXIT_USAGE,
            })
        }
    }
    Ok(0)
}
