//! Observe mode through the layer: every call runs and nobody is asked; what the policy would
//! have asked or refused is in the audit trail and the logs, with caller text escaped and the
//! arguments only where the gate records them; a standing rule still answers as it would have.

#[path = "../support/mod.rs"]
mod support;

mod hostile;

use proptest::prelude::*;
use serde_json::json;
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Decision, Policy, observe};
use tollgate::store::{AuditEntry, AuditEvent, AuditFilter};
use tollgate::{Approve, Deny, Gate, Scope, ToolCall};
use tower::{Layer, ServiceExt};

use support::{Tools, capture_logs, gate, policy, refund, search};

async fn observed(gate: &Gate) -> Vec<AuditEntry> {
    gate.audit(AuditFilter::new().event(AuditEvent::Observed))
        .await
        .unwrap()
}

/// Approves the next alert's request as alice would, with `scope`.
async fn approve_next(gate: &Gate, alerts: &RecordingNotifier, scope: Scope) {
    let alert = alerts.next_alert().await;
    let code = alert.code().reveal().to_owned();
    let approve = Approve::new(alert.request().id(), code).scope(scope);
    gate.approve(approve.by("alice")).await.unwrap();
}

fn delete() -> ToolCall {
    ToolCall::new("fs.delete", json!({"path": "/srv/data"})).principal("agent-7")
}

#[tokio::test]
async fn every_call_runs_unasked_and_what_would_have_happened_is_recorded() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let tools = Tools::default();
    let svc = gate
        .layer(observe(policy(Scope::Value)))
        .layer(tools.clone());
    for call in [search("rust"), refund(500), delete()] {
        svc.clone().oneshot(call).await.unwrap();
    }
    assert_eq!(tools.total(), 3, "every call ran");
    assert!(alerts.alerts().is_empty(), "nobody was asked");
    assert!(gate.pending().is_empty());

    let entries = observed(&gate).await;
    let seen: Vec<_> = entries
        .iter()
        .map(|e| (&*e.capability, e.detail.as_deref().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "payments.refund",
                "would have asked a person: refunds move money"
            ),
            (
                "fs.delete",
                "would have been denied: deleting is never allowed"
            ),
        ],
        "the allowed search is not recorded"
    );
    let refund_entry = &entries[0];
    assert_eq!(refund_entry.principal.as_deref(), Some("agent-7"));
    assert_eq!(
        refund_entry.reason.as_deref(),
        Some("customer ticket #4421")
    );
    assert!(refund_entry.request.is_none(), "no request was made");
    assert!(refund_entry.args_digest.is_some());
    assert!(
        refund_entry.args.is_none(),
        "arguments only with audit_args"
    );
}

#[tokio::test]
async fn the_arguments_are_recorded_only_where_the_gate_records_them() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).audit_args(true).build().unwrap();
    let svc = gate
        .layer(observe(policy(Scope::Value)))
        .layer(Tools::default());
    svc.oneshot(refund(500)).await.unwrap();
    let entries = observed(&gate).await;
    assert_eq!(
        entries[0].args.as_deref(),
        Some(r#"{"amount":500,"charge":"ch_1"}"#)
    );
}

#[tokio::test]
async fn a_standing_rule_answers_an_observed_call_as_it_would_have_when_enforced() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let tools = Tools::default();
    // Enforced first: a value approval of refund(500), and a remembered denial of refund(900).
    let enforced = gate.layer(policy(Scope::Value)).layer(tools.clone());
    let approved = tokio::spawn(enforced.clone().oneshot(refund(500)));
    approve_next(&gate, &alerts, Scope::Value).await;
    approved.await.unwrap().unwrap();
    let denied = tokio::spawn(enforced.oneshot(refund(900)));
    let alert = alerts.next_alert().await;
    let code = alert.code().reveal().to_owned();
    gate.deny(
        Deny::new(alert.request().id(), code)
            .remember(Scope::Value)
            .by("alice"),
    )
    .await
    .unwrap();
    assert!(denied.await.unwrap().is_err());

    // Then watched: the approved call passes unrecorded, the remembered denial is recorded as
    // a refusal, another amount as an ask.
    let watched = gate
        .layer(observe(policy(Scope::Value)))
        .layer(tools.clone());
    for amount in [500, 900, 700] {
        watched.clone().oneshot(refund(amount)).await.unwrap();
    }
    let details: Vec<_> = observed(&gate)
        .await
        .into_iter()
        .map(|e| e.detail.unwrap().into_string())
        .collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(
        details[0].starts_with("would have been refused: remembered denial rule_"),
        "{details:?}"
    );
    assert_eq!(details[1], "would have asked a person: refunds move money");
    assert_eq!(alerts.alerts().len(), 2, "nobody asked while watching");
}

#[tokio::test]
async fn the_log_line_names_capability_and_principal_escaped_never_the_arguments() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let svc = gate
        .layer(observe(policy(Scope::Value)))
        .layer(Tools::default());
    let (logs, _guard) = capture_logs();
    let forged = "agent\n2026-12-08T00:00:00Z  INFO approved by alice\u{1b}[2J";
    let call = ToolCall::new(
        "payments.refund",
        json!({"note": "argument-value-never-logged"}),
    )
    .principal(forged);
    svc.oneshot(call).await.unwrap();
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("observe"))
        .unwrap_or_else(|| panic!("no observe line in {text}"));
    assert!(line.contains(r#"capability="payments.refund""#), "{line}");
    assert!(line.contains(r"agent\n2026"), "escaped: {line}");
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("2026-12-08T00:00:00Z")),
        "a caller's line break forged a log line: {text}"
    );
    assert!(!text.contains("argument-value"), "{text}");
}

/// What the policy would do to a call, enforced: whether it is recorded when observed.
fn recorded(call: &ToolCall) -> bool {
    !matches!(policy(Scope::Value).check(call), Decision::Allow(_))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any sequence of calls, from any principals: each runs once, none is asked, and exactly
    /// those the enforced policy would have asked about or refused are recorded, in order.
    #[test]
    fn observed_calls_all_run_and_exactly_the_would_be_asks_and_denials_are_recorded(
        calls in prop::collection::vec((0usize..4, 0u64..3, 0usize..3), 1..24)
    ) {
        support::runtime().block_on(async {
            let alerts = RecordingNotifier::new();
            let gate = gate(&alerts).unlimited_alert_rate().build().unwrap();
            let tools = Tools::default();
            let svc = gate.layer(observe(policy(Scope::Value))).layer(tools.clone());
            let names = ["search.web", "payments.refund", "fs.delete", "shell.exec"];
            let calls: Vec<ToolCall> = calls
                .into_iter()
                .map(|(name, amount, who)| {
                    ToolCall::new(names[name], json!({"amount": amount}))
                        .principal(format!("agent-{who}"))
                })
                .collect();
            for call in &calls {
                svc.clone().oneshot(call.clone()).await.unwrap();
            }
            prop_assert_eq!(tools.total(), calls.len());
            prop_assert!(alerts.alerts().is_empty());
            let expected: Vec<(String, Option<String>)> = calls
                .iter()
                .filter(|c| recorded(c))
                .map(|c| (tollgate::Call::capability(c).to_owned(), tollgate::Call::principal(c).map(str::to_owned)))
                .collect();
            let entries: Vec<(String, Option<String>)> = observed(&gate)
                .await
                .into_iter()
                .map(|e| (e.capability.to_string(), e.principal.map(|p| p.to_string())))
                .collect();
            prop_assert_eq!(entries, expected);
            Ok(())
        })?;
    }
}
