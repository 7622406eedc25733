//! A notifier that keeps its alerts in memory, for tests and for approval UIs built in code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::{Alert, Notifier, NotifyError, Resolution};

use crate::boxed::BoxFuture;
use crate::code::VerificationCode;
use crate::id::RequestId;

/// A notifier that keeps what it is sent, for tests and in-process approvers.
///
/// Clones share one record. It can be told to fail, to test fail-closed behaviour.
///
/// ```
/// use tollgate::notify::RecordingNotifier;
///
/// let recorder = RecordingNotifier::new();
/// let gate = tollgate::Gate::builder()
///     .secret("a secret of at least sixteen bytes")
///     .notifier(recorder.clone())
///     .build()
///     .unwrap();
/// assert!(recorder.alerts().is_empty());
/// # let _ = gate;
/// ```
#[derive(Clone, Debug, Default)]
pub struct RecordingNotifier {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    record: Mutex<Record>,
    changed: Notify,
    failing: AtomicBool,
}

#[derive(Debug, Default)]
struct Record {
    alerts: Vec<Alert>,
    resolutions: Vec<Resolution>,
    next_alert: usize,
    next_resolution: usize,
}

impl RecordingNotifier {
    /// A recorder that accepts every alert.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder that refuses every alert.
    pub fn failing() -> Self {
        let recorder = Self::new();
        recorder.set_failing(true);
        recorder
    }

    /// Makes later alerts fail, or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.inner
            .record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every alert accepted so far.
    pub fn alerts(&self) -> Vec<Alert> {
        self.record().alerts.clone()
    }

    /// Every resolution heard so far.
    pub fn resolutions(&self) -> Vec<Resolution> {
        self.record().resolutions.clone()
    }

    /// The code sent for request `id`, if it was alerted.
    pub fn code(&self, id: RequestId) -> Option<VerificationCode> {
        self.record()
            .alerts
            .iter()
            .find(|a| a.request().id() == id)
            .map(|a| a.code().clone())
    }

    /// Waits for the next alert not yet taken by this method.
    pub async fn next_alert(&self) -> Alert {
        self.next(|r| {
            let alert = r.alerts.get(r.next_alert).cloned()?;
            r.next_alert += 1;
            Some(alert)
        })
        .await
    }

    /// Waits for the next resolution not yet taken by this method.
    pub async fn next_resolution(&self) -> Resolution {
        self.next(|r| {
            let resolution = r.resolutions.get(r.next_resolution).cloned()?;
            r.next_resolution += 1;
            Some(resolution)
        })
        .await
    }

    async fn next<T>(&self, mut take: impl FnMut(&mut Record) -> Option<T>) -> T {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(item) = take(&mut self.record()) {
                return item;
            }
            changed.await;
        }
    }
}

impl Notifier for RecordingNotifier {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        let result = if self.inner.failing.load(Ordering::SeqCst) {
            Err(NotifyError::new("the recording notifier was told to fail"))
        } else {
            self.record().alerts.push(alert.clone());
            self.inner.changed.notify_waiters();
            Ok(())
        };
        Box::pin(async move { result })
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        self.record().resolutions.push(resolution.clone());
        self.inner.changed.notify_waiters();
        Box::pin(async { Ok(()) })
    }

    fn name(&self) -> &str {
        "recording"
    }
}
