//! Keys and their sealed shares, one per epoch: the active epoch, which answers clients; a
//! pending one, stored by an import or a refresh and not yet committed; and, after a
//! refresh's commit, the retiring one, which still answers clients until the refresh
//! erases it.
//!
//! A key's life: [`Storage::store_share`] of a new key stores its share as the pending
//! epoch, with no active epoch; [`Storage::commit_epoch`] makes it active. A refresh
//! stores the next epoch as pending ([`ShareInput::refresh`] names its session and
//! coordinator), marks it ready once its trial verified ([`Storage::mark_ready`]), commits
//! it (the old epoch retires) and erases the retiring epoch ([`Storage::erase_retiring`]);
//! a refresh that fails before its commit discards the pending epoch
//! ([`Storage::discard_pending`]). [`Storage::delete_key`] removes a key with every share
//! (the rollback of an import that is not committed).
//!
//! Each epoch's secrets (its share, its additive share and its form) are sealed under that
//! epoch's own key (`epoch_keys.rs`), which erasing the epoch destroys.

use core::fmt;

use bincode::{Decode, Encode};
use ittc_wire::limits::{MAX_ERROR_MESSAGE_LEN, MAX_INTEGER_LEN, MAX_LABEL_LEN};
use ittc_wire::{KeyId, KeyStatus, RefreshFailure, RefreshStatus, ShareRecord};
use sled::Transactional;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::{SledResultExt, TxError, abort};
use super::seal::{Sealed, share_aad};
use super::{Storage, StorageError, codec};

/// The refresh an epoch comes from: its session and coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RefreshOrigin {
    /// The refresh's session id.
    pub session: [u8; 16],
    /// The appliance that coordinates it (and decides its commit).
    pub coordinator: u8,
}

/// The public facts of one epoch's sharing on this appliance: its threshold and holders
/// (a reshare changes them from one epoch to the next) and its additive layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct EpochSharing {
    /// The epoch.
    pub epoch: u64,
    /// How many partials combine (`k`).
    pub threshold: u8,
    /// The highest holder's index (`n`; `Δ = n!`).
    pub parties: u8,
    /// Every holder of the epoch, ascending.
    pub holders: Vec<u8>,
    /// The holders whose additive shares of the epoch sum to the key's secret, ascending;
    /// empty when there is no such set.
    pub additive_holders: Vec<u8>,
    /// Whether this appliance keeps an additive share of the epoch.
    pub own_additive: bool,
}

/// A reshare that leaves this appliance out of the key's next epoch: it took part (it sent
/// what it was asked to) and keeps its share of the current epoch until the reshare is
/// over everywhere, then erases the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Leaving {
    /// The epoch the reshare makes.
    pub epoch: u64,
    /// The reshare's session and coordinator.
    pub origin: RefreshOrigin,
    /// Whether its coordinator committed it (this appliance only waits to erase then).
    pub committed: bool,
}

/// A share to store, with its key's public part (what the provisioning CLI, a key
/// generation or a refresh hands over). `Debug` omits the secrets.
#[derive(Clone)]
pub struct ShareInput {
    /// The key.
    pub key_id: KeyId,
    /// The key's label (`CKA_LABEL`), at most [`MAX_LABEL_LEN`] bytes.
    pub label: String,
    /// The share's epoch.
    pub epoch: u64,
    /// The appliance the share is for; must be this appliance's index.
    pub index: u8,
    /// How many partials combine (`k`), in `1..=parties`.
    pub threshold: u8,
    /// How many appliances hold a share (`n`).
    pub parties: u8,
    /// The modulus `N`, big-endian, 1 to [`MAX_INTEGER_LEN`] bytes.
    pub modulus: Vec<u8>,
    /// The public exponent `e`, big-endian, 1 to [`MAX_INTEGER_LEN`] bytes.
    pub public_exponent: Vec<u8>,
    /// The epoch's secrets.
    pub secret: EpochSecret,
    /// Every holder of this epoch's sharing, ascending (`1..=parties` unless a reshare
    /// left an index out).
    pub holders: Vec<u8>,
    /// The holders whose additive shares of this epoch sum to the key's secret, ascending
    /// (every holder for an import or a generation, the refresh's receivers after a
    /// refresh); empty for a key without an additive layer.
    pub additive_holders: Vec<u8>,
    /// The refresh this epoch comes from; `None` for an import or a generation.
    pub refresh: Option<RefreshOrigin>,
    /// Whether a reshare gives this appliance its first share of the key: the key record is
    /// made with the pending epoch.
    pub joins: bool,
}

impl From<ShareRecord> for ShareInput {
    fn from(record: ShareRecord) -> Self {
        Self {
            secret: EpochSecret {
                additive: Some(record.additive.expose_secret().to_vec()),
                share: record.share.expose_secret().to_vec(),
            },
            additive_holders: (1..=record.parties).collect(),
            holders: (1..=record.parties).collect(),
            joins: false,
            key_id: record.key_id,
            label: record.label,
            epoch: record.epoch,
            index: record.index,
            threshold: record.threshold,
            parties: record.parties,
            modulus: record.modulus,
            public_exponent: record.public_exponent,
            refresh: None,
        }
    }
}

impl ShareInput {
    /// The public facts of the epoch's sharing on this appliance.
    pub(super) fn sharing(&self) -> EpochSharing {
        EpochSharing {
            epoch: self.epoch,
            threshold: self.threshold,
            parties: self.parties,
            holders: self.holders.clone(),
            additive_holders: self.additive_holders.clone(),
            own_additive: self.secret.additive.is_some(),
        }
    }
}

impl fmt::Debug for ShareInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareInput")
            .field("key_id", &self.key_id)
            .field("label", &self.label)
            .field("epoch", &self.epoch)
            .field("index", &self.index)
            .field("threshold", &self.threshold)
            .field("parties", &self.parties)
            .field("secret", &self.secret)
            .field("holders", &self.holders)
            .field("additive_holders", &self.additive_holders)
            .field("refresh", &self.refresh)
            .field("joins", &self.joins)
            .finish_non_exhaustive()
    }
}

