//! A holder's part of a refresh: its two rounds with the others, the pending epoch, the
//! trial partial; and the steps the coordinator sends afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ittc_threshold::{
    HolderShare, Plan, RefreshParty, RsaPublicKey, SecretInt, SharingParams, Source, trial_input,
};
use ittc_wire::{
    KeyId, Participant, RefreshSource, RefreshSpec, RefreshStage, RefreshStepKind, RefreshStored,
    Request, SecretBytes,
};
use tracing::{info, warn};

use super::{test_hooks, trial_context};
use crate::error::ApplianceError;
use crate::handlers::audit_event;
use crate::peers::{Peer, Session, abort_peers, exchange_round};
use crate::state::State;
use crate::storage::{EpochSecret, EpochSlot, KeyInfo, Leaving, RefreshOrigin, ShareInput};

/// Holder sessions running at once (one per key, and few keys refresh at the same time).
const MAX_SESSIONS: usize = 16;

/// Checks that this appliance may take part in `spec` now; returns the key, or `None`
/// for a new holder of a reshare that does not hold the key yet.
fn check(state: &State, spec: &RefreshSpec) -> Result<Option<KeyInfo>, ApplianceError> {
    let me = state.config.index;
    let senders = spec.source.senders();
    let Some(key) = state.storage.key(&spec.key_id)? else {
        return match &spec.reshare {
            Some(_) if spec.receivers().contains(&me) && !senders.contains(&me) => Ok(None),
            _ => Err(ApplianceError::UnknownKey(spec.key_id.to_string())),
        };
    };
    let old = key.sharing(spec.from_epoch);
    let indices = spec.indices();
    // Every participant holds the old epoch, but a reshare's new holders need not.
    let must_hold: Vec<u8> = match &spec.reshare {
        None => indices.clone(),
        Some(_) => senders.to_vec(),
    };
    if !indices.contains(&me) || !must_hold.iter().all(|i| old.holders.contains(i)) {
        return Err(ApplianceError::BadRequest(format!(
            "the refresh names holders {indices:?}; epoch {} of key {} has {:?} and this is \
             appliance {me}",
            spec.from_epoch, spec.key_id, old.holders
        )));
    }
    if let Some(reshare) = &spec.reshare
        && ((reshare.old_threshold, reshare.old_parties) != (old.threshold, old.parties)
            || reshare.modulus != key.modulus
            || reshare.public_exponent != key.public_exponent)
    {
        return Err(ApplianceError::BadRequest(format!(
            "the reshare describes key {} or its epoch {} differently from this appliance",
            spec.key_id, spec.from_epoch
        )));
    }
    if key.active_epoch != Some(spec.from_epoch) {
        return Err(ApplianceError::WrongEpoch {
            key: spec.key_id.to_string(),
            asked: spec.from_epoch,
        });
    }
    if let Some(pending) = key.pending_epoch {
        return Err(ApplianceError::Refresh(format!(
            "key {} has epoch {pending} pending: the last refresh is not finished",
            spec.key_id
        )));
    }
    if let Some(retiring) = key.retiring_epoch {
        return Err(ApplianceError::Refresh(format!(
            "key {} still has epoch {retiring} to erase: the last refresh is not finished",
            spec.key_id
        )));
    }
    if let Some(leaving) = key.leaving {
        return Err(ApplianceError::Refresh(format!(
            "key {} is being reshared to epoch {} without this appliance",
            spec.key_id, leaving.epoch
        )));
    }
    Ok(Some(key))
}

/// The old and new sharings of `spec`, from this appliance's record of the key (`None`
/// for a new holder of a reshare): `(old k, old n, old holders)` and the new ones.
type Sharings = ((u8, u8, Vec<u8>), (u8, u8, Vec<u8>));

