//! Notifiers made of notifiers: fan-out, fallback, timeout, naming, and bounded concurrency.
//!
//! Long by design: five small combinators, each with its own future.

use std::borrow::Cow;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use rustc_hash::FxHashSet;
use tokio::sync::Notify;

use super::{Alert, Notifier, NotifyError, Resolution};

use crate::boxed::BoxFuture;
use crate::id::RequestId;

/// Combinators on every [`Notifier`].
///
/// ```
/// use std::time::Duration;
/// use tollgate::notify::{FanOut, NotifierExt, RecordingNotifier, TerminalNotifier};
///
/// let pager = RecordingNotifier::new().named("pager");
/// // The pager gets 3 s; if it fails or hangs, the alert goes to the terminal instead. A chat
/// // channel hears of every request as well.
/// let notifier = FanOut::new()
///     .with(pager.timeout(Duration::from_secs(3)).or_else(TerminalNotifier::stderr()))
///     .with(RecordingNotifier::new().named("chat"));
/// # let _ = notifier;
/// ```
pub trait NotifierExt: Notifier + Sized {
    /// Sends through `self`, and through `fallback` only if `self` fails. The request's
    /// resolution goes to whichever of the two delivered its alert.
    fn or_else<F: Notifier>(self, fallback: F) -> Fallback<Self, F> {
        Fallback {
            primary: self,
            fallback,
            fell_back: Sent::default(),
        }
    }

    /// Fails with a timeout error when `self` takes longer than `limit`, so a fallback can take
    /// over before the gate's own notify timeout passes.
    fn timeout(self, limit: Duration) -> Timeout<Self> {
        Timeout { inner: self, limit }
    }

    /// Names the channel in logs and in [`ChannelsFailed`] reports.
    fn named(self, name: impl Into<Cow<'static, str>>) -> Named<Self> {
        Named {
            inner: self,
            name: name.into(),
        }
    }
}

impl<N: Notifier> NotifierExt for N {}

/// Sends every alert to all its channels at once; see [`FanOut::with`].
///
/// It succeeds when at least one channel accepted. Channels that failed are logged by name, and
/// when every channel fails the error is a [`ChannelsFailed`] saying what happened to each. The
/// gate itself fans out to the notifiers it was built with.
#[derive(Default)]
pub struct FanOut {
    channels: Vec<Channel>,
    within: Option<Duration>,
}

struct Channel {
    notifier: Box<dyn Notifier>,
    /// At most this many deliveries at once, when bounded: a channel that hangs holds only its
    /// own slots and delays no other channel.
    slots: Option<Slots>,
}

impl Channel {
    /// Starts `call` on this channel: at once if it has a free slot, else once one frees up.
    fn start<'a: 'b, 'b, F>(&'a self, call: &'b F, report: &mut Report) -> Option<Busy<'b>>
    where
        F: Fn(&'a dyn Notifier) -> BoxFuture<'a, Result<(), NotifyError>> + Sync,
    {
        let notifier = &*self.notifier;
        let (slot, wait_for) = match &self.slots {
            None => (None, None),
            Some(slots) => match slots.try_take() {
                Some(slot) => (Some(slot), None),
                // All slots taken: wait for one, within the same time limit.
                None => (None, Some(slots)),
            },
        };
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| match wait_for {
            None => call(notifier),
            Some(slots) => Box::pin(async move {
                let _slot = slots.take().await;
                call(notifier).await
            }),
        }));
        match started {
            Ok(future) => Some(Busy {
                name: notifier.name(),
                _slot: slot,
                call: future,
            }),
            Err(_) => {
                report.fail(notifier.name(), NotifyError::panicked());
                None
            }
        }
    }
}

/// A delivery under way.
struct Busy<'b> {
    name: &'b str,
    _slot: Option<Slot<'b>>,
    call: BoxFuture<'b, Result<(), NotifyError>>,
}

/// A counting limit that costs one atomic operation to take and give back when a slot is free
/// (a semaphore would also lock its wait list on every release).
struct Slots {
    limit: usize,
    taken: AtomicUsize,
    /// Deliveries waiting for a slot; a freed slot wakes one of them.
    waiting: AtomicUsize,
    freed: Notify,
}

/// A taken slot, given back on drop.
struct Slot<'b>(&'b Slots);

