//! Decisions: approve, deny and revoke.
//!
//! Everything that can be checked or built without the registry runs before its lock is taken:
//! whether the approver may decide the request (asked before the code is looked at, so someone
//! who may not decide spends none of its attempts), the code, the scope and TTL caps, and the
//! sealed rule. The registry then only checks that the request is still pending and takes the
//! [`Ruling`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::approver::{Approval, Approve, Authority, Denial, Deny, Ends, NewArgs, Revoke};
use super::registry::{Ack, Known, Ruling, Vote, already};
use super::replicas::{RECHECK, settled, settles};
use super::rules::{LONGEST_RULE, deadline_of};
use super::seal::SealKey;
use super::writer::queue_stopped;
use super::{Gate, record, verdict};
use crate::call::Edit;
use crate::error::{Error, ErrorKind};
use crate::id::{RequestId, RuleId};
use crate::request::{AccessRequest, Outcome, Status};
use crate::rule::{Rule, RuleEffect};
use crate::scope::Scope;
use crate::store::{Revocation, Sealed, is_finished};
use crate::time::to_millis;

/// What an approver asked for, before anything is checked.
struct Asked {
    effect: RuleEffect,
    scope: Scope,
    ends: Option<Ends>,
    approver: Option<Arc<str>>,
    reason: Option<Arc<str>>,
    authority: Option<Box<dyn Authority>>,
    /// An approval's new arguments.
    edit: Option<Box<NewArgs>>,
}

/// What a decision made: the request, its rule if any, an approval's edit, and for a request
/// several approvers must approve, how many more approvals it needs (0 once decided).
struct Made {
    request: Arc<AccessRequest>,
    rule: Option<Rule>,
    edit: Option<Arc<Edit>>,
    outstanding: u8,
}

impl Gate {
    /// Approves a pending request.
    ///
    /// Succeeds only if the code matches, the scope and TTL are within what the request allows,
    /// the store recorded the approval, and a waiting call received it. Otherwise the error says
    /// what happened: `access_request_not_found` (unknown id, wrong code, or an approver the
    /// request does not name, alike: someone who may not decide spends no attempt),
    /// `too_many_attempts`, `scope_not_allowed`, `already_resolved`,
    /// `access_request_expired`, `access_request_cancelled`, `access_request_abandoned`,
    /// `missing_approver`, `store_failed` (nothing was approved; the request is still pending),
    /// and for an [edit](Approve::edit) `edit_not_allowed` or `edit_unsupported` (nothing was
    /// approved either).
    ///
    /// For a request several approvers must approve ([`Ask::quorum`](crate::policy::Ask::quorum)),
    /// an approval before the last succeeds once it is counted, with
    /// [`outstanding`](Approval::outstanding) saying how many more are needed; an approver who
    /// already approved hears `already_approved`.
    ///
    /// Once this future has been polled, the approval is on its way: dropping the future does not
    /// take it back, it only stops you from hearing whether a caller received it.
    pub async fn approve(&self, approve: Approve) -> Result<Approval, Error> {
        let asked = Asked {
            effect: RuleEffect::Allow,
            scope: approve.scope,
            ends: approve.ends,
            approver: approve.approver,
            reason: None,
            authority: approve.authority,
            edit: approve.edit,
        };
        let made = self.rule_on(approve.id, &approve.code, asked).await?;
        Ok(Approval {
            request: made.request,
            scope: approve.scope,
            rule: made.rule,
            edit: made.edit,
            outstanding: made.outstanding,
        })
    }

    /// Denies a pending request; its callers fail with `access_request_denied`.
    ///
    /// Errors as [`approve`](Self::approve) does, except that a denial needs no waiting caller.
    pub async fn deny(&self, deny: Deny) -> Result<Denial, Error> {
        let asked = Asked {
            effect: RuleEffect::Deny,
            scope: deny.remember,
            ends: deny.ends,
            approver: deny.approver,
            reason: deny.reason,
            authority: deny.authority,
            edit: None,
        };
        let made = self.rule_on(deny.id, &deny.code, asked).await?;
        Ok(Denial {
            request: made.request,
            rule: made.rule,
        })
    }

