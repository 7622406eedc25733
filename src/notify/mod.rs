//! Telling people that a call waits for them.
//!
//! A [`Notifier`] delivers an [`Alert`] (the access request and its verification code) to
//! whoever may approve, and hears the [`Resolution`] when the request ends. The gate alerts every
//! configured notifier at once, each bounded by the notify timeout, off the caller's path. If none
//! accepts, the call fails closed with `notification_failed`: nothing waits unseen.
//!
//! # Writing a notifier
//!
//! Implement [`notify`](Notifier::notify); [`on_resolved`](Notifier::on_resolved) is optional.
//! Return `Ok` only once the alert is on its way: the gate counts it as delivered. The code is a
//! bearer secret: put it in your channel's message and nowhere else (not in logs or errors).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tollgate::notify::{Alert, BoxFuture, Notifier, NotifyError};
//!
//! /// Keeps alerts in an in-memory inbox.
//! #[derive(Default)]
//! struct Inbox(Mutex<Vec<String>>);
//!
//! impl Notifier for Inbox {
//!     fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
//!         let line = format!(
//!             "{} wants {}: code {}",
//!             alert.request().principal(),
//!             alert.request().capability(),
//!             alert.code().reveal(),
//!         );
//!         self.0.lock().unwrap().push(line);
//!         Box::pin(async { Ok(()) })
//!     }
//! }
//! ```
//!
//! For a one-off, [`notifier_fn`] turns a closure into a notifier.

mod combine;
#[cfg(feature = "email")]
mod email;
mod recording;
pub mod signature;
#[cfg(feature = "webhook")]
mod slack;
mod template;
mod terminal;
#[cfg(feature = "webhook")]
mod webhook;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub(crate) use self::combine::Bounded;
#[cfg(feature = "email")]
pub(crate) use self::combine::Sent;
pub use self::combine::{ChannelsFailed, Fallback, FanOut, Named, NotifierExt, Timeout};
#[cfg(feature = "email")]
pub use self::email::{
    DEFAULT_FOLLOW_UP, DEFAULT_HTML, DEFAULT_SUBJECT, DEFAULT_TEXT, EmailBuilder, EmailNotifier,
    SmtpTransport,
};
pub use self::recording::RecordingNotifier;
#[cfg(feature = "webhook")]
pub use self::slack::{DEFAULT_CHAT_FOLLOW_UP, DEFAULT_CHAT_TEXT, SlackBuilder, SlackNotifier};
pub use self::template::Template;
pub use self::terminal::TerminalNotifier;
#[cfg(feature = "webhook")]
pub use self::webhook::{
    CREATED, DeliveryFailed, IncludeCode, RESOLVED, WebhookBuilder, WebhookNotifier,
};

use crate::error::BoxError;
use crate::gate::{AccessRequest, Outcome, VerificationCode};

/// A boxed future, as notifier methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Delivers access requests to people. Usable as `Arc<dyn Notifier>`.
///
/// New hooks arrive as methods with default bodies, so implementations keep compiling.
pub trait Notifier: Send + Sync + 'static {
    /// Sends the alert. `Ok` means it is on its way to a person.
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>>;

    /// Hears how a request ended: approved, denied, expired, cancelled, failed. Errors are logged.
    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        let _ = resolution;
        Box::pin(async { Ok(()) })
    }

    /// The channel's name in logs and failure reports, such as `email`. Defaults to the type's
    /// name; [`NotifierExt::named`] sets another.
    fn name(&self) -> &str {
        let name = std::any::type_name::<Self>();
        let name = name.split('<').next().unwrap_or(name);
        name.rsplit("::").next().unwrap_or(name)
    }
}

impl<N: Notifier + ?Sized> Notifier for Arc<N> {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        (**self).notify(alert)
    }
    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        (**self).on_resolved(resolution)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

impl<N: Notifier + ?Sized> Notifier for Box<N> {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        (**self).notify(alert)
    }
    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        (**self).on_resolved(resolution)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

/// What a notifier is asked to deliver: the request and its verification code.
#[derive(Clone, Debug)]
pub struct Alert {
    request: Arc<AccessRequest>,
    code: VerificationCode,
}

impl Alert {
    pub(crate) fn new(request: Arc<AccessRequest>, code: VerificationCode) -> Self {
        Alert { request, code }
    }

    /// The access request.
    pub fn request(&self) -> &AccessRequest {
        &self.request
    }

    /// The code the approver must type. Show it in your channel only.
    pub fn code(&self) -> &VerificationCode {
        &self.code
    }
}

/// How a request ended, for [`Notifier::on_resolved`].
#[derive(Clone, Debug)]
pub struct Resolution {
    request: Arc<AccessRequest>,
    outcome: Outcome,
}

impl Resolution {
    pub(crate) fn new(request: Arc<AccessRequest>, outcome: Outcome) -> Self {
        Resolution { request, outcome }
    }

    /// The access request.
    pub fn request(&self) -> &AccessRequest {
        &self.request
    }

    /// How it ended.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }
}

/// A notifier could not deliver. Keeps its cause.
#[derive(Debug)]
pub struct NotifyError {
    source: BoxError,
    timed_out: bool,
}

impl NotifyError {
    /// A failure caused by `source`.
    pub fn new(source: impl Into<BoxError>) -> Self {
        NotifyError {
            source: source.into(),
            timed_out: false,
        }
    }

    /// The channel did not finish within `limit`.
    pub fn timed_out(limit: std::time::Duration) -> Self {
        NotifyError {
            source: format!("timed out after {limit:?}").into(),
            timed_out: true,
        }
    }

    #[cfg(feature = "webhook")]
    pub(crate) fn marked_timeout(mut self) -> Self {
        self.timed_out = true;
        self
    }

    pub(crate) fn panicked() -> Self {
        NotifyError::new("the notifier panicked")
    }

    /// Whether the channel ran out of time (as opposed to refusing or breaking).
    pub fn is_timeout(&self) -> bool {
        self.timed_out
    }

    /// The stable code: `notification_failed`.
    pub fn code(&self) -> &'static str {
        "notification_failed"
    }
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "notification_failed: {}", self.source)
    }
}

impl std::error::Error for NotifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Makes a notifier from a closure that receives each alert.
///
/// ```
/// use tollgate::notify::notifier_fn;
///
/// let notifier = notifier_fn(|alert| async move {
///     println!("{} needs a decision", alert.request().id());
///     Ok(())
/// });
/// # let _ = notifier;
/// ```
pub fn notifier_fn<F, Fut>(f: F) -> NotifierFn<F>
where
    F: Fn(Alert) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), NotifyError>> + Send + 'static,
{
    NotifierFn { f }
}

/// A [`Notifier`] made from a closure by [`notifier_fn`].
#[derive(Clone, Copy)]
pub struct NotifierFn<F> {
    f: F,
}

impl<F> fmt::Debug for NotifierFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifierFn").finish_non_exhaustive()
    }
}

impl<F, Fut> Notifier for NotifierFn<F>
where
    F: Fn(Alert) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), NotifyError>> + Send + 'static,
{
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin((self.f)(alert.clone()))
    }

    fn name(&self) -> &str {
        "notifier_fn"
    }
}