/// One epoch's secrets as this appliance keeps them: the share the partial operation
/// uses, and the additive share a refresh re-splits (none for keys stored by older
/// releases, or for a share rebuilt by recovery). Zeroized on drop; `Debug` prints lengths
/// only.
#[derive(Clone, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct EpochSecret {
    /// The additive share, two's complement; `None` when this holder has none.
    pub additive: Option<Vec<u8>>,
    /// The share, big-endian.
    pub share: Vec<u8>,
}

impl fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochSecret")
            .field(
                "additive",
                &self
                    .additive
                    .as_ref()
                    .map(|a| format!("[redacted; {} bytes]", a.len())),
            )
            .field(
                "share",
                &format_args!("[redacted; {} bytes]", self.share.len()),
            )
            .finish()
    }
}

/// A key's public part, epochs and refresh record, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key.
    pub key_id: KeyId,
    /// Its label.
    pub label: String,
    /// The modulus `N`, big-endian.
    pub modulus: Vec<u8>,
    /// The public exponent `e`, big-endian.
    pub public_exponent: Vec<u8>,
    /// How many partials combine (`k`) in the active epoch (the pending one before the
    /// first commit); [`KeyInfo::sharing`] has each epoch's.
    pub threshold: u8,
    /// The highest holder's index (`n`) in that epoch.
    pub parties: u8,
    /// The epoch whose share answers clients' partial requests; `None` until the first
    /// commit.
    pub active_epoch: Option<u64>,
    /// An epoch stored (by an import or a refresh) and not yet committed, if any.
    pub pending_epoch: Option<u64>,
    /// Whether the pending epoch passed its refresh's trial (it then answers clients).
    pub pending_ready: bool,
    /// The epoch a refresh's commit replaced, until the refresh erases it.
    pub retiring_epoch: Option<u64>,
    /// The refresh the pending or retiring epoch comes from.
    pub refresh: Option<RefreshOrigin>,
    /// When the active epoch became active here (Unix ms).
    pub active_since_unix_ms: Option<u64>,
    /// When a refresh last made an epoch active here (Unix ms).
    pub last_refresh_unix_ms: Option<u64>,
    /// The last refresh that failed here since the last one that succeeded.
    pub last_failure: Option<(u64, String)>,
    /// The sharings of the stored epochs.
    pub sharings: Vec<EpochSharing>,
    /// A reshare that leaves this appliance out, if one is under way.
    pub leaving: Option<Leaving>,
}

impl KeyInfo {
    /// The sharing of `epoch`: as recorded with it, else the key's threshold among
    /// `1..=parties` with no additive layer.
    pub fn sharing(&self, epoch: u64) -> EpochSharing {
        self.sharings
            .iter()
            .find(|l| l.epoch == epoch)
            .cloned()
            .unwrap_or_else(|| EpochSharing {
                epoch,
                threshold: self.threshold,
                parties: self.parties,
                holders: (1..=self.parties).collect(),
                ..EpochSharing::default()
            })
    }

    /// `(k, n)` of `epoch`, as [`KeyInfo::sharing`] has them, without copying the holder
    /// lists (the partial operation asks for them every time).
    pub fn sharing_params(&self, epoch: u64) -> (u8, u8) {
        self.sharings
            .iter()
            .find(|l| l.epoch == epoch)
            .map_or((self.threshold, self.parties), |s| (s.threshold, s.parties))
    }

    /// The epoch whose sharing the key shows: the active one, else the pending one.
    pub fn current_epoch(&self) -> Option<u64> {
        self.active_epoch.or(self.pending_epoch)
    }

    /// The key's entry in a status response. The schedule (`next_due_unix_ms`) and the
    /// running session are the refresh runner's to fill in.
    pub fn status(&self) -> KeyStatus {
        let sharing = self.current_epoch().map(|e| self.sharing(e));
        let own = sharing.as_ref().filter(|_| self.active_epoch.is_some());
        KeyStatus {
            key_id: self.key_id.clone(),
            label: self.label.clone(),
            active_epoch: self.active_epoch,
            pending_epoch: self.pending_epoch,
            pending_ready: self.pending_ready,
            retiring_epoch: self.retiring_epoch,
            threshold: sharing.as_ref().map_or(self.threshold, |s| s.threshold),
            parties: sharing.as_ref().map_or(self.parties, |s| s.parties),
            holders: sharing
                .as_ref()
                .map_or_else(|| (1..=self.parties).collect(), |s| s.holders.clone()),
            refresh: RefreshStatus {
                last_refresh_unix_ms: self.last_refresh_unix_ms,
                next_due_unix_ms: None,
                last_failure: self.last_failure.as_ref().map(|(time_unix_ms, reason)| {
                    RefreshFailure {
                        time_unix_ms: *time_unix_ms,
                        reason: reason.clone(),
                    }
                }),
                running: None,
                coordinator: self.refresh.map(|r| r.coordinator),
                additive_holders: own.map(|s| s.additive_holders.clone()).unwrap_or_default(),
                has_additive: own.is_some_and(|s| s.own_additive),
            },
        }
    }
}

/// The record in the `keys` tree.
#[derive(Clone, Encode, Decode)]
pub(super) struct StoredKey {
    pub(super) key_id: KeyId,
    pub(super) label: String,
    pub(super) modulus: Vec<u8>,
    pub(super) public_exponent: Vec<u8>,
    pub(super) threshold: u8,
    pub(super) parties: u8,
    pub(super) active_epoch: Option<u64>,
    pub(super) pending_epoch: Option<u64>,
    pub(super) pending_ready: bool,
    pub(super) retiring_epoch: Option<u64>,
    pub(super) refresh: Option<RefreshOrigin>,
    pub(super) active_since_unix_ms: Option<u64>,
    pub(super) last_refresh_unix_ms: Option<u64>,
    pub(super) last_failure: Option<(u64, String)>,
    pub(super) sharings: Vec<EpochSharing>,
    pub(super) leaving: Option<Leaving>,
}

impl From<StoredKey> for KeyInfo {
    fn from(k: StoredKey) -> Self {
        Self {
            key_id: k.key_id,
            label: k.label,
            modulus: k.modulus,
            public_exponent: k.public_exponent,
            threshold: k.threshold,
            parties: k.parties,
            active_epoch: k.active_epoch,
            pending_epoch: k.pending_epoch,
            pending_ready: k.pending_ready,
            retiring_epoch: k.retiring_epoch,
            refresh: k.refresh,
            active_since_unix_ms: k.active_since_unix_ms,
            last_refresh_unix_ms: k.last_refresh_unix_ms,
            last_failure: k.last_failure,
            sharings: k.sharings,
            leaving: k.leaving,
        }
    }
}

