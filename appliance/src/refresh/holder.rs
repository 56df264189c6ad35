//! A holder's part of a refresh: its two rounds with the others, the pending epoch, the
//! trial partial; and the steps the coordinator sends afterwards.

use std::collections::BTreeMap;
use std::time::Instant;

use ittc_threshold::{HolderShare, RefreshParty, SecretInt, trial_input};
use ittc_wire::{
    KeyId, RefreshSpec, RefreshStage, RefreshStepKind, RefreshStored, Request, SecretBytes,
};
use tracing::{info, warn};

use super::{key_params, test_hooks, trial_context};
use crate::error::ApplianceError;
use crate::handlers::audit_event;
use crate::peers::{abort_peers, exchange_round};
use crate::state::State;
use crate::storage::{EpochSecret, EpochSlot, KeyInfo, RefreshOrigin, ShareInput};

/// Holder sessions running at once (one per key, and few keys refresh at the same time).
const MAX_SESSIONS: usize = 16;

/// Checks that this appliance may take part in `spec` now; returns the key.
fn check(state: &State, spec: &RefreshSpec) -> Result<KeyInfo, ApplianceError> {
    let me = state.config.index;
    let key = state
        .storage
        .key(&spec.key_id)?
        .ok_or_else(|| ApplianceError::UnknownKey(spec.key_id.to_string()))?;
    if usize::from(key.parties) != spec.participants.len()
        || usize::from(me) > spec.participants.len()
    {
        return Err(ApplianceError::BadRequest(format!(
            "the refresh names {} holders; key {} has {} and this is appliance {me}",
            spec.participants.len(),
            spec.key_id,
            key.parties
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
    Ok(key)
}

/// Takes part in the refresh `spec`: both rounds with the other holders, then the new
/// secrets stored as the pending epoch, and the trial partial. `on_stage` hears each
/// stage reached (the coordinator's progress, when it is this appliance).
///
/// # Errors
///
/// `BadRequest`, `WrongEpoch` or `Refresh` for a refresh this appliance refuses; `Refresh`
/// with the reason when the run fails (a peer's bad value, an unreachable peer, the
/// deadline). Nothing is stored then, and the other holders have been told.
pub fn run(
    state: &State,
    spec: &RefreshSpec,
    on_stage: &(dyn Fn(RefreshStage) + Sync),
) -> Result<RefreshStored, ApplianceError> {
    let key = check(state, spec)?;
    let (public, params) = key_params(&key)?;
    let me = state.config.index;
    let _claim = state.refresh.claim(&spec.key_id, spec.session)?;
    let n = u8::try_from(spec.participants.len())
        .map_err(|_| ApplianceError::BadRequest("too many participants".into()))?;
    let registration = state
        .refresh
        .sessions()
        .register(spec.session, me, n, MAX_SESSIONS)?;
    let session = &registration.session;
    let config = state.peer_config()?;
    let mut peers = state.peers_of(&spec.participants);
    let until = Instant::now() + state.config.refresh.timeout();
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

    let outcome = (|| -> Result<HolderShare, String> {
        let secret = state
            .storage
            .share_in(&spec.key_id, spec.from_epoch, EpochSlot::Active)
            .map_err(|e| e.to_string())?
            .ok_or("the active epoch's share is gone")?;
        let holder = HolderShare::new(
            &public,
            &params,
            usize::from(me),
            secret.extra_bits,
            secret.additive.clone().map(SecretInt::from_be_bytes),
            SecretInt::from_be_bytes(secret.share.clone()),
        )
        .map_err(|e| format!("this appliance's share does not fit the key: {e}"))?;
        let mut party = RefreshParty::new(&public, &params, &holder, usize::from(spec.absorber))
            .map_err(|e| e.to_string())?;
        drop(holder);
        let mut rng = rand::rng();

        stage(RefreshStage::Split);
        let mut pieces = party.split(&mut rng).map_err(|e| e.to_string())?;
        if let Some(corruption) = test_hooks::corrupt() {
            corrupt_one(&mut pieces, me, spec.absorber, corruption, 1);
        }
        let received = round(state, spec, &mut peers, &config, session, 1, pieces, until)?;
        audit("refresh_split")?;
        test_hooks::pause("holder", "split");
        let mut dealt = party
            .deal(&received, &mut rng)
            .map_err(|e| bad_value(me, &e))?;
        if let Some(corruption) = test_hooks::corrupt() {
            corrupt_one(&mut dealt, me, spec.absorber, corruption, 2);
        }

        stage(RefreshStage::Deal);
        let received = round(state, spec, &mut peers, &config, session, 2, dealt, until)?;
        audit("refresh_deal")?;
        test_hooks::pause("holder", "deal");
        party.finish(&received).map_err(|e| bad_value(me, &e))
    })();

    let new = match outcome {
        Ok(new) => new,
        Err(reason) => {
            warn!(key = %spec.key_id, reason = %reason, "refresh failed: telling the other holders");
            abort_peers(&mut peers, &config, &reason, |reason| {
                Request::RefreshAbort {
                    session: spec.session,
                    from: me,
                    reason,
                }
            });
            return Err(ApplianceError::Refresh(reason));
        }
    };

    stage(RefreshStage::Store);
    let to = spec.to_epoch();
    state.storage.store_share(ShareInput {
        key_id: spec.key_id.clone(),
        label: key.label.clone(),
        epoch: to,
        index: me,
        threshold: key.threshold,
        parties: key.parties,
        modulus: key.modulus.clone(),
        public_exponent: key.public_exponent.clone(),
        secret: EpochSecret {
            extra_bits: new.extra_bits(),
            additive: new.additive().map(|a| a.as_be_bytes().to_vec()),
            share: new.share().value().as_be_bytes().to_vec(),
        },
        refresh: Some(RefreshOrigin {
            session: spec.session,
            coordinator: spec.coordinator,
        }),
    })?;
    let input = trial_input(&public, &trial_context(&spec.session, &spec.key_id, to));
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

/// Sends `values` (position `l − 1` for holder `l`) to the other holders as round `round`
/// and returns every holder's value for this one, in index order (this one's own kept).
#[allow(clippy::too_many_arguments)]
fn round(
    state: &State,
    spec: &RefreshSpec,
    peers: &mut [crate::peers::Peer],
    config: &std::sync::Arc<rustls::ClientConfig>,
    session: &crate::peers::Session<RefreshStage>,
    round: u8,
    values: Vec<SecretInt>,
    until: Instant,
) -> Result<Vec<SecretInt>, String> {
    let me = state.config.index;
    let mut own = None;
    let mut payloads = BTreeMap::new();
    for (position, value) in values.into_iter().enumerate() {
        let to = u8::try_from(position + 1).map_err(|_| "too many holders")?;
        let bytes = SecretBytes::new(value.as_be_bytes().to_vec());
        if to == me {
            own = Some(bytes);
        } else {
            payloads.insert(to, bytes);
        }
    }
    // The inbox counts rounds from 0; the wire names them 1 and 2.
    let received = exchange_round(
        peers,
        config,
        session,
        u32::from(round) - 1,
        payloads,
        |message| Request::RefreshRound {
            session: spec.session,
            from: me,
            round,
            message,
        },
        until,
    )?;
    let mut by_index: BTreeMap<u8, SecretBytes> = received.into_iter().collect();
    by_index.insert(me, own.ok_or("no value for this appliance itself")?);
    Ok(by_index
        .into_values()
        .map(|b| SecretInt::from_be_bytes(b.expose_secret().to_vec()))
        .collect())
}

/// The test hook's bad value, for the first other holder that is not the absorber (whose
/// pieces have a wider range): in round 2 a dealt value with its last bit flipped; in
/// round 1 a piece one byte short or out of range.
fn corrupt_one(
    values: &mut [SecretInt],
    me: u8,
    absorber: u8,
    corruption: test_hooks::Corruption,
    round: u8,
) {
    use test_hooks::Corruption;
    let Some(target) =
        (1..=values.len()).find(|&i| i != usize::from(me) && i != usize::from(absorber))
    else {
        return;
    };
    let Some(value) = values.get_mut(target - 1) else {
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
    let key = state
        .storage
        .key(key_id)?
        .ok_or_else(|| ApplianceError::UnknownKey(key_id.to_string()))?;
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
