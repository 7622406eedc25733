//! The shared handle: pending requests, approve and deny, rules, status.
//!
//! A [`Gate`] is cheap to clone; every clone and every [`RequireApproval`](crate::RequireApproval)
//! made from it share one registry. The approver's side of the system talks to it:
//!
//! ```
//! # use std::time::Duration;
//! use tollgate::{Approve, Gate, Scope};
//! use tollgate::notify::RecordingNotifier;
//!
//! # async fn approver(gate: Gate, alerts: RecordingNotifier) -> Result<(), tollgate::Error> {
//! let alert = alerts.next_alert().await;                     // what the person was sent
//! let approval = gate
//!     .approve(
//!         Approve::new(alert.request().id(), alert.code().reveal())
//!             .scope(Scope::Value)
//!             .ttl(Duration::from_secs(3600))
//!             .by("alice"),
//!     )
//!     .await?;                                               // Ok only once the caller has it
//! assert_eq!(approval.scope(), Scope::Value);
//! # Ok(()) }
//! ```

mod code;
mod journal;
pub(crate) mod rate;
mod registry;
mod rules;
mod seal;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use self::code::CodeKey;
use self::journal::{Journal, job};
use self::rate::{AlertRate, RateLimiter};
use self::registry::{
    Decided, Delivery, Effects, Limits, Refusal, Registry, Resolved, Write, already, step,
};
use self::rules::{RuleTable, Verdict};
pub(crate) use self::seal::SealKey;
use crate::args::{ArgsDigest, canonical_json};
use crate::audit::{AuditEntry, AuditEvent, AuditFilter};
use crate::boxed::BoxFuture;
use crate::call::Call;
use crate::code::VerificationCode;
use crate::error::{Error, ErrorKind};
use crate::id::{RequestId, RuleId};
use crate::notify::{Alert, FanOut, Notifier, Resolution};
use crate::policy::Ask;
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::{Rule, RuleEffect};
use crate::scope::Scope;
use crate::store::{MemoryStore, Revocation, Store, is_finished};
use crate::time::to_millis;

/// The principal of calls that name none.
pub const ANONYMOUS: &str = "anonymous";

/// Human approval for calls: the registry of pending access requests and standing rules.
#[derive(Clone)]
pub struct Gate {
    shared: Arc<Shared>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("settings", &self.shared.settings)
            .field("notifiers", &self.shared.notifiers)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
struct Settings {
    request_ttl: Duration,
    limits: Limits,
    approval_base_url: Option<String>,
    /// Park calls whose alert no notifier accepted, instead of failing them.
    park_unnotified: bool,
    /// Whether audit entries carry the arguments, not only their digest.
    audit_args: bool,
}

pub(crate) struct Shared {
    settings: Settings,
    key: CodeKey,
    /// Seals the rules this gate makes, and checks those it reads back.
    seals: SealKey,
    /// Every notifier, each bounded in concurrency, all within the notify timeout.
    notifiers: FanOut,
    registry: Mutex<Registry>,
    rules: RwLock<RuleTable>,
    /// Signalled on every status change, for `Gate::wait`.
    changed: Notify,
    wrong_codes: AtomicU64,
    /// The store, behind the queue that keeps writes in order.
    journal: Journal,
    /// Requests an earlier process left unfinished, not yet announced to the notifiers.
    unannounced: Mutex<Vec<AccessRequest>>,
    /// Alerts and resolutions being delivered, for shutdown to wait on.
    deliveries: Deliveries,
}

/// Counts notifier deliveries under way: shutdown waits until none is left. Each is bounded by
/// the notify timeout.
#[derive(Default)]
struct Deliveries {
    running: AtomicUsize,
    idle: Notify,
}

impl Deliveries {
    /// Returns once no delivery is under way.
    async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

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
            (None, false) => return Err(Error::new(ErrorKind::MissingSecret)),
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
        let notifiers = self
            .notifiers
            .bounded(self.alert_concurrency)
            .within(self.notify_timeout);
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn Store>);
        let recovered = store.recover(to_millis(SystemTime::now()))?;
        let mut rules = RuleTable::default();
        let (wall, now) = (SystemTime::now(), Instant::now());
        let (honoured, rejected): (Vec<Rule>, Vec<Rule>) = recovered
            .rules
            .into_iter()
            .partition(|rule| seals.verifies(rule));
        let recovered_rules = honoured.len();
        for rule in honoured {
            let left = rule.expires_at.duration_since(wall).unwrap_or_default();
            rules.insert(rule, now + left.min(LONGEST_RULE));
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
                },
                key,
                seals,
                notifiers,
                registry: Mutex::new(Registry::new(
                    self.history,
                    self.alert_rate.map(RateLimiter::new),
                    self.audit_args,
                )),
                rules: RwLock::new(rules),
                changed: Notify::new(),
                wrong_codes: AtomicU64::new(0),
                journal: Journal::new(store),
                unannounced: Mutex::new(recovered.abandoned),
                deliveries: Deliveries::default(),
            }),
        };
        for rule in rejected {
            gate.shared.reject(&rule);
        }
        if gate.shared.journal.start() {
            gate.shared.announce_abandoned();
        }
        Ok(gate)
    }
}

