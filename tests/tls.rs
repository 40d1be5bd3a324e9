//! TLS on every port, with certificates made by the real `drover tls`
//! commands: a 3-node cluster with mutual TLS works through every node,
//! over the CLI (with its client certificate) and over HTTPS with curl,
//! and survives the loss of its leader; the peer port refuses everyone who
//! is not the node they say they are, and nothing changes in the cluster.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{client_tls, drover_bin, make_certs, Cluster, RaftSettings};
use drover::proto::raft::raft_peer_client::RaftPeerClient;
use drover::proto::raft::{MessageBatch, NodeHeartbeat};

const WAIT: Duration = Duration::from_secs(30);
const CLUSTER: &str = "tls-test";

fn settings(dir: &std::path::Path) -> RaftSettings {
    RaftSettings {
        tls_dir: Some(dir.to_path_buf()),
        cluster_id: Some(CLUSTER.into()),
        ..RaftSettings::default()
    }
}

/// A peer-port client of node `i` showing the certificate `dir/STEM.pem`.
async fn peer_client(
    cluster: &Cluster,
    i: usize,
    dir: &std::path::Path,
    stem: &str,
) -> Result<RaftPeerClient<tonic::transport::Channel>, tonic::transport::Error> {
    let id = cluster.nodes[i].id;
    let tls = client_tls(dir, stem).domain_name(format!("node-{id}.{CLUSTER}.drover"));
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://{}", cluster.nodes[i].raft))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
    Ok(RaftPeerClient::new(channel))
}

/// The CLI against `addr` with the CA of `ca_dir` and, if given, the client
/// certificate `cert` (a path stem: `dir/client-admin`).
fn tls_cli(
    addr: &str,
    ca_dir: &std::path::Path,
    cert: Option<&std::path::Path>,
) -> std::process::Output {
    let mut command = Command::new(drover_bin());
    command
        .args(["job", "list"])
        .env("DROVER_ADDR", addr)
        .env("DROVER_CACERT", ca_dir.join("ca.pem"))
        .env_remove("DROVER_CLIENT_CERT")
        .env_remove("DROVER_CLIENT_KEY");
    if let Some(stem) = cert {
        command
            .env("DROVER_CLIENT_CERT", stem.with_extension("pem"))
            .env("DROVER_CLIENT_KEY", format!("{}-key.pem", stem.display()));
    }
    command.output().expect("run the CLI")
}

