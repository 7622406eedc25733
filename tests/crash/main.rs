//! Crash test: a child process runs a gate on a SQLite file (then on a PostgreSQL database)
//! through a scripted approve, deny, grant and revoke workload and is killed with SIGKILL at
//! random points, over and over. After each kill a fresh gate on the same data must show every
//! decision the approver was told about,
//! every rule the approver was told was granted (unless its revocation was under way, and none
//! they were told was revoked), no half-
//! written row, every unfinished request abandoned, and no approved call run twice.
//!
//! Runs as its own harness: `cargo test --test crash` is the parent; the parent starts this same
//! binary with `--child` for the workload. `TOLLGATE_CRASH_KILLS` sets the number of kills on
//! SQLite (default 200), `TOLLGATE_CRASH_KILLS_POSTGRES` on PostgreSQL (default 60; the database
//! is the one `scripts/test` starts).

#[path = "../support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::rule::RuleId;
use tollgate::store::{PostgresOptions, PostgresStore, SqliteStore, Store};
use tollgate::{
    Approve, BoxError, Deny, ErrorKind, Gate, Outcome, RequestId, Revoke, Scope, Status, ToolCall,
};
use tower::{Layer, ServiceExt};

use support::{Rng, SECRET, runtime};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        let backend = Backend::parse(&args[at + 1]);
        let seed: u64 = args[at + 2].parse().unwrap();
        child(&backend, seed);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        // `cargo test -- --list` asks harnesses for their tests.
        println!("crash: test");
        return;
    }
    parent();
}

fn policy() -> CapabilityTable {
    let ask = Ask::new("refunds move money")
        .max_scope(Scope::Capability)
        .max_rule_ttl(Duration::from_secs(24 * 3600));
    CapabilityTable::new().ask("payments.refund", ask)
}

/// Where the workload keeps its data.
enum Backend {
    Sqlite(PathBuf),
    /// A database on the test server; every process on it is the instance `crash`, so a fresh
    /// one abandons what a killed one left unfinished.
    Postgres(String),
}

impl Backend {
    fn parse(arg: &str) -> Backend {
        match arg.split_once(':') {
            Some(("sqlite", path)) => Backend::Sqlite(PathBuf::from(path)),
            Some(("postgres", db)) => Backend::Postgres(db.to_owned()),
            _ => panic!("unknown backend {arg}"),
        }
    }

    fn arg(&self) -> String {
        match self {
            Backend::Sqlite(path) => format!("sqlite:{}", path.display()),
            Backend::Postgres(db) => format!("postgres:{db}"),
        }
    }

    async fn store(&self) -> std::sync::Arc<dyn Store> {
        match self {
            Backend::Sqlite(path) => {
                std::sync::Arc::new(SqliteStore::open(path).expect("open the store"))
            }
            Backend::Postgres(db) => std::sync::Arc::new(
                PostgresStore::connect_with(
                    &support::postgres::url(db),
                    PostgresOptions::new().instance("crash"),
                )
                .await
                .expect("connect to the store"),
            ),
        }
    }

    /// One number from a query over the store's tables, written with `{requests}` and `{audit}`.
    async fn count(&self, sql: &str) -> i64 {
        match self {
            Backend::Sqlite(path) => {
                let sql = sql
                    .replace("{requests}", "requests")
                    .replace("{audit}", "audit");
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.query_row(&sql, [], |r| r.get(0)).unwrap()
            }
            Backend::Postgres(db) => {
                let sql = sql
                    .replace("{requests}", "tollgate_requests")
                    .replace("{audit}", "tollgate_audit");
                let (client, connection) =
                    tokio_postgres::connect(&support::postgres::url(db), tokio_postgres::NoTls)
                        .await
                        .unwrap();
                tokio::spawn(connection);
                client.query_one(&sql, &[]).await.unwrap().get(0)
            }
        }
    }
}

async fn gate(store: std::sync::Arc<dyn Store>, alerts: &RecordingNotifier) -> Gate {
    Gate::builder()
        .secret(SECRET)
        .request_ttl(Duration::from_secs(3600))
        .unlimited_alert_rate()
        .notifier(alerts.clone())
        .store(store)
        .build()
        .expect("build the gate")
}

