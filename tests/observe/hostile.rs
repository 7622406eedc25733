//! Observe mode against hostile callers and approvers: a record that differs from what the
//! enforced policy would have done, an observed side that would loosen an enforced one, log
//! lines forged through the record, and records that would crowd people's decisions out of the
//! audit trail.

use std::time::Duration;

use serde_json::json;
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, CapabilityTable, observe};
use tollgate::store::{AuditEvent, AuditFilter};
use tollgate::{Scope, ToolCall};
use tower::{Layer, ServiceExt};

use crate::support::{Tools, capture_logs, code, gate};
use crate::{approve_next, observed as entries};

fn refunds(require_reason: bool) -> CapabilityTable {
    let mut ask = Ask::new("refunds move money")
        .max_scope(Scope::Capability)
        .max_rule_ttl(Duration::from_secs(3600));
    if require_reason {
        ask = ask.require_reason();
    }
    CapabilityTable::new().ask("payments.refund", ask)
}

fn refund(reason: Option<&str>) -> ToolCall {
    let call = ToolCall::new("payments.refund", json!({"charge": "ch_1", "amount": 5}))
        .principal("agent-7");
    match reason {
        Some(r) => call.reason(r),
        None => call,
    }
}

/// Enforced, a call without a reason under `require_reason` is refused `reason_required`
/// before any standing rule is consulted. Observed, a standing rule makes it run unrecorded:
/// the week of `observed` entries never shows that enforcing would refuse it.
#[tokio::test]
async fn an_observed_call_a_rule_covers_is_recorded_when_enforcing_would_refuse_it() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let tools = Tools::default();
    let enforced = gate.layer(refunds(true)).layer(tools.clone());
    // A capability approval, made on a call that gave its reason.
    let parked = tokio::spawn(enforced.clone().oneshot(refund(Some("ticket #1"))));
    approve_next(&gate, &alerts, Scope::Capability).await;
    parked.await.unwrap().unwrap();

    // Enforced: no reason, refused, rule or not.
    let refused = enforced.clone().oneshot(refund(None)).await.unwrap_err();
    assert_eq!(code(&refused), "reason_required");

    // Observed: it runs (as it should) but must be recorded as a would-be refusal.
    let watched = gate.layer(observe(refunds(true))).layer(tools.clone());
    watched.oneshot(refund(None)).await.unwrap();
    let observed = entries(&gate).await;
    assert_eq!(
        observed.len(),
        1,
        "enforced, this call is refused reason_required; observed, it ran unrecorded: {observed:?}"
    );
}

/// The observe log line puts `detail` in the message unescaped; a remembered denial's reason is
/// text an approver typed, and its line break starts a new, forged, log line.
#[tokio::test]
async fn an_approvers_reason_cannot_forge_a_line_of_the_observe_log() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let tools = Tools::default();
    let enforced = gate.layer(refunds(false)).layer(tools.clone());
    let parked = tokio::spawn(enforced.oneshot(refund(Some("ticket"))));
    let alert = alerts.next_alert().await;
    let c = alert.code().reveal().to_owned();
    gate.deny(
        tollgate::Deny::new(alert.request().id(), c)
            .remember(Scope::Value)
            .reason("no\n2026-12-08T00:00:00Z  INFO approved by alice")
            .by("alice"),
    )
    .await
    .unwrap();
    assert!(parked.await.unwrap().is_err());
    let watched = gate.layer(observe(refunds(false))).layer(tools);
    let (logs, _guard) = capture_logs();
    watched.oneshot(refund(Some("ticket"))).await.unwrap();
    let text = logs.text();
    assert!(
        !text.lines().any(|l| l.starts_with("2026-12-08T00:00:00Z")),
        "a reason's line break forged a log line: {text}"
    );
}

