//! Where access requests, standing rules and the audit trail live.
//!
//! A gate keeps its pending callers in memory, but everything a person decided goes through a
//! [`Store`] first. [`MemoryStore`] is the default; `SqliteStore` (feature `sqlite`) keeps one
//! file on disk, so standing approvals, remembered denials and the audit trail survive a restart;
//! `PostgresStore` (feature `postgres`) keeps them in a database that replicas of a service
//! share (see "Across replicas" below). One line turns SQLite on:
//!
#![cfg_attr(feature = "sqlite", doc = "```")]
#![cfg_attr(not(feature = "sqlite"), doc = "```text")]
//! # fn main() -> Result<(), tollgate::Error> {
//! # let dir = std::env::temp_dir().join(format!("tollgate-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("tollgate.db");
//! use tollgate::Gate;
//! use tollgate::store::SqliteStore;
//!
//! let gate = Gate::builder()
//!     .secret("keep this out of the agent's reach")
//!     .park_when_unnotified()
//!     .store(SqliteStore::open(&path)?)
//!     .build()?;
//! # drop(gate); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! # Write-ahead order
//!
//! The gate writes through one queue per gate, in the order things happen, and waits for the
//! store where it matters:
//!
//! - a request is stored (with its `requested` entry) before any notifier hears of it, and
//!   before it is listed by [`Gate::pending`](crate::Gate::pending);
//! - an approval or denial is stored before the caller resumes and before `approve` or `deny`
//!   returns; an approval's standing rule is stored, with the `executing` transition, before the
//!   call runs;
//! - every other transition (`notified`, `expired`, `cancelled`, `executed`, `failed`,
//!   `code_rejected`) is appended in order without holding anyone up. If the process stops before
//!   one is written, the next start finds the request unfinished and ends it as `abandoned`.
//!
//! A store that cannot write fails closed: the call does not run, and `approve` or `deny` returns
//! `store_failed` with the store's error as its cause, leaving the request pending.
//!
//! # Restarts
//!
//! [`GateBuilder::build`](crate::gate::GateBuilder::build) calls [`Store::recover`]: requests an
//! earlier process left unfinished end as [`Status::Abandoned`] (their callers are gone), and the
//! notifiers are told so; standing rules and remembered denials apply as before. An approval of
//! [`Scope::Once`] makes no rule, so it can never be used again after a crash.
//!
//! # Who can write the store
//!
//! Every standing rule and remembered denial is sealed: a MAC over all of its fields, under a
//! key derived from the gate's secret (and separated from the key codes are derived with). When
//! a gate reads rules from its store, it honours only those whose seal verifies; any other is
//! not honoured, is written to the audit trail as `rule_rejected`, and is logged once at `warn`
//! with its id, scope and capability.
//!
//! So someone who can write the database (an agent with the SQLite file in reach) **cannot**:
//! - make the gate honour a rule they wrote, or widen one (scope, principal, session,
//!   capability, arguments), extend its expiry, or turn a denial into an approval;
//! - carry rules over to a gate with another secret: it honours none of them (and so a gate with
//!   `random_secret` honours no rule from an earlier process);
//! - learn or forge a verification code: codes are derived from the secret, never stored;
//! - approve a pending request: a decision needs the code, and waiting callers wait in memory.
//!
//! They **can** still:
//! - delete rules and remembered denials: a call a deleted denial refused asks a person again;
//! - put back a rule that was revoked, sealed as it was, until its original expiry;
//! - rewrite or delete the audit trail, and read what it holds (arguments too, with
//!   [`audit_args`](crate::gate::GateBuilder::audit_args));
//! - stop the gate from starting by damaging the file (`store_unreadable`, failing closed).
//!
//! Keep the database, like the secret, out of the reach of the agents the gate guards.
//! Someone who has the secret can do everything a gate can.
//!
//! # Across replicas
//!
//! With a store replicas share ([`Store::shared`]), each replica holds its own callers in memory
//! and the store holds everything else. A replica decides a request whose callers wait on another
//! through the store (one conditional update: one winner among every replica), and the one that
//! holds them learns of it from [`Store::changes`] and lets them run. Such an approval is stored
//! with a [`verdict`](Transition::verdict) sealed under a key derived from the secret, and a
//! replica carries out only a verdict whose seal verifies and, for callers that joined the
//! request, binds their join's ticket: someone who can write the database still cannot approve
//! a request, make callers that joined one run, or replay an old approval for a call that joined
//! later, by editing rows or the change feed. They can end requests (deny, abandon), delete
//! rules, or hand a request to a replica whose callers do not follow it (which lets it go
//! again), as above: the gate fails closed.
//!
//! # Writing a store
//!
//! Implement [`Store`] and run the [`conformance`] suite (feature `test-util`) against it. Keep
//! requests, rules and outcomes as the text of their `to_record` methods, plus whatever columns
//! your indexes need. A store that syncs to disk should implement [`Store::write_batch`] with one
//! commit for the whole batch: the gate hands it every write that queued while the store was
//! busy. Request ids begin with the time they were made, so an index on them grows at one end.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod trail;