/// Prints one progress line; the parent counts them to choose where to kill.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// The workload: one request at a time, each from its own principal, decided at random. Every
/// line is printed only after what it reports has returned.
fn child(backend: &Backend, seed: u64) {
    runtime().block_on(async {
        let alerts = RecordingNotifier::new();
        let gate = gate(backend.store().await, &alerts).await;
        say(format_args!("READY"));
        let inner = tower::service_fn(|call: ToolCall| async move {
            say(format_args!(
                "RAN {}",
                tollgate::Call::principal(&call).unwrap()
            ));
            Ok::<_, BoxError>(())
        });
        let svc = gate.layer(policy()).layer(inner);
        let mut rng = Rng::new(seed);
        let mut rules: Vec<RuleId> = Vec::new();
        for step in 0.. {
            let principal = format!("agent-{seed}-{step}");
            let call = ToolCall::new("payments.refund", json!({"step": step}))
                .principal(principal.clone())
                .session("s");
            let caller = tokio::spawn(svc.clone().oneshot(call));
            let alert = alerts.next_alert().await;
            let (id, code) = (alert.request().id(), alert.code().reveal().to_owned());
            say(format_args!("PARKED {id} {code} {principal}"));
            match rng.below(6) {
                0..=2 => {
                    let scope =
                        [Scope::Once, Scope::Value, Scope::Capability][rng.below(3) as usize];
                    let approval = Approve::new(id, &code).scope(scope).by("alice");
                    let approval = gate.approve(approval).await.expect("approve");
                    say(format_args!("APPROVED {id} {scope}"));
                    if let Some(rule) = approval.rule() {
                        rules.push(rule.id());
                        say(format_args!("RULE {} {id}", rule.id()));
                    }
                    caller.await.unwrap().expect("an approved call runs");
                }
                3 | 4 => {
                    let remember = if rng.below(2) == 0 {
                        Scope::Once
                    } else {
                        Scope::Value
                    };
                    let denial = Deny::new(id, &code).remember(remember).by("bob");
                    let denial = gate.deny(denial).await.expect("deny");
                    say(format_args!("DENIED {id}"));
                    if let Some(rule) = denial.rule() {
                        rules.push(rule.id());
                        say(format_args!("RULE {} {id}", rule.id()));
                    }
                    caller.await.unwrap().expect_err("a denied call fails");
                }
                _ => {
                    // Left pending; a revocation happens meanwhile.
                    if !rules.is_empty() {
                        let rule = rules.swap_remove(rng.below(rules.len() as u64) as usize);
                        say(format_args!("REVOKING {rule}"));
                        gate.revoke(Revoke::rule(rule).by("carol"))
                            .await
                            .expect("revoke");
                        say(format_args!("REVOKED {rule}"));
                    }
                    caller.abort();
                    let _ = caller.await;
                }
            }
        }
    });
}

/// What the approver was told, across every child so far.
#[derive(Default)]
struct Told {
    codes: HashMap<RequestId, String>,
    principals: HashMap<String, RequestId>,
    approved: HashMap<RequestId, Scope>,
    denied: HashSet<RequestId>,
    rules: HashMap<RuleId, RequestId>,
    /// Revocations asked for: a kill may land before or after they are stored.
    revoking: HashSet<RuleId>,
    revoked: HashSet<RuleId>,
    ran: HashMap<RequestId, usize>,
}

impl Told {
    fn read(&mut self, line: &str) {
        let words: Vec<&str> = line.split(' ').collect();
        let id = |i: usize| words[i].parse::<RequestId>().unwrap();
        match words[0] {
            "READY" => {}
            "PARKED" => {
                self.codes.insert(id(1), words[2].to_owned());
                self.principals.insert(words[3].to_owned(), id(1));
            }
            "APPROVED" => {
                self.approved.insert(id(1), words[2].parse().unwrap());
            }
            "DENIED" => {
                self.denied.insert(id(1));
            }
            "RULE" => {
                self.rules.insert(words[1].parse().unwrap(), id(2));
            }
            "REVOKING" => {
                self.revoking.insert(words[1].parse().unwrap());
            }
            "REVOKED" => {
                self.revoked.insert(words[1].parse().unwrap());
            }
            "RAN" => {
                let request = self.principals[words[1]];
                *self.ran.entry(request).or_default() += 1;
            }
            other => panic!("unexpected line from the child: {other}"),
        }
    }
}

fn parent() {
    let kills = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .map_or(default, |n| n.parse().expect("the number of kills"))
    };
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = Backend::Sqlite(dir.join("tollgate.db"));
    run(&sqlite, kills("TOLLGATE_CRASH_KILLS", 200));
    std::fs::remove_dir_all(&dir).unwrap();
    let db = runtime().block_on(support::postgres::database("crash"));
    run(
        &Backend::Postgres(db),
        kills("TOLLGATE_CRASH_KILLS_POSTGRES", 60),
    );
    println!("test result: ok. 1 passed; 0 failed");
}

