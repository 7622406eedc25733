//! The response future of [`RequireApproval`](crate::RequireApproval).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::util::Oneshot;
use tower_service::Service;

use crate::error::{BoxError, Error, ErrorKind};
use crate::gate::{AccessRequest, Gate, RequestId, Status, Waiter};

pin_project! {
    /// Response future of [`RequireApproval`](crate::RequireApproval): the inner service's
    /// future for allowed calls; for parked calls, the wait for a decision and then the call.
    pub struct ResponseFuture<S: Service<R>, R> {
        #[pin]
        state: State<S, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<R>, R> {
        Allowed { #[pin] future: S::Future },
        Refused { error: Option<Error> },
        // Boxed: a parked call is the cold path, and the allowed future stays small.
        Parked { parked: Pin<Box<Parked<S, R>>> },
        Resuming { #[pin] call: Oneshot<S, R>, finish: Finish },
    }
}

pin_project! {
    struct Parked<S, R> {
        waiter: Waiter,
        #[pin]
        expiry: Sleep,
        service: Option<S>,
        request: Option<R>,
    }
}

impl<S: Service<R>, R> ResponseFuture<S, R> {
    pub(crate) fn allowed(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Allowed { future },
        }
    }

    pub(crate) fn refused(error: Error) -> Self {
        ResponseFuture {
            state: State::Refused { error: Some(error) },
        }
    }

    pub(crate) fn denied_by_policy(reason: Cow<'static, str>) -> Self {
        Self::refused(Error::new(ErrorKind::AccessRequestDenied).with_detail(reason))
    }

    pub(crate) fn parked(waiter: Waiter, service: S, request: R) -> Self {
        let expiry = tokio::time::sleep_until(waiter.deadline());
        ResponseFuture {
            state: State::Parked {
                parked: Box::pin(Parked {
                    waiter,
                    expiry,
                    service: Some(service),
                    request: Some(request),
                }),
            },
        }
    }

    /// The gate and request a parked call waits on.
    pub(crate) fn parked_on(&self) -> Option<(Gate, Arc<AccessRequest>)> {
        match &self.state {
            State::Parked { parked } => Some((parked.waiter.gate(), parked.waiter.request().clone())),
            _ => None,
        }
    }
}

impl<S, R> Future for ResponseFuture<S, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Allowed { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Refused { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Parked { parked } => {
                    let (service, request, finish) = ready!(parked.as_mut().poll_decision(cx))?;
                    state.set(State::Resuming {
                        call: Oneshot::new(service, request),
                        finish,
                    });
                }
                StateProj::Resuming { call, finish } => {
                    let result = ready!(call.poll(cx)).map_err(Into::into);
                    finish.done(if result.is_ok() { Status::Executed } else { Status::Failed });
                    return Poll::Ready(result);
                }
            }
        }
    }
}

impl<S, R> Parked<S, R> {
    /// Waits for the decision, expiring the request when its deadline passes first.
    fn poll_decision(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(S, R, Finish), Error>> {
        let this = self.project();
        let mut decision = this.waiter.poll_decision(cx);
        if decision.is_pending() && this.expiry.poll(cx).is_ready() {
            // Expire only if still pending: an approval that won the race stands.
            this.waiter.expire();
            decision = this.waiter.poll_decision(cx);
        }
        ready!(decision)?;
        let finish = Finish {
            gate: this.waiter.gate(),
            id: this.waiter.request().id(),
            done: false,
        };
        let service = this.service.take().expect("a decision is taken once");
        let request = this.request.take().expect("a decision is taken once");
        Poll::Ready(Ok((service, request, finish)))
    }
}

/// Records how an approved call ended; a call dropped while it ran counts as failed.
struct Finish {
    gate: Gate,
    id: RequestId,
    done: bool,
}

impl Finish {
    fn done(&mut self, status: Status) {
        self.done = true;
        self.gate.finish(self.id, status);
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.done {
            self.gate.finish(self.id, Status::Failed);
        }
    }
}

impl<S: Service<R>, R> fmt::Debug for ResponseFuture<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Allowed { .. } => "allowed",
            State::Refused { .. } => "refused",
            State::Parked { .. } => "parked",
            State::Resuming { .. } => "resuming",
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish()
    }
}
