//! What someone who can write the shared database cannot do: make a replica run a call nobody
//! approved.

use std::time::Duration;

use serde_json::Value;
use tollgate::store::{AuditEvent, AuditFilter};
use tollgate::{Approve, Deny, Scope};
use tower::{Layer, ServiceExt};

use super::pair_on;
use crate::support::postgres::url;
use crate::support::{Tools, code, policy, refund};

async fn sql(gate_db: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(gate_db), tokio_postgres::NoTls)
        .await
        .expect("connect as the database writer");
    tokio::spawn(connection);
    client
}

/// The row of request `id`: (fingerprint, record, outcome, verdict).
async fn row(
    db: &tokio_postgres::Client,
    id: &[u8],
) -> (Vec<u8>, String, Option<String>, Option<String>) {
    let row = db
        .query_one(
            "SELECT fingerprint, record, outcome, verdict FROM tollgate_requests WHERE id = $1",
            &[&id],
        )
        .await
        .expect("the request's row");
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// The writer diverts request `id`'s rows of the change feed into a table of its own.
async fn hold(db: &tokio_postgres::Client, id: tollgate::RequestId) {
    let hex: String = id.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    db.batch_execute(&format!(
        "CREATE TABLE held AS SELECT * FROM tollgate_changes WITH NO DATA;
         CREATE FUNCTION hold() RETURNS trigger AS $$ BEGIN
             IF NEW.request = '\\x{hex}'::bytea THEN
                 INSERT INTO held SELECT NEW.*; NEW.kind := 'held';
             END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER hold BEFORE INSERT ON tollgate_changes
             FOR EACH ROW EXECUTE FUNCTION hold();"
    ))
    .await
    .unwrap();
}

/// The writer lets the rows [`hold`] diverted through, under new numbers.
async fn release(db: &tokio_postgres::Client) {
    db.batch_execute(
        "DROP TRIGGER hold ON tollgate_changes;
         INSERT INTO tollgate_changes (seq, origin, kind, request, status, outcome, verdict, rule, record)
           SELECT (SELECT seq FROM tollgate_clock) + row_number() OVER (ORDER BY seq),
                  origin, kind, request, status, outcome, verdict, rule, record FROM held;
         UPDATE tollgate_clock SET seq = (SELECT max(seq) FROM tollgate_changes);
         SELECT pg_notify('tollgate_changes', '');",
    )
    .await
    .unwrap();
}

/// The writer appends a denial of request `id` to the change feed: once a caller hears it,
/// its replica has read every row before it.
async fn forged_denial(db: &tokio_postgres::Client, id: tollgate::RequestId) {
    db.execute(
        "WITH c AS (UPDATE tollgate_clock SET seq = seq + 1 RETURNING seq)
         INSERT INTO tollgate_changes (seq, origin, kind, request, status, outcome)
         SELECT c.seq, 'a', 'request', $1, 'denied', $2 FROM c",
        &[&id_bytes(id), &r#"{"outcome":"denied","approver":"alice"}"#],
    )
    .await
    .unwrap();
    db.execute("SELECT pg_notify('tollgate_changes', '')", &[])
        .await
        .unwrap();
}

/// The writer appends to the change feed request `id` being taken, with `verdict`.
async fn replay_taken(
    db: &tokio_postgres::Client,
    id: tollgate::RequestId,
    outcome: &Option<String>,
    verdict: &Option<String>,
) {
    db.execute(
        "WITH c AS (UPDATE tollgate_clock SET seq = seq + 1 RETURNING seq)
         INSERT INTO tollgate_changes (seq, origin, kind, request, status, outcome, verdict)
         SELECT c.seq, 'a', 'request', $1, 'executing', $2, $3 FROM c",
        &[&id_bytes(id), outcome, verdict],
    )
    .await
    .unwrap();
    db.execute("SELECT pg_notify('tollgate_changes', '')", &[])
        .await
        .unwrap();
}

/// Whether `call` on replica `b` joined a request there (or ended) within ten seconds.
async fn joined_or_ended<T>(b: &tollgate::Gate, call: &tokio::task::JoinHandle<T>) -> bool {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !(call.is_finished() || b.stats().following == 1) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .is_ok()
}

fn id_bytes(id: tollgate::RequestId) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// An old approval of one call, its row set back to pending with another call's fingerprint and
/// record, and its genuine verdict replayed on the change feed: the other call, made on another
/// replica, joins nothing it should not, and never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_verdict_cannot_run_another_call_joined_to_its_rewritten_row() {
    let (a, alerts_a, b, _, name) = pair_on("forged_join", true).await;
    let db = sql(&name).await;
    let tools = Tools::default();
    let on_a = a.layer(policy(Scope::Once)).layer(tools.clone());
    let on_b = b.layer(policy(Scope::Once)).layer(tools.clone());

    // A harmless call, approved and run on A: its row keeps a genuine verdict.
    let small = tokio::spawn(on_a.clone().oneshot(refund(7)));
    let alert = alerts_a.next_alert().await;
    let old = alert.request().id();
    a.approve(Approve::new(old, alert.code().reveal()).by("alice"))
        .await
        .expect("approved");
    small.await.unwrap().expect("ran");
    let (_, old_record, outcome, verdict) = row(&db, &id_bytes(old)).await;
    assert!(
        verdict.is_some(),
        "an approval on a shared store keeps its verdict"
    );

    // The dangerous call's fingerprint and record, from a request of its own, denied.
    let big = tokio::spawn(on_a.oneshot(refund(9_000)));
    let alert = alerts_a.next_alert().await;
    let denied = alert.request().id();
    a.deny(Deny::new(denied, alert.code().reveal()).by("alice"))
        .await
        .expect("denied");
    assert_eq!(
        code(&big.await.unwrap().unwrap_err()),
        "access_request_denied"
    );
    let (fingerprint, record, _, _) = row(&db, &id_bytes(denied)).await;

    // The writer turns the old approved row into a pending request for the dangerous call.
    let mut forged: Value = serde_json::from_str(&record).unwrap();
    let old_json: Value = serde_json::from_str(&old_record).unwrap();
    forged["id"] = old_json["id"].clone();
    let updated = db
        .execute(
            "UPDATE tollgate_requests SET status = 'pending', fingerprint = $1, record = $2,
                 outcome = NULL, expires_at = $3 WHERE id = $4",
            &[
                &fingerprint,
                &forged.to_string(),
                &forged["expires_at_ms"].as_i64().unwrap(),
                &id_bytes(old),
            ],
        )
        .await
        .unwrap();
    assert_eq!(updated, 1);

    // The dangerous call on B meets the rewritten row.
    let payout = tokio::spawn(on_b.oneshot(refund(9_000)));
    assert!(
        joined_or_ended(&b, &payout).await,
        "the call neither joined nor was refused"
    );

    // The writer replays the old request's genuine verdict as its being taken.
    replay_taken(&db, old, &outcome, &verdict).await;

    let ended = tokio::time::timeout(Duration::from_secs(10), payout)
        .await
        .expect("the call on B ended");
    let error = ended.unwrap().expect_err("the forged call must not run");
    assert_eq!(code(&error), "store_failed");
    assert_eq!(
        tools.total(),
        1,
        "only the approved call ran: {:?}",
        tools.take()
    );
    let rejected = b
        .audit(AuditFilter::new().event(AuditEvent::from_name("request_rejected").unwrap()))
        .await
        .unwrap();
    assert_eq!(
        rejected.len(),
        1,
        "the rewritten row is audited: {rejected:?}"
    );
    assert_eq!(rejected[0].request, Some(old));
}

/// An old approval of a call, its row set back to pending and its genuine verdict replayed on
/// the change feed: the very same call, made again on another replica and joined to the row,
/// does not run on the old approval (a verdict binds the callers that had joined when it was
/// made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_verdict_replayed_runs_no_repeat_of_its_call() {
    let (a, alerts_a, b, _, name) = pair_on("replayed", true).await;
    let db = sql(&name).await;
    let tools = Tools::default();
    let on_a = a.layer(policy(Scope::Once)).layer(tools.clone());
    let on_b = b.layer(policy(Scope::Once)).layer(tools.clone());

    let first = tokio::spawn(on_a.oneshot(refund(12)));
    let alert = alerts_a.next_alert().await;
    let old = alert.request().id();
    a.approve(Approve::new(old, alert.code().reveal()).by("alice"))
        .await
        .expect("approved");
    first.await.unwrap().expect("ran");
    let (_, _, outcome, verdict) = row(&db, &id_bytes(old)).await;

    // The writer sets the approved row back to pending.
    let updated = db
        .execute(
            "UPDATE tollgate_requests SET status = 'pending', outcome = NULL WHERE id = $1",
            &[&id_bytes(old)],
        )
        .await
        .unwrap();
    assert_eq!(updated, 1);

    // The same call again, on B, joins the row.
    let again = tokio::spawn(on_b.oneshot(refund(12)));
    assert!(
        joined_or_ended(&b, &again).await && !again.is_finished(),
        "the call joined the row"
    );

    // The writer replays the old verdict as the request being taken, then a denial after it
    // on the feed: once B's caller hears the denial, B has read the replay.
    replay_taken(&db, old, &outcome, &verdict).await;
    forged_denial(&db, old).await;

    let ended = tokio::time::timeout(Duration::from_secs(10), again)
        .await
        .expect("the call on B ended");
    let error = ended.unwrap().expect_err("the repeat must not run");
    assert_eq!(code(&error), "access_request_denied");
    assert_eq!(tools.total(), 1, "the approved call ran once");
}