/// An approval: who, which request, how far it reaches.
pub struct Approve {
    id: RequestId,
    code: String,
    scope: Scope,
    ttl: Option<Duration>,
    approver: Option<Arc<str>>,
    authority: Option<Box<dyn Authority>>,
}

/// What one approver may do beyond what the request itself allows: the approval API's
/// [`Approver`](crate::http::Approver) limits. Who may decide a request is asked before its code
/// is looked at, so someone who may not decide cannot spend its attempts; how far they may
/// grant is asked once the code is verified.
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) trait Authority: Send + Sync {
    /// Whether this approver may decide `request` at all.
    fn decides(&self, request: &AccessRequest) -> bool;
    /// Refuses a decision of `scope` beyond this approver's rights.
    fn grants(&self, scope: Scope) -> Result<(), Error>;
}

impl fmt::Debug for Approve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Approve")
            .field("id", &self.id)
            .field("code", &"<redacted>")
            .field("scope", &self.scope)
            .field("ttl", &self.ttl)
            .field("approver", &self.approver)
            .finish()
    }
}

impl Approve {
    /// Approves request `id` with the code its alert carried. The scope defaults to
    /// [`Scope::Once`].
    pub fn new(id: RequestId, code: impl Into<String>) -> Self {
        Approve {
            id,
            code: code.into(),
            scope: Scope::Once,
            ttl: None,
            approver: None,
            authority: None,
        }
    }

    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn authority(mut self, authority: impl Authority + 'static) -> Self {
        self.authority = Some(Box::new(authority));
        self
    }

    /// How far the approval reaches; at most the request's maximum scope.
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// How long the rule lasts; at most, and by default, the request's maximum rule TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Who approves. Required: every decision records its approver.
    #[must_use]
    pub fn by(mut self, approver: impl Into<Arc<str>>) -> Self {
        self.approver = Some(approver.into());
        self
    }
}

/// A denial: who, which request, why, and whether to remember it.
pub struct Deny {
    id: RequestId,
    code: String,
    reason: Option<Arc<str>>,
    approver: Option<Arc<str>>,
    remember: Scope,
    ttl: Option<Duration>,
    authority: Option<Box<dyn Authority>>,
}

impl fmt::Debug for Deny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deny")
            .field("id", &self.id)
            .field("code", &"<redacted>")
            .field("reason", &self.reason)
            .field("approver", &self.approver)
            .field("remember", &self.remember)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Deny {
    /// Denies request `id` with the code its alert carried.
    pub fn new(id: RequestId, code: impl Into<String>) -> Self {
        Deny {
            id,
            code: code.into(),
            reason: None,
            approver: None,
            remember: Scope::Once,
            ttl: None,
            authority: None,
        }
    }

    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn authority(mut self, authority: impl Authority + 'static) -> Self {
        self.authority = Some(Box::new(authority));
        self
    }

    /// The reason, given to the caller.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<Arc<str>>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Who denies. Required: every decision records its approver.
    #[must_use]
    pub fn by(mut self, approver: impl Into<Arc<str>>) -> Self {
        self.approver = Some(approver.into());
        self
    }

    /// Remembers the denial as a rule of this scope, so covered calls fail without asking.
    #[must_use]
    pub fn remember(mut self, scope: Scope) -> Self {
        self.remember = scope;
        self
    }

    /// How long a remembered denial lasts; at most, and by default, the request's maximum rule TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// A successful approval: a waiting call received it.
#[derive(Clone, Debug)]
pub struct Approval {
    request: Arc<AccessRequest>,
    scope: Scope,
    rule: Option<Rule>,
}

impl Approval {
    /// The approved request.
    pub fn request(&self) -> &AccessRequest {
        &self.request
    }
    /// What the approval covers.
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// The standing rule it made; `None` for [`Scope::Once`].
    pub fn rule(&self) -> Option<&Rule> {
        self.rule.as_ref()
    }
}

/// A successful denial.
#[derive(Clone, Debug)]
pub struct Denial {
    request: Arc<AccessRequest>,
    rule: Option<Rule>,
}

impl Denial {
    /// The denied request.
    pub fn request(&self) -> &AccessRequest {
        &self.request
    }
    /// The remembered denial, if one was asked for.
    pub fn rule(&self) -> Option<&Rule> {
        self.rule.as_ref()
    }
}

/// A snapshot of the gate's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Access requests waiting for a person.
    pub pending: usize,
    /// Callers parked on them (identical calls share one request).
    pub parked: usize,
    /// Requests still held in memory: pending, or decided with callers not yet resumed.
    pub live: usize,
    /// Standing rules, including expired ones not yet swept out.
    pub rules: usize,
    /// Wrong codes entered since the gate started.
    pub wrong_codes: u64,
}