#[cfg(feature = "test-util")]
pub mod conformance;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use self::postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteStore;
pub use crate::audit::{AuditEntry, AuditEvent, AuditFilter};
pub use crate::boxed::BoxFuture;

use crate::args::ArgsDigest;
use crate::error::Error;
use crate::id::{RequestId, RuleId};
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::Rule;
use crate::scope::Scope;

/// Durable state for a [`Gate`](crate::Gate): access requests, rules, and the audit trail.
///
/// # Contract
///
/// Every implementation keeps these promises; the [`conformance`] suite checks them.
///
/// 1. **One decision per request.** [`transition`](Self::transition) is a compare-and-set: it
///    applies only if the request's status is still [`Transition::from`], and then writes the new
///    status, the outcome, the rule and the audit entries as one atomic step. Of two concurrent
///    transitions from the same status, even from different processes, exactly one returns
///    `Ok(true)`; the other returns `Ok(false)` and writes nothing.
/// 2. **Nothing half-written.** A call that returns an error has changed nothing.
/// 3. **Rules by key.** A rule occupies the slot of its [`ScopeKey`]: filing a rule replaces the
///    rule with the same key. [`covering`](Self::covering) finds rules by key through an index,
///    never by scanning, so a lookup costs the same with one rule or a million.
/// 4. **Append-only audit.** Entries are numbered in the order they were written and never
///    change; [`audit`](Self::audit) returns them in that order.
/// 5. **Expiry.** [`purge`](Self::purge) deletes rules past their expiry and finished requests
///    past theirs; expired rules are never returned by [`covering`](Self::covering) or
///    [`recover`](Self::recover) even before they are purged.
/// 6. **Restart.** [`recover`](Self::recover) ends every unfinished request as
///    [`Status::Abandoned`].
/// 7. **Records kept exactly.** A rule comes back exactly as it was filed, its seal included;
///    the gate honours no rule whose seal does not verify (see the module docs).
///
/// Methods other than [`recover`](Self::recover) must not block the async runtime: run blocking
/// I/O on `tokio::task::spawn_blocking` or a thread of the store's own.
///
/// # Across replicas
///
/// A store that several processes share (replicas of one service) says so with
/// [`shared`](Self::shared), and then also keeps these promises:
///
/// 8. **Owners.** [`insert`](Self::insert) records which process holds the request's callers;
///    [`recover`](Self::recover) abandons only the requests of this process (from an earlier
///    run under the same name) and of processes that stopped renewing their lease, never those
///    of a live replica.
/// 9. **Changes.** [`changes`](Self::changes) delivers, in the order they were stored, every
///    transition, rule and revocation another process made, each [`Transition::verdict`]
///    included, and the requests this process found abandoned by a stopped replica.
/// 10. **Counted once.** [`wrong_code`](Self::wrong_code) counts wrong codes in the store, so
///     that the limit holds across every replica together, and ends the request at the limit in
///     the same step.
/// 11. **Alive while a caller waits anywhere.** [`insert_or_join`](Self::insert_or_join)
///     records the process whose callers joined a pending request; [`leave`](Self::leave) ends a
///     request only once no process holds or follows it, and otherwise hands it to one that
///     follows it, telling that one with [`Change::HandedOver`].
/// 12. **Tickets.** [`insert_or_join`](Self::insert_or_join) adds the join's ticket to the
///     request's [`tickets`](StoredRequest::tickets), and [`transition`](Self::transition)
///     applies a step whose [`Transition::tickets`] are given only while the request's tickets
///     are exactly those.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Prepares the store for a gate that is starting: ends every request that is not finished
    /// (pending, approved, executing) as [`Status::Abandoned`] with an `abandoned` audit entry,
    /// and returns the rules that have not expired and the abandoned requests. A store may also
    /// purge what has expired here (`SqliteStore` does). The gate then honours only the
    /// returned rules whose seal verifies.
    ///
    /// Called once, by [`GateBuilder::build`](crate::gate::GateBuilder::build), before the gate takes
    /// calls. It may block: it is start-up.
    fn recover(&self, now: SystemTime) -> Result<Recovered, Error>;

    /// Files a new pending request with its audit entries.
    fn insert<'a>(
        &'a self,
        request: &'a AccessRequest,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// [`insert`](Self::insert), from a caller that holds the request in an `Arc`, as the gate
    /// does: a store that keeps requests in memory may keep a clone of the `Arc` rather than a
    /// copy of the request. The default calls `insert`.
    fn insert_arc<'a>(
        &'a self,
        request: &'a Arc<AccessRequest>,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.insert(request, audit)
    }

    /// Files `request` as [`insert`](Self::insert) does, with its `seal` (opaque text the gate
    /// made, kept with the request and handed back in [`StoredRequest::seal`]), unless, in a
    /// store replicas share, an identical request (the same principal, session, capability and
    /// arguments) is pending: then it files nothing, records this process as following that
    /// request (see [`leave`](Self::leave)) and adds `ticket` (random text the gate made for
    /// this join) to the request's [`tickets`](StoredRequest::tickets), and returns it, seal
    /// included, for this one's callers to join once the gate has checked the seal. The default
    /// always files it.
    fn insert_or_join<'a>(
        &'a self,
        request: &'a AccessRequest,
        seal: &'a str,
        ticket: &'a str,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<Option<StoredRequest>, Error>> {
        let _ = (seal, ticket);
        Box::pin(async move { self.insert(request, audit).await.map(|()| None) })
    }

    /// Moves a request from [`Transition::from`] to [`Transition::to`], atomically with its
    /// outcome, rule and audit entries. `Ok(false)` if the request is unknown or no longer in
    /// `from`; nothing is written then.
    fn transition<'a>(&'a self, change: &'a Transition) -> BoxFuture<'a, Result<bool, Error>>;

    /// The last caller of this process waiting on request `cancel.id` left it. The default, for
    /// a store one process owns, applies `cancel` (its ending as cancelled, from pending).
    ///
    /// In a store replicas share, those callers were either the ones of the request this process
    /// filed (`holding`) or ones that joined it ([`insert_or_join`](Self::insert_or_join)). In one
    /// step: this process no longer follows it; if it held the request (filed it and had not
    /// let go of it, or was handed it), it hands it, pending or approved, to the first process
    /// that follows it ([`Left::HandedOver`], or [`Left::Kept`] if that is this one, whose
    /// joined callers then hold it) and tells that one through [`changes`](Self::changes); with
    /// nobody following, it applies `cancel` (from approved instead, for an approval nobody
    /// took) and returns [`Left::Cancelled`]. A process that only followed it returns
    /// [`Left::Unfollowed`]; a request that moved on otherwise is [`Left::Moved`].
    fn leave<'a>(
        &'a self,
        cancel: &'a Transition,
        holding: bool,
    ) -> BoxFuture<'a, Result<Left, Error>> {
        let _ = holding;
        Box::pin(async move {
            Ok(match self.transition(cancel).await? {
                true => Left::Cancelled,
                false => Left::Moved,
            })
        })
    }

    /// Appends audit entries that change no request (`notified`, `code_rejected`).
    fn append<'a>(&'a self, audit: &'a [AuditEntry]) -> BoxFuture<'a, Result<(), Error>>;

    /// Applies `writes` in order, each as the method it names would, and returns each one's
    /// result in the same order ([`Write::Transition`] says whether it applied; the others
    /// return `Ok(true)`).
    ///
    /// The gate hands a store every write that queued while it waited on the store, so a store
    /// that syncs to disk should commit them together, with one sync (group commit). Each write
    /// stays atomic on its own: one that fails or does not apply changes nothing, and the others
    /// still apply. The default runs them one after the other.
    fn write_batch<'a>(
        &'a self,
        writes: &'a [Write<'a>],
    ) -> BoxFuture<'a, Vec<Result<bool, Error>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(writes.len());
            for write in writes {
                results.push(write.apply(self).await);
            }
            results
        })
    }

    /// Applies `write` at once, without waiting, if this store can (a store in memory), and
    /// returns what [`write_batch`](Self::write_batch) would for it. `None`, the default, says
    /// the write has to be awaited: the gate then goes through the other methods. The gate
    /// tries this first for each write until the store has once made it wait, which spares a
    /// store in memory a future and its allocation per write.
    fn write_now(&self, write: &Write<'_>) -> Option<Result<bool, Error>> {
        let _ = write;
        None
    }

    /// A request and where it stands.
    fn request(&self, id: RequestId) -> BoxFuture<'_, Result<Option<StoredRequest>, Error>>;

    /// The live rules (unexpired at `now`) in the slots of `keys`, found by key.
    fn covering<'a>(
        &'a self,
        keys: &'a [ScopeKey],
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Rule>, Error>>;

    /// Every live rule, oldest first.
    fn rules(&self, now: SystemTime) -> BoxFuture<'_, Result<Vec<Rule>, Error>>;

    /// Deletes the rules `which` names, each with a `rule_revoked` entry naming `by`
    /// (see [`AuditEntry::rule_revoked`]); returns them.
    fn revoke<'a>(
        &'a self,
        which: &'a Revocation,
        by: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Rule>, Error>>;

    /// Deletes rules that expired before `now`, and finished requests whose expiry is before
    /// `now`. The audit trail is kept.
    fn purge(&self, now: SystemTime) -> BoxFuture<'_, Result<Purged, Error>>;

    /// The audit entries `filter` selects, oldest first.
    fn audit<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, Error>>;

    /// Changes other processes made, for a store that replicas share: the gate takes the
    /// receiver once, when it is built, and applies every change it receives (see the promises
    /// above). `None`, the default, for a store one process owns.
    fn changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        None
    }

    /// For a store replicas share: every pending request, oldest first, whichever process holds
    /// it, for approval pages served by any replica. The default lists none; a gate lists the
    /// requests it holds from its own memory.
    fn pending(&self) -> BoxFuture<'_, Result<Vec<AccessRequest>, Error>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Whether other processes decide this store's requests too. A gate on a shared store
    /// decides requests it does not hold through the store, and counts wrong codes with
    /// [`wrong_code`](Self::wrong_code). `false`, the default.
    fn shared(&self) -> bool {
        false
    }

    /// Counts a wrong code against request `id` while it is pending, appending `entry` in the
    /// same step, and returns how many it has had; `None` if the request is not pending. When the
    /// count reaches `limit`, the same step also applies `close` (the request's ending, from
    /// pending), so that no decision can come between the last wrong code allowed and the end
    /// it brings: every replica, caller and notifier hears one ending. The gate calls it only
    /// for a store that is [`shared`](Self::shared); with any other it counts in memory, so the
    /// default, which writes nothing and returns `None`, serves them.
    fn wrong_code<'a>(
        &'a self,
        id: RequestId,
        entry: &'a AuditEntry,
        limit: u32,
        close: &'a Transition,
    ) -> BoxFuture<'a, Result<Option<u32>, Error>> {
        let _ = (id, entry, limit, close);
        Box::pin(std::future::ready(Ok(None)))
    }
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn recover(&self, now: SystemTime) -> Result<Recovered, Error> {
        (**self).recover(now)
    }
    fn insert<'a>(
        &'a self,
        request: &'a AccessRequest,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>> {
        (**self).insert(request, audit)
    }
    fn insert_arc<'a>(
        &'a self,
        request: &'a Arc<AccessRequest>,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>> {
        (**self).insert_arc(request, audit)
    }
    fn insert_or_join<'a>(
        &'a self,
        request: &'a AccessRequest,
        seal: &'a str,
        ticket: &'a str,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<Option<StoredRequest>, Error>> {
        (**self).insert_or_join(request, seal, ticket, audit)
    }
    fn transition<'a>(&'a self, change: &'a Transition) -> BoxFuture<'a, Result<bool, Error>> {
        (**self).transition(change)
    }
    fn leave<'a>(
        &'a self,
        cancel: &'a Transition,
        holding: bool,
    ) -> BoxFuture<'a, Result<Left, Error>> {
        (**self).leave(cancel, holding)
    }
    fn append<'a>(&'a self, audit: &'a [AuditEntry]) -> BoxFuture<'a, Result<(), Error>> {
        (**self).append(audit)
    }
    fn write_batch<'a>(
        &'a self,
        writes: &'a [Write<'a>],
    ) -> BoxFuture<'a, Vec<Result<bool, Error>>> {
        (**self).write_batch(writes)
    }
    fn write_now(&self, write: &Write<'_>) -> Option<Result<bool, Error>> {
        (**self).write_now(write)
    }
    fn request(&self, id: RequestId) -> BoxFuture<'_, Result<Option<StoredRequest>, Error>> {
        (**self).request(id)
    }
    fn covering<'a>(
        &'a self,
        keys: &'a [ScopeKey],
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Rule>, Error>> {
        (**self).covering(keys, now)
    }
    fn rules(&self, now: SystemTime) -> BoxFuture<'_, Result<Vec<Rule>, Error>> {
        (**self).rules(now)
    }
    fn revoke<'a>(
        &'a self,
        which: &'a Revocation,
        by: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Rule>, Error>> {
        (**self).revoke(which, by, at)
    }
    fn purge(&self, now: SystemTime) -> BoxFuture<'_, Result<Purged, Error>> {
        (**self).purge(now)
    }
    fn audit<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, Error>> {
        (**self).audit(filter)
    }
    fn changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        (**self).changes()
    }
    fn shared(&self) -> bool {
        (**self).shared()
    }
    fn pending(&self) -> BoxFuture<'_, Result<Vec<AccessRequest>, Error>> {
        (**self).pending()
    }
    fn wrong_code<'a>(
        &'a self,
        id: RequestId,
        entry: &'a AuditEntry,
        limit: u32,
        close: &'a Transition,
    ) -> BoxFuture<'a, Result<Option<u32>, Error>> {
        (**self).wrong_code(id, entry, limit, close)
    }
}

