//! What [`RequireApproval`](crate::RequireApproval) returns: its response future, and for
//! [`submit`](crate::RequireApproval::submit) the response or a handle on the pending request.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower_service::Service;

pub use crate::pending::{PendingCall, Submitted};

use crate::call::Call;
use crate::error::{BoxError, Error, ErrorKind};
use crate::gate::{Gate, Waiter};
use crate::id::RequestId;
use crate::request::{AccessRequest, Status};

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
        // Boxed: parking is the cold path, and allowed futures stay small.
        Parked { call: Pin<Box<ParkedCall<S, R>>> },
    }
}

pin_project! {
    /// A parked call: waiting for its decision, then driving the inner service.
    #[project = ParkedProj]
    enum ParkedCall<S: Service<R>, R> {
        Waiting {
            waiter: Waiter,
            service: Option<S>,
            request: Option<R>,
        },
        Resuming {
            #[pin]
            call: Oneshot<S, R>,
            finish: Finish,
        },
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
        let call = ParkedCall::Waiting {
            waiter,
            service: Some(service),
            request: Some(request),
        };
        ResponseFuture {
            state: State::Parked {
                call: Box::pin(call),
            },
        }
    }

    /// The gate and request a parked call waits on.
    pub(crate) fn parked_on(&self) -> Option<(Gate, Arc<AccessRequest>)> {
        match &self.state {
            State::Parked { call } => match &**call {
                ParkedCall::Waiting { waiter, .. } => {
                    Some((waiter.gate(), waiter.request().clone()))
                }
                ParkedCall::Resuming { .. } => None,
            },
            _ => None,
        }
    }
}

impl<S, R> Future for ResponseFuture<S, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    R: Call,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Allowed { future } => future.poll(cx).map_err(Into::into),
            StateProj::Refused { error } => {
                let error = error.take().expect("polled after completion");
                Poll::Ready(Err(error.into()))
            }
            StateProj::Parked { call } => call.as_mut().poll(cx),
        }
    }
}

impl<S, R> Future for ParkedCall<S, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    R: Call,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                ParkedProj::Waiting {
                    waiter,
                    service,
                    request,
                } => {
                    // The gate's expiry task ends the request at its deadline, if nobody decided.
                    let edit = ready!(waiter.poll_decision(cx))?;
                    let mut finish = Finish {
                        gate: waiter.gate(),
                        id: waiter.request().id(),
                        done: false,
                    };
                    let service = service.take().expect("a decision is taken once");
                    let mut request = request.take().expect("a decision is taken once");
                    if let Some(edit) = edit {
                        // Checked against the policy on the gate's copy of this call; rebuilding
                        // it the same way fails only for a type whose `edited` is not a function
                        // of its arguments.
                        match request.edited(&edit) {
                            Ok(edited) => request = edited,
                            Err(error) => {
                                finish.done(Status::Failed);
                                return Poll::Ready(Err(error.with_request(finish.id).into()));
                            }
                        }
                    }
                    request.approved(finish.id);
                    self.set(ParkedCall::Resuming {
                        call: Oneshot::new(service, request),
                        finish,
                    });
                }
                ParkedProj::Resuming { call, finish } => {
                    let result = ready!(call.poll(cx)).map_err(Into::into);
                    finish.done(if result.is_ok() {
                        Status::Executed
                    } else {
                        Status::Failed
                    });
                    return Poll::Ready(result);
                }
            }
        }
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
            State::Parked { call } => match &**call {
                ParkedCall::Waiting { .. } => "parked",
                ParkedCall::Resuming { .. } => "resuming",
            },
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