impl StoredKey {
    /// The record of a new key for `input`, with no epoch yet.
    pub(super) fn new(input: &ShareInput) -> Self {
        Self::empty(
            input.key_id.clone(),
            input.label.clone(),
            input.modulus.clone(),
            input.public_exponent.clone(),
            (input.threshold, input.parties),
        )
    }

    /// The record of a key with these public parts (`k`, `n`), with no epoch yet.
    pub(super) fn empty(
        key_id: KeyId,
        label: String,
        modulus: Vec<u8>,
        public_exponent: Vec<u8>,
        (threshold, parties): (u8, u8),
    ) -> Self {
        Self {
            key_id,
            label,
            modulus,
            public_exponent,
            threshold,
            parties,
            active_epoch: None,
            pending_epoch: None,
            pending_ready: false,
            retiring_epoch: None,
            refresh: None,
            active_since_unix_ms: None,
            last_refresh_unix_ms: None,
            last_failure: None,
            sharings: Vec::new(),
            leaving: None,
        }
    }

    /// Fails with [`StorageError::Conflict`] naming the first public field that differs;
    /// the sharing (threshold, parties) only for an input that keeps it (an import or a
    /// generation: a refresh, a reshare or a rebuild carries its epoch's own).
    pub(super) fn check_same_key(&self, input: &ShareInput) -> Result<(), StorageError> {
        let same_sharing = input.refresh.is_none() && !input.joins;
        let field = if self.modulus != input.modulus {
            "modulus"
        } else if self.public_exponent != input.public_exponent {
            "public exponent"
        } else if same_sharing && self.threshold != input.threshold {
            "threshold"
        } else if same_sharing && self.parties != input.parties {
            "parties"
        } else if self.label != input.label {
            "label"
        } else {
            return Ok(());
        };
        Err(StorageError::Conflict {
            key_id: input.key_id.clone(),
            field,
        })
    }

    /// Records `sharing` for its epoch, dropping those of epochs no longer stored.
    pub(super) fn set_sharing(&mut self, sharing: EpochSharing) {
        let stored: Vec<u64> = self.epochs().collect();
        self.sharings
            .retain(|l| l.epoch != sharing.epoch && stored.contains(&l.epoch));
        self.sharings.push(sharing);
        self.sharings.sort_by_key(|l| l.epoch);
    }

    /// The recorded sharing of `epoch`, if any.
    pub(super) fn sharing_of(&self, epoch: u64) -> Option<&EpochSharing> {
        self.sharings.iter().find(|s| s.epoch == epoch)
    }

    /// The epochs whose shares are stored.
    pub(super) fn epochs(&self) -> impl Iterator<Item = u64> + use<> {
        self.active_epoch
            .into_iter()
            .chain(self.pending_epoch)
            .chain(self.retiring_epoch)
    }

    /// Whether `epoch` is stored in `slot`.
    fn holds(&self, epoch: u64, slot: EpochSlot) -> bool {
        let active = self.active_epoch == Some(epoch);
        let pending = self.pending_epoch == Some(epoch);
        let retiring = self.retiring_epoch == Some(epoch);
        match slot {
            EpochSlot::Active => active,
            EpochSlot::Pending => pending,
            EpochSlot::Retiring => retiring,
            EpochSlot::Serving => active || retiring || (pending && self.pending_ready),
            EpochSlot::Any => active || pending || retiring,
        }
    }

    pub(super) fn wrong_epoch(&self, epoch: u64) -> StorageError {
        StorageError::WrongEpoch {
            key_id: self.key_id.clone(),
            epoch,
            active: self.active_epoch,
            pending: self.pending_epoch,
        }
    }
}

/// Which of a key's epochs a share is looked up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochSlot {
    /// The active epoch only.
    Active,
    /// The pending epoch only.
    Pending,
    /// The retiring epoch only.
    Retiring,
    /// An epoch that answers clients: the active one, the retiring one, or a pending one
    /// that passed its refresh's trial.
    Serving,
    /// Any stored epoch.
    Any,
}

/// The record in the `shares` tree: the tag of the epoch key the share is sealed under,
/// and the sealed [`EpochSecret`].
#[derive(Encode, Decode)]
pub(super) struct StoredShare {
    pub(super) tag: u64,
    pub(super) sealed: Sealed,
}

impl StoredShare {
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        codec::decode(bytes, "sealed share")
    }
}

/// The key of a share in the `shares` tree: the key id's length, the key id, the epoch
/// (big-endian), so one key's shares are contiguous and sorted by epoch.
pub(super) fn share_key(key_id: &KeyId, epoch: u64) -> Vec<u8> {
    let id = key_id.as_bytes();
    let mut key = Vec::with_capacity(1 + id.len() + 8);
    key.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(id);
    key.extend_from_slice(&epoch.to_be_bytes());
    key
}

/// Checks the sizes and the sharing parameters of a share to store.
fn validate(input: &ShareInput) -> Result<(), StorageError> {
    let check = |ok: bool, what: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(StorageError::Invalid(what))
        }
    };
    check(input.label.len() <= MAX_LABEL_LEN, "key label too long")?;
    check(
        input.threshold >= 1 && input.threshold <= input.parties,
        "threshold must be in 1..=parties",
    )?;
    check(input.index <= input.parties, "index must be in 1..=parties")?;
    for (value, what) in [
        (&input.modulus, "modulus must be 1 to 4096 bytes"),
        (
            &input.public_exponent,
            "public exponent must be 1 to 4096 bytes",
        ),
        (&input.secret.share, "share must be 1 to 4096 bytes"),
    ] {
        check(!value.is_empty() && value.len() <= MAX_INTEGER_LEN, what)?;
    }
    check(
        input.additive_holders.windows(2).all(|w| w[0] < w[1])
            && input
                .additive_holders
                .iter()
                .all(|&h| (1..=input.parties).contains(&h)),
        "additive holders must be ascending indices in 1..=parties",
    )?;
    check(
        input.holders.windows(2).all(|w| w[0] < w[1])
            && input.holders.last() == Some(&input.parties)
            && input.holders.contains(&input.index)
            && input.holders.len() >= usize::from(input.threshold),
        "holders must be ascending, name this appliance, end at parties, and be k or more",
    )?;
    if let Some(additive) = &input.secret.additive {
        check(
            !additive.is_empty() && additive.len() <= MAX_INTEGER_LEN,
            "additive share must be 1 to 4096 bytes",
        )?;
    }
    Ok(())
}

