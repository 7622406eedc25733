//! `tollgate proxy` end to end: the binary between a real HTTP client and a real upstream (an
//! axum app on loopback), alerts to a real webhook receiver, decisions through the binary's JSON
//! API.

#[path = "../support/mod.rs"]
mod support;

mod observe;
mod paths;
mod shipped;
mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use support::client::{request, send, start};
use support::receiver::{SECRET, Seen, receiver};

const TOKEN: &str = "an-approver-token-for-the-proxy-tests";

/// What the upstream received: each POST body, and the headers of the last request.
#[derive(Clone, Default)]
struct Received {
    bodies: Arc<Mutex<Vec<String>>>,
    headers: Arc<Mutex<Option<HeaderMap>>>,
}

/// 4 MiB of text, far over the gate's body limit.
fn big() -> String {
    "0123456789abcdef".repeat(256 * 1024)
}

async fn upstream() -> (SocketAddr, Received) {
    let received = Received::default();
    let (bodies, headers) = (received.bodies.clone(), received.headers.clone());
    let refund_headers = headers.clone();
    let app = Router::new()
        .route("/big", get(|| async { big() }))
        .route(
            "/v1/refunds/{id}",
            post(
                move |UrlPath(id): UrlPath<String>, seen: HeaderMap, body: String| async move {
                    bodies.lock().unwrap().push(body.clone());
                    *refund_headers.lock().unwrap() = Some(seen);
                    format!("refunded {id}")
                },
            ),
        )
        .route(
            "/headers",
            get(move |seen: HeaderMap| async move {
                *headers.lock().unwrap() = Some(seen);
                "seen"
            }),
        )
        .route("/hang", get(std::future::pending::<&'static str>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

struct Sidecar {
    proxy: SocketAddr,
    approval: SocketAddr,
    alerts: tokio::sync::mpsc::UnboundedReceiver<Seen>,
    /// Its stderr after the addresses, line by line (also copied to ours).
    stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Its stderr up to the line that says it is proxying.
    said_at_start: String,
    child: Child,
    dir: PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The binary in front of `upstream`, its requests living `ttl`; returns once it has said where
/// it listens.
async fn sidecar(name: &str, upstream: &str, ttl: &str) -> Sidecar {
    sidecar_with(name, upstream, ttl, |config| config).await
}

/// [`sidecar`], its configuration changed by `edit`.
async fn sidecar_with(
    name: &str,
    upstream: &str,
    ttl: &str,
    edit: impl FnOnce(String) -> String,
) -> Sidecar {
    let (webhook, alerts) = receiver(&[]).await;
    let dir = std::env::temp_dir().join(format!("tollgate-proxy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tollgate.toml");
    std::fs::write(&config, edit(configuration(upstream, &webhook, ttl))).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.args(["proxy", "--config"]).arg(&config);
    let Spawned {
        child,
        mut stderr,
        proxy,
        approval,
        said_at_start,
    } = spawned(command).await;
    // The rest of its stderr goes to ours, and to the test.
    let (lines, stderr_lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            eprintln!("{line}");
            let _ = lines.send(line);
        }
    });
    Sidecar {
        proxy,
        approval,
        alerts,
        stderr: stderr_lines,
        said_at_start,
        child,
        dir,
    }
}

/// The binary as `command` runs it, once it has said where it serves: its stderr so far, and
/// the rest still to read.
struct Spawned {
    child: Child,
    stderr: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    proxy: SocketAddr,
    approval: SocketAddr,
    said_at_start: String,
}

async fn spawned(mut command: Command) -> Spawned {
    let mut child = command
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut proxy, mut approval) = (None, None);
    let mut said_at_start = String::new();
    while proxy.is_none() {
        let line = stderr.next_line().await.unwrap().unwrap_or_else(|| {
            panic!("the proxy exited: {}\n{said_at_start}", exit_of(&mut child))
        });
        said_at_start.push_str(&line);
        said_at_start.push('\n');
        let address = |prefix: &str| -> Option<SocketAddr> {
            let rest = line.strip_prefix(prefix)?;
            rest.trim_start_matches("http://")
                .split('/')
                .next()?
                .parse()
                .ok()
        };
        approval = approval.or(address("tollgate: approval page and API at "));
        proxy = address("tollgate: proxying ");
    }
    Spawned {
        child,
        stderr,
        proxy: proxy.unwrap(),
        approval: approval.expect("the approval address is printed first"),
        said_at_start,
    }
}

fn exit_of(child: &mut Child) -> String {
    format!("{:?}", child.try_wait())
}

fn configuration(upstream: &str, webhook: &str, ttl: &str) -> String {
    format!(
        r#"
        [gate]
        random_secret = true
        allow_inline_secrets = true
        request_ttl = "{ttl}"

        [proxy]
        listen = "127.0.0.1:0"
        upstream = "{upstream}"
        routes = ["/v1/refunds/{{id}}"]
        principal_header = "x-agent"
        upstream_timeout = "500ms"

        [capabilities."GET *"]
        decision = "allow"
        [capabilities."POST /v1/refunds/{{id}}"]
        max_scope = "value"

        [[notifiers]]
        kind = "webhook"
        url = "{webhook}"
        secret = "{SECRET}"
        include_code = "always"

        [approval]
        listen = "127.0.0.1:0"
        [[approval.approvers]]
        name = "alice"
        token = "{TOKEN}"
        "#
    )
}

fn get_request(path: &str) -> http::Request<Full<Bytes>> {
    request("GET", path).body(Full::default()).unwrap()
}

fn refund(body: &str) -> http::Request<Full<Bytes>> {
    request("POST", "/v1/refunds/r_1")
        .header("content-type", "application/json")
        .header("x-agent", "agent-7")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// The next alert: its request id, code and request.
async fn next_alert(sidecar: &mut Sidecar) -> (String, String, Value) {
    let event = sidecar.alerts.recv().await.unwrap().json();
    assert_eq!(event["type"], "access_request.created", "{event}");
    let data = &event["data"];
    let id = data["request"]["id"].as_str().unwrap().to_owned();
    (
        id,
        data["code"].as_str().unwrap().to_owned(),
        data["request"].clone(),
    )
}

async fn decide(sidecar: &Sidecar, id: &str, verb: &str, code: &str) -> u16 {
    let body = json!({ "code": code }).to_string();
    let post = request("POST", &format!("/api/requests/{id}/{verb}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send(sidecar.approval, post).await.status.as_u16()
}

#[tokio::test]
async fn an_allowed_get_streams_a_large_body_through_unchanged() {
    let (upstream, _) = upstream().await;
    let sidecar = sidecar("big", &format!("http://{upstream}"), "1m").await;
    let reply = send(sidecar.proxy, get_request("/big")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body == big(), "the body arrived changed");
}

#[tokio::test]
async fn a_post_parks_until_approved_and_the_upstream_gets_the_body_the_approver_saw() {
    let (upstream, received) = upstream().await;
    let mut sidecar = sidecar("approve", &format!("http://{upstream}"), "1m").await;
    let body = r#"{"amount": 5000, "note": "ticket 4421"}"#;
    let parked = start(sidecar.proxy, refund(body)).await;
    let (id, code, seen) = next_alert(&mut sidecar).await;
    assert_eq!(seen["capability"], "POST /v1/refunds/{id}");
    assert_eq!(seen["principal"], "agent-7");
    // The alert links to the binary's own page, though the file names no approval_base_url.
    assert_eq!(
        seen["approval_url"],
        format!("http://{}/{id}", sidecar.approval)
    );
    assert!(
        received.bodies.lock().unwrap().is_empty(),
        "nothing forwarded yet"
    );

    assert_eq!(decide(&sidecar, &id, "approve", &code).await, 200);
    let reply = parked.reply.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "refunded r_1");
    let forwarded = received.bodies.lock().unwrap().clone();
    assert_eq!(forwarded.len(), 1);
    let forwarded: Value = serde_json::from_str(&forwarded[0]).unwrap();
    assert_eq!(
        forwarded, seen["args"]["body"],
        "exactly what the approver saw"
    );
}

#[tokio::test]
async fn a_denial_is_the_gates_json_error() {
    let (upstream, received) = upstream().await;
    let mut sidecar = sidecar("deny", &format!("http://{upstream}"), "1m").await;
    let parked = start(sidecar.proxy, refund(r#"{"amount": 1}"#)).await;
    let (id, code, _) = next_alert(&mut sidecar).await;
    assert_eq!(decide(&sidecar, &id, "deny", &code).await, 200);
    let reply = parked.reply.await.unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.code(), "access_request_denied");
    assert!(received.bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_request_is_a_504_json_error() {
    let (upstream, received) = upstream().await;
    let mut sidecar = sidecar("expire", &format!("http://{upstream}"), "1s").await;
    let parked = start(sidecar.proxy, refund(r#"{"amount": 2}"#)).await;
    let _ = next_alert(&mut sidecar).await;
    let reply = parked.reply.await.unwrap(); // nobody decides within the second
    assert_eq!(reply.status, 504);
    assert_eq!(reply.code(), "access_request_expired");
    assert!(received.bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_its_request() {
    let (upstream, received) = upstream().await;
    let mut sidecar = sidecar("gone", &format!("http://{upstream}"), "1m").await;
    let parked = start(sidecar.proxy, refund(r#"{"amount": 3}"#)).await;
    let (id, code, _) = next_alert(&mut sidecar).await;
    parked.disconnect();
    let resolved = sidecar.alerts.recv().await.unwrap().json();
    assert_eq!(resolved["type"], "access_request.resolved");
    assert_eq!(
        resolved["data"]["outcome"]["status"], "cancelled",
        "{resolved}"
    );
    assert_eq!(
        decide(&sidecar, &id, "approve", &code).await,
        410,
        "cancelled: gone"
    );
    assert!(received.bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_upstream_down_is_502_and_a_slow_one_504() {
    let port = support::closed_port();
    let down = sidecar("down", &format!("http://127.0.0.1:{port}"), "1m").await;
    let reply = send(down.proxy, get_request("/anything")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.code(), "upstream_unavailable");

    let (upstream, _) = upstream().await;
    let slow = sidecar("slow", &format!("http://{upstream}"), "1m").await;
    let reply = send(slow.proxy, get_request("/hang")).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.code(), "upstream_timeout");
}

/// The approver was told the call runs; if the upstream is down then, the caller's `502` names
/// the request, and the request ends `failed`.
#[tokio::test]
async fn an_approved_call_whose_upstream_is_down_is_a_502_naming_its_request() {
    let port = support::closed_port();
    let mut sidecar = sidecar("approved-down", &format!("http://127.0.0.1:{port}"), "1m").await;
    let parked = start(sidecar.proxy, refund(r#"{"amount": 8}"#)).await;
    let (id, code, _) = next_alert(&mut sidecar).await;
    assert_eq!(decide(&sidecar, &id, "approve", &code).await, 200);
    let reply = parked.reply.await.unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(reply.code(), "upstream_unavailable");
    assert_eq!(reply.json()["error"]["request_id"], id.as_str());
    let status = request("GET", &format!("/api/requests/{id}/status"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let status = send(sidecar.approval, status).await.json();
    assert_eq!(status["status"], "failed", "{status}");
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let (upstream, received) = upstream().await;
    let sidecar = sidecar("headers", &format!("http://{upstream}"), "1m").await;
    let with_hops = request("GET", "/headers")
        .header("connection", "x-private-hop")
        .header("x-private-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("x-end-to-end", "kept")
        .body(Full::<Bytes>::default())
        .unwrap();
    let reply = send(sidecar.proxy, with_hops).await;
    assert_eq!(reply.status, 200);
    let headers = received.headers.lock().unwrap().clone().unwrap();
    assert!(headers.get("x-private-hop").is_none(), "{headers:?}");
    assert!(headers.get("keep-alive").is_none(), "{headers:?}");
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-host"], "localhost");
    assert_eq!(
        headers["host"],
        upstream.to_string(),
        "the upstream's own host"
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let (upstream, _) = upstream().await;
    let sidecar = sidecar("health", &format!("http://{upstream}"), "1m").await;
    let health = send(sidecar.approval, get_request("/healthz")).await;
    assert_eq!(
        (health.status.as_u16(), health.body.as_str()),
        (200, "ok\n")
    );
    let ready = send(sidecar.approval, get_request("/readyz")).await;
    assert_eq!(
        (ready.status.as_u16(), ready.body.as_str()),
        (200, "ready\n")
    );
}

#[tokio::test]
async fn a_configuration_without_upstream_is_refused() {
    let dir = std::env::temp_dir().join(format!("tollgate-proxy-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("tollgate.toml");
    let text = configuration("x", "http://127.0.0.1:9/hook", "1m").replace("upstream = \"x\"", "");
    std::fs::write(&path, text).unwrap();
    let output = run(&path).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[proxy] upstream is missing"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

async fn run(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["proxy", "--config"])
        .arg(config)
        .output()
        .await
        .unwrap()
}

/// Prometheus text, parsed: each sample by its name and sorted labels, `name{a="1",b="2"}`.
fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut samples = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .expect("a sample is a series and a value");
        let value: f64 = value.parse().expect("a number");
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("labels end with }");
                let mut labels: Vec<&str> = rest.split(',').filter(|l| !l.is_empty()).collect();
                labels.sort_unstable();
                (name, labels)
            }
        };
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{}}}", labels.join(","))
        };
        assert!(
            samples.insert(key, value).is_none(),
            "one sample per series"
        );
    }
    samples
}

#[tokio::test]
async fn metrics_count_the_flow_and_carry_no_code_or_argument() {
    let (upstream, _) = upstream().await;
    let mut sidecar = sidecar("metrics", &format!("http://{upstream}"), "1m").await;
    for _ in 0..2 {
        assert_eq!(
            send(sidecar.proxy, get_request("/headers")).await.status,
            200
        );
    }
    let secret_note = r#"{"amount": 5, "note": "argument-value-never-in-metrics"}"#;
    let approved = start(sidecar.proxy, refund(secret_note)).await;
    let (first, first_code, _) = next_alert(&mut sidecar).await;
    assert_ne!(decide(&sidecar, &first, "approve", "WRONGCODE").await, 200);
    assert_eq!(decide(&sidecar, &first, "approve", &first_code).await, 200);
    assert_eq!(approved.reply.await.unwrap().status, 200);
    let _ = sidecar.alerts.recv().await; // its resolution
    let denied = start(sidecar.proxy, refund(r#"{"amount": 6}"#)).await;
    let (second, second_code, _) = next_alert(&mut sidecar).await;
    assert_eq!(decide(&sidecar, &second, "deny", &second_code).await, 200);
    assert_eq!(denied.reply.await.unwrap().status, 403);
    let _ = sidecar.alerts.recv().await; // its resolution

    // The receiver hears a delivery before the sidecar hears the receiver's answer and counts
    // it: read the metrics again until the last one is counted.
    let deliveries = r#"tollgate_notifier_deliveries_total{notifier="webhook",result="accepted"}"#;
    let started = std::time::Instant::now();
    let text = loop {
        let text = send(sidecar.approval, get_request("/metrics")).await.body;
        if samples(&text).get(deliveries) == Some(&4.0)
            || started.elapsed() > Duration::from_secs(10)
        {
            break text;
        }
    };
    let samples = samples(&text);
    let value = |key: &str| {
        samples
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
    };
    assert_eq!(
        value(r#"tollgate_calls_total{decision="allowed_by_policy"}"#),
        2.0
    );
    assert_eq!(value(r#"tollgate_calls_total{decision="asked"}"#), 2.0);
    assert_eq!(
        value(r#"tollgate_requests_resolved_total{status="approved"}"#),
        1.0
    );
    assert_eq!(
        value(r#"tollgate_requests_resolved_total{status="denied"}"#),
        1.0
    );
    assert_eq!(
        value(r#"tollgate_decision_seconds_count{status="approved"}"#),
        1.0
    );
    assert_eq!(value("tollgate_wrong_codes_total"), 1.0);
    assert_eq!(value("tollgate_pending_requests"), 0.0);
    assert_eq!(value("tollgate_parked_callers"), 0.0);
    assert_eq!(value(deliveries), 4.0, "two alerts and two resolutions");
    assert!(value("tollgate_store_write_seconds_count") >= 4.0);
    for secret in [
        first_code.as_str(),
        second_code.as_str(),
        "argument-value-never-in-metrics",
        "agent-7",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into the metrics");
    }
}

/// Sends `signal` (such as `"-TERM"`) to the running binary.
fn send_signal(sidecar: &Sidecar, signal: &str) {
    let pid = sidecar.child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status();
    assert!(sent.unwrap().success(), "kill {signal} {pid}");
}

/// A supervisor may stop the proxy the moment it says it is up: `SIGTERM` then is a clean stop,
/// never the signal's default action. Four start at once, each stopped as soon as it is up, so
/// that a window between that line and the watching of the signal shows (it did, one run in
/// three, while the signal was watched from the server's first poll).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_right_after_start_stops_the_proxy_cleanly() {
    let (upstream, _) = upstream().await;
    let stops: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(async move {
                let name = format!("term-{i}");
                let mut sidecar = sidecar(&name, &format!("http://{upstream}"), "1m").await;
                send_signal(&sidecar, "-TERM");
                sidecar.child.wait().await.unwrap()
            })
        })
        .collect();
    for stop in stops {
        let status = stop.await.unwrap();
        assert_eq!(status.code(), Some(0), "a clean stop, not {status}");
    }
}

/// A stop does not wait for parked calls to be decided, which could take longer than any
/// supervisor waits: they answer `503 gate_shut_down` at once (retryable, against another
/// instance), their requests end `abandoned`, and the process exits cleanly.
#[tokio::test]
async fn sigterm_answers_parked_calls_gate_shut_down_and_stops() {
    let (upstream, received) = upstream().await;
    let mut sidecar = sidecar("term-parked", &format!("http://{upstream}"), "1h").await;
    let parked = start(sidecar.proxy, refund(r#"{"amount": 4}"#)).await;
    let (id, _, _) = next_alert(&mut sidecar).await;
    send_signal(&sidecar, "-TERM");
    let reply = parked.reply.await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.code(), "gate_shut_down");
    let resolved = sidecar.alerts.recv().await.unwrap().json();
    assert_eq!(resolved["type"], "access_request.resolved");
    assert_eq!(resolved["data"]["request"]["id"], id.as_str(), "{resolved}");
    assert_eq!(
        resolved["data"]["outcome"]["status"], "abandoned",
        "{resolved}"
    );
    let status = sidecar.child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "a clean stop, not {status}");
    assert!(received.bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn sighup_reloads_the_configuration_and_a_bad_file_keeps_the_running_one() {
    let (upstream, _) = upstream().await;
    let mut sidecar = sidecar("reload", &format!("http://{upstream}"), "1m").await;
    assert_eq!(
        send(sidecar.proxy, get_request("/headers")).await.status,
        200
    );
    let path = sidecar.dir.join("tollgate.toml");
    let allowing = std::fs::read_to_string(&path).unwrap();
    let allow = "decision = \"allow\"";
    assert!(allowing.contains(allow));
    async fn said(sidecar: &mut Sidecar, what: &str) -> String {
        loop {
            let line = sidecar.stderr.recv().await.expect("the proxy is running");
            if line.contains(what) {
                return line;
            }
        }
    }

    std::fs::write(&path, allowing.replace(allow, "decision = \"deny\"")).unwrap();
    send_signal(&sidecar, "-HUP");
    said(&mut sidecar, "tollgate: reloaded").await;
    assert_eq!(
        send(sidecar.proxy, get_request("/headers")).await.status,
        403
    );

    std::fs::write(&path, allowing.replace(allow, "decision = \"perhaps\"")).unwrap();
    send_signal(&sidecar, "-HUP");
    let kept = said(&mut sidecar, "kept the running configuration").await;
    assert!(
        kept.contains("tollgate.toml") && kept.contains("decision"),
        "{kept}"
    );
    assert_eq!(
        send(sidecar.proxy, get_request("/headers")).await.status,
        403,
        "the running policy stays"
    );

    std::fs::write(&path, &allowing).unwrap();
    send_signal(&sidecar, "-HUP");
    said(&mut sidecar, "tollgate: reloaded").await;
    assert_eq!(
        send(sidecar.proxy, get_request("/headers")).await.status,
        200
    );
}

/// `Connection` names headers that stay on the first hop. They are gone before the gate reads
/// the request, so that the approver is shown the request the upstream gets: here, no principal
/// header and a body of no declared type.
#[tokio::test]
async fn headers_that_connection_names_are_gone_before_the_gate_judges() {
    let (upstream, received) = upstream().await;
    let mut sidecar = sidecar("connection", &format!("http://{upstream}"), "1m").await;
    let body = r#"{"amount": 5000}"#;
    let call = request("POST", "/v1/refunds/r_1")
        .header("content-type", "application/json")
        .header("x-agent", "agent-7")
        .header("connection", "content-type, x-agent")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let parked = start(sidecar.proxy, call).await;
    let (id, code, seen) = next_alert(&mut sidecar).await;
    assert_ne!(seen["principal"], "agent-7", "{seen}");
    assert_eq!(
        seen["args"]["body_text"], body,
        "text, as the upstream gets it: {seen}"
    );
    assert_eq!(decide(&sidecar, &id, "approve", &code).await, 200);
    assert_eq!(parked.reply.await.unwrap().status, 200);
    let headers = received.headers.lock().unwrap().clone().unwrap();
    assert!(headers.get("x-agent").is_none(), "{headers:?}");
    assert!(headers.get("content-type").is_none(), "{headers:?}");
    assert_eq!(*received.bodies.lock().unwrap(), [body]);
}

/// A header the gate reads a principal from, sent twice, is refused: the gate would judge the
/// first value while the upstream may read the last, or both joined.
#[tokio::test]
async fn a_principal_header_sent_twice_is_refused() {
    let (upstream, received) = upstream().await;
    let sidecar = sidecar("twice", &format!("http://{upstream}"), "1m").await;
    let call = request("POST", "/v1/refunds/r_1")
        .header("content-type", "application/json")
        .header("x-agent", "agent-7")
        .header("x-agent", "admin")
        .body(Full::new(Bytes::from_static(br#"{"amount": 1}"#)))
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), send(sidecar.proxy, call))
        .await
        .expect("answered at once, not parked");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.code(), "invalid_arguments");
    assert!(reply.body.contains("x-agent"), "{}", reply.body);
    assert!(received.bodies.lock().unwrap().is_empty());
}
