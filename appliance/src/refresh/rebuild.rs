//! Rebuilding this appliance's share of a key from `k` holders of the current epoch: when
//! it was away during refreshes (its epoch is behind), or it was replaced and starts with
//! an empty data directory (it has no share at all).
//!
//! The target asks `k` helpers at once ([`Request::RecoverRun`], sent by the target
//! itself: a helper answers only the appliance whose share it helps rebuild). The helpers
//! agree on pairwise masks in one round among themselves, and each answers with its masked
//! term `Δ·L_j(t)·s_j + M_j`, the key's public facts and a trial partial. The target adds
//! the terms, divides by `Δ`, checks its new share with the helpers' trial partials, and
//! installs it as its active epoch in one transaction, erasing what it had before. The
//! share has no additive part: the next refresh starts from shares if this holder is in
//! the epoch's additive layer. docs/security.md has why no message reveals a share.
//!
//! [`Request::RecoverRun`]: ittc_wire::Request::RecoverRun

use std::sync::mpsc;
use std::time::Duration;

use ittc_threshold::{
    Combiner, KeyShare, Partial, RecoveryHelper, RsaPublicKey, SecretInt, SharingParams, recover,
    trial_input,
};
use ittc_wire::client::Timeouts;
use ittc_wire::{
    KeyId, Participant, RecoverPart, RecoverSpec, RefreshStage, Request, Response, SecretBytes,
};
use num_bigint::BigUint;
use tracing::{info, warn};

use super::holder::run_rounds;
use super::{key_params, test_hooks, trial_context};
use crate::error::ApplianceError;
use crate::handlers::audit_event;
use crate::peers::{PEER_TIMEOUTS, abort_peers};
use crate::state::State;
use crate::storage::{EpochSecret, EpochSlot, ShareInput};

/// Recovery sessions a helper runs at once.
const MAX_SESSIONS: usize = 16;

/// Who the audit log names for what this appliance does as a recovery's target.
const SELF: &str = "self (share recovery)";

/// The trial context of a recovery: distinct from a refresh's by its prefix.
fn context(session: &[u8; 16], key_id: &KeyId, epoch: u64) -> Vec<u8> {
    let mut context = b"recover".to_vec();
    context.extend(trial_context(session, key_id, epoch));
    context
}

/// A helper's part, on the target's [`Request::RecoverRun`]: the mask round with the
/// other helpers, then this helper's masked term and trial partial.
///
/// # Errors
///
/// `UnknownKey`, `WrongEpoch` or `BadRequest` for a recovery this appliance cannot help
/// with; `Refresh` with the reason when the mask round fails (the other helpers are told).
pub fn help(state: &State, spec: &RecoverSpec) -> Result<RecoverPart, ApplianceError> {
    let me = state.config.index;
    let key = state
        .storage
        .key(&spec.key_id)?
        .ok_or_else(|| ApplianceError::UnknownKey(spec.key_id.to_string()))?;
    if key.active_epoch != Some(spec.epoch) {
        return Err(ApplianceError::WrongEpoch {
            key: spec.key_id.to_string(),
            asked: spec.epoch,
        });
    }
    let (public, params) = key_params(&key, spec.epoch)?;
    let sharing = key.sharing(spec.epoch);
    let helpers: Vec<usize> = spec.indices().into_iter().map(usize::from).collect();
    if !helpers.contains(&usize::from(me)) || !sharing.holders.contains(&spec.target) {
        return Err(ApplianceError::BadRequest(format!(
            "a recovery of appliance {} by {helpers:?}: this is appliance {me}, epoch {} of \
             key {} has holders {:?}",
            spec.target, spec.epoch, spec.key_id, sharing.holders
        )));
    }
    let secret = state
        .storage
        .share_in(&spec.key_id, spec.epoch, EpochSlot::Active)?
        .ok_or_else(|| ApplianceError::WrongEpoch {
            key: spec.key_id.to_string(),
            asked: spec.epoch,
        })?;
    let share = KeyShare::new_unchecked(
        usize::from(me),
        SecretInt::from_be_bytes(secret.share.clone()),
    );
    drop(secret);
    let mut helper =
        RecoveryHelper::new(&public, &params, &helpers, usize::from(spec.target), &share)
            .map_err(|e| ApplianceError::BadRequest(format!("recovery: {e}")))?;

    // The target takes part in the session only to be able to stop it.
    let mut participants = spec.indices();
    participants.push(spec.target);
    participants.sort_unstable();
    let registration =
        state
            .refresh
            .sessions()
            .register_among(spec.session, me, participants, MAX_SESSIONS)?;
    let session = &registration.session;
    let below: Vec<u8> = spec.indices().into_iter().filter(|&i| i < me).collect();
    let contribution = run_rounds(state, spec.session, &spec.helpers, session, |rounds| {
        session.record(RefreshStage::Start);
        let masks = helper.masks(&mut rand::rng()).map_err(|e| e.to_string())?;
        let received = rounds.secret(masks, &below)?;
        helper
            .contribution(&received)
            .map_err(|e| format!("appliance {me}: {e}"))
    })
    .map_err(|reason| {
        warn!(key = %spec.key_id, reason = %reason, "recovery help failed: the other helpers were told");
        ApplianceError::Refresh(reason)
    })?;
    test_hooks::pause("helper", "masks");
    let input = trial_input(&public, &context(&spec.session, &spec.key_id, spec.epoch));
    let trial = state.backend.partial(&public, &share, &input)?;
    info!(key = %spec.key_id, epoch = spec.epoch, target = spec.target, "recovery: contribution sent");
    Ok(RecoverPart {
        index: me,
        epoch: spec.epoch,
        label: key.label.clone(),
        modulus: key.modulus.clone(),
        public_exponent: key.public_exponent.clone(),
        threshold: sharing.threshold,
        parties: sharing.parties,
        additive_holders: sharing.additive_holders,
        holders: sharing.holders,
        contribution: SecretBytes::new(contribution.as_be_bytes().to_vec()),
        trial: public.integer_to_be(&trial),
    })
}

