//! Review of observe mode (wt-review): cases where an observed call's record differs from what
//! the enforced policy would have done, or carries argument values without `audit_args`.

use std::time::Duration;

use serde_json::json;
use tollgate::notify::RecordingNotifier;
use tollgate::policy::{Ask, CapabilityTable, arg, observe, threshold};
use tollgate::store::{AuditEvent, AuditFilter};
use tollgate::{Approve, Scope, ToolCall};
use tower::{Layer, ServiceExt};

use crate::support::{Tools, capture_logs, code, gate};

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
    let alert = alerts.next_alert().await;
    let c = alert.code().reveal().to_owned();
    gate.approve(
        Approve::new(alert.request().id(), c)
            .scope(Scope::Capability)
            .by("alice"),
    )
    .await
    .unwrap();
    parked.await.unwrap().unwrap();

    // Enforced: no reason, refused, rule or not.
    let refused = enforced.clone().oneshot(refund(None)).await.unwrap_err();
    assert_eq!(code(&refused), "reason_required");

    // Observed: it runs (as it should) but must be recorded as a would-be refusal.
    let watched = gate.layer(observe(refunds(true))).layer(tools.clone());
    watched.oneshot(refund(None)).await.unwrap();
    let observed = gate
        .audit(AuditFilter::new().event(AuditEvent::Observed))
        .await
        .unwrap();
    assert_eq!(
        observed.len(),
        1,
        "enforced, this call is refused reason_required; observed, it ran unrecorded: {observed:?}"
    );
}

/// `threshold`'s reasoning carries the cost read from the arguments; an observed threshold
/// writes it to the audit `detail` and the log line although `audit_args` is off.
#[tokio::test]
async fn an_observed_threshold_keeps_argument_values_out_of_the_audit_and_logs() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let svc = gate
        .layer(observe(threshold(arg("/amount"), 100.0)))
        .layer(Tools::default());
    let (logs, _guard) = capture_logs();
    let call = ToolCall::new("payments.refund", json!({"amount": 987654321}));
    svc.oneshot(call).await.unwrap();
    let observed = gate
        .audit(AuditFilter::new().event(AuditEvent::Observed))
        .await
        .unwrap();
    let detail = observed[0].detail.as_deref().unwrap().to_owned();
    let text = logs.text();
    assert!(
        !detail.contains("987654321") && !text.contains("987654321"),
        "an argument value was recorded without audit_args: detail {detail:?}; logs {text}"
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

/// `or` keeps the more lenient decision, and an observed one (strictness 1) is more lenient
/// than an enforced ask (2): wrapping one side of an `or` in `observe` un-enforces the other.
#[tokio::test]
async fn an_observed_policy_in_an_or_does_not_unenforce_the_other_side() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let tools = Tools::default();
    let candidate = CapabilityTable::new().deny("payments.refund", "new rule under watch");
    let policy = tollgate::policy::or(observe(candidate), refunds(false));
    let svc = gate.layer(policy).layer(tools.clone());
    let ran =
        tokio::time::timeout(Duration::from_millis(300), svc.oneshot(refund(Some("t")))).await;
    assert!(
        ran.is_err() && tools.total() == 0,
        "the enforced policy asks about refunds, yet the refund ran unasked: {ran:?}"
    );
}

/// README: `[capabilities."deploy.*"] observe = false  # except this: enforced already`. A
/// more specific entry for one of those capabilities takes nothing from the glob, so it is
/// observed: `deploy.prod` runs unasked as soon as someone gives it a description.
#[cfg(feature = "toml")]
#[test]
fn a_more_specific_entry_under_an_enforced_glob_stays_enforced() {
    use tollgate::config::Config;
    use tollgate::policy::{Decision, Policy};
    let config = Config::from_toml(
        r#"
mode = "observe"
[gate]
random_secret = true
[capabilities."deploy.*"]
observe = false
[capabilities."deploy.prod"]
description = "Production deploys."
"#,
    )
    .unwrap();
    let policy = config.policy().unwrap();
    let decision = policy.check(&ToolCall::new("deploy.prod", json!({})));
    assert!(
        matches!(decision, Decision::Ask(_)),
        "deploy.* is enforced, deploy.prod is {decision:?}"
    );
}

/// A secret or token written as a bare number is quoted in the error (serde's invalid_type).
#[cfg(feature = "toml")]
#[test]
fn a_secret_written_as_a_number_is_not_quoted_in_the_error() {
    let error = tollgate::config::Config::from_toml("[gate]\nsecret = 987654321987\n")
        .unwrap_err()
        .to_string();
    assert!(
        !error.contains("987654321987"),
        "the secret is in the error: {error}"
    );
}

/// Zero-width and tag characters are not escaped: an approver sees `acct_good` where the call
/// carries `acct_good` plus invisible characters (tag characters spell hidden ASCII).
#[test]
fn invisible_format_characters_are_shown_escaped() {
    for c in ['\u{200b}', '\u{2060}', '\u{feff}', '\u{e0061}', '\u{00ad}'] {
        let text = format!("acct_good{c}");
        assert_ne!(
            tollgate::notify::visible(&text),
            text,
            "U+{:04X} reaches the approver unescaped",
            u32::from(c)
        );
    }
}

/// Every observed call appends an audit entry. The default store keeps the 65,536 most recent,
/// so a busy observed capability pushes the record of what people decided out of the trail.
#[tokio::test]
async fn observed_calls_do_not_push_human_decisions_out_of_the_audit_trail() {
    let alerts = RecordingNotifier::new();
    let gate = gate(&alerts).build().unwrap();
    let tools = Tools::default();
    let enforced = gate.layer(refunds(false)).layer(tools.clone());
    let parked = tokio::spawn(enforced.oneshot(refund(Some("ticket"))));
    let alert = alerts.next_alert().await;
    let c = alert.code().reveal().to_owned();
    gate.approve(Approve::new(alert.request().id(), c).by("alice"))
        .await
        .unwrap();
    parked.await.unwrap().unwrap();

    // A hot capability watched under the same gate (`observe = true` on one entry).
    let watched = gate
        .layer(observe(
            CapabilityTable::new().ask("search.web", Ask::new("watching")),
        ))
        .layer(tools);
    for i in 0..66_000u32 {
        let call = ToolCall::new("search.web", json!({ "q": i })).principal("agent-7");
        watched.clone().oneshot(call).await.unwrap();
    }
    let approvals = gate
        .audit(AuditFilter::new().event(AuditEvent::Approved))
        .await
        .unwrap();
    assert_eq!(
        approvals.len(),
        1,
        "alice's approval is no longer in the audit trail"
    );
}
