//! Running one refresh of one key, as its coordinator: every holder stores the new epoch,
//! the trial, then ready, commit (this appliance first: its commit is the decision) and
//! erase everywhere; or, on any failure before the commit, discard everywhere.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ittc_threshold::{Combiner, Partial, SharingParams, trial_input};
use ittc_wire::client::Timeouts;
use ittc_wire::{
    KeyId, KeyStatus, Participant, RefreshOutcome, RefreshSource, RefreshSpec, RefreshStage,
    RefreshStepKind, RefreshStored, Request, Resharing, Response,
};
use num_bigint::BigUint;
use tracing::{info, warn};

use super::{Run, holder, key_params, test_hooks, trial_context};
use crate::error::ApplianceError;
use crate::handlers::audit_event;
use crate::peers::{PEER_TIMEOUTS, Peer};
use crate::state::State;
use crate::storage::KeyInfo;

/// Attempts per holder for the steps after the decision (commit, erase) before they are
/// left to the holder's own recovery.
const STEP_ATTEMPTS: u32 = 3;
/// Pause between those attempts.
const STEP_RETRY: Duration = Duration::from_millis(200);

/// Who the audit log names for what this appliance does as a coordinator.
const SELF: &str = "self (refresh coordinator)";

/// A reshare's new sharing, as the admin asks for it.
#[derive(Clone, Debug)]
pub struct NewSharing {
    /// `k` of the new epoch.
    pub threshold: u8,
    /// Every holder of the new epoch, ascending, with its address.
    pub holders: Vec<Participant>,
}

/// Refreshes `key_id` now, with this appliance as the coordinator; with `reshare`, moves
/// it to that sharing instead. On failure before the commit the key keeps its epoch
/// everywhere (every holder discards what it stored), and the failure is recorded for
/// status; either way the outcome is audited.
///
/// # Errors
///
/// `Refresh` (or the store's error) with the reason; the key is unchanged then.
pub fn coordinate(
    state: &State,
    key_id: &KeyId,
    session: [u8; 16],
    reshare: Option<&NewSharing>,
) -> Result<RefreshOutcome, ApplianceError> {
    let started = Instant::now();
    let result = run(state, key_id, session, reshare, started);
    let interval = state.config.refresh.interval;
    let outcome = match &result {
        Ok(done) => {
            state.refresh.schedule.succeeded(key_id, interval);
            info!(
                key = %key_id,
                epoch = done.to_epoch,
                elapsed_ms = done.elapsed_ms,
                erased = done.erased,
                "refresh done"
            );
            "ok".to_owned()
        }
        Err(err) => {
            let reason = err.to_string();
            warn!(key = %key_id, reason = %reason, "refresh failed; the key keeps its epoch");
            state.refresh.schedule.failed(key_id, interval);
            if let Err(e) = state.storage.record_refresh_failure(key_id, &reason) {
                warn!(key = %key_id, error = %e, "refresh failure not recorded");
            }
            format!("aborted: {reason}")
        }
    };
    let what = if reshare.is_some() {
        "reshare"
    } else {
        "refresh"
    };
    audit_event(state, SELF, what, key_id, &outcome)?;
    result
}

