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

// The gate's files, in the order a call meets them:
//
// - `admit`: a call the policy asks about: a standing rule, else a new or joined request,
//   and the `Waiter` the caller parks on;
// - `approver`: what an approver sends (approve, deny, revoke) and gets back;
// - `decide`: carrying those out, checked and built outside the registry lock;
// - `registry`: the state machine of pending requests, synchronous and pure;
// - `record`: what the registry's events write to the store and the audit trail;
// - `writer`: the one queue every store operation goes through, in registry order;
// - `effects`: what follows a transition: wake callers, answer approvers, file rules, alert;
// - `expiry`: the task that expires pending requests at their deadlines;
// - `replicas`, `verdict`: what other processes sharing the store did, carried out here;
// - `handover`: a request passed to the replica where a caller still waits;
// - `builder`: settings, and recovery from the store;
// - `code`, `seal`, `rules`, `rate`: verification codes, rule seals, the rule table, the
//   alert rate.
//
// This file holds the handle and its queries.

mod admit;
mod approver;
mod builder;
mod code;
mod decide;
mod edit;
mod effects;
mod expiry;
mod handover;
mod observe;
pub(crate) mod rate;
mod record;
mod registry;
mod replicas;
mod rules;
mod seal;
mod verdict;
mod writer;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use self::admit::{Admission, Waiter};
pub use self::approver::{Approval, Approve, Denial, Deny, Revoke};
#[cfg(feature = "axum")]
pub(crate) use self::approver::{Authority, Ends};
pub use self::builder::GateBuilder;
use self::code::CodeKey;
pub(crate) use self::edit::{Checked, Edits};
use self::effects::Deliveries;
#[cfg(feature = "axum")]
pub(crate) use self::registry::already;
use self::registry::{Effects, Limits, Registry};
use self::rules::RuleTable;
pub(crate) use self::seal::SealKey;
use self::writer::StoreWriter;
use crate::audit::{AuditEntry, AuditFilter};
use crate::code::VerificationCode;
use crate::error::{Error, ErrorKind};
use crate::id::RequestId;
use crate::notify::FanOut;
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::Rule;

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
            .field("notifiers", &self.shared.notifiers())
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
    /// Whether other processes share the store, and so decide its requests too.
    shared_store: bool,
    /// What each set of notifiers is bounded by, replacements included.
    alert_concurrency: usize,
    notify_timeout: Duration,
}

pub(crate) struct Shared {
    settings: Settings,
    key: CodeKey,
    /// Seals the rules this gate makes, and checks those it reads back.
    seals: SealKey,
    /// Every notifier, each bounded in concurrency, all within the notify timeout; replaced
    /// whole by `replace_notifiers`, while deliveries under way keep the set they started with.
    notifiers: RwLock<Arc<FanOut>>,
    /// Who is alerted about a request nobody decided within the escalation delay.
    escalation: Option<Arc<FanOut>>,
    registry: Mutex<Registry>,
    rules: RwLock<RuleTable>,
    /// Signalled on every status change, for `Gate::wait`, when someone waits ([`announce`]).
    ///
    /// [`announce`]: Shared::announce
    changed: Notify,
    /// How many `Gate::wait` calls are under way: with none, a change is not announced.
    watchers: AtomicUsize,
    /// Wakes the expiry task when a new request's deadline is the earliest.
    alarm: Arc<Notify>,
    /// Whether the expiry task runs.
    expiring: AtomicBool,
    wrong_codes: AtomicU64,
    /// What the gate counts for the `metrics` facade.
    #[cfg(feature = "metrics")]
    meters: crate::meters::Meters,
    /// The store, behind the queue that keeps writes in order.
    writer: StoreWriter,
    /// Requests an earlier process left unfinished, not yet announced to the notifiers.
    unannounced: Mutex<Vec<AccessRequest>>,
    /// Alerts and resolutions being delivered, for shutdown to wait on.
    deliveries: Deliveries,
    /// What other processes did in a shared store; taken by the task that applies it.
    feed: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::store::Change>>>,
    /// Approvers waiting for callers on another replica to take their approval.
    elsewhere: Mutex<rustc_hash::FxHashMap<RequestId, Vec<tokio::sync::oneshot::Sender<Status>>>>,
    /// How many observed calls each principal may write to the audit trail: the alert rate,
    /// since enforced, a call over it would have been refused `too_many_alerts`. `None` when
    /// alerts are unlimited.
    observed: Option<Mutex<rate::RateLimiter>>,
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
    /// With a store replicas share: calls here that joined an identical request pending on
    /// another replica, and follow it (each group counted once).
    pub following: usize,
    /// Standing rules, including expired ones not yet swept out.
    pub rules: usize,
    /// Wrong codes entered since the gate started.
    pub wrong_codes: u64,
}

