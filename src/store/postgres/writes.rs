//! The writes of one transaction: requests filed, moved on, rules filed, audit entries, each
//! with its row of the change feed.

use super::failed;
use crate::audit::AuditEntry;
use crate::error::{Error, ErrorKind};
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::Rule;
use crate::scope::Scope;
use crate::store::{ScopeKey, Transition, Write};
use crate::time::millis;

/// The channel `NOTIFY` wakes replicas on.
pub(super) const CHANNEL: &str = "tollgate_changes";

/// One row of the change feed.
#[derive(Default)]
pub(super) struct FeedRow<'a> {
    pub(super) kind: &'a str,
    pub(super) request: Option<&'a [u8; 16]>,
    pub(super) status: Option<&'a str>,
    pub(super) outcome: Option<&'a str>,
    pub(super) verdict: Option<&'a str>,
    pub(super) rule: Option<&'a [u8; 16]>,
    pub(super) record: Option<&'a str>,
}

impl FeedRow<'_> {
    /// Appends the row under the next number of the clock, whose row lock this transaction then
    /// holds until it ends, and wakes the listeners when it commits: one statement, one round
    /// trip.
    pub(super) async fn append(
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

pub(super) async fn append(
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
pub(super) enum Unkept {
    /// A write failed, or no transaction began: nothing was kept.
    Before(Error),
    /// The commit failed: it may have taken or not.
    Commit(Error),
}

/// What identical calls share across replicas, the key of the pending requests they join: a
/// digest of (principal, session, capability, args digest), each text length-prefixed.
pub(super) fn fingerprint(request: &AccessRequest) -> [u8; 32] {
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
pub(super) async fn file(
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
pub(super) async fn write_in(
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
pub(super) async fn transition(
    tx: &deadpool_postgres::Transaction<'_>,
    origin: &str,
    change: &Transition,
) -> Result<bool, Error> {
    let update = tx
        .prepare_cached(
            "UPDATE tollgate_requests
             SET status = $1, outcome = coalesce($2, outcome), verdict = coalesce($3, verdict)
             WHERE id = $4 AND status = $5 AND ($6::text[] IS NULL OR tickets = $6::text[])
             RETURNING verdict",
        )
        .await
        .map_err(failed)?;
    let outcome = change.outcome.as_ref().map(Outcome::to_record);
    let tickets: Option<Vec<&str>> = change
        .tickets()
        .map(|tickets| tickets.iter().map(|t| &**t).collect());
    let updated = tx
        .query_opt(
            &update,
            &[
                &change.to.as_str(),
                &outcome,
                &change.verdict(),
                &&change.id.as_bytes()[..],
                &change.from.as_str(),
                &tickets,
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
pub(super) async fn file_rule(
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
