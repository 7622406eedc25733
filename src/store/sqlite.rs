//! `SqliteStore`: one SQLite file, WAL mode, every commit synced.
//!
//! Long by design: the schema, its checks and every statement stay beside the `Store` methods
//! that run them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::sql::{Param, audit_query};
use super::{Purged, Recovered, Revocation, ScopeKey, Store, StoredRequest, Transition, Write};
use crate::args::ArgsDigest;
use crate::audit::{AuditEntry, AuditEvent, AuditFilter};
use crate::boxed::BoxFuture;
use crate::error::{Error, ErrorKind};
use crate::id::{RequestId, RuleId};
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::Rule;
use crate::scope::Scope;
use crate::time::{from_millis, millis};

/// `PRAGMA application_id`: "Toll". A file with another id belongs to some other program.
const APPLICATION_ID: i64 = 0x546f_6c6c;

/// The schema, one migration a version; `PRAGMA user_version` says how many have run.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE requests (
    id          BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    status      TEXT NOT NULL,
    capability  TEXT NOT NULL,
    principal   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    record      TEXT NOT NULL,
    outcome     TEXT
) STRICT;
CREATE INDEX requests_unfinished ON requests (status)
    WHERE status IN ('pending', 'approved', 'executing');
CREATE INDEX requests_expiry ON requests (expires_at);

CREATE TABLE rules (
    id          BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    scope_key   BLOB NOT NULL UNIQUE CHECK (length(scope_key) = 32),
    capability  TEXT NOT NULL,
    granted_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    record      TEXT NOT NULL
) STRICT;
CREATE INDEX rules_expiry ON rules (expires_at);
CREATE INDEX rules_capability ON rules (capability);

CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    event       TEXT NOT NULL,
    request     BLOB,
    rule        BLOB,
    principal   TEXT,
    capability  TEXT NOT NULL,
    args_digest BLOB,
    args        TEXT,
    approver    TEXT,
    reason      TEXT,
    scope       TEXT,
    detail      TEXT
) STRICT;
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_principal ON audit (principal, seq);
CREATE INDEX audit_capability ON audit (capability, seq);
CREATE INDEX audit_request ON audit (request, seq);
CREATE INDEX audit_event ON audit (event, seq);
"#];

/// Keeps requests, rules and the audit trail in one SQLite file.
///
/// The file is opened in WAL mode with `synchronous = FULL`: a decision that `approve` reported
/// is on disk. The schema is versioned; [`open`](Self::open) creates it or migrates an older
/// one, and refuses a file that is damaged, belongs to another program, or was written by a
/// newer tollgate, with `store_unreadable`. Queries run on Tokio's blocking threads, never on the
/// async runtime's own. Clones share one connection.
///
/// A file belongs to one running gate at a time. Building a gate recovers the file, which ends
/// every unfinished request as abandoned, including those of another process still running on
/// it. Decisions stay single-winner even so (each is a conditional update in an immediate
/// transaction), but replicas that share requests need a store made for it, with
/// [`changes`](super::Store::changes).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn failed(e: rusqlite::Error) -> Error {
    Error::new(ErrorKind::StoreFailed).with_source(e)
}

fn unreadable(path: &Path, why: impl fmt::Display) -> Error {
    Error::new(ErrorKind::StoreUnreadable).with_detail(format!("{}: {why}", path.display()))
}

