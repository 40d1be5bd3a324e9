//! The agents of one phase, started fresh with the shipped defaults.

use super::*;

/// What each node's executor offers.
#[derive(Clone, Copy)]
pub(crate) struct Executor {
    pub(crate) cpu_millis: u64,
    pub(crate) memory_mib: u64,
    pub(crate) output_cap_bytes: u64,
}

/// Agents of one phase. Dropping it kills them and removes every container
/// labelled with its cluster id; the temp dir goes last.
pub(crate) struct JobCluster {
    pub(crate) id: String,
    pub(crate) leader: usize,
    pub(crate) docker_bin: PathBuf,
    pub(crate) servers: Servers,
}

impl JobCluster {
    pub(crate) async fn start(
        settings: &Settings,
        phase: Phase,
        nodes: usize,
        executor: Executor,
    ) -> Result<JobCluster, String> {
        let mut cluster = JobCluster {
            id: settings.cluster_id(phase),
            leader: 0,
            docker_bin: settings.docker_bin.clone(),
            servers: Servers::new("drover-bench-jobs-")?,
        };
        let ports = Servers::ports(nodes);
        if settings.tls {
            cluster
                .servers
                .make_certs(&settings.drover_bin, &cluster.id, nodes)?;
        }
        // No [raft] or [scheduler] section: the defaults are what we measure.
        // The per-client rate limit is lifted: every bench client calls from
        // 127.0.0.1 without a token.
        let sections = format!(
            "[log]\nlevel = \"info\"\nformat = \"text\"\n\n\
             [executor]\nenabled = true\ndefault_image = \"{}\"\ncpu_millis = {}\n\
             memory_mib = {}\noutput_cap_bytes = {}\n\n[limits]\nrate = 0\n",
            settings.image, executor.cpu_millis, executor.memory_mib, executor.output_cap_bytes
        );
        for (i, (api, _)) in ports.iter().enumerate() {
            let config =
                cluster
                    .servers
                    .write_agent_config(&cluster.id, i, &ports, None, &sections)?;
            cluster
                .servers
                .spawn_agent(&settings.drover_bin, i, &config, *api, None)?;
        }
        cluster.wait_ready(nodes).await?;
        Ok(cluster)
    }

    pub(crate) fn check_alive(&mut self) -> Result<(), String> {
        self.servers.check_alive()
    }

    pub(crate) async fn client(&self, i: usize) -> Result<DroverClient<Channel>, String> {
        Ok(DroverClient::new(
            self.servers.channel(i, REQUEST_TIMEOUT).await?,
        ))
    }

    pub(crate) async fn leader_client(&self) -> Result<DroverClient<Channel>, String> {
        self.client(self.leader).await
    }

    /// A leader, every node READY in its node table, then one `true` job
    /// run to SUCCEEDED (so the executor path is warm and known to work).
    pub(crate) async fn wait_ready(&mut self, nodes: usize) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        loop {
            self.check_alive()?;
            if let Some(leader) = self.find_leader(&mut last).await {
                self.leader = leader;
                match self.ready_nodes().await {
                    Ok(ready) if ready == nodes => break,
                    Ok(ready) => last = format!("{ready} of {nodes} nodes READY"),
                    Err(e) => last = e,
                }
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(&last));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut client = self.leader_client().await?;
        let id = submit(&mut client, shell_job("true")).await?;
        let (job, _) = poll_until_terminal(&mut client, &id, Duration::from_millis(20), deadline)
            .await
            .map_err(|e| self.not_ready(&format!("warm-up job: {e}")))?;
        if job.state != "SUCCEEDED" {
            return Err(self.not_ready(&format!("warm-up {}", describe_end(&job))));
        }
        self.servers.mark_logs();
        Ok(())
    }

    pub(crate) async fn find_leader(&self, last: &mut String) -> Option<usize> {
        for i in 0..self.servers.urls.len() {
            let status = match self.client(i).await {
                Ok(mut c) => {
                    c.get_cluster_status(pb::GetClusterStatusRequest::default())
                        .await
                }
                Err(e) => {
                    *last = e;
                    continue;
                }
            };
            match status {
                Ok(s) if s.get_ref().role == "leader" => return Some(i),
                Ok(_) => *last = "no leader yet".into(),
                Err(s) => *last = format!("status of node {}: {}", i + 1, s.message()),
            }
        }
        None
    }

    pub(crate) async fn ready_nodes(&self) -> Result<usize, String> {
        let nodes = self
            .leader_client()
            .await?
            .list_nodes(pb::ListNodesRequest { consistent: false })
            .await
            .map_err(|s| format!("ListNodes: {}", s.message()))?
            .into_inner()
            .nodes;
        Ok(nodes.iter().filter(|n| n.status == "READY").count())
    }

    pub(crate) fn not_ready(&self, last: &str) -> String {
        self.servers.not_ready(READY_TIMEOUT, last)
    }

    pub(crate) fn scan_logs(&self) -> Vec<LogScan> {
        self.servers.scan_logs()
    }

    pub(crate) fn keep_logs(&self, dir: &Path, phase: Phase) {
        self.servers
            .keep_logs(dir, &format!("jobs-{}", phase.name()));
    }
}

impl Drop for JobCluster {
    fn drop(&mut self) {
        for p in &mut self.servers.procs {
            p.stop();
        }
        // The containers outlive their agents by design (reattach).
        match remove_containers(&self.docker_bin, &format!("drover.cluster={}", self.id)) {
            Ok(0) => {}
            Ok(n) => eprintln!("[jobs] removed {n} leftover containers of {}", self.id),
            Err(e) => eprintln!("[jobs] cleanup of {}: {e}", self.id),
        }
    }
}
