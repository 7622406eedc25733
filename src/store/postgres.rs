//! `PostgresStore`: one PostgreSQL database that the replicas of a gate share.
//!
//! Long by design: the schema, the change feed, leases, and every statement stay beside the
//! `Store` methods that run them.
//!
//! - **Decisions** are conditional updates (`… WHERE id = $1 AND status = $2`): of two replicas
//!   deciding one request, exactly one updates a row.
//! - **The change feed.** Every transition, filed rule and revocation appends a row to
//!   `tollgate_changes` in the same transaction, numbered by a counter row that the transaction
//!   holds locked until it commits, so numbers appear in commit order and a reader that has seen
//!   number `n` has seen every number before it. Each replica reads the rows after the last it saw
//!   when `NOTIFY tollgate_changes` wakes it, and every re-scan interval whether woken or not
//!   (notifications are lost while a connection is down).
//! - **Leases.** Each store handle is an instance with a name and a lease it renews; requests
//!   record the instance that holds their callers. A request whose owner's lease ran out is
//!   abandoned by whichever replica's sweep gets to it first: the `UPDATE … RETURNING` tells
//!   exactly one replica, which tells the notifiers.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sql::{Param, audit_query};
use super::{
    Change, Purged, Recovered, Revocation, ScopeKey, Store, StoredRequest, Transition, Write,
};
use crate::args::ArgsDigest;
use crate::audit::{AuditEntry, AuditEvent, AuditFilter};
use crate::boxed::BoxFuture;
use crate::error::{Error, ErrorKind};
use crate::id::{RequestId, RuleId};
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::Rule;
use crate::scope::Scope;
use crate::time::{from_millis, millis};

/// The key of the advisory lock migrations run under, so replicas starting together take turns.
const MIGRATION_LOCK: i64 = 0x546f_6c6c_6761_7465; // "Tollgate"

/// The channel `NOTIFY` wakes replicas on.
const CHANNEL: &str = "tollgate_changes";

/// The schema, one migration a version; `tollgate_schema` says how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tollgate_instances (
    id          TEXT PRIMARY KEY,
    lease_until TIMESTAMPTZ NOT NULL
);

CREATE TABLE tollgate_requests (
    id          BYTEA PRIMARY KEY CHECK (length(id) = 16),
    status      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    fingerprint BYTEA NOT NULL,
    capability  TEXT NOT NULL,
    principal   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    record      TEXT NOT NULL,
    outcome     TEXT,
    verdict     TEXT,
    wrong_codes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tollgate_requests_unfinished ON tollgate_requests (owner)
    WHERE status IN ('pending', 'approved', 'executing');
CREATE UNIQUE INDEX tollgate_requests_joinable ON tollgate_requests (fingerprint)
    WHERE status = 'pending';
CREATE INDEX tollgate_requests_expiry ON tollgate_requests (expires_at);

CREATE TABLE tollgate_rules (
    id          BYTEA PRIMARY KEY CHECK (length(id) = 16),
    scope_key   BYTEA NOT NULL UNIQUE CHECK (length(scope_key) = 32),
    capability  TEXT NOT NULL,
    granted_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX tollgate_rules_expiry ON tollgate_rules (expires_at);
CREATE INDEX tollgate_rules_capability ON tollgate_rules (capability);

CREATE TABLE tollgate_audit (
    seq         BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    event       TEXT NOT NULL,
    request     BYTEA,
    rule        BYTEA,
    principal   TEXT,
    capability  TEXT NOT NULL,
    args_digest BYTEA,
    args        TEXT,
    approver    TEXT,
    reason      TEXT,
    scope       TEXT,
    detail      TEXT
);
CREATE INDEX tollgate_audit_at ON tollgate_audit (at);
CREATE INDEX tollgate_audit_principal ON tollgate_audit (principal, seq);
CREATE INDEX tollgate_audit_capability ON tollgate_audit (capability, seq);
CREATE INDEX tollgate_audit_request ON tollgate_audit (request, seq);
CREATE INDEX tollgate_audit_event ON tollgate_audit (event, seq);

CREATE TABLE tollgate_clock (
    only_row    BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    seq         BIGINT NOT NULL
);
INSERT INTO tollgate_clock (seq) VALUES (0);

CREATE TABLE tollgate_changes (
    seq         BIGINT PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    origin      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    request     BYTEA,
    status      TEXT,
    outcome     TEXT,
    verdict     TEXT,
    rule        BYTEA,
    record      TEXT
);
CREATE INDEX tollgate_changes_at ON tollgate_changes (at);
"#,
    // The seal of what a request asks (the gate's MAC over the call and its limits), so replicas
    // join and carry out only requests this gate's secret filed, unchanged.
    r#"
ALTER TABLE tollgate_requests ADD COLUMN seal TEXT;
"#,
];

/// How long the change feed keeps a change: a replica cut off from the database for longer
/// misses it (and so, say, a revocation), so keep this well above any outage you ride out.
const CHANGES_KEPT: &str = "1 hour";

/// How a [`PostgresStore`] runs: its instance name, its lease, how it watches for changes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresOptions {
    instance: Option<String>,
    lease: Duration,
    rescan: Duration,
    listen: bool,
    pool_size: usize,
    connect_timeout: Duration,
    /// Extra trusted roots, PEM, for a server whose certificate a private CA signed.
    tls_roots: Vec<u8>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            instance: None,
            lease: Duration::from_secs(10),
            rescan: Duration::from_secs(1),
            listen: true,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            tls_roots: Vec::new(),
        }
    }
}

