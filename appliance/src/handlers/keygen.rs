//! Key generation: the coordinator's `GenerateKey` and `KeygenProgress`, and the peers'
//! round and abort messages.

use ittc_wire::{KEYGEN_EPOCH, KeygenResult, KeygenSpec, Response, SecretBytes};

use crate::error::ApplianceError;
use crate::keygen;
use crate::state::State;
use crate::storage::{EpochSecret, ShareInput};

/// Runs this appliance's part of the generation and stores its share as the key's pending
/// epoch ([`KEYGEN_EPOCH`]); blocks until the protocol has finished or failed.
pub fn handle_generate(state: &State, spec: &KeygenSpec) -> Result<Response, ApplianceError> {
    let (output, elapsed) = keygen::generate(state, spec)?;
    let public = &output.public;
    let parties = u8::try_from(output.sharing.parties())
        .map_err(|_| ApplianceError::Internal("party count".into()))?;
    let input = ShareInput {
        key_id: spec.key_id.clone(),
        label: spec.label.clone(),
        epoch: KEYGEN_EPOCH,
        index: state.config.index,
        threshold: spec.threshold,
        parties,
        modulus: public.n_be(),
        public_exponent: public.e_be(),
        secret: EpochSecret {
            additive: output.holder.additive().map(|a| a.as_be_bytes().to_vec()),
            share: output.holder.share().value().as_be_bytes().to_vec(),
        },
        holders: spec.holders.clone(),
        additive_holders: spec.participants.iter().map(|p| p.index).collect(),
        refresh: None,
        joins: false,
    };
    state.storage.store_share(input)?;
    state.keygen.mark_generated(&spec.key_id);
    let stats = output.stats;
    Ok(Response::KeyGenerated(KeygenResult {
        modulus: public.n_be(),
        public_exponent: public.e_be(),
        epoch: KEYGEN_EPOCH,
        batches: stats.batches,
        candidates: stats.candidates,
        biprimality_tests: stats.biprimality_tests,
        rounds: stats.rounds,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    }))
}

/// The counters of a generation running here: public, never waits for the protocol.
pub fn handle_progress(state: &State, session: &[u8; 16]) -> Result<Response, ApplianceError> {
    Ok(Response::KeygenProgress(state.keygen.progress(session)?))
}

/// Queues a peer's round message.
pub fn handle_round(
    state: &State,
    session: &[u8; 16],
    from: u8,
    round: u32,
    message: SecretBytes,
) -> Result<Response, ApplianceError> {
    state.keygen.deliver(session, from, round, message)?;
    Ok(Response::Ok)
}

/// A peer gave up: stop the local party too.
pub fn handle_abort(
    state: &State,
    session: &[u8; 16],
    from: u8,
    reason: &str,
) -> Result<Response, ApplianceError> {
    state.keygen.abort(session, from, reason)?;
    Ok(Response::Ok)
}
