//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod client;
pub mod postgres;
pub mod receiver;
pub mod shipped;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tollgate::gate::GateBuilder;
use tollgate::notify::{Alert, RecordingNotifier};
use tollgate::policy::{Ask, CapabilityTable, Policy};
use tollgate::store::{AuditEntry, AuditFilter};
use tollgate::{BoxError, Error, Gate, RequestId, RequireApproval, Scope, ToolCall};
use tower::{Layer, Service, ServiceExt};

pub const SECRET: &str = "a test secret of at least sixteen bytes";
pub const TTL: Duration = Duration::from_secs(300);

/// A gate builder with the test secret and `recorder` as its notifier.
pub fn gate(recorder: &RecordingNotifier) -> GateBuilder {
    tollgate::Gate::builder()
        .secret(SECRET)
        .request_ttl(TTL)
        .notifier(recorder.clone())
}

/// A gate whose alerts are recorded, and `policy` in front of the tool service `tools`.
pub struct Fixture<P, S = Tools> {
    pub gate: Gate,
    pub alerts: RecordingNotifier,
    pub tools: S,
    pub svc: RequireApproval<S, P>,
}

impl<P, S> Fixture<P, S>
where
    P: Policy<ToolCall> + Clone + Send + 'static,
    S: Service<ToolCall, Error = BoxError> + Clone + Send + 'static,
    S::Response: Send,
    S::Future: Send,
{
    /// The gate of [`gate`], changed by `configure`.
    pub fn new(policy: P, tools: S, configure: impl FnOnce(GateBuilder) -> GateBuilder) -> Self {
        let alerts = RecordingNotifier::new();
        let gate = configure(gate(&alerts)).build().unwrap();
        let svc = gate.layer(policy).layer(tools.clone());
        Fixture {
            gate,
            alerts,
            tools,
            svc,
        }
    }

    /// Starts a call in its own task and, once it parks on a new request, returns its alert.
    pub async fn park(&self, call: ToolCall) -> (JoinHandle<Result<S::Response, BoxError>>, Alert) {
        let task = tokio::spawn(self.svc.clone().oneshot(call));
        (task, self.alerts.next_alert().await)
    }

    /// Request `id`'s audit trail, oldest first.
    pub async fn trail(&self, id: RequestId) -> Vec<AuditEntry> {
        self.gate
            .audit(AuditFilter::new().request(id))
            .await
            .unwrap()
    }
}

/// `search.web` is allowed, `fs.delete` denied, `payments.*` ask with up to `max_scope`.
pub fn policy(max_scope: Scope) -> CapabilityTable {
    let ask = Ask::new("refunds move money")
        .max_scope(max_scope)
        .max_rule_ttl(Duration::from_secs(3600));
    CapabilityTable::new()
        .allow("search.web")
        .deny("fs.delete", "deleting is never allowed")
        .ask("payments.refund", ask.clone())
        .ask("payments.charge", ask)
}

/// `sms.send` asks, with `value` approvals about the number texted (`/to`) only.
pub fn texts_policy() -> CapabilityTable {
    let ask = Ask::new("texts a customer").max_scope(Scope::Value);
    CapabilityTable::new().ask("sms.send", ask.key_fields(["/to"]))
}

pub fn refund(amount: u64) -> ToolCall {
    ToolCall::new(
        "payments.refund",
        json!({"charge": "ch_1", "amount": amount}),
    )
    .principal("agent-7")
    .session("conv-42")
    .reason("customer ticket #4421")
}

pub fn search(q: &str) -> ToolCall {
    ToolCall::new("search.web", json!({"q": q})).principal("agent-7")
}

/// The stable code of an error from the middleware.
pub fn code(error: &BoxError) -> &'static str {
    error
        .downcast_ref::<Error>()
        .map(Error::code)
        .unwrap_or("not_a_tollgate_error")
}

/// How [`Tools`] names a call: its capability and arguments.
pub fn call_key(call: &ToolCall) -> String {
    format!("{} {}", call.capability(), call.args())
}

/// A tool service that answers `ran <capability> <args>` and counts calls per capability+args.
#[derive(Clone, Debug, Default)]
pub struct Tools {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
}

