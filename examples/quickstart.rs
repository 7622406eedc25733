//! The quickstart: an agent's tool calls wait for a person.
//!
//! A tool service sits behind the gate. An agent task makes five calls; an approver task reads
//! each alert (as a person would read the terminal) and approves one refund with `value` scope, so
//! the identical repeat passes without asking, denies another, and lets a third expire.
//!
//! Requests, standing rules and the audit trail are kept in a SQLite file in the temporary
//! directory (`TMPDIR`), so a second run differs from the first: alice's approval is a standing
//! rule for ten minutes, and the first refund passes on it without asking. The example says so
//! when it starts and at the refund, and names the files to delete to start fresh. Stored rules
//! are sealed with the gate's secret, so the demo keeps its secret in a file beside the database
//! (or takes `TOLLGATE_SECRET`).
//!
//! ```sh
//! cargo run --example quickstart
//! ```

#[path = "support/secret.rs"]
mod secret;

use std::time::Duration;

use serde_json::json;
use tollgate::args::ArgsDigest;
use tollgate::notify::{RecordingNotifier, TerminalNotifier};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::rule::RuleEffect;
use tollgate::store::{AuditFilter, SqliteStore};
use tollgate::{Approve, BoxError, Deny, Error, Gate, Rule, Scope, ToolCall};
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The approver's inbox. In production this is email, a webhook or a chat channel; here the
    // approver task reads it directly.
    let inbox = RecordingNotifier::new();
    let path = std::env::temp_dir().join("tollgate-quickstart.db");
    let secret_path = path.with_extension("secret");
    let start_fresh = format!(
        "to start fresh, delete {} and {}",
        path.display(),
        secret_path.display()
    );
    let builder = Gate::builder()
        .store(SqliteStore::open(&path)?)
        .request_ttl(Duration::from_secs(2)) // short, so the demo's third request expires quickly
        .notifier(TerminalNotifier::stdout())
        .notifier(inbox.clone());
    // Codes and the seals on stored rules are derived from a secret the agent never sees.
    let gate = builder.secret(secret::kept_secret(&secret_path)?).build()?;
    println!("store: {}", path.display());
    let earlier = gate.rules();
    match earlier.len() {
        0 => println!("  no standing rules yet: every refund asks a person\n"),
        n => {
            let (rules, they) = match n {
                1 => ("rule", "it covers passes"),
                _ => ("rules", "they cover pass"),
            };
            println!("  {n} standing {rules} from an earlier run: each call {they} without asking");
            for rule in &earlier {
                println!("    {}", describe(rule));
            }
            println!("  {start_fresh}\n");
        }
    }

    let policy = CapabilityTable::new()
        .allow("search.web")
        .ask(
            "payments.refund",
            Ask::new("refunds move money").max_scope(Scope::Value),
        )
        .ask("email.send_all", Ask::new("mails every customer"));
    let tools = ServiceBuilder::new()
        .layer(gate.layer(policy))
        .service(service_fn(|call: ToolCall| async move {
            Ok::<_, BoxError>(format!("{} done with {}", call.capability(), call.args()))
        }));

    let approver = tokio::spawn(approve_as_alice(gate.clone(), inbox.clone()));
    let started = std::time::SystemTime::now() - Duration::from_millis(1);

    // The agent: each await simply blocks until the call may run, or fails with a typed error.
    let refund = |charge: &str| {
        ToolCall::new(
            "payments.refund",
            json!({"charge": charge, "amount": 10_000}),
        )
        .principal("agent-7")
        .session("conv-42")
        .reason("customer ticket #4421")
    };
    let calls = [
        ToolCall::new("search.web", json!({"q": "refund policy"})).principal("agent-7"),
        refund("ch_1"),
        refund("ch_1"), // identical: the `value` approval covers it, nobody is asked
        refund("ch_2"),
        ToolCall::new("email.send_all", json!({"subject": "Sorry!"})).principal("agent-7"),
    ];
    let agent = async {
        for call in calls {
            println!("agent: calling {} {}", call.capability(), call.args());
            let alerts = inbox.alerts().len();
            let rule = covering_rule(&gate, &call);
            let result = tools.clone().oneshot(call).await;
            let asked = inbox.alerts().len() > alerts;
            if asked {
                // A person was asked. Alice prints her answer before giving it, and the terminal
                // notifier prints tollgate's line about it before the inbox (told after it)
                // hears: so both come before the agent's line.
                inbox.next_resolution().await;
            }
            match result {
                Ok(out) => println!("agent: ok: {out}"),
                Err(error) => match error.downcast_ref::<Error>() {
                    Some(e) => println!("agent: refused: {e}"),
                    None => println!("agent: the tool failed: {error}"),
                },
            }
            if let Some(rule) = rule.filter(|_| !asked) {
                let run = match earlier.iter().any(|r| r.id() == rule.id()) {
                    true => "an earlier run",
                    false => "this run",
                };
                println!("       nobody was asked: a standing rule from {run} covers this call,");
                println!("       {}", describe(&rule));
            }
            println!();
        }
    };

    tokio::select! {
        () = agent => {}
        _ = tokio::signal::ctrl_c() => println!("interrupted"),
    }

    // Let waiting calls go, and let the store take every write, before the process exits.
    approver.abort();
    gate.shutdown().await?;
    println!("the audit trail of this run:");
    for entry in gate.audit(AuditFilter::new().since(started)).await? {
        let who = entry.approver.as_deref().unwrap_or("");
        let request = entry.request.map(|id| id.to_string()).unwrap_or_default();
        println!(
            "  {:>3} {:<12} {request} {who}",
            entry.seq,
            entry.event.as_str()
        );
    }
    let rules = gate.rules();
    println!("standing rules: {}", rules.len());
    for rule in &rules {
        println!("  {}", describe(rule));
    }
    if !rules.is_empty() {
        println!("run it again and the calls these rules cover pass without asking; {start_fresh}");
    }
    Ok(())
}

