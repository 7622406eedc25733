//! An agent's tools behind tollgate: the refund waits until you approve it in the browser.
//! Run it as the README says: `cargo run --example agent_tools --features axum`.
use serde_json::json;
use tollgate::approval::{Approver, Tokens};
use tollgate::notify::TerminalNotifier;
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{BoxError, Gate, Scope, ToolCall};
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("set {name} first"));
    let addr = env("TOLLGATE_EXAMPLE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
        format!("cannot listen on {addr} ({e}): set TOLLGATE_EXAMPLE_ADDR to another address")
    })?;

    // The gate: codes derive from the secret; alerts print on this terminal with a link.
    let gate = Gate::builder()
        .secret(env("TOLLGATE_SECRET")?)
        .notifier(TerminalNotifier::stderr())
        .approval_base_url(format!("http://{addr}"))
        .build()?;

    // The approval page and API, where alice signs in with her token; served until the end,
    // when it finishes the answers under way (the approver's among them) and stops.
    let approvers = Tokens::new().token(env("TOLLGATE_TOKEN")?, Approver::new("alice"));
    let page = tollgate::approval::router(gate.clone(), approvers);
    let (end, ended) = tokio::sync::oneshot::channel::<()>();
    let served = axum::serve(listener, page).with_graceful_shutdown(async { _ = ended.await });
    let server = tokio::spawn(async move { served.await });

    // The agent's tools: searching runs at once, a refund needs a person.
    let policy = CapabilityTable::new().allow("search.web").ask(
        "payments.refund",
        Ask::new("refunds move money").max_scope(Scope::Value),
    );
    let tools = ServiceBuilder::new()
        .layer(gate.layer(policy))
        .service(service_fn(|call: ToolCall| async move {
            Ok::<_, BoxError>(format!("ran {} with {}", call.capability(), call.args()))
        }));

    // The agent's side: this await blocks until a person decides.
    let refund = ToolCall::new("payments.refund", json!({"charge": "ch_1", "amount": 4200}))
        .principal("agent-7")
        .reason("customer ticket #4421");
    match tools.oneshot(refund).await {
        Ok(output) => println!("{output}"),
        Err(refused) => println!("refused: {refused}"),
    }
    _ = end.send(());
    Ok(server.await??)
}
