//! The quickstart: an agent's tool calls wait for a person.
//!
//! A tool service sits behind the gate. An agent task makes five calls; an approver task reads
//! each alert (as a person would read the terminal) and approves one refund with `value` scope, so
//! the identical repeat passes without asking, denies another, and lets a third expire.
//!
//! Requests, standing rules and the audit trail are kept in a SQLite file in the temporary
//! directory: run the example twice and the first refund passes without asking, on the approval
//! the first run stored. Stored rules are sealed with the gate's secret, so the demo keeps its
//! secret in a file beside the database (or takes `TOLLGATE_SECRET`); delete both to start over.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use std::time::Duration;

use serde_json::json;
use tollgate::notify::{RecordingNotifier, TerminalNotifier};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::store::{AuditFilter, SqliteStore};
use tollgate::{Approve, BoxError, Deny, Error, Gate, Scope, ToolCall};
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The approver's inbox. In production this is email, a webhook or a chat channel; here the
    // approver task reads it directly.
    let inbox = RecordingNotifier::new();
    let path = std::env::temp_dir().join("tollgate-quickstart.db");
    let builder = Gate::builder()
        .store(SqliteStore::open(&path)?)
        .request_ttl(Duration::from_secs(2)) // short, so the demo's third request expires quickly
        .notifier(TerminalNotifier::stdout())
        .notifier(inbox.clone());
    // Codes and the seals on stored rules are derived from a secret the agent never sees.
    let gate = builder.secret(demo_secret()?).build()?;
    println!(
        "store: {} ({} standing rules from earlier runs)\n",
        path.display(),
        gate.rules().len()
    );

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

    let approver = tokio::spawn(approve_as_alice(gate.clone(), inbox));
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
            let what = format!("{} {}", call.capability(), call.args());
            println!("agent: calling {what}");
            match tools.clone().oneshot(call).await {
                Ok(out) => println!("agent: ok: {out}\n"),
                Err(error) => match error.downcast_ref::<Error>() {
                    Some(e) => println!("agent: refused: {e}\n"),
                    None => println!("agent: the tool failed: {error}\n"),
                },
            }
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
    println!("standing rules: {}", gate.rules().len());
    for rule in gate.rules() {
        println!(
            "  {} {:?} {} for {} (granted by {})",
            rule.id(),
            rule.effect(),
            rule.scope(),
            rule.capability(),
            rule.granted_by()
        );
    }
    Ok(())
}

/// `TOLLGATE_SECRET`, or a random secret made on the first run and kept in a file readable only
/// by its owner, as a deployment keeps it in a secrets file.
fn demo_secret() -> Result<Vec<u8>, BoxError> {
    if let Ok(secret) = std::env::var("TOLLGATE_SECRET") {
        return Ok(secret.into_bytes());
    }
    let path = std::env::temp_dir().join("tollgate-quickstart.secret");
    if let Ok(secret) = std::fs::read(&path) {
        return Ok(secret);
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    std::io::Write::write_all(&mut file.write(true).create_new(true).open(&path)?, &secret)?;
    Ok(secret.to_vec())
}

/// Approves the first refund with `value` scope, denies the second, ignores the mass mail.
async fn approve_as_alice(gate: Gate, inbox: RecordingNotifier) -> Result<(), Error> {
    loop {
        let alert = inbox.next_alert().await;
        let request = alert.request();
        let id = request.id();
        let code = alert.code().reveal();
        match (request.capability(), request.args()["charge"].as_str()) {
            ("payments.refund", Some("ch_1")) => {
                let approve = Approve::new(id, code)
                    .scope(Scope::Value)
                    .ttl(Duration::from_secs(600))
                    .by("alice");
                let approval = gate.approve(approve).await?;
                println!("alice: approved {id} with scope {}", approval.scope());
            }
            ("payments.refund", _) => {
                gate.deny(
                    Deny::new(id, code)
                        .reason("not for this customer")
                        .by("alice"),
                )
                .await?;
                println!("alice: denied {id}");
            }
            _ => println!("alice: not answering {id}; it will expire"),
        }
    }
}