impl Tools {
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    pub fn calls_of(&self, call: &ToolCall) -> usize {
        let key = call_key(call);
        self.calls.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    /// The runs counted so far, by [`call_key`], leaving none counted.
    pub fn take(&self) -> HashMap<String, usize> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Service<ToolCall> for Tools {
    type Response = String;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let key = call_key(&call);
        *self.calls.lock().unwrap().entry(key.clone()).or_default() += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(format!("ran {key}")) })
    }
}

/// Polls a future once, with a waker that does nothing; `Some` if it finished.
pub fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    match Pin::new(future).poll(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Where a test's SQLite file goes when durability is not what it tests: in memory where the
/// machine has such a place (`/dev/shm`), so syncs cost nothing; else the temporary directory.
pub fn scratch_dir() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// The runtime of a harness that runs its own `main` (the crash test, the replicas test), and of
/// the child processes it starts.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Yields until `done` holds, so spawned tasks can run; fails after many rounds rather than hang.
pub async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

/// Yields until `done` holds, for conditions that wait on real I/O (a database on another
/// connection); fails after `limit` of real time rather than hang. No sleep: it only yields.
pub async fn within(limit: Duration, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(limit, async {
        while !done() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "condition not reached within {limit:?}");
}

/// A writer that keeps what it is given, for capturing logs and terminal output.
#[derive(Clone, Default)]
pub struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Sends every tracing event at every level, as plain text, to the returned buffer until the
/// guard drops.
pub fn capture_logs() -> (Buffer, tracing::subscriber::DefaultGuard) {
    let logs = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// A small deterministic generator (SplitMix64) for randomized tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The value of a variable `scripts/test` sets for tests that need a real server. Missing, the
/// test fails: a test whose server is absent must not pass.
pub fn server_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test, which starts the servers this test needs")
    })
}

/// What a [`Reported`] notifier did: which request, which hook, whether it succeeded.
pub type Report = (tollgate::RequestId, &'static str, bool);

/// A notifier that passes everything to `inner` and reports each finished delivery, so a test
/// looks at what the far end received only once it was sent.
#[derive(Debug)]
pub struct Reported<N> {
    inner: N,
    done: tokio::sync::mpsc::UnboundedSender<Report>,
}

impl<N> Reported<N> {
    pub fn new(inner: N) -> (Self, tokio::sync::mpsc::UnboundedReceiver<Report>) {
        let (done, reports) = tokio::sync::mpsc::unbounded_channel();
        (Reported { inner, done }, reports)
    }
}

impl<N: tollgate::notify::Notifier> tollgate::notify::Notifier for Reported<N> {
    fn notify<'a>(
        &'a self,
        alert: &'a tollgate::notify::Alert,
    ) -> tollgate::notify::BoxFuture<'a, Result<(), tollgate::notify::NotifyError>> {
        Box::pin(async move {
            let result = self.inner.notify(alert).await;
            let _ = self
                .done
                .send((alert.request().id(), "notify", result.is_ok()));
            result
        })
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a tollgate::notify::Resolution,
    ) -> tollgate::notify::BoxFuture<'a, Result<(), tollgate::notify::NotifyError>> {
        Box::pin(async move {
            let result = self.inner.on_resolved(resolution).await;
            let _ = self
                .done
                .send((resolution.request().id(), "on_resolved", result.is_ok()));
            result
        })
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// What an agent with write access to a gate's SQLite file at `path` can do: copy the one rule in
/// it into a `global` rule for every principal, under a new id. Returns the forged rule's id and
/// the seal the copied record carried, if any.
pub fn forge_global_rule(path: &std::path::Path) -> (String, Option<String>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let record: String = conn
        .query_row("SELECT record FROM rules", [], |row| row.get(0))
        .unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(&record).unwrap();
    let seal = forged["seal"].as_str().map(str::to_owned);
    let forged_id = format!("rule_{}", "ab".repeat(16));
    forged["id"] = json!(forged_id);
    forged["scope"] = json!("global");
    forged["principal"] = json!(null);
    let forged = forged.to_string();
    let key = tollgate::store::ScopeKey::of(&tollgate::Rule::from_record(&forged).unwrap());
    conn.execute(
        "INSERT INTO rules (id, scope_key, capability, granted_at, expires_at, record)
         SELECT ?1, ?2, capability, granted_at, expires_at, ?3 FROM rules",
        rusqlite::params![[0xab_u8; 16].as_slice(), key.as_bytes().as_slice(), forged],
    )
    .unwrap();
    (forged_id, seal)
}