impl Slots {
    fn new(limit: usize) -> Self {
        Slots {
            limit,
            taken: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    fn try_take(&self) -> Option<Slot<'_>> {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }

    async fn take(&self) -> Slot<'_> {
        // Counted before looking, so a slot freed after the look wakes this waiter; uncounted on
        // drop, also when the wait is abandoned.
        struct Waiting<'b>(&'b AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_take() {
                return slot;
            }
            freed.await;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::SeqCst);
        // A wake-up stored with nobody to take it is harmless: its taker looks again.
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.freed.notify_one();
        }
    }
}

impl fmt::Debug for FanOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.channels.iter().map(|c| c.notifier.name()).collect();
        f.debug_struct("FanOut")
            .field("channels", &names)
            .field("within", &self.within)
            .finish()
    }
}

impl FanOut {
    /// A fan-out with no channel yet; it fails every alert until one is added.
    pub fn new() -> Self {
        FanOut::default()
    }

    /// Adds a channel.
    pub fn with(mut self, channel: impl Notifier) -> Self {
        self.channels.push(Channel {
            notifier: Box::new(channel),
            slots: None,
        });
        self
    }

    /// These channels, then `other`'s.
    pub(crate) fn extend(mut self, other: FanOut) -> Self {
        self.channels.extend(other.channels);
        self
    }

    /// Lets each channel run at most `slots` deliveries at once; more wait for a free slot.
    pub(crate) fn bounded(mut self, slots: usize) -> Self {
        for channel in &mut self.channels {
            channel.slots = Some(Slots::new(slots));
        }
        self
    }

    /// Stops waiting after `limit`: channels still busy then count as timed out.
    pub fn within(mut self, limit: Duration) -> Self {
        self.within = Some(limit);
        self
    }

    /// How many channels there are.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there is no channel.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Starts `call` on every channel and drives them all in this one task until each is done or
    /// the time is up. A channel that panics counts as failed, and so does one still busy then.
    ///
    /// Each call is polled as soon as it starts; only calls that are not done at once are kept,
    /// and only then is a timer set, so channels that answer at once cost no allocation here.
    pub(crate) async fn each<'a>(
        &'a self,
        call: impl Fn(&'a dyn Notifier) -> BoxFuture<'a, Result<(), NotifyError>> + Sync,
    ) -> Report {
        let call = &call;
        let mut report = Report::default();
        let mut busy: Vec<Busy<'_>> = Vec::new();
        let mut unstarted = Some(self.channels.iter());
        let limit = self
            .within
            .map(|limit| (tokio::time::Instant::now() + limit, limit));
        let deadline = None;
        tokio::pin!(deadline);
        std::future::poll_fn(|cx| {
            if let Some(channels) = unstarted.take() {
                for channel in channels {
                    if let Some(mut started) = channel.start(call, &mut report)
                        && !poll_call(&mut started, cx, &mut report)
                    {
                        busy.push(started);
                    }
                }
            } else {
                busy.retain_mut(|busy| !poll_call(busy, cx, &mut report));
            }
            if busy.is_empty() {
                return Poll::Ready(());
            }
            let Some((at, limit)) = limit else {
                return Poll::Pending;
            };
            if deadline.is_none() {
                deadline.set(Some(tokio::time::sleep_until(at)));
            }
            let expired = deadline
                .as_mut()
                .as_pin_mut()
                .is_some_and(|deadline| deadline.poll(cx).is_ready());
            if expired {
                for busy in busy.drain(..) {
                    report.fail(busy.name, NotifyError::timed_out(limit));
                }
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
        report
    }
}

/// Polls one call; `true` once it is done, with its result in the report.
fn poll_call(busy: &mut Busy<'_>, cx: &mut std::task::Context<'_>, report: &mut Report) -> bool {
    match std::panic::catch_unwind(AssertUnwindSafe(|| busy.call.as_mut().poll(cx))) {
        Ok(Poll::Pending) => return false,
        Ok(Poll::Ready(Ok(()))) => {
            crate::meters::delivery(busy.name, true);
            report.accepted += 1;
        }
        Ok(Poll::Ready(Err(error))) => report.fail(busy.name, error),
        Err(_) => report.fail(busy.name, NotifyError::panicked()),
    }
    true
}

impl Notifier for FanOut {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let report = self.each(|channel| channel.notify(alert)).await;
            report.into_result("notify", alert.request().id())
        })
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let report = self.each(|channel| channel.on_resolved(resolution)).await;
            report.into_result("on_resolved", resolution.request().id())
        })
    }

    fn name(&self) -> &str {
        "fan_out"
    }
}

/// What a fan-out's channels did.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) accepted: usize,
    pub(crate) failed: Vec<(String, NotifyError)>,
}

