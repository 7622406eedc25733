//! A notifier as a plugin author writes one: each alert becomes a line of JSON appended to an
//! inbox file that an approver's tool watches, and each resolution another line.
//!
//! The example runs a gate with it, parks a call, reads the code back from the file (as the
//! approver's tool would), approves, and prints the file.
//!
//! ```sh
//! cargo run --example custom_notifier
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tollgate::notify::{
    Alert, BoxFuture, Notifier, NotifierExt, NotifyError, Resolution, TerminalNotifier,
};
use tollgate::policy::{Ask, CapabilityTable};
use tollgate::{Approve, BoxError, Gate, RequestId, Scope, ToolCall};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// Appends one JSON line per event to a file.
#[derive(Debug)]
struct FileInbox {
    path: PathBuf,
}

impl FileInbox {
    /// Appends one line. `Ok` only once it is written: the gate counts an `Ok` as delivered.
    async fn append(&self, line: serde_json::Value) -> Result<(), NotifyError> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(NotifyError::new)?; // keeps the io::Error as the cause
        let mut text = line.to_string();
        text.push('\n');
        file.write_all(text.as_bytes())
            .await
            .map_err(NotifyError::new)?;
        file.sync_data().await.map_err(NotifyError::new)
    }
}

impl Notifier for FileInbox {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        let request = alert.request();
        // The code goes into the channel and nowhere else: not into logs, not into errors.
        let line = json!({
            "event": "alert",
            "request": request,   // the access request's JSON form (never with the code)
            "code": alert.code().reveal(),
        });
        Box::pin(self.append(line))
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        let line = json!({
            "event": "resolved",
            "id": resolution.request().id(),
            "outcome": resolution.outcome(),
        });
        Box::pin(self.append(line))
    }

    fn name(&self) -> &str {
        "file_inbox"
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let path = std::env::temp_dir().join(format!("tollgate-inbox-{}.jsonl", std::process::id()));
    let inbox = FileInbox { path: path.clone() };

    // If the file cannot be written within a second, the terminal gets the alert instead.
    let notifier = inbox
        .timeout(Duration::from_secs(1))
        .or_else(TerminalNotifier::stderr());
    let gate = Gate::builder().random_secret().notifier(notifier).build()?;
    let policy =
        CapabilityTable::new().ask("deploy.production", Ask::new("deploys reach customers"));
    let tools = ServiceBuilder::new()
        .layer(gate.layer(policy))
        .service(service_fn(|call: ToolCall| async move {
            Ok::<_, BoxError>(format!("deployed {}", call.args()["version"]))
        }));

    // The approver's tool: wait for the alert line, take the id and code, approve.
    let approver = tokio::spawn({
        let (gate, path) = (gate.clone(), path.clone());
        async move {
            let (id, code) = loop {
                if let Some(found) = first_alert(&path).await {
                    break found;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            gate.approve(Approve::new(id, code).scope(Scope::Once).by("alice"))
                .await
        }
    });

    let call =
        ToolCall::new("deploy.production", json!({"version": "2.4.1"})).principal("ci-agent");
    let out = tokio::select! {
        out = tools.oneshot(call) => out?,
        _ = tokio::signal::ctrl_c() => {
            gate.shutdown().await?;
            return Ok(());
        }
    };
    println!("agent: {out}");
    let approval = approver.await??;
    println!(
        "approver: approved {} ({})",
        approval.request().id(),
        approval.scope()
    );

    // The resolution line follows the decision; show the inbox once it is there.
    let text = loop {
        let text = tokio::fs::read_to_string(&path).await?;
        if text.contains("\"resolved\"") {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("\n{}:", path.display());
    for line in text.lines() {
        println!("{line}");
    }
    tokio::fs::remove_file(&path).await?;
    gate.shutdown().await?;
    Ok(())
}

/// The id and code of the first alert in the inbox file, once there is one.
async fn first_alert(path: &PathBuf) -> Option<(RequestId, String)> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    let line: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    let id = line["request"]["id"].as_str()?.parse().ok()?;
    Some((id, line["code"].as_str()?.to_owned()))
}
