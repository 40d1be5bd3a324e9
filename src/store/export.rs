//! The whole job table at one applied index, for a snapshot or a backup,
//! read without holding up applies (see `staged`'s export capture).

use std::sync::Arc;

use sled::IVec;

use super::capture::{overlay, Capture};
use super::codec;
use super::layout::{self, SmTree, SnapshotRecord};
use super::{lock, snapshot, Snapshot, Store, StoreError};
use crate::acl::Token;
use crate::jobs::NodeRecord;
use crate::raft::SnapshotMeta;

impl Store {
    /// [`Store::export_state`], calling `during` while the rows are read
    /// (tests apply entries there).
    ///
    /// The rows are read WITHOUT `sm_lock`, so applies go on meanwhile (a
    /// table of 270,000 jobs takes about 0.2 s to read, which used to hold
    /// every write). Every change committed meanwhile is captured
    /// (`capture::Capture`); at the end, under the lock, the applied index
    /// is read and the capture laid over the rows read, which gives the
    /// table at exactly that index. If a snapshot install replaced the
    /// table meanwhile, the rows are read again under the lock.
    pub(super) fn export_state_with(
        &self,
        during: impl FnOnce(),
    ) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
        let _export = lock(&self.export_lock);
        let capturing = {
            let _sm = lock(&self.sm_lock);
            self.start_capture()
        };
        let read = self.read_table(during);
        let sm_lock = lock(&self.sm_lock);
        let capture = capturing.take();
        let sm = self.sm_meta()?;
        let table = match capture {
            Some(capture) if !capture.replaced => {
                drop(sm_lock);
                read?.overlaid(&capture)
            }
            // A snapshot install replaced the table meanwhile: read it
            // again, under the lock this time.
            _ => {
                let table = self.read_table(|| {})?;
                drop(sm_lock);
                table
            }
        };
        let Table {
            jobs: rows,
            nodes: node_rows,
            tokens: token_rows,
            bootstrap,
            staged,
        } = table;
        let (meta, data) = {
            let mut builder = snapshot::SnapshotBuilder::new();
            for (key, value) in &rows {
                // Decode to refuse to propagate a corrupt row to followers.
                self.decode_job(key, value)?;
                builder
                    .push_encoded_job(value)
                    .map_err(|d| self.corrupt(d))?;
            }
            drop(rows);
            for (_, value) in &node_rows {
                let _: NodeRecord = self.decode("node", value)?;
                builder
                    .push_encoded_node(value)
                    .map_err(|d| self.corrupt(d))?;
            }
            for (_, value) in &token_rows {
                let _: Token = self.decode("token", value)?;
                builder
                    .push_encoded_token(value)
                    .map_err(|d| self.corrupt(d))?;
            }
            if let Some(accessor) = bootstrap {
                builder.set_bootstrap(String::from_utf8_lossy(&accessor).into_owned());
            }
            // A restore being staged travels with the state (see
            // `store::restore`): the meta record, then chunks by seq.
            let mut meta = None;
            let mut chunks = Vec::new();
            for (key, value) in staged {
                if key.as_ref() == b"meta" {
                    meta = Some(value.to_vec());
                } else if let Some(seq) = key
                    .strip_prefix(b"c/")
                    .and_then(|s| <[u8; 4]>::try_from(s).ok())
                {
                    chunks.push((u32::from_be_bytes(seq), value.to_vec()));
                }
            }
            if let Some(meta) = meta {
                builder.set_staged(snapshot::StagedRestore { meta, chunks });
            }
            let meta = SnapshotMeta {
                index: sm.applied_index,
                term: sm.applied_term,
                membership: sm.membership,
            };
            let data = builder.finish(&meta)?;
            (meta, data)
        };
        Ok((meta, data))
    }

    /// The state machine at the applied index as snapshot bytes (the format
    /// of `store::snapshot`), without writing anything: what a snapshot file
    /// holds, and what a backup (`drover operator snapshot save`) carries.
    pub fn export_state(&self) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
        self.export_state_with(|| {})
    }

    /// The rows a snapshot carries, as they are now (no lock: see
    /// [`Store::export_state_with`]). `during` runs after the first job row.
    pub(super) fn read_table(&self, during: impl FnOnce()) -> Result<Table, StoreError> {
        let collect = |rows: &mut dyn Iterator<Item = sled::Result<(IVec, IVec)>>| {
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.sled_err(e))
        };
        let mut jobs_iter = self.sm.jobs.iter();
        let first = jobs_iter.next().transpose().map_err(|e| self.sled_err(e))?;
        during();
        let mut jobs: Vec<_> = first.into_iter().collect();
        jobs.extend(collect(&mut jobs_iter)?);
        Ok(Table {
            jobs,
            nodes: collect(&mut self.sm.nodes.iter())?,
            tokens: collect(&mut self.sm.acl.scan_prefix(layout::ACL_TOKEN_PREFIX))?,
            bootstrap: self
                .sm
                .acl
                .get(layout::ACL_BOOTSTRAP_KEY)
                .map_err(|e| self.sled_err(e))?,
            staged: collect(&mut self.sm.restore.iter())?,
        })
    }

    /// Writes a snapshot of the job table and membership at the applied
    /// index, durably (file, then record, then one flush), and returns it.
    /// The previous snapshot file is deleted afterwards. The caller may
    /// then [`Store::compact_log`] up to the returned index (less the
    /// trailing entries it wants to keep).
    pub fn create_snapshot(&self) -> Result<Snapshot, StoreError> {
        let (meta, data) = self.export_state()?;
        let _snap = lock(&self.snap_lock);
        if let Some(current) = self.snapshot_record()? {
            if current.meta.index > meta.index {
                // A newer snapshot was installed meanwhile; it wins.
                let data = snapshot::read_file(&self.snapshot_dir, &current)
                    .map_err(|d| self.corrupt(d))?;
                return Ok((current.meta, Arc::new(data)));
            }
        }
        let record = SnapshotRecord {
            meta: meta.clone(),
            file: snapshot::file_name(&meta),
            len: data.len() as u64,
            crc32: crc32fast::hash(&data),
        };
        snapshot::write_file(&self.snapshot_dir, &record.file, &data).map_err(|source| {
            StoreError::Io {
                path: self.snapshot_dir.join(&record.file),
                source,
            }
        })?;
        let encoded = codec::encode("snapshot record", &record)?;
        self.snapshots
            .insert(layout::KEY_LATEST_SNAPSHOT, encoded)
            .map_err(|e| self.sled_err(e))?;
        self.flush()?;
        snapshot::remove_stale_files(&self.snapshot_dir, Some(&record.file));
        tracing::info!(
            index = meta.index,
            term = meta.term,
            bytes = data.len(),
            "created snapshot"
        );
        Ok((meta, Arc::new(data)))
    }
}

/// The rows a snapshot carries: raw, in key order.
pub(super) struct Table {
    jobs: Vec<(IVec, IVec)>,
    nodes: Vec<(IVec, IVec)>,
    /// The `acl` tree's `t/` rows.
    tokens: Vec<(IVec, IVec)>,
    bootstrap: Option<IVec>,
    /// The `restore_staging` tree.
    staged: Vec<(IVec, IVec)>,
}

impl Table {
    /// The rows with every change of `capture` laid over them.
    pub(super) fn overlaid(self, capture: &Capture) -> Table {
        let tokens = capture
            .of(SmTree::Acl)
            .filter(|(key, _)| key.starts_with(layout::ACL_TOKEN_PREFIX));
        let bootstrap = capture
            .of(SmTree::Acl)
            .find(|(key, _)| *key == layout::ACL_BOOTSTRAP_KEY)
            .map_or(self.bootstrap, |(_, value)| value.clone());
        Table {
            jobs: overlay(self.jobs, capture.of(SmTree::Jobs)),
            nodes: overlay(self.nodes, capture.of(SmTree::Nodes)),
            tokens: overlay(self.tokens, tokens),
            bootstrap,
            staged: overlay(self.staged, capture.of(SmTree::Restore)),
        }
    }
}
