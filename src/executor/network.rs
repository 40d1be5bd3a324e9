//! The network jobs join when `executor.policy.allow_network` lets them
//! have one: a bridge network Drover makes per node, never Docker's default
//! bridge. Jobs on it reach the outside world (masqueraded) but
//!
//! - not each other (`enable_icc = false`), and
//! - not this host: a firewall rule drops every packet that arrives from
//!   the bridge for the host itself (`INPUT -i <bridge> -j DROP`), so the
//!   node's peer and API ports, the engine's TCP port, sshd, anything
//!   listening on any of the host's addresses are out of reach; another the
//!   ports Docker publishes on the host (`DOCKER-USER -i <bridge> -m
//!   conntrack --ctstate DNAT -j DROP`: those are forwarded, not input, so
//!   a containerized node's published API would be reachable otherwise);
//!   and a third the link-local range where cloud metadata services answer
//!   (`DOCKER-USER -i <bridge> -d 169.254.0.0/16 -j DROP`).
//!
//! Both are put in place when the executor connects, before any job runs,
//! and checked again before every job that asks for the network: if they
//! cannot be (no iptables, not root), such a job is refused, never run on
//! a network that reaches the host. The network and the rules stay when
//! the node stops (a job reattached after a restart still needs them);
//! `docker network rm` and `iptables -D` remove them.

use std::collections::HashMap;
use std::process::Stdio;

use bollard::models::NetworkCreateRequest;
use bollard::Docker;
use sha2::{Digest, Sha256};

/// Label naming the node a job network belongs to (with the driver's
/// owner labels).
pub const LABEL_NETWORK: &str = "drover.network";

/// The link-local range (cloud metadata services answer at 169.254.169.254).
const LINK_LOCAL: &str = "169.254.0.0/16";

/// A node's job network: Docker's name for it and its bridge interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobNetwork {
    /// The Docker network name (`drover-jobs-<hash>`).
    pub name: String,
    /// The host's bridge interface (`drv<hash>`, at most 15 characters).
    pub bridge: String,
}

impl JobNetwork {
    /// The network of the node whose containers carry `owner_labels`
    /// (cluster and node id): the same names at every start.
    pub fn for_owner(owner_labels: &[(String, String)]) -> JobNetwork {
        let mut hash = Sha256::new();
        for (k, v) in owner_labels {
            hash.update(k.as_bytes());
            hash.update([0]);
            hash.update(v.as_bytes());
            hash.update([0]);
        }
        let digest = crate::acl::hex(&hash.finalize()[..6]);
        JobNetwork {
            name: format!("drover-jobs-{digest}"),
            bridge: format!("drv{digest}"),
        }
    }

    /// The firewall rules that keep the network's jobs off this host: the
    /// chain and the rule, as `iptables` takes them after `-C`/`-I`/`-D`.
    pub fn rules(&self) -> Vec<Vec<String>> {
        let rule = |chain: &str, extra: &[&str]| {
            let mut r = vec![chain.to_string(), "-i".into(), self.bridge.clone()];
            r.extend(extra.iter().map(|s| s.to_string()));
            r.extend(["-j".into(), "DROP".into()]);
            r
        };
        vec![
            rule("INPUT", &[]),
            rule("DOCKER-USER", &["-m", "conntrack", "--ctstate", "DNAT"]),
            rule("DOCKER-USER", &["-d", LINK_LOCAL]),
        ]
    }

    /// Creates the network if the engine does not have it, then puts the
    /// firewall rules in place (each once). Err says why jobs cannot be
    /// given this network.
    pub async fn ensure(
        &self,
        docker: &Docker,
        owner_labels: &[(String, String)],
    ) -> Result<(), String> {
        match docker.inspect_network(&self.name, None).await {
            // Made by someone else under our name: its options decide
            // whether the rules below (which match our bridge) fence it.
            Ok(found) => {
                let options = found.options.unwrap_or_default();
                let ours = options.get("com.docker.network.bridge.name") == Some(&self.bridge)
                    && options
                        .get("com.docker.network.bridge.enable_icc")
                        .is_some_and(|v| v == "false");
                if !ours {
                    return Err(format!(
                        "a network named {} exists but is not this node's fenced job network \
                         (bridge {}, inter-container traffic off); remove it \
                         (`docker network rm {}`) and the node makes its own",
                        self.name, self.bridge, self.name
                    ));
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                let mut labels: HashMap<String, String> = owner_labels.iter().cloned().collect();
                labels.insert(LABEL_NETWORK.to_string(), "jobs".to_string());
                let options = HashMap::from([
                    (
                        "com.docker.network.bridge.name".to_string(),
                        self.bridge.clone(),
                    ),
                    (
                        "com.docker.network.bridge.enable_icc".to_string(),
                        "false".to_string(),
                    ),
                    (
                        "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                        "true".to_string(),
                    ),
                ]);
                let request = NetworkCreateRequest {
                    name: self.name.clone(),
                    driver: Some("bridge".to_string()),
                    options: Some(options),
                    labels: Some(labels),
                    ..Default::default()
                };
                docker
                    .create_network(request)
                    .await
                    .map_err(|e| format!("cannot create the job network {}: {e}", self.name))?;
            }
            Err(e) => return Err(format!("cannot inspect the job network {}: {e}", self.name)),
        }
        // The rules name the bridge; they fence nothing unless it is an
        // interface of the namespace iptables runs in (not so when this
        // node runs in a container of its own).
        let interface = std::path::Path::new("/sys/class/net").join(&self.bridge);
        if !interface.exists() {
            return Err(format!(
                "the job network's bridge {} is not an interface here (is this node in a \
                 container?), so no rule could keep its jobs off the host",
                self.bridge
            ));
        }
        for rule in self.rules() {
            if iptables("-C", &rule).await.is_ok() {
                continue;
            }
            iptables("-I", &rule).await.map_err(|e| {
                format!(
                    "cannot keep the job network off this host (iptables -I {}): {e}",
                    rule.join(" ")
                )
            })?;
        }
        Ok(())
    }
}

/// How long `iptables` waits for the xtables lock another program holds
/// (without a bound, `-w` waits for ever and the job's start with it).
const IPTABLES_LOCK_WAIT_SECS: &str = "5";

/// Runs `iptables -w 5 <op> <rule>`; Err holds what it said.
async fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
    let output = tokio::process::Command::new("iptables")
        .args(["-w", IPTABLES_LOCK_WAIT_SECS])
        .arg(op)
        .args(rule)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_per_node_and_fit_an_interface_name() {
        let labels = |node: &str| {
            vec![
                ("drover.cluster".to_string(), "prod".to_string()),
                ("drover.node".to_string(), node.to_string()),
            ]
        };
        let one = JobNetwork::for_owner(&labels("1"));
        assert_eq!(one, JobNetwork::for_owner(&labels("1")));
        assert_ne!(one, JobNetwork::for_owner(&labels("2")));
        assert!(one.bridge.len() <= 15, "{}", one.bridge);
        assert!(one.name.starts_with("drover-jobs-"));
        let rules = one.rules();
        assert_eq!(rules[0], ["INPUT", "-i", &one.bridge, "-j", "DROP"]);
        assert!(rules[1].contains(&"DNAT".to_string()));
        assert!(rules[2].contains(&LINK_LOCAL.to_string()));
    }
}
