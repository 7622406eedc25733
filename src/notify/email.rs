//! Alerts by email over SMTP (feature `email`).

use std::fmt;
use std::sync::Arc;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::template::{Escape, Values};
use super::{Alert, Notifier, NotifyError, Resolution, Sent, Template};
use crate::boxed::BoxFuture;
use crate::error::{Error, ErrorKind};

/// The SMTP transport [`EmailNotifier::smtp`] builds: lettre's, on Tokio with rustls.
pub type SmtpTransport = AsyncSmtpTransport<Tokio1Executor>;

/// Mails each alert to the approvers, and a short follow-up in the same thread when the request
/// ends.
///
/// The alert mail has a plain-text and an HTML body, both from templates you can replace (see
/// [`Template`] for the fields). The follow-up (`approved by alice, scope value, until …`,
/// `denied by bob: …`, `expired: …`) answers the alert with `In-Reply-To` and `References`, so
/// mail clients show them as one thread. A follow-up is sent only for alerts this notifier
/// delivered.
///
/// Generic over lettre's [`AsyncTransport`]: [`EmailNotifier::smtp`] takes an SMTP URL, and
/// [`EmailNotifier::builder`] any transport you configured yourself (your own TLS roots, a
/// pool, a test stub).
///
/// ```no_run
/// use tollgate::notify::EmailNotifier;
///
/// # fn main() -> Result<(), tollgate::Error> {
/// // STARTTLS on port 587 with login; `smtps://` is implicit TLS on 465.
/// let password = std::env::var("SMTP_PASSWORD").unwrap_or_default();
/// let email = EmailNotifier::smtp(&format!("smtp://tollgate:{password}@smtp.example.com:587?tls=required"))?
///     .from("Tollgate <tollgate@example.com>")
///     .to("oncall@example.com")
///     .cc("audit@example.com")
///     .build()?;
/// # let _ = email;
/// # Ok(())
/// # }
/// ```
pub struct EmailNotifier<T = SmtpTransport> {
    transport: T,
    from: Mailbox,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    /// Where each named approver reads mail: a request several approvers must approve sends
    /// each of them their own code there, and the other recipients none.
    approvers: Vec<(Box<str>, Mailbox)>,
    subject: Template,
    text: Template,
    html: Template,
    follow_up: Template,
    /// The domain of message ids: the sender's.
    domain: Arc<str>,
    sent: Sent,
}

impl<T> fmt::Debug for EmailNotifier<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |list: &[Mailbox]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        f.debug_struct("EmailNotifier")
            .field("from", &self.from.to_string())
            .field("to", &show(&self.to))
            .field("cc", &show(&self.cc))
            .finish_non_exhaustive()
    }
}

/// What `{code}` reads in the mail to the shared recipients of a request several approvers must
/// approve: each approver has their own code, sent to them alone.
const OWN_CODES: &str = "each approver was sent their own code";

/// The default subject.
pub const DEFAULT_SUBJECT: &str = "Approval needed: {capability} for {principal}";

