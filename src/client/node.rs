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
        Output::Table => print_table(&nodes),
    }
    Ok(0)
}
