//! The README's snippets are the files CI runs: its Rust program is `examples/agent_tools.rs`
//! and its configurations are `examples/config/*.toml`, to the byte; and that program, run as
//! the README says, parks the refund until the README's approver approves it with the code from
//! the terminal alert. (The configurations are run by the `sidecar` and `mcp_stdio` tests.)

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use support::shipped::{APPROVE, approve, linked_alert};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Each fenced block of the README with its language.
fn blocks() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in readme.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(language)) => open = Some((language.to_owned(), String::new())),
            (Some(_), Some("")) => blocks.push(open.take().unwrap()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed block in the README");
    blocks
}

#[test]
fn the_readmes_program_and_configurations_are_the_shipped_files() {
    let blocks = blocks();
    let shipped = |file: &str| std::fs::read_to_string(root().join(file)).unwrap();
    let rust: Vec<_> = blocks.iter().filter(|(l, _)| l == "rust").collect();
    assert_eq!(rust.len(), 1, "one Rust program in the README");
    assert_eq!(rust[0].1, shipped("examples/agent_tools.rs"));
    for file in ["examples/config/sidecar.toml", "examples/config/mcp.toml"] {
        let text = shipped(file);
        assert!(
            blocks.iter().any(|(l, b)| l == "toml" && *b == text),
            "the README shows {file} as it is"
        );
    }
    // Every other TOML block is a part of the reference file's keys, which the config tests
    // load: here, each must at least read as a configuration.
    for (_, block) in blocks.iter().filter(|(l, _)| l == "toml") {
        if block.contains("[dependencies]") {
            continue;
        }
        let with_url = block.replace("# or \"postgres\"", "#");
        tollgate::config::Config::from_toml(&with_url)
            .unwrap_or_else(|e| panic!("a README block does not load: {e}\n{block}"));
    }
}

/// An example's binary, built by `cargo test` with the tests.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --features axum`, which builds it",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_readmes_program_parks_the_refund_until_the_approver_approves() {
    let token = "a-token-for-the-readme-test";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(example("agent_tools"))
        .env("TOLLGATE_SECRET", "a-secret-for-the-readme-test-0123456789")
        .env("TOLLGATE_TOKEN", token)
        .env("TOLLGATE_EXAMPLE_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let page = ([127, 0, 0, 1], port).into();
    let alert = linked_alert(&mut stderr, &mut String::new(), page).await;
    let approved = approve(
        ([127, 0, 0, 1], port).into(),
        APPROVE,
        token,
        &alert,
        json!({}),
    )
    .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert_eq!(
        out,
        "ran payments.refund with {\"amount\":4200,\"charge\":\"ch_1\"}\n"
    );
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn the_readmes_program_says_which_variable_to_set() {
    let out = Command::new(example("agent_tools"))
        .env_remove("TOLLGATE_SECRET")
        .env("TOLLGATE_EXAMPLE_ADDR", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("set TOLLGATE_SECRET first"), "{said}");
}