/// The default plain-text body.
pub const DEFAULT_TEXT: &str = "\
{principal} asks to run {capability}.
{#reason}Reason given: {reason}
{/reason}Policy: {reasoning}

Arguments:
{args}

Verification code: {code}
{#approval_url}
Approve or deny at {approval_url}
{/approval_url}
Request {id}{#session}, session {session}{/session}
Expires {expires_at} (in {expires_in}).
An approval may grant up to scope {max_scope}, with rules of up to {max_rule_ttl}.
{#value_covers}A value approval covers {value_covers}.
{/value_covers}
If you do not expect this request, deny it or let it expire.
";

/// The default HTML body.
pub const DEFAULT_HTML: &str = r#"<!doctype html>
<html><body style="font-family:system-ui,sans-serif;max-width:40em;margin:auto;padding:1em">
<h2 style="margin:0 0 .5em">Approval needed</h2>
<p><b>{principal}</b> asks to run <code>{capability}</code>.</p>
{#reason}<p>Reason given: {reason}</p>
{/reason}<p>Policy: {reasoning}</p>
<pre style="background:#f4f4f4;padding:.75em;overflow:auto">{args}</pre>
<p>Verification code:</p>
<p style="font:bold 1.6em monospace;letter-spacing:.15em">{code}</p>
{#approval_url}<p><a href="{approval_url}" style="display:inline-block;padding:.6em 1.2em;background:#1f6feb;color:#fff;text-decoration:none;border-radius:4px">Approve or deny</a></p>
{/approval_url}<p style="color:#555">Request {id}{#session}, session {session}{/session}.<br>
Expires {expires_at} (in {expires_in}). An approval may grant up to scope {max_scope}, with rules of up to {max_rule_ttl}.{#value_covers}<br>
A value approval covers {value_covers}.{/value_covers}</p>
<p style="color:#555">If you do not expect this request, deny it or let it expire.</p>
</body></html>
"#;

/// The default follow-up body; its subject is the alert's, prefixed `Re: `.
pub const DEFAULT_FOLLOW_UP: &str = "Request {id} ({capability} for {principal}): {outcome}.\n";

impl EmailNotifier<SmtpTransport> {
    /// A notifier on the SMTP server at `url`: `smtps://user:password@host:465` for implicit
    /// TLS, `smtp://user:password@host:587?tls=required` for STARTTLS. The URL is not repeated
    /// in errors, since it may hold a password.
    ///
    /// A URL with a password must use TLS (`smtps://`, or `?tls=required`), except to a
    /// loopback address: otherwise the password would cross the network in the clear.
    pub fn smtp(url: &str) -> Result<EmailBuilder<SmtpTransport>, Error> {
        refuse_cleartext_login(url)?;
        let transport = SmtpTransport::from_url(url).map_err(|_| {
            Error::new(ErrorKind::InvalidConfig).with_detail(
                "email: the SMTP URL must look like smtps://user:password@host:465 or smtp://user:password@host:587?tls=required",
            )
        })?;
        Ok(EmailNotifier::builder(transport.build()))
    }
}

/// Refuses an SMTP URL whose login would be sent unencrypted to another machine.
fn refuse_cleartext_login(url: &str) -> Result<(), Error> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let Some((_, host)) = authority.rsplit_once('@') else {
        return Ok(()); // no login
    };
    let encrypted = scheme == "smtps" || rest.contains("tls=required");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let loopback = name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if encrypted || loopback {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::InvalidConfig).with_detail(
            "email: the SMTP login would travel unencrypted: use smtps:// or add ?tls=required",
        ))
    }
}

impl<T> EmailNotifier<T>
where
    T: AsyncTransport + Send + Sync + 'static,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    /// A notifier sending through `transport`.
    pub fn builder(transport: T) -> EmailBuilder<T> {
        EmailBuilder {
            transport,
            from: None,
            to: Vec::new(),
            cc: Vec::new(),
            approvers: Vec::new(),
            subject: DEFAULT_SUBJECT.into(),
            text: DEFAULT_TEXT.into(),
            html: DEFAULT_HTML.into(),
            follow_up: DEFAULT_FOLLOW_UP.into(),
        }
    }

    /// The `Message-ID` of the alert mail for a request, which follow-ups answer.
    fn message_id(&self, request: &crate::AccessRequest) -> String {
        format!("<{}.alert@{}>", request.id(), self.domain)
    }

    /// The alert's body, plain and HTML, with `code` for its code field.
    fn body(
        &self,
        alert: &Alert,
        code: &str,
        message: lettre::message::MessageBuilder,
    ) -> Result<Message, lettre::error::Error> {
        let values = Values::alert(alert, code);
        message.multipart(MultiPart::alternative_plain_html(
            self.text.render(&values, Escape::None),
            self.html.render(&values, Escape::Html),
        ))
    }

    fn envelope(&self, subject: String) -> lettre::message::MessageBuilder {
        let mut message = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            message = message.to(to.clone());
        }
        for cc in &self.cc {
            message = message.cc(cc.clone());
        }
        message
    }

    async fn send(
        &self,
        message: Result<Message, lettre::error::Error>,
    ) -> Result<(), NotifyError> {
        let message = message.map_err(NotifyError::new)?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(NotifyError::new)
    }
}

impl<T> Notifier for EmailNotifier<T>
where
    T: AsyncTransport + Send + Sync + 'static,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let request = alert.request();
            let quorum = request.quorum() > 1;
            // A quorum's code is each approver's own: the shared recipients get none.
            let code = if quorum {
                OWN_CODES
            } else {
                alert.code().reveal()
            };
            let subject = self
                .subject
                .render(&Values::alert(alert, code), Escape::None);
            let message = self
                .envelope(subject)
                .message_id(Some(self.message_id(request)));
            self.send(self.body(alert, code, message)).await?;
            self.sent.insert(request.id());
            if quorum {
                for (n, (approver, mailbox)) in self.approvers.iter().enumerate() {
                    let Some(code) = alert.code_for(approver) else {
                        continue;
                    };
                    let values = Values::alert(alert, code.reveal());
                    let message = Message::builder()
                        .from(self.from.clone())
                        .to(mailbox.clone())
                        .subject(self.subject.render(&values, Escape::None))
                        .message_id(Some(format!(
                            "<{}.alert.{n}@{}>",
                            request.id(),
                            self.domain
                        )));
                    self.send(self.body(alert, code.reveal(), message)).await?;
                }
            }
            Ok(())
        })
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let request = resolution.request();
            if !self.sent.take(request.id()) {
                return Ok(());
            }
            let values = Values::resolution(resolution);
            let thread = self.message_id(request);
            let subject = format!("Re: {}", self.subject.render(&values, Escape::None));
            let message = self
                .envelope(subject)
                .in_reply_to(thread.clone())
                .references(thread)
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(self.follow_up.render(&values, Escape::None)),
                );
            self.send(message).await
        })
    }

    fn name(&self) -> &str {
        "email"
    }
}

