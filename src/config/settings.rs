//! The configuration's data: what the TOML file holds, section by section, each type with its
//! defaults and its own checks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::duration;
use crate::notify::IncludeCode;
use crate::scope::Scope;

/// A whole configuration; see the [module docs](super) for the file format.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// `disabled`, `selective`, `all_capabilities` or `observe`.
    #[serde(default)]
    pub mode: Mode,
    /// The gate's settings.
    #[serde(default)]
    pub gate: GateSettings,
    /// Settings for capabilities no entry matches, and for fields entries leave out.
    #[serde(default)]
    pub defaults: CapabilitySettings,
    /// Per-capability settings, by exact name or glob.
    #[serde(default)]
    pub capabilities: BTreeMap<String, CapabilitySettings>,
    /// Named groups of approvers: `finance = ["alice", "bob"]`, named `"@finance"` in a
    /// capability's `approvers`.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Who is told of access requests.
    #[serde(default)]
    pub notifiers: Vec<NotifierSettings>,
    /// Who is told of a request nobody decided in time.
    #[serde(default)]
    pub escalation: Option<EscalationSettings>,
    /// The approval page and JSON API the `tollgate` binary serves, and who may use them.
    #[serde(default)]
    pub approval: ApprovalSettings,
    /// The HTTP sidecar the `tollgate proxy` command runs.
    #[serde(default)]
    pub proxy: ProxySettings,
    /// Where requests, standing rules and the audit trail are kept: in memory unless it says.
    #[serde(default)]
    pub store: StoreSettings,
    /// The file this was read from, named in errors.
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// The `[escalation]` section: a request still pending `after` its creation alerts
/// `[[escalation.notifiers]]` too (see [`GateBuilder::escalate`](crate::gate::GateBuilder::escalate)).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EscalationSettings {
    /// How long a request waits before it is escalated: shorter than the request TTL.
    #[serde(deserialize_with = "duration::required")]
    pub after: Duration,
    /// How much later an escalated request expires, once. Default: not at all. See
    /// [`GateBuilder::escalation_extends`](crate::gate::GateBuilder::escalation_extends).
    #[serde(default, deserialize_with = "duration::optional")]
    pub extend: Option<Duration>,
    /// Who is alerted then, in the format of `[[notifiers]]`.
    pub notifiers: Vec<NotifierSettings>,
}

/// The global approval mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mode {
    /// Every call runs without asking; a warning is logged when the policy is built.
    Disabled,
    /// Each capability follows its settings; unlisted ones ask.
    #[default]
    Selective,
    /// Every call asks, except those denied outright.
    AllCapabilities,
    /// Each capability follows its settings as in `selective`, but no call waits and none is
    /// refused: every call runs, and what would have been asked or refused is recorded (an
    /// `observed` audit entry, a metric and a log line). A capability with `observe = false` is
    /// enforced. See [`policy::observe`](crate::policy::observe).
    Observe,
}

/// What a capability's calls get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecisionKind {
    /// A person decides (the default).
    #[default]
    Ask,
    /// Calls run without asking.
    Allow,
    /// Calls are refused.
    Deny,
}

/// One `[capabilities."…"]` entry, or `[defaults]`. Fields left out are inherited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CapabilitySettings {
    /// `ask` (default), `allow` or `deny`.
    pub decision: Option<DecisionKind>,
    /// The widest scope an approval may grant. Default: `once`.
    pub max_scope: Option<Scope>,
    /// The longest rule TTL. Default: `1h`.
    #[serde(default, deserialize_with = "duration::optional")]
    pub max_rule_ttl: Option<Duration>,
    /// Whether calls must give a reason. Default: `false`.
    pub require_reason: Option<bool>,
    /// Who may approve or deny; anyone the gate accepts when left out. `"@name"` stands for the
    /// approvers of group `name` (`[groups]`).
    pub approvers: Option<Vec<String>>,
    /// How many of the approvers must approve, each with their own code. Default: 1. See
    /// [`Ask::quorum`](crate::policy::Ask::quorum).
    pub quorum: Option<u8>,
    /// The argument fields (JSON pointers) a `value` approval is about; all of them when left
    /// out. See [`Ask::key_fields`](crate::policy::Ask::key_fields).
    pub key_fields: Option<Vec<String>>,
    /// Whether approvers may edit the call's arguments before it runs. Default: `false`. See
    /// [`Ask::editable`](crate::policy::Ask::editable).
    pub editable: Option<bool>,
    /// The text shown to the approver.
    pub description: Option<String>,
    /// The reason given to callers of a `deny` entry.
    pub deny_reason: Option<String>,
    /// Whether the entry is observed rather than enforced: its calls run, and what it would
    /// have asked or refused is recorded. Default: `true` under `mode = "observe"`, else
    /// `false`. See [`policy::observe`](crate::policy::observe).
    pub observe: Option<bool>,
}

