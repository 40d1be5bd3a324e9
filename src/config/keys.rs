//! Every configuration key by name, and how the environment overrides
//! one (`DROVER_` + the key upper-cased, `.` as `_`): the list the config
//! file documents and a test checks against the structs.

/// Every configuration key, dotted (`raft.tick`). Each can be overridden
/// by the environment variable `DROVER_` + the key upper-cased with `.`
/// turned into `_` (`DROVER_RAFT_TICK`), and each is documented in
/// `config/drover.toml` (a test checks both lists against the code).
pub const KEYS: &[&str] = &[
    "node_id",
    "cluster_id",
    "data_dir",
    "listen.api",
    "listen.raft",
    "listen.http",
    "listen.socket",
    "advertise.api",
    "advertise.raft",
    "advertise.http",
    "initial_members",
    "raft.tick",
    "raft.heartbeat_ticks",
    "raft.election_ticks",
    "raft.snapshot_threshold",
    "raft.snapshot_interval",
    "raft.trailing_entries",
    "raft.max_inflight",
    "raft.snapshot_chunk_bytes",
    "raft.propose_timeout",
    "executor.enabled",
    "executor.docker_host",
    "executor.default_image",
    "executor.cpu_millis",
    "executor.memory_mib",
    "executor.labels",
    "executor.output_cap_bytes",
    "executor.output_tail_bytes",
    "executor.stop_grace",
    "executor.scratch_dir",
    "executor.policy.user",
    "executor.policy.allowed_users",
    "executor.policy.allowed_images",
    "executor.policy.pull",
    "executor.policy.ulimit_nofile",
    "executor.policy.ulimit_nproc",
    "executor.policy.allow_network",
    "executor.policy.network_roles",
    "executor.policy.io_read_bps",
    "executor.policy.io_write_bps",
    "scheduler.heartbeat_interval",
    "scheduler.node_down_after",
    "scheduler.retention",
    "scheduler.retain_max",
    "scheduler.queue_capacity",
    "log.level",
    "log.format",
    "acl.enabled",
    "acl.cors_origins",
    "acl.bootstrap_token_file",
    "storage.min_free_bytes",
    "storage.min_free_percent",
    "tls.ca_file",
    "tls.cert_file",
    "tls.key_file",
    "tls.verify_client",
    "tls.verify_https_client",
    "tls.insecure_plaintext",
    "quotas.max_queued_per_owner",
    "quotas.max_active_per_owner",
    "quotas.max_output_bytes_per_owner",
    "quotas.max_state_bytes",
    "limits.max_connections",
    "limits.max_connections_per_address",
    "limits.max_streams_per_connection",
    "limits.read_timeout",
    "limits.rate",
    "limits.burst",
];

/// The environment variable overriding `key`.
pub fn env_var_of(key: &str) -> String {
    format!("DROVER_{}", key.replace('.', "_").to_uppercase())
}

/// Keys whose values are text even when they look like a number or a
/// boolean (a cluster named `1`), so the environment's raw string is taken
/// as is. Every other key's value is read as a TOML value (`true`, `8192`,
/// `["a", "b"]`, `{ zone = "a" }`), and taken as a string when it is not one
/// (`100ms`, `127.0.0.1:7700`).
const TEXT_KEYS: &[&str] = &[
    "cluster_id",
    "data_dir",
    "listen.api",
    "listen.raft",
    "listen.http",
    "listen.socket",
    "advertise.api",
    "advertise.raft",
    "advertise.http",
    "executor.docker_host",
    "executor.default_image",
    "executor.scratch_dir",
    "executor.policy.user",
    "executor.policy.pull",
    "log.level",
    "log.format",
    "tls.ca_file",
    "tls.cert_file",
    "tls.key_file",
    "acl.bootstrap_token_file",
];

pub(super) fn env_value(key: &str, raw: &str) -> toml::Value {
    if TEXT_KEYS.contains(&key) {
        return toml::Value::String(raw.to_string());
    }
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut table) => table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Sets a dotted key in a TOML document, creating tables on the way.
pub(super) fn set_path(
    document: &mut toml::Table,
    key: &str,
    value: toml::Value,
) -> Result<(), String> {
    let mut table = document;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a table in the file"))?;
    }
    Ok(())
}
