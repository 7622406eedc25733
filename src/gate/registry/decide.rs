//! The registry's side of a person's decision: what it knows of the request, a wrong code
//! counted, a ruling taken while the request is pending, and the store's answer to it.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use tokio::time::Instant;

use super::event::{Carried, Effects, Event, Ruling};
use super::slot::Phase;
use super::{Known, Registry, Vote, already, not_found};
use crate::error::{Error, ErrorKind};
use crate::id::RequestId;
use crate::request::{AccessRequest, Outcome, Status};

impl Registry {
    /// What an approver's decision on `id` starts from: the request, if this registry knows it.
    pub(crate) fn look(&self, id: RequestId) -> Known {
        match (self.live.get(&id), self.history.entries.get(&id)) {
            (Some(slot), _) => Known::Live(slot.request.clone()),
            (None, Some((request, status))) => Known::Remembered(request.clone(), *status),
            (None, None) => Known::Nowhere,
        }
    }

    /// A wrong code `by` someone who may decide the request: counted against it while it is
    /// stored and pending, and at `limit` it closes with `too_many_attempts`. Returns what the
    /// approver hears: what an unknown id hears, until the limit.
    pub(crate) fn wrong_code(
        &mut self,
        id: RequestId,
        by: &Arc<str>,
        limit: u32,
    ) -> (Error, Effects) {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return (not_found(), effects);
        };
        if !slot.stored || !matches!(slot.phase, Phase::Pending) {
            return (not_found(), effects);
        }
        slot.wrong_codes += 1;
        let attempt = u32::from(slot.wrong_codes);
        effects.events.push(Event::CodeRejected {
            request: slot.request.clone(),
            attempt,
            of: limit,
            by: by.clone(),
        });
        if attempt < limit {
            return (not_found(), effects);
        }
        effects.merge(self.close(id, Outcome::TooManyAttempts));
        let error = Error::new(ErrorKind::TooManyAttempts).with_request(id);
        (error, effects)
    }

    /// A verified decision, its rule built (or the reason it may not be made: a scope or TTL
    /// beyond what the request or the approver allows). The request must still be stored,
    /// pending and unexpired; those answers come first, as they would for any decision. It takes
    /// effect once the store has it ([`decided`](Self::decided)).
    pub(crate) fn decide(
        &mut self,
        id: RequestId,
        ruling: Result<Ruling, Error>,
        now: Instant,
    ) -> (Result<Arc<AccessRequest>, Error>, Effects) {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            let error = match self.history.entries.get(&id) {
                Some((_, status)) => already(*status, id),
                None => not_found(),
            };
            return (Err(error), effects);
        };
        if !slot.stored {
            return (Err(not_found()), effects);
        }
        let result = match slot.phase {
            Phase::Pending if self.epoch.ticks(now) >= slot.deadline => {
                effects = self.close(id, Outcome::Expired);
                Err(Error::new(ErrorKind::AccessRequestExpired))
            }
            Phase::Pending
                if slot.request.quorum > 1
                    && let Ok(approval) = &ruling
                    && let Err(error) = may_decide(&self.votes, id, &slot.request, approval) =>
            {
                Err(error)
            }
            Phase::Pending => ruling.map(|ruling| {
                effects.events.push(Event::Decided {
                    request: slot.request.clone(),
                    outcome: ruling.outcome.clone(),
                    scope: ruling.scope,
                    rule: match &ruling.rule {
                        Some((rule, _)) if !ruling.approves() => Some(Box::new(rule.clone())),
                        _ => None,
                    },
                    carried: Carried::by(&ruling),
                });
                slot.phase = Phase::Deciding(Box::new(ruling));
                slot.request.clone()
            }),
            Phase::Deciding(_) => Err(Error::new(ErrorKind::AlreadyResolved)
                .with_detail("another decision on this request is being recorded")),
            _ => Err(already(slot.phase.status(), id)),
        };
        (result.map_err(|error| error.with_request(id)), effects)
    }

    /// The store has, or could not record, a decision. Stored, it takes effect: a denial closes
    /// the request; an approval waits for a caller to take it, or ends cancelled if none is left.
    /// Not stored, the request is pending again and the approver hears `error`.
    pub(crate) fn decided(
        &mut self,
        id: RequestId,
        result: Result<(), Error>,
        now: Instant,
    ) -> Effects {
        let mut effects = Effects::default();
        let Some(slot) = self.live.get_mut(&id) else {
            return effects;
        };
        let Some(ruling) = slot.phase.take(|p| matches!(p, Phase::Deciding(_))) else {
            return effects;
        };
        match result {
            Ok(()) if ruling.approves() => {
                self.index.leave(&slot.request);
                slot.phase = Phase::Approved(ruling);
                if slot.attached == 0 {
                    let ruling = slot.phase.take(|p| matches!(p, Phase::Approved(_)));
                    return self.cancel(id, Status::Approved, ruling.expect("just set"));
                }
                effects.wake.extend(slot.wakers());
            }
            Ok(()) => {
                let Ruling {
                    outcome, rule, ack, ..
                } = *ruling;
                self.index.leave(&slot.request);
                slot.phase = Phase::Closed(Box::new(outcome.clone()));
                effects.wake.extend(slot.wakers());
                effects.resolved = Some(slot.resolved(outcome));
                effects.rule = rule;
                effects.ack = Some((ack, Ok(())));
                self.retire_if_done(id);
            }
            Err(error) => {
                effects.ack = Some((ruling.ack, Err(error.with_request(id))));
                if slot.attached == 0 {
                    effects.merge(self.left(id));
                } else if self.epoch.ticks(now) >= slot.deadline {
                    effects.merge(self.close(id, Outcome::Expired));
                }
            }
        }
        effects
    }

    /// Checks `vote` on request `id`, which several approvers must approve, before its
    /// `endorsed` entry is written: the request is stored and pending, its approver has not
    /// approved it yet, and it reaches no further than those counted. Returns whether it
    /// completes the quorum: then it is the approval that decides, and nothing is counted.
    pub(crate) fn vote_check(&self, id: RequestId, vote: &Vote) -> Result<bool, Error> {
        let slot = self.live.get(&id).ok_or_else(not_found)?;
        if !slot.stored {
            return Err(not_found());
        }
        if !matches!(slot.phase, Phase::Pending) {
            return Err(already(slot.phase.status(), id));
        }
        let votes = self.votes.get(&id).map_or(&[][..], Vec::as_slice);
        let quorum = usize::from(slot.request.quorum);
        if votes.iter().any(|v| v.approver == vote.approver) {
            // Counted, with the quorum met, yet undecided (the deciding write failed): any of
            // them may decide now.
            if votes.len() >= quorum {
                return Ok(true);
            }
            return Err(Error::new(ErrorKind::AlreadyApproved)
                .with_request(id)
                .with_detail(format!("{} approved this request already", vote.approver)));
        }
        // The rule's end is settled by the approval that decides, clamped to the earliest end
        // any of them allowed; a scope only ever narrows.
        votes
            .iter()
            .try_for_each(|other| narrower(other, vote, id, false))?;
        Ok(votes.len() + 1 >= quorum)
    }

    /// The earliest end of a rule any approval counted for request `id` allowed: the rule the
    /// deciding approval makes ends no later.
    pub(crate) fn earliest_end(&self, id: RequestId) -> Option<std::time::SystemTime> {
        let votes = self.votes.get(&id)?;
        votes.iter().filter_map(|vote| vote.until).min()
    }

    /// Who has approved request `id` so far, of the several approvers it needs, while it is
    /// pending.
    pub(crate) fn approved_by(&self, id: RequestId) -> Vec<Arc<str>> {
        let pending = self
            .live
            .get(&id)
            .is_some_and(|slot| matches!(slot.phase, Phase::Pending | Phase::Deciding(_)));
        let votes = self.votes.get(&id).filter(|_| pending);
        let votes = votes.map_or(&[][..], Vec::as_slice);
        votes.iter().map(|vote| vote.approver.clone()).collect()
    }

    /// Counts `vote`, its `endorsed` entry stored, if the request is still pending and its
    /// approver not counted meanwhile. Returns how many are counted, this one included: at the
    /// quorum, this approval decides.
    pub(crate) fn count_vote(&mut self, id: RequestId, vote: Vote) -> Result<u8, Error> {
        self.vote_check(id, &vote)?;
        let votes = self.votes.entry(id).or_default();
        if !votes.iter().any(|v| v.approver == vote.approver) {
            votes.push(vote);
        }
        Ok(u8::try_from(votes.len()).unwrap_or(u8::MAX))
    }
}