impl PostgresOptions {
    /// The defaults: a random instance name, a 10 s lease, a re-scan every second, `LISTEN` on,
    /// 16 pooled connections, 5 s to connect.
    pub fn new() -> Self {
        Self::default()
    }

    /// This process's name among the replicas, stable across its restarts (a pod name, a host
    /// name): a replica that starts again under its name abandons the requests it left
    /// unfinished at once, instead of when its old lease runs out. Random if not set. Two live
    /// processes must never share a name.
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// How long a replica's lease lasts; it is renewed every third of it. When a replica stops
    /// (killed, cut off), its requests are abandoned once its lease has run out and the next
    /// re-scan of another replica comes: within `lease + rescan`.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often the change feed is read whether or not a notification came; the bound on how
    /// late a replica learns of a change when notifications are lost.
    pub fn rescan(mut self, every: Duration) -> Self {
        self.rescan = every;
        self
    }

    /// Whether to `LISTEN` for changes (on by default). Off, a replica learns of changes by the
    /// re-scan only: for tests of that path, and for poolers that do not pass notifications on.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// The most connections the store's pool opens (16 by default).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Trusts the certificates in `pem` (PEM text, one or more) as roots for the server's TLS
    /// certificate, beside the public roots that are always trusted: for a server whose
    /// certificate a private CA signed.
    ///
    /// TLS (rustls with ring) is used when the connection string says `sslmode=require`, or
    /// when roots are given here; the server's certificate must then verify against the public
    /// roots or these, for the host named in the connection string, or nothing connects (with
    /// `require` that is stricter than libpq's, which does not verify). Otherwise connections
    /// are plain: `sslmode=prefer`, the default, is taken as `disable`, since a certificate
    /// nobody said how to verify proves nothing.
    pub fn tls_roots(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls_roots.extend_from_slice(pem.as_ref());
        self.tls_roots.push(b'\n');
        self
    }

    /// How long to wait for a connection, new or from the pool (5 s by default); past it, the
    /// operation fails with `store_failed`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// Keeps requests, rules and the audit trail in a PostgreSQL database that replicas of one
/// service share. See the crate's README, "Deploying replicas", for what is shared and the
/// bounds on how soon each replica learns of a change.
///
/// [`connect`](Self::connect) creates or migrates the schema (under an advisory lock, so
/// replicas starting together take turns), registers this process as an instance with a
/// lease, abandons what it may (its own earlier run's unfinished requests, and those of instances
/// whose lease ran out), and starts the task that renews the lease and reads the change feed.
/// Clones share one pool and one task; the task stops when the last clone is dropped.
///
/// Tables are named `tollgate_*`, in the connection's default schema.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    instance: Arc<str>,
    recovered: Mutex<Option<Recovered>>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

fn failed(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::StoreFailed).with_source(e)
}

fn unreadable(why: impl fmt::Display) -> Error {
    Error::new(ErrorKind::StoreUnreadable).with_detail(why.to_string())
}

/// The TLS connector: the public roots and `pem`'s, rustls with ring.
fn tls(pem: &[u8]) -> Result<MakeRustlsConnect, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let invalid = |detail: String| Error::new(ErrorKind::InvalidConfig).with_detail(detail);
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| invalid(format!("tls_roots: not PEM certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("tls_roots: not a usable root certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A random instance name: 16 hex digits.
fn random_instance() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    crate::hex::lower(&bytes)
}

impl PostgresStore {
    /// Connects with the default [`PostgresOptions`]; see [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to the database at `url` (`postgres://user@host:port/db` or a key-value
    /// string), brings its schema up to date, registers this instance, recovers, and starts
    /// watching for changes. Must be called inside a Tokio runtime.
    ///
    /// Errors: `invalid_config` if `url` does not parse, `store_failed` if the database cannot be
    /// reached or written, `store_unreadable` if its schema is newer than this version knows.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, Error> {
        let mut config: tokio_postgres::Config = url
            .parse()
            // The parser's error is not kept: it may quote the string, password and all.
            .map_err(|_| {
                Error::new(ErrorKind::InvalidConfig)
                    .with_detail("not a PostgreSQL connection string")
            })?;
        config.connect_timeout(options.connect_timeout);
        config.application_name("tollgate");
        // TLS, verified, when asked for: `sslmode=require`, or roots of its own. Otherwise
        // plain, as `sslmode=prefer` cannot verify a server it was told nothing about.
        let tls = (config.get_ssl_mode() == SslMode::Require || !options.tls_roots.is_empty())
            .then(|| tls(&options.tls_roots))
            .transpose()?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(config.clone(), tls.clone(), manager_config),
            None => {
                config.ssl_mode(SslMode::Disable);
                Manager::from_config(config.clone(), NoTls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(failed)?;
        let instance: Arc<str> = options
            .instance
            .clone()
            .unwrap_or_else(random_instance)
            .into();
        migrate(&pool).await?;
        let now = SystemTime::now();
        let (recovered, seen) = recover(&pool, &instance, options.lease, now).await?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let watcher = Watcher {
            pool: pool.clone(),
            config,
            tls,
            instance: instance.clone(),
            options,
            seen,
            sender,
            wake: Arc::new(Notify::new()),
        };
        let task = tokio::spawn(watcher.run());
        tracing::info!(instance = %instance, "postgres store connected");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                instance,
                recovered: Mutex::new(Some(recovered)),
                changes: Mutex::new(Some(receiver)),
                task,
            }),
        })
    }

    /// This instance's name among the replicas.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// `writes` in one transaction, with one commit: whether each applied.
    async fn together(&self, writes: &[Write<'_>]) -> Result<Vec<bool>, Unkept> {
        let mut client = self.client().await.map_err(Unkept::Before)?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| Unkept::Before(failed(e)))?;
        let origin = &*self.inner.instance;
        let mut applied = Vec::with_capacity(writes.len());
        for &write in writes {
            let done = write_in(&tx, origin, write).await;
            applied.push(done.map_err(Unkept::Before)?);
        }
        tx.commit().await.map_err(|e| Unkept::Commit(failed(e)))?;
        Ok(applied)
    }

    async fn client(&self) -> Result<Object, Error> {
        client(&self.inner.pool).await
    }
}