/// Whether `c` could steer a person's screen if shown raw: what `tollgate::notify::visible`
/// escapes, less the line break, which a screen's own lines use (control characters,
/// separators, bidirectional formatting, and the characters that show as nothing).
pub fn hidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{9}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{ad}'
        | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}'
        | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{e0000}'..='\u{e0fff}')
}

/// The read side of [`tollgate::store::Store`], and `recover`, for a test store that wraps
/// another in a field named `inner` and changes only how writes behave: write `store_reads!();`
/// inside its `impl Store`.
#[macro_export]
macro_rules! store_reads {
    () => {
        fn recover(
            &self,
            now: std::time::SystemTime,
        ) -> Result<tollgate::store::Recovered, tollgate::Error> {
            self.inner.recover(now)
        }
        fn request(
            &self,
            id: tollgate::RequestId,
        ) -> tollgate::store::BoxFuture<
            '_,
            Result<Option<tollgate::store::StoredRequest>, tollgate::Error>,
        > {
            self.inner.request(id)
        }
        fn covering<'a>(
            &'a self,
            keys: &'a [tollgate::store::ScopeKey],
            now: std::time::SystemTime,
        ) -> tollgate::store::BoxFuture<'a, Result<Vec<tollgate::Rule>, tollgate::Error>> {
            self.inner.covering(keys, now)
        }
        fn rules(
            &self,
            now: std::time::SystemTime,
        ) -> tollgate::store::BoxFuture<'_, Result<Vec<tollgate::Rule>, tollgate::Error>> {
            self.inner.rules(now)
        }
        fn revoke<'a>(
            &'a self,
            which: &'a tollgate::store::Revocation,
            by: &'a str,
            at: std::time::SystemTime,
        ) -> tollgate::store::BoxFuture<'a, Result<Vec<tollgate::Rule>, tollgate::Error>> {
            self.inner.revoke(which, by, at)
        }
        fn purge(
            &self,
            now: std::time::SystemTime,
        ) -> tollgate::store::BoxFuture<'_, Result<tollgate::store::Purged, tollgate::Error>> {
            self.inner.purge(now)
        }
        fn audit<'a>(
            &'a self,
            filter: &'a tollgate::store::AuditFilter,
        ) -> tollgate::store::BoxFuture<
            'a,
            Result<Vec<tollgate::store::AuditEntry>, tollgate::Error>,
        > {
            self.inner.audit(filter)
        }
    };
}

/// How many sequences a property test runs: the number in the environment variable `var`, or
/// `default`.
pub fn cases(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{var} is a number")))
        .unwrap_or(default)
}

/// Deletes the SQLite database at `path` with its journal files, if they are there.
pub fn remove_sqlite(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// The answer an approval or a denial with the right code gets once its request stands at
/// `status`, for the reference models: `None` while it is pending.
pub fn decided_answer(status: tollgate::Status) -> Option<&'static str> {
    use tollgate::Status;
    match status {
        Status::Pending => None,
        Status::Expired => Some("access_request_expired"),
        Status::Cancelled => Some("access_request_cancelled"),
        Status::Abandoned => Some("access_request_abandoned"),
        _ => Some("already_resolved"),
    }
}

/// What a caller heard, for the reference models: `Ok` if its call ran, its error's code,
/// `"left"` if it was aborted, or `"still waiting"` (and it is aborted) if it did not end within
/// `limit`.
pub async fn heard<T>(
    mut handle: JoinHandle<Result<T, BoxError>>,
    limit: Duration,
) -> Result<(), &'static str> {
    match tokio::time::timeout(limit, &mut handle).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(error))) => Err(code(&error)),
        Ok(Err(_)) => Err("left"),
        Err(_) => {
            handle.abort();
            Err("still waiting")
        }
    }
}
