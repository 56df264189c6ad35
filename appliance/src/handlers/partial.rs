//! The partial operation: the blinded input raised to this appliance's share, in two steps
//! so that its audit entry can go to disk while the share is applied (see
//! `handlers::dispatch`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ittc_threshold::{Bounds, KeyShare, RsaPublicKey, SecretInt, SharingParams};
use ittc_wire::identity::Role;
use ittc_wire::{KeyId, PartialResult, Response};
use num_bigint::BigUint;

use crate::error::ApplianceError;
use crate::state::State;
use crate::storage::{EpochSlot, KeyInfo};

/// Who asks for a partial operation, which decides the epoch it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A client logged in as the user: the key's active epoch (during a refresh also the
    /// retiring one and a verified pending one), or the pending epoch of a key generated
    /// here and never committed (the trial of a key it has just generated).
    User,
    /// The admin (the dealer's trial operation before a commit): the pending epoch of a
    /// key never committed, only. The admin certificate is the authority; no PIN is
    /// involved.
    Admin,
}

/// A partial operation that has passed every check, with its share unsealed (and zeroized
/// when this is dropped): what is left is to apply the share, [`Prepared::compute`].
pub struct Prepared {
    key: Arc<KeyMath>,
    share: KeyShare,
    input: BigUint,
    epoch: u64,
}

/// What a key's public values give, computed once: the public key with its Montgomery
/// parameters, and the share length.
pub struct KeyMath {
    public: RsaPublicKey,
    share_len: usize,
}

/// The `KeyMath` of the keys in use, by their public values (modulus, exponent, k and n):
/// a partial operation then does no big-integer set-up of its own. Bounded: it is
/// emptied when it reaches [`KeyMathCache::MAX`] entries.
#[derive(Default)]
pub struct KeyMathCache {
    entries: Mutex<HashMap<KeyMathId, Arc<KeyMath>>>,
}

/// What a `KeyMath` depends on: modulus, public exponent, k and n.
type KeyMathId = (Vec<u8>, Vec<u8>, u8, u8);

impl KeyMathCache {
    /// Most entries kept.
    pub const MAX: usize = 256;

    /// The math of `key`'s `epoch` (each epoch has its own sharing).
    fn get(&self, key: &KeyInfo, epoch: u64) -> Result<Arc<KeyMath>, ApplianceError> {
        let (threshold, parties) = key.sharing_params(epoch);
        let id = (
            key.modulus.clone(),
            key.public_exponent.clone(),
            threshold,
            parties,
        );
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(math) = entries.get(&id) {
            return Ok(math.clone());
        }
        let public = RsaPublicKey::from_be_bytes(&key.modulus, &key.public_exponent)?;
        let params = SharingParams::new(usize::from(id.2), usize::from(id.3))?;
        let share_len = Bounds::new(&public, &params)?.share_len();
        let math = Arc::new(KeyMath { public, share_len });
        if entries.len() >= Self::MAX {
            entries.clear();
        }
        entries.insert(id, math.clone());
        Ok(math)
    }
}

impl core::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Prepared")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Checks a partial operation on the share of `key_id` at `epoch` (the active epoch for a
/// [`Caller::User`], the pending one for a [`Caller::Admin`]) and unseals the share.
pub fn prepare(
    state: &State,
    caller: Caller,
    key_id: &KeyId,
    epoch: u64,
    input: &[u8],
) -> Result<Prepared, ApplianceError> {
    let key = state
        .storage
        .key(key_id)?
        .ok_or_else(|| ApplianceError::UnknownKey(key_id.to_string()))?;
    let wrong_epoch = || ApplianceError::WrongEpoch {
        key: key_id.to_string(),
        asked: epoch,
    };
    let serving = key.active_epoch == Some(epoch)
        || key.retiring_epoch == Some(epoch)
        || (key.pending_ready && key.pending_epoch == Some(epoch));
    let slot = match caller {
        // The active epoch, and during a refresh the retiring one and the verified pending
        // one: every holder answers one epoch that all answer, whatever step it is at.
        Caller::User if serving => EpochSlot::Serving,
        Caller::User
            if key.active_epoch.is_none()
                && key.pending_epoch == Some(epoch)
                && state.keygen.is_generated(key_id) =>
        {
            EpochSlot::Pending
        }
        // The dealer's trial on a key that has never been committed. A refresh's pending
        // epoch is tried by the holders themselves, on an input nobody chooses.
        Caller::Admin if key.active_epoch.is_none() && key.pending_epoch == Some(epoch) => {
            EpochSlot::Pending
        }
        // A committed share serves clients only: the admin holds no PIN.
        Caller::Admin if serving || key.pending_epoch == Some(epoch) => {
            return Err(ApplianceError::Forbidden {
                role: Role::Admin.to_string(),
                request: "partial on an epoch of a committed key",
            });
        }
        Caller::User | Caller::Admin => return Err(wrong_epoch()),
    };
    // Read in the slot checked above: a commit or an erasure in between gives WrongEpoch,
    // never the share of an epoch that has changed roles.
    let secret = state
        .storage
        .share_in(key_id, epoch, slot)?
        .ok_or_else(wrong_epoch)?;
    let math = state.key_math.get(&key, epoch)?;
    let input = math
        .public
        .integer_from_be(input, "partial-operation input")?;
    if secret.share.len() != math.share_len {
        return Err(ittc_threshold::Error::OutOfRange("share length").into());
    }
    let share = KeyShare::new_unchecked(
        usize::from(state.config.index),
        SecretInt::from_be_bytes(secret.share.clone()),
    );
    Ok(Prepared {
        key: math,
        share,
        input,
        epoch,
    })
}

impl Prepared {
    /// The partial `input^(s_i + i·2^L) mod N` ([`ittc_threshold::partial_exponent`]),
    /// constant time in the share.
    ///
    /// Runs on a runtime worker that the server has admitted (see `server.rs`).
    pub fn compute(self, state: &State) -> Result<Response, ApplianceError> {
        let started = std::time::Instant::now();
        let public = &self.key.public;
        let y = state.backend.partial(public, &self.share, &self.input)?;
        tracing::debug!(
            exponentiation_ms = started.elapsed().as_secs_f64() * 1e3,
            "partial computed"
        );
        Ok(Response::PartialResult(PartialResult {
            index: state.config.index,
            epoch: self.epoch,
            value: public.integer_to_be(&y),
        }))
    }
}
