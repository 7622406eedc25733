//! The expiry task: one per gate, it expires each pending request at its deadline, and
//! escalates it first if the gate escalates.
//!
//! Parked calls hold no timer of their own. The registry keeps the pending requests' deadlines
//! and escalations in order; the task sleeps until the earliest, does what is due, and sleeps
//! again. A new request whose deadline is the earliest (the first after a quiet spell) wakes it
//! early.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::Shared;

impl Shared {
    /// Starts the expiry task on `runtime` unless it runs. If the runtime it ran on shut down,
    /// the next request starts it again on its own.
    pub(super) fn watch_deadlines(self: &Arc<Self>, runtime: &Handle) {
        if self.expiring.load(Ordering::Acquire) || self.expiring.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Marks the task as gone however it ends: the gate dropped, or its runtime shut down.
        struct Running(Weak<Shared>);
        impl Drop for Running {
            fn drop(&mut self) {
                if let Some(shared) = self.0.upgrade() {
                    shared.expiring.store(false, Ordering::Release);
                }
            }
        }
        let running = Running(Arc::downgrade(self));
        let alarm = self.alarm.clone();
        runtime.spawn(async move {
            loop {
                let Some(shared) = running.0.upgrade() else {
                    return;
                };
                let next = shared.expire_due();
                drop(shared);
                let alarm = alarm.notified();
                match next {
                    Some(deadline) => {
                        let _ = tokio::time::timeout_at(deadline, alarm).await;
                    }
                    None => alarm.await,
                }
            }
        });
    }

    /// Escalates every pending request whose escalation is due and expires every one whose
    /// deadline has passed; the next of either.
    fn expire_due(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        loop {
            // The lock is let go before the escalation's alert goes out.
            let due = self.registry().escalate_next(now);
            let Some(request) = due else { break };
            self.escalate(request);
        }
        while self.locked(|registry| registry.expire_next(now)) {}
        self.registry().next_deadline()
    }
}

impl Drop for Shared {
    /// Wakes the expiry task, which finds the gate gone and ends.
    fn drop(&mut self) {
        self.alarm.notify_one();
    }
}
