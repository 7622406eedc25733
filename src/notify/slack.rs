//! Alerts to chat through Slack-compatible incoming webhooks (feature `webhook`).

use std::fmt;

use reqwest::Url;
use serde_json::{Value, json};

use super::template::{Escape, Values, shared_code};
use super::webhook::{DeliveryBuilder, Redacted, parse_url};
use super::{Alert, IncludeCode, Notifier, NotifyError, Resolution, Template};
use crate::boxed::BoxFuture;
use crate::error::Error;
use crate::scope::Scope;
use crate::text::{pretty_args, value_covers, visible};
use crate::time::{human_duration, rfc3339};

/// Posts each alert to a chat channel through an incoming webhook: a line of text and the
/// request's fields; and a line when the request ends.
///
/// Speaks the incoming-webhook format of Slack, which Mattermost, Rocket.Chat and others accept
/// too. Delivery is the [`WebhookNotifier`](super::WebhookNotifier)'s: per-attempt timeout,
/// retries with backoff on 5xx, 429 and timeouts. The webhook URL is the secret here, so it is
/// never logged or printed; the code is included under the same [`IncludeCode`] rule.
///
/// ```no_run
/// use tollgate::notify::SlackNotifier;
///
/// # fn main() -> Result<(), tollgate::Error> {
/// let url = std::env::var("SLACK_WEBHOOK_URL").unwrap_or_default();
/// let chat = SlackNotifier::builder(url).build()?;
/// # let _ = chat;
/// # Ok(())
/// # }
/// ```
pub struct SlackNotifier {
    url: Url,
    include_code: bool,
    text: Template,
    follow_up: Template,
    delivery: super::webhook::Delivery,
}

impl fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackNotifier")
            .field("url", &Redacted(&self.url))
            .field("include_code", &self.include_code)
            .finish_non_exhaustive()
    }
}

/// The default alert line.
pub const DEFAULT_CHAT_TEXT: &str =
    ":raised_hand: *Approval needed*: `{capability}` for *{principal}*{#reason}: {reason}{/reason}";

/// The default line when a request ends.
pub const DEFAULT_CHAT_FOLLOW_UP: &str = "`{capability}` for *{principal}* ({id}): {outcome}";

impl SlackNotifier {
    /// A notifier posting to the incoming webhook at `url`.
    pub fn builder(url: impl Into<String>) -> SlackBuilder {
        SlackBuilder {
            url: url.into(),
            include_code: IncludeCode::default(),
            text: DEFAULT_CHAT_TEXT.into(),
            follow_up: DEFAULT_CHAT_FOLLOW_UP.into(),
            delivery: DeliveryBuilder::default(),
        }
    }

    /// The message for an alert: the text, then one field per fact.
    fn alert_message(&self, alert: &Alert) -> Value {
        let request = alert.request();
        let mut fields = vec![
            field("Capability", &visible(request.capability()), true),
            field("Principal", &visible(request.principal()), true),
        ];
        if let Some(session) = request.session() {
            fields.push(field("Session", &visible(session), true));
        }
        if let Some(reason) = request.reason() {
            fields.push(field("Reason", &visible(reason), false));
        }
        fields.push(field("Policy", &visible(request.reasoning()), false));
        fields.push(field(
            "Arguments",
            &format!("```{}```", pretty_args(request)),
            false,
        ));
        if request.quorum() > 1 {
            // A channel is shared: each approver's own code must reach them another way.
            let needed = format!(
                "{} of the approvers, each with their own code",
                request.quorum()
            );
            fields.push(field("Approvals", &needed, true));
        } else if self.include_code {
            fields.push(field("Code", &format!("`{}`", alert.code().reveal()), true));
        }
        fields.push(field("Request", &request.id().to_string(), true));
        fields.push(field("Expires", &rfc3339(request.expires_at()), true));
        fields.push(field(
            "May grant",
            &format!(
                "up to scope {}, rules up to {}",
                request.max_scope(),
                human_duration(request.max_rule_ttl())
            ),
            true,
        ));
        if request.max_scope() >= Scope::Value {
            fields.push(field(
                "A value approval covers",
                &value_covers(request),
                false,
            ));
        }
        if let Some(url) = request.approval_url() {
            let mut link = String::from("<");
            Escape::Chat.write(url, &mut link);
            link.push('>');
            fields.push(json!({ "title": "Approve or deny", "value": link, "short": false }));
        }
        json!({
            "text": self.text.render(&Values::alert(alert, shared_code(alert)), Escape::Chat),
            "attachments": [{ "color": "#e3b341", "fields": fields }],
        })
    }

    async fn post(&self, message: Value) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(&message).map_err(NotifyError::new)?;
        self.delivery.post(&self.url, body, |_| None).await
    }
}

/// A field; its value escaped as chat markup requires (`&`, `<`, `>`), so that no caller-given
/// text can become a link or a mention, and with control characters shown escaped.
fn field(title: &str, value: &str, short: bool) -> Value {
    let mut escaped = String::with_capacity(value.len());
    Escape::Chat.write(value, &mut escaped);
    json!({ "title": title, "value": escaped, "short": short })
}

impl Notifier for SlackNotifier {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(self.post(self.alert_message(alert)))
    }

    fn on_resolved<'a>(
        &'a self,
        resolution: &'a Resolution,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        let text = self
            .follow_up
            .render(&Values::resolution(resolution), Escape::Chat);
        Box::pin(self.post(json!({ "text": text })))
    }

    fn name(&self) -> &str {
        "slack"
    }
}

/// Configures a [`SlackNotifier`]; made by [`SlackNotifier::builder`].
#[must_use]
pub struct SlackBuilder {
    url: String,
    include_code: IncludeCode,
    text: String,
    follow_up: String,
    delivery: DeliveryBuilder,
}

impl fmt::Debug for SlackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackBuilder")
            .field("include_code", &self.include_code)
            .finish_non_exhaustive()
    }
}

impl SlackBuilder {
    /// Whether messages carry the code. Default: [`IncludeCode::HttpsOnly`].
    pub fn include_code(mut self, include: IncludeCode) -> Self {
        self.include_code = include;
        self
    }

    /// Replaces the alert line ([`DEFAULT_CHAT_TEXT`]); see [`Template`] for the fields.
    pub fn text(mut self, template: impl Into<String>) -> Self {
        self.text = template.into();
        self
    }

    /// Replaces the line sent when a request ends ([`DEFAULT_CHAT_FOLLOW_UP`]).
    pub fn follow_up(mut self, template: impl Into<String>) -> Self {
        self.follow_up = template.into();
        self
    }

    /// How long one attempt may take. Default: 5 seconds.
    pub fn attempt_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.delivery.attempt_timeout = timeout;
        self
    }

    /// How many attempts in all, the first included. Default: 4.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.delivery.max_attempts = attempts;
        self
    }

    /// Sends with this client instead of one of tollgate's.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.delivery.client = Some(client);
        self
    }

    /// Checks the URL and templates and builds the notifier.
    pub fn build(self) -> Result<SlackNotifier, Error> {
        let url = parse_url("slack", &self.url)?;
        Ok(SlackNotifier {
            include_code: self.include_code.applies_to(&url),
            url,
            text: Template::for_setting("slack text", &self.text)?,
            follow_up: Template::for_setting("slack follow_up", &self.follow_up)?,
            delivery: self.delivery.build("slack")?,
        })
    }
}