/// Kills a child working on `backend` `kills` times, checking the data after each kill.
fn run(backend: &Backend, kills: usize) {
    let exe = std::env::current_exe().unwrap();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let name = backend.arg();
    println!("crash test on {name}: {kills} kills, seed {seed}");
    let mut rng = Rng::new(seed);
    let mut told = Told::default();
    let runtime = runtime();
    let started = std::time::Instant::now();
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args(["--child", &name, &(seed ^ (round as u64 + 1)).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a random number of progress lines, then a random few microseconds more, so
        // kills land inside opening, inserts, decisions, takes and revocations alike.
        let wait_for = rng.below(40);
        for _ in 0..wait_for {
            match lines.next() {
                Some(line) => told.read(&line.unwrap()),
                None => panic!("the child stopped by itself in round {round}"),
            }
        }
        let spin = rng.below(3000);
        let until = std::time::Instant::now() + Duration::from_micros(spin);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed");
        for line in lines {
            told.read(&line.unwrap());
        }
        runtime.block_on(check(backend, &told, round));
    }
    println!(
        "crash test on {name}: {kills} kills, {} requests decided, {} rules told, {:.1?}",
        told.approved.len() + told.denied.len(),
        told.rules.len(),
        started.elapsed()
    );
    assert!(
        told.approved.len() >= kills / 4,
        "the workload approved enough to test"
    );
    assert!(!told.denied.is_empty() && !told.revoked.is_empty());
}

/// A fresh gate on the data, after a kill, shows everything the approver was told.
async fn check(backend: &Backend, told: &Told, round: usize) {
    let ctx = |what: &str| format!("round {round}: {what}");
    if let Backend::Sqlite(db) = backend {
        let conn = rusqlite::Connection::open(db).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "{}", ctx("the file is intact"));
    }

    let alerts = RecordingNotifier::new();
    let store = backend.store().await;
    let gate = gate(store.clone(), &alerts).await;
    let unfinished = backend
        .count(
            "SELECT count(*) FROM {requests} WHERE status IN ('pending', 'approved', 'executing')",
        )
        .await;
    assert_eq!(
        unfinished,
        0,
        "{}",
        ctx("every unfinished request was abandoned")
    );

    for (id, scope) in &told.approved {
        let stored = store
            .request(*id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{}", ctx("an approved request is stored")));
        match &stored.outcome {
            Some(Outcome::Approved {
                approver, scope: s, ..
            }) => {
                assert_eq!(
                    (&**approver, s),
                    ("alice", scope),
                    "{}",
                    ctx("the approval as told")
                );
            }
            other => panic!("{}: approved request {id} has outcome {other:?}", ctx("")),
        }
        assert!(
            matches!(
                stored.status,
                Status::Executed | Status::Failed | Status::Abandoned
            ),
            "{}: {id} is {}",
            ctx("an approved request moved on"),
            stored.status
        );
    }
    for id in &told.denied {
        let stored = store.request(*id).await.unwrap().unwrap();
        assert_eq!(stored.status, Status::Denied, "{}", ctx("a denial as told"));
        assert!(matches!(stored.outcome, Some(Outcome::Denied { .. })));
    }
    let live: HashMap<RuleId, _> = gate.rules().into_iter().map(|r| (r.id(), r)).collect();
    for (rule, request) in &told.rules {
        if told.revoked.contains(rule) {
            assert!(
                !live.contains_key(rule),
                "{}",
                ctx("a revoked rule stays revoked")
            );
        } else if !told.revoking.contains(rule) {
            let found = live
                .get(rule)
                .unwrap_or_else(|| panic!("{}: rule {rule} is lost", ctx("")));
            assert_eq!(found.request(), *request);
        }
    }
    // No half-written row: every rule belongs to a request decided its way; every request has
    // the audit entry it was inserted with, and every decision its entry.
    for rule in live.values() {
        let stored = store.request(rule.request()).await.unwrap().unwrap();
        let matches = match rule.effect() {
            tollgate::rule::RuleEffect::Allow => {
                matches!(stored.outcome, Some(Outcome::Approved { .. }))
            }
            tollgate::rule::RuleEffect::Deny => {
                matches!(stored.outcome, Some(Outcome::Denied { .. }))
            }
        };
        assert!(matches, "{}", ctx("a rule's request was decided its way"));
    }
    let total = backend.count("SELECT count(*) FROM {requests}").await;
    let requested_all = backend
        .count("SELECT count(*) FROM {audit} WHERE event = 'requested'")
        .await;
    assert_eq!(
        total,
        requested_all,
        "{}",
        ctx("each request row has its requested entry")
    );
    let orphans = backend
        .count(
            "SELECT count(*) FROM {requests} r WHERE r.status IN ('executed', 'failed', 'denied')
               AND r.outcome IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {audit} a
                 WHERE a.request = r.id AND a.event IN ('approved', 'denied'))
               AND r.outcome NOT LIKE '%notification_failed%' AND r.outcome NOT LIKE '%store_failed%'",
        )
        .await;
    assert_eq!(orphans, 0, "{}", ctx("every decision has its audit entry"));

    // No approval ran twice, and none can run again: a late approve with the code is refused.
    for (id, runs) in &told.ran {
        assert_eq!(
            *runs,
            1,
            "{}: request {id} ran {runs} times",
            ctx("once means once")
        );
    }
    for (id, code) in told.codes.iter().take(5) {
        let late = gate.approve(Approve::new(*id, code).by("alice")).await;
        let kind = late
            .expect_err("an old request cannot be approved again")
            .kind();
        assert!(
            matches!(
                kind,
                ErrorKind::AccessRequestAbandoned
                    | ErrorKind::AlreadyResolved
                    | ErrorKind::AccessRequestCancelled
            ),
            "{}: {kind:?}",
            ctx("a late approval is refused")
        );
    }
}