/// Configures an [`EmailNotifier`]; made by [`EmailNotifier::smtp`] or [`EmailNotifier::builder`].
#[must_use]
pub struct EmailBuilder<T> {
    transport: T,
    from: Option<String>,
    to: Vec<String>,
    cc: Vec<String>,
    approvers: Vec<(String, String)>,
    subject: String,
    text: String,
    html: String,
    follow_up: String,
}

impl<T> fmt::Debug for EmailBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailBuilder")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("cc", &self.cc)
            .finish_non_exhaustive()
    }
}

impl<T> EmailBuilder<T>
where
    T: AsyncTransport + Send + Sync + 'static,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    /// The sender, such as `Tollgate <tollgate@example.com>`. Required.
    pub fn from(mut self, mailbox: impl Into<String>) -> Self {
        self.from = Some(mailbox.into());
        self
    }

    /// Adds a recipient. At least one is required.
    pub fn to(mut self, mailbox: impl Into<String>) -> Self {
        self.to.push(mailbox.into());
        self
    }

    /// Adds a recipient in copy.
    pub fn cc(mut self, mailbox: impl Into<String>) -> Self {
        self.cc.push(mailbox.into());
        self
    }

    /// Where approver `name` reads mail. For a request several approvers must approve
    /// ([`Ask::quorum`](crate::policy::Ask::quorum)) each approver has their own code: the
    /// alert goes to every approver given here with theirs alone, and to the other recipients
    /// with none. Approvers not given here get their code from another notifier.
    pub fn approver(mut self, name: impl Into<String>, mailbox: impl Into<String>) -> Self {
        self.approvers.push((name.into(), mailbox.into()));
        self
    }

    /// Replaces the subject template ([`DEFAULT_SUBJECT`]).
    pub fn subject(mut self, template: impl Into<String>) -> Self {
        self.subject = template.into();
        self
    }

    /// Replaces the plain-text body template ([`DEFAULT_TEXT`]).
    pub fn text_body(mut self, template: impl Into<String>) -> Self {
        self.text = template.into();
        self
    }

    /// Replaces the HTML body template ([`DEFAULT_HTML`]); values are HTML-escaped.
    pub fn html_body(mut self, template: impl Into<String>) -> Self {
        self.html = template.into();
        self
    }

    /// Replaces the follow-up body template ([`DEFAULT_FOLLOW_UP`]).
    pub fn follow_up(mut self, template: impl Into<String>) -> Self {
        self.follow_up = template.into();
        self
    }

    /// Checks the addresses and templates and builds the notifier.
    pub fn build(self) -> Result<EmailNotifier<T>, Error> {
        let invalid = |detail: String| Error::new(ErrorKind::InvalidConfig).with_detail(detail);
        let mailbox = |field: &str, text: &str| {
            text.parse::<Mailbox>()
                .map_err(|e| invalid(format!("email {field}: `{text}` is not an address: {e}")))
        };
        let from = mailbox(
            "from",
            self.from
                .as_deref()
                .ok_or_else(|| invalid("email: a sender is required: call `.from(..)`".into()))?,
        )?;
        if self.to.is_empty() {
            return Err(invalid(
                "email: at least one recipient is required: call `.to(..)`".into(),
            ));
        }
        let to = self
            .to
            .iter()
            .map(|t| mailbox("to", t))
            .collect::<Result<_, _>>()?;
        let cc = self
            .cc
            .iter()
            .map(|c| mailbox("cc", c))
            .collect::<Result<_, _>>()?;
        let approvers = self
            .approvers
            .iter()
            .map(|(name, address)| Ok((name.as_str().into(), mailbox("approver", address)?)))
            .collect::<Result<_, Error>>()?;
        Ok(EmailNotifier {
            domain: from.email.domain().into(),
            from,
            to,
            cc,
            approvers,
            subject: Template::for_setting("email subject", &self.subject)?,
            text: Template::for_setting("email text_body", &self.text)?,
            html: Template::for_setting("email html_body", &self.html)?,
            follow_up: Template::for_setting("email follow_up", &self.follow_up)?,
            transport: self.transport,
            sent: Sent::default(),
        })
    }
}