/// One write of [`Store::write_batch`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Write<'a> {
    /// [`Store::insert`] (or [`Store::insert_arc`]) of a request with its audit entries.
    Insert(&'a Arc<AccessRequest>, &'a [AuditEntry]),
    /// [`Store::transition`].
    Transition(&'a Transition),
    /// [`Store::append`].
    Append(&'a [AuditEntry]),
}

impl Write<'_> {
    /// Applies this write alone, with the method it names, as the default
    /// [`write_batch`](Store::write_batch) does: what a store's own `write_batch` can fall back
    /// to for a write it does not commit with the others (this enum may grow).
    pub async fn apply<S: Store + ?Sized>(self, store: &S) -> Result<bool, Error> {
        match self {
            Write::Insert(request, audit) => store.insert_arc(request, audit).await.map(|()| true),
            Write::Transition(change) => store.transition(change).await,
            Write::Append(audit) => store.append(audit).await.map(|()| true),
        }
    }
}

/// A change another process made to a shared store; see [`Store::changes`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Change {
    /// A request moved on: an approval, a denial, an expiry, a caller taking an approval.
    Request {
        /// The request.
        id: RequestId,
        /// Its new status.
        status: Status,
        /// How it ended, once decided.
        outcome: Option<Outcome>,
        /// The transition's [`verdict`](Transition::verdict), as it was stored.
        verdict: Option<Arc<str>>,
    },
    /// A rule was filed.
    RuleGranted(Rule),
    /// A rule was revoked.
    RuleRevoked(RuleId),
    /// The process holding request `id`, which callers of this process joined, had its last
    /// caller leave ([`Store::leave`]): the request is this process's now, to take an approval
    /// of it and to tell the notifiers how it ends. Delivered to that process only.
    HandedOver(RequestId),
    /// This process found a request whose owner stopped renewing its lease, and abandoned it
    /// (with its `abandoned` audit entry): the notifiers are told, by this process only.
    Abandoned(AccessRequest),
}