/// How the gate answers a call that the policy asked about.
pub(crate) enum Admission {
    /// A standing rule allows it.
    Run,
    /// Refused without parking.
    Refuse(Error),
    /// Parked on an access request.
    Park(Waiter),
}

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

    /// Approves a pending request.
    ///
    /// Succeeds only if the code matches, the scope and TTL are within what the request allows,
    /// the store recorded the approval, and a waiting call received it. Otherwise the error says
    /// what happened: `access_request_not_found` (unknown id or wrong code, alike),
    /// `too_many_attempts`, `scope_not_allowed`, `approver_not_allowed`, `already_resolved`,
    /// `access_request_expired`, `access_request_cancelled`, `access_request_abandoned`,
    /// `missing_approver`, `store_failed` (nothing was approved; the request is still pending).
    ///
    /// Once this future has been polled, the approval is on its way: dropping the future does not
    /// take it back, it only stops you from hearing whether a caller received it.
    pub async fn approve(&self, approve: Approve) -> Result<Approval, Error> {
        let (ack, acked) = oneshot::channel();
        let ruling = Ruling {
            effect: RuleEffect::Allow,
            scope: approve.scope,
            ttl: approve.ttl,
            approver: approve.approver,
            reason: None,
            authority: approve.authority,
        };
        let (request, rule) = self
            .rule_on(approve.id, &approve.code, ruling, |outcome, rule| {
                Decided::Approve(Delivery { outcome, rule, ack })
            })
            .await?;
        // Stored, and taken by a waiting caller; if every caller left first, it was cancelled.
        acknowledged(approve.id, acked).await?;
        Ok(Approval {
            request,
            scope: approve.scope,
            rule,
        })
    }

    /// Denies a pending request; its callers fail with `access_request_denied`.
    ///
    /// Errors as [`approve`](Self::approve) does, except that a denial needs no waiting caller.
    pub async fn deny(&self, deny: Deny) -> Result<Denial, Error> {
        let (ack, acked) = oneshot::channel();
        let ruling = Ruling {
            effect: RuleEffect::Deny,
            scope: deny.remember,
            ttl: deny.ttl,
            approver: deny.approver,
            reason: deny.reason,
            authority: deny.authority,
        };
        let (request, rule) = self
            .rule_on(deny.id, &deny.code, ruling, |outcome, rule| Decided::Deny {
                outcome,
                rule,
                ack,
            })
            .await?;
        acknowledged(deny.id, acked).await?;
        Ok(Denial { request, rule })
    }

    /// What approve and deny share: the approver must be named and may decide the request (asked
    /// before the code is looked at: someone who may not decide hears what an unknown id hears,
    /// and spends none of the request's attempts), the code must match, the scope and TTL must be
    /// allowed; then the decision goes to the store and takes effect once stored. Returns the
    /// request and the rule the decision makes, if any.
    async fn rule_on(
        &self,
        id: RequestId,
        code: &str,
        ruling: Ruling,
        decided: impl FnOnce(Outcome, Option<(Rule, Instant)>) -> Decided,
    ) -> Result<(Arc<AccessRequest>, Option<Rule>), Error> {
        let approver = ruling
            .approver
            .ok_or_else(|| Error::new(ErrorKind::MissingApprover))?;
        let now = Instant::now();
        let mut rule = None;
        let audit_args = self.shared.settings.audit_args;
        let authority = ruling.authority;
        let may_decide = |request: &AccessRequest| {
            request.admits(&approver) && authority.as_ref().is_none_or(|a| a.decides(request))
        };
        let result = self.shared.locked(|registry| {
            registry.decide(
                id,
                may_decide,
                |request| self.shared.verify(request, code),
                Some(&approver),
                now,
                self.shared.settings.limits,
                |request| {
                    if let Some(authority) = &authority {
                        authority.grants(ruling.scope)?;
                    }
                    let ttl = allowed(request, ruling.scope, ruling.ttl)?;
                    rule = new_rule(
                        &self.shared.seals,
                        request,
                        ruling.effect,
                        ruling.scope,
                        ttl,
                        &approver,
                        ruling.reason.clone(),
                    );
                    let (outcome, event) = match ruling.effect {
                        RuleEffect::Allow => (
                            Outcome::Approved {
                                approver: approver.clone(),
                                scope: ruling.scope,
                                until: rule.as_ref().map(|r| r.expires_at),
                            },
                            AuditEvent::Approved,
                        ),
                        RuleEffect::Deny => (
                            Outcome::Denied {
                                approver: approver.clone(),
                                reason: ruling.reason.clone(),
                            },
                            AuditEvent::Denied,
                        ),
                    };
                    let mut entry = registry::entry(audit_args, event, request);
                    entry.approver = Some(approver.clone());
                    entry.reason = ruling.reason.clone();
                    entry.scope = Some(ruling.scope);
                    let mut write = step(
                        entry,
                        Status::Pending,
                        outcome.status(),
                        Some(outcome.clone()),
                    );
                    // An approval's rule is filed when a caller takes it; a denial's at once.
                    if ruling.effect == RuleEffect::Deny
                        && let Some(rule) = &rule
                    {
                        let mut granted =
                            AuditEntry::for_rule(AuditEvent::RuleGranted, write.audit[0].at, rule);
                        granted.approver = Some(approver.clone());
                        granted.reason = ruling.reason.clone();
                        write.audit.push(granted);
                        write.rule = Some(rule.clone());
                    }
                    let deadline = rule.as_ref().map(|_| now + ttl);
                    let filed = rule.clone().zip(deadline);
                    Ok((decided(outcome, filed), write))
                },
            )
        });
        match result {
            Ok(request) => Ok((request, rule)),
            Err(Refusal::Error(error)) => Err(error),
            Err(Refusal::Unknown) => Err(self.stored_answer(id, &may_decide, code).await),
        }
    }

    /// What an approver hears about a request this process does not hold in memory: the store
    /// may know it, from before a restart or from another process.
    async fn stored_answer(
        &self,
        id: RequestId,
        may_decide: impl Fn(&AccessRequest) -> bool,
        code: &str,
    ) -> Error {
        let not_found = || Error::new(ErrorKind::AccessRequestNotFound);
        match self.read(move |store| store.request(id)).await {
            Ok(Some(stored))
                if may_decide(&stored.request) && self.shared.verify(&stored.request, code) =>
            {
                if is_finished(stored.status) {
                    already(stored.status, id)
                } else {
                    not_found().with_detail("another process holds this request")
                }
            }
            Ok(_) => not_found(),
            Err(error) => error,
        }
    }

    /// Runs a read on the store, after every write queued before it.
    async fn read<T, F>(&self, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a dyn Store) -> BoxFuture<'a, Result<T, Error>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.shared.run(job(move |store| {
            Box::pin(async move {
                let _ = tx.send(op(store).await);
            })
        }));
        rx.await.unwrap_or_else(|_| Err(queue_stopped()))
    }

    /// The requests waiting for a person, oldest first. Codes are never part of them.
    pub fn pending(&self) -> Vec<AccessRequest> {
        self.shared.registry().pending()
    }

    /// The verification code of pending request `id`, for approval UIs that show pending
    /// requests to people they have authenticated themselves (pull approvals, often with
    /// [`park_when_unnotified`](GateBuilder::park_when_unnotified)).
    ///
    /// Whoever sees a code can approve its request: show it only to people allowed to approve
    /// that request, never to the caller, and never in logs. `None` once the request is not
    /// pending.
    pub fn verification_code(&self, id: RequestId) -> Option<VerificationCode> {
        let request = self.shared.registry().pending_request(id)?;
        Some(self.shared.key.code(&request))
    }

    /// Request `id` and where it stands, for approval pages: pending requests once stored, and
    /// decided ones up to the history capacity. Codes are never part of it.
    pub fn request(&self, id: RequestId) -> Option<(AccessRequest, Status)> {
        let (request, status) = self.shared.registry().request(id)?;
        Some(((*request).clone(), status))
    }

    /// The base of approval URLs, if configured.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn approval_base_url(&self) -> Option<&str> {
        self.shared.settings.approval_base_url.as_deref()
    }

    /// Where request `id` stands. Decided requests are remembered up to the history capacity;
    /// beyond it, and for unknown ids, the answer is `access_request_not_found`.
    pub fn status(&self, id: RequestId) -> Result<Status, Error> {
        self.shared
            .registry()
            .status(id)
            .ok_or_else(|| Error::new(ErrorKind::AccessRequestNotFound).with_request(id))
    }

    /// Waits until request `id` is no longer pending and returns its status. Gives up after
    /// `timeout` with `wait_timed_out`, leaving the request pending.
    pub async fn wait(&self, id: RequestId, timeout: Duration) -> Result<Status, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let status = self.status(id)?;
            if !status.is_pending() {
                return Ok(status);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(Error::new(ErrorKind::WaitTimedOut).with_request(id));
            }
        }
    }

    /// The live standing rules, oldest first.
    pub fn rules(&self) -> Vec<Rule> {
        self.shared.rules_table().list(Instant::now())
    }

    /// Revokes rules: one, a capability's, or all. The store deletes them first, with a
    /// `rule_revoked` audit entry naming who revoked each; then they stop applying. Returns the
    /// revoked rules, oldest first (none if there was no such rule).
    ///
    /// ```
    /// # use tollgate::{Gate, Revoke};
    /// # async fn revoke(gate: Gate) -> Result<(), tollgate::Error> {
    /// let revoked = gate.revoke(Revoke::capability("payments.refund").by("alice")).await?;
    /// println!("{} rules revoked", revoked.len());
    /// # Ok(()) }
    /// ```
    pub async fn revoke(&self, revoke: Revoke) -> Result<Vec<Rule>, Error> {
        let by = revoke
            .by
            .ok_or_else(|| Error::new(ErrorKind::MissingApprover))?;
        let shared = self.shared.clone();
        let which = revoke.which;
        self.read(move |store| {
            Box::pin(async move {
                let at = to_millis(SystemTime::now());
                let revoked = store.revoke(&which, &by, at).await?;
                // The memory mirrors the store, in queue order: after this, no call sees them.
                let mut rules = shared.rules_mut();
                match &which {
                    Revocation::Rule(id) => drop(rules.remove(*id)),
                    Revocation::Capability(capability) => drop(rules.remove_capability(capability)),
                    Revocation::All => drop(rules.clear()),
                }
                drop(rules);
                for rule in &revoked {
                    tracing::info!(rule_id = %rule.id, capability = ?rule.capability, revoked_by = ?by, "rule revoked");
                }
                shared.changed.notify_waiters();
                Ok(revoked)
            })
        })
        .await
    }

    /// The audit trail entries `filter` selects, oldest first. They include every transition
    /// this gate made before the call.
    pub async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, Error> {
        self.read(move |store| Box::pin(async move { store.audit(&filter).await }))
            .await
    }

    /// Shuts the gate down, as a server does before it exits.
    ///
    /// From the first poll on, a call that needs a person fails at once with `gate_shut_down`
    /// (retryable: against another instance, or once this one is back), and every parked caller
    /// fails with it too. Pending requests end as [`Status::Abandoned`] in the store, with an
    /// `abandoned` audit entry, and the notifiers are told. Returns once the store has every
    /// write queued before, and every notifier delivery under way has ended (each within the
    /// notify timeout).
    ///
    /// What needs no person keeps working: calls the policy allows, and calls a standing rule
    /// covers (a remembered denial still refuses). A decision already being recorded when the
    /// shutdown starts takes effect as usual. An approver deciding an abandoned request hears
    /// `access_request_abandoned`. Calling it again does no harm.
    ///
    /// ```
    /// # use tollgate::Gate;
    /// # async fn serve(gate: Gate) -> Result<(), tollgate::Error> {
    /// tokio::signal::ctrl_c().await.ok();
    /// gate.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) -> Result<(), Error> {
        let pending = self
            .shared
            .locked(|registry| (registry.shut_down(), Effects::default()));
        for &id in &pending {
            self.shared
                .locked(|registry| ((), registry.close(id, Outcome::Abandoned)));
        }
        self.shared.changed.notify_waiters();
        // A write that lands may queue another (an approval's take): flush until none is left.
        loop {
            self.read(|_| Box::pin(async { Ok(()) })).await?;
            if !self.shared.registry().writing() {
                break;
            }
        }
        self.shared.deliveries.idle().await;
        tracing::info!(abandoned = pending.len(), "gate shut down");
        Ok(())
    }

    /// The gate's current load.
    pub fn stats(&self) -> Stats {
        let counts = self.shared.registry().counts();
        Stats {
            pending: counts.pending,
            parked: counts.parked,
            live: counts.live,
            rules: self.shared.rules_table().len(),
            wrong_codes: self.shared.wrong_codes.load(Ordering::Relaxed),
        }
    }

    /// Standing rules first, then the registry: run, refuse, or park the call.
    pub(crate) fn admit<R: Call>(&self, call: &R, ask: Ask) -> Admission {
        let capability = call.capability();
        if ask.require_reason && call.reason().is_none_or(|r| r.trim().is_empty()) {
            return Admission::Refuse(Error::new(ErrorKind::ReasonRequired));
        }
        let principal = call.principal().unwrap_or(ANONYMOUS);
        let session = call.session();
        // Computed at most once, and only if a value rule or a new request needs it.
        let digest_cell = std::cell::OnceCell::new();
        let digest = || *digest_cell.get_or_init(|| ArgsDigest::of(&call.args()));
        let now = Instant::now();
        let verdict = self
            .shared
            .rules_table()
            .lookup(capability, principal, session, digest, now);
        match verdict {
            Some(Verdict::Allow) => return Admission::Run,
            Some(Verdict::Deny(rule, reason)) => {
                let detail = match reason {
                    Some(reason) => format!("remembered denial {rule}: {reason}"),
                    None => format!("remembered denial {rule}"),
                };
                let error = Error::new(ErrorKind::AccessRequestDenied).with_detail(detail);
                return Admission::Refuse(error);
            }
            None => {}
        }
        let Ok(runtime) = Handle::try_current() else {
            return Admission::Refuse(Error::new(ErrorKind::NoRuntime));
        };
        let settings = &self.shared.settings;
        let id = RequestId::random();
        // Whole milliseconds: what stores keep, and what the code is bound to.
        let created_at = to_millis(SystemTime::now());
        let args = canonical_json(&call.args());
        let request = AccessRequest {
            id,
            capability: capability.into(),
            args_digest: *digest_cell.get_or_init(|| ArgsDigest::of_canonical(&args)),
            args: args.into_boxed_str(),
            principal: principal.into(),
            session: session.map(Into::into),
            reason: call.reason().map(Into::into),
            reasoning: ask.reasoning,
            max_scope: ask.max_scope,
            max_rule_ttl: ask.max_rule_ttl,
            approvers: ask.approvers,
            created_at,
            expires_at: created_at + settings.request_ttl,
            approval_url: settings
                .approval_base_url
                .as_ref()
                .map(|base| format!("{base}/{id}").into_boxed_str()),
        };
        let deadline = now + settings.request_ttl;
        let admitted = self
            .shared
            .locked(|registry| registry.admit(request, now, deadline, runtime, settings.limits));
        let (request, key, created) = match admitted {
            Ok(admitted) => admitted,
            Err(error) => {
                tracing::warn!(capability, principal, code = error.code(), "call refused");
                return Admission::Refuse(error);
            }
        };
        if created {
            tracing::info!(
                request_id = %request.id,
                capability,
                principal,
                session,
                args_digest = %request.args_digest,
                "access request created"
            );
        } else {
            tracing::debug!(request_id = %request.id, capability, principal, "call joined a pending access request");
        }
        Admission::Park(Waiter {
            shared: self.shared.clone(),
            request,
            key,
            deadline,
            attached: true,
        })
    }

    /// Records how an approved call ended.
    pub(crate) fn finish(&self, id: RequestId, status: Status) {
        self.shared
            .locked(|registry| ((), registry.finish(id, status)));
        self.shared.changed.notify_waiters();
        tracing::debug!(request_id = %id, %status, "approved call finished");
    }
}