impl Report {
    fn fail(&mut self, name: &str, error: NotifyError) {
        crate::meters::delivery(name, false);
        self.failed.push((name.to_owned(), error));
    }

    /// Logs each failed channel by name.
    pub(crate) fn log(&self, what: &'static str, request_id: RequestId) {
        for (channel, error) in &self.failed {
            tracing::warn!(%request_id, channel, %error, what, "notifier failed");
        }
    }

    /// `Ok` if any channel accepted, or there were none to fail.
    fn into_result(self, what: &'static str, request_id: RequestId) -> Result<(), NotifyError> {
        self.log(what, request_id);
        if self.accepted > 0 || self.failed.is_empty() {
            Ok(())
        } else {
            Err(NotifyError::new(ChannelsFailed {
                failures: self.failed,
            }))
        }
    }
}

/// Every channel of a [`FanOut`] failed; says which, and why.
#[derive(Debug)]
pub struct ChannelsFailed {
    failures: Vec<(String, NotifyError)>,
}

impl ChannelsFailed {
    /// Each channel's name and error.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &NotifyError)> {
        self.failures.iter().map(|(name, error)| (&**name, error))
    }
}

impl fmt::Display for ChannelsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("every channel failed")?;
        for (i, (name, error)) in self.failures.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{name}: {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ChannelsFailed {}

/// Sends through a primary notifier, and through the fallback only when the primary fails; made
/// by [`NotifierExt::or_else`].
pub struct Fallback<P, F> {
    primary: P,
    fallback: F,
    /// Requests whose alert went through the fallback, so their resolution goes there too.
    fell_back: Sent,
}

/// The requests a notifier delivered an alert for and has not yet heard the end of, so that
/// follow-ups go where the alert went.
///
/// Bounded: past [`Sent::CAPACITY`] (more than the gate's default pending cap) it forgets
/// everything, and those requests get no follow-up.
#[derive(Debug, Default)]
pub(crate) struct Sent(Mutex<FxHashSet<RequestId>>);

impl Sent {
    const CAPACITY: usize = 16_384;

    fn ids(&self) -> std::sync::MutexGuard<'_, FxHashSet<RequestId>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, id: RequestId) {
        let mut ids = self.ids();
        if ids.len() >= Self::CAPACITY {
            ids.clear();
        }
        ids.insert(id);
    }

    /// Whether `id` was delivered; forgets it.
    pub(crate) fn take(&self, id: RequestId) -> bool {
        self.ids().remove(&id)
    }
}

impl<P: Notifier, F: Notifier> fmt::Debug for Fallback<P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("primary", &self.primary.name())
            .field("fallback", &self.fallback.name())
            .finish_non_exhaustive()
    }
}

impl<P: Notifier, F: Notifier> Notifier for Fallback<P, F> {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let first = match self.primary.notify(alert).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let id = alert.request().id();
            tracing::warn!(
                request_id = %id,
                channel = self.primary.name(),
                fallback = self.fallback.name(),
                error = %first,
                "notifier failed; trying its fallback"
            );
            match self.fallback.notify(alert).await {
                Ok(()) => {
                    self.fell_back.insert(id);
                    Ok(())
                }
                Err(second) => Err(NotifyError::new(ChannelsFailed {
                    failures: vec![
                        (self.primary.name().to_owned(), first),
                        (self.fallback.name().to_owned(), second),
                    ],
                })),
            }
        })
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        if self.fell_back.take(resolution.request().id()) {
            self.fallback.on_resolved(resolution)
        } else {
            self.primary.on_resolved(resolution)
        }
    }

    fn name(&self) -> &str {
        self.primary.name()
    }
}

/// A notifier with a time limit; made by [`NotifierExt::timeout`].
#[derive(Debug)]
pub struct Timeout<N> {
    inner: N,
    limit: Duration,
}

impl<N: Notifier> Notifier for Timeout<N> {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        within(self.limit, self.inner.notify(alert))
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        within(self.limit, self.inner.on_resolved(resolution))
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

fn within(
    limit: Duration,
    call: BoxFuture<'_, Result<(), NotifyError>>,
) -> BoxFuture<'_, Result<(), NotifyError>> {
    Box::pin(async move {
        tokio::time::timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(NotifyError::timed_out(limit)))
    })
}

/// A notifier with a name of the user's choosing; made by [`NotifierExt::named`].
#[derive(Debug)]
pub struct Named<N> {
    inner: N,
    name: Cow<'static, str>,
}

impl<N: Notifier> Notifier for Named<N> {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        self.inner.notify(alert)
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        self.inner.on_resolved(resolution)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