fn run(
    state: &State,
    key_id: &KeyId,
    session: [u8; 16],
    reshare: Option<&NewSharing>,
    started: Instant,
) -> Result<RefreshOutcome, ApplianceError> {
    let me = state.config.index;
    let key = state
        .storage
        .key(key_id)?
        .ok_or_else(|| ApplianceError::UnknownKey(key_id.to_string()))?;
    let Some(from_epoch) = key.active_epoch else {
        return Err(ApplianceError::Refresh(format!(
            "key {key_id} is not committed yet"
        )));
    };
    if !key.sharing(from_epoch).holders.contains(&me) {
        return Err(ApplianceError::Refresh(format!(
            "appliance {me} holds no share of key {key_id}"
        )));
    }
    if let Some(new) = reshare
        && !new.holders.iter().any(|h| h.index == me)
    {
        return Err(ApplianceError::Refresh(format!(
            "appliance {me} cannot coordinate a reshare that leaves it out: ask one of the \
             new holders"
        )));
    }
    let (public, mut params) = key_params(&key, from_epoch)?;
    let spec = spec_for(state, &key, from_epoch, session, reshare)?;
    if let Some(r) = &spec.reshare {
        params = SharingParams::new(usize::from(r.threshold), usize::from(r.parties()))?;
    }
    let _claim = state.refresh.claim(key_id, session)?;
    let progress = state.refresh.start_run(session)?;
    test_hooks::pause("coordinator", "begin");

    // Begin, split, deal, store: every holder at once.
    let stored = match store_everywhere(state, &spec, &progress) {
        Ok(stored) => stored,
        Err(reason) => return Err(roll_back(state, &spec, reason)),
    };

    // Trial: all n partials combine, none wrong.
    progress.stage(RefreshStage::Trial);
    let to = spec.to_epoch();
    let input = trial_input(&public, &trial_context(&session, key_id, to));
    // A holder the reshare leaves out has no new share, and no trial partial.
    let partials: Vec<Partial> = stored
        .iter()
        .filter(|s| !spec.leaves(s.index))
        .map(|s| Partial {
            index: usize::from(s.index),
            value: BigUint::from_bytes_be(&s.trial),
        })
        .collect();
    let verdict = Combiner::new(&public, &params)
        .and_then(|c| c.combine_robust(&input, &partials))
        .map_err(|e| format!("the trial partials do not combine: {e}"))
        .and_then(|outcome| match outcome.faulty.as_slice() {
            [] => Ok(()),
            faulty => Err(format!(
                "the trial partials of appliances {faulty:?} are wrong: their new shares do \
                 not fit the others'"
            )),
        });
    audit_event(
        state,
        SELF,
        "refresh_trial",
        key_id,
        &verdict
            .as_ref()
            .map_or_else(|r| format!("failed: {r}"), |()| "ok".into()),
    )?;
    if let Err(reason) = verdict {
        return Err(roll_back(state, &spec, reason));
    }
    test_hooks::pause("coordinator", "trial");

    // Ready everywhere, else nothing was decided yet: roll back.
    progress.stage(RefreshStage::Ready);
    let failed = failures(step_everywhere(state, &spec, RefreshStepKind::Ready, 1));
    if !failed.is_empty() {
        return Err(roll_back(
            state,
            &spec,
            format!("marking the new epoch ready failed: {}", failed.join("; ")),
        ));
    }
    test_hooks::pause("coordinator", "ready");

    // Commit here first: from this moment the refresh is decided and only goes forward.
    progress.stage(RefreshStage::Commit);
    if let Err(err) = local_step(state, &spec, RefreshStepKind::Commit) {
        return Err(roll_back(
            state,
            &spec,
            format!("committing on the coordinator failed: {err}"),
        ));
    }
    test_hooks::pause("coordinator", "commit");
    let behind = failures(step_everywhere_but_me(
        state,
        &spec,
        RefreshStepKind::Commit,
        STEP_ATTEMPTS,
    ));
    if !behind.is_empty() {
        warn!(key = %key_id, failures = ?behind, "refresh committed; some holders will commit by themselves");
        return Ok(outcome(&spec, false, started));
    }

    // Everyone has the new epoch: erase the old one everywhere.
    progress.stage(RefreshStage::Erase);
    let mut erased = failures(step_everywhere_but_me(
        state,
        &spec,
        RefreshStepKind::Erase,
        STEP_ATTEMPTS,
    ))
    .is_empty();
    test_hooks::pause("coordinator", "erase");
    if let Err(err) = local_step(state, &spec, RefreshStepKind::Erase) {
        warn!(key = %key_id, error = %err, "erasing the old epoch here failed; recovery will retry");
        erased = false;
    }
    progress.stage(RefreshStage::Done);
    Ok(outcome(&spec, erased, started))
}