impl CapabilitySettings {
    /// Settings that name nothing: every field is inherited from `[defaults]`.
    pub fn new() -> Self {
        Self::default()
    }

    /// `ask`, `allow` or `deny`.
    #[must_use]
    pub fn decision(mut self, decision: DecisionKind) -> Self {
        self.decision = Some(decision);
        self
    }

    /// The widest scope an approval may grant.
    #[must_use]
    pub fn max_scope(mut self, scope: Scope) -> Self {
        self.max_scope = Some(scope);
        self
    }

    /// The longest rule TTL.
    #[must_use]
    pub fn max_rule_ttl(mut self, ttl: Duration) -> Self {
        self.max_rule_ttl = Some(ttl);
        self
    }

    /// Whether calls must give a reason.
    #[must_use]
    pub fn require_reason(mut self, required: bool) -> Self {
        self.require_reason = Some(required);
        self
    }

    /// Who may approve or deny.
    #[must_use]
    pub fn approvers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.approvers = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The argument fields a `value` approval is about.
    #[must_use]
    pub fn key_fields<I: IntoIterator<Item = S>, S: Into<String>>(mut self, fields: I) -> Self {
        self.key_fields = Some(fields.into_iter().map(Into::into).collect());
        self
    }

    /// How many of the approvers must approve.
    #[must_use]
    pub fn quorum(mut self, n: u8) -> Self {
        self.quorum = Some(n);
        self
    }

    /// Whether approvers may edit the call's arguments.
    #[must_use]
    pub fn editable(mut self, editable: bool) -> Self {
        self.editable = Some(editable);
        self
    }

    /// The text shown to the approver.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// The reason given to callers of a `deny` entry.
    #[must_use]
    pub fn deny_reason(mut self, reason: impl Into<String>) -> Self {
        self.deny_reason = Some(reason.into());
        self
    }

    /// Whether the entry is observed rather than enforced.
    #[must_use]
    pub fn observe(mut self, observe: bool) -> Self {
        self.observe = Some(observe);
        self
    }

    /// These settings, with fields left out taken from `defaults`.
    pub(super) fn or(&self, defaults: &CapabilitySettings) -> CapabilitySettings {
        CapabilitySettings {
            decision: self.decision.or(defaults.decision),
            max_scope: self.max_scope.or(defaults.max_scope),
            max_rule_ttl: self.max_rule_ttl.or(defaults.max_rule_ttl),
            require_reason: self.require_reason.or(defaults.require_reason),
            approvers: self
                .approvers
                .clone()
                .or_else(|| defaults.approvers.clone()),
            key_fields: self
                .key_fields
                .clone()
                .or_else(|| defaults.key_fields.clone()),
            editable: self.editable.or(defaults.editable),
            quorum: self.quorum.or(defaults.quorum),
            description: self
                .description
                .clone()
                .or_else(|| defaults.description.clone()),
            deny_reason: self
                .deny_reason
                .clone()
                .or_else(|| defaults.deny_reason.clone()),
            observe: self.observe.or(defaults.observe),
        }
    }