/// A call on A approved once, with an identical call on B joined to it, whose feed rows the
/// writer holds back from before the approval: B has not heard of it.
struct Held {
    b: tollgate::Gate,
    alerts_b: tollgate::notify::RecordingNotifier,
    db: tokio_postgres::Client,
    tools: Tools,
    on_b: tollgate::RequireApproval<Tools, tollgate::policy::CapabilityTable>,
    id: tollgate::RequestId,
    /// B's caller, joined before the approval.
    joined: tokio::task::JoinHandle<Result<String, tollgate::BoxError>>,
}

async fn approved_while_held(name: &str, amount: u64) -> Held {
    let (a, alerts_a, b, alerts_b, name) = pair_on(name, true).await;
    let db = sql(&name).await;
    let tools = Tools::default();
    let on_a = a.layer(policy(Scope::Once)).layer(tools.clone());
    let on_b = b.layer(policy(Scope::Once)).layer(tools.clone());
    let first = tokio::spawn(on_a.oneshot(refund(amount)));
    let alert = alerts_a.next_alert().await;
    let id = alert.request().id();
    let joined = tokio::spawn(on_b.clone().oneshot(refund(amount)));
    crate::support::within(Duration::from_secs(10), || b.stats().following == 1).await;
    hold(&db, id).await;
    a.approve(Approve::new(id, alert.code().reveal()).by("alice"))
        .await
        .expect("approved, once");
    first.await.unwrap().expect("the caller on A ran");
    Held {
        b,
        alerts_b,
        db,
        tools,
        on_b,
        id,
        joined,
    }
}