/// Time limits of the target's requests: a helper answers when its mask round is over.
fn timeouts(state: &State) -> Timeouts {
    Timeouts {
        connect: PEER_TIMEOUTS.connect,
        io: state.config.refresh.timeout() + Duration::from_secs(5),
    }
}

/// Rebuilds this appliance's share of `key_id` at `epoch` from `helpers` (`k` holders of
/// that epoch, with their addresses) and installs it; audited either way.
///
/// # Errors
///
/// `Refresh` with the reason: a helper refused or is unreachable, the parts disagree, or
/// the rebuilt share fails its trial. Nothing is stored then.
pub fn rebuild(
    state: &State,
    key_id: &KeyId,
    epoch: u64,
    helpers: Vec<Participant>,
) -> Result<(), ApplianceError> {
    let result = run(state, key_id, epoch, helpers);
    let outcome = match &result {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("failed: {e}"),
    };
    audit_event(state, SELF, "recover", key_id, &outcome)?;
    result
}

fn run(
    state: &State,
    key_id: &KeyId,
    epoch: u64,
    helpers: Vec<Participant>,
) -> Result<(), ApplianceError> {
    let me = state.config.index;
    let session: [u8; 16] = rand::random();
    let _claim = state.refresh.claim(key_id, session)?;
    let spec = RecoverSpec {
        session,
        key_id: key_id.clone(),
        epoch,
        target: me,
        helpers,
    };
    let parts = ask_helpers(state, &spec).map_err(ApplianceError::Refresh)?;
    let first = parts
        .first()
        .ok_or_else(|| ApplianceError::Refresh("no helper answered".into()))?;
    if let Some(odd) = parts.iter().find(|p| {
        (
            p.epoch,
            &p.label,
            &p.modulus,
            &p.public_exponent,
            p.threshold,
            p.parties,
            &p.holders,
        ) != (
            epoch,
            &first.label,
            &first.modulus,
            &first.public_exponent,
            first.threshold,
            first.parties,
            &first.holders,
        )
    }) {
        return Err(ApplianceError::Refresh(format!(
            "appliance {} describes the key or epoch differently from appliance {}",
            odd.index, first.index
        )));
    }
    if !first.holders.contains(&me) {
        return Err(ApplianceError::Refresh(format!(
            "epoch {epoch} of key {key_id} has holders {:?}: this appliance is not one",
            first.holders
        )));
    }
    let public = RsaPublicKey::from_be_bytes(&first.modulus, &first.public_exponent)?;
    let params = SharingParams::new(usize::from(first.threshold), usize::from(first.parties))?;
    let indices: Vec<usize> = spec.indices().into_iter().map(usize::from).collect();
    let contributions: Vec<(usize, SecretInt)> = parts
        .iter()
        .map(|p| {
            (
                usize::from(p.index),
                SecretInt::from_be_bytes(p.contribution.expose_secret().to_vec()),
            )
        })
        .collect();
    let share = recover(&public, &params, &indices, usize::from(me), &contributions).map_err(
        |e| match e {
            ittc_threshold::Error::RefreshMessage { from, reason } if from != usize::from(me) => {
                ApplianceError::Refresh(format!("appliance {from} sent a bad value ({reason})"))
            }
            other => {
                ApplianceError::Refresh(format!("the helpers' values do not give a share: {other}"))
            }
        },
    )?;
    check_trial(state, &public, &params, &spec, &parts, &share)?;
    test_hooks::pause("target", "parts");
    state.storage.install_recovered(ShareInput {
        key_id: key_id.clone(),
        label: first.label.clone(),
        epoch,
        index: me,
        threshold: first.threshold,
        parties: first.parties,
        modulus: public.n_be(),
        public_exponent: public.e_be(),
        secret: EpochSecret {
            additive: None,
            share: share.value().as_be_bytes().to_vec(),
        },
        holders: first.holders.clone(),
        additive_holders: first.additive_holders.clone(),
        refresh: None,
        joins: false,
    })?;
    info!(key = %key_id, epoch, helpers = ?spec.indices(), "share rebuilt: this appliance holds the current epoch");
    test_hooks::pause("target", "install");
    Ok(())
}