    /// What approve and deny share: the approver must be named and may decide the request, the
    /// code must match, the scope and TTL must be allowed; then the registry takes the ruling if
    /// the request is still pending, and it takes effect once stored (and, for an approval, once
    /// a waiting caller took it; if every caller left first, it was cancelled). An edit is
    /// checked once the code is. Returns the request, the rule the decision made, if any, and
    /// the edit the callers run.
    async fn rule_on(&self, id: RequestId, code: &str, mut asked: Asked) -> Result<Made, Error> {
        let shared = &self.shared;
        let approver = asked
            .approver
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::MissingApprover))?;
        let may_decide = |request: &AccessRequest| {
            request.admits(&approver) && asked.authority.as_ref().is_none_or(|a| a.decides(request))
        };
        let known = shared.registry().look(id);
        let request = match known {
            Known::Live(request) => request,
            Known::Remembered(request, status) => {
                return Err(
                    if may_decide(&request) && shared.verify(&request, code, &approver) {
                        already(status, id)
                    } else {
                        not_found()
                    },
                );
            }
            Known::Nowhere if shared.settings.shared_store => {
                return self
                    .rule_elsewhere(id, code, &asked, &approver, may_decide)
                    .await;
            }
            Known::Nowhere => {
                return Err(self.stored_answer(id, &may_decide, code, &approver).await);
            }
        };
        if !may_decide(&request) {
            return Err(not_found());
        }
        if !shared.verify(&request, code, &approver) {
            if shared.settings.shared_store {
                return Err(self.wrong_code_stored(&request, &approver).await);
            }
            let limit = shared.settings.limits.attempts;
            return Err(shared.locked(|registry| registry.wrong_code(id, &approver, limit)));
        }
        // An approval of a request several approvers must approve, before the last, is counted
        // and decides nothing. Boxed: the approve future stays as small as it was for others.
        if request.quorum > 1 && asked.effect == RuleEffect::Allow {
            // A quorum's approvers approve the call as asked: any other arguments are refused.
            if let Some(args) = &asked.edit {
                shared.edit(&request, args, &approver)?;
            }
            let vote = asked.vote(&request, &approver, &shared.seals)?;
            if let Some(outstanding) = Box::pin(self.endorse(&request, vote)).await? {
                return Ok(Made {
                    request,
                    rule: None,
                    edit: None,
                    outstanding,
                });
            }
            // Its rule ends no later than the earliest end any counted approval allowed.
            if let Some(end) = shared.registry().earliest_end(id) {
                asked.end_by(end, &request);
            }
        }
        let now = Instant::now();
        let (ack, acked) = oneshot::channel();
        let mut ruling = match &asked.edit {
            None => asked.rule(&request, &approver, &shared.seals, now, ack),
            Some(args) => match shared.edit(&request, args, &approver)? {
                None => asked.rule(&request, &approver, &shared.seals, now, ack),
                // The ruling binds the edited arguments, within both asks' limits.
                Some((edit, edited)) => asked
                    .rule(&edited, &approver, &shared.seals, now, ack)
                    .map(|ruling| Ruling {
                        edit: Some(edit),
                        ..ruling
                    }),
            },
        };
        if let Ok(ruling) = &mut ruling
            && shared.settings.shared_store
            && ruling.approves()
        {
            let rule = ruling.rule.as_ref().map(|(rule, _)| rule);
            // Stored only while no caller of another replica has joined the request: with one,
            // sealed again over their joins' tickets (`Shared::decided_elsewhere`).
            ruling.verdict = Some(verdict::seal(
                &shared.seals,
                &request,
                &ruling.outcome,
                rule,
                &[],
            ));
        }
        let (rule, edit) = match &ruling {
            Ok(ruling) => (
                ruling.rule.as_ref().map(|(rule, _)| rule.clone()),
                ruling.edit.clone(),
            ),
            Err(_) => (None, None),
        };
        let request = shared.locked(|registry| registry.decide(id, ruling, now))?;
        acknowledged(id, acked).await?;
        Ok(Made {
            request,
            rule,
            edit,
            outstanding: 0,
        })
    }

    /// An approval of `request`, which several approvers must approve, by `approver`: unless it
    /// completes the quorum, it is counted once its `endorsed` entry is stored, and decides
    /// nothing. Returns how many approvals the request still needs, or `None` if this one
    /// decides.
    async fn endorse(&self, request: &AccessRequest, vote: Vote) -> Result<Option<u8>, Error> {
        let shared = &self.shared;
        let (id, approver) = (request.id, vote.approver.clone());
        if shared.registry().vote_check(id, &vote)? {
            return Ok(None);
        }
        let entry = record::endorsed(request, &vote, shared.settings.audit_args);
        self.queued(move |store| Box::pin(async move { store.append(&[entry]).await }))
            .await?;
        let counted = shared.registry().count_vote(id, vote)?;
        tracing::info!(request_id = %id, ?approver, counted, of = request.quorum, "access request endorsed");
        Ok((counted < request.quorum).then(|| request.quorum - counted))
    }

    /// A decision on a request whose callers wait on another replica, made through the store
    /// replicas share: the same checks as here, then one conditional update. An approval carries
    /// its sealed verdict, and succeeds once the replica holding the callers records one taking
    /// it (`executing`); if they all left, it was cancelled; if that replica stopped, abandoned.
    async fn rule_elsewhere(
        &self,
        id: RequestId,
        code: &str,
        asked: &Asked,
        approver: &Arc<str>,
        may_decide: impl Fn(&AccessRequest) -> bool,
    ) -> Result<Made, Error> {
        let shared = &self.shared;
        let stored = self
            .queued(move |store| store.request(id))
            .await?
            .ok_or_else(not_found)?;
        let request = Arc::new(stored.request);
        if !may_decide(&request) {
            return Err(not_found());
        }
        if !shared.verify(&request, code, approver) {
            return Err(self.wrong_code_stored(&request, approver).await);
        }
        if !shared
            .seals
            .request_verifies(&request, stored.seal.as_deref())
        {
            // Changed in the store since it was filed: no verdict is made on it.
            shared.reject_request(&request);
            return Err(not_found());
        }
        if stored.status != Status::Pending {
            return Err(already(stored.status, id));
        }
        if asked.edit.is_some() {
            return Err(Error::new(ErrorKind::EditNotAllowed)
                .with_request(id)
                .with_detail("edits need a gate whose store is not shared by replicas"));
        }
        if SystemTime::now() >= request.expires_at() {
            return Err(Error::new(ErrorKind::AccessRequestExpired).with_request(id));
        }
        let ruling = asked.rule(
            &request,
            approver,
            &shared.seals,
            Instant::now(),
            oneshot::channel().0,
        )?;
        let approves = ruling.approves();
        let rule = ruling.rule.map(|(rule, _)| rule);
        let outcome = ruling.outcome.clone();
        // Listening before the write: the replica holding the callers may answer at once.
        let answer = approves.then(|| shared.await_settled(id));
        // An approval binds the tickets of the joins made so far, and is stored only while they
        // are all there are: a join meanwhile has it sealed again.
        let mut tickets = stored.tickets;
        let mut tries = 0;
        let verdict = loop {
            let verdict = approves
                .then(|| verdict::seal(&shared.seals, &request, &outcome, rule.as_ref(), &tickets));
            let mut change = record::decision(
                &request,
                outcome.clone(),
                ruling.scope,
                rule.clone().filter(|_| !approves).map(Box::new),
                shared.settings.audit_args,
            );
            change.sealed = verdict.clone().map(|verdict| {
                Box::new(Sealed {
                    verdict,
                    tickets: tickets.clone(),
                })
            });
            let won = self
                .queued(move |store| Box::pin(async move { store.transition(&change).await }))
                .await?;
            if won {
                break verdict;
            }
            tries += 1;
            match self.queued(move |store| store.request(id)).await? {
                Some(now)
                    if approves && now.status == Status::Pending && now.tickets != tickets =>
                {
                    if tries == verdict::RESEALS {
                        return Err(Error::new(ErrorKind::StoreFailed)
                            .with_request(id)
                            .with_detail("identical calls kept joining the request; try again"));
                    }
                    tickets = now.tickets;
                }
                now => return Err(now.map_or_else(not_found, |s| already(s.status, id))),
            }
        };
        match answer {
            Some(answer) => {
                // Handed to this process, for callers here that joined it: taken here, as the
                // feed brings this process no word of its own writes.
                shared.apply_remote(id, Status::Approved, Some(outcome), verdict.as_deref());
                self.settled_elsewhere(id, request.expires_at(), answer)
                    .await?
            }
            None => {
                // A remembered denial applies here at once; other replicas learn of it from the
                // store.
                if let Some(rule) = &rule
                    && let Some(deadline) = deadline_of(rule)
                {
                    shared.rules_mut().insert(rule.clone(), deadline);
                }
                // Callers here that joined the request end too: the feed brings this process
                // no word of its own writes.
                shared.apply_remote(id, outcome.status(), Some(outcome), None);
                shared.announce();
            }
        }
        Ok(Made {
            request,
            rule,
            edit: None,
            outstanding: 0,
        })
    }

    /// Waits until an approval made here settles on the replica holding its callers, as the
    /// change feed tells, re-reading the store every [`RECHECK`] in case that change was lost.
    /// If it is still not taken when the request would have expired (its callers have given up;
    /// their replica did not carry out the verdict), the approver hears it expired.
    async fn settled_elsewhere(
        &self,
        id: RequestId,
        expires_at: SystemTime,
        mut answer: oneshot::Receiver<Status>,
    ) -> Result<(), Error> {
        loop {
            match tokio::time::timeout(RECHECK, &mut answer).await {
                Ok(Ok(status)) => return settled(id, status),
                // The feed's task ended with its store: keep reading the store.
                Ok(Err(_)) => answer = self.shared.await_settled(id),
                Err(_) => {}
            }
            let stored = self.queued(move |store| store.request(id)).await?;
            match stored.map(|s| s.status) {
                Some(status) if settles(status) => return settled(id, status),
                Some(_) if SystemTime::now() > expires_at + RECHECK => {
                    return Err(Error::new(ErrorKind::AccessRequestExpired)
                        .with_request(id)
                        .with_detail("no replica took the approval before the request expired"));
                }
                Some(_) => {}
                None => return Err(not_found()),
            }
        }
    }

    /// A wrong code for a request in a store replicas share: counted there, so the limit holds
    /// across every replica together; at the limit the request is locked, through this process's
    /// registry if its callers wait here, else through the store.
    async fn wrong_code_stored(&self, request: &Arc<AccessRequest>, by: &Arc<str>) -> Error {
        let shared = &self.shared;
        let (id, limit, audit_args) = (
            request.id,
            shared.settings.limits.attempts,
            shared.settings.audit_args,
        );
        let entry = record::code_rejected(request, None, limit, by.clone(), audit_args);
        // The store ends the request in the same step as the last wrong code it allows.
        let close = record::closed(
            request,
            Status::Pending,
            Outcome::TooManyAttempts,
            audit_args,
        );
        let counted = self
            .queued(move |store| {
                Box::pin(async move { store.wrong_code(id, &entry, limit, &close).await })
            })
            .await;
        match counted {
            Ok(Some(attempts)) if attempts >= limit => {
                tracing::warn!(request_id = %id, attempts, "access request locked after too many wrong codes");
                // Stored already: callers here, holding the request or joined to it, end as they
                // would on another replica's word; callers elsewhere hear it from the feed.
                let locked = Outcome::TooManyAttempts;
                shared.apply_remote(id, locked.status(), Some(locked), None);
                Error::new(ErrorKind::TooManyAttempts).with_request(id)
            }
            Ok(_) => not_found(),
            Err(error) => error,
        }
    }

    /// What an approver hears about a request this process does not hold in memory: the store
    /// may know it, from before a restart or from another process.
    async fn stored_answer(
        &self,
        id: RequestId,
        may_decide: impl Fn(&AccessRequest) -> bool,
        code: &str,
        approver: &str,
    ) -> Error {
        let not_found = || Error::new(ErrorKind::AccessRequestNotFound);
        match self.queued(move |store| store.request(id)).await {
            Ok(Some(stored))
                if may_decide(&stored.request)
                    && self.shared.verify(&stored.request, code, approver) =>
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
        self.queued(move |store| {
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
                shared.announce();
                Ok(revoked)
            })
        })
        .await
    }
}

