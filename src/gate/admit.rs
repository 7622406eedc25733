//! Admission: a call the policy asked about meets the standing rules, then the registry, and
//! either runs, is refused, or parks its caller on an access request.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::edit::Edits;
use super::registry::Decided;
use super::{ANONYMOUS, Gate, Shared};
use crate::args::{ArgsDigest, canonical_json};
use crate::call::Call;
use crate::error::{Error, ErrorKind};
use crate::id::RequestId;
use crate::policy::Ask;
use crate::request::AccessRequest;
use crate::time::{Millis, duration_millis};

/// How the gate answers a call that the policy asked about.
pub(crate) enum Admission {
    /// A standing rule allows it.
    Run,
    /// Refused without parking.
    Refuse(Error),
    /// Parked on an access request.
    Park(Waiter),
}

impl Gate {
    /// Standing rules first, then the registry: run, refuse, or park the call. For a new request
    /// approvers may edit, `edits` makes the check of their edits.
    pub(crate) fn admit<R: Call>(
        &self,
        call: &R,
        ask: Ask,
        edits: impl FnOnce(RequestId) -> Option<Arc<dyn Edits>>,
    ) -> Admission {
        let capability = call.capability();
        let principal = call.principal().unwrap_or(ANONYMOUS);
        let session = call.session();
        // Computed at most once, and only if a value rule or a new request needs them: the
        // arguments' digest, and with key fields, theirs (`None` if the call lacks one).
        let digest_cell = std::cell::OnceCell::new();
        let digest = || *digest_cell.get_or_init(|| ArgsDigest::of(&call.args()));
        let key_cell = std::cell::OnceCell::new();
        let key = || {
            key_cell
                .get_or_init(|| ask.key_fields.as_ref().and_then(|f| f.digest(&call.args())))
                .as_ref()
                .copied()
        };
        let now = Instant::now();
        if let Some(answer) = self.standing(call, &ask, || (digest(), key()), now) {
            return answer;
        }
        let Ok(runtime) = Handle::try_current() else {
            return Admission::Refuse(Error::new(ErrorKind::NoRuntime));
        };
        let settings = &self.shared.settings;
        if ask.quorum > 1
            && let Err(error) = quorum_possible(&ask, settings.shared_store)
        {
            tracing::warn!(capability, principal, "call refused: {error}");
            return Admission::Refuse(error);
        }
        // Whole milliseconds: what stores keep, and what the code is bound to.
        let created_at = Millis::of(SystemTime::now());
        let id = RequestId::made_at(created_at.time());
        let args = canonical_json(&call.args());
        let request = AccessRequest {
            id,
            capability: capability.into(),
            args_digest: *digest_cell.get_or_init(|| ArgsDigest::of_canonical(&args)),
            args: args.into_boxed_str(),
            principal: principal.into(),
            session: session.map(Into::into),
            reason: call.reason().map(Into::into),
            reasoning: ask.reasoning,
            max_scope: ask.max_scope,
            max_rule_ttl_ms: duration_millis(ask.max_rule_ttl),
            approvers: ask.approvers,
            key_fields: ask
                .key_fields
                .as_ref()
                .and_then(|f| key().map(|_| f.clone())),
            editable: ask.editable,
            quorum: ask.quorum,
            extended_secs: 0,
            created_at,
            expires_at: created_at + settings.request_ttl,
            approval_url: settings
                .approval_base_url
                .as_ref()
                .map(|base| format!("{base}/{id}").into_boxed_str()),
        };
        let deadline = now + settings.request_ttl;
        // Made before the lock, and dropped if the call joins a pending request instead.
        let edits = if request.editable { edits(id) } else { None };
        self.shared.watch_deadlines(&runtime);
        let admitted = self.shared.locked(|registry| {
            registry.admit(request, now, deadline, runtime, settings.limits, edits)
        });
        let (request, key, created) = match admitted {
            Ok(admitted) => admitted,
            Err(error) => {
                tracing::warn!(capability, principal, code = error.code(), "call refused");
                return Admission::Refuse(error);
            }
        };
        if created {
            tracing::info!(
                request_id = %request.id,
                capability,
                principal,
                session,
                args_digest = %request.args_digest,
                "access request created"
            );
        } else {
            tracing::debug!(request_id = %request.id, capability, principal, "call joined a pending access request");
        }
        Admission::Park(Waiter {
            shared: self.shared.clone(),
            request,
            key,
            attached: true,
        })
    }