/// A follower that has not heard of an approval (its feed rows held back by the database
/// writer, as a replica cut off would not hear them) lets no later identical call attach to the
/// callers that joined: the later call joins through the store with a ticket of its own, and
/// runs on no verdict stored before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_after_an_approval_was_stored_does_not_run_on_it() {
    let held = approved_while_held("held_feed", 55).await;
    // After the approval was stored and taken, the same call again on B: a request of its own.
    let later = tokio::spawn(held.on_b.oneshot(refund(55)));
    let alerted = tokio::time::timeout(Duration::from_secs(10), held.alerts_b.next_alert())
        .await
        .expect("the later call made a request of its own");
    assert_ne!(alerted.request().id(), held.id);

    // The writer lets the held rows through.
    release(&held.db).await;
    let joined = tokio::time::timeout(Duration::from_secs(10), held.joined)
        .await
        .expect("B's first caller heard the approval");
    assert!(
        joined.unwrap().is_ok(),
        "joined before the approval: it runs"
    );
    assert!(
        !later.is_finished(),
        "the later call waits on its own request"
    );
    later.abort();
    assert_eq!(held.tools.total(), 2);
}

/// A verdict stored after one caller on B joined, held back, and replayed once the writer set
/// the row back to pending and a second identical call on B joined it: the second call does
/// not run on it (nor, since the replica cannot tell them apart on the feed, the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_verdict_runs_no_call_that_joined_after_it() {
    let held = approved_while_held("mixed_tickets", 56).await;
    // The writer sets the row back to pending; the same call again on B joins it.
    held.db
        .execute(
            "UPDATE tollgate_requests SET status = 'pending', outcome = NULL WHERE id = $1",
            &[&id_bytes(held.id)],
        )
        .await
        .unwrap();
    let later = tokio::spawn(held.on_b.oneshot(refund(56)));
    let b = &held.b;
    crate::support::within(Duration::from_secs(10), || b.stats().following == 2).await;
    release(&held.db).await;
    forged_denial(&held.db, held.id).await;
    for (caller, which) in [(held.joined, "first"), (later, "later")] {
        let ended = tokio::time::timeout(Duration::from_secs(10), caller)
            .await
            .unwrap_or_else(|_| panic!("the {which} caller on B still waits"));
        assert_eq!(
            code(&ended.unwrap().expect_err("no run on the held verdict")),
            "access_request_denied",
            "the {which} caller on B"
        );
    }
    assert_eq!(held.tools.total(), 1, "only the caller on A ran");
}

