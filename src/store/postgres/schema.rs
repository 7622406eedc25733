//! The schema, one migration a version, brought up to date under an advisory lock.

use deadpool_postgres::Pool;

use super::{client, failed, unreadable};
use crate::error::Error;

/// The key of the advisory lock migrations run under, so replicas starting together take turns.
pub(super) const MIGRATION_LOCK: i64 = 0x546f_6c6c_6761_7465; // "Tollgate"

/// The schema, one migration a version; `tollgate_schema` says how many have run.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // The replicas whose callers joined a request: it lives while one of them still waits, and
    // passes to one of them when the last caller of the replica holding it leaves (`handed`: the
    // owner holds it through callers that joined it, not the request it filed). Each join's
    // ticket: an approval binds those present when it is stored, so that an old approval
    // replayed runs no caller that joined after it.
    r#"
ALTER TABLE tollgate_requests ADD COLUMN followers TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE tollgate_requests ADD COLUMN tickets TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE tollgate_requests ADD COLUMN handed BOOLEAN NOT NULL DEFAULT false;
"#,
];

/// Creates the schema or brings it up to date, under the advisory lock.
pub(super) async fn migrate(pool: &Pool) -> Result<(), Error> {
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
