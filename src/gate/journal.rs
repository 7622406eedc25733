//! The write-ahead queue between a gate and its store.
//!
//! Every store operation of a gate goes through one queue, served by one task, in the order the
//! gate's registry made the changes: a request's insert is written before its expiry, a decision
//! before the transition that follows it. Writes are queued while the registry lock is held, so
//! queue order is registry order. Reads go through the same queue and so see every earlier write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::boxed::BoxFuture;
use crate::store::Store;

/// One unit of work on the store.
pub(crate) type Job = Box<dyn for<'a> FnOnce(&'a dyn Store) -> BoxFuture<'a, ()> + Send>;

/// How often the writer deletes expired rules and finished requests, at most.
const PURGE_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Journal {
    store: Arc<dyn Store>,
    queue: mpsc::UnboundedSender<Job>,
    /// Taken by the writer when it starts, on the first use inside a runtime.
    pending: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    started: AtomicBool,
}

impl Journal {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        Journal {
            store,
            queue,
            pending: Mutex::new(Some(pending)),
            started: AtomicBool::new(false),
        }
    }

    /// Queues `job`. The writer starts on the first job queued inside a Tokio runtime; jobs
    /// queued before then wait for it. Returns whether this call started the writer.
    pub(crate) fn run(&self, job: Job) -> bool {
        // The receiver lives until the writer ends, which needs every sender gone: never here.
        let _ = self.queue.send(job);
        self.start()
    }

    /// Starts the writer if it has not started and a runtime is at hand. Returns whether this
    /// call started it.
    pub(crate) fn start(&self) -> bool {
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
pub(crate) fn job<F>(work: F) -> Job
where
    F: for<'a> FnOnce(&'a dyn Store) -> BoxFuture<'a, ()> + Send + 'static,
{
    Box::new(work)
}
