//! Building a gate: settings checked, the store's state recovered.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use super::code::{self, CodeKey};
use super::effects::Deliveries;
use super::rate::{AlertRate, RateLimiter};
use super::record::Write;
use super::registry::{Limits, Registry};
use super::rules::{RuleTable, deadline_of};
use super::seal::SealKey;
use super::writer::StoreWriter;
use super::{Gate, Settings, Shared};
use crate::audit::{AuditEntry, AuditEvent};
use crate::error::{Error, ErrorKind};
use crate::notify::{FanOut, Notifier};
use crate::request::AccessRequest;
use crate::rule::Rule;
use crate::store::{MemoryStore, Store};
use crate::time::to_millis;

/// Builds a [`Gate`]; see [`Gate::builder`].
#[must_use]
pub struct GateBuilder {
    secret: Option<Box<[u8]>>,
    random_secret: bool,
    request_ttl: Duration,
    code_length: usize,
    max_attempts: u32,
    max_pending_per_principal: usize,
    max_pending: usize,
    max_waiters_per_request: usize,
    notify_timeout: Duration,
    approval_base_url: Option<String>,
    history: usize,
    notifiers: FanOut,
    /// The escalation delay and notifiers, if the gate escalates.
    escalation: Option<(Duration, FanOut)>,
    /// How much later an escalated request expires.
    extension: Option<Duration>,
    alert_concurrency: usize,
    alert_rate: Option<AlertRate>,
    park_unnotified: bool,
    store: Option<Arc<dyn Store>>,
    audit_args: bool,
}

impl fmt::Debug for GateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateBuilder")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("random_secret", &self.random_secret)
            .field("request_ttl", &self.request_ttl)
            .field("code_length", &self.code_length)
            .field("max_attempts", &self.max_attempts)
            .field("notifiers", &self.notifiers.len())
            .field("alert_rate", &self.alert_rate)
            .field("park_unnotified", &self.park_unnotified)
            .field("store", &self.store)
            .field("audit_args", &self.audit_args)
            .finish_non_exhaustive()
    }
}