async fn client(pool: &Pool) -> Result<Object, Error> {
    pool.get().await.map_err(|e| {
        Error::new(ErrorKind::StoreFailed)
            .with_detail("cannot reach PostgreSQL")
            .with_source(e)
    })
}

/// Creates the schema or brings it up to date, under the advisory lock.
async fn migrate(pool: &Pool) -> Result<(), Error> {
    let mut client = client(pool).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    let result = async {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS tollgate_schema (version INTEGER NOT NULL)")
            .await
            .map_err(failed)?;
        let version: i32 = client
            .query_opt("SELECT version FROM tollgate_schema", &[])
            .await
            .map_err(failed)?
            .map_or(0, |row| row.get(0));
        let latest = MIGRATIONS.len() as i32;
        if version > latest {
            return Err(unreadable(format!(
                "written by a newer tollgate (schema {version}; this version knows up to {latest})"
            )));
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = client.transaction().await.map_err(failed)?;
            tx.batch_execute(migration).await.map_err(failed)?;
            tx.execute("DELETE FROM tollgate_schema", &[])
                .await
                .map_err(failed)?;
            tx.execute(
                "INSERT INTO tollgate_schema (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            tracing::info!(schema = i + 1, "store migrated");
        }
        Ok(())
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    result
}

/// Renews `instance`'s lease for `lease` from the database's clock.
async fn renew(
    client: &impl deadpool_postgres::GenericClient,
    instance: &str,
    lease: Duration,
) -> Result<(), Error> {
    client
        .execute(
            "INSERT INTO tollgate_instances (id, lease_until)
             VALUES ($1, clock_timestamp() + $2 * interval '1 millisecond')
             ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until",
            &[&instance, &(lease.as_millis() as f64)],
        )
        .await
        .map_err(failed)?;
    Ok(())
}

/// At start: registers the instance, abandons its own earlier run's unfinished requests and
/// those of instances whose lease ran out, purges, and reads the live rules and the feed's end.
async fn recover(
    pool: &Pool,
    instance: &str,
    lease: Duration,
    now: SystemTime,
) -> Result<(Recovered, i64), Error> {
    let mut client = client(pool).await?;
    let tx = client.transaction().await.map_err(failed)?;
    let abandoned = abandon(&tx, instance, Some(instance), now).await?;
    renew(&tx, instance, lease).await?;
    purge(&tx, now).await?;
    let rules = live_rules(&tx, now).await?;
    let seen: i64 = tx
        .query_one("SELECT seq FROM tollgate_clock", &[])
        .await
        .map_err(failed)?
        .get(0);
    tx.commit().await.map_err(failed)?;
    if !abandoned.is_empty() {
        tracing::warn!(
            count = abandoned.len(),
            "abandoned requests of stopped replicas"
        );
    }
    Ok((Recovered::new(rules, abandoned), seen))
}

/// Ends as abandoned the unfinished requests of instances whose lease ran out, and of `own` (a
/// process starting again under its name); each with its audit entry and change. Returns them.
async fn abandon(
    tx: &deadpool_postgres::Transaction<'_>,
    origin: &str,
    own: Option<&str>,
    now: SystemTime,
) -> Result<Vec<AccessRequest>, Error> {
    let rows = tx
        .query(
            "WITH dead AS (
                 DELETE FROM tollgate_instances WHERE lease_until < clock_timestamp() RETURNING id
             )
             UPDATE tollgate_requests SET status = 'abandoned', outcome = coalesce(outcome, $1)
             WHERE status IN ('pending', 'approved', 'executing')
               AND (owner IN (SELECT id FROM dead) OR owner = $2
                    OR owner NOT IN (SELECT id FROM tollgate_instances))
             RETURNING record",
            &[&Outcome::Abandoned.to_record(), &own.unwrap_or("")],
        )
        .await
        .map_err(failed)?;
    let mut abandoned = Vec::with_capacity(rows.len());
    for row in rows {
        abandoned.push(AccessRequest::from_record(row.get(0))?);
    }
    abandoned.sort_by_key(|r| r.created_at);
    let entries: Vec<AuditEntry> = abandoned
        .iter()
        .map(|r| AuditEntry::abandoned(r, now))
        .collect();
    append(tx, &entries).await?;
    let status = Status::Abandoned.as_str();
    let outcome = Outcome::Abandoned.to_record();
    for request in &abandoned {
        let change = FeedRow {
            kind: "request",
            request: Some(request.id.as_bytes()),
            status: Some(status),
            outcome: Some(&outcome),
            ..FeedRow::default()
        };
        change.append(tx, origin).await?;
    }
    Ok(abandoned)
}

/// One row of the change feed.
#[derive(Default)]
struct FeedRow<'a> {
    kind: &'a str,
    request: Option<&'a [u8; 16]>,
    status: Option<&'a str>,
    outcome: Option<&'a str>,
    verdict: Option<&'a str>,
    rule: Option<&'a [u8; 16]>,
    record: Option<&'a str>,
}

