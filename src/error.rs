//! Errors with stable snake_case codes.
//!
//! Every failure tollgate produces is an [`Error`] whose [`ErrorKind`] has a stable
//! [`code`](ErrorKind::code), such as `access_request_denied`, for JSON APIs, logs and language
//! models. Through the middleware the error arrives as a [`BoxError`]; downcast it to read the code:
//!
//! ```
//! use tollgate::{BoxError, Error, ErrorKind};
//!
//! fn explain(err: &BoxError) -> &'static str {
//!     match err.downcast_ref::<Error>() {
//!         Some(e) => e.code(),
//!         None => "inner_service_error",
//!     }
//! }
//! let err: BoxError = Error::new(ErrorKind::AccessRequestDenied).into();
//! assert_eq!(explain(&err), "access_request_denied");
//! ```
//!
//! Messages say what happened and whether retrying can help, and never carry a verification code.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::id::{RequestId, RuleId};

/// The error type of boxed errors at the middleware boundary, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong; each kind has a stable [`code`](ErrorKind::code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A person, the policy, or a remembered denial refused the call.
    AccessRequestDenied,
    /// Nobody decided before the request's TTL ran out.
    AccessRequestExpired,
    /// Every caller waiting on the request went away before it was approved.
    AccessRequestCancelled,
    /// No pending request has this id and code. A wrong code and an unknown id look the same.
    AccessRequestNotFound,
    /// The request was already decided.
    AlreadyResolved,
    /// This approver already approved the request, which needs several approvers to approve.
    AlreadyApproved,
    /// The process that held the request stopped before it was decided; its caller is gone.
    AccessRequestAbandoned,
    /// Too many wrong codes: the request was denied.
    TooManyAttempts,
    /// The approval asked for a wider scope or longer TTL than the request allows.
    ScopeNotAllowed,
    /// The approval changed the call's arguments, and may not: the policy does not let this
    /// request be edited, the edited call would be denied, or the edit changes more than the
    /// arguments (the capability, the principal, an HTTP request's path).
    EditNotAllowed,
    /// The approval changed the call's arguments, and the call's type cannot be rebuilt from
    /// arguments ([`Call::edited`](crate::Call::edited) is not implemented for it).
    EditUnsupported,
    /// The approver's rights do not cover this: revoking rules of a capability they may not
    /// decide, revoking every rule or reading the audit trail without rights over every
    /// capability. (An approver who may not decide a request hears `access_request_not_found`,
    /// as for an unknown id.)
    ApproverNotAllowed,
    /// The policy requires the caller to say why, and the call gave no reason.
    ReasonRequired,
    /// The HTTP request's body is larger than the gate reads.
    BodyTooLarge,
    /// The gated service itself failed; answered over HTTP without repeating its error.
    ServiceFailed,
    /// The caller, or the gate as a whole, has too many requests waiting already.
    TooManyPending,
    /// The caller's principal asked for more new approvals than the notification rate allows.
    TooManyAlerts,
    /// No notifier accepted the alert, so nobody could approve the call.
    NotificationFailed,
    /// `wait` gave up before a decision; the request itself is still pending.
    WaitTimedOut,
    /// The call's arguments are not acceptable JSON (a duplicate key, trailing text).
    InvalidArguments,
    /// The gate was built with an invalid setting.
    InvalidConfig,
    /// The configuration file could not be read, or is not TOML: the detail names the file and,
    /// for TOML, the line and column.
    ConfigUnreadable,
    /// The gate was built without a secret and without asking for a random one.
    MissingSecret,
    /// An approve or deny did not say who decided.
    MissingApprover,
    /// The gate was used outside a Tokio runtime.
    NoRuntime,
    /// The store could not read or write; nothing was decided.
    StoreFailed,
    /// The store's data is not a tollgate database, is damaged, or is newer than this version.
    StoreUnreadable,
    /// The gate is shutting down: it parks no new call, and calls it held were let go.
    ShutDown,
}

