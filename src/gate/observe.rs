//! Observed calls: a policy watched before it is enforced. The call runs, and what the policy
//! would have done is written to the audit trail, counted and logged; nobody is alerted.

use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use super::admit::Admission;
use super::record::Write;
use super::{ANONYMOUS, Gate};
use crate::args::{ArgsDigest, canonical_json};
use crate::audit::{AuditEntry, AuditEvent};
use crate::call::Call;
use crate::policy::Decision;
use crate::time::to_millis;

impl Gate {
    /// Records that `call` runs although `would` (an observed decision) would have asked about
    /// it or refused it, answered as enforcing would ([`standing`](Gate::standing)): a call
    /// without the reason an ask requires would have been refused, and a standing rule that
    /// covers an ask lets the call through unrecorded. Returns whether enforcing would have
    /// stopped the call (asked or refused).
    ///
    /// Each principal writes at most the alert rate's entries to the audit trail (20 a minute
    /// by default): enforced, a call over it would have been refused `too_many_alerts`, and a
    /// caller that could write without bound would push people's decisions out of a bounded
    /// trail. Calls over it are still counted and logged.
    ///
    /// Out of line and cold: the middleware's allowed path, which shares its match, stays as
    /// small as it was before observing existed.
    #[cold]
    #[inline(never)]
    pub(crate) fn observe<R: Call>(&self, call: &R, would: &Decision) -> bool {
        let capability = call.capability();
        let principal = call.principal().unwrap_or(ANONYMOUS);
        let digest = std::cell::OnceCell::new();
        let digest = || *digest.get_or_init(|| ArgsDigest::of(&call.args()));
        let detail = match would {
            Decision::Allow(_) => return false,
            Decision::Observe(inner) => return self.observe(call, inner),
            Decision::Deny(reason) => format!("would have been denied: {reason}"),
            Decision::Ask(ask) => {
                let digests = || {
                    let key = ask.key_fields.as_ref().and_then(|f| f.digest(&call.args()));
                    (digest(), key)
                };
                match self.standing(call, ask, digests, tokio::time::Instant::now()) {
                    Some(Admission::Run) => return false,
                    Some(Admission::Refuse(error)) => format!(
                        "would have been refused: {}",
                        error.detail().unwrap_or(error.code())
                    ),
                    _ => format!("would have asked a person: {}", ask.reasoning),
                }
            }
        };
        // Every value a field, so a line break in any of them (a caller's principal, an
        // approver's reason in a remembered denial) is escaped and cannot forge a log line.
        tracing::info!(
            capability = ?capability,
            principal = ?principal,
            detail = ?detail,
            "call run unenforced (observe)"
        );
        if self.may_record(principal) {
            let mut entry = AuditEntry::new(
                AuditEvent::Observed,
                to_millis(SystemTime::now()),
                capability,
            );
            entry.principal = Some(principal.into());
            entry.args_digest = Some(digest());
            if self.shared.settings.audit_args {
                entry.args = Some(canonical_json(&call.args()).into_boxed_str());
            }
            entry.reason = call.reason().map(Into::into);
            entry.detail = Some(detail.into_boxed_str());
            self.shared.write(Write::Append(entry));
        }
        true
    }

    /// Whether `principal` may write one more observed entry now.
    fn may_record(&self, principal: &str) -> bool {
        let Some(limiter) = &self.shared.observed else {
            return true;
        };
        let mut limiter = limiter.lock().unwrap_or_else(PoisonError::into_inner);
        limiter.take(&Arc::from(principal), tokio::time::Instant::now())
    }
}
