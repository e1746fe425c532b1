//! The shape of `src/`: modules depend downward only. A `use crate::a` in module `b` and a
//! `use crate::b` in module `a` (directly or through others) is a cycle, and fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The library's top-level module a file belongs to (`src/keys/dir.rs` → `keys`); `None` for
/// the binary (`main.rs`, `cli/`) and the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_owned();
    (!matches!(name.as_str(), "main" | "lib" | "cli")).then_some(name)
}

/// The top-level modules a file's code (not its comments) names as `crate::…`.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                found.insert(name);
            }
        }
    }
    found
}

/// The module graph of `src/`: module → the modules it uses.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    module_graph_of("src")
}

/// The module graph of the crate whose sources are in `dir` (relative to the workspace root).
fn module_graph_of(dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        uses.extend(references(&text).into_iter().filter(|used| *used != module));
    }
    graph
}

/// A cycle through `start`, if any, as the list of modules on it.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut path = vec![start.to_owned()];
    let mut visited = BTreeSet::new();
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        visited: &mut BTreeSet<String>,
    ) -> bool {
        let current = path.last().cloned().unwrap_or_default();
        for next in graph.get(&current).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if visited.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, path, visited) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    walk(graph, start, &mut path, &mut visited).then_some(path)
}

#[test]
fn src_modules_form_no_cycle() {
    let graph = module_graph();
    assert!(
        graph.len() > 10,
        "the scan found too few modules: {graph:?}"
    );
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module) {
            panic!("import cycle among src/ modules: {}", cycle.join(" → "));
        }
    }
}

/// The workspace's other crates (the stand-in, the load bench, the fuzz targets) have no
/// import cycle either.
#[test]
fn the_other_crates_form_no_cycle() {
    for dir in ["crates/standin/src", "crates/bench/src", "crates/fuzz/src"] {
        let graph = module_graph_of(dir);
        assert!(
            graph.len() > 3,
            "the scan of {dir} found too few modules: {graph:?}"
        );
        for module in graph.keys() {
            if let Some(cycle) = cycle_from(&graph, module) {
                panic!("import cycle among {dir} modules: {}", cycle.join(" → "));
            }
        }
    }
}

#[test]
fn the_cycle_check_finds_cycles() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle_from(&graph, "a").unwrap(),
        ["a", "b", "c", "a"].map(String::from)
    );
    graph.get_mut("c").unwrap().clear();
    assert!(cycle_from(&graph, "a").is_none());
    assert_eq!(
        references("use crate::keys::dir; // crate::proxy\nlet x = crate::token::unix_now();"),
        ["keys", "token"].map(String::from).into_iter().collect()
    );
}

#[test]
fn the_stand_in_is_not_part_of_the_proxy() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    assert!(!src.join("standin").exists());
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Only the demo, behind its feature, may use the stand-in crate.
        if text.contains("pkcv_standin") {
            assert!(
                file.ends_with("cli/demo.rs"),
                "{} uses the stand-in",
                file.display()
            );
        }
    }
}

#[test]
fn only_main_chooses_an_exit_code() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "the scan found too few files: {files:?}");
    let mut found = Vec::new();
    for file in files {
        if file == src.join("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for name in ["ExitCode", "process::exit"] {
            if text.contains(name) {
                found.push(format!("{} names {name}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "exit codes are main.rs's alone (subcommands return an Outcome): {found:?}"
    );
}

/// lib.rs is the map: every module it declares is named in its `//!` layout, so a new module
/// cannot be added without saying where it sits.
#[test]
fn the_crate_map_names_every_module() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let map: String = lib
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|line| {
            let line = line
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            line.strip_prefix("mod ")?.strip_suffix(';')
        })
        .collect();
    assert!(declared.len() > 30, "{declared:?}");
    let missing: Vec<&&str> = declared
        .iter()
        .filter(|module| {
            !map.contains(&format!("`{module}`")) && !map.contains(&format!("[`{module}`]"))
        })
        .collect();
    assert!(missing.is_empty(), "lib.rs's map does not name {missing:?}");
}
