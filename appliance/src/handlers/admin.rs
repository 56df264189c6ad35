//! Administration: storing shares, deleting keys, setting and changing PINs.

use ittc_threshold::{HolderShare, RsaPublicKey, SecretInt, SharingParams};
use ittc_wire::limits::MAX_PIN_LEN;
use ittc_wire::{KeyId, Response, ShareRecord, UserKind};

use crate::error::ApplianceError;
use crate::state::State;
use crate::storage::{PinCheck, ShareInput};

/// Stores this appliance's share of a key, after checking that it fits the key: a valid
/// public key, a valid k-of-n, the share length of that key, an additive share in range
/// (the store checks that the index is this appliance's). The share is stored as the key's pending epoch; it serves
/// clients once [`handle_commit_epoch`] makes it active.
pub fn handle_store_share(state: &State, record: ShareRecord) -> Result<Response, ApplianceError> {
    let public = RsaPublicKey::from_be_bytes(&record.modulus, &record.public_exponent)?;
    let params = SharingParams::new(usize::from(record.threshold), usize::from(record.parties))?;
    params.check_public_exponent(&public)?;
    HolderShare::new(
        &public,
        &params,
        usize::from(record.index),
        Some(SecretInt::from_be_bytes(
            record.additive.expose_secret().to_vec(),
        )),
        SecretInt::from_be_bytes(record.share.expose_secret().to_vec()),
    )
    .map_err(|e| ApplianceError::BadRequest(format!("share does not fit the key: {e}")))?;
    let mut input = ShareInput::from(record);
    // One encoding of the public key, whatever leading zeros the sender used.
    input.modulus = public.n_be();
    input.public_exponent = public.e_be();
    state.storage.store_share(input)?;
    Ok(Response::Ok)
}

/// Makes the pending epoch of a key active (an import's: the previous share, if any, is
/// erased).
pub fn handle_commit_epoch(
    state: &State,
    key_id: &KeyId,
    epoch: u64,
) -> Result<Response, ApplianceError> {
    state.storage.commit_epoch(key_id, epoch)?;
    state.keygen.forget(key_id);
    Ok(Response::Ok)
}

/// Deletes a key and its shares (an import that was never committed included).
pub fn handle_delete_key(state: &State, key_id: &KeyId) -> Result<Response, ApplianceError> {
    state.keygen.forget(key_id);
    if !state.storage.delete_key(key_id)? {
        return Err(ApplianceError::UnknownKey(key_id.to_string()));
    }
    Ok(Response::Ok)
}

fn check_policy(state: &State, pin: &[u8]) -> Result<(), ApplianceError> {
    let min = state.config.pin.min_length;
    if pin.len() < min || pin.len() > MAX_PIN_LEN {
        return Err(ApplianceError::PinInvalid(format!(
            "a PIN has {min} to {MAX_PIN_LEN} bytes"
        )));
    }
    Ok(())
}

/// Sets a PIN (and unlocks it).
pub fn handle_set_pin(
    state: &State,
    user: UserKind,
    pin: &[u8],
) -> Result<Response, ApplianceError> {
    check_policy(state, pin)?;
    state.storage.set_pin(user, pin)?;
    Ok(Response::Ok)
}

/// Changes a PIN, proven by the old one (a wrong old PIN counts as a failed login).
pub fn handle_change_pin(
    state: &State,
    user: UserKind,
    old: &[u8],
    new: &[u8],
) -> Result<Response, ApplianceError> {
    check_policy(state, new)?;
    match state.storage.check_pin(user, old)? {
        PinCheck::Correct => {
            state.storage.set_pin(user, new)?;
            Ok(Response::Ok)
        }
        PinCheck::Incorrect { remaining } => Err(ApplianceError::PinIncorrect { remaining }),
        PinCheck::Locked => Err(ApplianceError::PinLocked),
        PinCheck::NotSet => Err(ApplianceError::PinInvalid(
            "the PIN is not initialised".into(),
        )),
    }
}
