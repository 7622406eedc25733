//! Replicas as separate processes on one PostgreSQL database: a call parked on one replica is
//! decided through the JSON API of another; rules and revocations reach every replica within the
//! stated bound, with notifications and with them lost; a replica killed with SIGKILL has its
//! requests abandoned once its lease runs out; the database stopped and started mid-run.
//!
//! Runs as its own harness, one scenario after another (the database restart would disturb
//! anything running beside it): `cargo test --test replicas` is the parent, and starts this
//! same binary with `--child` for each replica. Each child serves a gated tool route and the
//! approval API on a loopback port, and prints what its notifier hears.

#[path = "../support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use http::StatusCode;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tollgate::approval::{Approver, TOKEN_COOKIE, Tokens};
use tollgate::notify::{Alert, BoxFuture, Notifier, NotifyError, Resolution};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::store::{PostgresOptions, PostgresStore};
use tollgate::{Gate, Scope};

use support::client::{self, Reply};
use support::postgres::{database, url};
use support::runtime;

const TOKEN: &str = "replica-test-token-0123456789";
/// Short, so the tests of lost notifications and stopped replicas run quickly.
const RESCAN: Duration = Duration::from_millis(200);
const LEASE: Duration = Duration::from_secs(1);
/// What the bound on a rule or revocation reaching every replica allows beyond the re-scan
/// interval: reading the feed and applying it, on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(600);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        child(&args[at + 1], &args[at + 2], args[at + 3] == "listen");
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("replicas: test");
        return;
    }
    runtime().block_on(parent());
    println!("test result: ok. 1 passed; 0 failed");
}

fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Prints each alert with its code, and each resolution, for the parent.
#[derive(Debug)]
struct Printer;

impl Notifier for Printer {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        say(format_args!(
            "ALERT {} {}",
            alert.request().id(),
            alert.code().reveal()
        ));
        Box::pin(async { Ok(()) })
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        say(format_args!(
            "RESOLVED {} {}",
            resolution.request().id(),
            resolution.outcome().status()
        ));
        Box::pin(async { Ok(()) })
    }

    fn name(&self) -> &str {
        "printer"
    }
}

