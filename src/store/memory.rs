//! The default store: everything in this process's memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::trail::Trail;
use super::{
    Purged, Recovered, Revocation, ScopeKey, Store, StoredRequest, Transition, Write, is_finished,
};

use crate::audit::{AuditEntry, AuditFilter};

use crate::boxed::BoxFuture;
use crate::by_id::{ById, HasId};
use crate::error::Error;
use crate::id::{RequestId, RuleId};
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::Rule;

/// Keeps requests, rules and the audit trail in memory: fast, and gone when the process stops.
///
/// The default store of every gate. Clones share one state, so a gate built again on a clone
/// sees what the first one left, as it would after a restart with a durable store.
///
/// Its memory is bounded, so that a process deciding calls for months stays the size it was
/// after the first minutes: the audit trail keeps the most recent entries (65,536 unless told
/// otherwise, [`with_audit_capacity`](Self::with_audit_capacity)), each encoded in typically
/// about 100 bytes, and the store keeps the most recently finished requests (4,096 unless told
/// otherwise, [`keep_finished`](Self::keep_finished)) besides every request still pending,
/// approved or executing. Rules are kept until they expire or are revoked.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    requests: ById<Row>,
    rules: HashMap<ScopeKey, Rule>,
    rule_keys: HashMap<RuleId, ScopeKey>,
    audit: Trail,
    /// Finished requests, oldest first: beyond `finished_capacity` the oldest are dropped.
    finished: VecDeque<RequestId>,
    finished_capacity: usize,
    seq: u64,
}

/// A request as this store keeps it: a [`StoredRequest`] without the verdict, which only a store
/// replicas share keeps. The request is the gate's own `Arc` when it came by
/// [`insert_arc`](Store::insert_arc), so that a parked call's request is held once.
#[derive(Clone, Debug)]
struct Row {
    request: Arc<AccessRequest>,
    /// `None` while pending; once it moved on, where it stands and how it ended. One box, so
    /// that a pending row is two words.
    moved: Option<Box<(Status, Option<Outcome>)>>,
}

impl Row {
    fn status(&self) -> Status {
        self.moved.as_ref().map_or(Status::Pending, |moved| moved.0)
    }
}

impl HasId for Row {
    fn id(&self) -> RequestId {
        self.request.id
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_audit_capacity(65_536)
    }

    /// An empty store whose audit trail keeps the `capacity` most recent entries.
    pub fn with_audit_capacity(capacity: usize) -> Self {
        MemoryStore {
            state: Arc::new(Mutex::new(State {
                requests: ById::default(),
                rules: HashMap::new(),
                rule_keys: HashMap::new(),
                audit: Trail::new(capacity),
                finished: VecDeque::new(),
                finished_capacity: 4096,
                seq: 0,
            })),
        }
    }

    /// Keeps at most `capacity` finished requests (executed, denied, expired, failed, ...), the
    /// most recently finished; older ones are forgotten, as [`purge`](Store::purge) forgets them
    /// once they are past their expiry. Requests not yet finished are always kept.
    ///
    /// ```
    /// use tollgate::store::MemoryStore;
    ///
    /// let store = MemoryStore::with_audit_capacity(1_000).keep_finished(100);
    /// # let _ = store;
    /// ```
    pub fn keep_finished(self, capacity: usize) -> Self {
        self.state().finished_capacity = capacity;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Files a new pending request, as `insert` and `insert_arc` do.
    fn file_request(&self, request: Arc<AccessRequest>, audit: &[AuditEntry]) -> Result<(), Error> {
        let mut state = self.state();
        let row = Row {
            request,
            moved: None,
        };
        if let Err(row) = state.requests.insert_new(row) {
            return Err(Error::new(crate::ErrorKind::StoreFailed)
                .with_detail(format!("request {} is already stored", row.request.id)));
        }
        state.append(audit);
        Ok(())
    }

    /// Applies a transition: `false` if the request is unknown or not in `change.from`.
    fn apply(&self, change: &Transition) -> bool {
        let mut state = self.state();
        match state.requests.get_mut(&change.id) {
            Some(stored) if stored.status() == change.from => {
                let moved = stored
                    .moved
                    .get_or_insert_with(|| Box::new((change.to, None)));
                moved.0 = change.to;
                if let Some(outcome) = &change.outcome {
                    moved.1 = Some(outcome.clone());
                }
                if let Some(rule) = &change.rule {
                    state.file(rule);
                }
                state.append(&change.audit);
                if is_finished(change.to) {
                    state.finished(change.id);
                }
                true
            }
            _ => false,
        }
    }
}

impl State {
    fn append(&mut self, entries: &[AuditEntry]) {
        for entry in entries {
            self.seq += 1;
            self.audit.push(entry, self.seq);
        }
    }

    /// Request `id` just finished: the oldest finished requests beyond the capacity go.
    fn finished(&mut self, id: RequestId) {
        self.finished.push_back(id);
        while self.finished.len() > self.finished_capacity {
            let Some(oldest) = self.finished.pop_front() else {
                break;
            };
            if self
                .requests
                .get(&oldest)
                .is_some_and(|r| is_finished(r.status()))
            {
                self.requests.remove(&oldest);
            }
        }
    }

