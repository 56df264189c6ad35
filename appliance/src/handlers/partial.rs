//! The partial operation: the blinded input raised to this appliance's share.

use ittc_threshold::{KeyShare, RsaPublicKey, SecretInt, SharingParams};
use ittc_wire::{KeyId, PartialResult, Response};

use crate::error::ApplianceError;
use crate::state::State;

/// `input^(s_i) mod N` for the share of `key_id` at `epoch` (active or pending).
///
/// Runs on a worker thread that the server has admitted (see `server.rs`); the share is
/// unsealed for this call only and zeroized when it returns.
pub fn handle_partial(
    state: &State,
    key_id: &KeyId,
    epoch: u64,
    input: &[u8],
) -> Result<Response, ApplianceError> {
    let key = state
        .storage
        .key(key_id)?
        .ok_or_else(|| ApplianceError::UnknownKey(key_id.to_string()))?;
    let wrong_epoch = || ApplianceError::WrongEpoch {
        key: key_id.to_string(),
        asked: epoch,
    };
    if epoch != key.active_epoch && Some(epoch) != key.pending_epoch {
        return Err(wrong_epoch());
    }
    let public = RsaPublicKey::from_be_bytes(&key.modulus, &key.public_exponent)?;
    let params = SharingParams::new(usize::from(key.threshold), usize::from(key.parties))?;
    let x = public.integer_from_be(input, "partial-operation input")?;
    let sealed_share = state
        .storage
        .share(key_id, epoch)?
        .ok_or_else(wrong_epoch)?;
    let share = KeyShare::new(
        &public,
        &params,
        usize::from(state.config.index),
        SecretInt::from_be_bytes(sealed_share.to_vec()),
    )?;
    let y = state.backend.partial(&public, &share, &x)?;
    Ok(Response::PartialResult(PartialResult {
        index: state.config.index,
        epoch,
        value: public.integer_to_be(&y),
    }))
}
