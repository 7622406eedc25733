//! Observed calls: a policy watched before it is enforced. The call runs, and what the policy
//! would have done is written to the audit trail, counted and logged; nobody is alerted.

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
    /// it or refused it. A standing rule that covers an ask lets the call through unrecorded, as
    /// it would have when enforced. Returns whether the call was recorded.
    ///
    /// Out of line and cold: the middleware's allowed path, which shares its match, stays as
    /// small as it was before observing existed (callgrind: +16 and +23 instructions an allowed
    /// call when this was inlined).
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
                let covered = self.shared.rules_table().lookup(
                    capability,
                    principal,
                    call.session(),
                    || {
                        let key = ask.key_fields.as_ref().and_then(|f| f.digest(&call.args()));
                        (digest(), key)
                    },
                    |rule| ask.met_by(rule),
                    tokio::time::Instant::now(),
                );
                match covered {
                    Some(Admission::Run) => return false,
                    Some(Admission::Refuse(error)) => format!(
                        "would have been refused: {}",
                        error.detail().unwrap_or(error.code())
                    ),
                    _ => format!("would have asked a person: {}", ask.reasoning),
                }
            }
        };
        tracing::info!(
            capability = ?capability,
            principal = ?principal,
            "call run unenforced (observe): {detail}"
        );
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
        true
    }
}
