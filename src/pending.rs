//! The non-blocking form: submit a call, get its response or a handle to a pending request.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use crate::error::{BoxError, Error, ErrorKind};
use crate::gate::Gate;
use crate::id::RequestId;
use crate::request::{AccessRequest, Status};

/// What [`RequireApproval::submit`](crate::RequireApproval::submit) returns.
#[derive(Debug)]
pub enum Submitted<T> {
    /// The call was allowed and ran; here is its response.
    Done(T),
    /// The call waits for a person.
    Pending(PendingCall<T>),
}

/// A submitted call waiting for a person. It runs, at most once, as soon as it is approved;
/// dropping the handle cancels it.
pub struct PendingCall<T> {
    request: Arc<AccessRequest>,
    gate: Gate,
    task: Option<JoinHandle<Result<T, BoxError>>>,
}

impl<T> fmt::Debug for PendingCall<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCall")
            .field("id", &self.request.id())
            .field("expires_at", &self.request.expires_at())
            .field("approval_url", &self.request.approval_url())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> PendingCall<T> {
    pub(crate) fn spawn<F>((gate, request): (Gate, Arc<AccessRequest>), future: F) -> Self
    where
        F: Future<Output = Result<T, BoxError>> + Send + 'static,
    {
        PendingCall {
            request,
            gate,
            task: Some(tokio::spawn(future)),
        }
    }
}

impl<T> PendingCall<T> {
    /// The access request's id.
    pub fn id(&self) -> RequestId {
        self.request.id()
    }

    /// The access request.
    pub fn request(&self) -> &AccessRequest {
        &self.request
    }

    /// When the request expires if nobody decides.
    pub fn expires_at(&self) -> SystemTime {
        self.request.expires_at()
    }

    /// Where a person can decide, when the gate has an approval base URL.
    pub fn approval_url(&self) -> Option<&str> {
        self.request.approval_url()
    }

    /// Where the request stands now.
    pub fn status(&self) -> Result<Status, Error> {
        self.gate.status(self.id())
    }

    /// Waits up to `timeout` for the call's response. On `wait_timed_out` the request is still
    /// pending and `wait` can be called again; once a response or error was returned, later calls
    /// answer `already_resolved`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<T, BoxError> {
        let id = self.id();
        let task = self
            .task
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::AlreadyResolved).with_request(id))?;
        let joined = tokio::time::timeout(timeout, task)
            .await
            .map_err(|_| Error::new(ErrorKind::WaitTimedOut).with_request(id))?;
        self.task = None;
        match joined {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(Error::new(ErrorKind::AccessRequestCancelled)
                .with_request(id)
                .into()),
        }
    }

    /// Cancels the call; the same as dropping the handle.
    pub fn cancel(self) {}
}

impl<T> Drop for PendingCall<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
