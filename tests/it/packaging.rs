//! The Debian package's man page and shell completions are committed under `deploy/debian/`,
//! so `cargo deb` alone builds the whole package from a clean tree. They must be exactly what
//! the binary prints now: a changed option or subcommand fails here until they are
//! regenerated, with one command:
//!
//! ```sh
//! PKCV_REGENERATE=1 cargo test --test it packaging::
//! ```

use std::path::{Path, PathBuf};

use crate::support::run_pkcv;

const REGENERATE: &str = "PKCV_REGENERATE=1 cargo test --test it packaging::";

/// Each committed file, and the `pkcv-proxy` arguments that print it.
const ASSETS: &[(&str, &[&str])] = &[
    ("deploy/debian/pkcv-proxy.1", &["man"]),
    (
        "deploy/debian/completions/pkcv-proxy.bash",
        &["completions", "bash"],
    ),
    (
        "deploy/debian/completions/_pkcv-proxy",
        &["completions", "zsh"],
    ),
    (
        "deploy/debian/completions/pkcv-proxy.fish",
        &["completions", "fish"],
    ),
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[tokio::test]
async fn the_committed_man_page_and_completions_are_what_the_binary_prints() {
    let regenerate = std::env::var_os("PKCV_REGENERATE").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (path, args) in ASSETS {
        let output = run_pkcv(args, None, &[]).await;
        assert!(
            output.status.success(),
            "pkcv-proxy {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.stdout.len() > 500,
            "pkcv-proxy {args:?} printed too little"
        );
        let file = repo(path);
        if regenerate {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &output.stdout).unwrap();
            continue;
        }
        let committed = std::fs::read(&file).unwrap_or_default();
        if committed != output.stdout {
            stale.push(format!("{path} (pkcv-proxy {})", args.join(" ")));
        }
    }
    assert!(
        stale.is_empty(),
        "the packaged files differ from what the binary prints now:\n  {}\nregenerate them: {REGENERATE}",
        stale.join("\n  ")
    );
}

/// `cargo deb` packages these very files: every committed asset is named in Cargo.toml's
/// `[package.metadata.deb]`, and nothing there points into `target/` but the binary.
#[test]
fn the_deb_metadata_packages_the_committed_files() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo("Cargo.toml")).unwrap()).unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    let sources: Vec<&str> = assets
        .iter()
        .map(|asset| asset[0].as_str().unwrap())
        .collect();
    for (path, _) in ASSETS {
        assert!(
            sources.contains(path),
            "{path} is not packaged: {sources:?}"
        );
    }
    for source in &sources {
        assert!(
            !source.starts_with("target/") || *source == "target/release/pkcv-proxy",
            "{source}: a packaged file that a clean tree does not have"
        );
    }
}