impl FeedRow<'_> {
    /// Appends the row under the next number of the clock, whose row lock this transaction then
    /// holds until it ends, and wakes the listeners when it commits: one statement, one round
    /// trip.
    async fn append(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        origin: &str,
    ) -> Result<(), Error> {
        let statement = tx
            .prepare_cached(
                "WITH c AS (UPDATE tollgate_clock SET seq = seq + 1 RETURNING seq),
                      i AS (INSERT INTO tollgate_changes (seq, origin, kind, request, status, outcome, verdict, rule, record)
                            SELECT c.seq, $1, $2, $3, $4, $5, $6, $7, $8 FROM c RETURNING seq)
                 SELECT pg_notify($9, '') FROM i",
            )
            .await
            .map_err(failed)?;
        let rows = tx
            .query(
                &statement,
                &[
                    &origin,
                    &self.kind,
                    &self.request.map(|b| &b[..]),
                    &self.status,
                    &self.outcome,
                    &self.verdict,
                    &self.rule.map(|b| &b[..]),
                    &self.record,
                    &CHANNEL,
                ],
            )
            .await
            .map_err(failed)?;
        match rows.len() {
            1 => Ok(()),
            n => Err(Error::new(ErrorKind::StoreFailed)
                .with_detail(format!("the change feed took {n} rows, not one"))),
        }
    }
}

async fn append(
    tx: &deadpool_postgres::Transaction<'_>,
    entries: &[AuditEntry],
) -> Result<(), Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO tollgate_audit (at, event, request, rule, principal, capability,
                                         args_digest, args, approver, reason, scope, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .await
        .map_err(failed)?;
    for e in entries {
        tx.execute(
            &insert,
            &[
                &millis(e.at),
                &e.event.as_str(),
                &e.request.as_ref().map(|id| &id.as_bytes()[..]),
                &e.rule.as_ref().map(|id| &id.as_bytes()[..]),
                &e.principal.as_deref(),
                &&*e.capability,
                &e.args_digest.as_ref().map(|d| &d.as_bytes()[..]),
                &e.args.as_deref(),
                &e.approver.as_deref(),
                &e.reason.as_deref(),
                &e.scope.map(Scope::as_str),
                &e.detail.as_deref(),
            ],
        )
        .await
        .map_err(failed)?;
    }
    Ok(())
}

/// Why a batch was not written in one transaction.
enum Unkept {
    /// A write failed, or no transaction began: nothing was kept.
    Before(Error),
    /// The commit failed: it may have taken or not.
    Commit(Error),
}

/// What identical calls share across replicas, the key of the pending requests they join: a
/// digest of (principal, session, capability, args digest), each text length-prefixed.
fn fingerprint(request: &AccessRequest) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut hash = Sha256::new();
    for field in [
        request.principal.as_bytes(),
        request.session.as_deref().unwrap_or("").as_bytes(),
        request.capability.as_bytes(),
    ] {
        hash.update((field.len() as u64).to_be_bytes());
        hash.update(field);
    }
    hash.update([u8::from(request.session.is_some())]);
    hash.update(request.args_digest.as_bytes());
    hash.finalize().into()
}

/// Files a pending request in `tx`, held by `origin`, unless an identical one is pending:
/// whether it was filed.
async fn file(
    tx: &deadpool_postgres::Transaction<'_>,
    origin: &str,
    request: &AccessRequest,
    seal: Option<&str>,
    fingerprint: &[u8],
) -> Result<bool, Error> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO tollgate_requests (id, status, owner, fingerprint, capability,
                                            principal, created_at, expires_at, record, seal)
             VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (fingerprint) WHERE status = 'pending' DO NOTHING",
        )
        .await
        .map_err(failed)?;
    let inserted = tx
        .execute(
            &insert,
            &[
                &&request.id.as_bytes()[..],
                &origin,
                &fingerprint,
                &&*request.capability,
                &&*request.principal,
                &millis(request.created_at()),
                &millis(request.expires_at()),
                &request.to_record(),
                &seal,
            ],
        )
        .await
        .map_err(failed)?;
    Ok(inserted == 1)
}

/// One write of a batch in `tx`: whether it applied. An insert whose identical request is
/// pending fails.
async fn write_in(
    tx: &deadpool_postgres::Transaction<'_>,
    origin: &str,
    write: Write<'_>,
) -> Result<bool, Error> {
    match write {
        Write::Insert(request, audit) => {
            if !file(tx, origin, request, None, &fingerprint(request)).await? {
                return Err(Error::new(ErrorKind::StoreFailed)
                    .with_detail("an identical request is pending"));
            }
            append(tx, audit).await?;
            Ok(true)
        }
        Write::Transition(change) => transition(tx, origin, change).await,
        Write::Append(audit) => append(tx, audit).await.map(|()| true),
    }
}

