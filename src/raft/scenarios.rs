//! Data-driven scenario tests, in the style of etcd-raft's interaction
//! tests: each file in `src/raft/testdata/*.txt` is a script of commands
//! run on the in-memory network of `test_net`, with the output each
//! command must print written under it. One `#[test]` runs every file and
//! reports the file, line, command, and expected vs actual output of each
//! mismatch. `DROVER_RAFT_REWRITE=1 cargo test raft::scenarios` rewrites
//! the expected blocks with the actual output (review the diff!).
//!
//! # Grammar
//! ```text
//! # a comment (a whole line; also ` # ...` at the end of a command)
//! command 1,2 key=value flag      <- one command per line
//! ----                            <- optional: expected output follows
//! expected line 1                 <- up to the next blank line
//! expected line 2
//! ```
//! A command without `----` must print nothing. Arguments: bare numbers
//! or comma lists are node ids, `key=value` named arguments, other bare
//! words flags (`word=true`). Unknown commands or arguments fail the file.
//!
//! # Commands
//! Cluster: `create voters= [learners=] [pre_vote= check_quorum=
//! election_ticks= heartbeat_ticks= max_inflight= max_append_bytes=
//! max_uncommitted= snapshot_chunk_bytes= trailing_entries=] [term=T
//! log.N=1,3x50]`, `add-node N`, `restart N`.
//! Time and elections: `tick [N..] [n=] [stabilize=false]`, `campaign N
//! [transfer]`, `elect N`.
//! Network: `stabilize`, `deliver`/`drop`/`pending`/`msgs [from= to=
//! type= with=] [n=] [count]`, `isolate N`, `partition 1,2 3`, `block
//! from= to=`, `filter [selector] [after=] [n=]`, `heal`, `inject from=
//! to= type= ...`.
//! Requests: `propose N [data=] [n=]`, `transfer-leader N to=`,
//! `read-index N ctx=`, `reads [N..]`, `add-learner`/`promote`/`remove N
//! id=`, `compact N [index=] [bytes=]`.
//! Output: `status`, `log [from= to=]`, `members`, `applied`, `snapshots`
//! `[N..]`, `progress N`.
//!
//! Only `tick` and `elect` deliver messages on their own; every other
//! command leaves what it causes queued until `stabilize` or `deliver`.

mod args;
mod commands;
mod format;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use commands::Env;

/// One piece of a script file: text kept as is (comments, blank lines) or
/// a command with its expected output.
enum Item {
    Text(String),
    Case(Case),
}

/// A command line and the output written under it.
struct Case {
    /// 1-based line number of the command.
    line: usize,
    /// The command line as written (comment included).
    raw: String,
    /// `None` if there is no `----` block (the command must print nothing).
    expected: Option<Vec<String>>,
}

impl Case {
    /// The command without a trailing ` # comment`.
    fn command(&self) -> &str {
        match self.raw.find(" #") {
            Some(i) => self.raw[..i].trim(),
            None => self.raw.trim(),
        }
    }
}

/// Splits a script into text and cases.
fn parse(text: &str) -> Result<Vec<Item>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            items.push(Item::Text(line.to_string()));
            i += 1;
            continue;
        }
        let mut case = Case {
            line: i + 1,
            raw: line.to_string(),
            expected: None,
        };
        i += 1;
        if lines.get(i).is_some_and(|l| l.trim() == "----") {
            i += 1;
            let mut expected = Vec::new();
            while let Some(l) = lines.get(i).filter(|l| !l.trim().is_empty()) {
                if l.trim() == "----" {
                    return Err(format!(
                        "line {}: `----` inside an expected block \
                         (a blank line must end the block above)",
                        i + 1
                    ));
                }
                expected.push(l.trim_end().to_string());
                i += 1;
            }
            case.expected = Some(expected);
        }
        items.push(Item::Case(case));
    }
    Ok(items)
}

