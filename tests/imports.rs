//! No import circle between the files of `src/`: each file's imports (its
//! `use` declarations and the `crate::`/`super::` paths in its code) form
//! a graph without cycles, so every file can be read knowing only what it
//! imports. A module's `mod.rs` naming its own children is structure, not
//! an import, and is not counted; neither are unit-test modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path: `["store", "apply"]` for `src/store/apply.rs`.
type ModPath = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(rel: &Path) -> ModPath {
    let mut parts: ModPath = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code without comments (line comments and doc comments) and without
/// its unit-test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.trim_start().starts_with("//") {
            true => "",
            false => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` gives `a::b`,
/// `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn split_top(body: &str) -> Vec<&str> {
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, ch) in body.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(&body[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(&body[start..]);
        out
    }
    fn walk(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if tree.is_empty() {
            return;
        }
        if let (Some(open), true) = (tree.find('{'), tree.ends_with('}')) {
            let mut base = prefix.to_vec();
            base.extend(
                tree[..open]
                    .split("::")
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().to_string()),
            );
            for part in split_top(&tree[open + 1..tree.len() - 1]) {
                walk(&base, part, out);
            }
            return;
        }
        let tree = tree.split(" as ").next().unwrap_or(tree);
        let mut path = prefix.to_vec();
        path.extend(tree.split("::").map(|s| s.trim().to_string()));
        out.push(path);
    }
    let mut out = Vec::new();
    walk(&[], tree, &mut out);
    out
}

/// Every `use …;` declaration in `code`: (is it a re-export, its tree).
fn use_decls(code: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let before = rest[..at].trim_end();
        let public = before.ends_with("pub") || (before.ends_with(')') && before.contains("pub("));
        let after = &rest[at + 3..];
        let Some(end) = after.find(';') else { break };
        out.push((public, after[..end].to_string()));
        rest = &after[end..];
    }
    out
}

/// Where `word` stands alone in `text` (not inside another identifier).
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = text[from..].find(word) {
        let at = from + pos;
        let before_ok = text[..at].chars().next_back().is_none_or(|c| !is_ident(c));
        let after_ok = text[at + word.len()..]
            .chars()
            .next()
            .is_some_and(char::is_whitespace);
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// `crate::a::b` and `super::c` paths written in the code.
fn code_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let is_path = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !is_path(bytes[i - 1]))
            && ["crate::", "super::"]
                .iter()
                .any(|p| bytes[i..].iter().take(p.len()).copied().eq(p.chars()));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < bytes.len() && is_path(bytes[j]) {
            j += 1;
        }
        let text: String = bytes[i..j].iter().collect();
        out.push(
            text.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        );
        i = j;
    }
    out
}

struct Tree {
    /// Module path -> file (relative to src/).
    files: BTreeMap<ModPath, PathBuf>,
    /// (module, item) -> the module a `pub use self::…` re-exports it from.
    reexports: BTreeMap<(ModPath, String), ModPath>,
}

impl Tree {
    /// The file an import `path`, written in module `at`, reaches.
    fn resolve(&self, at: &ModPath, path: &[String]) -> Option<&PathBuf> {
        let (mut full, rest): (ModPath, &[String]) = match path.first().map(String::as_str) {
            Some("crate") => (Vec::new(), &path[1..]),
            Some("self") => (at.clone(), &path[1..]),
            Some("super") => {
                let mut base = at.clone();
                let mut rest = path;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                (base, rest)
            }
            _ => return None,
        };
        full.extend(rest.iter().filter(|s| *s != "self").cloned());
        for len in (0..=full.len()).rev() {
            let mut module = full[..len].to_vec();
            if !self.files.contains_key(&module) {
                continue;
            }
            if let Some(item) = full.get(len) {
                let mut hops = 0;
                while let Some(from) = self.reexports.get(&(module.clone(), item.clone())) {
                    module = from.clone();
                    hops += 1;
                    if hops > 8 || !self.files.contains_key(&module) {
                        break;
                    }
                }
            }
            return self.files.get(&module);
        }
        None
    }
}