/// Moves a request on in `tx`, as [`Store::transition`] does: whether it applied.
async fn transition(
    tx: &deadpool_postgres::Transaction<'_>,
    origin: &str,
    change: &Transition,
) -> Result<bool, Error> {
    let update = tx
        .prepare_cached(
            "UPDATE tollgate_requests
             SET status = $1, outcome = coalesce($2, outcome), verdict = coalesce($3, verdict)
             WHERE id = $4 AND status = $5
             RETURNING verdict",
        )
        .await
        .map_err(failed)?;
    let outcome = change.outcome.as_ref().map(Outcome::to_record);
    let updated = tx
        .query_opt(
            &update,
            &[
                &change.to.as_str(),
                &outcome,
                &change.verdict.as_deref(),
                &&change.id.as_bytes()[..],
                &change.from.as_str(),
            ],
        )
        .await
        .map_err(failed)?;
    let Some(updated) = updated else {
        return Ok(false);
    };
    // Every later change of an approved request carries its verdict, so a replica whose
    // callers joined it can check that a person approved it.
    let verdict: Option<&str> = updated.get(0);
    // An approval's rule travels in its verdict and is filed when a caller takes it.
    if let Some(rule) = change
        .rule
        .as_ref()
        .filter(|_| change.to != Status::Approved)
    {
        file_rule(tx, origin, rule).await?;
    }
    append(tx, &change.audit).await?;
    FeedRow {
        kind: "request",
        request: Some(change.id.as_bytes()),
        status: Some(change.to.as_str()),
        outcome: outcome.as_deref(),
        verdict,
        ..FeedRow::default()
    }
    .append(tx, origin)
    .await?;
    Ok(true)
}

/// Files `rule` in its key's slot, replacing the rule there, and tells the other replicas.
async fn file_rule(
    tx: &deadpool_postgres::Transaction<'_>,
    origin: &str,
    rule: &Rule,
) -> Result<(), Error> {
    let record = rule.to_record();
    let insert = tx
        .prepare_cached(
            "INSERT INTO tollgate_rules (id, scope_key, capability, granted_at, expires_at, record)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (scope_key) DO UPDATE SET id = EXCLUDED.id,
                 capability = EXCLUDED.capability, granted_at = EXCLUDED.granted_at,
                 expires_at = EXCLUDED.expires_at, record = EXCLUDED.record",
        )
        .await
        .map_err(failed)?;
    tx.execute(
        &insert,
        &[
            &&rule.id.as_bytes()[..],
            &&ScopeKey::of(rule).as_bytes()[..],
            &&*rule.capability,
            &millis(rule.granted_at),
            &millis(rule.expires_at),
            &record,
        ],
    )
    .await
    .map_err(failed)?;
    FeedRow {
        kind: "rule",
        rule: Some(rule.id.as_bytes()),
        record: Some(&record),
        ..FeedRow::default()
    }
    .append(tx, origin)
    .await
}

fn rules_from(rows: Vec<Row>) -> Result<Vec<Rule>, Error> {
    rows.iter()
        .map(|row| Rule::from_record(row.get(0)))
        .collect()
}

async fn live_rules(
    client: &impl deadpool_postgres::GenericClient,
    now: SystemTime,
) -> Result<Vec<Rule>, Error> {
    let rows = client
        .query(
            "SELECT record FROM tollgate_rules WHERE expires_at > $1 ORDER BY granted_at, id",
            &[&millis(now)],
        )
        .await
        .map_err(failed)?;
    rules_from(rows)
}

fn status_of(name: &str) -> Result<Status, Error> {
    Status::from_name(name).ok_or_else(|| unreadable(format!("unknown status `{name}`")))
}

async fn purge(
    client: &impl deadpool_postgres::GenericClient,
    now: SystemTime,
) -> Result<Purged, Error> {
    let now = millis(now);
    let rules = client
        .execute("DELETE FROM tollgate_rules WHERE expires_at <= $1", &[&now])
        .await
        .map_err(failed)?;
    let requests = client
        .execute(
            "DELETE FROM tollgate_requests WHERE expires_at <= $1
               AND status NOT IN ('pending', 'approved', 'executing')",
            &[&now],
        )
        .await
        .map_err(failed)?;
    client
        .execute(
            &format!("DELETE FROM tollgate_changes WHERE at < clock_timestamp() - interval '{CHANGES_KEPT}'"),
            &[],
        )
        .await
        .map_err(failed)?;
    Ok(Purged::new(rules as usize, requests as usize))
}

impl Store for PostgresStore {
    /// What [`connect`](PostgresStore::connect) recovered; a second call finds nothing more to
    /// abandon and returns the live rules as they were then.
    fn recover(&self, _now: SystemTime) -> Result<Recovered, Error> {
        let mut recovered = self
            .inner
            .recovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let first = recovered.take().unwrap_or_default();
        *recovered = Some(Recovered::new(first.rules.clone(), Vec::new()));
        Ok(first)
    }

