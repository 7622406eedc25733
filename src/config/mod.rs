//! The configuration file: what needs a person, the gate's settings, and who is told.
//!
//! Operators decide in a file what needs approval; the application loads it at start, and a bad
//! file stops the start with an error naming the file, the field and what is accepted. The same
//! structure can be built in code, and deserialized from any serde format.
//!
//! ```
//! # #[cfg(feature = "toml")] {
//! use tollgate::config::Config;
//! use tollgate::policy::{Decision, Policy};
//! use tollgate::ToolCall;
//! use serde_json::json;
//!
//! let config = Config::from_toml(r#"
//!     mode = "selective"
//!
//!     [capabilities."search.*"]
//!     decision = "allow"
//!
//!     [capabilities."payments.refund"]
//!     max_scope = "value"
//!     max_rule_ttl = "1h 30m"
//!     require_reason = true
//!     approvers = ["alice", "bob"]
//!     description = "Moves money back to a customer's card."
//! "#)?;
//! let policy = config.policy()?;
//! let check = |name: &str| policy.check(&ToolCall::new(name, json!({})));
//! assert!(matches!(check("search.web"), Decision::Allow(_)));
//! assert!(matches!(check("payments.refund"), Decision::Ask(_)));
//! assert!(matches!(check("shell.exec"), Decision::Ask(_))); // not listed: ask, never allow
//! # }
//! # Ok::<(), tollgate::Error>(())
//! ```
//!
//! The same from code, with no feature:
//!
//! ```
//! use tollgate::config::{CapabilitySettings, Config, DecisionKind, Mode};
//! use tollgate::Scope;
//!
//! let config = Config::new(Mode::AllCapabilities)
//!     .capability("payments.*", CapabilitySettings::new().max_scope(Scope::Value))
//!     .capability("fs.delete", CapabilitySettings::new().decision(DecisionKind::Deny));
//! let policy = config.policy()?;
//! # Ok::<(), tollgate::Error>(())
//! ```
//!
//! # Reference
//!
//! Every key, with its default. Unknown keys are errors; durations are written `90s`, `5m`,
//! `1h 30m`, `250ms`, `2d`, as the `humantime` crate reads them (`m` is minutes, `M` months). This file is loaded by the crate's tests, so it
//! stays true.
//!
//! ```toml
#![doc = include_str!("../../examples/config/reference.toml")]
//! ```
//!
//! # Modes
//!
//! | `mode` | what happens |
//! |---|---|
//! | `selective` (default) | each capability follows its entry; capabilities with no entry follow `[defaults]`, which ask |
//! | `all_capabilities` | every call asks, even those whose entry says `allow`; `deny` entries still deny |
//! | `disabled` | every call runs, denied ones too, without asking anyone; a warning says so when the policy is built |
//! | `observe` | as `selective`, but every call runs: what an entry would have asked or refused is recorded instead (an `observed` audit entry, the `tollgate_calls_total{decision="observed"}` counter, a log line at `info` with the capability and principal, the arguments only with `audit_args`); an entry with `observe = false` is enforced; a warning says so when the policy is built. A capability can be observed under the other enforcing modes with `observe = true` |
//!
//! # Which entry applies
//!
//! Keys of `[capabilities]` are exact names or globs where `*` matches any run of characters:
//! `payments.*`, `*.delete`, `POST /v1/*`. An exact name beats every glob; among globs the one
//! with the most literal characters wins, then the one whose first `*` comes later. Fields an
//! entry leaves out come from `[defaults]`, then from the built-in defaults, never from another
//! entry.
//!
//! # Secrets
//!
//! Secrets (the gate's secret, webhook secrets, SMTP passwords, chat webhook URLs) are read
//! from the environment (`{ env = "NAME" }`) or a file (`{ file = "/run/secrets/name" }`, one
//! trailing newline removed). A secret written inline in the file is refused unless
//! `gate.allow_inline_secrets = true`, which is meant for tests: configuration files get
//! committed and copied.

