//! How the gate reads a request: capability, arguments, principal, session and reason.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use crate::args;
use crate::error::{Error, ErrorKind};
use crate::id::RequestId;

/// A request the gate can read. Implemented for [`ToolCall`]; implement it for your own type.
///
/// Only [`capability`](Call::capability) is required. The others default to "none": a call
/// without a principal counts as the principal `anonymous`.
///
/// ```
/// use std::borrow::Cow;
/// use serde_json::{json, Value};
/// use tollgate::Call;
///
/// struct Refund { charge: String, amount: u64, user: String }
///
/// impl Call for Refund {
///     fn capability(&self) -> &str { "payments.refund" }
///     fn args(&self) -> Cow<'_, Value> {
///         Cow::Owned(json!({"charge": self.charge, "amount": self.amount}))
///     }
///     fn principal(&self) -> Option<&str> { Some(&self.user) }
/// }
/// ```
pub trait Call {
    /// The name of what is being done, e.g. `payments.refund` or `POST /v1/refunds`.
    fn capability(&self) -> &str;

    /// The arguments, as JSON. Their [`ArgsDigest`](crate::args::ArgsDigest) decides what "the same
    /// arguments" means, for joining identical calls and for rules of scope `value`.
    fn args(&self) -> Cow<'_, Value> {
        Cow::Owned(Value::Null)
    }

    /// Who asks: an agent, a user, a service account.
    fn principal(&self) -> Option<&str> {
        None
    }

    /// The session or conversation the call belongs to.
    fn session(&self) -> Option<&str> {
        None
    }

    /// Why the caller wants this, shown to the approver.
    fn reason(&self) -> Option<&str> {
        None
    }

    /// This call with the arguments an approver wrote ([`Edit::args`]), for a policy that lets
    /// approvers edit ([`Ask::editable`](crate::policy::Ask::editable)). Everything else stays as
    /// it was: the gate refuses an edit whose call has another capability, principal or session,
    /// and checks the rebuilt call against the policy before the approval counts. Keep the
    /// [`Edit`] on the new call where the service can read it, so that the caller can tell.
    ///
    /// The default refuses with [`edit_unsupported`](crate::ErrorKind::EditUnsupported): a type
    /// that cannot be rebuilt from arguments is never edited.
    fn edited(&self, edit: &Edit) -> Result<Self, Error>
    where
        Self: Sized,
    {
        let _ = edit;
        Err(Error::new(ErrorKind::EditUnsupported))
    }

    /// Told, just before a call a person approved runs, which access request approved it (never
    /// for calls the policy or a standing rule let through). Keep the id where the service can
    /// read it, to name the request in its own answers: an HTTP request gets it in its
    /// extensions as `tollgate::http::Approved`. The default forgets it.
    fn approved(&mut self, request: RequestId) {
        let _ = request;
    }
}

/// How an approver changed a call's arguments before it ran: the request, who edited, the
/// arguments asked for and the ones the call runs with. [`Call::edited`] gets it; the rebuilt
/// call keeps it ([`ToolCall::edit`], or an HTTP request's extensions), so the service, and
/// through it the caller, can tell its call was edited.
#[derive(Clone, Debug, PartialEq)]
pub struct Edit {
    request: RequestId,
    approver: Arc<str>,
    original: Value,
    args: Value,
}

impl Edit {
    pub(crate) fn new(
        request: RequestId,
        approver: Arc<str>,
        original: Value,
        args: Value,
    ) -> Self {
        Edit {
            request,
            approver,
            original,
            args,
        }
    }

    /// The access request that was edited.
    pub fn request_id(&self) -> RequestId {
        self.request
    }

    /// Who edited (and approved) the call.
    pub fn approver(&self) -> &str {
        &self.approver
    }

    /// The arguments the call runs with.
    pub fn args(&self) -> &Value {
        &self.args
    }

    /// The arguments the caller asked with.
    pub fn original_args(&self) -> &Value {
        &self.original
    }
}

impl<T: Call + ?Sized> Call for &T {
    fn capability(&self) -> &str {
        (**self).capability()
    }
    fn args(&self) -> Cow<'_, Value> {
        (**self).args()
    }
    fn principal(&self) -> Option<&str> {
        (**self).principal()
    }
    fn session(&self) -> Option<&str> {
        (**self).session()
    }
    fn reason(&self) -> Option<&str> {
        (**self).reason()
    }
}

/// A tool call from an agent: a capability with JSON arguments, who asks, in which session, why.
///
/// ```
/// use serde_json::json;
/// use tollgate::{Call, ToolCall};
///
/// let call = ToolCall::new("payments.refund", json!({"charge": "ch_1", "amount": 10000}))
///     .principal("agent-7")
///     .session("conv-42")
///     .reason("customer ticket #4421");
/// assert_eq!(call.capability(), "payments.refund");
/// assert_eq!(Call::principal(&call), Some("agent-7"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    // Boxed rather than a `String`: a call moves through several futures, and stays small.
    capability: Box<str>,
    args: Value,
    principal: Option<String>,
    session: Option<String>,
    reason: Option<String>,
    edit: Option<Arc<Edit>>,
}

impl ToolCall {
    /// A call of `capability` with `args`.
    pub fn new(capability: impl Into<String>, args: Value) -> Self {
        ToolCall {
            capability: capability.into().into_boxed_str(),
            args,
            principal: None,
            session: None,
            reason: None,
            edit: None,
        }
    }

    /// A call whose arguments are JSON text, parsed strictly: a repeated key is
    /// [`invalid_arguments`](crate::ErrorKind::InvalidArguments).
    pub fn from_json(capability: impl Into<String>, args: &str) -> Result<Self, Error> {
        Ok(Self::new(capability, args::parse_strict(args)?))
    }

    /// Sets who asks.
    #[must_use]
    pub fn principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Sets the session the call belongs to.
    #[must_use]
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// Sets the reason shown to the approver.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The capability.
    pub fn capability(&self) -> &str {
        &self.capability
    }

    /// The arguments.
    pub fn args(&self) -> &Value {
        &self.args
    }

    /// Takes the arguments out.
    pub fn into_args(self) -> Value {
        self.args
    }

    /// How an approver changed this call's arguments, if one did: the tool can tell the agent
    /// that it ran with other arguments than it asked for.
    pub fn edit(&self) -> Option<&Edit> {
        self.edit.as_deref()
    }
}

impl Call for ToolCall {
    fn capability(&self) -> &str {
        &self.capability
    }
    fn args(&self) -> Cow<'_, Value> {
        Cow::Borrowed(&self.args)
    }
    fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }
    fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    fn edited(&self, edit: &Edit) -> Result<Self, Error> {
        Ok(ToolCall {
            args: edit.args.clone(),
            edit: Some(Arc::new(edit.clone())),
            ..self.clone()
        })
    }
}
