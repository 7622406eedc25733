//! The store writer: the write-ahead queue between a gate and its store.
//!
//! Every store operation of a gate goes through one queue, served by one task, in the order the
//! gate's registry made the changes: a request's insert is written before its expiry, a decision
//! before the transition that follows it. Writes are queued while the registry lock is held, so
//! queue order is registry order. Reads go through the same queue and so see every earlier write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::record::{self, Write};
use super::registry::Event;
use super::{Gate, Shared};
use crate::boxed::BoxFuture;
use crate::error::{Error, ErrorKind};
use crate::store::{Revocation, Store};
use crate::time::to_millis;

/// One unit of work on the store.
pub(super) type Job = Box<dyn for<'a> FnOnce(&'a dyn Store) -> BoxFuture<'a, ()> + Send>;

/// How often the writer deletes expired rules and finished requests, at most.
const PURGE_EVERY: Duration = Duration::from_secs(60);

pub(super) struct StoreWriter {
    store: Arc<dyn Store>,
    queue: mpsc::UnboundedSender<Job>,
    /// Taken by the writer when it starts, on the first use inside a runtime.
    pending: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    started: AtomicBool,
}

impl StoreWriter {
    pub(super) fn new(store: Arc<dyn Store>) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        StoreWriter {
            store,
            queue,
            pending: Mutex::new(Some(pending)),
            started: AtomicBool::new(false),
        }
    }

    /// Queues `job`. The writer starts on the first job queued inside a Tokio runtime; jobs
    /// queued before then wait for it. Returns whether this call started the writer.
    pub(super) fn run(&self, job: Job) -> bool {
        // The receiver lives until the writer ends, which needs every sender gone: never here.
        let _ = self.queue.send(job);
        self.start()
    }

    /// Starts the writer if it has not started and a runtime is at hand. Returns whether this
    /// call started it.
    pub(super) fn start(&self) -> bool {
        if self.started.load(Ordering::Acquire) {
            return false;
        }
        let Ok(runtime) = Handle::try_current() else {
            return false;
        };
        let Some(mut jobs) = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return false;
        };
        self.started.store(true, Ordering::Release);
        let store = self.store.clone();
        runtime.spawn(async move {
            let mut purged = Instant::now();
            while let Some(job) = jobs.recv().await {
                job(&*store).await;
                if purged.elapsed() >= PURGE_EVERY {
                    purged = Instant::now();
                    match store.purge(SystemTime::now()).await {
                        Ok(n) => {
                            tracing::debug!(rules = n.rules, requests = n.requests, "store purged")
                        }
                        Err(error) => tracing::warn!(%error, "store purge failed"),
                    }
                }
            }
        });
        true
    }
}

/// Makes a [`Job`] from a closure, so that its signature is inferred from the bound.
fn job<F>(work: F) -> Job
where
    F: for<'a> FnOnce(&'a dyn Store) -> BoxFuture<'a, ()> + Send + 'static,
{
    Box::new(work)
}

impl Gate {
    /// Runs an operation on the store after every write queued before it: reads see them all.
    pub(super) async fn queued<T, F>(&self, op: F) -> Result<T, Error>
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
}

/// The store queue's task is gone: its runtime shut down.
pub(super) fn queue_stopped() -> Error {
    Error::new(ErrorKind::StoreFailed)
        .with_detail("the gate's store queue stopped (its Tokio runtime shut down)")
}

impl Shared {
    /// Queues a job on the store; the first job inside a runtime starts the queue's task.
    fn run(self: &Arc<Self>, job: Job) {
        if self.writer.run(job) {
            self.announce_abandoned();
            self.follow();
        }
    }

    /// Queues the write a registry event calls for.
    pub(super) fn record(self: &Arc<Self>, event: Event) {
        self.write(record::write(event, self.settings.audit_args));
    }

    /// Queues a write, with the registry step that follows once the store has it.
    pub(super) fn write(self: &Arc<Self>, write: Write) {
        let shared = self.clone();
        self.run(match write {
            Write::Insert(request, entry) => job(move |store| {
                Box::pin(async move {
                    let audit = std::slice::from_ref(&entry);
                    let filed = if store.shared() {
                        // Boxed: the common path's future stays small.
                        match Box::pin(shared.file_or_join(store, &request, audit)).await {
                            Ok(false) => return,
                            filed => filed.map(drop),
                        }
                    } else {
                        store.insert(&request, audit).await
                    };
                    if let Err(error) = &filed {
                        tracing::error!(request_id = %request.id, %error, "the store could not record an access request; its calls fail");
                    }
                    let announce =
                        shared.locked(|registry| registry.stored(request.id, filed.is_ok()));
                    if announce {
                        shared.deliver(&Handle::current(), shared.clone().alert(request));
                    }
                })
            }),
            Write::Decide(change) => job(move |store| {
                Box::pin(async move {
                    let stored = store.transition(&change).await;
                    if matches!(stored, Ok(false)) && store.shared() {
                        // Boxed: the common path's future stays small.
                        return Box::pin(shared.decided_elsewhere(store, change.id)).await;
                    }
                    let result = applied(stored, "the store no longer holds the request as pending");
                    if let Err(error) = &result {
                        tracing::error!(request_id = %change.id, %error, "decision not recorded; the request stays pending");
                    }
                    let now = tokio::time::Instant::now();
                    shared.locked(|registry| ((), registry.decided(change.id, result, now)));
                })
            }),
            Write::Take(change) => job(move |store| {
                Box::pin(async move {
                    let result = applied(
                        store.transition(&change).await,
                        "the store did not record the approval being taken",
                    );
                    if let Err(error) = &result {
                        tracing::error!(request_id = %change.id, %error, "approved call failed: not recorded");
                    }
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
}

/// A transition the registry waits on: applied, or the `store_failed` its approver hears.
fn applied(result: Result<bool, Error>, otherwise: &'static str) -> Result<(), Error> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::new(ErrorKind::StoreFailed).with_detail(otherwise)),
        Err(cause) if cause.kind() == ErrorKind::StoreFailed => Err(cause),
        Err(cause) => Err(Error::new(ErrorKind::StoreFailed).with_source(cause)),
    }
}
