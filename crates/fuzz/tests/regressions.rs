//! Every saved input through its target's properties: `regressions/<target>/*` (inputs that
//! once failed — drop a crash file there and it is a test) and the seed corpus
//! `corpus/<target>/*`.
//!
//! Files named `bug-<id>-*` are inputs for a known, unfixed bug in the proxy (see
//! `pkcv_fuzz::known`): they are left out of the per-target tests and run by one
//! `#[ignore]`d test per bug, which fails until `src/` is fixed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pkcv_fuzz::{known, runner, TARGETS};

fn files(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target);
    runner::load_corpus(&[dir])
        .expect("readable")
        .into_iter()
        .map(|(path, bytes)| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, bytes)
        })
        .collect()
}

/// Runs every file but the known bugs' through `target`, and fails naming each that fails.
fn passes(kind: &str, name: &str) {
    let target = pkcv_fuzz::target(name).expect("a target");
    let inputs = files(kind, name);
    let mut ran = 0;
    let mut failures = Vec::new();
    for (file, input) in &inputs {
        if file.starts_with("bug-") {
            continue;
        }
        ran += 1;
        if let Err(message) = runner::execute(target.check, input) {
            failures.push(format!("{kind}/{name}/{file}: {message}"));
        }
    }
    assert!(ran > 0, "no inputs in {kind}/{name}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn normalize_regressions() {
    passes("regressions", "normalize");
}

#[test]
fn route_regressions() {
    passes("regressions", "route");
}

#[test]
fn auth_regressions() {
    passes("regressions", "auth");
}

#[test]
fn config_regressions() {
    passes("regressions", "config");
}

#[test]
fn proxy_auth_regressions() {
    passes("regressions", "proxy_auth");
}

#[test]
fn proxy_auth_corpus() {
    passes("corpus", "proxy_auth");
}

#[test]
fn normalize_corpus() {
    passes("corpus", "normalize");
}

#[test]
fn head_regressions() {
    passes("regressions", "head");
}

#[test]
fn head_corpus() {
    passes("corpus", "head");
}

#[test]
fn route_corpus() {
    passes("corpus", "route");
}

#[test]
fn auth_corpus() {
    passes("corpus", "auth");
}

#[test]
fn config_corpus() {
    passes("corpus", "config");
}

// A bug the fuzzer finds gets its inputs as `regressions/<target>/bug-<id>-*`, an entry in
// `pkcv_fuzz::known` and an `#[ignore]`d test that runs them strictly until `src/` is fixed;
// then they become `fixed-<id>-*` and run with every other regression input above.
// `numeric-hosts` and `colon-client-name` went that way.

/// Every `bug-<id>-*` file belongs to a known bug with an ignored test above, and every
/// known bug has its inputs.
#[test]
fn known_bugs_match_their_inputs() {
    let known: BTreeSet<&str> = known::KNOWN_BUGS.iter().map(|bug| bug.id).collect();
    let mut with_inputs = BTreeSet::new();
    for target in TARGETS {
        for (file, _) in files("regressions", target.name) {
            let Some(rest) = file.strip_prefix("bug-") else {
                continue;
            };
            let id = known
                .iter()
                .find(|id| rest.starts_with(&format!("{id}-")))
                .unwrap_or_else(|| panic!("regressions/{}/{file}: no such known bug", target.name));
            with_inputs.insert(*id);
        }
    }
    assert_eq!(with_inputs, known, "known bugs without regression inputs");
}