    fn insert<'a>(
        &'a self,
        request: &'a AccessRequest,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            match self.insert_or_join(request, "", audit).await? {
                None => Ok(()),
                Some(other) => Err(Error::new(ErrorKind::StoreFailed).with_detail(format!(
                    "an identical request is pending: {}",
                    other.request.id
                ))),
            }
        })
    }

    fn insert_or_join<'a>(
        &'a self,
        request: &'a AccessRequest,
        seal: &'a str,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<Option<StoredRequest>, Error>> {
        Box::pin(async move {
            let fingerprint = fingerprint(request);
            let seal = (!seal.is_empty()).then_some(seal);
            // Twice at most: an identical request found pending may be decided before it is read.
            for _ in 0..2 {
                let mut client = self.client().await?;
                let tx = client.transaction().await.map_err(failed)?;
                if file(&tx, &self.inner.instance, request, seal, &fingerprint).await? {
                    append(&tx, audit).await?;
                    tx.commit().await.map_err(failed)?;
                    return Ok(None);
                }
                let pending = tx
                    .query_opt(
                        "SELECT record, seal FROM tollgate_requests
                         WHERE fingerprint = $1 AND status = 'pending'",
                        &[&&fingerprint[..]],
                    )
                    .await
                    .map_err(failed)?;
                if let Some(row) = pending {
                    let request = AccessRequest::from_record(row.get(0))?;
                    let stored = StoredRequest::new(request, Status::Pending, None);
                    return Ok(Some(
                        stored.with_seal(row.get::<_, Option<&str>>(1).map(Into::into)),
                    ));
                }
            }
            Err(Error::new(ErrorKind::StoreFailed)
                .with_detail("an identical request kept being filed and decided meanwhile"))
        })
    }

    fn transition<'a>(&'a self, change: &'a Transition) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(failed)?;
            if !transition(&tx, &self.inner.instance, change).await? {
                return Ok(false);
            }
            tx.commit().await.map_err(failed)?;
            Ok(true)
        })
    }

    fn write_batch<'a>(
        &'a self,
        writes: &'a [Write<'a>],
    ) -> BoxFuture<'a, Vec<Result<bool, Error>>> {
        Box::pin(async move {
            match self.together(writes).await {
                Ok(applied) => applied.into_iter().map(Ok).collect(),
                // Nothing was kept: each alone, so that only a write that fails fails.
                Err(Unkept::Before(error)) => {
                    tracing::debug!(%error, writes = writes.len(), "a batch failed; writing each alone");
                    let mut results = Vec::with_capacity(writes.len());
                    for write in writes {
                        results.push(write.apply(self).await);
                    }
                    results
                }
                // Whether the commit took is unknown: writing again could write twice.
                Err(Unkept::Commit(error)) => {
                    let detail = format!("the commit of a batch failed: {error}");
                    writes
                        .iter()
                        .map(
                            |_| Err(Error::new(ErrorKind::StoreFailed).with_detail(detail.clone())),
                        )
                        .collect()
                }
            }
        })
    }

    fn append<'a>(&'a self, audit: &'a [AuditEntry]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(failed)?;
            append(&tx, audit).await?;
            tx.commit().await.map_err(failed)
        })
    }

    fn request(&self, id: RequestId) -> BoxFuture<'_, Result<Option<StoredRequest>, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let query = client
                .prepare_cached(
                    "SELECT record, status, outcome, verdict, seal FROM tollgate_requests
                     WHERE id = $1",
                )
                .await
                .map_err(failed)?;
            let Some(row) = client
                .query_opt(&query, &[&&id.as_bytes()[..]])
                .await
                .map_err(failed)?
            else {
                return Ok(None);
            };
            let outcome = row
                .get::<_, Option<&str>>(2)
                .map(Outcome::from_record)
                .transpose()?;
            let stored = StoredRequest::new(
                AccessRequest::from_record(row.get(0))?,
                status_of(row.get(1))?,
                outcome,
            );
            Ok(Some(
                stored
                    .with_verdict(row.get::<_, Option<&str>>(3).map(Into::into))
                    .with_seal(row.get::<_, Option<&str>>(4).map(Into::into)),
            ))
        })
    }

    fn covering<'a>(
        &'a self,
        keys: &'a [ScopeKey],
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Rule>, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let keys: Vec<&[u8]> = keys.iter().map(|k| &k.as_bytes()[..]).collect();
            let rows = client
                .query(
                    "SELECT record FROM tollgate_rules WHERE scope_key = ANY($1) AND expires_at > $2",
                    &[&keys, &millis(now)],
                )
                .await
                .map_err(failed)?;
            rules_from(rows)
        })
    }

    fn rules(&self, now: SystemTime) -> BoxFuture<'_, Result<Vec<Rule>, Error>> {
        Box::pin(async move { live_rules(&self.client().await?, now).await })
    }

    fn revoke<'a>(
        &'a self,
        which: &'a Revocation,
        by: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Rule>, Error>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(failed)?;
            let rows = match which {
                Revocation::Rule(id) => {
                    tx.query(
                        "DELETE FROM tollgate_rules WHERE id = $1 RETURNING record",
                        &[&&id.as_bytes()[..]],
                    )
                    .await
                }
                Revocation::Capability(capability) => {
                    tx.query(
                        "DELETE FROM tollgate_rules WHERE capability = $1 RETURNING record",
                        &[&&**capability],
                    )
                    .await
                }
                Revocation::All => {
                    tx.query("DELETE FROM tollgate_rules RETURNING record", &[])
                        .await
                }
            }
            .map_err(failed)?;
            let mut removed = rules_from(rows)?;
            removed.sort_by_key(|r| (r.granted_at, r.id));
            let entries: Vec<AuditEntry> = removed
                .iter()
                .map(|r| AuditEntry::rule_revoked(r, by, at))
                .collect();
            append(&tx, &entries).await?;
            for rule in &removed {
                FeedRow {
                    kind: "revoke",
                    rule: Some(rule.id.as_bytes()),
                    ..FeedRow::default()
                }
                .append(&tx, &self.inner.instance)
                .await?;
            }
            tx.commit().await.map_err(failed)?;
            Ok(removed)
        })
    }

    fn purge(&self, now: SystemTime) -> BoxFuture<'_, Result<Purged, Error>> {
        Box::pin(async move { purge(&self.client().await?, now).await })
    }

    fn audit<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, Error>> {
        Box::pin(async move {
            let (sql, values) = audit_query(filter, "tollgate_audit", |n| format!("${n}"));
            let values: Vec<Box<dyn ToSql + Sync + Send>> = values
                .into_iter()
                .map(|value| -> Box<dyn ToSql + Sync + Send> {
                    match value {
                        Param::Int(n) => Box::new(n),
                        Param::Text(text) => Box::new(text),
                        Param::Bytes(bytes) => Box::new(bytes),
                    }
                })
                .collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
            let client = self.client().await?;
            let rows = client.query(&sql, &params).await.map_err(failed)?;
            rows.iter().map(read_entry).collect()
        })
    }

    fn changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        self.inner
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn shared(&self) -> bool {
        true
    }

    fn pending(&self) -> BoxFuture<'_, Result<Vec<AccessRequest>, Error>> {
        Box::pin(async move {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT record FROM tollgate_requests WHERE status = 'pending'
                     ORDER BY created_at, id LIMIT 10000",
                    &[],
                )
                .await
                .map_err(failed)?;
            rows.iter()
                .map(|row| AccessRequest::from_record(row.get(0)))
                .collect()
        })
    }

    fn wrong_code<'a>(
        &'a self,
        id: RequestId,
        entry: &'a AuditEntry,
        limit: u32,
        close: &'a Transition,
    ) -> BoxFuture<'a, Result<Option<u32>, Error>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(failed)?;
            // The row stays locked from here to the commit: no decision comes in between.
            let count = tx
                .query_opt(
                    "UPDATE tollgate_requests SET wrong_codes = wrong_codes + 1
                     WHERE id = $1 AND status = 'pending' RETURNING wrong_codes",
                    &[&&id.as_bytes()[..]],
                )
                .await
                .map_err(failed)?
                .map(|row| row.get::<_, i32>(0).max(0) as u32);
            if let Some(count) = count {
                append(&tx, std::slice::from_ref(entry)).await?;
                if count >= limit && !transition(&tx, &self.inner.instance, close).await? {
                    return Err(Error::new(ErrorKind::StoreFailed)
                        .with_request(id)
                        .with_detail("a locked pending request could not be closed"));
                }
            }
            tx.commit().await.map_err(failed)?;
            Ok(count)
        })
    }
}