#[test]
fn no_import_circle_between_files_of_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let mut texts = BTreeMap::new();
    let mut tree = Tree {
        files: BTreeMap::new(),
        reexports: BTreeMap::new(),
    };
    for path in &paths {
        let rel = path.strip_prefix(&src).expect("under src").to_path_buf();
        // The binary's root is not a module of the library.
        if rel == Path::new("main.rs") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(path).expect("read source"));
        tree.files.insert(module_of(&rel), rel.clone());
        texts.insert(rel, code);
    }
    for (rel, code) in &texts {
        let module = module_of(rel);
        for (public, decl) in use_decls(code) {
            for path in expand_use(&decl).into_iter().filter(|_| public) {
                if path.len() >= 3 && path[0] == "self" {
                    let mut from = module.clone();
                    from.extend(path[1..path.len() - 1].iter().cloned());
                    let item = path[path.len() - 1].clone();
                    tree.reexports.insert((module.clone(), item), from);
                }
            }
        }
    }
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (rel, code) in &texts {
        let module = module_of(rel);
        let mut deps = BTreeSet::new();
        let imports = use_decls(code)
            .into_iter()
            .filter(|(public, _)| !public)
            .flat_map(|(_, decl)| expand_use(&decl));
        for path in imports.chain(code_paths(code)) {
            if let Some(file) = tree.resolve(&module, &path) {
                if file != rel {
                    deps.insert(file.clone());
                }
            }
        }
        edges.insert(rel.clone(), deps);
    }
    // Any cycle: a depth-first search that meets a file on its own stack.
    fn visit(
        file: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        stack: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
        cycles: &mut Vec<String>,
    ) {
        if done.contains(file) {
            return;
        }
        if let Some(at) = stack.iter().position(|f| f == file) {
            let names: Vec<String> = stack[at..]
                .iter()
                .chain(std::iter::once(file))
                .map(|f| f.display().to_string())
                .collect();
            cycles.push(names.join(" -> "));
            return;
        }
        stack.push(file.clone());
        for dep in edges.get(file).into_iter().flatten() {
            visit(dep, edges, stack, done, cycles);
        }
        stack.pop();
        done.insert(file.clone());
    }
    let (mut done, mut cycles) = (BTreeSet::new(), Vec::new());
    for file in edges.keys() {
        visit(file, &edges, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(
        edges.len() > 50,
        "the scan found only {} files under src/",
        edges.len()
    );
    assert!(
        cycles.is_empty(),
        "import circles between files of src/ (move what both need into a file of its own):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_scan_reads_use_lists_reexports_and_paths() {
    // The parser on a small made-up pair: a `use` list, a re-export and a
    // path in code.
    let decls = use_decls("use super::{a::B, c};\npub use self::d::E;\nfn f() { crate::x::y(); }");
    assert_eq!(
        decls,
        vec![
            (false, " super::{a::B, c}".to_string()),
            (true, " self::d::E".to_string())
        ]
    );
    assert_eq!(
        expand_use("super::{a::B, c::{D, E as F}}"),
        vec![
            vec!["super", "a", "B"],
            vec!["super", "c", "D"],
            vec!["super", "c", "E"]
        ]
    );
    assert_eq!(
        code_paths("let x = crate::store::Store::open(); super::y();"),
        vec![vec!["crate", "store", "Store", "open"], vec!["super", "y"]]
    );
    let tree = Tree {
        files: [
            (vec![], PathBuf::from("lib.rs")),
            (vec!["store".into()], PathBuf::from("store/mod.rs")),
            (
                vec!["store".into(), "error".into()],
                PathBuf::from("store/error.rs"),
            ),
        ]
        .into_iter()
        .collect(),
        reexports: [(
            (vec!["store".to_string()], "StoreError".to_string()),
            vec!["store".to_string(), "error".to_string()],
        )]
        .into_iter()
        .collect(),
    };
    let at = vec!["node".to_string()];
    let path = |p: &str| p.split("::").map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        tree.resolve(&at, &path("crate::store::StoreError")),
        Some(&PathBuf::from("store/error.rs"))
    );
    assert_eq!(
        tree.resolve(&at, &path("crate::store::Store")),
        Some(&PathBuf::from("store/mod.rs"))
    );
}