mod duration;
mod settings;

use std::borrow::Cow;
use std::path::Path;

pub use self::settings::{
    AlertRateSettings, ApprovalSettings, ApproverSettings, CapabilitySettings, Config,
    DecisionKind, EmailSettings, EscalationSettings, GateSettings, Mode, NotifierSettings,
    PostgresSettings, ProxySettings, Secret, SlackSettings, SqliteSettings, StoreSettings, Stream,
    TerminalSettings, WebhookSettings,
};
use crate::call::Call;
use crate::error::{Error, ErrorKind};
use crate::gate::{Gate, GateBuilder};
use crate::notify::{FanOut, TerminalNotifier};
use crate::policy::{Ask, CapabilityTable, Decision, Policy};
use crate::scope::Scope;

/// Where the `tollgate` binary serves the approval page and API unless `[approval] listen` says.
pub const DEFAULT_APPROVAL_ADDRESS: &str = "127.0.0.1:8790";

impl Config {
    /// A configuration in `mode`, with no capability listed and every setting at its default.
    pub fn new(mode: Mode) -> Self {
        Config {
            mode,
            ..Config::default()
        }
    }

    /// Lists the capabilities matching `pattern` (a name or a `*` glob) with `settings`.
    #[must_use]
    pub fn capability(mut self, pattern: impl Into<String>, settings: CapabilitySettings) -> Self {
        self.capabilities.insert(pattern.into(), settings);
        self
    }

    /// The `[defaults]` every listed capability inherits from.
    #[must_use]
    pub fn defaults(mut self, settings: CapabilitySettings) -> Self {
        self.defaults = settings;
        self
    }