/// On the replica holding a request, which has not heard of an approval made on another
/// replica (its feed rows held back by the database writer), a later identical call does not
/// attach to the request there: it joins through the store, with a ticket of its own, and runs
/// on no verdict stored before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_the_holder_made_after_an_approval_elsewhere_does_not_run_on_it() {
    let (a, alerts_a, b, _, name) = pair_on("held_holder", true).await;
    let db = sql(&name).await;
    let tools = Tools::default();
    let on_a = a.layer(policy(Scope::Once)).layer(tools.clone());
    let first = tokio::spawn(on_a.clone().oneshot(refund(57)));
    let alert = alerts_a.next_alert().await;
    let id = alert.request().id();
    hold(&db, id).await;
    // Approved on B: stored, but A does not hear of it yet.
    let approval = tokio::spawn({
        let code = alert.code().reveal().to_owned();
        async move { b.approve(Approve::new(id, code).by("alice")).await }
    });
    let approved = tokio::time::timeout(Duration::from_secs(10), async {
        while row(&db, &id_bytes(id)).await.2.is_none() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(approved.is_ok(), "the approval was stored");
    // The same call again on A, after the approval was stored: a request of its own.
    let later = tokio::spawn(on_a.oneshot(refund(57)));
    let alerted = tokio::time::timeout(Duration::from_secs(10), alerts_a.next_alert())
        .await
        .expect("the later call made a request of its own");
    assert_ne!(alerted.request().id(), id);
    release(&db).await;
    let ran = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("A's first caller heard the approval");
    assert!(ran.unwrap().is_ok(), "made before the approval: it runs");
    approval.await.unwrap().expect("the approver hears it ran");
    assert!(
        !later.is_finished(),
        "the later call waits on its own request"
    );
    later.abort();
    assert_eq!(tools.total(), 1);
}