impl Gate {
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

    /// Who has approved request `id` so far, while it waits for the rest of the approvers it
    /// needs ([`Ask::quorum`](crate::policy::Ask::quorum)); empty for any other request, and
    /// once it is decided.
    pub fn approved_by(&self, id: RequestId) -> Vec<String> {
        let approvers = self.shared.registry().approved_by(id);
        approvers.iter().map(|a| a.to_string()).collect()
    }

    /// `approver`'s code for pending request `id`, as [`verification_code`] gives it: their own
    /// for a request several approvers must approve (`None` if they are not one of its
    /// approvers), the request's otherwise. Show it to that approver only.
    ///
    /// [`verification_code`]: Self::verification_code
    pub fn verification_code_for(&self, id: RequestId, approver: &str) -> Option<VerificationCode> {
        let request = self.shared.registry().pending_request(id)?;
        if request.quorum <= 1 {
            return Some(self.shared.key.code(&request));
        }
        request
            .admits(approver)
            .then(|| self.shared.key.code_for(&request, approver))
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

    /// Request `id` and where it stands, wherever it is held: as [`request`](Self::request)
    /// finds it in this process, else as the store has it (a request made before a restart, or
    /// beyond the history capacity, or whose callers wait on another replica).
    /// `access_request_not_found` if neither knows it; `store_failed` if the store cannot be read.
    pub async fn lookup(&self, id: RequestId) -> Result<(AccessRequest, Status), Error> {
        if let Some(found) = self.request(id) {
            return Ok(found);
        }
        let not_found = || Error::new(ErrorKind::AccessRequestNotFound).with_request(id);
        match self.queued(move |store| store.request(id)).await? {
            Some(stored) => Ok((stored.request, stored.status)),
            None => Err(not_found()),
        }
    }

    /// The requests waiting for a person, oldest first: this process's, and with a store
    /// replicas share, every replica's. Codes are never part of them.
    pub async fn pending_anywhere(&self) -> Result<Vec<AccessRequest>, Error> {
        let mut pending = self.pending();
        if self.shared.settings.shared_store {
            let stored = self.queued(|store| store.pending()).await?;
            let here: rustc_hash::FxHashSet<RequestId> = pending.iter().map(|r| r.id).collect();
            pending.extend(stored.into_iter().filter(|r| !here.contains(&r.id)));
            pending.sort_by_key(|r| r.created_at);
        }
        Ok(pending)
    }

    /// Waits until request `id` is no longer pending and returns its status. Gives up after
    /// `timeout` with `wait_timed_out`, leaving the request pending. With a store replicas
    /// share, a request held by another replica is followed through the store.
    pub async fn wait(&self, id: RequestId, timeout: Duration) -> Result<Status, Error> {
        let deadline = Instant::now() + timeout;
        let _watching = Watching::new(&self.shared);
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (status, here) = match self.status(id) {
                Ok(status) => (status, true),
                Err(_) if self.shared.settings.shared_store => (self.lookup(id).await?.1, false),
                Err(error) => return Err(error),
            };
            if !status.is_pending() {
                return Ok(status);
            }
            // Held elsewhere, a change may come by the store's re-scan only: look again then.
            let wake = if here {
                deadline
            } else {
                deadline.min(Instant::now() + replicas::RECHECK)
            };
            if tokio::time::timeout_at(wake, changed).await.is_err() && Instant::now() >= deadline {
                return Err(Error::new(ErrorKind::WaitTimedOut).with_request(id));
            }
        }
    }

    /// The live standing rules, oldest first.
    pub fn rules(&self) -> Vec<Rule> {
        self.shared.rules_table().list(Instant::now())
    }

    /// The audit trail entries `filter` selects, oldest first. They include every transition
    /// this gate made before the call.
    pub async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, Error> {
        self.queued(move |store| Box::pin(async move { store.audit(&filter).await }))
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
        self.shared.announce();
        // A write that lands may queue another (an approval's take): flush until none is left.
        loop {
            self.queued(|_| Box::pin(async { Ok(()) })).await?;
            if !self.shared.registry().writing() {
                break;
            }
        }
        self.shared.deliveries.idle().await;
        tracing::info!(abandoned = pending.len(), "gate shut down");
        Ok(())
    }