fn read_entry(row: &Row) -> Result<AuditEntry, Error> {
    let seq: i64 = row.get(0);
    let bad = |what: &str| unreadable(format!("audit entry {seq}: bad {what}"));
    let event = AuditEvent::from_name(row.get(2)).ok_or_else(|| bad("event"))?;
    let mut entry = AuditEntry::new(event, from_millis(row.get(1)), row.get::<_, String>(6));
    entry.seq = u64::try_from(seq).map_err(|_| bad("sequence number"))?;
    entry.request = row
        .get::<_, Option<&[u8]>>(3)
        .map(|b| <[u8; 16]>::try_from(b).map(RequestId::from_bytes))
        .transpose()
        .map_err(|_| bad("request id"))?;
    entry.rule = row
        .get::<_, Option<&[u8]>>(4)
        .map(|b| <[u8; 16]>::try_from(b).map(RuleId::from_bytes))
        .transpose()
        .map_err(|_| bad("rule id"))?;
    entry.args_digest = row
        .get::<_, Option<&[u8]>>(7)
        .map(|b| <[u8; 32]>::try_from(b).map(ArgsDigest::from_bytes))
        .transpose()
        .map_err(|_| bad("args digest"))?;
    entry.principal = row.get::<_, Option<&str>>(5).map(Into::into);
    entry.args = row.get::<_, Option<&str>>(8).map(Into::into);
    entry.approver = row.get::<_, Option<&str>>(9).map(Into::into);
    entry.reason = row.get::<_, Option<&str>>(10).map(Into::into);
    entry.scope = row
        .get::<_, Option<&str>>(11)
        .map(|s| s.parse::<Scope>())
        .transpose()
        .map_err(|_| bad("scope"))?;
    entry.detail = row.get::<_, Option<&str>>(12).map(Into::into);
    Ok(entry)
}

/// The store's task: renews the lease, listens for notifications, reads the change feed on each
/// and every re-scan interval, and sweeps up the requests of replicas whose lease ran out.
struct Watcher {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    instance: Arc<str>,
    options: PostgresOptions,
    /// The last change number read.
    seen: i64,
    sender: mpsc::UnboundedSender<Change>,
    /// Woken by a notification.
    wake: Arc<Notify>,
}

