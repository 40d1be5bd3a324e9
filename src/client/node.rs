//! `drover node status|drain`.

use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::Client;
use super::{call, Failure, Output, CALL_TIMEOUT, EXIT_FAILED};
use crate::proto::v1 as pb;

/// `drover node …`
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List the nodes with their status, capacity and use.
    Status {
        /// Only this node.
        id: Option<u64>,
        /// Read through the leader (linearizable).
        #[arg(long)]
        consistent: bool,
    },
    /// Add the node of a config file to the cluster that ADDR (any member's
    /// API address) belongs to: as a learner first, promoted to voter once it
    /// has caught up. Run it on the new node after starting its agent with
    /// an empty data dir and no initial_members.
    Join {
        /// Any member's API address, e.g. http://10.0.0.1:7700.
        addr: String,
        /// The new node's config (its node_id and advertised addresses).
        #[arg(long, default_value = "/etc/drover/drover.toml")]
        config: std::path::PathBuf,
        /// Keep it a non-voting learner.
        #[arg(long)]
        learner_only: bool,
    },
    /// Stop placing new work on a node. With --deadline, jobs still running
    /// there when it passes are stopped and re-queued elsewhere.
    Drain {
        id: u64,
        /// e.g. 10m; without it, running jobs finish where they are.
        #[arg(long, value_parser = humantime::parse_duration)]
        deadline: Option<Duration>,
        /// End the drain: the node takes work again.
        #[arg(long)]
        disable: bool,
    },
}

fn node_json(n: &pb::NodeInfo) -> serde_json::Value {
    crate::api::json::to_value(&crate::api::json::NodeJson::from(n))
}

fn print_table(nodes: &[pb::NodeInfo]) {
    println!(
        "{:<4}  {:<6}  {:<8}  {:<13}  {:<15}  {:<4}  LABELS",
        "ID", "STATUS", "DRAINING", "CPU (m)", "MEMORY (MiB)", "JOBS"
    );
    for n in nodes {
        let mut labels: Vec<_> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        println!(
            "{:<4}  {:<6}  {:<8}  {:<13}  {:<15}  {:<4}  {}",
            n.id,
            n.status,
            n.draining,
            format!("{}/{}", n.used_cpu_millis, n.cpu_millis),
            format!("{}/{}", n.used_memory_mib, n.memory_mib),
            n.active_jobs,
            labels.join(",")
        );
    }
}

/// Runs a `drover node` command.
pub async fn node(mut client: Client, output: Output, cmd: NodeCommand) -> Result<u8, Failure> {
    let nodes = match cmd {
        NodeCommand::Status { id, consistent } => {
            let mut nodes = client
                .list_nodes(call(pb::ListNodesRequest { consistent }, CALL_TIMEOUT))
                .await?
                .into_inner()
                .nodes;
            if let Some(id) = id {
                nodes.retain(|n| n.id == id);
                if nodes.is_empty() {
                    return Err(Failure {
                        message: format!("no node {id} in the node table"),
                        code: EXIT_FAILED,
                    });
                }
            }
            nodes
        }
        NodeCommand::Join {
            config,
            learner_only,
            ..
        } => {
            let env: Vec<(String, String)> = std::env::vars()
                .filter(|(name, _)| name.starts_with("DROVER_"))
                .collect();
            let config = crate::config::Config::load(Some(&config), &env).map_err(|e| Failure {
                message: e.to_string(),
                code: super::EXIT_USAGE,
            })?;
            let request = pb::AddPeerRequest {
                id: config.node_id,
                raft_addr: config.advertised_raft(),
                api_addr: config.advertised_api(),
                learner_only,
            };
            let waiting = match output {
                Output::Table | Output::Wide => super::spinner(format!(
                    "node {}: waiting for it to catch up with the log",
                    config.node_id
                )),
                Output::Json => None,
            };
            let added = client
                .add_peer(call(request, super::ADD_PEER_TIMEOUT))
                .await;
            if let Some(bar) = waiting {
                bar.finish_and_clear();
            }
            let members = added?.into_inner().members;
            match output {
                Output::Json => println!(
                    "{}",
                    json!({ "members": members.iter().map(|m| crate::api::json::to_value(&crate::api::json::MemberJson::from(m))).collect::<Vec<_>>() })
                ),
                Output::Table | Output::Wide => println!(
                    "node {} joined: the cluster has {} members",
                    config.node_id,
                    members.len()
                ),
            }
            return Ok(0);
        }
        NodeCommand::Drain {
            id,
            deadline,
            disable,
        } => {
            let deadline_ms =
                deadline.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let node = client
                .drain_node(call(
                    pb::DrainNodeRequest {
                        id,
                        disable,
                        deadline_ms,
                    },
                    CALL_TIMEOUT,
                ))
                .await?
                .into_inner()
                .node;
            node.into_iter().collect()
        }
    };
    match output {
        Output::Json => println!(
            "{}",
            json!({ "nodes": nodes.iter().map(node_json).collect::<Vec<_>>() })
        ),
        Output::Table | Output::Wide => print_table(&nodes),
    }
    Ok(0)
}