    /// Checks one entry; `inherited` is the decision it takes from `[defaults]` when it names
    /// none itself.
    pub(super) fn check(
        &self,
        field: &str,
        inherited: Option<DecisionKind>,
    ) -> Result<(), (String, &'static str)> {
        let at = |name: &str| format!("{field}.{name}");
        if self.decision == Some(DecisionKind::Deny) {
            let asks = [
                ("max_scope", self.max_scope.is_some()),
                ("max_rule_ttl", self.max_rule_ttl.is_some()),
                ("require_reason", self.require_reason.is_some()),
                ("approvers", self.approvers.is_some()),
                ("key_fields", self.key_fields.is_some()),
                ("editable", self.editable.is_some()),
                ("quorum", self.quorum.is_some()),
                ("description", self.description.is_some()),
            ];
            if let Some((name, _)) = asks.iter().find(|(_, set)| *set) {
                return Err((
                    at(name),
                    "applies only to entries that ask; this one denies",
                ));
            }
        }
        let decision = self.decision.or(inherited);
        if self.deny_reason.is_some() && decision != Some(DecisionKind::Deny) {
            return Err((at("deny_reason"), "applies only with decision = \"deny\""));
        }
        if let Some(ttl) = self.max_rule_ttl
            && (ttl.is_zero() || ttl > Duration::from_secs(366 * 86_400))
        {
            return Err((
                at("max_rule_ttl"),
                "must be more than zero and at most a year",
            ));
        }
        if let Some(approvers) = &self.approvers {
            if approvers.is_empty() {
                return Err((
                    at("approvers"),
                    "an empty list lets nobody decide; leave it out to let any approver decide",
                ));
            }
            if approvers.iter().any(|a| a.trim().is_empty()) {
                return Err((at("approvers"), "approver names must not be empty"));
            }
        }
        if let Some(fields) = &self.key_fields
            && crate::args::KeyFields::new(fields.iter().map(String::as_str)).is_err()
        {
            return Err((
                at("key_fields"),
                "must list JSON pointers to argument fields, such as [\"/to\"]",
            ));
        }
        Ok(())
    }
}

/// The `[gate]` section: each field left out keeps the [`GateBuilder`](crate::gate::GateBuilder) default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GateSettings {
    /// The secret codes are derived from, at least 16 bytes.
    pub secret: Option<Secret>,
    /// Use a per-process random secret instead (codes die with the process).
    #[serde(default)]
    pub random_secret: bool,
    /// Accept secrets written inline in the file. Meant for tests. Default: `false`.
    #[serde(default)]
    pub allow_inline_secrets: bool,
    /// How long a request waits for a decision. Default: `5m`.
    #[serde(default, deserialize_with = "duration::optional")]
    pub request_ttl: Option<Duration>,
    /// Hex characters in a code, 6 to 64. Default: 8.
    pub code_length: Option<usize>,
    /// Wrong codes a request accepts before it is denied, 1 to 1,000. Default: 5.
    pub max_attempts: Option<u32>,
    /// Pending requests the gate holds at once. Default: 10,000.
    pub max_pending: Option<usize>,
    /// Pending requests one principal may have at once. Default: 16.
    pub max_pending_per_principal: Option<usize>,
    /// Callers that may wait on one request at once (identical calls join it). Default: 256.
    pub max_waiters_per_request: Option<usize>,
    /// How long the notifiers may take to accept an alert. Default: `10s`.
    #[serde(default, deserialize_with = "duration::optional")]
    pub notify_timeout: Option<Duration>,
    /// Alerts each notifier may be delivering at once. Default: 64.
    pub alert_concurrency: Option<usize>,
    /// New requests per principal per window. Default: 20 per `1m`.
    pub alert_rate: Option<AlertRateSettings>,
    /// No per-principal alert rate. Default: `false`.
    #[serde(default)]
    pub unlimited_alert_rate: bool,
    /// Park calls no notifier was able to alert, for pull approvals. Default: `false`.
    #[serde(default)]
    pub park_when_unnotified: bool,
    /// Where the approval pages live; each request's URL is this, `/`, and its id.
    pub approval_base_url: Option<String>,
    /// Decided requests remembered for `status`. Default: 4,096.
    pub history: Option<usize>,
}

/// `alert_rate = { alerts = 20, window = "1m" }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertRateSettings {
    /// New requests allowed per window.
    pub alerts: u32,
    /// The window.
    #[serde(deserialize_with = "duration::required")]
    pub window: Duration,
}

/// The `[approval]` section: where the `tollgate` binary serves the approval page and JSON API,
/// and who may decide there.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApprovalSettings {
    /// The local address to serve on (`127.0.0.1:8790` when absent; port 0 picks a free one).
    #[serde(default)]
    pub listen: Option<String>,
    /// Who may decide, each with a bearer token.
    #[serde(default)]
    pub approvers: Vec<ApproverSettings>,
}