impl Watcher {
    async fn run(mut self) {
        /// Stops the listener when the watcher stops (aborted with the store).
        struct Listener(Option<JoinHandle<()>>);
        impl Drop for Listener {
            fn drop(&mut self) {
                if let Some(task) = &self.0 {
                    task.abort();
                }
            }
        }
        let _listener = Listener(self.options.listen.then(|| {
            tokio::spawn(listen(
                self.config.clone(),
                self.tls.clone(),
                self.wake.clone(),
                self.options.rescan,
            ))
        }));
        let mut renewed = tokio::time::Instant::now();
        // Since when this replica has reached the database without a break. It sweeps up other
        // replicas' requests only once that is a whole lease: after an outage every replica's
        // lease has run out on the database's clock, and each must have had the time to renew
        // before any calls another dead.
        let mut connected = Some(tokio::time::Instant::now());
        let mut swept = tokio::time::Instant::now();
        loop {
            let wake = self.wake.clone();
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // Sweeping is a write: once a re-scan interval, not on every notification.
            let sweep = connected.is_some_and(|since| since.elapsed() >= self.options.lease)
                && swept.elapsed() >= self.options.rescan;
            let result = self.round(&mut renewed, sweep).await;
            if sweep && result.is_ok() {
                swept = tokio::time::Instant::now();
            }
            match (&result, connected) {
                (Err(error), Some(_)) => {
                    tracing::warn!(instance = %self.instance, %error, "postgres store: cannot reach the database; retrying");
                    connected = None;
                }
                (Ok(()), None) => {
                    tracing::info!(instance = %self.instance, "postgres store: reaching the database again");
                    connected = Some(tokio::time::Instant::now());
                }
                _ => {}
            }
            if self.sender.is_closed() {
                return;
            }
            let _ = tokio::time::timeout(self.options.rescan, woken).await;
        }
    }

    /// One round: renew the lease if a third of it has passed, read the feed, and `sweep` up
    /// the requests of replicas whose lease ran out.
    async fn round(
        &mut self,
        renewed: &mut tokio::time::Instant,
        sweep: bool,
    ) -> Result<(), Error> {
        let connection = client(&self.pool).await?;
        if renewed.elapsed() >= self.options.lease / 3 {
            renew(&connection, &self.instance, self.options.lease).await?;
            *renewed = tokio::time::Instant::now();
        }
        self.read(&connection).await?;
        drop(connection);
        if !sweep {
            return Ok(());
        }
        let mut client = client(&self.pool).await?;
        let tx = client.transaction().await.map_err(failed)?;
        let abandoned = abandon(&tx, &self.instance, None, SystemTime::now()).await?;
        tx.commit().await.map_err(failed)?;
        for request in abandoned {
            tracing::warn!(request_id = %request.id, "abandoned a request of a replica whose lease ran out");
            let _ = self.sender.send(Change::Abandoned(request));
        }
        Ok(())
    }

    /// Reads the feed past the last change seen, sending on the changes other instances made.
    async fn read(&mut self, client: &Object) -> Result<(), Error> {
        let query = client
            .prepare_cached(
                "SELECT seq, origin, kind, request, status, outcome, verdict, rule, record
                 FROM tollgate_changes WHERE seq > $1 ORDER BY seq LIMIT 1000",
            )
            .await
            .map_err(failed)?;
        loop {
            let rows = client.query(&query, &[&self.seen]).await.map_err(failed)?;
            let full = rows.len() == 1000;
            for row in rows {
                self.seen = row.get(0);
                if row.get::<_, &str>(1) == &*self.instance {
                    continue;
                }
                match change_of(&row) {
                    Ok(Some(change)) => {
                        let _ = self.sender.send(change);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(seq = self.seen, %error, "postgres store: unreadable change skipped")
                    }
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}

fn change_of(row: &Row) -> Result<Option<Change>, Error> {
    let id = |i: usize| -> Result<[u8; 16], Error> {
        row.get::<_, Option<&[u8]>>(i)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| unreadable("a change without its id"))
    };
    Ok(Some(match row.get::<_, &str>(2) {
        "request" => Change::Request {
            id: RequestId::from_bytes(id(3)?),
            status: status_of(row.get::<_, Option<&str>>(4).unwrap_or(""))?,
            outcome: row
                .get::<_, Option<&str>>(5)
                .map(Outcome::from_record)
                .transpose()?,
            verdict: row.get::<_, Option<&str>>(6).map(Into::into),
        },
        "rule" => Change::RuleGranted(Rule::from_record(
            row.get::<_, Option<&str>>(8)
                .ok_or_else(|| unreadable("a rule change without its rule"))?,
        )?),
        "revoke" => Change::RuleRevoked(RuleId::from_bytes(id(7)?)),
        _ => return Ok(None),
    }))
}

/// Holds a connection that `LISTEN`s on the channel and wakes the watcher on each notification;
/// reconnects when the connection drops (each reconnect wakes the watcher too, to re-scan what
/// was missed meanwhile).
async fn listen(
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    wake: Arc<Notify>,
    retry: Duration,
) {
    loop {
        match &tls {
            Some(tls) => listen_once(&config, tls.clone(), &wake).await,
            None => listen_once(&config, NoTls, &wake).await,
        }
        wake.notify_one();
        tokio::time::sleep(retry).await;
    }
}

/// One `LISTEN` connection, until it drops.
async fn listen_once<T>(config: &tokio_postgres::Config, tls: T, wake: &Arc<Notify>)
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = match config.connect(tls).await {
        Ok(connected) => connected,
        Err(error) => {
            tracing::debug!(%error, "postgres store: cannot connect to LISTEN");
            return;
        }
    };
    // The connection carries the notifications; it must be polled for the LISTEN itself to be
    // sent, so it runs as its own task until it drops.
    let woken = wake.clone();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => woken.notify_one(),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "postgres store: LISTEN connection lost");
                    return;
                }
            }
        }
    });
    if client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .is_ok()
    {
        // Whatever was missed while not listening is read now.
        wake.notify_one();
    }
    let _ = driver.await;
}
