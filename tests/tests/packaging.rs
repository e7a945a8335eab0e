//! The library crates and the chat can be published: each package has the metadata crates.io
//! and docs.rs show (`repository`, `readme`, `keywords`, `categories`, `documentation`,
//! `license`), and its package contains its README and both license files. `.ci/run` also runs
//! `cargo publish --dry-run --workspace`, which builds every package from its own tarball.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const PUBLISHED: [&str; 5] = [
    "hyperdht-proto",
    "hyperdht-kit",
    "hyperdht-mio",
    "hyperdht-async-std",
    "hyperdht-chat",
];

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn published_packages_carry_their_metadata() {
    let out = cargo()
        .current_dir(workspace_root())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    for name in PUBLISHED {
        let p = packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the workspace"));
        for field in [
            "repository",
            "readme",
            "documentation",
            "license",
            "description",
        ] {
            assert!(
                p[field].as_str().is_some_and(|s| !s.is_empty()),
                "{name} has no {field}"
            );
        }
        for field in ["keywords", "categories"] {
            assert!(
                p[field].as_array().is_some_and(|a| !a.is_empty()),
                "{name} has no {field}"
            );
        }
        assert!(p["publish"].is_null(), "{name} must be publishable");
        // Dependencies inside the workspace need a version to be published.
        for dep in p["dependencies"].as_array().unwrap() {
            if dep["path"].is_string() && dep["kind"].is_null() {
                assert_ne!(dep["req"], "*", "{name}: {} has no version", dep["name"]);
            }
        }
    }
}

#[test]
fn published_packages_contain_readme_and_licenses() {
    for name in PUBLISHED {
        let out = cargo()
            .current_dir(workspace_root())
            .args([
                "package",
                "--list",
                "--allow-dirty",
                "--offline",
                "-p",
                name,
            ])
            .output()
            .expect("cargo package runs");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let files = String::from_utf8_lossy(&out.stdout);
        for wanted in ["README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
            assert!(
                files.lines().any(|l| l == wanted),
                "{name}'s package has no {wanted}: {files}"
            );
        }
    }
}