    fn file(&mut self, rule: &Rule) {
        let key = ScopeKey::of(rule);
        if let Some(old) = self.rules.insert(key, rule.clone()) {
            self.rule_keys.remove(&old.id);
        }
        self.rule_keys.insert(rule.id, key);
    }

    fn remove(&mut self, id: RuleId) -> Option<Rule> {
        let key = self.rule_keys.remove(&id)?;
        self.rules.remove(&key)
    }

    fn live_rules(&self, now: SystemTime) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self
            .rules
            .values()
            .filter(|r| r.expires_at > now)
            .cloned()
            .collect();
        rules.sort_by_key(|r| (r.granted_at, r.id));
        rules
    }
}

impl Store for MemoryStore {
    fn recover(&self, now: SystemTime) -> Result<Recovered, Error> {
        let mut state = self.state();
        let mut abandoned = Vec::new();
        for stored in state.requests.values_mut() {
            if !is_finished(stored.status()) {
                let moved = stored
                    .moved
                    .get_or_insert_with(|| Box::new((Status::Abandoned, None)));
                moved.0 = Status::Abandoned;
                moved.1.get_or_insert(Outcome::Abandoned);
                abandoned.push((*stored.request).clone());
            }
        }
        abandoned.sort_by_key(|r| r.created_at);
        for request in &abandoned {
            state.finished(request.id);
        }
        let entries: Vec<AuditEntry> = abandoned
            .iter()
            .map(|r| AuditEntry::abandoned(r, now))
            .collect();
        state.append(&entries);
        Ok(Recovered::new(state.live_rules(now), abandoned))
    }

    fn insert<'a>(
        &'a self,
        request: &'a AccessRequest,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>> {
        let filed = self.file_request(Arc::new(request.clone()), audit);
        Box::pin(std::future::ready(filed))
    }

    fn insert_arc<'a>(
        &'a self,
        request: &'a Arc<AccessRequest>,
        audit: &'a [AuditEntry],
    ) -> BoxFuture<'a, Result<(), Error>> {
        let filed = self.file_request(request.clone(), audit);
        Box::pin(std::future::ready(filed))
    }

    fn transition<'a>(&'a self, change: &'a Transition) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(std::future::ready(Ok(self.apply(change))))
    }

    fn append<'a>(&'a self, audit: &'a [AuditEntry]) -> BoxFuture<'a, Result<(), Error>> {
        self.state().append(audit);
        Box::pin(std::future::ready(Ok(())))
    }

    fn write_now(&self, write: &Write<'_>) -> Option<Result<bool, Error>> {
        Some(match write {
            Write::Insert(request, audit) => {
                self.file_request(Arc::clone(request), audit).map(|()| true)
            }
            Write::Transition(change) => Ok(self.apply(change)),
            Write::Append(audit) => {
                self.state().append(audit);
                Ok(true)
            }
        })
    }

    fn request(&self, id: RequestId) -> BoxFuture<'_, Result<Option<StoredRequest>, Error>> {
        let found = self.state().requests.get(&id).map(|row| {
            StoredRequest::new(
                (*row.request).clone(),
                row.status(),
                row.moved.as_ref().and_then(|moved| moved.1.clone()),
            )
        });
        Box::pin(std::future::ready(Ok(found)))
    }

    fn covering<'a>(
        &'a self,
        keys: &'a [ScopeKey],
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Rule>, Error>> {
        let state = self.state();
        let found = keys
            .iter()
            .filter_map(|key| state.rules.get(key))
            .filter(|rule| rule.expires_at > now)
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn rules(&self, now: SystemTime) -> BoxFuture<'_, Result<Vec<Rule>, Error>> {
        let rules = self.state().live_rules(now);
        Box::pin(std::future::ready(Ok(rules)))
    }

    fn revoke<'a>(
        &'a self,
        which: &'a Revocation,
        by: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<Rule>, Error>> {
        let mut state = self.state();
        let ids: Vec<RuleId> = match which {
            Revocation::Rule(id) => vec![*id],
            Revocation::Capability(capability) => state
                .rules
                .values()
                .filter(|r| r.capability == *capability)
                .map(|r| r.id)
                .collect(),
            Revocation::All => state.rule_keys.keys().copied().collect(),
        };
        let mut removed: Vec<Rule> = ids.into_iter().filter_map(|id| state.remove(id)).collect();
        removed.sort_by_key(|r| (r.granted_at, r.id));
        let entries: Vec<AuditEntry> = removed
            .iter()
            .map(|r| AuditEntry::rule_revoked(r, by, at))
            .collect();
        state.append(&entries);
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn purge(&self, now: SystemTime) -> BoxFuture<'_, Result<Purged, Error>> {
        let mut state = self.state();
        let expired: Vec<RuleId> = state
            .rules
            .values()
            .filter(|r| r.expires_at <= now)
            .map(|r| r.id)
            .collect();
        for id in &expired {
            state.remove(*id);
        }
        let before = state.requests.len();
        state
            .requests
            .retain(|s| !(is_finished(s.status()) && s.request.expires_at() <= now));
        let purged = Purged::new(expired.len(), before - state.requests.len());
        Box::pin(std::future::ready(Ok(purged)))
    }

    fn audit<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, Error>> {
        let found = self.state().audit.find(filter);
        Box::pin(std::future::ready(Ok(found)))
    }
}