fn not_found() -> Error {
    Error::new(ErrorKind::AccessRequestNotFound)
}

impl Asked {
    /// This approval of `request`, which several approvers must approve, as a vote: checked as
    /// any approval is (the scope and TTL it asks for, the approver's rights), with what it
    /// lets a rule reach.
    fn vote(
        &self,
        request: &AccessRequest,
        approver: &Arc<str>,
        seals: &SealKey,
    ) -> Result<Vote, Error> {
        let checked = self.rule(
            request,
            approver,
            seals,
            Instant::now(),
            oneshot::channel().0,
        )?;
        Ok(Vote::of(approver, &checked))
    }

    /// Makes a rule this asks for on `request` end by `end` at the latest: for the approval
    /// that completes a quorum, `end` is the earliest end another approver allowed. An end
    /// within a second of `end` is taken as `end`, so that the clock read when the rule is made
    /// cannot carry it past.
    fn end_by(&mut self, end: SystemTime, request: &AccessRequest) {
        let now = SystemTime::now();
        // `None` past what a time can hold: a policy may allow rules with no limit.
        let own = match self.ends {
            Some(Ends::At(at)) => Some(at),
            Some(Ends::After(ttl)) => now.checked_add(ttl),
            None => now.checked_add(request.max_rule_ttl()),
        };
        let near = |own: SystemTime| own + Duration::from_secs(1) > end;
        if self.scope != Scope::Once && own.is_none_or(near) {
            self.ends = Some(Ends::At(own.map_or(end, |own| own.min(end))));
        }
    }