/// The slot a rule occupies: its scope and the capability, principal, session or args digest
/// that scope binds. Two rules with the same key cannot both stand; the later replaces the
/// earlier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey([u8; 32]);

impl ScopeKey {
    /// The key of `rule`'s slot.
    pub fn of(rule: &Rule) -> Self {
        Self::new(
            rule.scope(),
            rule.capability(),
            rule.principal(),
            rule.session(),
            rule.args_digest(),
        )
    }

    /// The keys of every slot whose rule would cover a call: global, capability, session (if the
    /// call names one) and value.
    pub fn covering(
        capability: &str,
        principal: &str,
        session: Option<&str>,
        args_digest: ArgsDigest,
    ) -> Vec<ScopeKey> {
        let mut keys = vec![
            Self::new(Scope::Global, capability, None, None, None),
            Self::new(Scope::Capability, capability, Some(principal), None, None),
            Self::new(
                Scope::Value,
                capability,
                Some(principal),
                None,
                Some(args_digest),
            ),
        ];
        if let Some(session) = session {
            keys.push(Self::new(
                Scope::Session,
                capability,
                Some(principal),
                Some(session),
                None,
            ));
        }
        keys
    }

    fn new(
        scope: Scope,
        capability: &str,
        principal: Option<&str>,
        session: Option<&str>,
        digest: Option<ArgsDigest>,
    ) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"tollgate/scope-key/v1");
        hash.update([scope as u8]);
        let principal = if scope == Scope::Global {
            None
        } else {
            principal
        };
        let session = if scope == Scope::Session {
            session
        } else {
            None
        };
        let digest = if scope == Scope::Value { digest } else { None };
        for field in [Some(capability), principal, session] {
            match field {
                Some(text) => {
                    hash.update([1]);
                    hash.update((text.len() as u64).to_be_bytes());
                    hash.update(text.as_bytes());
                }
                None => hash.update([0]),
            }
        }
        if let Some(digest) = digest {
            hash.update(digest.as_bytes());
        }
        ScopeKey(hash.finalize().into())
    }

    /// The 32 key bytes, for an index.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeKey({})", crate::hex::lower(&self.0[..8]))
    }
}

