//! Telling people that a call waits for them.
//!
//! A [`Notifier`] delivers an [`Alert`] (the access request and its verification code) to
//! whoever may approve, and hears the [`Resolution`] when the request ends. The gate alerts all
//! its notifiers at once, off the caller's path, each with at most
//! [`alert_concurrency`](crate::gate::GateBuilder::alert_concurrency) deliveries in flight, all within
//! the [`notify_timeout`](crate::gate::GateBuilder::notify_timeout). If none accepts, the call fails
//! closed with `notification_failed`: nothing waits unseen.
//!
//! | notifier | feature | channel |
//! |---|---|---|
//! | [`TerminalNotifier`] | | a block on stderr, stdout or any writer |
//! | `EmailNotifier` | `email` | SMTP with STARTTLS or TLS; a threaded follow-up on resolution |
//! | `WebhookNotifier` | `webhook` | signed JSON events, retried with backoff |
//! | `SlackNotifier` | `webhook` | Slack-compatible incoming webhooks |
//! | [`RecordingNotifier`] | | in memory, for tests and in-process approvers |
//!
//! Combine them with [`FanOut`] and [`NotifierExt`]: `email.timeout(d).or_else(terminal)`.
//!
//! # Writing a notifier
//!
//! A notifier is any `Send + Sync + 'static` type with a [`notify`](Notifier::notify) method.
//! Walking through one that posts to an in-memory chat room:
//!
//! ```
//! use std::sync::Mutex;
//! use tollgate::notify::{Alert, BoxFuture, Notifier, NotifyError, Resolution};
//!
//! #[derive(Default)]
//! struct ChatRoom {
//!     messages: Mutex<Vec<String>>,
//!     down: bool,
//! }
//!
//! impl ChatRoom {
//!     // 1. The delivery itself. Real channels do I/O here, asynchronously: the gate polls
//!     //    every notifier's future once where the request was stored (often in the
//!     //    caller's task), then in a task of its own while it waits; no caller waits for it.
//!     async fn post(&self, text: String) -> Result<(), NotifyError> {
//!         if self.down {
//!             // 2. Failures keep their cause: `NotifyError::new` takes any error.
//!             return Err(NotifyError::new("the chat room is down"));
//!         }
//!         self.messages.lock().unwrap().push(text);
//!         Ok(())
//!     }
//! }
//!
//! impl Notifier for ChatRoom {
//!     fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
//!         // 3. Everything an approver needs is on the request; the code comes separately and
//!         //    goes into the message only: never into a log line, an error or `Debug` output.
//!         let request = alert.request();
//!         let text = format!(
//!             "{} wants {} ({}); code {}",
//!             request.principal(),
//!             request.capability(),
//!             request.args_json(),
//!             alert.code().reveal(),
//!         );
//!         // 4. Return `Ok` only once the message is on its way: the gate counts it as
//!         //    delivered, and fails the call closed if no notifier says so.
//!         Box::pin(self.post(text))
//!     }
//!
//!     // 5. Optional: hear how the request ended, to close the loop for the approver.
//!     fn on_resolved<'a>(
//!         &'a self,
//!         resolution: &'a Resolution,
//!     ) -> BoxFuture<'a, Result<(), NotifyError>> {
//!         let text = format!("{}: {:?}", resolution.request().id(), resolution.outcome().status());
//!         Box::pin(self.post(text))
//!     }
//!
//!     // 6. Optional: the name in logs and failure reports.
//!     fn name(&self) -> &str {
//!         "chat_room"
//!     }
//! }
//! ```
//!
//! More to know:
//! - Timeouts and retries: the gate stops waiting after its notify timeout and drops your
//!   future; wrap a notifier in [`NotifierExt::timeout`] to hand over to a fallback sooner.
//!   Retry inside `notify` only what is safe to repeat.
//! - Panics are caught and count as a failure, but do not rely on it.
//! - Machine-readable payloads: [`AccessRequest`] and [`Outcome`] serialize to JSON (never with
//!   the code), as the webhook sends them.
//! - Let users change the wording with a [`Template`] (`{capability}`, `{code}`, …).
//! - Test it with a real gate: a [`RecordingNotifier`] beside yours gives the test the code to
//!   approve with. `examples/custom_notifier.rs` is a complete notifier writing to a file.
//!
//! For a one-off, [`notifier_fn`] turns a closure into a notifier.

