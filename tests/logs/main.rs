//! What the gate logs about hostile input: caller and approver text (people read logs on
//! terminals too), and rules forged in the store. One test in its own binary: log capture is per
//! thread, and a callsite another test's thread reached first could keep a cached "not
//! interested" and leave the capture empty.

#[path = "../support/mod.rs"]
mod support;

use serde_json::json;
use tollgate::notify::RecordingNotifier;
use tollgate::store::SqliteStore;
use tollgate::{Approve, Deny, Revoke, Scope, ToolCall};
use tower::{Layer, ServiceExt};

use support::{Tools, code, gate, policy};

#[tokio::test]
async fn hostile_text_is_logged_escaped_and_a_forged_rule_once_without_its_seal() {
    let (logs, _guard) = support::capture_logs();
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("logs-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let alerts = RecordingNotifier::new();
    let build = || {
        gate(&alerts)
            .store(SqliteStore::open(&path).unwrap())
            .build()
            .unwrap()
    };
    let gate = build();
    let svc = gate
        .layer(policy(Scope::Capability))
        .layer(Tools::default());
    let call = |amount: u64| {
        ToolCall::new("payments.refund", json!({"amount": amount}))
            .principal("agent\u{202e}7\u{1b}[8m")
            .session("conv\n1")
            .reason("urgent\u{9b}2J")
    };

    // Denied with a reason that tries to forge a log line.
    let task = tokio::spawn(svc.clone().oneshot(call(1)));
    let alert = alerts.next_alert().await;
    gate.deny(
        Deny::new(alert.request().id(), alert.code().reveal())
            .reason("no\nINFO forged line \u{1b}[2J")
            .by("alice\u{2066}"),
    )
    .await
    .unwrap();
    assert_eq!(
        code(&task.await.unwrap().unwrap_err()),
        "access_request_denied"
    );

    // Approved with a rule, which is then revoked: both are logged with who did it.
    let task = tokio::spawn(svc.clone().oneshot(call(2)));
    let alert = alerts.next_alert().await;
    let approval = gate
        .approve(
            Approve::new(alert.request().id(), alert.code().reveal())
                .scope(Scope::Capability)
                .by("bob\u{7}"),
        )
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    let rule = approval.rule().unwrap().id();
    gate.revoke(Revoke::rule(rule).by("carol\u{85}"))
        .await
        .unwrap();

    // A rule made again, copied in the file into a global one: the gate started again says so
    // once, naming the rule and never its seal.
    let task = tokio::spawn(svc.clone().oneshot(call(3)));
    let alert = alerts.next_alert().await;
    gate.approve(
        Approve::new(alert.request().id(), alert.code().reveal())
            .scope(Scope::Capability)
            .by("alice"),
    )
    .await
    .unwrap();
    task.await.unwrap().unwrap();
    gate.shutdown().await.unwrap(); // every write is in the file
    drop((gate, svc));
    let (forged_id, seal) = support::forge_global_rule(&path);
    let again = build();
    assert_eq!(again.rules().len(), 1);

    let logs = logs.text();
    let rejected: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("stored rule not honoured"))
        .collect();
    assert_eq!(rejected.len(), 1, "{logs}");
    assert!(
        rejected[0].contains("WARN") && rejected[0].contains(&forged_id),
        "{logs}"
    );
    let seal = seal.expect("stored rules carry a seal");
    assert!(!logs.contains(&seal), "the log never carries a seal");
    for line in [
        "access request created",
        "access request denied",
        "rule granted",
        "access request approved",
        "rule revoked",
    ] {
        assert!(logs.contains(line), "{line} in {logs}");
    }
    assert!(!logs.chars().any(support::hidden), "{logs:?}");
    assert!(
        !logs.lines().any(|l| l.starts_with("INFO forged")),
        "{logs}"
    );
}