/// Waits for the approver's acknowledgement: the decision is stored and, for an approval, taken.
async fn acknowledged(
    id: RequestId,
    acked: oneshot::Receiver<Result<(), Error>>,
) -> Result<(), Error> {
    acked
        .await
        .unwrap_or_else(|_| Err(queue_stopped().with_request(id)))
}

/// The store queue's task is gone: its runtime shut down.
fn queue_stopped() -> Error {
    Error::new(ErrorKind::StoreFailed)
        .with_detail("the gate's store queue stopped (its Tokio runtime shut down)")
}

/// Which rules to revoke, and who revokes them; see [`Gate::revoke`].
#[derive(Clone, Debug)]
pub struct Revoke {
    which: Revocation,
    by: Option<Arc<str>>,
}

impl Revoke {
    /// Revokes one rule.
    pub fn rule(id: RuleId) -> Self {
        Revoke {
            which: Revocation::Rule(id),
            by: None,
        }
    }

    /// Revokes every rule for `capability`.
    pub fn capability(capability: impl Into<Arc<str>>) -> Self {
        Revoke {
            which: Revocation::Capability(capability.into()),
            by: None,
        }
    }

    /// Revokes every rule.
    pub fn all() -> Self {
        Revoke {
            which: Revocation::All,
            by: None,
        }
    }

