//! Predicate policies and their composition: every decision carries its reasoning.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tollgate::policy::{
    Ask, CapabilityTable, Decision, Policy, and, arg, first_match, or, policy_fn, threshold,
};
use tollgate::{Scope, ToolCall};

fn refund(amount: serde_json::Value) -> ToolCall {
    ToolCall::new("payments.refund", json!({ "amount": amount }))
}

fn hour(h: u64) -> Duration {
    Duration::from_secs(3600 * h)
}

#[test]
fn threshold_allows_at_or_below_asks_above_and_denies_far_above() {
    let policy = threshold(arg("/amount"), 100.0)
        .deny_above(10_000.0, "over the hard limit")
        .ask(Ask::new("refunds move money").max_scope(Scope::Value));
    let check = |amount| policy.check(&refund(amount));

    assert_eq!(
        check(json!(100)),
        Decision::allow("at or below the cost threshold")
    );
    assert_eq!(
        check(json!("99.5")),
        Decision::allow("at or below the cost threshold")
    );
    assert_eq!(
        check(json!(250)),
        Decision::Ask(Ask::new("refunds move money: 250 is above 100").max_scope(Scope::Value))
    );
    assert_eq!(
        check(json!(10_001)),
        Decision::deny("over the hard limit: 10001 is above 10000")
    );
    // A cost that cannot be read is asked about, never passed.
    for unreadable in [json!(null), json!("lots"), json!([1]), json!({"v": 1})] {
        let decision = check(unreadable.clone());
        assert!(matches!(decision, Decision::Ask(_)), "{unreadable}");
        assert_eq!(
            decision.reasoning(),
            "refunds move money: the cost could not be read"
        );
    }
    assert!(matches!(
        policy.check(&ToolCall::new("payments.refund", json!({}))),
        Decision::Ask(_)
    ));
}