/// The `[proxy]` section: `tollgate proxy` listens here and forwards to `upstream`, gating each
/// request as `tollgate::http` gates an axum router.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProxySettings {
    /// The address to listen on (`127.0.0.1:8080` when absent).
    #[serde(default)]
    pub listen: Option<String>,
    /// The base URL requests are forwarded to, `http://host:port` (required by `tollgate proxy`).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Route patterns such as `/v1/refunds/{id}`: a request matching one has the method and the
    /// pattern as its capability (`POST /v1/refunds/{id}`); any other, the method and its path.
    #[serde(default)]
    pub routes: Vec<String>,
    /// The header naming the principal; none when absent.
    #[serde(default)]
    pub principal_header: Option<String>,
    /// The header naming the session; none when absent.
    #[serde(default)]
    pub session_header: Option<String>,
    /// The header carrying the reason; none when absent.
    #[serde(default)]
    pub reason_header: Option<String>,
    /// The most body bytes read for a request the policy asks about (64 KiB when absent).
    /// Requests it allows stream through unread, of any size.
    #[serde(default)]
    pub body_limit: Option<usize>,
    /// How long the upstream may take to start answering (`30s` when absent).
    #[serde(default, deserialize_with = "duration::optional")]
    pub upstream_timeout: Option<Duration>,
}

/// One `[[approval.approvers]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApproverSettings {
    /// The name every decision of theirs is recorded under.
    pub name: String,
    /// Their bearer token: `{ env = "NAME" }` or `{ file = "PATH" }`.
    pub token: Secret,
    /// The capabilities (names or globs) they may decide; every capability when absent.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// The widest scope they may grant; any the request allows when absent.
    #[serde(default)]
    pub max_scope: Option<Scope>,
}

/// Where a secret comes from: `{ env = "NAME" }`, `{ file = "PATH" }`, or inline text (refused
/// unless `gate.allow_inline_secrets`). `Debug` never shows an inline value.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// An environment variable's value.
    Env(String),
    /// A file's contents, one trailing newline removed.
    File(PathBuf),
    /// The value itself.
    Inline(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Env(name) => f.debug_tuple("Env").field(name).finish(),
            Secret::File(path) => f.debug_tuple("File").field(path).finish(),
            Secret::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"{ env = "NAME" } or { file = "PATH" }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::Inline(v.to_owned()))
            }
            // Anything else is refused without its value, which serde's own message would
            // quote: a secret written as a bare number is still a secret.
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(not_a_secret())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(not_a_secret())
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<Secret, E> {
                Err(not_a_secret())
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Secret, E> {
                Err(not_a_secret())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(not_a_secret())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(not_a_secret())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                Err(not_a_secret())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        r#"expected { env = "NAME" } or { file = "PATH" }"#,
                    ));
                };
                let secret = match key.as_str() {
                    "env" => Secret::Env(map.next_value()?),
                    "file" => Secret::File(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, &["env", "file"])),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom("give one of `env` or `file`, not both"));
                }
                Ok(secret)
            }
        }
        d.deserialize_any(SecretVisitor)
    }
}

/// What a secret written as anything but `{ env = … }`, `{ file = … }` or text hears; the value
/// is never repeated.
fn not_a_secret<E: de::Error>() -> E {
    E::custom(
        r#"expected { env = "NAME" } or { file = "PATH" } (the value given is not repeated here)"#,
    )
}

/// The `[store]` section, chosen by `kind`: where requests, standing rules, remembered denials
/// and the audit trail are kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum StoreSettings {
    /// In the process's memory (the default): everything ends with the process, standing
    /// approvals and the audit trail included.
    #[default]
    Memory,
    /// A SQLite file on this machine (feature `sqlite`): survives restarts.
    Sqlite(SqliteSettings),
    /// A PostgreSQL database, which replicas may share (feature `postgres`).
    Postgres(PostgresSettings),
}

/// `kind = "sqlite"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SqliteSettings {
    /// The database file, made if absent; relative paths are from the working directory.
    pub path: PathBuf,
}

