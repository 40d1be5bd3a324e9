//! Numbered, forward-only schema migrations, run by [`super::Store::open`].
//!
//! Each migration lives in `migrations/mNNNN_name.rs` at the top of the
//! repository (included below with `#[path]`) and moves `meta.schema_version`
//! from `N-1` to `N`. The contract for a migration function:
//! - it does its rewrite and the version bump in ONE sled transaction (or is
//!   idempotent, so that re-running it after a crash half-way is harmless);
//! - it is frozen: it encodes the formats of its own version, never today's
//!   structs, because a store may meet it years later;
//! - it returns `Err` with a reason instead of panicking.
//!
//! The runner checks the numbering is contiguous, that each migration left
//! the version it promised, and flushes after each one, so a crash between
//! migrations resumes at the right step.
//!
//! Version 0 means "a directory whose identity (cluster id, node id) is
//! recorded but whose layout was never initialised": what a crash during the
//! very first open leaves behind.

use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use super::layout::{KEY_SCHEMA_VERSION, META_TREE};

#[path = "../../migrations/m0001_initial.rs"]
mod m0001_initial;
#[path = "../../migrations/m0002_job_lifecycle.rs"]
mod m0002_job_lifecycle;
#[path = "../../migrations/m0003_acl.rs"]
mod m0003_acl;
#[path = "../../migrations/m0004_apply_journal.rs"]
mod m0004_apply_journal;
#[path = "../../migrations/m0005_idempotency_per_owner.rs"]
mod m0005_idempotency_per_owner;
#[path = "../../migrations/m0006_job_user.rs"]
mod m0006_job_user;

/// One schema migration.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// The schema version this migration produces (from `version - 1`).
    pub version: u32,
    /// Short name, for logs and errors.
    pub name: &'static str,
    /// Performs the migration (see the module docs for the contract).
    pub up: fn(&sled::Db) -> Result<(), String>,
}

/// Every migration this binary knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    m0001_initial::MIGRATION,
    m0002_job_lifecycle::MIGRATION,
    m0003_acl::MIGRATION,
    m0004_apply_journal::MIGRATION,
    m0005_idempotency_per_owner::MIGRATION,
    m0006_job_user::MIGRATION,
];

/// The schema version this binary writes: the last migration's.
pub const SCHEMA_VERSION: u32 = 6;

/// Reads the schema version (0 if none is recorded).
pub fn read_schema_version(meta: &sled::Tree) -> Result<u32, String> {
    decode_version(
        meta.get(KEY_SCHEMA_VERSION)
            .map_err(|e| e.to_string())?
            .as_deref(),
    )
}

/// Reads the schema version inside a transaction (0 if none is recorded).
/// For migrations, to check their precondition atomically.
pub fn read_schema_version_tx(
    meta: &TransactionalTree,
) -> Result<Result<u32, String>, UnabortableTransactionError> {
    Ok(decode_version(meta.get(KEY_SCHEMA_VERSION)?.as_deref()))
}

/// Records the schema version inside a migration's transaction.
pub fn write_schema_version_tx(
    meta: &TransactionalTree,
    version: u32,
) -> Result<(), UnabortableTransactionError> {
    meta.insert(KEY_SCHEMA_VERSION, &version.to_be_bytes()[..])?;
    Ok(())
}

fn decode_version(bytes: Option<&[u8]>) -> Result<u32, String> {
    match bytes {
        None => Ok(0),
        Some(b) => <[u8; 4]>::try_from(b)
            .map(u32::from_be_bytes)
            .map_err(|_| format!("schema_version of {} bytes, expected 4", b.len())),
    }
}

/// Runs every migration in `migrations` above the stored version. Returns
/// the final version. Errors are descriptions; the caller adds the path.
pub(crate) fn run(
    db: &sled::Db,
    migrations: &[Migration],
) -> Result<u32, (Option<Migration>, String)> {
    let meta = db.open_tree(META_TREE).map_err(|e| (None, e.to_string()))?;
    let mut version = read_schema_version(&meta).map_err(|e| (None, e))?;
    let start = version;
    for m in migrations.iter().filter(|m| m.version > start) {
        if m.version != version + 1 {
            return Err((
                Some(*m),
                format!(
                    "migrations are not contiguous: at version {version}, next is {}",
                    m.version
                ),
            ));
        }
        tracing::info!(
            from = version,
            to = m.version,
            name = m.name,
            "migrating store schema"
        );
        (m.up)(db).map_err(|e| (Some(*m), e))?;
        let after = read_schema_version(&meta).map_err(|e| (Some(*m), e))?;
        if after != m.version {
            return Err((
                Some(*m),
                format!("left schema version {after}, expected {}", m.version),
            ));
        }
        db.flush().map_err(|e| (Some(*m), format!("flush: {e}")))?;
        version = after;
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_version_is_the_last_migration_and_numbering_is_contiguous() {
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
        for (n, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, n + 1, "migration {}", m.name);
        }
    }
}
