//! The tower [`Service`](tower_service::Service) that gates calls: the policy first, then
//! the gate, then the inner service.

use std::fmt;
use std::mem;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tower_service::Service;

use crate::call::{Call, Edit};
use crate::error::{BoxError, Error, ErrorKind};
use crate::future::ResponseFuture;
use crate::gate::{Admission, Checked, Edits, Gate};
use crate::id::RequestId;
use crate::pending::{PendingCall, Submitted};
use crate::policy::{Decision, Policy};

/// Counts how a call was disposed of, for the `metrics` facade; without the feature, no code at
/// all, so the allowed path stays as small as it was.
macro_rules! count {
    ($gate:expr, $disposed:ident) => {
        #[cfg(feature = "metrics")]
        $gate.meters().call(crate::meters::Disposed::$disposed);
    };
}

/// Middleware that parks calls the policy does not allow until a person decides.
///
/// Allowed calls go straight to the inner service, allocating nothing. Calls the policy asks about
/// pass if a standing rule covers them; otherwise they wait on an access request. A parked call
/// holds none of the inner service's readiness: it keeps an unreadied clone and drives it to
/// ready only after approval, so the inner service stays free for other calls meanwhile.
///
/// For a call whose policy lets approvers edit it ([`Ask::editable`](crate::policy::Ask::editable)),
/// the gate keeps a copy of the call (rebuilt by [`Call::edited`]) and a clone of the policy
/// while it waits, to check an edit against the policy before the approval counts; hence the
/// bounds on the policy and the call (`Send` and `'static`, as a spawned task needs).
#[derive(Clone)]
pub struct RequireApproval<S, P> {
    inner: S,
    gate: Gate,
    policy: P,
}

impl<S, P> RequireApproval<S, P> {
    /// Gates `inner` through `gate` with `policy`.
    pub fn new(inner: S, gate: Gate, policy: P) -> Self {
        RequireApproval {
            inner,
            gate,
            policy,
        }
    }

    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service out.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for RequireApproval<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireApproval")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<S, P, R> Service<R> for RequireApproval<S, P>
where
    S: Service<R> + Clone,
    S::Error: Into<BoxError>,
    P: Policy<R> + Clone + Send + 'static,
    R: Call + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let ask = match self.policy.check(&request) {
            // Bound, not `_`: the reasoning moves out, so nothing is left of the decision to
            // drop through its (recursive, out-of-line) drop glue on the allowed path.
            Decision::Allow(_reasoning) => {
                count!(self.gate, AllowedByPolicy);
                return ResponseFuture::allowed(self.inner.call(request));
            }
            Decision::Deny(reason) => {
                count!(self.gate, DeniedByPolicy);
                return ResponseFuture::denied_by_policy(reason);
            }
            Decision::Ask(ask) => ask,
            Decision::Observe(would) => {
                if self.gate.observe(&request, &would) {
                    count!(self.gate, Observed);
                } else {
                    count!(self.gate, AllowedByRule);
                }
                return ResponseFuture::allowed(self.inner.call(request));
            }
        };
        let policy = &self.policy;
        match self.gate.admit(&request, ask, |id| {
            PolicyEdits::for_call(policy, &request, id)
        }) {
            Admission::Run => {
                count!(self.gate, AllowedByRule);
                ResponseFuture::allowed(self.inner.call(request))
            }
            Admission::Refuse(error) => {
                count!(self.gate, Refused);
                ResponseFuture::refused(error)
            }
            Admission::Park(waiter) => {
                count!(self.gate, Asked);
                // Give back the readiness `poll_ready` reserved: the ready service is dropped and
                // an unreadied clone takes its place. The parked call keeps another clone, which
                // it drives to ready only after approval.
                let unready = self.inner.clone();
                drop(mem::replace(&mut self.inner, unready));
                ResponseFuture::parked(waiter, self.inner.clone(), request)
            }
        }
    }
}

impl<S, P> RequireApproval<S, P> {
    /// The non-blocking form of a call: the response if the call may run now, or a
    /// [`PendingCall`] with the request's id, expiry and approval URL if it waits for a person.
    ///
    /// The pending call is driven by a spawned task, so an approval reaches it whether or not
    /// anyone is waiting on the handle; dropping the handle cancels it.
    pub async fn submit<R>(&mut self, request: R) -> Result<Submitted<S::Response>, BoxError>
    where
        S: Service<R> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        S::Error: Into<BoxError>,
        P: Policy<R> + Clone + Send + 'static,
        R: Call + Send + 'static,
    {
        std::future::poll_fn(|cx| Service::<R>::poll_ready(self, cx)).await?;
        let future = self.call(request);
        match future.parked_on() {
            Some(parked) => Ok(Submitted::Pending(PendingCall::spawn(parked, future))),
            None => future.await.map(Submitted::Done),
        }
    }
}

/// The check of edits of one parked call: the call rebuilt from its own arguments (a copy the
/// gate can hold while the caller keeps the original), and the policy that asked about it.
struct PolicyEdits<P, R> {
    /// Behind one lock, so that neither needs to be `Sync`.
    held: Mutex<(P, R)>,
}

impl<P, R> PolicyEdits<P, R>
where
    P: Policy<R> + Clone + Send + 'static,
    R: Call + Send + 'static,
{
    /// The check for `call`, parked on request `id`; `None` if the call cannot be rebuilt from
    /// arguments (an edit is then `edit_unsupported`). The copy is made through
    /// [`Call::edited`] with the arguments unchanged; no approver has edited it.
    fn for_call(policy: &P, call: &R, id: RequestId) -> Option<Arc<dyn Edits>> {
        let args = call.args().into_owned();
        let copy = call
            .edited(&Edit::new(id, "".into(), args.clone(), args))
            .ok()?;
        Some(Arc::new(PolicyEdits {
            held: Mutex::new((policy.clone(), copy)),
        }))
    }
}

impl<P, R> Edits for PolicyEdits<P, R>
where
    P: Policy<R> + Send,
    R: Call + Send,
{
    fn check(&self, edit: &Edit) -> Result<Checked, Error> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (policy, call) = &*held;
        let edited = call.edited(edit)?;
        if edited.capability() != call.capability()
            || edited.principal() != call.principal()
            || edited.session() != call.session()
        {
            return Err(Error::new(ErrorKind::EditNotAllowed).with_detail(
                "an edit may change the call's arguments only, not its capability, principal or session",
            ));
        }
        let ask = match policy.check(&edited) {
            // An observed policy enforces nothing on the edited call either.
            Decision::Allow(_) | Decision::Observe(_) => None,
            Decision::Ask(ask) => Some(ask),
            Decision::Deny(reason) => {
                return Err(Error::new(ErrorKind::EditNotAllowed)
                    .with_detail(format!("the policy denies the edited call: {reason}")));
            }
        };
        Ok(Checked {
            args: edited.args().into_owned(),
            ask,
        })
    }
}