/// One line about a rule: what it lets through, who granted it, and until when.
fn describe(rule: &Rule) -> String {
    let until = rule
        .expires_at()
        .duration_since(std::time::SystemTime::now());
    format!(
        "{} {:?} {} for {} (granted by {}, {} s left)",
        rule.id(),
        rule.effect(),
        rule.scope(),
        rule.capability(),
        rule.granted_by(),
        until.unwrap_or_default().as_secs()
    )
}

/// The standing approval that lets `call` through without asking, if there is one. The demo's
/// rules are all `value` rules, so the same capability and arguments are enough to find it.
fn covering_rule(gate: &Gate, call: &ToolCall) -> Option<Rule> {
    let digest = ArgsDigest::of(call.args());
    gate.rules().into_iter().find(|rule| {
        rule.effect() == RuleEffect::Allow
            && rule.capability() == call.capability()
            && rule.args_digest() == Some(digest)
    })
}

/// Approves the first refund with `value` scope, denies the second, ignores the mass mail. Each
/// answer is printed before it is given, so it comes before the agent's line about its call.
async fn approve_as_alice(gate: Gate, inbox: RecordingNotifier) {
    loop {
        let alert = inbox.next_alert().await;
        let request = alert.request();
        let id = request.id();
        let code = alert.code().reveal();
        let answered = match (request.capability(), request.args()["charge"].as_str()) {
            ("payments.refund", Some("ch_1")) => {
                println!("alice: approving {id} with scope value for ten minutes");
                let approve = Approve::new(id, code)
                    .scope(Scope::Value)
                    .ttl(Duration::from_secs(600))
                    .by("alice");
                gate.approve(approve).await.map(drop)
            }
            ("payments.refund", _) => {
                println!("alice: denying {id}");
                let deny = Deny::new(id, code)
                    .reason("not for this customer")
                    .by("alice");
                gate.deny(deny).await.map(drop)
            }
            _ => {
                println!("alice: not answering {id}; it will expire");
                Ok(())
            }
        };
        if let Err(error) = answered {
            println!("alice: that did not work: {error}");
        }
    }
}