/// One compare-and-set step of an access request, as [`Store::transition`] applies it.
#[derive(Clone, Debug)]
pub struct Transition {
    pub(crate) id: RequestId,
    pub(crate) from: Status,
    pub(crate) to: Status,
    pub(crate) outcome: Option<Outcome>,
    pub(crate) rule: Option<Box<Rule>>,
    pub(crate) audit: Vec<AuditEntry>,
    /// Boxed: only approvals in a store replicas share carry one, and every step moves.
    pub(crate) sealed: Option<Box<Sealed>>,
}

/// What an approval in a store replicas share carries: its verdict, and the tickets it binds.
#[derive(Clone, Debug)]
pub(crate) struct Sealed {
    pub(crate) verdict: Arc<str>,
    pub(crate) tickets: Vec<Arc<str>>,
}

impl Transition {
    /// The request.
    pub fn id(&self) -> RequestId {
        self.id
    }
    /// The status the request must have for the step to apply.
    pub fn from(&self) -> Status {
        self.from
    }
    /// The status it moves to.
    pub fn to(&self) -> Status {
        self.to
    }
    /// The outcome to record with it, once the request is decided.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }
    /// A rule to file in the same step, replacing the rule in its [`ScopeKey`]'s slot.
    pub fn rule(&self) -> Option<&Rule> {
        self.rule.as_deref()
    }
    /// The audit entries to append in the same step.
    pub fn audit(&self) -> &[AuditEntry] {
        &self.audit
    }
    /// A decision made by a process that does not hold the request's callers: opaque text,
    /// sealed by the gate, that a shared store keeps with the request and hands on in
    /// [`Change::Request`], so the process that does hold them can check and carry it out.
    /// `None` for every other transition; a store one process owns may ignore it.
    pub fn verdict(&self) -> Option<&str> {
        self.sealed.as_deref().map(|sealed| &*sealed.verdict)
    }
    /// For an approval in a store replicas share: the request's
    /// [`tickets`](StoredRequest::tickets) as the verdict binds them. The step applies only if
    /// the request's tickets are exactly these, so that no caller that joined it is left out of
    /// the approval (a store one process owns may ignore it). `None`: no such condition.
    pub fn tickets(&self) -> Option<&[Arc<str>]> {
        self.sealed.as_deref().map(|sealed| &sealed.tickets[..])
    }
}