impl Storage {
    /// Seals `secret` under a new key of its own for `(key_id, epoch)`; returns the
    /// record to store and the key's tag.
    pub(super) fn seal_epoch(
        &self,
        key_id: &KeyId,
        epoch: u64,
        secret: &EpochSecret,
    ) -> Result<(Vec<u8>, u64), StorageError> {
        let plain = Zeroizing::new(codec::encode(secret)?);
        let (tag, epoch_key) =
            self.inner
                .epoch_keys
                .create(&self.inner.sealing_key, key_id, epoch)?;
        let aad = share_aad(self.inner.appliance_index, key_id, epoch);
        let sealed = epoch_key.seal(&plain, &aad)?;
        Ok((codec::encode(&StoredShare { tag, sealed })?, tag))
    }

    /// Checks a share to store (this appliance's index, sizes, sharing) and seals its
    /// secrets under a new epoch key; returns the record to store and the key's tag.
    pub(super) fn seal_input(&self, input: &ShareInput) -> Result<(Vec<u8>, u64), StorageError> {
        let me = self.inner.appliance_index;
        if input.index != me {
            return Err(StorageError::WrongIndex {
                expected: me,
                got: input.index,
            });
        }
        validate(input)?;
        self.seal_epoch(&input.key_id, input.epoch, &input.secret)
    }

    /// The tag of the epoch key `(key_id, epoch)`'s share is sealed under, if stored.
    pub(super) fn share_tag(
        &self,
        key_id: &KeyId,
        epoch: u64,
    ) -> Result<Option<u64>, StorageError> {
        self.inner
            .shares
            .get(share_key(key_id, epoch))
            .db()?
            .map(|bytes| StoredShare::decode(&bytes).map(|s| s.tag))
            .transpose()
    }

    /// Stores this appliance's share of a key for one epoch, as the key's pending epoch.
    ///
    /// A new key gets the share as its pending epoch and no active epoch: it answers no
    /// client until [`Storage::commit_epoch`]. For an existing key the public part
    /// (modulus, public exponent, threshold, parties and label) must match, and the epoch
    /// decides: a newer epoch than the active one is stored as the pending epoch; the
    /// active or pending epoch again is [`StorageError::AlreadyExists`]; an older one is
    /// [`StorageError::WrongEpoch`]; another one while an epoch is pending is
    /// [`StorageError::PendingEpoch`]. An epoch from a refresh must follow the active one
    /// directly, with nothing pending or retiring.
    ///
    /// # Errors
    ///
    /// Those above; [`StorageError::WrongIndex`] if the share is for another appliance,
    /// [`StorageError::Conflict`] for a different public part, [`StorageError::Invalid`]
    /// for sizes or sharing parameters out of range.
    pub fn store_share(&self, input: ShareInput) -> Result<(), StorageError> {
        let (sealed, tag) = self.seal_input(&input)?;
        let id = input.key_id.as_bytes();
        let slot = share_key(&input.key_id, input.epoch);
        let new_key = StoredKey {
            pending_epoch: Some(input.epoch),
            refresh: input.refresh,
            ..StoredKey::new(&input)
        };
        let sharing = input.sharing();
        let stored = (&self.inner.keys, &self.inner.shares)
            .transaction(|(keys, shares)| {
                let record = match keys.get(id)? {
                    None if input.refresh.is_some() && !input.joins => {
                        return Err(abort(StorageError::UnknownKey {
                            key_id: input.key_id.clone(),
                        }));
                    }
                    None => new_key.clone(),
                    Some(bytes) => {
                        let mut key: StoredKey =
                            codec::decode(&bytes, "key record").map_err(abort)?;
                        key.check_same_key(&input).map_err(abort)?;
                        next_epoch(&key, &input).map_err(abort)?;
                        key.pending_epoch = Some(input.epoch);
                        key.pending_ready = false;
                        key.refresh = input.refresh;
                        key
                    }
                };
                let mut record = record;
                record.set_sharing(sharing.clone());
                if shares.get(slot.as_slice())?.is_some() {
                    return Err(abort(StorageError::Corrupt(format!(
                        "a share of key {} for epoch {} exists without its key record",
                        input.key_id, input.epoch
                    ))));
                }
                keys.insert(id, codec::encode(&record).map_err(abort)?)?;
                shares.insert(slot.as_slice(), sealed.as_slice())?;
                Ok::<_, TxError>(())
            })
            .db();
        if let Err(err) = stored {
            // The new epoch key opens nothing stored: destroy it again.
            let _ = self
                .inner
                .epoch_keys
                .destroy(&(input.key_id.clone(), input.epoch, tag));
            return Err(err);
        }
        self.flush()
    }

