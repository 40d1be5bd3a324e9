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
    pub(crate) procs: Vec<Proc>,
    pub(crate) urls: Vec<String>,
    pub(crate) leader: usize,
    pub(crate) docker_bin: PathBuf,
    /// With TLS: the CA, node and `client-bench` certificates.
    pub(crate) tls: Option<PathBuf>,
    // Declared last: dropped after the processes are killed.
    pub(crate) dir: tempfile::TempDir,
}

impl JobCluster {
    pub(crate) async fn start(
        settings: &Settings,
        phase: Phase,
        nodes: usize,
        executor: Executor,
    ) -> Result<JobCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("drover-bench-jobs-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut cluster = JobCluster {
            id: settings.cluster_id(phase),
            procs: Vec::new(),
            urls: Vec::new(),
            leader: 0,
            docker_bin: settings.docker_bin.clone(),
            tls: None,
            dir,
        };
        let ports: Vec<(u16, u16)> = (0..nodes).map(|_| (free_port(), free_port())).collect();
        let root = cluster.dir.path().to_path_buf();
        if settings.tls {
            let tls = root.join("tls");
            make_certs(&settings.drover_bin, &tls, &cluster.id, nodes)?;
            cluster.tls = Some(tls);
        }
        for i in 0..nodes {
            let config = write_config(
                &root,
                &cluster.id,
                i,
                &ports,
                &settings.image,
                executor,
                cluster.tls.as_deref(),
            )?;
            let name = format!("node{}", i + 1);
            let args = vec![
                "agent".to_string(),
                "--config".to_string(),
                config.display().to_string(),
            ];
            let log_path = root.join(format!("{name}.log"));
            let proc = Proc::spawn(name, &settings.drover_bin, &args, log_path, None)?;
            cluster.procs.push(proc);
            let scheme = if settings.tls { "https" } else { "http" };
            cluster
                .urls
                .push(format!("{scheme}://127.0.0.1:{}", ports[i].0));
        }
        cluster.wait_ready(nodes).await?;
        Ok(cluster)
    }

    pub(crate) fn check_alive(&mut self) -> Result<(), String> {
        for p in &mut self.procs {
            if let Some(note) = p.exited() {
                let text = std::fs::read_to_string(&p.log_path).unwrap_or_default();
                let cause = text
                    .lines()
                    .map(strip_ansi)
                    .find(|l| l.contains("panicked") || l.contains(" ERROR "))
                    .unwrap_or_default();
                return Err(format!("{note}: {cause}\nlog tail:\n{}", p.log_tail(20)));
            }
        }
        Ok(())
    }

    pub(crate) async fn client(&self, i: usize) -> Result<DroverClient<Channel>, String> {
        let channel = match &self.tls {
            Some(dir) => connect_tls(&self.urls[i], dir, REQUEST_TIMEOUT).await?,
            None => connect(&self.urls[i], REQUEST_TIMEOUT).await?,
        };
        Ok(DroverClient::new(channel))
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
        for p in &mut self.procs {
            p.log_offset = std::fs::metadata(&p.log_path).map_or(0, |m| m.len() as usize);
        }
        Ok(())
    }

    pub(crate) async fn find_leader(&self, last: &mut String) -> Option<usize> {
        for i in 0..self.urls.len() {
            let status = match self.client(i).await {
                Ok(mut c) => c.get_cluster_status(pb::GetClusterStatusRequest {}).await,
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
        let tails: Vec<String> = self
            .procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail(15)))
            .collect();
        format!(
            "not ready within {READY_TIMEOUT:?} (last: {last})\n{}",
            tails.join("\n")
        )
    }

    pub(crate) fn scan_logs(&self) -> Vec<LogScan> {
        self.procs.iter().map(scan_log).collect()
    }

    pub(crate) fn keep_logs(&self, dir: &Path, phase: Phase) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("[jobs] cannot create {}: {e}", dir.display());
            return;
        }
        for p in &self.procs {
            let target = dir.join(format!("jobs-{}-{}.log", phase.name(), p.name));
            if let Err(e) = std::fs::copy(&p.log_path, &target) {
                eprintln!("[jobs] cannot keep {}: {e}", p.log_path.display());
            }
        }
    }
}

impl Drop for JobCluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
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

pub(crate) fn write_config(
    root: &Path,
    cluster_id: &str,
    i: usize,
    ports: &[(u16, u16)],
    image: &str,
    executor: Executor,
    tls: Option<&Path>,
) -> Result<PathBuf, String> {
    let id = i + 1;
    let (api, raft) = ports[i];
    let mut text = format!(
        "node_id = {id}\ncluster_id = \"{cluster_id}\"\ndata_dir = \"{dir}\"\n\n\
         [listen]\napi = \"127.0.0.1:{api}\"\nraft = \"127.0.0.1:{raft}\"\n\n",
        dir = root.join(format!("node{id}")).display(),
    );
    for (j, (api, raft)) in ports.iter().enumerate() {
        let _ = write!(
            text,
            "[[initial_members]]\nid = {}\nraft_addr = \"127.0.0.1:{raft}\"\napi_addr = \"127.0.0.1:{api}\"\n\n",
            j + 1
        );
    }
    // No [raft] or [scheduler] section: the defaults are what we measure.
    let _ = write!(
        text,
        "[log]\nlevel = \"info\"\nformat = \"text\"\n\n\
         [executor]\nenabled = true\ndefault_image = \"{image}\"\ncpu_millis = {}\n\
         memory_mib = {}\noutput_cap_bytes = {}\n",
        executor.cpu_millis, executor.memory_mib, executor.output_cap_bytes
    );
    if let Some(dir) = tls {
        text += &tls_section(dir, id);
    }
    let path = root.join(format!("node{id}.toml"));
    std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}