    /// How the call is answered before a person would be asked, if it is: refused when it lacks
    /// the reason `ask` requires, then as the standing rules covering it say (run, or refused by
    /// a remembered denial). `None` when a person would be asked. `digests` (the arguments', and
    /// their key fields') is called only if a value rule needs it. Observed calls are answered
    /// the same way, recorded instead of enforced.
    pub(crate) fn standing<R: Call>(
        &self,
        call: &R,
        ask: &Ask,
        digests: impl FnOnce() -> (ArgsDigest, Option<ArgsDigest>),
        now: Instant,
    ) -> Option<Admission> {
        if ask.require_reason && call.reason().is_none_or(|r| r.trim().is_empty()) {
            return Some(Admission::Refuse(Error::new(ErrorKind::ReasonRequired)));
        }
        self.shared.rules_table().lookup(
            call.capability(),
            call.principal().unwrap_or(ANONYMOUS),
            call.session(),
            digests,
            |rule| ask.met_by(rule),
            now,
        )
    }
}

/// Whether the `n` approvals a quorum ask needs can be given: by that many distinct, named
/// approvers, on a gate whose store no other replica shares (their approvals would not be
/// counted together).
fn quorum_possible(ask: &Ask, shared_store: bool) -> Result<(), Error> {
    let refuse = |detail: String| Err(Error::new(ErrorKind::InvalidConfig).with_detail(detail));
    if shared_store {
        return refuse("a quorum of approvers needs a store no other replica shares".into());
    }
    let mut named: Vec<&str> = ask
        .allowed_approvers()
        .unwrap_or_default()
        .iter()
        .map(|a| &**a)
        .filter(|a| !a.is_empty())
        .collect();
    named.sort_unstable();
    named.dedup();
    if named.len() < usize::from(ask.quorum) {
        return refuse(format!(
            "the policy asks {} approvers to approve but names {}",
            ask.quorum,
            named.len()
        ));
    }
    Ok(())
}

/// A caller parked on an access request. Dropping it leaves the request, cancelling it if this
/// was the last caller.
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    request: Arc<AccessRequest>,
    key: usize,
    attached: bool,
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("id", &self.request.id)
            .finish_non_exhaustive()
    }
}

impl Waiter {
    pub(crate) fn request(&self) -> &Arc<AccessRequest> {
        &self.request
    }

    pub(crate) fn gate(&self) -> Gate {
        Gate {
            shared: self.shared.clone(),
        }
    }

    /// `Ready(Ok)` once an approval is this caller's to run, with the edit it was approved with,
    /// if any; `Ready(Err)` once the request closed.
    pub(crate) fn poll_decision(&mut self, cx: &mut Context<'_>) -> Poll<Decided> {
        let (id, key) = (self.request.id, self.key);
        let (mut poll, took) = self.shared.locked(|registry| {
            let (poll, effects) = registry.poll(id, key, cx.waker());
            let took = !effects.events.is_empty();
            ((poll, took), effects)
        });
        if poll.is_pending() && took {
            // This caller took an approval, and the queue ran on the spot after the lock: with a
            // store that answers at once the take is stored by now. Look again rather than wait
            // for the wake-up it sent.
            poll = self
                .shared
                .locked(|registry| registry.poll(id, key, cx.waker()));
        }
        if poll.is_ready() {
            self.attached = false;
        }
        poll
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.attached {
            let (id, key) = (self.request.id, self.key);
            self.shared.locked(|registry| ((), registry.leave(id, key)));
        }
    }
}