    /// The public part and epochs of a key, if this appliance holds a share of it.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn key(&self, key_id: &KeyId) -> Result<Option<KeyInfo>, StorageError> {
        self.stored_key(key_id).map(|k| k.map(KeyInfo::from))
    }

    pub(super) fn stored_key(&self, key_id: &KeyId) -> Result<Option<StoredKey>, StorageError> {
        self.inner
            .keys
            .get(key_id.as_bytes())
            .db()?
            .map(|bytes| codec::decode::<StoredKey>(&bytes, "key record"))
            .transpose()
    }

    /// Every key this appliance holds a share of, ordered by key id.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn keys(&self) -> Result<Vec<KeyInfo>, StorageError> {
        self.inner
            .keys
            .iter()
            .values()
            .map(|bytes| Ok(codec::decode::<StoredKey>(&bytes.db()?, "key record")?.into()))
            .collect()
    }

    /// Unseals this appliance's secrets of `key_id` for `epoch`, if `epoch` is one of the
    /// key's stored epochs; `None` for an unknown key or another epoch.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unseal`] if the sealed share does not belong to this key, epoch and
    /// appliance (or was modified); [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn share(&self, key_id: &KeyId, epoch: u64) -> Result<Option<EpochSecret>, StorageError> {
        self.share_in(key_id, epoch, EpochSlot::Any)
    }

    /// Like [`Storage::share`], but only if `epoch` is in `slot` at the time of the read:
    /// a commit or an erasure between the caller's check of the key and this read cannot
    /// hand out the share of an epoch that has changed roles since.
    ///
    /// # Errors
    ///
    /// As [`Storage::share`].
    pub fn share_in(
        &self,
        key_id: &KeyId,
        epoch: u64,
        slot_wanted: EpochSlot,
    ) -> Result<Option<EpochSecret>, StorageError> {
        let slot = share_key(key_id, epoch);
        // Plain reads, no transaction: a read-only sled transaction still writes a batch
        // marker to the log and wakes sled's I/O threads, on every partial operation. The
        // answer holds as of the first read of the key record. Writers change a share and
        // the record that names it in one transaction (and destroy an epoch key only after
        // the record stopped naming its epoch), so a share found after the record named its
        // epoch is that epoch's share; a share or epoch key missing while the record still
        // names its epoch is corruption, and one erased in between is no longer named.
        let holds = || -> Result<bool, StorageError> {
            match self.inner.keys.get(key_id.as_bytes()).db()? {
                Some(bytes) => {
                    Ok(codec::decode::<StoredKey>(&bytes, "key record")?.holds(epoch, slot_wanted))
                }
                None => Ok(false),
            }
        };
        if !holds()? {
            return Ok(None);
        }
        let missing = |what: &str| -> Result<Option<EpochSecret>, StorageError> {
            if holds()? {
                return Err(StorageError::Corrupt(format!(
                    "the {what} of key {key_id} for epoch {epoch} is missing"
                )));
            }
            Ok(None)
        };
        let Some(stored) = self.inner.shares.get(slot.as_slice()).db()? else {
            return missing("share");
        };
        let stored = StoredShare::decode(&stored)?;
        // An erasure may destroy the epoch key while this reads it (a zeroed file, then
        // none): an epoch the record no longer names is simply gone.
        let epoch_key = match self.inner.epoch_keys.get(
            &self.inner.sealing_key,
            &(key_id.clone(), epoch, stored.tag),
        ) {
            Ok(Some(key)) => key,
            Ok(None) => return missing("epoch key"),
            Err(e) => {
                if holds()? {
                    return Err(e);
                }
                return Ok(None);
            }
        };
        let aad = share_aad(self.inner.appliance_index, key_id, epoch);
        let plain = epoch_key.unseal(&stored.sealed, &aad)?;
        Ok(Some(codec::decode(&plain, "epoch secrets")?))
    }

    /// Deletes a key with all its shares and epoch keys; returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn delete_key(&self, key_id: &KeyId) -> Result<bool, StorageError> {
        let removed = (&self.inner.keys, &self.inner.shares)
            .transaction(|(keys, shares)| {
                let Some(bytes) = keys.remove(key_id.as_bytes())? else {
                    return Ok(None);
                };
                let key: StoredKey = codec::decode(&bytes, "key record").map_err(abort)?;
                let mut tags = Vec::new();
                for epoch in key.epochs() {
                    if let Some(share) = shares.remove(share_key(key_id, epoch))? {
                        tags.push((epoch, StoredShare::decode(&share).map_err(abort)?.tag));
                    }
                }
                Ok::<_, TxError>(Some(tags))
            })
            .db()?;
        let Some(tags) = removed else {
            return Ok(false);
        };
        self.flush()?;
        for (epoch, tag) in tags {
            self.inner
                .epoch_keys
                .destroy(&(key_id.clone(), epoch, tag))?;
        }
        Ok(true)
    }

    /// Records that a refresh of `key_id` failed, with `reason` (cut to the wire's limit),
    /// for status. Nothing if the key is unknown.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn record_refresh_failure(&self, key_id: &KeyId, reason: &str) -> Result<(), StorageError> {
        let mut cut = reason.len().min(MAX_ERROR_MESSAGE_LEN);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let failure = (ittc_wire::now_unix_ms(), reason[..cut].to_owned());
        self.update_key(key_id, |key| {
            key.last_failure = Some(failure.clone());
            Ok(())
        })
        .map(|_| ())
        .or_else(|e| match e {
            StorageError::UnknownKey { .. } => Ok(()),
            other => Err(other),
        })
    }

    /// Changes a key record in a transaction and flushes; returns the new record.
    pub(super) fn update_key(
        &self,
        key_id: &KeyId,
        change: impl Fn(&mut StoredKey) -> Result<(), StorageError>,
    ) -> Result<StoredKey, StorageError> {
        let updated = self
            .inner
            .keys
            .transaction(|keys| {
                let Some(bytes) = keys.get(key_id.as_bytes())? else {
                    return Err(abort(StorageError::UnknownKey {
                        key_id: key_id.clone(),
                    }));
                };
                let mut key: StoredKey = codec::decode(&bytes, "key record").map_err(abort)?;
                change(&mut key).map_err(abort)?;
                keys.insert(key_id.as_bytes(), codec::encode(&key).map_err(abort)?)?;
                Ok::<_, TxError>(key)
            })
            .db()?;
        self.flush()?;
        Ok(updated)
    }
}