fn outcome(spec: &RefreshSpec, erased: bool, started: Instant) -> RefreshOutcome {
    RefreshOutcome {
        from_epoch: spec.from_epoch,
        to_epoch: spec.to_epoch(),
        erased,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// The least number of holders a refresh goes ahead with: `k`, and more than half of the
/// `n` holders, so that two groups that cannot reach each other never both make the next
/// epoch (their sharings would not combine with each other).
pub fn quorum(threshold: u8, parties: u8) -> usize {
    usize::from(threshold).max(usize::from(parties) / 2 + 1)
}

/// Why a holder does not take part in a refresh now.
fn not_ready(status: &KeyStatus, from_epoch: u64) -> Option<String> {
    if let Some(pending) = status.pending_epoch {
        Some(format!("has epoch {pending} pending"))
    } else if let Some(retiring) = status.retiring_epoch {
        Some(format!("still has epoch {retiring} to erase"))
    } else if status.active_epoch != Some(from_epoch) {
        Some(match status.active_epoch {
            Some(e) if e < from_epoch => format!("is behind at epoch {e}"),
            Some(e) => format!("is at epoch {e}"),
            None => "has no active epoch".to_owned(),
        })
    } else {
        None
    }
}

/// The refresh to run: every holder that answers and holds `from_epoch` takes part (at
/// least [`quorum`] of them); it starts from the additive shares when every holder of the
/// epoch's additive layer takes part, else from the shares of `k` participants. A reshare
/// adds the new holders that answer and do not hold the key yet; at least [`quorum`] of
/// the new sharing's holders must receive.
fn spec_for(
    state: &State,
    key: &KeyInfo,
    from_epoch: u64,
    session: [u8; 16],
    reshare: Option<&NewSharing>,
) -> Result<RefreshSpec, ApplianceError> {
    let me = state.config.index;
    let old = key.sharing(from_epoch);
    let mut addresses = addresses(state, &old.holders)?;
    let joining: Vec<Participant> = reshare
        .map(|r| {
            r.holders
                .iter()
                .filter(|h| !old.holders.contains(&h.index))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    addresses.extend(joining.iter().cloned());
    addresses.sort_by_key(|p| p.index);
    let statuses = crate::peers::key_statuses(state, &addresses, &key.key_id);
    let mut ready = vec![(me, old.own_additive)];
    let mut away = Vec::new();
    for (index, status) in statuses {
        let joins = joining.iter().any(|p| p.index == index);
        match status {
            Ok(Some(status)) if joins => away.push(format!(
                "appliance {index} holds the key already (epoch {:?}); it must start without it",
                status.active_epoch
            )),
            Ok(Some(status)) => match not_ready(&status, from_epoch) {
                None => ready.push((index, status.refresh.has_additive)),
                Some(why) => away.push(format!("appliance {index} {why}")),
            },
            Ok(None) if joins => ready.push((index, false)),
            Ok(None) => away.push(format!("appliance {index} does not hold the key")),
            Err(e) => away.push(e),
        }
    }
    ready.sort_unstable();
    let old_ready: Vec<(u8, bool)> = ready
        .iter()
        .copied()
        .filter(|(i, _)| old.holders.contains(i))
        .collect();
    let holders_count = u8::try_from(old.holders.len()).unwrap_or(u8::MAX);
    let needed = quorum(old.threshold, holders_count);
    if old_ready.len() < needed {
        return Err(ApplianceError::Refresh(format!(
            "{} of {} holders can take part and a refresh needs {needed}: {}",
            old_ready.len(),
            old.holders.len(),
            away.join("; ")
        )));
    }
    let resharing = match reshare {
        Some(r) => {
            let holders: Vec<u8> = r.holders.iter().map(|h| h.index).collect();
            let receiving = ready.iter().filter(|(i, _)| holders.contains(i)).count();
            let count = u8::try_from(holders.len()).unwrap_or(u8::MAX);
            let needed = quorum(r.threshold, count);
            if receiving < needed {
                return Err(ApplianceError::Refresh(format!(
                    "{receiving} of the {} new holders can take part and a reshare needs \
                     {needed}: {}",
                    holders.len(),
                    away.join("; ")
                )));
            }
            Some(Resharing {
                old_threshold: old.threshold,
                old_parties: old.parties,
                threshold: r.threshold,
                holders,
                label: key.label.clone(),
                modulus: key.modulus.clone(),
                public_exponent: key.public_exponent.clone(),
            })
        }
        None => None,
    };
    if !away.is_empty() {
        warn!(key = %key.key_id, away = ?away, "refreshing without some holders: they catch up by recovery");
    }
    let layer = old.additive_holders;
    let with_additive: Vec<u8> = old_ready.iter().filter(|r| r.1).map(|r| r.0).collect();
    let source = if !layer.is_empty() && layer.iter().all(|h| with_additive.contains(h)) {
        RefreshSource::Additive { holders: layer }
    } else {
        RefreshSource::Shares {
            set: old_ready
                .iter()
                .map(|r| r.0)
                .take(usize::from(old.threshold))
                .collect(),
        }
    };
    Ok(RefreshSpec {
        session,
        key_id: key.key_id.clone(),
        from_epoch,
        coordinator: me,
        absorber: me,
        participants: ready
            .iter()
            .filter_map(|(index, _)| addresses.iter().find(|p| p.index == *index).cloned())
            .collect(),
        source,
        reshare: resharing,
    })
}

/// Each of `holders` with the address this appliance reaches it at.
fn addresses(state: &State, holders: &[u8]) -> Result<Vec<Participant>, ApplianceError> {
    holders
        .iter()
        .map(|&index| {
            let address = if index == state.config.index {
                state.config.listen.to_string()
            } else {
                state
                    .config
                    .peers
                    .iter()
                    .find(|p| p.index == index)
                    .map(|p| p.address.clone())
                    .ok_or_else(|| {
                        ApplianceError::Refresh(format!(
                            "appliance {index} has no address in this appliance's peers"
                        ))
                    })?
            };
            Ok(Participant { index, address })
        })
        .collect()
}

/// Time limits of a coordinator's requests: a holder answers `RefreshRun` only when its
/// rounds are over.
fn timeouts(state: &State) -> Timeouts {
    Timeouts {
        connect: PEER_TIMEOUTS.connect,
        io: state.config.refresh.timeout() + Duration::from_secs(5),
    }
}

/// Asks every holder (this one in this thread's company) to take part; the first failure
/// stops the others at once. Returns every holder's answer, in index order.
fn store_everywhere(
    state: &State,
    spec: &RefreshSpec,
    progress: &Run<'_>,
) -> Result<Vec<RefreshStored>, String> {
    let me = state.config.index;
    let to = spec.to_epoch();
    let config = state.peer_config().map_err(|e| e.to_string())?;
    let timeouts = timeouts(state);
    let (sender, answers) = mpsc::channel::<(u8, Result<RefreshStored, String>)>();
    std::thread::scope(|scope| {
        for participant in &spec.participants {
            let sender = sender.clone();
            let config = config.clone();
            scope.spawn(move || {
                let index = participant.index;
                let answer = if index == me {
                    let result = holder::run(state, spec, &|s| progress.stage(s));
                    let audited = audit_event(
                        state,
                        SELF,
                        "refresh_run",
                        &spec.key_id,
                        &result
                            .as_ref()
                            .map_or_else(|e| format!("failed: {e}"), |_| "ok".into()),
                    );
                    result
                        .and_then(|stored| audited.map(|()| stored))
                        .map_err(|e| format!("appliance {me}: {}", reason(&e)))
                } else {
                    let mut peer =
                        Peer::with_timeouts(index, participant.address.clone(), timeouts);
                    match peer.ask(&config, &Request::RefreshRun(spec.clone())) {
                        Ok(Response::RefreshStored(s)) if s.index == index && s.epoch == to => {
                            Ok(s)
                        }
                        Ok(Response::Error(e)) => Err(remote_reason(index, &e)),
                        Ok(other) => Err(format!(
                            "appliance {index} answered the refresh with {}",
                            other.kind()
                        )),
                        Err(e) => Err(e),
                    }
                };
                let _ = sender.send((index, answer));
            });
        }
        drop(sender);
        let mut stored = Vec::new();
        let mut errors = Vec::new();
        for (index, answer) in answers {
            match answer {
                Ok(s) => stored.push(s),
                Err(reason) => {
                    if errors.is_empty() {
                        // Stop everyone still waiting for this run's messages.
                        stop_run(state, spec, &reason);
                    }
                    errors.push((index, reason));
                }
            }
        }
        // The first failure is the cause; the others stopped because of it.
        match errors.split_first() {
            None => {
                stored.sort_by_key(|s| s.index);
                Ok(stored)
            }
            Some(((_, cause), [])) => Err(cause.clone()),
            Some(((_, cause), others)) => {
                let mut stopped: Vec<u8> = others.iter().map(|(i, _)| *i).collect();
                stopped.sort_unstable();
                Err(format!(
                    "{cause} (and so appliances {stopped:?} stopped too)"
                ))
            }
        }
    })
}

/// Ends the run's waits everywhere: this appliance's own holder part and the others'.
fn stop_run(state: &State, spec: &RefreshSpec, reason: &str) {
    let me = state.config.index;
    state.refresh.sessions().cancel(&spec.session, reason);
    if let Ok(config) = state.peer_config() {
        let mut peers = state.peers_of(&spec.participants);
        crate::peers::abort_peers(&mut peers, &config, reason, |reason| {
            Request::RefreshAbort {
                session: spec.session,
                from: me,
                reason,
            }
        });
    }
}

/// The failure before the decision: every holder discards what it stored. Returns the
/// error to report, saying whether every holder confirmed.
fn roll_back(state: &State, spec: &RefreshSpec, reason: String) -> ApplianceError {
    stop_run(state, spec, &reason);
    let left = failures(step_everywhere(
        state,
        spec,
        RefreshStepKind::Discard,
        STEP_ATTEMPTS,
    ));
    if left.is_empty() {
        ApplianceError::Refresh(format!("{reason} (rolled back everywhere)"))
    } else {
        ApplianceError::Refresh(format!(
            "{reason} (rolled back; these holders will discard by themselves: {})",
            left.join("; ")
        ))
    }
}

/// This appliance's own step, audited.
fn local_step(
    state: &State,
    spec: &RefreshSpec,
    step: RefreshStepKind,
) -> Result<(), ApplianceError> {
    let result = holder::step(
        state,
        Some(state.config.index),
        &spec.key_id,
        &spec.session,
        spec.to_epoch(),
        step,
    );
    let kind = Request::RefreshStep {
        key_id: spec.key_id.clone(),
        session: spec.session,
        epoch: spec.to_epoch(),
        step,
    }
    .kind();
    let outcome = result
        .as_ref()
        .map_or_else(|e| e.to_wire().code.as_str().to_owned(), |()| "ok".into());
    audit_event(state, SELF, kind, &spec.key_id, &outcome)?;
    result
}

/// A step on every holder, this one included, in parallel.
fn step_everywhere(
    state: &State,
    spec: &RefreshSpec,
    step: RefreshStepKind,
    attempts: u32,
) -> Vec<(u8, Result<(), String>)> {
    let mut results = step_everywhere_but_me(state, spec, step, attempts);
    let me = state.config.index;
    results.push((
        me,
        local_step(state, spec, step).map_err(|e| format!("appliance {me}: {}", reason(&e))),
    ));
    results
}

/// A step on every other holder, in parallel, each tried up to `attempts` times.
fn step_everywhere_but_me(
    state: &State,
    spec: &RefreshSpec,
    step: RefreshStepKind,
    attempts: u32,
) -> Vec<(u8, Result<(), String>)> {
    let Ok(config) = state.peer_config() else {
        return vec![(0, Err("no peer TLS configuration".into()))];
    };
    let request = Request::RefreshStep {
        key_id: spec.key_id.clone(),
        session: spec.session,
        epoch: spec.to_epoch(),
        step,
    };
    let mut peers = state.peers_of(&spec.participants);
    std::thread::scope(|scope| {
        let handles: Vec<_> = peers
            .iter_mut()
            .map(|peer| {
                let (config, request) = (&config, &request);
                scope.spawn(move || {
                    let mut last = Ok(());
                    for attempt in 0..attempts.max(1) {
                        if attempt > 0 {
                            std::thread::sleep(STEP_RETRY);
                        }
                        last = match peer.ask(config, request) {
                            Ok(Response::Ok) => return (peer.index, Ok(())),
                            Ok(Response::Error(e)) => Err(remote_reason(peer.index, &e)),
                            Ok(other) => Err(format!(
                                "appliance {} answered with {}",
                                peer.index,
                                other.kind()
                            )),
                            Err(e) => Err(e),
                        };
                    }
                    (peer.index, last)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (0, Err("a step thread failed".into())))
            })
            .collect()
    })
}

/// An error's reason without the "refresh failed" its display starts with (the
/// coordinator's own error says that once).
fn reason(err: &ApplianceError) -> String {
    match err {
        ApplianceError::Refresh(reason) => reason.clone(),
        other => other.to_string(),
    }
}

/// A holder's refusal as a reason: its message, with the code where it says more.
fn remote_reason(index: u8, err: &ittc_wire::WireError) -> String {
    let message = err
        .message
        .strip_prefix("refresh failed: ")
        .unwrap_or(&err.message);
    match err.code {
        ittc_wire::ErrorCode::Internal => format!("appliance {index}: {message}"),
        code => format!("appliance {index} refused ({code}): {message}"),
    }
}

/// The failure messages among `results`.
fn failures(results: Vec<(u8, Result<(), String>)>) -> Vec<String> {
    results.into_iter().filter_map(|(_, r)| r.err()).collect()
}