    /// Who revokes. Required: the audit trail records it.
    #[must_use]
    pub fn by(mut self, who: impl Into<Arc<str>>) -> Self {
        self.by = Some(who.into());
        self
    }
}

/// A verified person's decision, before it is applied: allow or deny, how far, for how long.
struct Ruling {
    effect: RuleEffect,
    scope: Scope,
    ttl: Option<Duration>,
    approver: Option<Arc<str>>,
    reason: Option<Arc<str>>,
    authority: Option<Box<dyn Authority>>,
}

/// The TTL a decision of `scope` gets, if the request allows that scope and TTL.
fn allowed(
    request: &AccessRequest,
    scope: Scope,
    ttl: Option<Duration>,
) -> Result<Duration, Error> {
    let refuse = |detail: String| Err(Error::new(ErrorKind::ScopeNotAllowed).with_detail(detail));
    if scope > request.max_scope {
        return refuse(format!(
            "this request allows at most scope `{}`",
            request.max_scope
        ));
    }
    if scope == Scope::Session && request.session.is_none() {
        return refuse("scope `session` needs a call that names its session".into());
    }
    let ttl = ttl.unwrap_or(request.max_rule_ttl);
    if ttl > request.max_rule_ttl {
        return refuse(format!(
            "this request allows rules of at most {} s",
            request.max_rule_ttl.as_secs()
        ));
    }
    // A policy may allow "no limit" (`Duration::MAX`); deadlines must stay representable.
    Ok(ttl.min(LONGEST_RULE))
}

