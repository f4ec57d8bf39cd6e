//! Architecture rules as ordinary tests (ARCHITECTURE.md, "Architecture invariant" lines).

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `[dependencies]` names of a crate's manifest.
fn dependencies(krate: &str) -> Vec<String> {
    let manifest =
        std::fs::read_to_string(workspace().join("crates").join(krate).join("Cargo.toml"))
            .expect("manifest");
    let mut in_deps = false;
    let mut out = vec![];
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps
            && let Some((name, _)) = line.split_once(['.', ' ', '='])
            && !name.is_empty()
        {
            out.push(name.to_owned());
        }
    }
    out
}

/// Architecture invariant: `domain` does no IO and cannot fail because of the outside world,
/// so it depends on nothing that could do IO or read the clock. `serde_json` is there for the
/// policy input (rule 29), which the rules build and policies read, and for an action's
/// arguments (issue 18); `sha2` for an action's digest, a pure function.
#[test]
fn domain_depends_only_on_serde_sha2_and_thiserror() {
    assert_eq!(
        dependencies("domain"),
        ["serde", "serde_json", "sha2", "thiserror"]
    );
}

/// Architecture invariant: the CLI talks to a server over HTTP and cannot decide anything
/// itself, so it does not depend on the server's crates.
#[test]
fn cli_does_not_depend_on_server_crates() {
    let deps = dependencies("cli");
    for forbidden in ["domain", "config", "store", "engine", "api"] {
        assert!(
            !deps.iter().any(|d| d == forbidden),
            "cli depends on {forbidden}"
        );
    }
}

/// Architecture invariant: `audit` (the hash chain and signed checkpoints, shared by the
/// server and the CLI) does no IO and depends on no crate of the workspace, so that the CLI
/// can recompute the chain without the server's crates.
#[test]
fn audit_is_pure_and_depends_on_no_workspace_crate() {
    assert_eq!(
        dependencies("audit"),
        [
            "base64",
            "hex",
            "ring",
            "serde",
            "serde_json",
            "sha2",
            "thiserror"
        ]
    );
}

/// Architecture invariant: the load generators are not part of the product. No crate depends
/// on `crates/bench`, and a plain `cargo build` or `cargo run` at the root leaves it out
/// (issue 13, item 7: the `bench*` commands moved out of `countersign`).
#[test]
fn hardening_7_bench_is_not_part_of_the_product() {
    let crates = std::fs::read_dir(workspace().join("crates")).expect("crates dir");
    for entry in crates {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        if name != "bench" {
            let deps = dependencies(&name);
            assert!(
                !deps.iter().any(|d| d.contains("bench")),
                "{name} depends on the bench"
            );
        }
    }
    let root = std::fs::read_to_string(workspace().join("Cargo.toml")).expect("Cargo.toml");
    let (_, after) = root
        .split_once("default-members")
        .expect("the workspace names its default members");
    let (members, _) = after.split_once(']').expect("a list");
    assert!(members.contains("crates/server"), "{members}");
    assert!(!members.contains("crates/bench"), "{members}");
    assert!(
        !members.contains('*'),
        "a glob would take in crates/bench: {members}"
    );
}

/// Every crate root opens with a `//!` paragraph saying what it owns (STYLE.md habit 15).
#[test]
fn every_crate_root_has_a_module_doc() {
    let crates = std::fs::read_dir(workspace().join("crates")).expect("crates dir");
    for entry in crates {
        let dir = entry.expect("entry").path();
        for root in ["src/lib.rs", "src/main.rs"] {
            let path = dir.join(root);
            if let Ok(text) = std::fs::read_to_string(&path) {
                assert!(
                    text.starts_with("//!"),
                    "{} has no //! module doc",
                    path.display()
                );
            }
        }
    }
}

/// Architecture invariant: the clock is read in one place. `clippy.toml` bans the clock
/// functions; this checks the ban is still there.
#[test]
fn clock_reads_are_banned_in_clippy_toml() {
    let clippy = std::fs::read_to_string(workspace().join("clippy.toml")).expect("clippy.toml");
    for banned in [
        "std::time::SystemTime::now",
        "std::time::Instant::now",
        "tokio::time::sleep",
    ] {
        assert!(
            clippy.contains(banned),
            "clippy.toml no longer bans {banned}"
        );
    }
}
