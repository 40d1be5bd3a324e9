//! The arguments of one script command: `command 1,2 key=value flag`.
//!
//! - a bare number or comma list (`3`, `1,2`) is a positional node list;
//! - `key=value` is a named argument (the value may itself contain `=`);
//! - any other bare word is a flag, the same as `word=true`.
//!
//! Every named argument must be read by the command: one that is not is
//! reported as unknown, so a typo in a script fails instead of silently
//! changing nothing.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use super::super::NodeId;

/// The parsed arguments, and which named ones the command used.
pub(super) struct Args {
    positional: Vec<Vec<NodeId>>,
    named: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

/// A script mistake (not a protocol outcome): stops the script.
pub(super) type ScriptResult<T> = Result<T, String>;

impl Args {
    /// Splits the words after the command name.
    pub(super) fn parse(words: &[&str]) -> ScriptResult<Args> {
        let mut positional = Vec::new();
        let mut named = BTreeMap::new();
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                if named.insert(k.to_string(), v.to_string()).is_some() {
                    return Err(format!("argument {k} given twice"));
                }
            } else if w.chars().all(|c| c.is_ascii_digit() || c == ',') {
                positional.push(ids(w)?);
            } else {
                named.insert(w.to_string(), "true".to_string());
            }
        }
        Ok(Args {
            positional,
            named,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    /// All positional node ids, flattened (empty if none).
    pub(super) fn nodes(&self) -> Vec<NodeId> {
        self.positional.iter().flatten().copied().collect()
    }

    /// The positional node lists, one per word (for `partition`).
    pub(super) fn groups(&self) -> &[Vec<NodeId>] {
        &self.positional
    }

    /// Exactly one positional node id.
    pub(super) fn node(&self) -> ScriptResult<NodeId> {
        match self.nodes()[..] {
            [id] => Ok(id),
            _ => Err("expected exactly one node id".into()),
        }
    }

    /// A named argument's raw text, if given.
    pub(super) fn str(&self, key: &str) -> Option<String> {
        self.used.borrow_mut().insert(key.to_string());
        self.named.get(key).cloned()
    }

    pub(super) fn u64_or(&self, key: &str, default: u64) -> ScriptResult<u64> {
        self.opt_u64(key).map(|v| v.unwrap_or(default))
    }

    pub(super) fn opt_u64(&self, key: &str) -> ScriptResult<Option<u64>> {
        self.str(key)
            .map(|v| v.parse().map_err(|_| format!("{key}={v}: not a number")))
            .transpose()
    }

    pub(super) fn req_u64(&self, key: &str) -> ScriptResult<u64> {
        self.opt_u64(key)?
            .ok_or_else(|| format!("missing argument {key}="))
    }

    pub(super) fn bool_or(&self, key: &str, default: bool) -> ScriptResult<bool> {
        match self.str(key).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(format!("{key}={v}: expected true or false")),
        }
    }

    /// A named node list (`to=2,3`), if given.
    pub(super) fn opt_ids(&self, key: &str) -> ScriptResult<Option<Vec<NodeId>>> {
        self.str(key).map(|v| ids(&v)).transpose()
    }

    /// Named arguments whose key starts with `prefix` (e.g. `log.`), with
    /// the rest of the key.
    pub(super) fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let found: Vec<(String, String)> = self
            .named
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
            .collect();
        for (k, _) in &found {
            self.used.borrow_mut().insert(format!("{prefix}{k}"));
        }
        found
    }

    /// Fails if a named argument was never read by the command.
    pub(super) fn check_all_used(&self) -> ScriptResult<()> {
        let used = self.used.borrow();
        let unknown: Vec<&String> = self.named.keys().filter(|k| !used.contains(*k)).collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!("unknown argument(s): {unknown:?}"))
        }
    }
}

/// `1,2,3` as node ids.
pub(super) fn ids(s: &str) -> ScriptResult<Vec<NodeId>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|_| format!("{p}: not a node id")))
        .collect()
}

/// A list of terms with repetition: `1,3x50` is a 1 then fifty 3s.
pub(super) fn terms(s: &str) -> ScriptResult<Vec<u64>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (term, times) = part.split_once('x').unwrap_or((part, "1"));
        let bad = || format!("{part}: expected TERM or TERMxCOUNT");
        let term: u64 = term.parse().map_err(|_| bad())?;
        let times: usize = times.parse().map_err(|_| bad())?;
        out.extend(std::iter::repeat_n(term, times));
    }
    Ok(out)
}
