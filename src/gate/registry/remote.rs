//! What another replica did to a request this registry holds, as the store's change feed told
//! it. The store already has it, so these transitions write nothing; the callers here simply
//! move on, as they would had the decision been made in this process.

use super::Registry;
use super::event::{Effects, Ruling};
use super::slot::Phase;
use crate::id::RequestId;
use crate::request::{Outcome, Status};

/// A decision or an ending another replica stored.
pub(crate) enum Remote {
    /// Approved there, its verdict's seal checked: a caller here takes it, as after
    /// [`Registry::decided`].
    Approved(Box<Ruling>),
    /// Ended there with this outcome: a denial, too many wrong codes, abandoned by a replica
    /// that found this one's lease run out.
    Closed(Outcome),
}

impl Registry {
    /// Applies what another replica stored for request `id`, if it is still pending here. While
    /// a decision of this process is being written, that write's failure (the store has the
    /// other one) is followed by the gate reading the store and calling this again.
    pub(crate) fn remote(&mut self, id: RequestId, remote: Remote) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return effects;
        };
        if !slot.stored || !matches!(slot.phase, Phase::Pending) {
            return effects;
        }
        self.index.leave(&slot.request);
        effects.wake.extend(slot.wakers());
        match remote {
            Remote::Approved(ruling) => {
                slot.phase = Phase::Approved(ruling);
                if slot.attached == 0 {
                    let ruling = slot.phase.take(|p| matches!(p, Phase::Approved(_)));
                    return self.cancel(id, Status::Approved, ruling.expect("just set"));
                }
            }
            Remote::Closed(outcome) => {
                slot.phase = Phase::Closed(Box::new(outcome.clone()));
                // The replica that abandons a request tells the notifiers; any other ending of a
                // request is told where its callers waited, here.
                if outcome != Outcome::Abandoned {
                    effects.resolved = Some(slot.resolved(outcome));
                }
                self.retire_if_done(id);
            }
        }
        effects
    }
}