/// One replica: a gate on the shared database, a gated refund route, the approval API.
fn child(url: &str, instance: &str, listen: bool) {
    runtime().block_on(async {
        let options = PostgresOptions::new()
            .instance(instance)
            .lease(LEASE)
            .rescan(RESCAN)
            .listen(listen);
        let store = PostgresStore::connect_with(url, options)
            .await
            .expect("connect to the database");
        let gate = Gate::builder()
            .secret(support::SECRET)
            .request_ttl(Duration::from_secs(600))
            .unlimited_alert_rate()
            .notifier(Printer)
            .store(store)
            .build()
            .expect("build the gate");
        let policy = CapabilityTable::new().ask(
            "POST /tools/refund",
            Ask::new("refunds move money")
                .max_scope(Scope::Capability)
                .max_rule_ttl(Duration::from_secs(3600)),
        );
        let tools = Router::new().route(
            "/tools/refund",
            post(|body: axum::Json<Value>| async move { axum::Json(json!({"refunded": body.0})) }),
        );
        let approvers = Tokens::new().token(TOKEN, Approver::new("alice"));
        let app = tools.layer(gate.http(policy)).nest(
            "/approvals",
            tollgate::approval::router(gate.clone(), approvers),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        say(format_args!("READY {}", listener.local_addr().unwrap()));
        axum::serve(listener, app).await.unwrap();
    });
}

/// A replica process and the lines it printed.
struct Replica {
    name: &'static str,
    process: Child,
    addr: SocketAddr,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Replica {
    async fn start(db: &str, name: &'static str, listen: bool) -> Replica {
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args([
                "--child",
                &url(db),
                name,
                if listen { "listen" } else { "rescan-only" },
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a replica");
        let stdout = BufReader::new(process.stdout.take().unwrap());
        let (tx, mut lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let ready = next(&mut lines, name, Duration::from_secs(30)).await;
        let addr = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("replica {name} said {ready}"))
            .parse()
            .unwrap();
        Replica {
            name,
            process,
            addr,
            lines,
        }
    }

    /// The next line this replica prints, within `limit`.
    async fn line(&mut self, limit: Duration) -> String {
        next(&mut self.lines, self.name, limit).await
    }

    /// Starts a refund call on this replica: it parks until someone decides. Returns the call
    /// and the request's id and code, as the alert printed them.
    async fn park(&mut self, amount: u64) -> (tokio::task::JoinHandle<Reply>, String, String) {
        let body = json!({"charge": "ch_1", "amount": amount}).to_string();
        let request = client::request("POST", "/tools/refund")
            .header("content-type", "application/json")
            .body(Full::<bytes::Bytes>::from(body))
            .unwrap();
        let call = client::start(self.addr, request).await.reply;
        let alert = self.line(Duration::from_secs(10)).await;
        let words: Vec<&str> = alert.split(' ').collect();
        assert_eq!(words[0], "ALERT", "replica {}: {alert}", self.name);
        (call, words[1].to_owned(), words[2].to_owned())
    }

    /// Like [`park`](Self::park), on a bare connection whose answer is never read: for a
    /// replica killed under its callers.
    async fn park_raw(&mut self, amount: u64) -> (tokio::net::TcpStream, String, String) {
        use tokio::io::AsyncWriteExt;
        let body = json!({"charge": "ch_1", "amount": amount}).to_string();
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "POST /tools/refund HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let alert = self.line(Duration::from_secs(10)).await;
        let words: Vec<&str> = alert.split(' ').collect();
        assert_eq!(words[0], "ALERT", "replica {}: {alert}", self.name);
        (stream, words[1].to_owned(), words[2].to_owned())
    }

    /// A call that a standing rule should let through at once.
    async fn call(&self, amount: u64) -> Reply {
        let body = json!({"charge": "ch_1", "amount": amount}).to_string();
        let request = client::request("POST", "/tools/refund")
            .header("content-type", "application/json")
            .body(Full::<bytes::Bytes>::from(body))
            .unwrap();
        client::send(self.addr, request).await
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let request = client::request(method, &format!("/approvals/api{path}"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        client::send(
            self.addr,
            request.body(Full::<bytes::Bytes>::from(body)).unwrap(),
        )
        .await
    }

    /// A page of the approval UI, signed in (the sign-in cookie holds the token).
    async fn page(&self, path: &str) -> Reply {
        let request = client::request("GET", &format!("/approvals{path}"))
            .header("cookie", format!("{TOKEN_COOKIE}={TOKEN}"))
            .body(Full::<bytes::Bytes>::default())
            .unwrap();
        client::send(self.addr, request).await
    }

    async fn approve(&self, id: &str, code: &str, scope: &str) -> Reply {
        let body = json!({"code": code, "scope": scope});
        self.api("POST", &format!("/requests/{id}/approve"), Some(body))
            .await
    }

    async fn rule_ids(&self) -> Vec<String> {
        let reply = self.api("GET", "/rules", None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.json()["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn kill(&mut self) {
        self.process.kill().expect("SIGKILL the replica");
        let _ = self.process.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

async fn next(lines: &mut mpsc::UnboundedReceiver<String>, name: &str, limit: Duration) -> String {
    match tokio::time::timeout(limit, lines.recv()).await {
        Ok(Some(line)) => line,
        Ok(None) => panic!("replica {name} exited"),
        Err(_) => panic!("replica {name} printed nothing within {limit:?}"),
    }
}

/// How long until `holds` is true of what `replica` answers, asking again and again (the
/// answer comes over HTTP from another process: nothing here can be woken by it).
async fn time_until<F>(replica: &Replica, limit: Duration, mut holds: F) -> Duration
where
    F: FnMut(&[String]) -> bool,
{
    let started = Instant::now();
    loop {
        let rules = replica.rule_ids().await;
        if holds(&rules) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "replica {}: not within {limit:?}",
            replica.name
        );
    }
}

async fn parent() {
    decisions_and_rules_across_replicas(true).await;
    decisions_and_rules_across_replicas(false).await;
    a_killed_replica_is_abandoned_once_its_lease_runs_out().await;
    the_database_stops_and_starts_mid_run().await;
}

/// Three replicas: parked on A, approved on B, denied on C, one winner of three at once, a rule
/// used everywhere, a revocation seen everywhere within the bound.
async fn decisions_and_rules_across_replicas(listen: bool) {
    let mode = if listen { "listen" } else { "rescan" };
    let db = database(&format!("replicas_{mode}")).await;
    let mut a = Replica::start(&db, "a", listen).await;
    let b = Replica::start(&db, "b", listen).await;
    let c = Replica::start(&db, "c", listen).await;
    let started = Instant::now();

    // Parked on A, approved through B's API with a capability rule: the caller on A resumes.
    // The caller resumes within the re-scan interval, with notifications or without.
    let (call, id, code) = a.park(1).await;
    let asked = Instant::now();
    let (approved, (resumed, took)) = tokio::join!(b.approve(&id, &code, "capability"), async {
        let resumed = call.await.unwrap();
        (resumed, asked.elapsed())
    });
    assert_eq!(approved.status, StatusCode::OK, "{mode}: {}", approved.body);
    let rule = approved.json()["rule"]["id"].as_str().unwrap().to_owned();
    assert_eq!(resumed.status, StatusCode::OK, "{mode}: {}", resumed.body);
    println!("{mode}: approved on B, the caller on A resumed after {took:?}");
    assert!(took <= RESCAN + SLACK, "{mode}: resumed within the bound");
    let line = a.line(Duration::from_secs(5)).await;
    assert_eq!(
        line,
        format!("RESOLVED {id} approved"),
        "{mode}: A tells its notifiers"
    );

    // The rule reaches C (which took no part) within the bound, and lets a call through there.
    let bound = RESCAN + SLACK;
    let took = time_until(&c, bound, |rules| rules.contains(&rule)).await;
    println!("{mode}: a rule granted on B reached C in {took:?}");
    let passed = c.call(2).await;
    assert_eq!(
        passed.status,
        StatusCode::OK,
        "{mode}: the rule applies on C"
    );

    // Revoked through C: gone on A and B within the bound; A asks a person again.
    let revoked = c.api("DELETE", &format!("/rules/{rule}"), None).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    let revoked_at = Instant::now();
    for replica in [&a, &b] {
        time_until(replica, bound, |rules| !rules.contains(&rule)).await;
    }
    println!(
        "{mode}: a revocation on C reached A and B in {:?}",
        revoked_at.elapsed()
    );

    // Parked on A, denied through C; first, C's API and page list it and show it.
    let (call, id, code) = a.park(3).await;
    let listed = c.api("GET", "/requests", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let ids: Vec<String> = listed.json()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        std::slice::from_ref(&id),
        "{mode}: C's API lists the request A holds"
    );
    let shown = c.api("GET", &format!("/requests/{id}"), None).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert_eq!(shown.json()["status"], "pending");
    assert!(
        !shown.body.contains(&code),
        "the code is never in an answer"
    );
    let page = c.page("").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(&id),
        "{mode}: C's page lists the request A holds"
    );
    let page = c.page(&format!("/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Approve"),
        "{mode}: and offers the decision"
    );
    let denied = c
        .api(
            "POST",
            &format!("/requests/{id}/deny"),
            Some(json!({"code": code, "reason": "no"})),
        )
        .await;
    assert_eq!(denied.status, StatusCode::OK, "{}", denied.body);
    let refused = call.await.unwrap();
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.code(), "access_request_denied");
    assert_eq!(
        a.line(Duration::from_secs(5)).await,
        format!("RESOLVED {id} denied")
    );

    // Approved from all three at once: exactly one wins, the others hear it was decided.
    for round in 0..3 {
        let (call, id, code) = a.park(10 + round).await;
        let (ra, rb, rc) = tokio::join!(
            a.approve(&id, &code, "once"),
            b.approve(&id, &code, "once"),
            c.approve(&id, &code, "once"),
        );
        let answers = [&ra, &rb, &rc];
        let won = answers
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        assert_eq!(won, 1, "{mode}: exactly one of three wins: {answers:?}");
        for lost in answers.iter().filter(|r| r.status != StatusCode::OK) {
            assert_eq!(lost.status, StatusCode::CONFLICT, "{}", lost.body);
            assert_eq!(lost.code(), "already_resolved", "{}", lost.body);
            let said = lost.json()["error"]["detail"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            assert!(said.contains("status:"), "told where it stands: {said}");
        }
        assert_eq!(call.await.unwrap().status, StatusCode::OK);
        assert_eq!(
            a.line(Duration::from_secs(5)).await,
            format!("RESOLVED {id} approved")
        );
    }
    println!("{mode}: three replicas, {:?}", started.elapsed());
}

/// A replica killed with callers parked on it: once its lease runs out, another replica
/// abandons its request, an approval of it says so, and the notifiers hear of it once.
async fn a_killed_replica_is_abandoned_once_its_lease_runs_out() {
    let db = database("replicas_kill").await;
    let mut a = Replica::start(&db, "a", true).await;
    let mut b = Replica::start(&db, "b", true).await;
    let mut c = Replica::start(&db, "c", true).await;
    // The caller's connection stays open, unread, while its replica is killed under it.
    let (caller, id, code) = c.park_raw(1).await;
    c.kill();
    drop(caller);
    let started = Instant::now();
    // Approved through A at once: the decision is stored, but nobody can take it.
    let approved = a.approve(&id, &code, "once").await;
    assert_eq!(approved.status, StatusCode::GONE, "{}", approved.body);
    assert_eq!(approved.code(), "access_request_abandoned");
    let took = started.elapsed();
    println!("kill: the approval heard of the abandonment after {took:?}");
    assert!(
        took <= LEASE + RESCAN + SLACK * 2,
        "within the lease and a re-scan"
    );
    // Later decisions hear it at once.
    let again = b.approve(&id, &code, "once").await;
    assert_eq!(again.code(), "access_request_abandoned", "{}", again.body);
    // One of A and B told its notifiers: exactly one line between them. Each replica's sweep
    // runs every re-scan; after a few of them no second line can come.
    let mut told = 0;
    for replica in [&mut a, &mut b] {
        while let Ok(Some(line)) = tokio::time::timeout(RESCAN * 3, replica.lines.recv()).await {
            assert_eq!(line, format!("RESOLVED {id} abandoned"));
            told += 1;
        }
    }
    assert_eq!(told, 1, "the notifiers are told once, by one replica");
    let audit = a
        .api("GET", &format!("/audit?request={id}&event=abandoned"), None)
        .await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    assert_eq!(
        audit.json()["entries"].as_array().unwrap().len(),
        1,
        "abandoned once in the audit trail"
    );
}

/// The database stops with a call parked: decisions fail closed with `store_failed`; once it is
/// back, the same approval goes through, the caller resumes, and what was stored before is kept.
async fn the_database_stops_and_starts_mid_run() {
    let ctl = support::server_env("TOLLGATE_TEST_POSTGRES_CTL");
    let pg = |action: &str| {
        let status = Command::new(&ctl).arg(action).status().expect("run pg_ctl");
        assert!(status.success(), "pg_ctl {action}");
    };
    let db = database("replicas_restart").await;
    let mut a = Replica::start(&db, "a", true).await;
    let b = Replica::start(&db, "b", true).await;
    // A rule stored before the outage.
    let (call, id, code) = a.park(1).await;
    let approved = b.approve(&id, &code, "capability").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    let rule = approved.json()["rule"]["id"].as_str().unwrap().to_owned();
    assert_eq!(call.await.unwrap().status, StatusCode::OK);
    assert_eq!(
        a.line(Duration::from_secs(5)).await,
        format!("RESOLVED {id} approved")
    );
    // Revoke it so that the next call asks again.
    let revoked = b.api("DELETE", &format!("/rules/{rule}"), None).await;
    assert_eq!(revoked.status, StatusCode::OK);
    time_until(&a, RESCAN + SLACK, |rules| !rules.contains(&rule)).await;

    // Down for longer than a lease: on the database's clock every replica's lease runs out,
    // and no replica may take another for dead when it comes back. Meanwhile every attempt to
    // decide fails closed.
    let (call, id, code) = a.park(2).await;
    pg("stop");
    let down = Instant::now();
    let fails_closed = |reply: Reply| {
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(reply.code(), "store_failed", "{}", reply.body);
    };
    fails_closed(b.approve(&id, &code, "once").await);
    // (Decisions are rate limited per approver: reads show the same meanwhile.)
    let mut attempts = 1;
    while down.elapsed() < LEASE * 2 {
        fails_closed(b.api("GET", &format!("/requests/{id}"), None).await);
        attempts += 1;
    }
    println!("restart: {attempts} answers were store_failed while the database was down");
    pg("start");
    // The pools reconnect: the first attempts may still meet a connection the restart broke.
    let started = Instant::now();
    let approved = loop {
        let reply = b.approve(&id, &code, "once").await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            break reply;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{}",
            reply.body
        );
    };
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(
        call.await.unwrap().status,
        StatusCode::OK,
        "the parked caller resumed"
    );
    assert_eq!(
        a.line(Duration::from_secs(5)).await,
        format!("RESOLVED {id} approved")
    );
    println!(
        "restart: approved {:?} after the database came back",
        started.elapsed()
    );

    // Nothing stored before is lost: the audit trail has the first approval and revocation.
    for event in ["approved", "rule_revoked"] {
        let before = b.api("GET", &format!("/audit?event={event}"), None).await;
        assert_eq!(before.status, StatusCode::OK, "{}", before.body);
        let entries = before.json()["entries"].as_array().unwrap().len();
        assert!(
            entries >= 1,
            "the {event} entry from before the outage is kept"
        );
    }
    // And the replicas work on: a new call is parked and approved across them.
    let (call, id, code) = a.park(3).await;
    assert_eq!(b.approve(&id, &code, "once").await.status, StatusCode::OK);
    assert_eq!(call.await.unwrap().status, StatusCode::OK);
}