/// A request as a store holds it: the request, where it stands, how it ended.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoredRequest {
    /// The request.
    pub request: AccessRequest,
    /// Where it stands.
    pub status: Status,
    /// How it ended, once decided.
    pub outcome: Option<Outcome>,
    /// The [`verdict`](Transition::verdict) of its decision, for a store replicas share.
    pub verdict: Option<Arc<str>>,
    /// The seal it was filed with by [`Store::insert_or_join`], for a store replicas share.
    pub seal: Option<Arc<str>>,
    /// The tickets of the joins [`Store::insert_or_join`] made to it, in order, for a store
    /// replicas share: an approval binds those present when it is stored
    /// ([`Transition::tickets`]).
    pub tickets: Vec<Arc<str>>,
}

impl StoredRequest {
    /// A request with its status and outcome.
    pub fn new(request: AccessRequest, status: Status, outcome: Option<Outcome>) -> Self {
        StoredRequest {
            request,
            status,
            outcome,
            verdict: None,
            seal: None,
            tickets: Vec::new(),
        }
    }

    /// The same, with the verdict its decision was stored with.
    pub fn with_verdict(mut self, verdict: Option<Arc<str>>) -> Self {
        self.verdict = verdict;
        self
    }

    /// The same, with the tickets of the joins made to it.
    pub fn with_tickets(mut self, tickets: Vec<Arc<str>>) -> Self {
        self.tickets = tickets;
        self
    }