fn beat(node_id: u64) -> NodeHeartbeat {
    NodeHeartbeat {
        cluster_id: CLUSTER.into(),
        node_id,
        labels: Default::default(),
        cpu_millis: 64_000,
        memory_mib: 1 << 20,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_tls_cluster_serves_every_client_and_refuses_impostors() {
    let certs = tempfile::tempdir().expect("temp dir");
    make_certs(certs.path(), CLUSTER, 3);
    let other_ca = tempfile::tempdir().expect("temp dir");
    make_certs(other_ca.path(), CLUSTER, 3);
    // A node certificate of this CA for a node that is not a member.
    let out = Command::new(drover_bin())
        .args(["tls", "cert", "create", "--ca-dir"])
        .arg(certs.path())
        .args(["--node", "9", "--cluster", CLUSTER, "--out-dir"])
        .arg(certs.path())
        .output()
        .expect("drover tls cert create");
    assert!(out.status.success());

    // `inspect` tells the kinds apart; keys are private.
    let inspect = |stem: &str| {
        let out = Command::new(drover_bin())
            .args(["tls", "cert", "inspect", "--output", "json"])
            .arg(certs.path().join(format!("{stem}.pem")))
            .output()
            .expect("inspect");
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    assert_eq!(inspect("ca")["kind"], "ca");
    let node = inspect("node-2");
    assert_eq!(node["kind"], "node");
    assert!(node["dns_names"]
        .as_array()
        .expect("names")
        .iter()
        .any(|n| n == "node-2.tls-test.drover"));
    assert_eq!(node["ips"][0], "127.0.0.1");
    assert_eq!(inspect("client-admin")["kind"], "client");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(certs.path().join("node-2-key.pem"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "private keys are mode 0600");

    let mut cluster = Cluster::start(3, settings(certs.path()));
    let leader = cluster.wait_leader(WAIT).await;
    assert!(
        cluster.log_tail(leader).contains("(grpc+tls)"),
        "the node says it speaks TLS"
    );

    // Writes through every node (followers forward to the leader over TLS).
    for i in 0..3 {
        let mut client = cluster.client(i).await.expect("TLS client");
        common::submit(&mut client, "true")
            .await
            .unwrap_or_else(|s| panic!("node {}: {s:?}", i + 1));
    }
    // The CLI with its client certificate (set by the harness)...
    let out = cluster.cli(&["job", "submit", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and without one: refused with the flag to pass.
    let out = tls_cli(&cluster.nodes[0].api, certs.path(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("--client-cert"), "{stderr}");
    // A CA that did not sign the nodes: refused, naming --ca-cert.
    let admin = certs.path().join("client-admin");
    let out = tls_cli(&cluster.nodes[0].api, other_ca.path(), Some(&admin));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("--ca-cert"), "{stderr}");
    // A name the node's certificate does not carry: refused, naming the fix.
    let port = cluster.nodes[0].api.rsplit_once(':').expect("port").1;
    let out = tls_cli(&format!("localhost:{port}"), certs.path(), Some(&admin));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not valid for this address"), "{stderr}");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(certs.path().join("ca.pem"))
        .arg(format!(
            "https://localhost:{}/v1/cluster",
            cluster.nodes[0].http.rsplit_once(':').expect("port").1
        ))
        .output()
        .expect("curl");
    assert_eq!(
        out.status.code(),
        Some(60),
        "curl: a name mismatch is a verification failure"
    );
    // An expired client certificate (of the right CA): refused, saying so.
    let expired = tempfile::tempdir().expect("temp dir");
    for who in [
        &["--client", "old"][..],
        &["--node", "2", "--cluster", CLUSTER, "--ip", "127.0.0.1"][..],
    ] {
        let out = Command::new(drover_bin())
            .args(["tls", "cert", "create", "--ca-dir"])
            .arg(certs.path())
            .args(who)
            .args(["--days", "0", "--out-dir"])
            .arg(expired.path())
            .output()
            .expect("drover tls cert create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::copy(certs.path().join("ca.pem"), expired.path().join("ca.pem")).expect("copy CA");
    // Made with --days 0, both expire within a second of being made: wait
    // until `inspect` says so for each.
    common::wait_for(
        "the certificates made with --days 0 to expire",
        WAIT,
        || async {
            ["client-old.pem", "node-2.pem"]
                .iter()
                .all(|name| {
                    let out = Command::new(drover_bin())
                        .args(["tls", "cert", "inspect", "--output", "json"])
                        .arg(expired.path().join(name))
                        .output()
                        .expect("inspect");
                    serde_json::from_slice::<serde_json::Value>(&out.stdout)
                        .ok()
                        .and_then(|v| v["expires_in_secs"].as_i64())
                        .is_some_and(|secs| secs < 0)
                })
                .then_some(())
        },
    )
    .await;
    let old = expired.path().join("client-old");
    let out = tls_cli(&cluster.nodes[0].api, certs.path(), Some(&old));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
    // The node itself refuses it too (not only the CLI's own check).
    let endpoint = tonic::transport::Endpoint::from_shared(cluster.api_url(0))
        .expect("endpoint")
        .tls_config(client_tls(expired.path(), "client-old"))
        .expect("tls config")
        .connect_timeout(Duration::from_secs(2));
    if let Ok(channel) = endpoint.connect().await {
        let mut client = drover::proto::v1::drover_client::DroverClient::new(channel);
        assert!(
            client
                .list_nodes(drover::proto::v1::ListNodesRequest { consistent: false })
                .await
                .is_err(),
            "an expired client certificate on the API port"
        );
    }
    // REST over HTTPS with curl (no client certificate needed by default).
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(certs.path().join("ca.pem"))
        .arg(format!("https://{}/v1/cluster", cluster.nodes[0].http))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(view["cluster_id"], CLUSTER);
    assert_eq!(view["transport_security"], "tls");
    // Plain HTTP to the HTTPS port gets nothing.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://{}/v1/cluster", cluster.nodes[0].http))
        .output()
        .expect("curl");
    assert!(
        !out.status.success(),
        "plaintext HTTP answered on the HTTPS port"
    );

    // The peer port: nobody but the node they say they are.
    let before = cluster.status(leader).await.expect("status");
    let target = (leader + 1) % 3;
    let refused = |what: &str,
                   outcome: Result<
        tonic::Response<drover::proto::raft::HeartbeatReply>,
        tonic::Status,
    >| {
        match outcome {
            Err(status) => assert_eq!(
                status.code(),
                tonic::Code::PermissionDenied,
                "{what}: {status:?}"
            ),
            Ok(_) => panic!("{what}: accepted"),
        }
    };
    // A client certificate is never a node certificate.
    let mut client = peer_client(&cluster, leader, certs.path(), "client-admin")
        .await
        .expect("connects");
    refused("a client certificate", client.heartbeat(beat(99)).await);
    // Node 2's certificate sending as node 3, and as a made-up node.
    let two = cluster
        .nodes
        .iter()
        .position(|n| n.id == 2)
        .expect("node 2");
    let to = if two == leader { target } else { leader };
    let mut client = peer_client(&cluster, to, certs.path(), "node-2")
        .await
        .expect("connects");
    refused("node 2 as node 3", client.heartbeat(beat(3)).await);
    refused("node 2 as node 99", client.heartbeat(beat(99)).await);
    let batch = MessageBatch {
        cluster_id: CLUSTER.into(),
        protocol_version: 1,
        from: 3,
        to: cluster.nodes[to].id,
        messages: vec![],
        from_raft_addr: String::new(),
        from_incarnation: 0,
        from_disk_low: false,
    };
    let status = client
        .deliver(batch)
        .await
        .expect_err("node 2 delivering as node 3");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    // A valid node certificate of a node that is not a member.
    let mut client = peer_client(&cluster, leader, certs.path(), "node-9")
        .await
        .expect("connects");
    refused("a non-member node", client.heartbeat(beat(9)).await);
    // ...which can neither start an election (a vote request at a huge term)
    // nor append entries.
    for body in [
        drover::raft::MessageBody::Vote {
            last_index: u64::MAX / 2,
            last_term: u64::MAX / 2,
            transfer: true,
        },
        drover::raft::MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: u64::MAX / 2,
        },
    ] {
        let message = drover::raft::Message {
            from: 9,
            to: cluster.nodes[leader].id,
            term: u64::MAX / 2,
            body,
        };
        let status = client
            .deliver(MessageBatch {
                cluster_id: CLUSTER.into(),
                protocol_version: 1,
                from: 9,
                to: cluster.nodes[leader].id,
                messages: vec![drover::node::wire::encode_message(&message).expect("encode")],
                from_raft_addr: "127.0.0.1:1".into(),
                from_incarnation: 0,
                from_disk_low: false,
            })
            .await
            .expect_err("a non-member's batch");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    // TLS without a client certificate: no handshake, or refused at once.
    let no_cert = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(certs.path().join("ca.pem")).expect("ca"),
        ))
        .domain_name(format!(
            "node-{}.{CLUSTER}.drover",
            cluster.nodes[leader].id
        ));
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("https://{}", cluster.nodes[leader].raft))
            .expect("endpoint")
            .tls_config(no_cert)
            .expect("tls")
            .connect_timeout(Duration::from_secs(2));
    if let Ok(channel) = endpoint.connect().await {
        assert!(
            RaftPeerClient::new(channel)
                .heartbeat(beat(1))
                .await
                .is_err(),
            "TLS without a client certificate on the peer port"
        );
    }
    // Node 2's own certificate, expired: no handshake, or refused at once.
    match peer_client(&cluster, to, expired.path(), "node-2").await {
        Err(_) => {}
        Ok(mut client) => assert!(
            client.heartbeat(beat(2)).await.is_err(),
            "an expired node certificate"
        ),
    }
    // Another CA, and no certificate at all: no handshake.
    assert!(
        peer_client(&cluster, leader, other_ca.path(), "node-1")
            .await
            .is_err(),
        "another CA"
    );
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.nodes[leader].raft))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2));
    if let Ok(channel) = plain.connect().await {
        let mut client = RaftPeerClient::new(channel);
        assert!(
            client.heartbeat(beat(1)).await.is_err(),
            "plaintext on the peer port"
        );
    }
    // A garbage snapshot from a valid peer (the leader's own certificate):
    // refused, and the follower keeps running.
    let leader_id = cluster.nodes[leader].id;
    let follower_id = cluster.nodes[target].id;
    let garbage = drover::raft::Message {
        from: leader_id,
        to: follower_id,
        term: before.term,
        body: drover::raft::MessageBody::InstallSnapshot {
            meta: drover::raft::SnapshotMeta {
                index: before.commit_index + 1000,
                term: before.term,
                membership: Default::default(),
            },
            offset: 0,
            data: b"not a snapshot".to_vec(),
            done: true,
        },
    };
    let mut client = peer_client(&cluster, target, certs.path(), &format!("node-{leader_id}"))
        .await
        .expect("connects");
    client
        .deliver(MessageBatch {
            cluster_id: CLUSTER.into(),
            protocol_version: 1,
            from: leader_id,
            to: follower_id,
            messages: vec![drover::node::wire::encode_message(&garbage).expect("encode")],
            from_raft_addr: String::new(),
            from_incarnation: 0,
            from_disk_low: false,
        })
        .await
        .expect("the batch itself is delivered");
    common::wait_for("the follower to refuse the snapshot", WAIT, || async {
        cluster
            .log_tail(target)
            .contains("snapshot from the leader refused")
            .then_some(())
    })
    .await;
    assert!(
        cluster.status(target).await.is_some(),
        "the follower keeps running"
    );

    // Nothing changed: same leader, same term, no new entry, no new node.
    let after = cluster.status(leader).await.expect("status");
    assert_eq!(
        (after.leader_id, after.term),
        (before.leader_id, before.term)
    );
    assert_eq!(
        after.commit_index, before.commit_index,
        "no entry was written"
    );
    let mut client = cluster.client(leader).await.expect("client");
    let nodes = client
        .list_nodes(drover::proto::v1::ListNodesRequest { consistent: true })
        .await
        .expect("list nodes")
        .into_inner()
        .nodes;
    assert!(nodes.iter().all(|n| n.id != 99 && n.id != 9), "{nodes:?}");
    assert!(
        cluster.log_tail(leader).contains("refused"),
        "refusals are logged"
    );

    // The leader dies: the survivors elect another over TLS and go on.
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(WAIT).await;
    assert_ne!(new_leader, leader);
    let mut client = cluster.client(new_leader).await.expect("client");
    common::submit(&mut client, "true")
        .await
        .expect("a write after the failover");
}

/// The certificate (DER) a node serves on its HTTPS port.
async fn served_cert(dir: &std::path::Path, addr: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_file_iter(dir.join("ca.pem")).expect("ca") {
        roots.add(ca.expect("ca pem")).expect("add ca");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let (_, session) = tls.get_ref();
    session.peer_certificates().expect("a certificate")[0].to_vec()
}

/// The DER of the first certificate of a PEM file.
fn file_cert(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .expect("a certificate file")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_sighup_under_load_without_a_failed_write_or_a_new_leader() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let certs = tempfile::tempdir().expect("temp dir");
    make_certs(certs.path(), CLUSTER, 3);
    let cluster = Cluster::start(3, settings(certs.path()));
    let leader = cluster.wait_leader(WAIT).await;
    let before = cluster.status(leader).await.expect("status");

    // A writer through a follower (forwarding crosses TLS too).
    let mut client = cluster.client((leader + 1) % 3).await.expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let (written, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (stop, written, failed) = (stop.clone(), written.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match common::submit(&mut client, "true").await {
                    Ok(_) => written.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        eprintln!("write failed: {status:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };

    for i in 0..3 {
        let id = cluster.nodes[i].id.to_string();
        let http = cluster.nodes[i].http.clone();
        let old = served_cert(certs.path(), &http).await;
        let out = Command::new(drover_bin())
            .args(["tls", "cert", "create", "--ca-dir"])
            .arg(certs.path())
            .args([
                "--node",
                &id,
                "--cluster",
                CLUSTER,
                "--ip",
                "127.0.0.1",
                "--out-dir",
            ])
            .arg(certs.path())
            .output()
            .expect("renew");
        assert!(out.status.success());
        let new = file_cert(&certs.path().join(format!("node-{id}.pem")));
        assert_ne!(old, new);
        cluster.signal(i, libc::SIGHUP);
        common::wait_for("the renewed certificate to be served", WAIT, || async {
            (served_cert(certs.path(), &http).await == new).then_some(())
        })
        .await;
        assert!(cluster.log_tail(i).contains("TLS certificates reloaded"));
    }

    // A broken file is refused; the certificate in force stays.
    let http = cluster.nodes[0].http.clone();
    let serving = served_cert(certs.path(), &http).await;
    std::fs::write(
        certs.path().join("node-1.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .expect("break the certificate");
    cluster.signal(0, libc::SIGHUP);
    common::wait_for("the broken certificate to be refused", WAIT, || async {
        cluster
            .log_tail(0)
            .contains("TLS reload refused")
            .then_some(())
    })
    .await;
    assert_eq!(
        served_cert(certs.path(), &http).await,
        serving,
        "the old certificate stays"
    );

    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert!(written.load(Ordering::Relaxed) > 0, "the writer wrote");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no write failed during the rotation"
    );
    let after = cluster.status(leader).await.expect("status");
    assert_eq!(
        (after.leader_id, after.term),
        (before.leader_id, before.term),
        "no leader change"
    );
    // The expiry metric (about a year out).
    let metrics = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(certs.path().join("ca.pem"))
        .arg(format!("https://{}/metrics", cluster.nodes[1].http))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&metrics.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("drover_tls_cert_expiry_seconds "))
        .unwrap_or_else(|| panic!("no expiry metric in {text}"));
    let seconds: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(seconds > 300.0 * 86_400.0, "{line}");
}

/// The leader node 0 knows, from its `/metrics` (which needs no token).
fn leader_from_metrics(cluster: &Cluster, ca: &std::path::Path) -> Option<u64> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .arg(format!("https://{}/metrics", cluster.nodes[0].http))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("drover_raft_leader "))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&id| id != 0)
}

/// A call to node `i` with the cluster's client certificate, no token and
/// the given metadata.
fn with_metadata<T>(message: T, metadata: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (key, value) in metadata {
        request
            .metadata_mut()
            .insert(*key, value.parse().expect("metadata value"));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_needs_the_provisioned_secret_and_followers_forward_as_themselves() {
    use drover::proto::v1 as pb;
    use tonic::Code;
    let certs = tempfile::tempdir().expect("temp dir");
    make_certs(certs.path(), CLUSTER, 3);
    let secret = format!("drv_{}", "5a".repeat(32));
    let secret_file = certs.path().join("bootstrap.token");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("write the secret");
    let mut cluster = Cluster::start(
        3,
        RaftSettings {
            acl: true,
            bootstrap_token_file: Some(secret_file),
            ..settings(certs.path())
        },
    );
    let leader_id = common::wait_for("a leader (from /metrics)", WAIT, || async {
        leader_from_metrics(&cluster, &certs.path().join("ca.pem"))
    })
    .await;
    let leader = cluster
        .nodes
        .iter()
        .position(|n| n.id == leader_id)
        .expect("leader is a node");
    let follower = (leader + 1) % 3;

    // Refused without the secret, with a wrong one, and with a grant or a
    // caller forged by a client certificate (only a member node may).
    let mut anonymous = cluster.client_with(follower, None).await.expect("client");
    let refusals = [
        ("no secret", vec![], "acl.bootstrap_token_file"),
        (
            "a wrong secret",
            vec![("authorization", "Bearer drv_guess")],
            "not the bootstrap secret",
        ),
        (
            "a forged grant",
            vec![(
                "x-drover-bootstrap-grant",
                "00000000000000000000000000000000000000000000000000000000000000ff",
            )],
            "only from a member node",
        ),
    ];
    for (what, metadata, says) in refusals {
        let status = anonymous
            .acl_bootstrap(with_metadata(pb::AclBootstrapRequest {}, &metadata))
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
        assert!(status.message().contains(says), "{what}: {status:?}");
    }
    // With the secret, through a follower: forwarded to the leader as the
    // follower (a grant under its node certificate), once.
    let out = Command::new(drover_bin())
        .args(["acl", "bootstrap", "--output", "json"])
        .env("DROVER_ADDR", &cluster.nodes[follower].api)
        .env("DROVER_TOKEN", &secret)
        .env("DROVER_CACERT", certs.path().join("ca.pem"))
        .env("DROVER_CLIENT_CERT", certs.path().join("client-admin.pem"))
        .env(
            "DROVER_CLIENT_KEY",
            certs.path().join("client-admin-key.pem"),
        )
        .output()
        .expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        answer["secret"],
        secret.as_str(),
        "the provisioned secret is the admin token"
    );
    assert!(
        cluster.log_tail(leader).contains(&format!(
            "bootstrap granted by node {}",
            cluster.nodes[follower].id
        )),
        "the leader took the follower's grant"
    );
    let again = anonymous
        .acl_bootstrap(with_metadata(
            pb::AclBootstrapRequest {},
            &[("authorization", &format!("Bearer {secret}"))],
        ))
        .await
        .expect_err("a second bootstrap");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    cluster.token = Some(secret.clone());

    // A submitter's write through a follower: the leader records the owner
    // the follower names (the secret stayed on the follower).
    let out = cluster.cli(&[
        "acl",
        "token",
        "create",
        "--name",
        "ci",
        "--role",
        "submitter",
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ci_secret = created["secret"].as_str().expect("secret").to_string();
    let ci_accessor = created["token"]["accessor"]
        .as_str()
        .expect("accessor")
        .to_string();
    let mut ci = cluster
        .client_with(follower, Some(&ci_secret))
        .await
        .expect("client");
    let job = common::submit_job(&mut ci, "true")
        .await
        .expect("submit as ci");
    assert_eq!(job.owner, ci_accessor);

    // A client certificate cannot speak for a caller: naming the admin's
    // accessor without its secret is refused, and nothing is written.
    let admin_accessor = {
        let mut admin = cluster.client(leader).await.expect("client");
        admin
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .expect("whoami")
            .into_inner()
            .accessor
    };
    let before = cluster.status(leader).await.expect("status");
    for i in [leader, follower] {
        let mut anonymous = cluster.client_with(i, None).await.expect("client");
        let status = anonymous
            .submit_job(with_metadata(
                pb::SubmitJobRequest {
                    spec: Some(pb::JobSpec {
                        command: "true".into(),
                        ..Default::default()
                    }),
                },
                &[("x-drover-caller", &admin_accessor)],
            ))
            .await
            .expect_err("a forged caller");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let after = cluster.status(leader).await.expect("status");
    assert_eq!(
        after.commit_index, before.commit_index,
        "nothing was written"
    );
}
