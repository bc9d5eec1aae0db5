//! The plugin author guide's four steps (new, build, test, ship), run exactly as the
//! README writes them, for each language; then the shipped file is loaded by a host.

mod common;

use common::{repo_path, TestHost};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shell block after `<!-- steps: LANG -->` in the README.
fn steps(lang: &str) -> String {
    let readme = std::fs::read_to_string(repo_path("README.md")).expect("read README.md");
    let marker = format!("<!-- steps: {lang} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("no ```sh block after {marker}"))
        .0;
    block.to_string()
}

/// `PATH` with the eventhost binary under test and the guest toolchains in front.
fn path_with_tools() -> String {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_eventhost"));
    let tools = common::toolchains().path;
    format!(
        "{}:{tools}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run_steps(lang: &str) {
    let work = Scratch(
        std::env::temp_dir().join(format!("eventhost-steps-{lang}-{}", uuid::Uuid::new_v4())),
    );
    let plugin_dir = work.0.join("plugins.d");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    let script = format!("set -euo pipefail\n{}\n", steps(lang));
    let ran = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work.0)
        .env("PATH", path_with_tools())
        .env("PLUGIN_DIR", &plugin_dir)
        // The README's paths are the plugin's own `target/`.
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run the README's steps");
    let said = format!(
        "{script}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(ran.status.success(), "the {lang} steps failed:\n{said}");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        stdout.contains("3 fixtures, 3 passed, 0 failed (my-plugin)"),
        "{said}"
    );
    let shipped = plugin_dir.join("my_plugin.wasm");
    assert_shipped(&shipped).await;
    assert_eq!(
        std::fs::read_dir(&plugin_dir).unwrap().count(),
        1,
        "only the renamed file is left in the plugin directory"
    );
}

async fn assert_shipped(shipped: &Path) {
    let host = TestHost::default().await;
    let plugin = host
        .runtime
        .load_file(shipped)
        .await
        .unwrap_or_else(|e| panic!("{} does not load: {e}", shipped.display()));
    assert_eq!(plugin.name().as_str(), "my-plugin");
    assert_eq!(plugin.subscriptions(), ["#".to_string()]);
    assert!(plugin.has_reader());
    drop(plugin);
    host.stop().await;
}

#[tokio::test]
async fn the_rust_steps_run_as_written() {
    run_steps("rust").await;
}

#[tokio::test]
async fn the_rust_steps_with_cargo_component_run_as_written() {
    run_steps("rust-cargo-component").await;
}

#[tokio::test]
async fn the_python_steps_run_as_written() {
    run_steps("python").await;
}

#[tokio::test]
async fn the_javascript_steps_run_as_written() {
    run_steps("js").await;
}

#[test]
fn a_new_plugin_never_overwrites_a_directory() {
    let work =
        Scratch(std::env::temp_dir().join(format!("eventhost-new-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&work.0).unwrap();
    std::fs::write(work.0.join("keep.txt"), "mine").unwrap();
    let ran = Command::new(env!("CARGO_BIN_EXE_eventhost"))
        .args(["plugin", "new", "my-plugin", "--lang", "python", "--dir"])
        .arg(&work.0)
        .output()
        .unwrap();
    assert!(!ran.status.success());
    assert!(String::from_utf8_lossy(&ran.stderr).contains("already exists and is not empty"));
    assert_eq!(
        std::fs::read_to_string(work.0.join("keep.txt")).unwrap(),
        "mine"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_eventhost"))
        .args(["plugin", "new", "My_Plugin", "--lang", "js", "--dir"])
        .arg(work.0.join("x"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid plugin name"));
    assert!(!work.0.join("x").exists());
}