    /// Reads and validates the TOML file at `path`.
    #[cfg(feature = "toml")]
    pub fn load(path: impl AsRef<Path>) -> Result<Config, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::ConfigUnreadable)
                .with_detail(format!("{}: cannot read the file: {e}", path.display()))
                .with_source(e)
        })?;
        parse_toml(&text, Some(path))
    }

    /// Reads the TOML file at `path` again and puts its policy in `policy` (the
    /// [`LivePolicy`](crate::policy::LivePolicy) the service was built with) and its notifiers
    /// in `gate`, as operators do on `SIGHUP`. Everything is read and built first: a file that
    /// does not load, or whose policy or notifiers cannot be built, changes nothing, and the
    /// error names the file and the field. Parked calls keep what they were asked with; the
    /// `[gate]`, `[escalation]`, `[approval]` and `[store]` sections (the secret, TTLs, limits,
    /// escalation, listen address, approvers, where state is kept) take effect at the next
    /// start. Returns the configuration read.
    ///
    /// ```no_run
    /// # async fn serve(gate: tollgate::Gate) -> Result<(), tollgate::Error> {
    /// use tollgate::config::Config;
    /// use tollgate::policy::LivePolicy;
    ///
    /// let policy = LivePolicy::new(Config::load("tollgate.toml")?.policy()?);
    /// // ... gate.layer(policy.clone()) wraps the service ...
    /// // later, when the file changed:
    /// if let Err(error) = Config::reload("tollgate.toml", &policy, &gate) {
    ///     eprintln!("kept the running configuration: {error}");
    /// }
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "toml")]
    pub fn reload(
        path: impl AsRef<Path>,
        policy: &crate::policy::LivePolicy<ConfigPolicy>,
        gate: &Gate,
    ) -> Result<Config, Error> {
        let config = Config::load(path)?;
        let next = config.policy()?;
        let notifiers = config.notifiers()?;
        gate.replace_notifiers(notifiers)
            .map_err(|e| config.wrap("notifiers", e))?;
        policy.replace(next);
        tracing::info!(origin = %config.origin_name(), "configuration reloaded");
        Ok(config)
    }

    /// Parses and validates TOML text.
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        parse_toml(text, None)
    }

    /// Checks what the types alone cannot: patterns, contradictions, ranges.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |(field, message): (String, &str)| self.invalid(&field, message);
        self.defaults.check("defaults", None).map_err(invalid)?;
        for (pattern, settings) in &self.capabilities {
            let field = format!("capabilities.{}", toml_key(pattern));
            if pattern.trim().is_empty() {
                return Err(self.invalid(&field, "a capability pattern must not be empty"));
            }
            settings
                .check(&field, self.defaults.decision)
                .map_err(invalid)?;
            self.check_approvers(&field, &settings.or(&self.defaults))?;
        }
        self.check_approvers("defaults", &self.defaults)?;
        for (name, members) in &self.groups {
            if members.is_empty()
                || members
                    .iter()
                    .any(|m| m.trim().is_empty() || m.starts_with('@'))
            {
                return Err(self.invalid(
                    &format!("groups.{}", toml_key(name)),
                    "a group lists one or more approvers by name (not other groups)",
                ));
            }
        }
        if let Some(escalation) = &self.escalation
            && escalation.notifiers.is_empty()
        {
            return Err(self.invalid(
                "escalation.notifiers",
                "an escalation needs at least one notifier to alert",
            ));
        }
        let gate = &self.gate;
        // Decided: refused rather than letting a signed-in approver decide without a code. The
        // code proves the alert reached a person the gate chose; a page sign-in proves only
        // that someone holds a token, which may sit in a script the agent can read.
        if gate.park_when_unnotified && self.notifiers.is_empty() {
            return Err(self.invalid(
                "gate.park_when_unnotified",
                "with no notifier nobody is ever shown a verification code, so no request could be approved (the page and API ask for one): add a [[notifiers]] entry (kind = \"terminal\", \"email\", \"webhook\" or \"slack\"), or set park_when_unnotified = false",
            ));
        }
        if gate.secret.is_some() && gate.random_secret {
            return Err(self.invalid(
                "gate",
                "give either `secret` or `random_secret = true`, not both",
            ));
        }
        if gate.alert_rate.is_some() && gate.unlimited_alert_rate {
            return Err(self.invalid(
                "gate",
                "give either `alert_rate` or `unlimited_alert_rate = true`, not both",
            ));
        }
        Ok(())
    }

    /// The policy the file describes. Logs a warning when the mode is `disabled` or `observe`:
    /// either lets calls run that the entries would stop.
    pub fn policy(&self) -> Result<ConfigPolicy, Error> {
        self.validate()?;
        if self.mode == Mode::Disabled {
            tracing::warn!(
                origin = %self.origin_name(),
                "APPROVALS ARE DISABLED (mode = \"disabled\"): every call runs without asking anyone"
            );
            return Ok(ConfigPolicy { table: None });
        }
        if self.mode == Mode::Observe {
            tracing::warn!(
                origin = %self.origin_name(),
                "OBSERVE MODE (mode = \"observe\"): calls the policy would ask about or refuse run anyway; each is recorded as an `observed` audit entry (GET /api/audit?event=observed)"
            );
        }
        let fallback = self.decision(
            "this capability is not listed in the configuration".into(),
            &self.defaults,
        );
        let mut table = CapabilityTable::new().fallback(fallback);
        for (pattern, settings) in &self.capabilities {
            let label = format!(
                "the configuration asks a person about capabilities.{}",
                toml_key(pattern)
            );
            let decision = self.decision(label.into(), &settings.or(&self.defaults));
            table = table.try_with(pattern, decision)?;
        }
        Ok(ConfigPolicy { table: Some(table) })
    }

    fn decision(&self, label: Cow<'static, str>, s: &CapabilitySettings) -> Decision {
        let ask = |reasoning: Cow<'static, str>| {
            let mut ask = Ask::new(s.description.clone().map_or(reasoning, Cow::Owned))
                .max_scope(s.max_scope.unwrap_or(Scope::Once))
                .max_rule_ttl(s.max_rule_ttl.unwrap_or(Ask::DEFAULT_MAX_RULE_TTL));
            if let Some(approvers) = &s.approvers {
                // Groups were checked when the file was read.
                ask = ask.approvers(self.expanded(approvers));
            }
            if let Some(n) = s.quorum {
                ask = ask.quorum(n);
            }
            if s.require_reason == Some(true) {
                ask = ask.require_reason();
            }
            if let Some(fields) = &s.key_fields {
                // Checked when the file was read.
                ask = ask.key_fields(fields.iter().map(String::as_str));
            }
            if s.editable == Some(true) {
                ask = ask.editable();
            }
            Decision::Ask(ask)
        };
        let decision = match (s.decision.unwrap_or_default(), self.mode) {
            (DecisionKind::Deny, _) => Decision::deny(
                s.deny_reason
                    .clone()
                    .map_or(Cow::Borrowed("denied by the configuration"), Cow::Owned),
            ),
            (DecisionKind::Allow, Mode::AllCapabilities) => {
                ask("mode = \"all_capabilities\" asks a person about every call".into())
            }
            (DecisionKind::Allow, _) => Decision::allow("allowed by the configuration"),
            (DecisionKind::Ask, _) => ask(label),
        };
        if s.observe.unwrap_or(self.mode == Mode::Observe) {
            Decision::observe(decision)
        } else {
            decision
        }
    }

    /// A [`GateBuilder`] with the `[gate]` settings, the secret read, the notifiers built, and
    /// the `[store]` opened. Add notifiers or change settings in code before building.
    ///
    /// A `[store]` of kind `postgres` connects over the network, which this synchronous call
    /// cannot do: it is refused here, with [`open_gate`](Self::open_gate) named as the way.
    pub fn gate_builder(&self) -> Result<GateBuilder, Error> {
        let builder = self.builder_without_store()?;
        match &self.store {
            StoreSettings::Memory => Ok(builder),
            #[cfg(feature = "sqlite")]
            StoreSettings::Sqlite(sqlite) => {
                let store = crate::store::SqliteStore::open(&sqlite.path)
                    .map_err(|e| self.wrap("store.path", e))?;
                Ok(builder.store(store))
            }
            #[cfg(not(feature = "sqlite"))]
            StoreSettings::Sqlite(_) => Err(self.needs_feature("store", "sqlite", "sqlite")),
            StoreSettings::Postgres(_) => Err(self.invalid(
                "store.kind",
                "a PostgreSQL store connects over the network: build the gate with `Config::open_gate().await`",
            )),
        }
    }

    /// The gate the file describes, its `[store]` opened, or connected for one of kind
    /// `postgres` (feature `postgres`), with errors naming the file. The `tollgate` binary
    /// builds its gate this way.
    ///
    /// ```no_run
    /// # #[cfg(feature = "toml")]
    /// # async fn start() -> Result<(), tollgate::Error> {
    /// let config = tollgate::config::Config::load("tollgate.toml")?;
    /// let gate = config.open_gate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn open_gate(&self) -> Result<Gate, Error> {
        self.check_complete()?;
        let builder = match &self.store {
            #[cfg(feature = "postgres")]
            StoreSettings::Postgres(postgres) => {
                use crate::store::{PostgresOptions, PostgresStore};
                let builder = self.builder_without_store()?;
                let url = self.read(&postgres.url, "store.url")?;
                let mut options = PostgresOptions::new();
                if let Some(instance) = &postgres.instance {
                    options = options.instance(instance.clone());
                }
                let store = PostgresStore::connect_with(&url, options)
                    .await
                    .map_err(|e| self.wrap("store.url", e))?;
                builder.store(store)
            }
            #[cfg(not(feature = "postgres"))]
            StoreSettings::Postgres(_) => {
                return Err(self.needs_feature("store", "postgres", "postgres"));
            }
            _ => self.gate_builder()?,
        };
        builder.build().map_err(|e| self.wrap("gate", e))
    }

    /// A gate built from the file alone needs a secret and a `[[notifiers]]` entry (without
    /// one, nobody would hear of a request or see the code that approves it). The errors say
    /// what to write; a [`gate_builder`](Self::gate_builder) can still get either in code.
    fn check_complete(&self) -> Result<(), Error> {
        let g = &self.gate;
        if g.secret.is_none() && !g.random_secret {
            let detail = format!(
                "{}: gate.secret: add `secret = {{ env = \"TOLLGATE_SECRET\" }}` (or `{{ file = \"/run/secrets/tollgate\" }}`) under [gate], with at least 32 random bytes there (`openssl rand -hex 32`); or `random_secret = true`, whose codes and rules end with the process",
                self.origin_name()
            );
            return Err(Error::new(ErrorKind::MissingSecret).with_detail(detail));
        }
        if self.notifiers.is_empty() {
            return Err(self.invalid(
                "notifiers",
                "no [[notifiers]] entry, so nobody would hear of a request or see its code: add one, such as `[[notifiers]]` with `kind = \"terminal\"` (or \"email\", \"webhook\", \"slack\")",
            ));
        }
        Ok(())
    }

    /// [`gate_builder`](Self::gate_builder) but for the store.
    fn builder_without_store(&self) -> Result<GateBuilder, Error> {
        self.validate()?;
        let g = &self.gate;
        let mut builder = Gate::builder();
        if let Some(secret) = &g.secret {
            builder = builder.secret(self.read(secret, "gate.secret")?);
        }
        if g.random_secret {
            builder = builder.random_secret();
        }
        builder = with(builder, g.request_ttl, GateBuilder::request_ttl);
        builder = with(builder, g.code_length, GateBuilder::code_length);
        builder = with(builder, g.max_attempts, GateBuilder::max_attempts);
        builder = with(builder, g.max_pending, GateBuilder::max_pending);
        builder = with(
            builder,
            g.max_pending_per_principal,
            GateBuilder::max_pending_per_principal,
        );
        builder = with(
            builder,
            g.max_waiters_per_request,
            GateBuilder::max_waiters_per_request,
        );
        builder = with(builder, g.notify_timeout, GateBuilder::notify_timeout);
        builder = with(builder, g.alert_concurrency, GateBuilder::alert_concurrency);
        builder = with(builder, g.history, GateBuilder::history);
        builder = with(builder, g.approval_base_url.clone(), |b, url: String| {
            b.approval_base_url(url)
        });
        if let Some(rate) = &g.alert_rate {
            builder = builder.alert_rate(rate.alerts, rate.window);
        }
        if g.unlimited_alert_rate {
            builder = builder.unlimited_alert_rate();
        }
        if g.park_when_unnotified {
            builder = builder.park_when_unnotified();
        }
        builder = builder.notifiers(self.built_notifiers()?);
        if let Some(escalation) = &self.escalation {
            let mut notifiers = FanOut::new();
            for (i, settings) in escalation.notifiers.iter().enumerate() {
                let field = format!("escalation.notifiers[{i}]");
                notifiers = self.add_notifier(notifiers, &field, settings)?;
            }
            builder = builder.escalate(escalation.after, notifiers);
            if let Some(by) = escalation.extend {
                builder = builder.escalation_extends(by);
            }
        }
        Ok(builder)
    }

    /// The notifiers of `[[notifiers]]`, their secrets read, as
    /// [`Gate::replace_notifiers`] takes them.
    pub fn notifiers(&self) -> Result<FanOut, Error> {
        self.validate()?;
        self.built_notifiers()
    }

    /// [`notifiers`](Self::notifiers), for a configuration already validated.
    fn built_notifiers(&self) -> Result<FanOut, Error> {
        let mut notifiers = FanOut::new();
        for (i, settings) in self.notifiers.iter().enumerate() {
            notifiers = self.add_notifier(notifiers, &format!("notifiers[{i}]"), settings)?;
        }
        Ok(notifiers)
    }

    /// The gate the file describes; [`gate_builder`](Self::gate_builder) then `build`, with
    /// errors naming the file.
    pub fn gate(&self) -> Result<Gate, Error> {
        self.check_complete()?;
        self.gate_builder()?
            .build()
            .map_err(|e| self.wrap("gate", e))
    }

    fn add_notifier(
        &self,
        notifiers: FanOut,
        field: &str,
        settings: &NotifierSettings,
    ) -> Result<FanOut, Error> {
        match settings {
            NotifierSettings::Terminal(t) => Ok(notifiers.with(match t.stream {
                Stream::Stderr => TerminalNotifier::stderr(),
                Stream::Stdout => TerminalNotifier::stdout(),
            })),
            #[cfg(feature = "email")]
            NotifierSettings::Email(e) => {
                let url = match &e.password {
                    Some(password) => {
                        let password = self.read(password, &format!("{field}.password"))?;
                        with_password(&e.url, &password).ok_or_else(|| {
                            self.invalid(
                                &format!("{field}.url"),
                                "a password needs a user in the URL: smtps://user@host:465",
                            )
                        })?
                    }
                    None => e.url.clone(),
                };
                let mut email = crate::notify::EmailNotifier::smtp(&url)
                    .map_err(|err| self.wrap(field, err))?
                    .from(e.from.clone());
                for to in &e.to {
                    email = email.to(to.clone());
                }
                for cc in &e.cc {
                    email = email.cc(cc.clone());
                }
                for (approver, mailbox) in &e.approvers {
                    email = email.approver(approver.clone(), mailbox.clone());
                }
                Ok(notifiers.with(email.build().map_err(|err| self.wrap(field, err))?))
            }
            #[cfg(feature = "webhook")]
            NotifierSettings::Webhook(w) => {
                let secret = self.read(&w.secret, &format!("{field}.secret"))?;
                let mut webhook =
                    crate::notify::WebhookNotifier::builder(w.url.clone()).secret(secret);
                if let Some(include) = w.include_code {
                    webhook = webhook.include_code(include);
                }
                if let Some(timeout) = w.attempt_timeout {
                    webhook = webhook.attempt_timeout(timeout);
                }
                if let Some(attempts) = w.max_attempts {
                    webhook = webhook.max_attempts(attempts);
                }
                Ok(notifiers.with(webhook.build().map_err(|err| self.wrap(field, err))?))
            }
            #[cfg(feature = "webhook")]
            NotifierSettings::Slack(s) => {
                let url = self.read(&s.url, &format!("{field}.url"))?;
                use crate::notify::SlackBuilder as C;
                let slack = crate::notify::SlackNotifier::builder(url);
                let slack = with(slack, s.include_code, C::include_code);
                let slack = with(slack, s.attempt_timeout, C::attempt_timeout);
                let slack = with(slack, s.max_attempts, C::max_attempts);
                Ok(notifiers.with(slack.build().map_err(|err| self.wrap(field, err))?))
            }
            #[cfg(not(feature = "email"))]
            NotifierSettings::Email(_) => Err(self.needs_feature(field, "email", "email")),
            #[cfg(not(feature = "webhook"))]
            NotifierSettings::Webhook(_) => Err(self.needs_feature(field, "webhook", "webhook")),
            #[cfg(not(feature = "webhook"))]
            NotifierSettings::Slack(_) => Err(self.needs_feature(field, "slack", "webhook")),
        }
    }

    #[cfg(not(all(
        feature = "email",
        feature = "webhook",
        feature = "sqlite",
        feature = "postgres"
    )))]
    fn needs_feature(&self, field: &str, kind: &str, feature: &str) -> Error {
        let message = format!(
            "kind = \"{kind}\" needs tollgate's `{feature}` feature, which this build lacks (the binary: cargo install --locked tollgate --features cli,{feature})"
        );
        self.invalid(&format!("{field}.kind"), &message)
    }

    /// Where the approval page and API are served: `[approval] listen`, `127.0.0.1:8790` when
    /// absent.
    pub fn approval_address(&self) -> Result<std::net::SocketAddr, Error> {
        let listen = self
            .approval
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_APPROVAL_ADDRESS);
        listen.parse().map_err(|_| {
            self.invalid(
                "approval.listen",
                "expected an address and port, such as \"127.0.0.1:8790\"",
            )
        })
    }

    /// The approvers of `[[approval.approvers]]`, their tokens read, for
    /// [`approval::router`](crate::approval::router).
    #[cfg(feature = "axum")]
    pub fn approvers(&self) -> Result<crate::approval::Tokens, Error> {
        use crate::approval::{Approver, Tokens};
        let mut tokens = Tokens::new();
        for (i, entry) in self.approval.approvers.iter().enumerate() {
            let field = format!("approval.approvers[{i}]");
            if entry.name.trim().is_empty() {
                return Err(self.invalid(&format!("{field}.name"), "a name must not be empty"));
            }
            let token = self.read(&entry.token, &format!("{field}.token"))?;
            if token.len() < 16 {
                return Err(self.invalid(
                    &format!("{field}.token"),
                    "a token must be at least 16 bytes",
                ));
            }
            let mut approver = Approver::new(entry.name.as_str());
            if let Some(patterns) = &entry.capabilities {
                approver = approver.capabilities(patterns);
            }
            if let Some(scope) = entry.max_scope {
                approver = approver.max_scope(scope);
            }
            // Tokens are kept by digest: one that adds nobody is another approver's.
            tokens = tokens.token(token, approver);
            if tokens.len() == i {
                return Err(self.invalid(
                    &format!("{field}.token"),
                    "two approvers share this token: each needs their own",
                ));
            }
        }
        Ok(tokens)
    }

    /// A secret's value; the value itself never appears in an error.
    fn read(&self, secret: &Secret, field: &str) -> Result<String, Error> {
        match secret {
            Secret::Env(name) => std::env::var(name).map_err(|_| {
                self.invalid(field, &format!("the environment variable {name} is not set (or not UTF-8): set it before starting, or read the value from a file with {{ file = \"PATH\" }}"))
            }),
            Secret::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => Ok(text.strip_suffix('\n').unwrap_or(&text).trim_end_matches('\r').to_owned()),
                Err(e) => Err(self
                    .invalid(field, &format!("cannot read {}: {e}", path.display()))
                    .with_source(e)),
            },
            Secret::Inline(value) if self.gate.allow_inline_secrets => Ok(value.clone()),
            Secret::Inline(_) => Err(self.invalid(
                field,
                "inline secrets are refused, since configuration files get committed and copied: \
                 use { env = \"NAME\" } or { file = \"PATH\" } (or gate.allow_inline_secrets = true in tests)",
            )),
        }
    }

    fn origin_name(&self) -> Cow<'_, str> {
        self.origin
            .as_deref()
            .map_or(Cow::Borrowed("configuration"), Path::to_string_lossy)
    }

    /// `approvers` with each `"@group"` replaced by its members, each name once.
    fn expanded<'a>(&'a self, approvers: &'a [String]) -> Vec<&'a str> {
        let mut names: Vec<&str> = Vec::new();
        for name in approvers {
            let members = match name.strip_prefix('@') {
                Some(group) => self.groups.get(group).map_or(&[][..], Vec::as_slice),
                None => std::slice::from_ref(name),
            };
            for member in members {
                if !names.contains(&member.as_str()) {
                    names.push(member);
                }
            }
        }
        names
    }

    /// Checks an entry's approvers, its own settings and `[defaults]` combined: every group it
    /// names exists, and a quorum has that many approvers to come from.
    fn check_approvers(&self, field: &str, settings: &CapabilitySettings) -> Result<(), Error> {
        let approvers = settings.approvers.as_deref().unwrap_or_default();
        if let Some(group) = approvers
            .iter()
            .filter_map(|a| a.strip_prefix('@'))
            .find(|group| !self.groups.contains_key(*group))
        {
            let message = format!("names group `{group}`, which [groups] does not list");
            return Err(self.invalid(&format!("{field}.approvers"), &message));
        }
        let quorum = settings.quorum.unwrap_or(1);
        if quorum > 1 && self.expanded(approvers).len() < usize::from(quorum) {
            return Err(self.invalid(
                &format!("{field}.quorum"),
                "needs at least that many approvers named in `approvers`",
            ));
        }
        Ok(())
    }

    fn invalid(&self, field: &str, message: &str) -> Error {
        Error::new(ErrorKind::InvalidConfig)
            .with_detail(format!("{}: {field}: {message}", self.origin_name()))
    }

    /// Names the file and field on an error from a builder.
    fn wrap(&self, field: &str, error: Error) -> Error {
        let detail = error.detail().unwrap_or(error.code()).to_owned();
        self.invalid(field, &detail).with_source(error)
    }
}