/// Decides whether `input`'s epoch may be stored next to `key`'s (as the pending epoch).
fn next_epoch(key: &StoredKey, input: &ShareInput) -> Result<(), StorageError> {
    let epoch = input.epoch;
    let key_id = || input.key_id.clone();
    if key.epochs().any(|e| e == epoch) {
        return Err(StorageError::AlreadyExists {
            key_id: key_id(),
            epoch,
        });
    }
    if key.active_epoch.is_some_and(|active| epoch < active) {
        return Err(key.wrong_epoch(epoch));
    }
    if let Some(pending) = key.pending_epoch {
        return Err(StorageError::PendingEpoch {
            key_id: key_id(),
            pending,
        });
    }
    if input.refresh.is_some() {
        if key.retiring_epoch.is_some() || key.leaving.is_some() {
            return Err(StorageError::RefreshUnfinished { key_id: key_id() });
        }
        if key.active_epoch.map(|a| a.saturating_add(1)) != Some(epoch) {
            return Err(key.wrong_epoch(epoch));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ittc_wire::SecretBytes;

    use super::super::test_support::*;
    use super::*;

    fn id(bytes: &[u8]) -> KeyId {
        KeyId::new(bytes.to_vec()).unwrap()
    }

    /// Stores the share of `key` for `epoch` and commits it.
    fn store_committed(storage: &Storage, key: &[u8], epoch: u64, index: u8) {
        storage.store_share(share_input(key, epoch, index)).unwrap();
        storage.commit_epoch(&id(key), epoch).unwrap();
    }

    fn epochs(storage: &Storage, key: &[u8]) -> (Option<u64>, Option<u64>) {
        let key = storage.key(&id(key)).unwrap().unwrap();
        (key.active_epoch, key.pending_epoch)
    }

    #[test]
    fn shares_round_trip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 2);
        let input = share_input(b"k1", 5, 2);
        store_committed(&storage, b"k1", 5, 2);
        store_committed(&storage, b"k0", 1, 2);
        let expected = KeyInfo {
            key_id: id(b"k1"),
            label: "signing".into(),
            modulus: input.modulus.clone(),
            public_exponent: vec![1, 0, 1],
            threshold: 2,
            parties: 3,
            active_epoch: Some(5),
            pending_epoch: None,
            pending_ready: false,
            retiring_epoch: None,
            refresh: None,
            active_since_unix_ms: storage
                .key(&id(b"k1"))
                .unwrap()
                .unwrap()
                .active_since_unix_ms,
            last_refresh_unix_ms: None,
            last_failure: None,
            sharings: vec![EpochSharing {
                epoch: 5,
                threshold: 2,
                parties: 3,
                holders: vec![1, 2, 3],
                additive_holders: vec![1, 2, 3],
                own_additive: true,
            }],
            leaving: None,
        };
        assert_eq!(storage.key(&id(b"k1")).unwrap(), Some(expected.clone()));
        assert_eq!(storage.key(&id(b"nope")).unwrap(), None);
        assert_eq!(
            storage.share(&id(b"k1"), 5).unwrap().unwrap().share,
            input.secret.share
        );
        assert_eq!(storage.share(&id(b"k1"), 4).unwrap(), None);
        assert_eq!(storage.share(&id(b"nope"), 5).unwrap(), None);
        drop(storage);

        let storage = open(dir.path(), 2);
        let keys = storage.keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].key_id, id(b"k0"));
        assert_eq!(keys[1], expected);
        assert_eq!(
            storage.share(&id(b"k1"), 5).unwrap().unwrap().share,
            input.secret.share
        );
        let status = keys[1].status();
        assert_eq!((status.active_epoch, status.pending_epoch), (Some(5), None));
        assert_eq!(status.refresh.additive_holders, vec![1, 2, 3]);
        assert!(status.refresh.has_additive);
    }

    #[test]
    fn a_new_key_is_pending_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage.store_share(share_input(b"k", 1, 1)).unwrap();
        assert_eq!(epochs(&storage, b"k"), (None, Some(1)));
        let status = storage.key(&id(b"k")).unwrap().unwrap().status();
        assert_eq!((status.active_epoch, status.pending_epoch), (None, Some(1)));
        let share = share_input(b"k", 1, 1).secret.share.clone();
        // The pending share unseals, for the dealer's trial operation, but not as active.
        assert_eq!(storage.share(&id(b"k"), 1).unwrap().unwrap().share, share);
        assert_eq!(
            storage
                .share_in(&id(b"k"), 1, EpochSlot::Pending)
                .unwrap()
                .unwrap()
                .share,
            share
        );
        assert_eq!(
            storage.share_in(&id(b"k"), 1, EpochSlot::Active).unwrap(),
            None
        );
        // The same epoch again, or another one, is refused while it is pending.
        assert!(matches!(
            storage.store_share(share_input(b"k", 1, 1)),
            Err(StorageError::AlreadyExists { epoch: 1, .. })
        ));
        for epoch in [0, 2] {
            assert!(matches!(
                storage.store_share(share_input(b"k", epoch, 1)),
                Err(StorageError::PendingEpoch { pending: 1, .. })
            ));
        }
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(epochs(&storage, b"k"), (None, Some(1)));

        storage.commit_epoch(&id(b"k"), 1).unwrap();
        assert_eq!(epochs(&storage, b"k"), (Some(1), None));
        assert_eq!(
            storage
                .share_in(&id(b"k"), 1, EpochSlot::Active)
                .unwrap()
                .unwrap()
                .share,
            share
        );
        assert_eq!(
            storage.share_in(&id(b"k"), 1, EpochSlot::Pending).unwrap(),
            None
        );
    }

    #[test]
    fn commit_promotes_the_pending_epoch_and_erases_the_old_share() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        store_committed(&storage, b"k", 1, 1);
        store_committed(&storage, b"other", 1, 1);
        storage.store_share(share_input(b"k", 2, 1)).unwrap();
        assert_eq!(epochs(&storage, b"k"), (Some(1), Some(2)));
        assert_eq!(storage.inner.shares.len(), 3);

        storage.commit_epoch(&id(b"k"), 2).unwrap();
        assert_eq!(epochs(&storage, b"k"), (Some(2), None));
        assert_eq!(storage.share(&id(b"k"), 1).unwrap(), None);
        assert!(
            storage
                .inner
                .shares
                .get(share_key(&id(b"k"), 1))
                .unwrap()
                .is_none(),
            "the old share is erased"
        );
        assert_eq!(storage.inner.shares.len(), 2);
        assert_eq!(
            storage.share(&id(b"k"), 2).unwrap().unwrap().share,
            share_input(b"k", 2, 1).secret.share
        );
        // The other key is untouched.
        assert_eq!(epochs(&storage, b"other"), (Some(1), None));
        // An epoch older than the new active one is refused now.
        assert!(matches!(
            storage.store_share(share_input(b"k", 1, 1)),
            Err(StorageError::WrongEpoch {
                epoch: 1,
                active: Some(2),
                ..
            })
        ));
    }

    #[test]
    fn commit_of_anything_but_the_pending_epoch_fails_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        assert!(matches!(
            storage.commit_epoch(&id(b"nope"), 1),
            Err(StorageError::UnknownKey { .. })
        ));
        storage.store_share(share_input(b"k", 1, 1)).unwrap();
        for epoch in [0, 2] {
            assert!(matches!(
                storage.commit_epoch(&id(b"k"), epoch),
                Err(StorageError::WrongEpoch {
                    active: None,
                    pending: Some(1),
                    ..
                })
            ));
        }
        assert_eq!(epochs(&storage, b"k"), (None, Some(1)));
        storage.commit_epoch(&id(b"k"), 1).unwrap();
        // Committing again: nothing is pending any more.
        let err = storage.commit_epoch(&id(b"k"), 1).unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::WrongEpoch {
                    epoch: 1,
                    active: Some(1),
                    pending: None,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("pending epoch none"), "{err}");
        storage.store_share(share_input(b"k", 3, 1)).unwrap();
        assert!(matches!(
            storage.commit_epoch(&id(b"k"), 2),
            Err(StorageError::WrongEpoch {
                pending: Some(3),
                ..
            })
        ));
        assert_eq!(epochs(&storage, b"k"), (Some(1), Some(3)));
        assert!(storage.share(&id(b"k"), 1).unwrap().is_some());
        assert!(storage.share(&id(b"k"), 3).unwrap().is_some());
    }

    #[test]
    fn a_commit_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        store_committed(&storage, b"k", 1, 1);
        storage.store_share(share_input(b"k", 2, 1)).unwrap();
        storage.commit_epoch(&id(b"k"), 2).unwrap();
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(epochs(&storage, b"k"), (Some(2), None));
        assert_eq!(storage.share(&id(b"k"), 1).unwrap(), None);
        assert_eq!(
            storage.share(&id(b"k"), 2).unwrap().unwrap().share,
            share_input(b"k", 2, 1).secret.share
        );
        assert_eq!(storage.inner.shares.len(), 1);
    }

    #[test]
    fn a_newer_epoch_is_stored_as_pending() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        store_committed(&storage, b"k", 1, 1);
        storage.store_share(share_input(b"k", 2, 1)).unwrap();
        assert_eq!(epochs(&storage, b"k"), (Some(1), Some(2)));
        assert_eq!(
            storage.share(&id(b"k"), 1).unwrap().unwrap().share,
            share_input(b"k", 1, 1).secret.share
        );
        assert_eq!(
            storage.share(&id(b"k"), 2).unwrap().unwrap().share,
            share_input(b"k", 2, 1).secret.share
        );
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(epochs(&storage, b"k"), (Some(1), Some(2)));
    }

    #[test]
    fn store_share_enforces_the_epoch_rules() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        store_committed(&storage, b"k", 5, 1);
        assert!(matches!(
            storage.store_share(share_input(b"k", 5, 1)),
            Err(StorageError::AlreadyExists { epoch: 5, .. })
        ));
        assert!(matches!(
            storage.store_share(share_input(b"k", 4, 1)),
            Err(StorageError::WrongEpoch {
                epoch: 4,
                active: Some(5),
                ..
            })
        ));
        storage.store_share(share_input(b"k", 7, 1)).unwrap();
        assert!(matches!(
            storage.store_share(share_input(b"k", 7, 1)),
            Err(StorageError::AlreadyExists { epoch: 7, .. })
        ));
        for epoch in [6, 8] {
            assert!(matches!(
                storage.store_share(share_input(b"k", epoch, 1)),
                Err(StorageError::PendingEpoch { pending: 7, .. })
            ));
        }
        // Refusals changed nothing.
        assert_eq!(epochs(&storage, b"k"), (Some(5), Some(7)));
        assert_eq!(
            storage.share(&id(b"k"), 5).unwrap().unwrap().share,
            share_input(b"k", 5, 1).secret.share
        );
    }

    #[test]
    fn store_share_refuses_another_appliances_share() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        assert!(matches!(
            storage.store_share(share_input(b"k", 1, 2)),
            Err(StorageError::WrongIndex {
                expected: 1,
                got: 2
            })
        ));
        assert_eq!(storage.keys().unwrap(), vec![]);
    }

    #[test]
    fn store_share_refuses_a_different_public_part() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        store_committed(&storage, b"k", 1, 1);
        let base = || share_input(b"k", 2, 1);
        let variants: [(ShareInput, &str); 5] = [
            (
                ShareInput {
                    modulus: vec![0xc7; 256],
                    ..base()
                },
                "modulus",
            ),
            (
                ShareInput {
                    public_exponent: vec![3],
                    ..base()
                },
                "public exponent",
            ),
            (
                ShareInput {
                    threshold: 3,
                    ..base()
                },
                "threshold",
            ),
            (
                ShareInput {
                    parties: 4,
                    holders: vec![1, 2, 3, 4],
                    ..base()
                },
                "parties",
            ),
            (
                ShareInput {
                    label: "other".into(),
                    ..base()
                },
                "label",
            ),
        ];
        for (input, expected) in variants {
            match storage.store_share(input) {
                Err(StorageError::Conflict { field, .. }) => assert_eq!(field, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
        assert_eq!(storage.key(&id(b"k")).unwrap().unwrap().pending_epoch, None);
    }

    #[test]
    fn store_share_validates_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let base = || share_input(b"k", 1, 1);
        for input in [
            ShareInput {
                secret: EpochSecret {
                    share: vec![],
                    additive: None,
                },
                ..base()
            },
            ShareInput {
                secret: EpochSecret {
                    share: vec![1; MAX_INTEGER_LEN + 1],
                    additive: None,
                },
                ..base()
            },
            ShareInput {
                secret: EpochSecret {
                    share: vec![1; 300],
                    additive: Some(vec![]),
                },
                ..base()
            },
            ShareInput {
                modulus: vec![],
                ..base()
            },
            ShareInput {
                threshold: 0,
                ..base()
            },
            ShareInput {
                threshold: 4,
                ..base()
            },
            ShareInput {
                label: "l".repeat(MAX_LABEL_LEN + 1),
                ..base()
            },
            ShareInput {
                additive_holders: vec![2, 1],
                ..base()
            },
            ShareInput {
                additive_holders: vec![1, 4],
                ..base()
            },
            ShareInput {
                holders: vec![2, 3],
                ..base()
            },
            ShareInput {
                holders: vec![1, 2],
                ..base()
            },
        ] {
            assert!(matches!(
                storage.store_share(input),
                Err(StorageError::Invalid(_))
            ));
        }
    }

    #[test]
    fn delete_key_removes_every_share() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        store_committed(&storage, b"k", 1, 1);
        storage.store_share(share_input(b"k", 2, 1)).unwrap();
        storage.store_share(share_input(b"j", 1, 1)).unwrap();
        assert!(storage.delete_key(&id(b"k")).unwrap());
        assert!(!storage.delete_key(&id(b"k")).unwrap());
        assert_eq!(storage.key(&id(b"k")).unwrap(), None);
        assert_eq!(storage.share(&id(b"k"), 1).unwrap(), None);
        assert_eq!(storage.inner.shares.len(), 1, "only j's share is left");
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.keys().unwrap().len(), 1);
        // j was never committed: deleting it rolls the import back.
        assert_eq!(epochs(&storage, b"j"), (None, Some(1)));
        assert!(storage.delete_key(&id(b"j")).unwrap());
        assert_eq!(storage.share(&id(b"j"), 1).unwrap(), None);
        assert!(storage.inner.shares.is_empty());
        // The key can be stored afresh, at any epoch.
        storage.store_share(share_input(b"k", 0, 1)).unwrap();
    }

    /// Overwrites the sealed share of (`to`, `to_epoch`) with that of (`from`,
    /// `from_epoch`), through sled.
    /// Overwrites the sealed share of (`to`, `to_epoch`) with that of (`from`,
    /// `from_epoch`), and copies its epoch key file to the name the target would use:
    /// what is left to stop it is the additional data.
    fn move_share(storage: &Storage, from: (&[u8], u64), to: (&[u8], u64)) {
        copy_share(storage, storage, from, to);
    }

    fn copy_share(source: &Storage, target: &Storage, from: (&[u8], u64), to: (&[u8], u64)) {
        let sealed = source
            .inner
            .shares
            .get(share_key(&id(from.0), from.1))
            .unwrap()
            .unwrap();
        let tag = StoredShare::decode(&sealed).unwrap().tag;
        let name = |storage: &Storage, (key, epoch): (&[u8], u64)| {
            storage
                .inner
                .epoch_keys
                .dir()
                .join(format!("{}-{epoch}-{tag:016x}", id(key)))
        };
        std::fs::copy(name(source, from), name(target, to)).unwrap();
        target
            .inner
            .shares
            .insert(share_key(&id(to.0), to.1), sealed)
            .unwrap();
    }

    #[test]
    fn a_share_moved_to_another_key_or_epoch_does_not_unseal() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        store_committed(&storage, b"a", 1, 1);
        storage.store_share(share_input(b"a", 2, 1)).unwrap();
        storage.store_share(share_input(b"b", 1, 1)).unwrap();
        move_share(&storage, (b"a", 1), (b"b", 1));
        assert!(matches!(
            storage.share(&id(b"b"), 1),
            Err(StorageError::Unseal)
        ));
        move_share(&storage, (b"a", 1), (b"a", 2));
        assert!(matches!(
            storage.share(&id(b"a"), 2),
            Err(StorageError::Unseal)
        ));
        // The original still unseals.
        assert!(storage.share(&id(b"a"), 1).unwrap().is_some());
    }

    #[test]
    fn a_share_moved_to_another_appliance_does_not_unseal() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let first = open(one.path(), 1);
        let second = open(two.path(), 2);
        first.store_share(share_input(b"k", 1, 1)).unwrap();
        second.store_share(share_input(b"k", 1, 2)).unwrap();
        copy_share(&first, &second, (b"k", 1), (b"k", 1));
        assert!(matches!(
            second.share(&id(b"k"), 1),
            Err(StorageError::Unseal)
        ));
    }

    #[test]
    fn reads_during_commits_never_see_a_missing_share() {
        // A reader asks for the active epoch it last saw while a writer keeps refreshing:
        // it gets that epoch's share or nothing, never a spurious corruption.
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        store_committed(&storage, b"k", 1, 1);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let (mut found, mut gone) = (0u32, 0u32);
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let (Some(epoch), _) = epochs(&storage, b"k") else {
                        continue;
                    };
                    match storage
                        .share_in(&id(b"k"), epoch, EpochSlot::Active)
                        .unwrap()
                    {
                        Some(share) => {
                            assert_eq!(share, share_input(b"k", epoch, 1).secret);
                            found += 1;
                        }
                        None => gone += 1,
                    }
                }
                (found, gone)
            });
            for epoch in 2..200 {
                storage.store_share(share_input(b"k", epoch, 1)).unwrap();
                storage.commit_epoch(&id(b"k"), epoch).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let (found, _) = reader.join().unwrap();
            assert!(found > 0);
        });
    }

    #[test]
    fn a_missing_share_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage.store_share(share_input(b"k", 1, 1)).unwrap();
        storage
            .inner
            .shares
            .remove(share_key(&id(b"k"), 1))
            .unwrap();
        assert!(matches!(
            storage.share(&id(b"k"), 1),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn share_input_from_a_wire_record_and_debug_redacts() {
        let record = ShareRecord {
            key_id: id(b"k"),
            label: "l".into(),
            epoch: 3,
            index: 1,
            threshold: 1,
            parties: 1,
            modulus: vec![0xc5; 8],
            public_exponent: vec![3],
            share: SecretBytes::new(vec![0x99; 20]),
            additive: SecretBytes::new(vec![0x98; 24]),
        };
        let input = ShareInput::from(record);
        assert_eq!(&input.secret.share[..], &[0x99; 20][..]);
        assert_eq!(input.secret.additive.as_deref(), Some(&[0x98; 24][..]));
        let printed = format!("{input:?}");
        assert!(printed.contains("[redacted; 20 bytes]"), "{printed}");
        assert!(printed.contains("[redacted; 24 bytes]"), "{printed}");
        assert!(!printed.contains("153"), "{printed}"); // 0x99
    }
}
