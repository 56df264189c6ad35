//! Proactive refresh: the admin's `RefreshKey` and `RefreshProgress`, and what the
//! appliances send each other ([`crate::refresh`] does the work).

use ittc_wire::{KeyId, RecoverSpec, RefreshSpec, RefreshStepKind, Response, SecretBytes};

use crate::error::ApplianceError;
use crate::refresh::{coordinator, holder, rebuild};
use crate::state::State;

/// Refreshes a key now, with this appliance as the coordinator; blocks until it is over.
pub fn handle_refresh_key(
    state: &State,
    key_id: &KeyId,
    session: [u8; 16],
) -> Result<Response, ApplianceError> {
    Ok(Response::Refreshed(coordinator::coordinate(
        state, key_id, session, None,
    )?))
}

/// Moves a key to a new sharing now, with this appliance as the coordinator; blocks until
/// it is over.
pub fn handle_reshare_key(
    state: &State,
    key_id: &KeyId,
    session: [u8; 16],
    reshare: &coordinator::NewSharing,
) -> Result<Response, ApplianceError> {
    Ok(Response::Refreshed(coordinator::coordinate(
        state,
        key_id,
        session,
        Some(reshare),
    )?))
}

/// How far a refresh coordinated here has got.
pub fn handle_progress(state: &State, session: &[u8; 16]) -> Result<Response, ApplianceError> {
    Ok(Response::RefreshProgress(state.refresh.progress(session)?))
}

/// Takes part in a refresh: both rounds, then the pending epoch and the trial partial.
pub fn handle_run(state: &State, spec: &RefreshSpec) -> Result<Response, ApplianceError> {
    Ok(Response::RefreshStored(holder::run(state, spec, &|_| {})?))
}

/// Helps rebuild the requester's share: the mask round, then this helper's part.
pub fn handle_recover(state: &State, spec: &RecoverSpec) -> Result<Response, ApplianceError> {
    Ok(Response::RecoverPart(rebuild::help(state, spec)?))
}

/// A step of a refresh from its coordinator.
pub fn handle_step(
    state: &State,
    caller: u8,
    key_id: &KeyId,
    session: &[u8; 16],
    epoch: u64,
    step: RefreshStepKind,
) -> Result<Response, ApplianceError> {
    holder::step(state, Some(caller), key_id, session, epoch, step)?;
    Ok(Response::Ok)
}

/// Queues a peer's round message.
pub fn handle_round(
    state: &State,
    session: &[u8; 16],
    from: u8,
    round: u8,
    message: SecretBytes,
) -> Result<Response, ApplianceError> {
    if !(1..=4).contains(&round) {
        return Err(ApplianceError::BadRequest(format!(
            "a refresh or recovery has rounds 1 to 4, not {round}"
        )));
    }
    state
        .refresh
        .sessions()
        .deliver(session, from, u32::from(round) - 1, message)?;
    Ok(Response::Ok)
}

/// A peer gave up on a refresh: stop the local part too.
pub fn handle_abort(
    state: &State,
    session: &[u8; 16],
    from: u8,
    reason: &str,
) -> Result<Response, ApplianceError> {
    state.refresh.sessions().abort(session, from, reason)?;
    Ok(Response::Ok)
}