    /// Replaces every notifier, as operators do when the configuration changes: alerts and
    /// resolutions from now on go to `notifiers`, each bounded and timed as the builder set
    /// ([`alert_concurrency`](GateBuilder::alert_concurrency),
    /// [`notify_timeout`](GateBuilder::notify_timeout)). Parked calls and pending requests are
    /// not touched; deliveries under way finish with the notifiers they started with.
    ///
    /// `invalid_config`, leaving the notifiers in place, if `notifiers` is empty and the gate
    /// does not [park unnotified calls](GateBuilder::park_when_unnotified).
    pub fn replace_notifiers(&self, notifiers: FanOut) -> Result<(), Error> {
        let settings = &self.shared.settings;
        if notifiers.is_empty() && !settings.park_unnotified {
            return Err(Error::new(ErrorKind::InvalidConfig).with_detail(
                "at least one notifier is needed, or nobody hears of a request (or build the gate with `park_when_unnotified`)",
            ));
        }
        let notifiers = notifiers
            .bounded(settings.alert_concurrency)
            .within(settings.notify_timeout);
        let count = notifiers.len();
        *self
            .shared
            .notifiers
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(notifiers);
        tracing::info!(notifiers = count, "notifiers replaced");
        Ok(())
    }

    /// The gate's current load.
    pub fn stats(&self) -> Stats {
        let counts = self.shared.registry().counts();
        Stats {
            pending: counts.pending,
            parked: counts.parked,
            live: counts.live,
            following: counts.following,
            rules: self.shared.rules_table().len(),
            wrong_codes: self.shared.wrong_codes.load(Ordering::Relaxed),
        }
    }

    /// Records how an approved call ended.
    pub(crate) fn finish(&self, id: RequestId, status: Status) {
        self.shared
            .locked(|registry| ((), registry.finish(id, status)));
        self.shared.announce();
        tracing::debug!(request_id = %id, %status, "approved call finished");
    }
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The notifiers in place now.
    fn notifiers(&self) -> Arc<FanOut> {
        self.notifiers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn rules_table(&self) -> RwLockReadGuard<'_, RuleTable> {
        self.rules.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn rules_mut(&self) -> RwLockWriteGuard<'_, RuleTable> {
        self.rules.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `attempt` is `approver`'s code for `request`, counting a wrong one.
    fn verify(&self, request: &AccessRequest, attempt: &str, approver: &str) -> bool {
        let ok = self.key.verify(request, attempt, approver);
        if !ok {
            self.wrong_codes.fetch_add(1, Ordering::Relaxed);
            crate::meters::wrong_code();
        }
        ok
    }

    /// Wakes every `Gate::wait` to look again, after a change. Skipped when nobody waits, and
    /// no wake-up is lost: a `wait` counts itself, then listens, then reads the status under the
    /// registry lock; a change is made under that lock, then this reads the count. If the wait
    /// took the lock first, its count happened before this read, which sees it; if the change
    /// took it first, the wait reads the new status.
    fn announce(&self) {
        if self.watchers.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    /// Runs one registry transition: its store writes are queued before the lock is released, so
    /// the store sees transitions in the order the registry made them; its other effects are
    /// applied after, then the store queue is run.
    fn locked<T>(self: &Arc<Self>, transition: impl FnOnce(&mut Registry) -> (T, Effects)) -> T {
        let (value, effects, wrote) = {
            let mut registry = self.registry();
            let (value, mut effects) = transition(&mut registry);
            #[cfg(feature = "metrics")]
            {
                let (pending, parked) = registry.load();
                self.meters.load(pending, parked);
            }
            let wrote = !effects.events.is_empty();
            for event in effects.events.take() {
                self.record(event);
            }
            (value, effects, wrote)
        };
        self.apply(effects);
        if wrote {
            self.drain();
        }
        value
    }
}

/// A `Gate::wait` under way, counted while it lasts.
struct Watching<'a>(&'a Shared);

impl<'a> Watching<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.watchers.fetch_add(1, Ordering::SeqCst);
        Watching(shared)
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(feature = "metrics")]
impl Gate {
    /// What the gate counts for the `metrics` facade.
    pub(crate) fn meters(&self) -> &crate::meters::Meters {
        &self.shared.meters
    }
}