fn sharings(spec: &RefreshSpec, key: Option<&KeyInfo>) -> Result<Sharings, ApplianceError> {
    let old = match (key, &spec.reshare) {
        (Some(key), _) => {
            let s = key.sharing(spec.from_epoch);
            (s.threshold, s.parties, s.holders)
        }
        (None, Some(r)) => (r.old_threshold, r.old_parties, Vec::new()),
        (None, None) => return Err(ApplianceError::UnknownKey(spec.key_id.to_string())),
    };
    let new = match &spec.reshare {
        Some(r) => (r.threshold, r.parties(), r.holders.clone()),
        None => old.clone(),
    };
    Ok((old, new))
}

/// The plan of `spec`, for its old and new sharings: `(k, n, holders)` of each.
///
/// # Errors
///
/// `BadRequest` for sharings out of range.
pub fn plan(spec: &RefreshSpec, (old, new): &Sharings) -> Result<Plan, ApplianceError> {
    let to_usize = |set: &[u8]| set.iter().copied().map(usize::from).collect::<Vec<_>>();
    let params = |(k, n, _): &(u8, u8, Vec<u8>)| {
        SharingParams::new(usize::from(*k), usize::from(*n))
            .map_err(|e| ApplianceError::BadRequest(format!("refresh sharing: {e}")))
    };
    Ok(Plan {
        old: params(old)?,
        new: params(new)?,
        source: match &spec.source {
            RefreshSource::Additive { holders } => Source::Additive {
                holders: to_usize(holders),
            },
            RefreshSource::Shares { set } => Source::Shares { set: to_usize(set) },
        },
        new_holders: to_usize(&new.2),
        receivers: to_usize(&spec.receivers()),
        absorber: usize::from(spec.absorber),
    })
}

