//! `docs/ARCHITECTURE.md` matches the tree: every path it names exists, and
//! every module directory under `src/` is on its map.

use std::path::Path;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The backticked repository paths of a markdown text (`src/...`, ...).
fn paths_in(text: &str) -> Vec<String> {
    let roots = [
        "src/",
        "tests/",
        "benches/",
        "proto/",
        "migrations/",
        "config/",
        "docs/",
        "docker/",
    ];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| roots.iter().any(|r| s.starts_with(r)))
        .map(|s| s.trim_end_matches('/').to_string())
        .collect()
}

#[test]
fn the_architecture_document_names_only_files_that_exist_and_every_module() {
    let text = std::fs::read_to_string(Path::new(REPO).join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md");
    let paths = paths_in(&text);
    assert!(paths.len() > 40, "the map names the files: {paths:?}");
    assert!(!text.contains("shared/"), "the document stands on its own");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !Path::new(REPO).join(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md names files that do not exist: {missing:?}"
    );
    for entry in std::fs::read_dir(Path::new(REPO).join("src")).expect("src") {
        let entry = entry.expect("entry");
        if entry.path().is_dir() {
            let dir = format!("src/{}", entry.file_name().to_string_lossy());
            assert!(
                paths.contains(&dir),
                "docs/ARCHITECTURE.md does not map `{dir}`"
            );
        }
    }
}

#[test]
fn path_extraction_takes_backticked_repository_paths_only() {
    let text = "see `src/raft/log.rs` and `cargo test` and `tests/`";
    assert_eq!(paths_in(text), ["src/raft/log.rs", "tests"]);
}