impl SqliteStore {
    /// Opens the database at `path`, creating it if it does not exist, and brings its schema up
    /// to date.
    ///
    /// Errors: `store_unreadable` for a file that is not a tollgate database (damaged, another
    /// program's, or newer than this version), `store_failed` if it cannot be opened or written.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(|e| {
            Error::new(ErrorKind::StoreFailed)
                .with_detail(format!("{}: cannot open", path.display()))
                .with_source(e)
        })?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(failed)?;
        // The first read of the header: a file that is not SQLite fails here.
        let (application_id, version): (i64, i64) = conn
            .query_row(
                "SELECT application_id, user_version FROM pragma_application_id, pragma_user_version",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|e| {
                unreadable(&path, "not a SQLite database, or a damaged one").with_source(e)
            })?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(|e| unreadable(&path, "cannot read the schema").with_source(e))?;
        if application_id != APPLICATION_ID && !(application_id == 0 && tables == 0) {
            return Err(unreadable(
                &path,
                "this SQLite database belongs to another program",
            ));
        }
        let latest = MIGRATIONS.len() as i64;
        if version > latest {
            return Err(unreadable(
                &path,
                format!(
                    "written by a newer tollgate (schema {version}; this version knows up to {latest})"
                ),
            ));
        }
        let check: String = conn
            .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
            .map_err(|e| unreadable(&path, "damaged").with_source(e))?;
        if check != "ok" {
            return Err(unreadable(&path, format!("damaged: {check}")));
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(failed)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::new(ErrorKind::StoreFailed).with_detail(format!(
                "{}: cannot use WAL mode (journal mode is {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(failed)?;
        let mut conn = conn;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Exclusive)
                .map_err(failed)?;
            tx.execute_batch(migration).map_err(failed)?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
                i + 1
            ))
            .map_err(failed)?;
            tx.commit().map_err(failed)?;
            tracing::info!(path = %path.display(), schema = i + 1, "store migrated");
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
            }),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` on the connection, on a blocking thread when there is a Tokio runtime.
    fn blocking<T, F>(&self, work: F) -> BoxFuture<'static, Result<T, Error>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        let inner = self.inner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Box::pin(async move {
                runtime
                    .spawn_blocking(move || work(&mut inner.conn()))
                    .await
                    .map_err(|e| Error::new(ErrorKind::StoreFailed).with_source(e))?
            }),
            Err(_) => Box::pin(std::future::ready(work(&mut inner.conn()))),
        }
    }
}

impl Inner {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn immediate(conn: &mut Connection) -> Result<Transaction<'_>, Error> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)
}

fn append(tx: &Transaction<'_>, entries: &[AuditEntry]) -> Result<(), Error> {
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO audit (at, event, request, rule, principal, capability, args_digest, args,
                                approver, reason, scope, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(failed)?;
    for e in entries {
        insert
            .execute(params![
                millis(e.at),
                e.event.as_str(),
                e.request.map(|id| id.as_bytes().to_vec()),
                e.rule.map(|id| id.as_bytes().to_vec()),
                e.principal.as_deref(),
                &*e.capability,
                e.args_digest.map(|d| d.as_bytes().to_vec()),
                e.args.as_deref(),
                e.approver.as_deref(),
                e.reason.as_deref(),
                e.scope.map(Scope::as_str),
                e.detail.as_deref(),
            ])
            .map_err(failed)?;
    }
    Ok(())
}

fn file_rule(tx: &Transaction<'_>, rule: &Rule) -> Result<(), Error> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO rules (id, scope_key, capability, granted_at, expires_at, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            rule.id.as_bytes().as_slice(),
            ScopeKey::of(rule).as_bytes().as_slice(),
            &*rule.capability,
            millis(rule.granted_at),
            millis(rule.expires_at),
            rule.to_record(),
        ])
    })
    .map_err(failed)?;
    Ok(())
}

fn read_rule(row: &Row<'_>) -> rusqlite::Result<String> {
    row.get(0)
}

fn rules_from(records: Vec<String>) -> Result<Vec<Rule>, Error> {
    records.iter().map(|r| Rule::from_record(r)).collect()
}

fn live_rules(conn: &Connection, now: SystemTime) -> Result<Vec<Rule>, Error> {
    let records = conn
        .prepare_cached("SELECT record FROM rules WHERE expires_at > ?1 ORDER BY granted_at, id")
        .and_then(|mut q| q.query_map([millis(now)], read_rule)?.collect())
        .map_err(failed)?;
    rules_from(records)
}

fn status_of(name: &str) -> Result<Status, Error> {
    Status::from_name(name).ok_or_else(|| {
        Error::new(ErrorKind::StoreUnreadable).with_detail(format!("unknown status `{name}`"))
    })
}

fn purge(tx: &Transaction<'_>, now: SystemTime) -> Result<Purged, Error> {
    let now = millis(now);
    let rules = tx
        .execute("DELETE FROM rules WHERE expires_at <= ?1", [now])
        .map_err(failed)?;
    let requests = tx
        .execute(
            "DELETE FROM requests WHERE expires_at <= ?1
               AND status NOT IN ('pending', 'approved', 'executing')",
            [now],
        )
        .map_err(failed)?;
    Ok(Purged::new(rules, requests))
}

/// A write of a batch, owned, for the blocking thread.
enum Owned {
    Insert {
        id: RequestId,
        record: String,
        capability: Arc<str>,
        principal: Arc<str>,
        created: i64,
        expires: i64,
        audit: Vec<AuditEntry>,
    },
    Transition(Transition),
    Append(Vec<AuditEntry>),
}

impl Owned {
    fn of(write: &Write<'_>) -> Self {
        match *write {
            Write::Insert(request, audit) => Owned::insert(request, audit),
            Write::Transition(change) => Owned::Transition(change.clone()),
            Write::Append(audit) => Owned::Append(audit.to_vec()),
        }
    }

    fn insert(request: &AccessRequest, audit: &[AuditEntry]) -> Self {
        Owned::Insert {
            id: request.id,
            record: request.to_record(),
            capability: request.capability.clone(),
            principal: request.principal.clone(),
            created: millis(request.created_at()),
            expires: millis(request.expires_at()),
            audit: audit.to_vec(),
        }
    }

    /// Writes it in `tx`: whether a transition applied (one that did not wrote nothing).
    fn apply(&self, tx: &Transaction<'_>) -> Result<bool, Error> {
        match self {
            Owned::Insert {
                id,
                record,
                capability,
                principal,
                created,
                expires,
                audit,
            } => {
                tx.prepare_cached(
                    "INSERT INTO requests (id, status, capability, principal, created_at, expires_at, record)
                     VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut insert| {
                    insert.execute(params![
                        id.as_bytes().as_slice(),
                        &**capability,
                        &**principal,
                        created,
                        expires,
                        record
                    ])
                })
                .map_err(failed)?;
                append(tx, audit)?;
            }
            Owned::Transition(change) => {
                let updated = tx
                    .prepare_cached(
                        "UPDATE requests SET status = ?1, outcome = coalesce(?2, outcome)
                         WHERE id = ?3 AND status = ?4",
                    )
                    .and_then(|mut update| {
                        update.execute(params![
                            change.to.as_str(),
                            change.outcome.as_ref().map(Outcome::to_record),
                            change.id.as_bytes().as_slice(),
                            change.from.as_str(),
                        ])
                    })
                    .map_err(failed)?;
                if updated == 0 {
                    return Ok(false);
                }
                if let Some(rule) = &change.rule {
                    file_rule(tx, rule)?;
                }
                append(tx, &change.audit)?;
            }
            Owned::Append(audit) => append(tx, audit)?,
        }
        Ok(true)
    }
}

/// One write in a transaction of its own.
fn alone(conn: &mut Connection, write: &Owned) -> Result<bool, Error> {
    let tx = immediate(conn)?;
    let applied = write.apply(&tx)?;
    tx.commit().map_err(failed)?;
    Ok(applied)
}

/// Writes in one transaction, committed with one sync. If one fails, the transaction is rolled
/// back and each is written in a transaction of its own, so that it alone fails.
fn together(conn: &mut Connection, writes: &[Owned]) -> Vec<Result<bool, Error>> {
    let batch = immediate(conn).and_then(|tx| {
        let applied = writes
            .iter()
            .map(|write| write.apply(&tx))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().map_err(failed)?;
        Ok(applied)
    });
    match batch {
        Ok(applied) => applied.into_iter().map(Ok).collect(),
        Err(error) => {
            tracing::debug!(%error, writes = writes.len(), "a batch failed; writing each alone");
            writes.iter().map(|write| alone(conn, write)).collect()
        }
    }
}

impl Store for SqliteStore {
    fn recover(&self, now: SystemTime) -> Result<Recovered, Error> {
        let mut conn = self.inner.conn();
        let tx = immediate(&mut conn)?;
        let records: Vec<String> = tx
            .prepare(
                "SELECT record FROM requests WHERE status IN ('pending', 'approved', 'executing')
                 ORDER BY created_at",
            )
            .and_then(|mut q| q.query_map([], |row| row.get(0))?.collect())
            .map_err(failed)?;
        let abandoned = records
            .iter()
            .map(|r| AccessRequest::from_record(r))
            .collect::<Result<Vec<_>, _>>()?;
        tx.execute(
            "UPDATE requests SET status = 'abandoned', outcome = coalesce(outcome, ?1)
             WHERE status IN ('pending', 'approved', 'executing')",
            [Outcome::Abandoned.to_record()],
        )
        .map_err(failed)?;
        let entries: Vec<AuditEntry> = abandoned
            .iter()
            .map(|r| AuditEntry::abandoned(r, now))
            .collect();
        append(&tx, &entries)?;
        purge(&tx, now)?;
        let rules = live_rules(&tx, now)?;
        tx.commit().map_err(failed)?;
        Ok(Recovered::new(rules, abandoned))
    }

    fn insert<'a>(
        &'a self,
        request: &'a AccessRequest,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>> {
        let write = Owned::insert(request, audit);
        self.blocking(move |conn| alone(conn, &write).map(drop))
    }

    fn transition<'a>(&'a self, change: &'a Transition) -> BoxFuture<'a, Result<bool, Error>> {
        let write = Owned::Transition(change.clone());
        self.blocking(move |conn| alone(conn, &write))
    }

    fn append<'a>(&'a self, audit: &'a [AuditEntry]) -> BoxFuture<'a, Result<(), Error>> {
        let write = Owned::Append(audit.to_vec());
        self.blocking(move |conn| alone(conn, &write).map(drop))
    }

    fn write_batch<'a>(
        &'a self,
        writes: &'a [Write<'a>],
    ) -> BoxFuture<'a, Vec<Result<bool, Error>>> {
        let writes: Vec<Owned> = writes.iter().map(Owned::of).collect();
        let count = writes.len();
        let batch = self.blocking(move |conn| Ok(together(conn, &writes)));
        Box::pin(async move {
            batch.await.unwrap_or_else(|error| {
                let detail = error.to_string();
                (0..count)
                    .map(|_| Err(Error::new(ErrorKind::StoreFailed).with_detail(detail.clone())))
                    .collect()
            })
        })
    }

    fn request(&self, id: RequestId) -> BoxFuture<'_, Result<Option<StoredRequest>, Error>> {
        self.blocking(move |conn| {
            let row: Option<(String, String, Option<String>)> = conn
                .prepare_cached("SELECT record, status, outcome FROM requests WHERE id = ?1")
                .and_then(|mut q| {
                    q.query_row([id.as_bytes().as_slice()], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()
                })
                .map_err(failed)?;
            let Some((record, status, outcome)) = row else {
                return Ok(None);
            };
            let outcome = outcome.as_deref().map(Outcome::from_record).transpose()?;
            Ok(Some(StoredRequest::new(
                AccessRequest::from_record(&record)?,
                status_of(&status)?,
                outcome,
            )))
        })
    }

    fn covering<'a>(
        &'a self,
        keys: &'a [ScopeKey],
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Rule>, Error>> {
        let keys = keys.to_vec();
        self.blocking(move |conn| {
            let mut lookup = conn
                .prepare_cached("SELECT record FROM rules WHERE scope_key = ?1 AND expires_at > ?2")
                .map_err(failed)?;
            let mut records = Vec::new();
            for key in &keys {
                let found: Option<String> = lookup
                    .query_row(params![key.as_bytes().as_slice(), millis(now)], read_rule)
                    .optional()
                    .map_err(failed)?;
                records.extend(found);
            }
            rules_from(records)
        })
    }

    fn rules(&self, now: SystemTime) -> BoxFuture<'_, Result<Vec<Rule>, Error>> {
        self.blocking(move |conn| live_rules(conn, now))
    }

    fn revoke<'a>(
        &'a self,
        which: &'a Revocation,
        by: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Rule>, Error>> {
        let (which, by) = (which.clone(), by.to_owned());
        self.blocking(move |conn| {
            let tx = immediate(conn)?;
            let (filter, param): (&str, SqlValue) = match &which {
                Revocation::Rule(id) => ("id = ?1", SqlValue::Blob(id.as_bytes().to_vec())),
                Revocation::Capability(c) => ("capability = ?1", SqlValue::Text(c.to_string())),
                Revocation::All => ("?1 IS NULL", SqlValue::Null),
            };
            let records: Vec<String> = tx
                .prepare(&format!(
                    "DELETE FROM rules WHERE {filter} RETURNING record"
                ))
                .and_then(|mut q| q.query_map([param], read_rule)?.collect())
                .map_err(failed)?;
            let mut removed = rules_from(records)?;
            removed.sort_by_key(|r| (r.granted_at, r.id));
            let entries: Vec<AuditEntry> = removed
                .iter()
                .map(|r| AuditEntry::rule_revoked(r, &by, at))
                .collect();
            append(&tx, &entries)?;
            tx.commit().map_err(failed)?;
            Ok(removed)
        })
    }

    fn purge(&self, now: SystemTime) -> BoxFuture<'_, Result<Purged, Error>> {
        self.blocking(move |conn| {
            let tx = immediate(conn)?;
            let purged = purge(&tx, now)?;
            tx.commit().map_err(failed)?;
            Ok(purged)
        })
    }

    fn audit<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, Error>> {
        let filter = filter.clone();
        self.blocking(move |conn| {
            let (sql, values) = audit_query(&filter, "audit", |n| format!("?{n}"));
            let values = values.into_iter().map(|value| match value {
                Param::Int(n) => SqlValue::Integer(n),
                Param::Text(text) => SqlValue::Text(text),
                Param::Bytes(bytes) => SqlValue::Blob(bytes),
            });
            let mut query = conn.prepare_cached(&sql).map_err(failed)?;
            let rows = query
                .query_map(rusqlite::params_from_iter(values), read_entry)
                .map_err(failed)?;
            rows.map(|row| row.map_err(failed)?).collect()
        })
    }
}

type EntryRow = Result<AuditEntry, Error>;

fn read_entry(row: &Row<'_>) -> rusqlite::Result<EntryRow> {
    let text = |i: usize| row.get::<_, Option<String>>(i);
    let bytes = |i: usize| row.get::<_, Option<Vec<u8>>>(i);
    let event: String = row.get(2)?;
    let seq: i64 = row.get(0)?;
    let at: i64 = row.get(1)?;
    let capability: String = row.get(6)?;
    let (request, rule, digest) = (bytes(3)?, bytes(4)?, bytes(7)?);
    let (principal, args, approver, reason, scope, detail) = (
        text(5)?,
        text(8)?,
        text(9)?,
        text(10)?,
        text(11)?,
        text(12)?,
    );
    Ok((|| {
        let bad = |what: &str| {
            Error::new(ErrorKind::StoreUnreadable)
                .with_detail(format!("audit entry {seq}: bad {what}"))
        };
        let event = AuditEvent::from_name(&event).ok_or_else(|| bad("event"))?;
        let mut entry = AuditEntry::new(event, from_millis(at), capability);
        entry.seq = u64::try_from(seq).map_err(|_| bad("sequence number"))?;
        entry.request = request
            .map(|b| <[u8; 16]>::try_from(b).map(RequestId::from_bytes))
            .transpose()
            .map_err(|_| bad("request id"))?;
        entry.rule = rule
            .map(|b| <[u8; 16]>::try_from(b).map(RuleId::from_bytes))
            .transpose()
            .map_err(|_| bad("rule id"))?;
        entry.args_digest = digest
            .map(|b| <[u8; 32]>::try_from(b).map(ArgsDigest::from_bytes))
            .transpose()
            .map_err(|_| bad("args digest"))?;
        entry.principal = principal.map(Into::into);
        entry.args = args.map(String::into_boxed_str);
        entry.approver = approver.map(Into::into);
        entry.reason = reason.map(Into::into);
        entry.scope = scope
            .map(|s| s.parse::<Scope>())
            .transpose()
            .map_err(|_| bad("scope"))?;
        entry.detail = detail.map(String::into_boxed_str);
        Ok(entry)
    })())
}
