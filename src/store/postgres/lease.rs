//! Leases and sweeping: each instance renews its lease; at start and every re-scan, the
//! unfinished requests of instances whose lease ran out are abandoned, and what expired is
//! purged.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;

use super::queries::{live_rules, purge};
use super::writes::{FeedRow, append};
use super::{client, failed};
use crate::audit::AuditEntry;
use crate::error::Error;
use crate::request::{AccessRequest, Outcome, Status};
use crate::store::Recovered;

/// A random instance name: 16 hex digits.
pub(super) fn random_instance() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    crate::hex::lower(&bytes)
}

/// Renews `instance`'s lease for `lease` from the database's clock.
pub(super) async fn renew(
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
pub(super) async fn recover(
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
pub(super) async fn abandon(
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
