//! Alerts printed to the terminal: the notifier for a person at the process's own console.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use super::{Alert, Notifier, NotifyError, Resolution};

use crate::boxed::BoxFuture;
use crate::scope::Scope;
use crate::text::{describe, pretty_args, value_covers, visible, visible_lines};
use crate::time::rfc3339;

/// Prints each alert as a clear block on a terminal: capability, arguments, principal, reason,
/// id, code and expiry; and one line when the request ends.
///
/// ```text
/// ┌─ tollgate: approval needed ───────────────────────────────
/// │ capability  payments.refund
/// │ principal   agent-7 (session conv-42)
/// │ reason      customer ticket #4421
/// │ policy      refunds move money
/// │ arguments   {
/// │               "amount": 10000,
/// │               "charge": "ch_1"
/// │             }
/// │ request     areq_5f0c…
/// │ code        A3F7C209
/// │ expires     2026-11-21T14:05:00Z (in 300 s)
/// │ may grant   up to scope `value`, rules up to 3600 s
/// └───────────────────────────────────────────────────────────
/// ```
#[derive(Clone)]
pub struct TerminalNotifier {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl fmt::Debug for TerminalNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminalNotifier").finish_non_exhaustive()
    }
}

impl TerminalNotifier {
    /// Prints to standard error.
    pub fn stderr() -> Self {
        Self::writer(io::stderr())
    }

    /// Prints to standard output.
    pub fn stdout() -> Self {
        Self::writer(io::stdout())
    }

    /// Prints to any writer.
    pub fn writer(out: impl Write + Send + 'static) -> Self {
        TerminalNotifier {
            out: Arc::new(Mutex::new(Box::new(out))),
        }
    }

    fn write(&self, text: &str) -> Result<(), NotifyError> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(NotifyError::new)
    }
}

/// The alert block, as [`TerminalNotifier`] prints it.
fn render(alert: &Alert) -> String {
    let request = alert.request();
    let mut s = format!("┌─ tollgate: approval needed {}\n", "─".repeat(32));
    // Every value is shown `visible`: the arguments keep the JSON printer's own line breaks;
    // a line break in caller text is shown as `\n`, so it cannot forge a row.
    let mut row = |label: &str, value: &str| {
        let value = visible_lines(value);
        let mut lines = value.split('\n');
        let _ = writeln!(s, "│ {label:<11} {}", lines.next().unwrap_or(""));
        for line in lines {
            let _ = writeln!(s, "│ {:<11} {line}", "");
        }
    };
    row("capability", &visible(request.capability()));
    let principal = visible(request.principal());
    match request.session() {
        Some(session) => row(
            "principal",
            &format!("{principal} (session {})", visible(session)),
        ),
        None => row("principal", &principal),
    }
    row(
        "reason",
        &visible(request.reason().unwrap_or("(none given)")),
    );
    row("policy", &visible(request.reasoning()));
    if let Some(approvers) = request.approvers() {
        row("approvers", &visible(&approvers.join(", ")));
    }
    row("arguments", &pretty_args(request));
    row("request", &request.id().to_string());
    if request.quorum() > 1 {
        // One screen, one person: this shows every approver's own code, for development.
        row(
            "approvals",
            &format!("{} of the approvers", request.quorum()),
        );
        for (approver, code) in alert.codes() {
            row(
                "code",
                &format!("{} (for {})", code.reveal(), visible(approver)),
            );
        }
    } else {
        row("code", alert.code().reveal());
    }
    // Rounded up: a request made a moment ago with a 300 s TTL reads "in 300 s".
    let left = request
        .expires_at()
        .duration_since(SystemTime::now())
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    row(
        "expires",
        &format!("{} (in {left} s)", rfc3339(request.expires_at())),
    );
    row(
        "may grant",
        &format!(
            "up to scope `{}`, rules up to {} s",
            request.max_scope(),
            request.max_rule_ttl().as_secs()
        ),
    );
    if request.max_scope() >= Scope::Value {
        row("value covers", &value_covers(request));
    }
    if let Some(url) = request.approval_url() {
        row("approve at", &visible(url));
    }
    s.push('└');
    s.push_str(&"─".repeat(60));
    s.push('\n');
    s
}

fn render_outcome(resolution: &Resolution) -> String {
    let id = resolution.request().id();
    format!("tollgate: {id} {}\n", describe(resolution.outcome()))
}

impl Notifier for TerminalNotifier {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        let result = self.write(&render(alert));
        Box::pin(async move { result })
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        let result = self.write(&render_outcome(resolution));
        Box::pin(async move { result })
    }

    fn name(&self) -> &str {
        "terminal"
    }
}
