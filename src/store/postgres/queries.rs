//! The `Store` methods: each one statement or one transaction over the tables.

use std::sync::{Arc, PoisonError};

use std::time::SystemTime;
use tokio::sync::mpsc;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::handover::leave;
use super::writes::{FeedRow, Unkept, append, file, fingerprint, transition};
use super::{PostgresStore, failed, status_of, unreadable};
use crate::args::ArgsDigest;
use crate::audit::{AuditEntry, AuditEvent, AuditFilter};
use crate::boxed::BoxFuture;
use crate::error::{Error, ErrorKind};
use crate::id::{RequestId, RuleId};
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::Rule;
use crate::scope::Scope;
use crate::store::sql::{Param, audit_query};
use crate::store::{
    Change, Left, Purged, Recovered, Revocation, ScopeKey, Store, StoredRequest, Transition, Write,
};
use crate::time::{from_millis, millis};

/// The tickets in column `i` of `row`.
fn tickets_of(row: &Row, i: usize) -> Vec<Arc<str>> {
    row.get::<_, Vec<&str>>(i)
        .into_iter()
        .map(Into::into)
        .collect()
}

pub(super) fn rules_from(rows: Vec<Row>) -> Result<Vec<Rule>, Error> {
    rows.iter()
        .map(|row| Rule::from_record(row.get(0)))
        .collect()
}

pub(super) async fn live_rules(
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
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(failed)?;
            let print = fingerprint(request);
            if !file(&tx, &self.inner.instance, request, None, &print).await? {
                return Err(Error::new(ErrorKind::StoreFailed)
                    .with_detail("an identical request is pending"));
            }
            append(&tx, audit).await?;
            tx.commit().await.map_err(failed)
        })
    }

    fn insert_or_join<'a>(
        &'a self,
        request: &'a AccessRequest,
        seal: &'a str,
        ticket: &'a str,
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
                // Joined: this replica follows it from now on, so that it lives while a caller
                // waits here.
                let pending = tx
                    .query_opt(
                        "UPDATE tollgate_requests
                         SET followers = CASE WHEN $2 = ANY(followers) THEN followers
                                              ELSE array_append(followers, $2) END,
                             tickets = array_append(tickets, $3)
                         WHERE fingerprint = $1 AND status = 'pending'
                         RETURNING record, seal, tickets",
                        &[&&fingerprint[..], &&*self.inner.instance, &ticket],
                    )
                    .await
                    .map_err(failed)?;
                if let Some(row) = pending {
                    let request = AccessRequest::from_record(row.get(0))?;
                    let stored = StoredRequest::new(request, Status::Pending, None);
                    let stored = stored
                        .with_seal(row.get::<_, Option<&str>>(1).map(Into::into))
                        .with_tickets(tickets_of(&row, 2));
                    tx.commit().await.map_err(failed)?;
                    return Ok(Some(stored));
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

    fn leave<'a>(
        &'a self,
        cancel: &'a Transition,
        holding: bool,
    ) -> BoxFuture<'a, Result<Left, Error>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(failed)?;
            let left = leave(&tx, &self.inner.instance, cancel, holding).await?;
            tx.commit().await.map_err(failed)?;
            Ok(left)
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
                    "SELECT record, status, outcome, verdict, seal, tickets FROM tollgate_requests
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
                    .with_seal(row.get::<_, Option<&str>>(4).map(Into::into))
                    .with_tickets(tickets_of(&row, 5)),
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

pub(super) fn read_entry(row: &Row) -> Result<AuditEntry, Error> {
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

/// How long the change feed keeps a change: a replica cut off from the database for longer
/// misses it (and so, say, a revocation), so keep this well above any outage you ride out.
pub(super) const CHANGES_KEPT: &str = "1 hour";

pub(super) async fn purge(
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