/// The rebuilt share's partial on the trial input must combine with the helpers' into a
/// valid result, and no partial may be wrong.
fn check_trial(
    state: &State,
    public: &RsaPublicKey,
    params: &SharingParams,
    spec: &RecoverSpec,
    parts: &[RecoverPart],
    share: &KeyShare,
) -> Result<(), ApplianceError> {
    let input = trial_input(public, &context(&spec.session, &spec.key_id, spec.epoch));
    let mut partials: Vec<Partial> = parts
        .iter()
        .map(|p| Partial {
            index: usize::from(p.index),
            value: BigUint::from_bytes_be(&p.trial),
        })
        .collect();
    partials.push(Partial {
        index: usize::from(state.config.index),
        value: state.backend.partial(public, share, &input)?,
    });
    let outcome = Combiner::new(public, params)
        .and_then(|c| c.combine_robust(&input, &partials))
        .map_err(|e| ApplianceError::Refresh(format!("the rebuilt share fails its trial: {e}")))?;
    if outcome.faulty.is_empty() {
        Ok(())
    } else {
        Err(ApplianceError::Refresh(format!(
            "the trial partials of appliances {:?} are wrong",
            outcome.faulty
        )))
    }
}

/// Sends the recovery to every helper at once; the first failure stops the others.
fn ask_helpers(state: &State, spec: &RecoverSpec) -> Result<Vec<RecoverPart>, String> {
    let config = state.peer_config().map_err(|e| e.to_string())?;
    let timeouts = timeouts(state);
    let (sender, answers) = mpsc::channel::<(u8, Result<RecoverPart, String>)>();
    std::thread::scope(|scope| {
        for mut peer in state.peers_of(&spec.helpers) {
            let sender = sender.clone();
            let config = config.clone();
            peer.set_timeouts(timeouts);
            scope.spawn(move || {
                let index = peer.index;
                let answer = match peer.ask(&config, &Request::RecoverRun(spec.clone())) {
                    Ok(Response::RecoverPart(part)) if part.index == index => Ok(part),
                    Ok(Response::Error(e)) => Err(format!(
                        "appliance {index} refused ({}): {}",
                        e.code, e.message
                    )),
                    Ok(other) => Err(format!(
                        "appliance {index} answered the recovery with {}",
                        other.kind()
                    )),
                    Err(e) => Err(e),
                };
                let _ = sender.send((index, answer));
            });
        }
        drop(sender);
        let mut parts = Vec::new();
        let mut first_error = None;
        for (_, answer) in answers {
            match answer {
                Ok(part) => parts.push(part),
                Err(reason) => {
                    if first_error.is_none() {
                        let mut peers = state.peers_of(&spec.helpers);
                        abort_peers(&mut peers, &config, &reason, |reason| {
                            Request::RefreshAbort {
                                session: spec.session,
                                from: state.config.index,
                                reason,
                            }
                        });
                        first_error = Some(reason);
                    }
                }
            }
        }
        match first_error {
            Some(reason) => Err(reason),
            None => {
                parts.sort_by_key(|p| p.index);
                Ok(parts)
            }
        }
    })
}