    /// The same, with the seal it was filed with.
    pub fn with_seal(mut self, seal: Option<Arc<str>>) -> Self {
        self.seal = seal;
        self
    }
}

/// What [`Store::recover`] found.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Recovered {
    /// The live rules and remembered denials.
    pub rules: Vec<Rule>,
    /// The requests an earlier process left unfinished, now abandoned.
    pub abandoned: Vec<AccessRequest>,
}

impl Recovered {
    /// What a store found at start-up.
    pub fn new(rules: Vec<Rule>, abandoned: Vec<AccessRequest>) -> Self {
        Recovered { rules, abandoned }
    }
}

/// What [`Store::purge`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Purged {
    /// Expired rules.
    pub rules: usize,
    /// Finished requests past their expiry.
    pub requests: usize,
}

impl Purged {
    /// Counts of deleted rows.
    pub fn new(rules: usize, requests: usize) -> Self {
        Purged { rules, requests }
    }
}

/// What became of a request when the last caller of this process waiting on it left; see
/// [`Store::leave`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Left {
    /// Nobody else waited on it: it ended cancelled.
    Cancelled,
    /// Callers on another replica wait on it: it is that replica's now, still decidable.
    HandedOver,
    /// Callers of this process that joined it through the store still wait on it: it stays
    /// with this process, held through them.
    Kept,
    /// This process only followed it, and no longer does.
    Unfollowed,
    /// It had moved on (decided, taken, ended): nothing was written.
    Moved,
}

/// Which rules to revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation {
    /// One rule.
    Rule(RuleId),
    /// Every rule for a capability.
    Capability(Arc<str>),
    /// Every rule.
    All,
}

/// Whether a request with `status` has finished: nothing more will happen to it.
pub fn is_finished(status: Status) -> bool {
    !matches!(
        status,
        Status::Pending | Status::Approved | Status::Executing
    )
}