/// `builder` with `set` applied when the file gave a value; the builder's default stands otherwise.
fn with<B, T>(builder: B, value: Option<T>, set: impl FnOnce(B, T) -> B) -> B {
    match value {
        Some(value) => set(builder, value),
        None => builder,
    }
}

/// `smtps://user@host` with the password put in, percent-encoded; `None` without a user.
#[cfg(feature = "email")]
fn with_password(url: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (user, host) = rest.split_once('@')?;
    if user.is_empty() || user.contains(':') {
        return None;
    }
    let mut encoded = String::new();
    for byte in password.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Some(format!("{scheme}://{user}:{encoded}@{host}"))
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

#[cfg(feature = "toml")]
fn parse_toml(text: &str, origin: Option<&Path>) -> Result<Config, Error> {
    let name = origin.map_or(Cow::Borrowed("configuration"), Path::to_string_lossy);
    let error = |kind: ErrorKind, path: String, e: &toml::de::Error| {
        let mut detail = format!("{name}: ");
        if !path.is_empty() {
            detail.push_str(&path);
            detail.push_str(": ");
        }
        detail.push_str(e.message().trim_end());
        if let Some(span) = e.span() {
            let (line, column) = line_column(text, span.start);
            detail.push_str(&format!(" (line {line}, column {column})"));
        }
        // The TOML error's own text quotes the offending line, which may hold a secret: keep
        // only its message and position.
        Error::new(kind).with_detail(detail)
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| error(ErrorKind::ConfigUnreadable, "not TOML".into(), &e))?;
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e
            .path()
            .iter()
            .map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => toml_key(key),
                serde_path_to_error::Segment::Seq { index } => format!("[{index}]"),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
            .replace(".[", "[");
        error(ErrorKind::InvalidConfig, path, e.inner())
    })?;
    config.origin = origin.map(Path::to_path_buf);
    config.validate()?;
    Ok(config)
}

#[cfg(feature = "toml")]
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The policy a [`Config`] describes: its mode, entries and defaults. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConfigPolicy {
    /// `None` when approvals are disabled.
    table: Option<CapabilityTable>,
}

impl<R: Call + ?Sized> Policy<R> for ConfigPolicy {
    fn check(&self, call: &R) -> Decision {
        match &self.table {
            Some(table) => table.check(call),
            None => {
                Decision::allow("approvals are disabled by configuration (mode = \"disabled\")")
            }
        }
    }
}