mod combine;
#[cfg(feature = "email")]
mod email;
mod recording;
pub mod signature;
#[cfg(feature = "webhook")]
mod slack;
pub(crate) mod template;
mod terminal;
#[cfg(feature = "webhook")]
mod webhook;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

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
pub use self::webhook::{CREATED, DeliveryFailed, RESOLVED, WebhookBuilder, WebhookNotifier};
pub use crate::text::{value_covers, visible};

pub use crate::boxed::BoxFuture;
pub use crate::code::VerificationCode;
use crate::error::BoxError;
use crate::request::{AccessRequest, Outcome};

/// Whether webhook payloads carry the verification code.
///
/// The code lets whoever reads the payload approve, so it goes only where you trust the channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IncludeCode {
    /// Only when the URL is `https`. The default.
    #[default]
    HttpsOnly,
    /// Always, even over plain HTTP.
    Always,
    /// Never: approvers get the code another way (another notifier, the approval page).
    Never,
}

/// Delivers access requests to people. Usable as `Arc<dyn Notifier>`.
///
/// New hooks arrive as methods with default bodies, so implementations keep compiling.
pub trait Notifier: Send + Sync + 'static {
    /// Sends the alert. `Ok` means it is on its way to a person.
    ///
    /// The gate polls the future once on the spot, often in the task of the call that made the
    /// request, and moves it to a task of its own if it is not done: do I/O asynchronously, and
    /// blocking work with `tokio::task::spawn_blocking`, never in the poll itself.
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

/// Each approver's own code, by name.
pub(crate) type ApproverCodes = Box<[(Box<str>, VerificationCode)]>;

/// What a notifier is asked to deliver: the request and its verification code, or for a
/// request several approvers must approve ([`AccessRequest::quorum`]), each approver's own.
#[derive(Clone, Debug)]
pub struct Alert {
    request: Arc<AccessRequest>,
    code: VerificationCode,
    /// Each approver's code, for a quorum: boxed, as most requests have none.
    codes: Option<Box<ApproverCodes>>,
}

impl Alert {
    pub(crate) fn new(
        request: Arc<AccessRequest>,
        code: VerificationCode,
        codes: Option<Box<ApproverCodes>>,
    ) -> Self {
        Alert {
            request,
            code,
            codes,
        }
    }

    /// The access request.
    pub fn request(&self) -> &AccessRequest {
        &self.request
    }

    /// The code the approver must type. Show it in your channel only.
    ///
    /// A request several approvers must approve (a quorum) accepts this code from nobody: each
    /// approver has their own, [`codes`](Self::codes), to be delivered to them alone.
    pub fn code(&self) -> &VerificationCode {
        &self.code
    }

    /// Each approver's own code, for a request several approvers must approve: give each one
    /// to its approver only, since whoever holds it approves as them. Empty for a request that
    /// one approver decides, whose code is [`code`](Self::code).
    pub fn codes(&self) -> impl Iterator<Item = (&str, &VerificationCode)> {
        self.codes
            .iter()
            .flat_map(|codes| codes.iter())
            .map(|(approver, code)| (&**approver, code))
    }

    /// The code `approver` types: their own for a quorum (`None` if they are not one of its
    /// approvers), the request's otherwise.
    pub fn code_for(&self, approver: &str) -> Option<&VerificationCode> {
        match &self.codes {
            Some(codes) => codes.iter().find(|(a, _)| &**a == approver).map(|(_, c)| c),
            None => Some(&self.code),
        }
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
