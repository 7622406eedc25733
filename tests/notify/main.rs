//! The notifiers shipped with the core: what the terminal shows a person.

#[path = "../support/mod.rs"]
mod support;

use tollgate::notify::{RecordingNotifier, TerminalNotifier};
use tollgate::{Deny, Scope};
use tower::{Layer, ServiceExt};

use support::{Buffer, Tools, policy, refund};

#[test]
fn the_terminal_alert_names_everything_an_approver_needs() {
    let out = Buffer::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let alerts = RecordingNotifier::new();
        let gate = support::gate(&alerts)
            .notifier(TerminalNotifier::writer(out.clone()))
            .approval_base_url("https://ops.example.com/approvals")
            .build()
            .unwrap();
        let svc = gate.layer(policy(Scope::Value)).layer(Tools::default());
        let task = tokio::spawn(svc.oneshot(refund(10_000)));
        let alert = alerts.next_alert().await;
        support::until(|| out.text().contains("└")).await;
        let text = out.text();
        for needle in [
            "payments.refund",
            "agent-7 (session conv-42)",
            "customer ticket #4421",
            "refunds move money",
            "\"amount\": 10000",
            &alert.request().id().to_string(),
            alert.code().reveal(),
            "(in 300 s)",
            "up to scope `value`, rules up to 3600 s",
            "https://ops.example.com/approvals/areq_",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        gate.deny(
            Deny::new(alert.request().id(), alert.code().reveal())
                .reason("wrong customer")
                .by("bob"),
        )
        .await
        .unwrap();
        task.await.unwrap().unwrap_err();
        support::until(|| out.text().contains("denied by bob: wrong customer")).await;
    });
}
