//! How a test or a bench lays out a real `drover agent`: loopback ports,
//! the node's config file, the certificates of a TLS cluster and the client
//! side of them. The one place that knows it: `tests/common` builds its
//! clusters on it, and both benches include it (`benches/common`), so a
//! config key or a certificate name changes in one file. Errors are
//! returned, not panicked on: a bench reports them.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::Path;

/// Ports handed to nodes: below Linux's ephemeral range (32768 and up by
/// default), so neither `bind(:0)` nor an outgoing connection (a node
/// dialing its peers) can take one between the moment it is chosen and the
/// moment the node binds it. That race once failed a cluster test with
/// "Address already in use".
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 for a node: never handed out twice by this
/// process, and free when chosen.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(NODE_PORTS.end - NODE_PORTS.start);
    // Test binaries run one at a time, but start each at its own offset.
    let offset = std::process::id() % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = NODE_PORTS.start + ((offset + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {NODE_PORTS:?} on 127.0.0.1");
}

/// A founding member, as every node's `[[initial_members]]` lists it.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    /// host:port of its client API.
    pub api: String,
    /// host:port of its peer port.
    pub raft: String,
}

/// What every node config starts with; the caller adds its own sections.
pub struct NodeConfig<'a> {
    pub id: u64,
    pub cluster_id: &'a str,
    pub data_dir: &'a Path,
    pub api: &'a str,
    pub raft: &'a str,
    /// `listen.http`, if the node serves REST.
    pub http: Option<&'a str>,
    /// Empty for a node that waits to be added instead of founding.
    pub members: &'a [Member],
    /// A directory as [`make_certs`] fills it: the node gets a `[tls]`
    /// section with its own certificate.
    pub tls_dir: Option<&'a Path>,
}

impl NodeConfig<'_> {
    /// The config file's text: identity, listeners, founding members, then
    /// `sections` (e.g. `[raft]`, `[executor]`), then `[tls]`.
    pub fn render(&self, sections: &str) -> String {
        let mut text = format!(
            "node_id = {}\ncluster_id = \"{}\"\ndata_dir = \"{}\"\n\n[listen]\napi = \"{}\"\nraft = \"{}\"\n",
            self.id,
            self.cluster_id,
            self.data_dir.display(),
            self.api,
            self.raft
        );
        if let Some(http) = self.http {
            let _ = writeln!(text, "http = \"{http}\"");
        }
        text.push('\n');
        for m in self.members {
            let _ = write!(
                text,
                "[[initial_members]]\nid = {}\nraft_addr = \"{}\"\napi_addr = \"{}\"\n\n",
                m.id, m.raft, m.api
            );
        }
        text += sections;
        if let Some(dir) = self.tls_dir {
            text += &tls_section(dir, self.id);
        }
        text
    }
}

/// The `[tls]` section of node `id`, with the files of [`make_certs`].
pub fn tls_section(dir: &Path, id: u64) -> String {
    format!(
        "\n[tls]\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n",
        ca = dir.join("ca.pem").display(),
        cert = dir.join(format!("node-{id}.pem")).display(),
        key = dir.join(format!("node-{id}-key.pem")).display(),
    )
}

/// Makes, with the real `drover tls` commands of `drover`, a CA in `dir`,
/// node certificates for nodes 1..=nodes of `cluster` (valid for
/// 127.0.0.1), and the client certificate `client-CLIENT`.
pub fn make_certs(
    drover: &Path,
    dir: &Path,
    cluster: &str,
    nodes: u64,
    client: &str,
) -> Result<(), String> {
    let d = dir
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", dir.display()))?;
    let run = |args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new(drover)
            .args(args)
            .output()
            .map_err(|e| format!("run {}: {e}", drover.display()))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!(
                "drover {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    };
    run(&["tls", "ca", "create", "--out-dir", d])?;
    for id in 1..=nodes {
        let id = id.to_string();
        run(&[
            "tls",
            "cert",
            "create",
            "--ca-dir",
            d,
            "--node",
            &id,
            "--cluster",
            cluster,
            "--ip",
            "127.0.0.1",
            "--out-dir",
            d,
        ])?;
    }
    run(&[
        "tls",
        "cert",
        "create",
        "--ca-dir",
        d,
        "--client",
        client,
        "--out-dir",
        d,
    ])
}

/// The client side of TLS with the CA of `dir` and the certificate
/// `dir/STEM.pem` (e.g. `client-admin`, `node-2`).
pub fn client_tls(dir: &Path, stem: &str) -> Result<tonic::transport::ClientTlsConfig, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |name: String| {
        let path = dir.join(&name);
        std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))
    };
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())?))
        .identity(Identity::from_pem(
            read(format!("{stem}.pem"))?,
            read(format!("{stem}-key.pem"))?,
        )))
}