impl ErrorKind {
    /// Every kind, for tables of codes and tests that must see each one.
    pub const ALL: &'static [ErrorKind] = &[
        Self::AccessRequestDenied,
        Self::AccessRequestExpired,
        Self::AccessRequestCancelled,
        Self::AccessRequestNotFound,
        Self::AlreadyResolved,
        Self::AlreadyApproved,
        Self::AccessRequestAbandoned,
        Self::TooManyAttempts,
        Self::ScopeNotAllowed,
        Self::EditNotAllowed,
        Self::EditUnsupported,
        Self::ApproverNotAllowed,
        Self::ReasonRequired,
        Self::BodyTooLarge,
        Self::ServiceFailed,
        Self::TooManyPending,
        Self::TooManyAlerts,
        Self::NotificationFailed,
        Self::WaitTimedOut,
        Self::InvalidArguments,
        Self::InvalidConfig,
        Self::ConfigUnreadable,
        Self::MissingSecret,
        Self::MissingApprover,
        Self::NoRuntime,
        Self::StoreFailed,
        Self::StoreUnreadable,
        Self::ShutDown,
    ];

    /// The stable snake_case code, e.g. `access_request_denied`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::AccessRequestDenied => "access_request_denied",
            Self::AccessRequestExpired => "access_request_expired",
            Self::AccessRequestCancelled => "access_request_cancelled",
            Self::AccessRequestNotFound => "access_request_not_found",
            Self::AlreadyResolved => "already_resolved",
            Self::AlreadyApproved => "already_approved",
            Self::AccessRequestAbandoned => "access_request_abandoned",
            Self::TooManyAttempts => "too_many_attempts",
            Self::ScopeNotAllowed => "scope_not_allowed",
            Self::EditNotAllowed => "edit_not_allowed",
            Self::EditUnsupported => "edit_unsupported",
            Self::ApproverNotAllowed => "approver_not_allowed",
            Self::ReasonRequired => "reason_required",
            Self::BodyTooLarge => "body_too_large",
            Self::ServiceFailed => "service_failed",
            Self::TooManyPending => "too_many_pending",
            Self::TooManyAlerts => "too_many_alerts",
            Self::NotificationFailed => "notification_failed",
            Self::WaitTimedOut => "wait_timed_out",
            Self::InvalidArguments => "invalid_arguments",
            Self::InvalidConfig => "invalid_config",
            Self::ConfigUnreadable => "config_unreadable",
            Self::MissingSecret => "missing_secret",
            Self::MissingApprover => "missing_approver",
            Self::NoRuntime => "no_runtime",
            Self::StoreFailed => "store_failed",
            Self::StoreUnreadable => "store_unreadable",
            Self::ShutDown => "gate_shut_down",
        }
    }

    /// Whether trying the same thing again later can succeed.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::AccessRequestExpired
                | Self::AccessRequestCancelled
                | Self::TooManyPending
                | Self::TooManyAlerts
                | Self::NotificationFailed
                | Self::WaitTimedOut
                | Self::StoreFailed
                | Self::ShutDown
        )
    }

    /// What happened, in a sentence fit for a person or a language model.
    const fn message(self) -> &'static str {
        match self {
            Self::AccessRequestDenied => {
                "the call was denied and did not run; do not retry it as is"
            }
            Self::AccessRequestExpired => {
                "nobody approved the call before its access request expired; it did not run and may be retried"
            }
            Self::AccessRequestCancelled => {
                "the access request was cancelled because its caller went away; the call did not run"
            }
            Self::AccessRequestNotFound => "no pending access request has this id and code",
            Self::AlreadyResolved => "the access request was already decided",
            Self::AlreadyApproved => {
                "this approver already approved the access request; it waits for other approvers"
            }
            Self::AccessRequestAbandoned => {
                "the process holding the access request stopped before it was decided; its caller is gone and nothing ran"
            }
            Self::TooManyAttempts => {
                "too many wrong verification codes were entered; the access request was denied"
            }
            Self::ScopeNotAllowed => {
                "the approval asks for a wider scope or a longer TTL than this access request allows"
            }
            Self::EditNotAllowed => {
                "the approval may not change these arguments; the access request is still pending, approve it as asked or deny it"
            }
            Self::EditUnsupported => {
                "this kind of call cannot be rebuilt from edited arguments; the access request is still pending, approve it as asked or deny it"
            }
            Self::ApproverNotAllowed => "this approver's rights do not cover this",
            Self::ReasonRequired => {
                "this capability needs a reason from the caller; the call did not run, retry it with a reason"
            }
            Self::BodyTooLarge => {
                "the request body is larger than the gate reads; the call did not run and no one was asked"
            }
            Self::ServiceFailed => "the service behind the gate failed; its own logs say why",
            Self::TooManyPending => {
                "too many access requests are already waiting for a person; the call did not run, retry after some are decided"
            }
            Self::TooManyAlerts => {
                "this caller asked for approval too often; the call did not run and no one was alerted, retry later"
            }
            Self::NotificationFailed => {
                "no approver could be notified, so the call did not run; retrying may help once notifications work"
            }
            Self::WaitTimedOut => {
                "no decision yet; the access request is still pending and can be waited on again"
            }
            Self::InvalidArguments => "the call's arguments are not acceptable JSON",
            Self::InvalidConfig => "the configuration cannot be used as written",
            Self::ConfigUnreadable => "the configuration file cannot be read",
            Self::MissingSecret => {
                "no secret was given, and verification codes are derived from one"
            }
            Self::MissingApprover => "a decision must say who made it: call `.by(approver)`",
            Self::NoRuntime => "tollgate must run inside a Tokio runtime",
            Self::StoreFailed => {
                "the store could not be read or written, so nothing was decided and the call did not run; retrying may help"
            }
            Self::StoreUnreadable => {
                "the store holds data this version cannot read: another program's database, a damaged one, or a newer schema"
            }
            Self::ShutDown => {
                "the gate is shutting down and parks no call for a person; retry once it is back, or against another instance"
            }
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A tollgate error: a kind with a stable code, the request it concerns, a detail, and a cause.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    request: Option<RequestId>,
    detail: Option<Cow<'static, str>>,
    source: Option<BoxError>,
}