/// Whether `ruling`, an approval of request `id`, may decide it: for a request several approvers
/// must approve, the others counted (`votes`) make the quorum with it, and it reaches no further
/// than they did.
fn may_decide(
    votes: &FxHashMap<RequestId, Vec<Vote>>,
    id: RequestId,
    request: &AccessRequest,
    ruling: &Ruling,
) -> Result<(), Error> {
    if request.quorum <= 1 || !ruling.approves() {
        return Ok(());
    }
    let Outcome::Approved { approver, .. } = &ruling.outcome else {
        return Ok(());
    };
    let vote = Vote::of(approver, ruling);
    let votes = votes.get(&id).map_or(&[][..], Vec::as_slice);
    let others: Vec<&Vote> = votes
        .iter()
        .filter(|v| v.approver != vote.approver)
        .collect();
    if others.len() + 1 < usize::from(request.quorum) {
        return Err(Error::new(ErrorKind::AlreadyResolved)
            .with_request(id)
            .with_detail("approvals this one needs are not counted"));
    }
    others
        .iter()
        .try_for_each(|other| narrower(other, &vote, id, true))
}

/// `vote` reaches no further than `other`: no wider scope, and, if `ends`, no rule ending later.
fn narrower(other: &Vote, vote: &Vote, id: RequestId, ends: bool) -> Result<(), Error> {
    let refuse = |detail: String| {
        Err(Error::new(ErrorKind::ScopeNotAllowed)
            .with_request(id)
            .with_detail(detail))
    };
    if vote.scope > other.scope {
        return refuse(format!(
            "{} approved this request for scope `{}` only",
            other.approver, other.scope
        ));
    }
    if let (true, Some(end), Some(limit)) = (ends, vote.until, other.until)
        && end > limit
    {
        return refuse(format!(
            "{} approved rules ending at {} at the latest",
            other.approver,
            crate::time::rfc3339(limit)
        ));
    }
    Ok(())
}
