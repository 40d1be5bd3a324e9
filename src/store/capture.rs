//! What an export that reads the table without the state-machine lock
//! needs to end up with the table at one applied index: every write set
//! committed meanwhile, laid over the rows it read.

use std::collections::BTreeMap;

use sled::IVec;

use super::layout::SmTree;
use super::staged::WriteSet;
use super::{lock, Store};

/// Every change committed while an export reads the table without the
/// state-machine lock: the latest value (or delete) of each key written.
/// The rows the export read, overlaid with these, are the table at the
/// applied index it reads under the lock at the end: a key not written
/// meanwhile was read as it is, and a key written meanwhile takes its
/// value from here, whatever the reader happened to see.
#[derive(Default)]
pub(crate) struct Capture {
    pub(crate) writes: BTreeMap<(SmTree, Vec<u8>), Option<IVec>>,
    /// A snapshot install replaced the whole table meanwhile (without a
    /// write set): the export must read again.
    pub(crate) replaced: bool,
}

impl Capture {
    /// The captured writes of one tree, in key order.
    pub(crate) fn of(&self, id: SmTree) -> impl Iterator<Item = (&[u8], &Option<IVec>)> {
        self.writes
            .range((id, Vec::new())..)
            .take_while(move |((tree, _), _)| *tree == id)
            .map(|((_, key), value)| (key.as_slice(), value))
    }
}

/// Ends an export's capture when dropped (see [`Store::start_capture`]).
pub(crate) struct CaptureGuard<'a>(&'a Store);

impl CaptureGuard<'_> {
    /// Ends the capture and hands it over. Caller holds `sm_lock`.
    pub(crate) fn take(&self) -> Option<Capture> {
        lock(&self.0.capture).take()
    }
}

impl Drop for CaptureGuard<'_> {
    fn drop(&mut self) {
        lock(&self.0.capture).take();
    }
}

/// `rows` (in key order) with `writes` (in key order) laid over them.
pub(crate) fn overlay<'w>(
    rows: Vec<(IVec, IVec)>,
    writes: impl Iterator<Item = (&'w [u8], &'w Option<IVec>)>,
) -> Vec<(IVec, IVec)> {
    let mut out = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    for (key, value) in writes {
        while let Some(row) = rows.next_if(|(k, _)| k.as_ref() < key) {
            out.push(row);
        }
        // The row read for this key, if any, is replaced.
        rows.next_if(|(k, _)| k.as_ref() == key);
        if let Some(value) = value {
            out.push((IVec::from(key), value.clone()));
        }
    }
    out.extend(rows);
    out
}

impl Capture {
    /// Adds a committed write set (later writes of a key replace earlier
    /// ones).
    pub(crate) fn record(&mut self, set: &WriteSet) {
        for (id, key, value) in &set.writes {
            self.writes.insert((*id, key.clone()), value.clone());
        }
    }
}

impl Store {
    /// Starts capturing for an export; the capture ends when the returned
    /// guard is dropped (also if the export fails or panics half-way, so
    /// commits never go on recording into an abandoned capture). Caller
    /// holds `sm_lock`.
    pub(crate) fn start_capture(&self) -> CaptureGuard<'_> {
        *lock(&self.capture) = Some(Capture::default());
        CaptureGuard(self)
    }

    /// Tells a running export that the table was replaced wholesale (or
    /// that a commit failed part-way).
    pub(crate) fn capture_replaced(&self) {
        if let Some(capture) = lock(&self.capture).as_mut() {
            capture.replaced = true;
        }
    }
}