impl Error {
    /// An error of this kind.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                request: None,
                detail: None,
                source: None,
            }),
        }
    }

    pub(crate) fn with_request(mut self, id: RequestId) -> Self {
        self.inner.request = Some(id);
        self
    }

    /// Adds a detail: which setting, which file, what the person said.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.inner.detail = Some(detail.into());
        self
    }

    /// Adds the cause, for plugins (a [`Store`](crate::store::Store)) that fail because
    /// something beneath them did. [`source`](std::error::Error::source) returns it.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The stable snake_case code, e.g. `access_request_denied`.
    pub fn code(&self) -> &'static str {
        self.inner.kind.code()
    }

    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.inner.kind.is_retryable()
    }

    /// The access request this error concerns, if any.
    pub fn request_id(&self) -> Option<RequestId> {
        self.inner.request
    }

    /// Extra detail: a denial's reason, the setting that was invalid.
    pub fn detail(&self) -> Option<&str> {
        self.inner.detail.as_deref()
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("code", &self.code());
        if let Some(id) = &self.inner.request {
            d.field("request", id);
        }
        if let Some(detail) = &self.inner.detail {
            d.field("detail", detail);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.inner.kind.message())?;
        if let Some(detail) = &self.inner.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(id) = &self.inner.request {
            write!(f, " [{id}]")?;
        }
        Ok(())
    }
}

/// The JSON form HTTP answers carry: `{"code", "message", "detail", "request_id", "retryable"}`,
/// with `detail` and `request_id` left out when absent. The cause is not included.
impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("Error", 5)?;
        out.serialize_field("code", self.code())?;
        out.serialize_field("message", self.inner.kind.message())?;
        match &self.inner.detail {
            Some(detail) => out.serialize_field("detail", detail)?,
            None => out.skip_field("detail")?,
        }
        match &self.inner.request {
            Some(id) => out.serialize_field("request_id", id)?,
            None => out.skip_field("request_id")?,
        }
        out.serialize_field("retryable", &self.is_retryable())?;
        out.end()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The ids parse from their printed form; anything else is `access_request_not_found`, the same
/// answer a well-formed unknown id gets. (These impls live here so that the ids need nothing
/// above them.)
macro_rules! parse_id {
    ($($name:ident),*) => {$(
        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                s.strip_prefix($name::PREFIX)
                    .and_then(crate::hex::decode::<16>)
                    .map($name)
                    .ok_or_else(|| Error::new(ErrorKind::AccessRequestNotFound))
            }
        }
    )*};
}

parse_id!(RequestId, RuleId);