    /// The ruling this asks for on `request`, if this approver may grant it and the request
    /// allows its scope and TTL: its outcome, and its rule, sealed.
    fn rule(
        &self,
        request: &AccessRequest,
        approver: &Arc<str>,
        seals: &SealKey,
        now: Instant,
        ack: Ack,
    ) -> Result<Ruling, Error> {
        if let Some(authority) = &self.authority {
            authority.grants(self.scope)?;
        }
        // The clock is read for a rule, or to check an end time; `once` alone makes neither.
        let granted_at = if self.scope == Scope::Once && !matches!(self.ends, Some(Ends::At(_))) {
            SystemTime::UNIX_EPOCH
        } else {
            to_millis(SystemTime::now())
        };
        let ttl = allowed(request, self.scope, self.ends, granted_at)?;
        let rule = new_rule(
            seals,
            request,
            (self.effect, self.scope),
            (granted_at, ttl),
            approver,
            self.reason.clone(),
        );
        let outcome = match self.effect {
            RuleEffect::Allow => Outcome::Approved {
                approver: approver.clone(),
                scope: self.scope,
                until: rule.as_ref().map(|r| r.expires_at),
            },
            RuleEffect::Deny => Outcome::Denied {
                approver: approver.clone(),
                reason: self.reason.clone(),
            },
        };
        Ok(Ruling {
            verdict: None,
            edit: None,
            outcome,
            scope: self.scope,
            rule: rule.map(|rule| (rule, now + ttl)),
            ack,
        })
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

/// The TTL a decision of `scope` granted at `granted_at` gets, if the request allows that scope
/// and when it `ends`.
fn allowed(
    request: &AccessRequest,
    scope: Scope,
    ends: Option<Ends>,
    granted_at: SystemTime,
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
    let max = request.max_rule_ttl();
    let ttl = match ends {
        None => max,
        Some(Ends::After(ttl)) => ttl,
        // To the millisecond, as stores keep it: the rule ends exactly then.
        Some(Ends::At(end)) => match to_millis(end).duration_since(granted_at) {
            Ok(ttl) if !ttl.is_zero() => ttl,
            _ => return refuse("`until` must be in the future".into()),
        },
    };
    if ttl > max {
        return refuse(format!(
            "this request allows rules of at most {} s",
            max.as_secs()
        ));
    }
    // A policy may allow "no limit" (`Duration::MAX`); deadlines must stay representable.
    Ok(ttl.min(LONGEST_RULE))
}

/// The rule a decision of `scope` makes, sealed; none for [`Scope::Once`].
fn new_rule(
    seals: &SealKey,
    request: &AccessRequest,
    (effect, scope): (RuleEffect, Scope),
    (granted_at, ttl): (SystemTime, Duration),
    approver: &Arc<str>,
    reason: Option<Arc<str>>,
) -> Option<Rule> {
    if scope == Scope::Once {
        return None;
    }
    let mut rule = Rule {
        id: RuleId::made_at(granted_at),
        effect,
        scope,
        capability: request.capability.clone(),
        principal: (scope != Scope::Global).then(|| request.principal.clone()),
        session: if scope == Scope::Session {
            request.session.clone()
        } else {
            None
        },
        args_digest: (scope == Scope::Value).then(|| request.value_digest()),
        granted_by: approver.clone(),
        granted_at,
        expires_at: granted_at + ttl,
        request: request.id,
        reason,
        approvals: if effect == RuleEffect::Allow {
            request.quorum
        } else {
            1
        },
        seal: None,
    };
    seals.seal(&mut rule);
    Some(rule)
}