/// `kind = "postgres"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PostgresSettings {
    /// The connection string (`host=… user=… dbname=…` or `postgres://…`), which may hold a
    /// password: `{ env = "NAME" }` or `{ file = "PATH" }`.
    pub url: Secret,
    /// This replica's name, stable across its restarts. Default: a random one per process.
    #[serde(default)]
    pub instance: Option<String>,
}

/// One `[[notifiers]]` entry, chosen by `kind`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NotifierSettings {
    /// Prints alerts to the terminal.
    Terminal(TerminalSettings),
    /// Mails alerts (feature `email`).
    Email(EmailSettings),
    /// Posts signed JSON events (feature `webhook`).
    Webhook(WebhookSettings),
    /// Posts to a chat incoming-webhook URL (feature `webhook`).
    Slack(SlackSettings),
}

/// `kind = "terminal"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TerminalSettings {
    /// `stderr` (default) or `stdout`.
    #[serde(default)]
    pub stream: Stream,
}

/// A terminal stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stream {
    /// Standard error.
    #[default]
    Stderr,
    /// Standard output.
    Stdout,
}

/// `kind = "email"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EmailSettings {
    /// `smtps://user@host:465` or `smtp://user@host:587?tls=required`, without the password.
    pub url: String,
    /// The SMTP password, when the URL names a user.
    pub password: Option<Secret>,
    /// The sender mailbox.
    pub from: String,
    /// The approvers' mailboxes.
    pub to: Vec<String>,
    /// Copies.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Where each approver reads mail, `{ alice = "alice@example.com" }`: for a request several
    /// approvers must approve, each gets their own code there (see
    /// [`EmailBuilder::approver`](crate::notify::EmailBuilder::approver)).
    #[serde(default)]
    pub approvers: BTreeMap<String, String>,
}

/// `kind = "webhook"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WebhookSettings {
    /// Where events are posted.
    pub url: String,
    /// The signing secret, at least 16 bytes.
    pub secret: Secret,
    /// `https_only` (default), `always` or `never`.
    pub include_code: Option<IncludeCode>,
    /// Per-attempt timeout. Default: `5s`.
    #[serde(default, deserialize_with = "duration::optional")]
    pub attempt_timeout: Option<Duration>,
    /// Attempts per event. Default: 4.
    pub max_attempts: Option<u32>,
}

/// `kind = "slack"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SlackSettings {
    /// The incoming-webhook URL, a secret.
    pub url: Secret,
    /// `https_only` (default), `always` or `never`.
    pub include_code: Option<IncludeCode>,
    /// Per-attempt timeout. Default: `5s`.
    #[serde(default, deserialize_with = "duration::optional")]
    pub attempt_timeout: Option<Duration>,
    /// Attempts per message. Default: 4.
    pub max_attempts: Option<u32>,
}

impl AlertRateSettings {
    /// At most `alerts` new requests per `window` for one principal.
    pub fn new(alerts: u32, window: Duration) -> Self {
        AlertRateSettings { alerts, window }
    }
}

impl TerminalSettings {
    /// Alerts printed to `stream`.
    pub fn new(stream: Stream) -> Self {
        TerminalSettings { stream }
    }
}

impl EmailSettings {
    /// Mail from `from` to the `to` mailboxes, through the SMTP server at `url`; no password and
    /// no copies until set.
    pub fn new(url: impl Into<String>, from: impl Into<String>, to: Vec<String>) -> Self {
        EmailSettings {
            url: url.into(),
            password: None,
            from: from.into(),
            to,
            cc: Vec::new(),
            approvers: BTreeMap::new(),
        }
    }
}

impl WebhookSettings {
    /// Events posted to `url`, signed with `secret`; the other settings at their defaults.
    pub fn new(url: impl Into<String>, secret: Secret) -> Self {
        WebhookSettings {
            url: url.into(),
            secret,
            include_code: None,
            attempt_timeout: None,
            max_attempts: None,
        }
    }
}

impl SlackSettings {
    /// Messages posted to the incoming-webhook `url`; the other settings at their defaults.
    pub fn new(url: Secret) -> Self {
        SlackSettings {
            url,
            include_code: None,
            attempt_timeout: None,
            max_attempts: None,
        }
    }
}