impl GateBuilder {
    /// The secret codes are derived from, at least 16 bytes. Keep it out of the agent's reach.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(secret.as_ref().into());
        self
    }

    /// Derives codes from a random secret made for this process, instead of a configured one.
    /// Codes then stop verifying when the process restarts, and replicas cannot share requests.
    pub fn random_secret(mut self) -> Self {
        self.random_secret = true;
        self
    }

    /// How long a request waits for a decision before it expires. Default: 5 minutes.
    pub fn request_ttl(mut self, ttl: Duration) -> Self {
        self.request_ttl = ttl;
        self
    }

    /// The number of hex characters in a code, 6 to 64. Default: 8.
    pub fn code_length(mut self, length: usize) -> Self {
        self.code_length = length;
        self
    }

    /// Wrong codes a request accepts before it is denied with `too_many_attempts`, 1 to 1,000.
    /// Default: 5.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Pending requests one principal may have at once. Default: 16.
    pub fn max_pending_per_principal(mut self, max: usize) -> Self {
        self.max_pending_per_principal = max;
        self
    }

    /// Pending requests the gate holds at once. Default: 10,000.
    pub fn max_pending(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// Callers that may wait on one access request at once: calls identical to a pending one
    /// join it rather than alerting anyone again, and past this many the next fails at once with
    /// `too_many_pending`. A caller that goes away frees its place. Default: 256.
    pub fn max_waiters_per_request(mut self, max: usize) -> Self {
        self.max_waiters_per_request = max;
        self
    }

    /// How long the notifiers together may take to accept an alert. If none has accepted by
    /// then, the call fails with `notification_failed` (see
    /// [`park_when_unnotified`](Self::park_when_unnotified)). Default: 10 seconds.
    pub fn notify_timeout(mut self, timeout: Duration) -> Self {
        self.notify_timeout = timeout;
        self
    }

    /// Parks calls even when no notifier accepted their alert, for deployments where approvers
    /// pull pending requests from a list or a page instead of being told. Without it, such a
    /// call fails with `notification_failed`, so nothing waits unseen; with it, a gate may also
    /// be built with no notifier at all.
    pub fn park_when_unnotified(mut self) -> Self {
        self.park_unnotified = true;
        self
    }

    /// How many alerts each notifier may be delivering at once. A notifier that hangs holds
    /// only its own slots (each for at most the notify timeout) and delays no other notifier.
    /// Default: 64.
    pub fn alert_concurrency(mut self, per_notifier: usize) -> Self {
        self.alert_concurrency = per_notifier;
        self
    }

    /// At most `alerts` new access requests per `window` for one principal; past it, a call
    /// that would alert someone fails at once with `too_many_alerts`. Calls identical to a
    /// pending one join it and alert nobody, so they are not counted. Default: 20 per minute.
    pub fn alert_rate(mut self, alerts: u32, window: Duration) -> Self {
        self.alert_rate = Some(AlertRate { alerts, window });
        self
    }

    /// Removes the per-principal alert rate. The pending caps still apply.
    pub fn unlimited_alert_rate(mut self) -> Self {
        self.alert_rate = None;
        self
    }

    /// Where the approval pages live: each request's approval URL is this base, `/`, and its id.
    pub fn approval_base_url(mut self, base: impl Into<String>) -> Self {
        self.approval_base_url = Some(base.into().trim_end_matches('/').to_owned());
        self
    }

    /// Escalates a request nobody decided within `after`: `notifier` (a second set of people,
    /// another channel) is alerted too, with the same code, and the audit trail records
    /// `escalated`. The first alert's notifiers keep theirs; whoever decides first decides.
    /// Call it again to escalate to more notifiers at once; the last `after` given counts. It
    /// must be shorter than the request TTL (`invalid_config` otherwise), and the escalation
    /// happens once per request.
    pub fn escalate(mut self, after: Duration, notifier: impl Notifier) -> Self {
        let notifiers = match self.escalation.take() {
            Some((_, notifiers)) => notifiers,
            None => FanOut::new(),
        };
        self.escalation = Some((after, notifiers.with(notifier)));
        self
    }

    /// Gives an escalated request `by` more to be decided: when it escalates, its expiry moves
    /// that much later, once, and the escalation's alert says so. Its code stays the one its
    /// first alert carried. Needs an [`escalate`](Self::escalate), a duration from a second to a
    /// year, and a store no other replica shares (`invalid_config` otherwise: replicas read the
    /// expiry from the store, where the request keeps the one it was made with).
    pub fn escalation_extends(mut self, by: Duration) -> Self {
        self.extension = Some(by);
        self
    }

    /// Adds every channel of `notifiers`, as [`notifier`](Self::notifier) adds one.
    pub(crate) fn notifiers(mut self, notifiers: FanOut) -> Self {
        self.notifiers = self.notifiers.extend(notifiers);
        self
    }

    /// How many decided requests are remembered for `status` and late approvers. Default: 4,096.
    pub fn history(mut self, capacity: usize) -> Self {
        self.history = capacity;
        self
    }

    /// Where requests, rules and the audit trail are kept; [`MemoryStore`] unless told otherwise.
    /// With a durable store (`SqliteStore`), standing rules and the audit trail survive restarts;
    /// see [`store`](crate::store) for the write-ahead order and what a restart does.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Whether audit entries record the call's arguments (canonical JSON) besides their digest.
    /// Default: off, so the trail holds no argument values.
    pub fn audit_args(mut self, record: bool) -> Self {
        self.audit_args = record;
        self
    }

    /// Adds a notifier. Every alert goes to all of them at once; it fails only if none accepts
    /// it. Combine notifiers with [`NotifierExt`](crate::notify::NotifierExt) for fallbacks
    /// and per-notifier timeouts.
    pub fn notifier(mut self, notifier: impl Notifier) -> Self {
        self.notifiers = self.notifiers.with(notifier);
        self
    }

    /// Checks the settings, recovers the store's state, and builds the gate.
    ///
    /// The store's [`recover`](Store::recover) runs here: requests an earlier process left
    /// unfinished become `abandoned` (the notifiers hear so once the gate runs inside a Tokio
    /// runtime), and standing rules apply again. Errors: `invalid_config`, `missing_secret`, and
    /// the store's own (`store_unreadable`, `store_failed`).
    pub fn build(self) -> Result<Gate, Error> {
        let invalid =
            |detail: &'static str| Err(Error::new(ErrorKind::InvalidConfig).with_detail(detail));
        let secret = match (self.secret, self.random_secret) {
            (Some(secret), false) => secret,
            (None, true) => code::random_secret()?,
            (Some(_), true) => return invalid("give either `secret` or `random_secret`, not both"),
            (None, false) => {
                return Err(Error::new(ErrorKind::MissingSecret).with_detail(
                    "set one with `secret(..)` (from the environment or a file, never from the source), or call `random_secret()` for codes and rules that end with the process",
                ));
            }
        };
        let key = CodeKey::new(&secret, self.code_length)?;
        let seals = SealKey::new(&secret);
        drop(secret);
        if self.request_ttl.is_zero() || self.request_ttl > LONGEST_REQUEST {
            return invalid("request_ttl must be more than zero and at most a year");
        }
        // Each wrong code is a guess: past a thousand, a short code stops being a secret.
        if !(1..=MOST_ATTEMPTS).contains(&self.max_attempts) {
            return invalid("max_attempts must be between 1 and 1,000");
        }
        if self.max_pending == 0
            || self.max_pending_per_principal == 0
            || self.max_waiters_per_request == 0
        {
            return invalid(
                "max_pending, max_pending_per_principal and max_waiters_per_request must be at least 1",
            );
        }
        if self.notifiers.is_empty() && !self.park_unnotified {
            return invalid(
                "at least one notifier is needed, or nobody hears of a request (or call `park_when_unnotified` for pull approvals)",
            );
        }
        if self.notify_timeout.is_zero() || self.alert_concurrency == 0 {
            return invalid("notify_timeout and alert_concurrency must be more than zero");
        }
        if let Some(rate) = self.alert_rate
            && (rate.alerts == 0 || rate.window.is_zero())
        {
            return invalid("alert_rate needs at least one alert in a window longer than zero");
        }
        if let Some((after, _)) = &self.escalation
            && (after.is_zero() || *after >= self.request_ttl)
        {
            return invalid(
                "an escalation must come after more than zero and before the request TTL",
            );
        }
        let notifiers = self
            .notifiers
            .bounded(self.alert_concurrency)
            .within(self.notify_timeout);
        if let Some(by) = self.extension {
            if self.escalation.is_none() {
                return invalid("an escalation's extension needs an escalation: call `escalate`");
            }
            if by < Duration::from_secs(1) || by > Duration::from_secs(366 * 86_400) {
                return invalid("an escalation's extension must be from a second to a year");
            }
        }
        let escalate_after = self.escalation.as_ref().map(|(after, _)| *after);
        let extension = self.extension;
        let escalation = self.escalation.map(|(_, notifiers)| {
            Arc::new(
                notifiers
                    .bounded(self.alert_concurrency)
                    .within(self.notify_timeout),
            )
        });
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn Store>);
        if extension.is_some() && store.shared() {
            return invalid(
                "an escalation's extension needs a store no other replica shares: they read the expiry from the store",
            );
        }
        let recovered = store.recover(to_millis(SystemTime::now()))?;
        let mut rules = RuleTable::default();
        let (honoured, rejected): (Vec<Rule>, Vec<Rule>) = recovered
            .rules
            .into_iter()
            .partition(|rule| seals.verifies(rule));
        let recovered_rules = honoured.len();
        for rule in honoured {
            if let Some(deadline) = deadline_of(&rule) {
                rules.insert(rule, deadline);
            }
        }
        if recovered_rules > 0 || !recovered.abandoned.is_empty() || !rejected.is_empty() {
            tracing::info!(
                store = ?store,
                rules = recovered_rules,
                rejected = rejected.len(),
                abandoned = recovered.abandoned.len(),
                "store recovered"
            );
        }
        let shared_store = store.shared();
        let gate = Gate {
            shared: Arc::new(Shared {
                settings: Settings {
                    request_ttl: self.request_ttl,
                    limits: Limits {
                        per_principal: self.max_pending_per_principal,
                        total: self.max_pending,
                        attempts: self.max_attempts,
                        waiters: self.max_waiters_per_request,
                    },
                    approval_base_url: self.approval_base_url,
                    park_unnotified: self.park_unnotified,
                    audit_args: self.audit_args,
                    shared_store,
                    alert_concurrency: self.alert_concurrency,
                    notify_timeout: self.notify_timeout,
                },
                key,
                seals,
                notifiers: RwLock::new(Arc::new(notifiers)),
                registry: Mutex::new(
                    Registry::new(self.history, self.alert_rate.map(RateLimiter::new))
                        .escalate_after(escalate_after, extension)
                        .shared(shared_store),
                ),
                escalation,
                rules: RwLock::new(rules),
                changed: Notify::new(),
                watchers: AtomicUsize::new(0),
                alarm: Arc::default(),
                expiring: AtomicBool::new(false),
                wrong_codes: AtomicU64::new(0),
                #[cfg(feature = "metrics")]
                meters: crate::meters::Meters::new(),
                feed: Mutex::new(store.changes()),
                elsewhere: Mutex::default(),
                writer: StoreWriter::new(store),
                unannounced: Mutex::new(recovered.abandoned),
                deliveries: Deliveries::default(),
                observed: self.alert_rate.map(|r| Mutex::new(RateLimiter::new(r))),
            }),
        };
        for rule in rejected {
            gate.shared.reject(&rule);
        }
        if gate.shared.writer.start() {
            gate.shared.announce_abandoned();
            gate.shared.follow();
        }
        Ok(gate)
    }
}