/// The script again, with each case's expected block replaced by `actual`.
fn render(items: &[Item], actual: &[Option<Vec<String>>]) -> String {
    let mut out = String::new();
    let mut k = 0;
    for (n, item) in items.iter().enumerate() {
        match item {
            Item::Text(t) => out.push_str(t),
            Item::Case(c) => {
                out.push_str(&c.raw);
                let got = actual.get(k).cloned().flatten();
                let lines = got.or_else(|| c.expected.clone()).unwrap_or_default();
                if !lines.is_empty() || c.expected.is_some() {
                    out.push_str("\n----");
                    for l in lines {
                        out.push('\n');
                        out.push_str(&l);
                    }
                    // An expected block ends at a blank line.
                    let blank_next = match items.get(n + 1) {
                        Some(Item::Text(t)) => t.trim().is_empty(),
                        Some(Item::Case(_)) => false,
                        None => true,
                    };
                    if !blank_next {
                        out.push('\n');
                    }
                }
                k += 1;
            }
        }
        out.push('\n');
    }
    out
}

/// What running one script found: its parsed items, the actual output of
/// each case that ran, the mismatches, and the script error that stopped
/// it (bad command, panic), if any. All as printable reports.
struct FileResult {
    items: Vec<Item>,
    actual: Vec<Option<Vec<String>>>,
    mismatches: Vec<String>,
    error: Option<String>,
}

/// Runs one script.
fn run_file(path: &Path) -> FileResult {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let name = path
        .strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let items = match parse(&text) {
        Ok(items) => items,
        Err(e) => {
            return FileResult {
                items: Vec::new(),
                actual: Vec::new(),
                mismatches: Vec::new(),
                error: Some(format!("{name}: {e}")),
            }
        }
    };
    let mut env = Env::default();
    let mut mismatches = Vec::new();
    let mut error = None;
    let mut actual = Vec::new();
    for item in &items {
        let Item::Case(case) = item else { continue };
        let cmd = case.command();
        let result = catch_unwind(AssertUnwindSafe(|| env.run(cmd)));
        let out = match result {
            Ok(Ok(out)) => out
                .iter()
                .map(|l| l.trim_end().to_string())
                .collect::<Vec<String>>(),
            Ok(Err(e)) => {
                error = Some(format!("{name}:{}: `{cmd}`: {e}", case.line));
                break;
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                error = Some(format!("{name}:{}: `{cmd}` panicked: {msg}", case.line));
                break;
            }
        };
        let expected = case.expected.clone().unwrap_or_default();
        if out != expected {
            mismatches.push(format!(
                "{name}:{}: `{cmd}`\n  expected:\n{}\n  actual:\n{}",
                case.line,
                indent(&expected),
                indent(&out)
            ));
        }
        actual.push(Some(out));
    }
    FileResult {
        items,
        actual,
        mismatches,
        error,
    }
}

fn indent(lines: &[String]) -> String {
    if lines.is_empty() {
        return "    (nothing)".into();
    }
    lines
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The script files, sorted by name.
fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/raft/testdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

/// Runs every script; in rewrite mode, writes the actual output back and
/// fails only on script errors.
#[test]
fn scenario_scripts() {
    let rewrite = std::env::var("DROVER_RAFT_REWRITE").is_ok_and(|v| v == "1");
    let files = scripts();
    assert!(
        !files.is_empty(),
        "no scenario scripts in src/raft/testdata"
    );
    let mut failures = Vec::new();
    let mut failed_files = 0;
    for path in &files {
        let r = run_file(path);
        if rewrite && !r.items.is_empty() {
            std::fs::write(path, render(&r.items, &r.actual))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let before = failures.len();
        if !rewrite {
            failures.extend(r.mismatches);
        }
        failures.extend(r.error);
        failed_files += usize::from(failures.len() > before);
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) in {failed_files} of {} scenario scripts \
         (DROVER_RAFT_REWRITE=1 rewrites expected output):\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn parse_and_render_round_trip() {
    let text = "# comment\n\ncreate voters=1\nstatus 1 # trailing\n----\n1: a\n\nlog\n----\n";
    let items = parse(text).expect("well formed");
    let cases: Vec<&Case> = items
        .iter()
        .filter_map(|i| match i {
            Item::Case(c) => Some(c),
            Item::Text(_) => None,
        })
        .collect();
    assert_eq!(cases.len(), 3);
    assert_eq!(cases[1].command(), "status 1");
    assert_eq!(cases[1].line, 4);
    assert_eq!(cases[1].expected, Some(vec!["1: a".to_string()]));
    assert_eq!(cases[2].expected, Some(vec![]));
    assert_eq!(render(&items, &[]), text);
    assert!(
        parse("a\n----\nx\nb\n----\n").is_err(),
        "missing blank line"
    );
}