/// `or` keeps the more lenient decision, but an observed one is not enforced: it must not
/// loosen an enforced ask (or deny) on the other side, whichever side it is on.
#[tokio::test]
async fn an_observed_policy_in_an_or_does_not_unenforce_the_other_side() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let tools = Tools::default();
    let candidate = || CapabilityTable::new().deny("payments.refund", "new rule under watch");
    let first = tollgate::policy::or(observe(candidate()), refunds(false));
    let second = tollgate::policy::or(refunds(false), observe(candidate()));
    for (i, svc) in [
        gate.layer(first).layer(tools.clone()).boxed_clone(),
        gate.layer(second).layer(tools.clone()).boxed_clone(),
    ]
    .into_iter()
    .enumerate()
    {
        let call = refund(Some(&format!("ticket {i}")));
        let mut parked = tokio::spawn(svc.oneshot(call));
        let alert = tokio::select! {
            alert = alerts.next_alert() => alert,
            ran = &mut parked => panic!("the refund ran unasked: {ran:?}"),
        };
        assert_eq!(tools.total(), 0, "the refund ran unasked");
        let c = alert.code().reveal().to_owned();
        gate.deny(tollgate::Deny::new(alert.request().id(), c).by("alice"))
            .await
            .unwrap();
        assert!(parked.await.unwrap().is_err());
    }
    // Against a deny, the deny; against an allow, the allow (unrecorded).
    let denied = tollgate::policy::or(
        observe(refunds(false)),
        CapabilityTable::new().deny("payments.refund", "not today"),
    );
    let svc = gate.layer(denied).layer(tools.clone());
    let error = svc.oneshot(refund(Some("t"))).await.unwrap_err();
    assert_eq!(code(&error), "access_request_denied");
    let allowed = tollgate::policy::or(
        observe(refunds(false)),
        CapabilityTable::new().allow("payments.refund"),
    );
    gate.layer(allowed)
        .layer(tools.clone())
        .oneshot(refund(Some("t")))
        .await
        .unwrap();
    let observed = entries(&gate).await;
    assert!(observed.is_empty(), "{observed:?}");
}

/// Of two observed decisions, `and` keeps the one that observes the stricter: enforced, the
/// deny would have applied, and the record says so.
#[tokio::test]
async fn and_of_two_observed_decisions_records_the_stricter() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let policy = tollgate::policy::and(
        observe(refunds(false)),
        observe(CapabilityTable::new().deny("payments.refund", "never")),
    );
    let svc = gate.layer(policy).layer(Tools::default());
    svc.oneshot(refund(Some("t"))).await.unwrap();
    let observed = entries(&gate).await;
    assert_eq!(
        observed[0].detail.as_deref(),
        Some("would have been denied: never")
    );
}

/// Every observed call would append an audit entry, and the default store keeps the 65,536
/// most recent: a caller making cheap observed calls would push people's decisions out of the
/// trail. Each principal writes at most the alert rate's entries (enforced, the calls beyond it
/// would have been refused `too_many_alerts`); every call still runs.
#[tokio::test(start_paused = true)]
async fn observed_calls_do_not_push_human_decisions_out_of_the_audit_trail() {
    let alerts = RecordingNotifier::new();
    let store = tollgate::store::MemoryStore::with_audit_capacity(64);
    let gate = gate(&alerts).store(store).build().unwrap();
    let tools = Tools::default();
    let enforced = gate.layer(refunds(false)).layer(tools.clone());
    let parked = tokio::spawn(enforced.oneshot(refund(Some("ticket"))));
    approve_next(&gate, &alerts, Scope::Once).await;
    parked.await.unwrap().unwrap();

    let watched = gate
        .layer(observe(
            CapabilityTable::new().ask("search.web", Ask::new("watching")),
        ))
        .layer(tools.clone());
    for i in 0..500u32 {
        let call = ToolCall::new("search.web", json!({ "q": i })).principal("agent-7");
        watched.clone().oneshot(call).await.unwrap();
    }
    assert_eq!(tools.total(), 501, "every call ran");
    let observed = entries(&gate).await;
    assert_eq!(observed.len(), 20, "the default alert rate: 20 a minute");
    let approvals = gate
        .audit(AuditFilter::new().event(AuditEvent::Approved))
        .await
        .unwrap();
    assert_eq!(approvals.len(), 1, "alice's approval is still in the trail");
    // A minute on, the principal may write again.
    tokio::time::advance(Duration::from_secs(60)).await;
    let call = ToolCall::new("search.web", json!({ "q": "later" })).principal("agent-7");
    watched.oneshot(call).await.unwrap();
    let observed = entries(&gate).await;
    assert_eq!(observed.len(), 21);
}