/// The most wrong codes a request may accept.
const MOST_ATTEMPTS: u32 = 1000;

/// The longest request TTL the builder accepts.
const LONGEST_REQUEST: Duration = Duration::from_secs(366 * 24 * 3600);

impl Gate {
    /// Starts building a gate.
    pub fn builder() -> GateBuilder {
        GateBuilder {
            secret: None,
            random_secret: false,
            request_ttl: Duration::from_secs(300),
            code_length: 8,
            max_attempts: 5,
            max_pending_per_principal: 16,
            max_pending: 10_000,
            max_waiters_per_request: 256,
            notify_timeout: Duration::from_secs(10),
            approval_base_url: None,
            history: 4096,
            notifiers: FanOut::new(),
            escalation: None,
            extension: None,
            alert_concurrency: 64,
            alert_rate: Some(AlertRate {
                alerts: 20,
                window: Duration::from_secs(60),
            }),
            park_unnotified: false,
            store: None,
            audit_args: false,
        }
    }
}

impl Shared {
    /// A rule read from the store whose seal does not verify: not honoured, logged once, and
    /// written to the audit trail. The log names the rule, never its contents' secrets.
    pub(super) fn reject(self: &Arc<Self>, rule: &Rule) {
        tracing::warn!(
            rule_id = %rule.id,
            scope = %rule.scope,
            capability = ?rule.capability,
            "stored rule not honoured: its seal does not verify (made with another secret, or changed in the store)"
        );
        let mut entry =
            AuditEntry::for_rule(AuditEvent::RuleRejected, to_millis(SystemTime::now()), rule);
        entry.detail = Some(
            "its seal does not verify: made with another secret, or changed in the store".into(),
        );
        self.write(Write::Append(entry));
    }

    /// A request read from a store replicas share that is not honoured (its seal does not verify,
    /// or it is not the call that met it): logged once, and written to the audit trail as stored.
    pub(super) fn reject_request(self: &Arc<Self>, request: &AccessRequest) {
        tracing::warn!(
            request_id = %request.id,
            capability = ?request.capability,
            "stored request not honoured: its seal does not verify or it is another call (filed with another secret, or changed in the store)"
        );
        let at = to_millis(SystemTime::now());
        let mut entry = AuditEntry::for_request(AuditEvent::RequestRejected, at, request);
        entry.detail = Some(
            "its seal does not verify or it is another call: filed with another secret, or changed in the store".into(),
        );
        self.write(Write::Append(entry));
    }
}