#[test]
fn and_takes_the_stricter_decision_and_narrows_two_asks() {
    let wide = Ask::new("payments need a person")
        .max_scope(Scope::Global)
        .max_rule_ttl(hour(8))
        .approvers(["alice", "bob"]);
    let narrow = Ask::new("large amounts need finance")
        .max_scope(Scope::Session)
        .max_rule_ttl(hour(1))
        .approvers(["bob", "carol"])
        .require_reason();
    let both = and(wide.clone(), narrow);
    assert_eq!(
        both.check(&refund(json!(1))),
        Decision::Ask(
            Ask::new("payments need a person; large amounts need finance")
                .max_scope(Scope::Session)
                .max_rule_ttl(hour(1))
                .approvers(["bob"])
                .require_reason()
        )
    );

    let disjoint = and(
        Ask::new("a").approvers(["alice"]),
        Ask::new("b").approvers(["bob"]),
    );
    assert_eq!(
        disjoint.check(&refund(json!(1))),
        Decision::deny("no approver may decide under both policies")
    );

    let allow = Decision::allow("small");
    assert!(matches!(
        and(allow.clone(), wide.clone()).check(&refund(json!(1))),
        Decision::Ask(_)
    ));
    assert!(matches!(
        and(wide.clone(), allow.clone()).check(&refund(json!(1))),
        Decision::Ask(_)
    ));
    assert_eq!(
        and(allow.clone(), Decision::allow("also")).check(&refund(json!(1))),
        allow
    );

    // A deny from the first policy decides without asking the second.
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = {
        let asked = asked.clone();
        policy_fn(move |_: &ToolCall| {
            asked.fetch_add(1, Ordering::SeqCst);
            Decision::allow("counted")
        })
    };
    let fenced = and(Decision::deny("fenced"), counted.clone());
    assert_eq!(fenced.check(&refund(json!(1))), Decision::deny("fenced"));
    assert_eq!(asked.load(Ordering::SeqCst), 0);
    assert_eq!(
        and(counted, Decision::deny("second")).check(&refund(json!(1))),
        Decision::deny("second")
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[test]
fn or_takes_the_more_lenient_decision() {
    let ask = Ask::new("first ask");
    let call = refund(json!(1));
    assert_eq!(
        or(Decision::deny("no"), Decision::allow("yes")).check(&call),
        Decision::allow("yes")
    );
    assert_eq!(
        or(ask.clone(), Decision::deny("no")).check(&call),
        Decision::Ask(ask.clone())
    );
    assert_eq!(
        or(ask.clone(), Ask::new("second ask")).check(&call),
        Decision::Ask(ask)
    );
    assert_eq!(
        or(Decision::deny("a"), Decision::deny("b")).check(&call),
        Decision::deny("a")
    );

    let asked = Arc::new(AtomicUsize::new(0));
    let counted = {
        let asked = asked.clone();
        policy_fn(move |_: &ToolCall| {
            asked.fetch_add(1, Ordering::SeqCst);
            Decision::deny("counted")
        })
    };
    assert_eq!(
        or(Decision::allow("first"), counted).check(&call),
        Decision::allow("first")
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "an allow from the first skips the second"
    );
}

#[test]
fn first_match_lets_the_first_accepting_arm_decide_and_otherwise_asks() {
    let policy = first_match()
        .when(
            |c: &ToolCall| c.capability() == "fs.delete",
            Decision::deny("never"),
        )
        .when(
            |c: &ToolCall| c.capability().starts_with("payments."),
            threshold(arg("/amount"), 100.0),
        )
        .when(
            |c: &ToolCall| c.capability().starts_with("payments."),
            Decision::deny("unreachable"),
        );
    assert_eq!(
        policy.check(&ToolCall::new("fs.delete", json!({}))),
        Decision::deny("never")
    );
    assert!(matches!(
        policy.check(&refund(json!(5))),
        Decision::Allow(_)
    ));
    assert!(matches!(
        policy.check(&refund(json!(500))),
        Decision::Ask(_)
    ));
    let unmatched = policy.check(&ToolCall::new("shell.exec", json!({})));
    assert_eq!(unmatched.reasoning(), "no policy rule matched this call");
    assert!(matches!(unmatched, Decision::Ask(_)));

    let open = policy
        .clone()
        .otherwise(Decision::allow("everything else passes"));
    assert_eq!(
        open.check(&ToolCall::new("shell.exec", json!({}))),
        Decision::allow("everything else passes")
    );
}

#[test]
fn capability_tables_take_globs_and_keep_the_last_setting_of_a_pattern() {
    let table = CapabilityTable::new()
        .deny("payments.*", "first")
        .deny("payments.*", "second")
        .allow("payments.list");
    let (decision, pattern) = table.lookup("payments.refund");
    assert_eq!(
        (decision, pattern),
        (&Decision::deny("second"), Some("payments.*"))
    );
    assert_eq!(table.lookup("payments.list").1, Some("payments.list"));
    assert_eq!(table.lookup("other").1, None);
    let error = CapabilityTable::new()
        .try_with("", Decision::allow("x"))
        .unwrap_err();
    assert_eq!(error.code(), "invalid_config");
}

#[tokio::test]
async fn the_approver_sees_the_composed_reasoning() {
    use tollgate::notify::RecordingNotifier;
    use tower::{Layer, ServiceExt, service_fn};

    let inbox = RecordingNotifier::new();
    let gate = tollgate::Gate::builder()
        .random_secret()
        .notifier(inbox.clone())
        .build()
        .unwrap();
    let policy = and(
        CapabilityTable::new().ask("payments.*", Ask::new("payments need a person")),
        threshold(arg("/amount"), 100.0).ask(Ask::new("over the limit")),
    );
    let service = gate.layer(policy).layer(service_fn(|_: ToolCall| async {
        Ok::<_, tollgate::BoxError>("ran")
    }));
    let _parked = tokio::spawn(service.oneshot(refund(json!(250))));
    let alert = inbox.next_alert().await;
    assert_eq!(
        alert.request().reasoning(),
        "payments need a person; over the limit: 250 is above 100"
    );
}

/// Small tables are searched name by name, larger ones by hash: both find every exact name,
/// and an unlisted capability gets the fallback.
#[test]
fn exact_names_are_found_in_small_and_large_tables() {
    for size in [1, 2, 8, 9, 40] {
        let mut table = CapabilityTable::new();
        for i in 0..size {
            let decision = if i % 2 == 0 {
                Decision::allow("even")
            } else {
                Decision::deny("odd")
            };
            table = table.try_with(&format!("tool.{i}"), decision).unwrap();
        }
        for i in 0..size {
            let (decision, pattern) = table.lookup(&format!("tool.{i}"));
            assert_eq!(pattern, Some(format!("tool.{i}").as_str()));
            assert_eq!(
                matches!(decision, Decision::Allow(_)),
                i % 2 == 0,
                "tool.{i} of {size}"
            );
        }
        let (decision, pattern) = table.lookup("tool.unlisted");
        assert!(pattern.is_none() && matches!(decision, Decision::Ask(_)));
    }
}