/// The longest a rule can last, whatever the policy allows: a hundred years.
const LONGEST_RULE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The most wrong codes a request may accept.
const MOST_ATTEMPTS: u32 = 1000;

/// The longest request TTL the builder accepts.
const LONGEST_REQUEST: Duration = Duration::from_secs(366 * 24 * 3600);

/// The rule a decision of `scope` makes, sealed; none for [`Scope::Once`].
fn new_rule(
    seals: &SealKey,
    request: &AccessRequest,
    effect: RuleEffect,
    scope: Scope,
    ttl: Duration,
    approver: &Arc<str>,
    reason: Option<Arc<str>>,
) -> Option<Rule> {
    if scope == Scope::Once {
        return None;
    }
    let granted_at = to_millis(SystemTime::now());
    let mut rule = Rule {
        id: RuleId::random(),
        effect,
        scope,
        capability: request.capability.clone(),
        principal: (scope != Scope::Global).then(|| request.principal.clone()),
        session: if scope == Scope::Session {
            request.session.clone()
        } else {
            None
        },
        args_digest: (scope == Scope::Value).then_some(request.args_digest),
        granted_by: approver.clone(),
        granted_at,
        expires_at: granted_at + ttl,
        request: request.id,
        reason,
        seal: None,
    };
    seals.seal(&mut rule);
    Some(rule)
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rules_table(&self) -> std::sync::RwLockReadGuard<'_, RuleTable> {
        self.rules.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn rules_mut(&self) -> std::sync::RwLockWriteGuard<'_, RuleTable> {
        self.rules.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a notifier delivery on `runtime`, counted, so that shutdown can wait for it.
    fn deliver(
        self: &Arc<Self>,
        runtime: &Handle,
        delivery: impl Future<Output = ()> + Send + 'static,
    ) {
        /// Counts the delivery as ended however it ends: finished, panicked, or dropped.
        struct Running(Arc<Shared>);
        impl Drop for Running {
            fn drop(&mut self) {
                if self.0.deliveries.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.0.deliveries.idle.notify_waiters();
                }
            }
        }
        self.deliveries.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(self.clone());
        runtime.spawn(async move {
            let _running = running;
            delivery.await;
        });
    }

    /// A rule read from the store whose seal does not verify: not honoured, logged once, and
    /// written to the audit trail. The log names the rule, never its contents' secrets.
    fn reject(self: &Arc<Self>, rule: &Rule) {
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

    fn verify(&self, request: &AccessRequest, attempt: &str) -> bool {
        let ok = self.key.verify(request, attempt);
        if !ok {
            self.wrong_codes.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Runs one registry transition: its store writes are queued before the lock is released, so
    /// the store sees transitions in the order the registry made them; its other effects are
    /// applied after.
    fn locked<T>(self: &Arc<Self>, transition: impl FnOnce(&mut Registry) -> (T, Effects)) -> T {
        let (value, effects) = {
            let mut registry = self.registry();
            let (value, mut effects) = transition(&mut registry);
            for write in effects.writes.drain(..) {
                self.write(write);
            }
            (value, effects)
        };
        self.apply(effects);
        value
    }

    /// Queues a job on the store; the first job inside a runtime starts the queue's task.
    fn run(self: &Arc<Self>, job: journal::Job) {
        if self.journal.run(job) {
            self.announce_abandoned();
        }
    }

    /// Queues a registry write, with what follows once the store has it.
    fn write(self: &Arc<Self>, write: Write) {
        let shared = self.clone();
        self.run(match write {
            Write::Insert(request, entry) => job(move |store| {
                Box::pin(async move {
                    let result = store.insert(&request, std::slice::from_ref(&entry)).await;
                    let announce = shared.locked(|registry| registry.stored(request.id, result));
                    if announce {
                        shared.deliver(&Handle::current(), shared.clone().alert(request));
                    }
                })
            }),
            Write::Decide(change) => job(move |store| {
                Box::pin(async move {
                    let result = store.transition(&change).await;
                    shared.locked(|registry| {
                        ((), registry.decided(change.id, result, Instant::now()))
                    });
                })
            }),
            Write::Take(change) => job(move |store| {
                Box::pin(async move {
                    let result = store.transition(&change).await;
                    shared.locked(|registry| ((), registry.taken(change.id, result)));
                })
            }),
            Write::Record(change) => job(move |store| {
                Box::pin(async move {
                    match store.transition(&change).await {
                        Ok(true) => {}
                        Ok(false) => tracing::debug!(request_id = %change.id, from = %change.from, to = %change.to, "store transition did not apply"),
                        Err(error) => tracing::error!(request_id = %change.id, to = %change.to, %error, "store transition failed"),
                    }
                })
            }),
            Write::Withdraw(rule) => job(move |store| {
                Box::pin(async move {
                    let which = Revocation::Rule(rule);
                    let at = to_millis(SystemTime::now());
                    if let Err(error) = store.revoke(&which, "tollgate", at).await {
                        tracing::error!(rule_id = %rule, %error, "rule of an unreceived approval not withdrawn");
                    }
                })
            }),
            Write::Append(entry) => job(move |store| {
                Box::pin(async move {
                    if let Err(error) = store.append(std::slice::from_ref(&entry)).await {
                        tracing::error!(event = %entry.event, %error, "audit entry not written");
                    }
                })
            }),
        });
    }

    /// Tells the notifiers about requests an earlier process left unfinished; once, inside a
    /// runtime.
    fn announce_abandoned(self: &Arc<Self>) {
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        let abandoned = std::mem::take(
            &mut *self
                .unannounced
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for request in abandoned {
            self.resolved(Resolved {
                runtime: runtime.clone(),
                request: Arc::new(request),
                outcome: Outcome::Abandoned,
            });
        }
    }

    /// Carries out a transition's effects, outside the registry lock. A rule is filed before the
    /// approver hears of success, so a rule exists whenever `approve` says it does.
    fn apply(self: &Arc<Self>, effects: Effects) {
        let Effects {
            wake,
            rule,
            ack,
            resolved,
            writes: _,
        } = effects;
        let changed = !wake.is_empty() || rule.is_some() || ack.is_some() || resolved.is_some();
        if let Some((rule, deadline)) = rule {
            tracing::info!(
                rule_id = %rule.id,
                effect = ?rule.effect,
                scope = %rule.scope,
                capability = ?rule.capability,
                granted_by = ?rule.granted_by,
                "rule granted"
            );
            self.rules_mut().insert(rule, deadline);
        }
        if let Some((ack, result)) = ack {
            let _ = ack.send(result);
        }
        for waker in wake {
            waker.wake();
        }
        if let Some(resolved) = resolved {
            self.resolved(resolved);
        }
        if changed {
            self.changed.notify_waiters();
        }
    }

    fn resolved(
        self: &Arc<Self>,
        Resolved {
            runtime,
            request,
            outcome,
        }: Resolved,
    ) {
        let id = request.id;
        match &outcome {
            Outcome::Approved {
                approver, scope, ..
            } => {
                tracing::info!(request_id = %id, ?approver, %scope, "access request approved")
            }
            Outcome::Denied { approver, reason } => {
                tracing::info!(request_id = %id, ?approver, reason = reason.as_deref(), "access request denied")
            }
            Outcome::TooManyAttempts => {
                tracing::warn!(request_id = %id, "access request denied: too many attempts")
            }
            Outcome::Expired => tracing::info!(request_id = %id, "access request expired"),
            Outcome::Cancelled => tracing::info!(request_id = %id, "access request cancelled"),
            Outcome::NotificationFailed => {
                tracing::warn!(request_id = %id, "access request failed: no notifier accepted the alert")
            }
            Outcome::Abandoned => {
                tracing::warn!(request_id = %id, "access request abandoned: the process that held it stopped")
            }
            Outcome::StoreFailed => {
                tracing::error!(request_id = %id, "access request failed: the store did not record it")
            }
        }
        let shared = self.clone();
        self.deliver(&runtime, async move {
            let resolution = Resolution::new(request, outcome);
            let resolution = &resolution;
            let report = shared
                .notifiers
                .each(|notifier| notifier.on_resolved(resolution))
                .await;
            report.log("on_resolved", id);
        });
    }

    /// Alerts every notifier at once; if none accepts within the notify timeout, the request
    /// fails closed, unless the gate parks unnotified requests for pull approvals.
    async fn alert(self: Arc<Self>, request: Arc<AccessRequest>) {
        let id = request.id;
        let alert = Alert::new(request.clone(), self.key.code(&request));
        let alert = &alert;
        let report = self.notifiers.each(|notifier| notifier.notify(alert)).await;
        report.log("notify", id);
        if report.accepted > 0 {
            tracing::debug!(request_id = %id, notifiers = report.accepted, "access request notified");
            self.locked(|registry| ((), registry.notified(&request, report.accepted)));
        } else if self.settings.park_unnotified {
            tracing::warn!(request_id = %id, "no notifier accepted the alert; the request waits for an approver to find it");
        } else {
            self.locked(|registry| ((), registry.close(id, Outcome::NotificationFailed)));
        }
    }
}

/// A caller parked on an access request. Dropping it leaves the request, cancelling it if this
/// was the last caller.
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    request: Arc<AccessRequest>,
    key: usize,
    deadline: Instant,
    attached: bool,
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("id", &self.request.id)
            .finish_non_exhaustive()
    }
}

impl Waiter {
    pub(crate) fn request(&self) -> &Arc<AccessRequest> {
        &self.request
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    pub(crate) fn gate(&self) -> Gate {
        Gate {
            shared: self.shared.clone(),
        }
    }

    /// `Ready(Ok)` once an approval is this caller's to run; `Ready(Err)` once the request closed.
    pub(crate) fn poll_decision(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let (id, key) = (self.request.id, self.key);
        let poll = self
            .shared
            .locked(|registry| registry.poll(id, key, cx.waker()));
        if poll.is_ready() {
            self.attached = false;
        }
        poll
    }

    /// The deadline passed: expire the request if nobody decided first.
    pub(crate) fn expire(&self) {
        let id = self.request.id;
        self.shared
            .locked(|registry| ((), registry.expire(id, Instant::now())));
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.attached {
            let (id, key) = (self.request.id, self.key);
            self.shared.locked(|registry| ((), registry.leave(id, key)));
        }
    }
}