/// Takes part in the refresh or reshare `spec`: the rounds with the other participants,
/// then the new secrets stored as the pending epoch, and the trial partial (a participant
/// that a reshare leaves out records that instead, and answers with no trial partial).
/// `on_stage` hears each stage reached (the coordinator's progress, when it is this
/// appliance).
///
/// # Errors
///
/// `BadRequest`, `WrongEpoch` or `Refresh` for a refresh this appliance refuses; `Refresh`
/// with the reason when the run fails (a peer's bad value, an unreachable peer, the
/// deadline). Nothing is stored then, and the other participants have been told.
pub fn run(
    state: &State,
    spec: &RefreshSpec,
    on_stage: &(dyn Fn(RefreshStage) + Sync),
) -> Result<RefreshStored, ApplianceError> {
    let key = check(state, spec)?;
    let public = match (&key, &spec.reshare) {
        (Some(key), _) => RsaPublicKey::from_be_bytes(&key.modulus, &key.public_exponent)?,
        (None, Some(r)) => RsaPublicKey::from_be_bytes(&r.modulus, &r.public_exponent)?,
        (None, None) => return Err(ApplianceError::UnknownKey(spec.key_id.to_string())),
    };
    let sharings = sharings(spec, key.as_ref())?;
    let plan = plan(spec, &sharings)?;
    plan.validate()
        .map_err(|e| ApplianceError::BadRequest(format!("refresh plan: {e}")))?;
    let old_params = plan.old;
    let me = state.config.index;
    let in_rounds = plan.participants().contains(&usize::from(me));
    let receives = plan.receivers.contains(&usize::from(me));
    let _claim = state.refresh.claim(&spec.key_id, spec.session)?;
    let registration =
        state
            .refresh
            .sessions()
            .register_among(spec.session, me, spec.indices(), MAX_SESSIONS)?;
    let session = &registration.session;
    let stage = |s: RefreshStage| {
        session.record(s);
        on_stage(s);
    };
    // Each step of the run is audited as it completes; the request itself (`refresh_run`,
    // the store) by whoever handles it.
    let who = format!("appliance-{} (refresh)", spec.coordinator);
    let audit = |step: &str| -> Result<(), String> {
        audit_event(state, &who, step, &spec.key_id, "ok").map_err(|e| e.to_string())
    };
    audit("refresh_begin").map_err(ApplianceError::Refresh)?;
    let context = trial_context(&spec.session, &spec.key_id, spec.to_epoch());
    let as_u8 = |set: &[usize]| -> Vec<u8> {
        set.iter()
            .filter_map(|&i| u8::try_from(i).ok())
            .filter(|&i| i != me)
            .collect()
    };
    let senders = as_u8(plan.senders());
    let receivers = as_u8(&plan.receivers);
    // Pieces and dealt values go to the receivers only: a sender that a reshare leaves
    // out sends its pieces and waits for nothing.
    let (pieces_from, dealt_from) = if receives {
        (senders.clone(), receivers.clone())
    } else {
        (Vec::new(), Vec::new())
    };

    let outcome = run_rounds(state, spec.session, &spec.participants, session, |rounds| {
        if !in_rounds {
            // A holder a reshare leaves out and whose values it does not need: it only
            // keeps the key from other refreshes until the reshare is over.
            return Ok(None);
        }
        let holder = match &key {
            Some(_) => {
                let secret = state
                    .storage
                    .share_in(&spec.key_id, spec.from_epoch, EpochSlot::Active)
                    .map_err(|e| e.to_string())?
                    .ok_or("the active epoch's share is gone")?;
                Some(
                    HolderShare::new(
                        &public,
                        &old_params,
                        usize::from(me),
                        secret.additive.clone().map(SecretInt::from_be_bytes),
                        SecretInt::from_be_bytes(secret.share.clone()),
                    )
                    .map_err(|e| format!("this appliance's share does not fit the key: {e}"))?,
                )
            }
            None => None,
        };
        let mut party = RefreshParty::new(&public, &plan, usize::from(me), holder.as_ref())
            .map_err(|e| e.to_string())?;
        drop(holder);
        let mut rng = rand::rng();

        if plan.from_shares() {
            stage(RefreshStage::Start);
            // Each sender draws the masks it shares with the senders above it.
            let below: Vec<u8> = if plan.senders().contains(&usize::from(me)) {
                senders.iter().copied().filter(|&i| i < me).collect()
            } else {
                Vec::new()
            };
            let masks = party.masks(&mut rng).map_err(|e| e.to_string())?;
            let masks = rounds.secret(masks, &below)?;
            // Each sender's residue, public, to every participant.
            let residue = party.residue(&masks).map_err(|e| bad_value(me, &e))?;
            let residues: Vec<(usize, Vec<u8>)> = residue
                .map(|r| {
                    plan.participants()
                        .into_iter()
                        .map(|l| (l, r.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let residues = rounds.public(residues, &senders)?;
            party.rounding(&residues).map_err(|e| bad_value(me, &e))?;
            audit("refresh_start")?;
            test_hooks::pause("holder", "start");
        }

        stage(RefreshStage::Split);
        let mut pieces = party.split(&mut rng).map_err(|e| e.to_string())?;
        if let Some(corruption) = test_hooks::corrupt() {
            corrupt_one(&mut pieces, me, spec.absorber, corruption, 1);
        }
        let received = rounds.secret(pieces, &pieces_from)?;
        audit("refresh_split")?;
        test_hooks::pause("holder", "split");
        let mut dealt = if receives {
            party
                .deal(&received, &mut rng)
                .map_err(|e| bad_value(me, &e))?
        } else {
            Vec::new()
        };
        if let Some(corruption) = test_hooks::corrupt() {
            corrupt_one(&mut dealt, me, spec.absorber, corruption, 2);
        }

        stage(RefreshStage::Deal);
        let received = rounds.secret(dealt, &dealt_from)?;
        audit("refresh_deal")?;
        test_hooks::pause("holder", "deal");
        if receives {
            party
                .finish(&received)
                .map(Some)
                .map_err(|e| bad_value(me, &e))
        } else {
            Ok(None)
        }
    });
    let new = outcome.map_err(|reason| {
        warn!(key = %spec.key_id, reason = %reason, "refresh failed: the other holders were told");
        ApplianceError::Refresh(reason)
    })?;

    stage(RefreshStage::Store);
    let to = spec.to_epoch();
    let origin = RefreshOrigin {
        session: spec.session,
        coordinator: spec.coordinator,
    };
    let Some(new) = new else {
        state.storage.mark_leaving(&spec.key_id, to, origin)?;
        info!(key = %spec.key_id, epoch = to, "reshare: this appliance leaves the key once it is committed");
        test_hooks::pause("holder", "store");
        return Ok(RefreshStored {
            index: me,
            epoch: to,
            trial: Vec::new(),
        });
    };
    let (_, (threshold, parties, holders)) = sharings;
    let (label, modulus, public_exponent) = match (&key, &spec.reshare) {
        (Some(k), _) => (
            k.label.clone(),
            k.modulus.clone(),
            k.public_exponent.clone(),
        ),
        (None, Some(r)) => (
            r.label.clone(),
            r.modulus.clone(),
            r.public_exponent.clone(),
        ),
        (None, None) => return Err(ApplianceError::UnknownKey(spec.key_id.to_string())),
    };
    state.storage.store_share(ShareInput {
        key_id: spec.key_id.clone(),
        label,
        epoch: to,
        index: me,
        threshold,
        parties,
        modulus,
        public_exponent,
        secret: EpochSecret {
            additive: new.additive().map(|a| a.as_be_bytes().to_vec()),
            share: new.share().value().as_be_bytes().to_vec(),
        },
        holders,
        additive_holders: spec.receivers(),
        refresh: Some(origin),
        joins: key.is_none(),
    })?;
    let input = trial_input(&public, &context);
    let trial = state.backend.partial(&public, new.share(), &input)?;
    info!(key = %spec.key_id, epoch = to, "refresh: new epoch stored as pending");
    test_hooks::pause("holder", "store");
    Ok(RefreshStored {
        index: me,
        epoch: to,
        trial: public.integer_to_be(&trial),
    })
}

/// A refresh error as a reason that names the appliance at fault.
fn bad_value(me: u8, err: &ittc_threshold::Error) -> String {
    match err {
        ittc_threshold::Error::RefreshMessage { from, reason } if *from != usize::from(me) => {
            format!("appliance {from} sent a bad value ({reason})")
        }
        ittc_threshold::Error::RefreshMessage { reason, .. } => {
            format!("appliance {me}: {reason}")
        }
        other => format!("appliance {me}: {other}"),
    }
}

/// The rounds of one run with the other participants, numbered from 1 in the order the
/// run has them (every participant goes through each, some with nothing to send or wait
/// for).
pub(super) struct Rounds<'a> {
    state: &'a State,
    session_id: [u8; 16],
    peers: &'a mut [Peer],
    config: &'a Arc<rustls::ClientConfig>,
    session: &'a Session<RefreshStage>,
    next: u8,
    until: Instant,
}

/// Runs `body` with the rounds of the session `session_id` among `participants`, for at
/// most `refresh.timeout_ms`; when it fails, tells the other participants
/// (`RefreshAbort`) and returns the reason.
pub(super) fn run_rounds<T>(
    state: &State,
    session_id: [u8; 16],
    participants: &[Participant],
    session: &Session<RefreshStage>,
    body: impl FnOnce(&mut Rounds<'_>) -> Result<T, String>,
) -> Result<T, String> {
    let me = state.config.index;
    let config = state.peer_config().map_err(|e| e.to_string())?;
    let mut peers = state.peers_of(participants);
    let result = body(&mut Rounds {
        state,
        session_id,
        peers: &mut peers,
        config: &config,
        session,
        next: 1,
        until: Instant::now() + state.config.refresh.timeout(),
    });
    if let Err(reason) = &result {
        abort_peers(&mut peers, &config, reason, |reason| {
            Request::RefreshAbort {
                session: session_id,
                from: me,
                reason,
            }
        });
    }
    result
}

impl Rounds<'_> {
    /// Sends `values` (by recipient; this appliance's own kept) and returns the value of
    /// each of `senders` for this one, with this one's own, by sender.
    pub(super) fn secret(
        &mut self,
        values: Vec<(usize, SecretInt)>,
        senders: &[u8],
    ) -> Result<Vec<(usize, SecretInt)>, String> {
        let values = values
            .into_iter()
            .map(|(to, v)| (to, SecretBytes::new(v.as_be_bytes().to_vec())))
            .collect();
        Ok(self
            .exchange(values, senders)?
            .into_iter()
            .map(|(from, b)| (from, SecretInt::from_be_bytes(b.expose_secret().to_vec())))
            .collect())
    }

    /// As [`Rounds::secret`], for public values.
    fn public(
        &mut self,
        values: Vec<(usize, Vec<u8>)>,
        senders: &[u8],
    ) -> Result<Vec<(usize, Vec<u8>)>, String> {
        let values = values
            .into_iter()
            .map(|(to, v)| (to, SecretBytes::new(v)))
            .collect();
        Ok(self
            .exchange(values, senders)?
            .into_iter()
            .map(|(from, b)| (from, b.expose_secret().to_vec()))
            .collect())
    }

    fn exchange(
        &mut self,
        values: Vec<(usize, SecretBytes)>,
        senders: &[u8],
    ) -> Result<Vec<(usize, SecretBytes)>, String> {
        let me = self.state.config.index;
        let round = self.next;
        self.next = self.next.saturating_add(1);
        let mut own = None;
        let mut payloads = BTreeMap::new();
        for (to, bytes) in values {
            let to = u8::try_from(to).map_err(|_| "recipient out of range")?;
            if to == me {
                own = Some(bytes);
            } else {
                payloads.insert(to, bytes);
            }
        }
        let session_id = self.session_id;
        // The inbox counts rounds from 0; the wire from 1.
        let received = exchange_round(
            self.peers,
            self.config,
            self.session,
            u32::from(round) - 1,
            payloads,
            senders,
            |message| Request::RefreshRound {
                session: session_id,
                from: me,
                round,
                message,
            },
            self.until,
        )?;
        let mut by_sender: Vec<(usize, SecretBytes)> = received
            .into_iter()
            .map(|(from, b)| (usize::from(from), b))
            .collect();
        if let Some(own) = own {
            by_sender.push((usize::from(me), own));
        }
        Ok(by_sender)
    }
}

/// The test hook's bad value, for the first other holder that is not the absorber (whose
/// pieces have a wider range): in round 2 a dealt value with its last bit flipped; in
/// round 1 a piece one byte short or out of range.
fn corrupt_one(
    values: &mut [(usize, SecretInt)],
    me: u8,
    absorber: u8,
    corruption: test_hooks::Corruption,
    round: u8,
) {
    use test_hooks::Corruption;
    let Some((_, value)) = values
        .iter_mut()
        .find(|(i, _)| *i != usize::from(me) && *i != usize::from(absorber))
    else {
        return;
    };
    let mut bytes = value.as_be_bytes().to_vec();
    match (corruption, round) {
        (Corruption::WrongValue, 2) => {
            if let Some(last) = bytes.last_mut() {
                *last ^= 1;
            }
        }
        (Corruption::ShortPiece, 1) => {
            bytes.pop();
        }
        (Corruption::PieceOutOfRange, 1) => bytes.iter_mut().for_each(|b| *b = 0xff),
        _ => return,
    }
    *value = SecretInt::from_be_bytes(bytes);
    warn!(round, ?corruption, "test hook: sending a bad value");
}

/// One step of a refresh whose new epoch this holder stored, sent by `caller` (the
/// refresh's coordinator, or this appliance's own recovery when `None`).
///
/// # Errors
///
/// `Forbidden` when `caller` is not the refresh's coordinator; the store's errors for a
/// step that does not fit the key's epochs.
pub fn step(
    state: &State,
    caller: Option<u8>,
    key_id: &KeyId,
    session: &[u8; 16],
    epoch: u64,
    step: RefreshStepKind,
) -> Result<(), ApplianceError> {
    let Some(key) = state.storage.key(key_id)? else {
        // A key a reshare has taken from this appliance, or was to give it and did not:
        // nothing is left to erase or discard.
        if matches!(step, RefreshStepKind::Discard | RefreshStepKind::Erase) {
            return Ok(());
        }
        return Err(ApplianceError::UnknownKey(key_id.to_string()));
    };
    if let Some(leaving) = key.leaving
        && leaving.epoch == epoch
        && leaving.origin.session == *session
    {
        return leaving_step(state, caller, &key, leaving, step);
    }
    match (key.refresh, step) {
        // Nothing of that refresh is stored here (a discard after a failed run, or a
        // repeated erase): nothing to do.
        (None, RefreshStepKind::Discard | RefreshStepKind::Erase) => return Ok(()),
        (Some(origin), _) if origin.session != *session => {
            if step == RefreshStepKind::Discard {
                return Ok(());
            }
            return Err(ApplianceError::Forbidden {
                role: caller.map_or("recovery".into(), |c| format!("appliance-{c}")),
                request: "a step of another refresh",
            });
        }
        (Some(origin), _) if caller.is_some_and(|c| c != origin.coordinator) => {
            return Err(ApplianceError::Forbidden {
                role: caller.map_or("recovery".into(), |c| format!("appliance-{c}")),
                request: "a refresh step (only its coordinator may send it)",
            });
        }
        (None, _) => {
            return Err(ApplianceError::WrongEpoch {
                key: key_id.to_string(),
                asked: epoch,
            });
        }
        _ => {}
    }
    match step {
        RefreshStepKind::Ready => {
            state.storage.mark_ready(key_id, epoch, session)?;
            test_hooks::pause("holder", "ready");
        }
        RefreshStepKind::Commit => {
            if key.active_epoch == Some(epoch) {
                // Committed already (a repeated commit, or recovery got there first).
                return Ok(());
            }
            state.storage.commit_epoch(key_id, epoch)?;
            info!(key = %key_id, epoch, "refresh: new epoch active");
            test_hooks::pause("holder", "commit");
        }
        RefreshStepKind::Erase => {
            state.storage.erase_retiring(key_id, epoch, Some(session))?;
            test_hooks::pause("holder", "erase");
        }
        RefreshStepKind::Discard => {
            state
                .storage
                .discard_pending(key_id, epoch, Some(session))?;
            info!(key = %key_id, epoch, "refresh: pending epoch discarded");
        }
    }
    Ok(())
}

/// A step of the reshare that leaves this appliance out: ready is nothing to do, commit
/// records the decision, erase deletes the key with every share, discard forgets the
/// reshare.
fn leaving_step(
    state: &State,
    caller: Option<u8>,
    key: &KeyInfo,
    leaving: Leaving,
    step: RefreshStepKind,
) -> Result<(), ApplianceError> {
    let key_id = &key.key_id;
    let session = &leaving.origin.session;
    if caller.is_some_and(|c| c != leaving.origin.coordinator) {
        return Err(ApplianceError::Forbidden {
            role: caller.map_or("recovery".into(), |c| format!("appliance-{c}")),
            request: "a refresh step (only its coordinator may send it)",
        });
    }
    match step {
        RefreshStepKind::Ready => test_hooks::pause("holder", "ready"),
        RefreshStepKind::Commit => {
            state
                .storage
                .commit_leaving(key_id, leaving.epoch, Some(session))?;
            info!(key = %key_id, epoch = leaving.epoch, "reshare committed without this appliance");
            test_hooks::pause("holder", "commit");
        }
        RefreshStepKind::Erase => {
            if !leaving.committed {
                return Err(ApplianceError::WrongEpoch {
                    key: key_id.to_string(),
                    asked: leaving.epoch,
                });
            }
            state.storage.delete_key(key_id)?;
            info!(key = %key_id, "reshare over: this appliance's share of the key is erased");
            test_hooks::pause("holder", "erase");
        }
        RefreshStepKind::Discard => {
            state
                .storage
                .discard_leaving(key_id, leaving.epoch, Some(session))?;
            info!(key = %key_id, epoch = leaving.epoch, "reshare discarded: this appliance keeps the key");
        }
    }
    Ok(())
}
