//! `tollgate mcp` end to end: the official Python SDK's client talks to the binary, which runs an
//! upstream server written with the same SDK; alerts arrive at a real webhook receiver, and the
//! test decides through the binary's JSON API. Also the binary's error paths.
//!
//! `scripts/test` installs the SDK into a virtual environment and names its interpreter in
//! `TOLLGATE_TEST_PYTHON`; without it these tests fail.

#[path = "../support/mod.rs"]
mod support;

mod shipped;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use support::client::{request, send};
use support::receiver::{SECRET, receiver};

const TOKEN: &str = "an-approver-token-for-the-mcp-tests";

fn python() -> String {
    support::server_env("TOLLGATE_TEST_PYTHON")
}

fn here(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp_stdio")
        .join(file)
        .display()
        .to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration in a temporary directory: `echo` and `crash` allowed, everything else asks;
/// alerts to `webhook`; the API on `port`.
fn config(dir: &Path, webhook: &str, port: u16) -> PathBuf {
    let path = dir.join("tollgate.toml");
    let text = format!(
        r#"
        [gate]
        random_secret = true
        allow_inline_secrets = true
        request_ttl = "2m"

        [capabilities.echo]
        decision = "allow"
        [capabilities.crash]
        decision = "allow"
        [capabilities.count]
        decision = "allow"

        [[notifiers]]
        kind = "webhook"
        url = "{webhook}"
        secret = "{SECRET}"
        include_code = "always"

        [approval]
        listen = "127.0.0.1:{port}"
        [[approval.approvers]]
        name = "alice"
        token = "{TOKEN}"
        "#
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-mcp-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Decides request `id` through the binary's JSON API.
async fn decide(port: u16, id: &str, verb: &str, code: &str) {
    let addr = ([127, 0, 0, 1], port).into();
    let body = match verb {
        "deny" => json!({"code": code, "reason": "decided by the test"}),
        _ => json!({"code": code}),
    };
    let body = body.to_string();
    let post = request("POST", &format!("/api/requests/{id}/{verb}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let reply = send(addr, post).await;
    assert_eq!(reply.status, 200, "{verb} {id}: {}", reply.body);
}

/// The Python client running `scenario`, its stdin and stdout piped.
fn client(scenario: &str, config: &Path) -> Child {
    Command::new(python())
        .arg(here("client.py"))
        .arg(scenario)
        .arg(env!("CARGO_BIN_EXE_tollgate"))
        .arg(config)
        .arg(here("upstream.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the Python client starts")
}

/// Each line the client printed, by step.
fn steps(lines: &[Value], step: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|line| line["step"] == step)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_client_through_the_binary() {
    let (webhook, mut events) = receiver(&[]).await;
    let port = free_port();
    let dir = temp_dir("main");
    let config = config(&dir, &webhook, port);
    let mut client = client("main", &config);
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap()).lines();

    let mut lines = Vec::new();
    let mut outcomes = Vec::new();
    let limit = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(limit);
    loop {
        tokio::select! {
            line = stdout.next_line() => match line.unwrap() {
                Some(line) => lines.push(serde_json::from_str::<Value>(&line).unwrap()),
                None => break,
            },
            Some(seen) = events.recv() => {
                assert!(seen.verified.is_ok(), "a signed alert");
                let event = seen.json();
                let data = &event["data"];
                let request = &data["request"];
                let id = request["id"].as_str().unwrap().to_owned();
                let path = request["args"]["path"].as_str().unwrap_or_default().to_owned();
                match event["type"].as_str().unwrap() {
                    "access_request.created" => {
                        assert_eq!(request["capability"], "delete_file");
                        assert_eq!(request["principal"], "mcp", "the client's name");
                        let code = data["code"].as_str().unwrap().to_owned();
                        match path.as_str() {
                            "approve-me" => decide(port, &id, "approve", &code).await,
                            "deny-me" => decide(port, &id, "deny", &code).await,
                            "cancel-me" => stdin.write_all(b"go\n").await.unwrap(),
                            "slow" => {
                                // The person takes three seconds; the client's timeout is one.
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                decide(port, &id, "approve", &code).await;
                            }
                            other => panic!("unexpected request for {other}"),
                        }
                    }
                    "access_request.resolved" => {
                        outcomes.push((path, data["outcome"]["status"].clone()));
                    }
                    other => panic!("unexpected event {other}"),
                }
            },
            () = &mut limit => panic!("the client did not finish; it printed {lines:?}"),
        }
    }
    let status = client.wait().await.unwrap();
    assert!(status.success(), "the client failed; it printed {lines:?}");

    assert_eq!(
        steps(&lines, "list")[0]["tools"],
        json!(["count", "crash", "delete_file", "echo"])
    );
    let count = &steps(&lines, "count")[0];
    assert_eq!(count["text"], "counted to 20");
    let expected: Vec<Value> = (1..=20)
        .map(|i| json!([f64::from(i), 20.0, format!("step {i}")]))
        .collect();
    assert_eq!(
        count["progress"],
        json!(expected),
        "every progress, in order"
    );
    assert_eq!(
        steps(&lines, "allowed")[0],
        json!({"step": "allowed", "is_error": false, "text": "echo: hello"})
    );
    assert_eq!(
        steps(&lines, "approved")[0],
        json!({"step": "approved", "is_error": false, "text": "deleted approve-me"})
    );
    let denied = &steps(&lines, "denied")[0];
    assert_eq!(denied["is_error"], true);
    let text = denied["text"].as_str().unwrap();
    assert!(text.starts_with("access_request_denied: "), "{text}");
    assert_eq!(
        steps(&lines, "cancel"),
        [json!({"step": "cancel", "cancelled": true})]
    );
    let slow = &steps(&lines, "slow")[0];
    assert_eq!(
        slow["timed_out"], false,
        "progress kept the client waiting: {slow}"
    );
    assert_eq!(slow["text"], "deleted slow");
    assert!(slow["progress"].as_u64().unwrap() >= 4, "{slow}");
    assert!(
        slow["message"]
            .as_str()
            .unwrap()
            .starts_with("waiting for a person"),
        "{slow}"
    );
    assert_eq!(steps(&lines, "done").len(), 1);

    // The cancelled call's request ended `cancelled`; the others as decided.
    let outcome_of = |path: &str| {
        outcomes
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, outcome)| outcome.clone())
    };
    assert_eq!(
        outcome_of("cancel-me"),
        Some(json!("cancelled")),
        "{outcomes:?}"
    );
    assert_eq!(outcome_of("deny-me"), Some(json!("denied")), "{outcomes:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_crash_ends_the_parked_call_with_a_typed_error() {
    let (webhook, mut events) = receiver(&[]).await;
    let dir = temp_dir("crash");
    let config = config(&dir, &webhook, free_port());
    let mut client = client("crash", &config);
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap()).lines();

    let created = events.recv().await.unwrap().json();
    assert_eq!(created["type"], "access_request.created");
    assert_eq!(created["data"]["request"]["args"]["path"], "parked");
    stdin.write_all(b"go\n").await.unwrap(); // now the upstream crashes

    let resolved = events.recv().await.unwrap().json();
    assert_eq!(resolved["type"], "access_request.resolved");
    assert_eq!(
        resolved["data"]["outcome"]["status"], "abandoned",
        "the request ends"
    );

    let mut lines = Vec::new();
    while let Some(line) = stdout.next_line().await.unwrap() {
        lines.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let parked = &steps(&lines, "parked")[0];
    assert_eq!(parked["is_error"], true, "{lines:?}");
    let text = parked["text"].as_str().unwrap();
    assert!(text.starts_with("gate_shut_down: "), "{text}");
    let crash = &steps(&lines, "crash")[0];
    assert_eq!(crash["failed"], true, "{lines:?}");
    let _ = client.wait().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// The binary, its stdio piped, with the given arguments.
fn tollgate(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

/// Runs the binary with `upstream`, sends `initialize`, and checks that the client is answered
/// `upstream_failed`, the binary exits with status 1, and stderr says `why`.
async fn fails_to_start(name: &str, upstream: &[&str], why: &str) {
    let dir = temp_dir(name);
    let config = config(&dir, "http://127.0.0.1:9/hook", free_port());
    let mut args = vec![
        "mcp",
        "--config",
        config.to_str().unwrap(),
        "--startup-timeout",
        "1s",
    ];
    args.push("--");
    args.extend(upstream);
    let mut child = tollgate(&args);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{INITIALIZE}\n").as_bytes())
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    let answer: Value =
        serde_json::from_slice(output.stdout.split(|b| *b == b'\n').next().unwrap())
            .expect("a JSON-RPC answer on stdout");
    assert_eq!(answer["id"], 1);
    assert_eq!(
        answer["error"]["data"]["code"], "upstream_failed",
        "{answer}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(why), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_missing_upstream_command_is_a_clear_error() {
    let why = "cannot start the upstream `/nonexistent/mcp-server`";
    fails_to_start("missing", &["/nonexistent/mcp-server"], why).await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_clear_error() {
    let why = "did not complete the MCP handshake within 1s";
    fails_to_start("hang", &["sleep", "600"], why).await;
}

#[tokio::test]
async fn garbage_from_either_side_is_skipped_and_the_session_goes_on() {
    let dir = temp_dir("garbage");
    let config = config(&dir, "http://127.0.0.1:9/hook", free_port());
    let config = config.to_str().unwrap();
    let python = python();
    let upstream = here("upstream.py");
    // The upstream writes a line of garbage on its stdout before it starts speaking MCP.
    let garbling = r#"echo 'garbage from the upstream {{{'; exec "$0" "$@""#;
    let args = [
        "mcp", "--config", config, "--", "sh", "-c", garbling, &python, &upstream,
    ];
    let mut child = tollgate(&args);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let send_line = async |stdin: &mut tokio::process::ChildStdin, line: &str| {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    };
    send_line(&mut stdin, "this is not JSON {{{").await;
    send_line(&mut stdin, INITIALIZE).await;
    let initialized: Value =
        serde_json::from_str(&stdout.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(initialized["id"], 1);
    assert_eq!(
        initialized["result"]["serverInfo"]["name"], "upstream",
        "{initialized}"
    );
    send_line(
        &mut stdin,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    send_line(&mut stdin, "\u{0}\u{1b}[2J garbage again").await;
    // Well-formed JSON that is no MCP message is answered, as JSON-RPC says.
    send_line(&mut stdin, r#"{"hello": "world"}"#).await;
    let refused: Value = serde_json::from_str(&stdout.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    send_line(
        &mut stdin,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"still here"}}}"#,
    )
    .await;
    let answer: Value = serde_json::from_str(&stdout.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(answer["id"], 2);
    assert_eq!(
        answer["result"]["content"][0]["text"], "echo: still here",
        "{answer}"
    );
    drop(stdin); // the client goes away: the binary ends cleanly
    let status = child.wait().await.unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(dir).unwrap();
}

/// The binary in front of the upstream, spoken to in raw JSON-RPC lines, as a client that keeps
/// listening: it initializes, then sends `call` (a `tools/call` with id 2).
struct Session {
    child: Child,
    /// Held open: the client is still there.
    _stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    alerts: tokio::sync::mpsc::UnboundedReceiver<support::receiver::Seen>,
    dir: PathBuf,
}

async fn session(name: &str, call: &str) -> Session {
    let (webhook, alerts) = receiver(&[]).await;
    let dir = temp_dir(name);
    let config = config(&dir, &webhook, free_port());
    let (python, upstream) = (python(), here("upstream.py"));
    let config = config.to_str().unwrap();
    let mut child = tollgate(&["mcp", "--config", config, "--", &python, &upstream]);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let call = format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{call}}}"#);
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    for line in [INITIALIZE, initialized, &call] {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    let answer: Value = serde_json::from_str(&stdout.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(answer["id"], 1, "initialized: {answer}");
    Session {
        child,
        _stdin: stdin,
        stdout,
        alerts,
        dir,
    }
}

impl Session {
    async fn answer(&mut self) -> Value {
        let line = self.stdout.next_line().await.unwrap().expect("an answer");
        serde_json::from_str(&line).unwrap()
    }

    /// Until the binary exits, while its client still listens; its exit code.
    async fn exit_code(mut self) -> Option<i32> {
        let status = self.child.wait().await.unwrap();
        std::fs::remove_dir_all(&self.dir).unwrap();
        status.code()
    }
}

/// A supervisor's `SIGTERM` ends the session as an upstream crash does, but cleanly: the parked
/// call is answered `gate_shut_down`, its request ends `abandoned`, and the binary exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_parked_call_and_exits_cleanly() {
    let call = r#"{"name":"delete_file","arguments":{"path":"kept"}}"#;
    let mut session = session("term", call).await;
    let created = session.alerts.recv().await.unwrap().json();
    assert_eq!(created["type"], "access_request.created", "parked");

    let pid = session.child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(sent.unwrap().success());

    let answer = session.answer().await;
    assert_eq!(answer["id"], 2, "{answer}");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("gate_shut_down: "), "{text}");
    let resolved = session.alerts.recv().await.unwrap().json();
    assert_eq!(
        resolved["data"]["outcome"]["status"], "abandoned",
        "{resolved}"
    );
    assert_eq!(session.exit_code().await, Some(0), "a clean stop");
}

/// Once its upstream is gone the binary exits, even while the client keeps its stdin open (the
/// exit once waited for a read of stdin that nothing can cancel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_crash_ends_the_binary_while_the_client_listens() {
    let mut session = session("crash-listening", r#"{"name":"crash","arguments":{}}"#).await;
    let answer = session.answer().await;
    assert_eq!(answer["id"], 2, "{answer}");
    assert_eq!(
        answer["error"]["data"]["code"], "upstream_failed",
        "{answer}"
    );
    assert_eq!(session.exit_code().await, Some(1));
}

#[tokio::test]
async fn configurations_that_cannot_work_are_refused_before_starting() {
    let dir = temp_dir("refused");
    let stdout_terminal = dir.join("stdout.toml");
    std::fs::write(
        &stdout_terminal,
        "[gate]\nrandom_secret = true\n[[notifiers]]\nkind = \"terminal\"\nstream = \"stdout\"\n",
    )
    .unwrap();
    let nobody = dir.join("nobody.toml");
    std::fs::write(&nobody, "[gate]\nrandom_secret = true\n").unwrap();
    for (config, says) in [
        (&stdout_terminal, "would write into the MCP protocol"),
        (&nobody, "nobody may approve a call; add an approver"),
    ] {
        let child = tollgate(&["mcp", "--config", config.to_str().unwrap(), "--", "true"]);
        let output = child.wait_with_output().await.unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert!(output.stdout.is_empty(), "stdout belongs to the protocol");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("tollgate: error: "), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn help_says_how_to_run_it() {
    let output = tollgate(&["mcp", "--help"])
        .wait_with_output()
        .await
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needed in [
        "--config",
        "COMMAND",
        "--listen",
        "--principal",
        "\"command\": \"tollgate\"",
    ] {
        assert!(help.contains(needed), "{needed} missing from:\n{help}");
    }
    let output = tollgate(&["mcp"]).wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
}
