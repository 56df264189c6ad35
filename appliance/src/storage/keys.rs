//! Keys and their sealed shares, one per epoch: the active epoch, which answers clients,
//! and a pending one, stored by an import or a refresh and not yet committed.
//!
//! A key's life: [`Storage::store_share`] of a new key stores its share as the pending
//! epoch, with no active epoch; [`Storage::commit_epoch`] makes it active. A refresh later
//! stores a newer epoch as pending next to the active one, and its commit makes it active
//! and erases the share of the previous epoch. [`Storage::delete_key`] removes a key with
//! every share (the rollback of an import that is not committed).

use core::fmt;

use bincode::{Decode, Encode};
use ittc_wire::limits::{MAX_INTEGER_LEN, MAX_LABEL_LEN};
use ittc_wire::{KeyId, KeyStatus, ShareRecord};
use sled::Transactional;
use zeroize::Zeroizing;

use super::error::{SledResultExt, TxError, abort};
use super::seal::{Sealed, share_aad};
use super::{Storage, StorageError, codec};

/// A share to store, with its key's public part (what the provisioning CLI or a refresh
/// hands over). `Debug` omits the share.
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
    /// The share, a big-endian integer, 1 to [`MAX_INTEGER_LEN`] bytes.
    pub share: Zeroizing<Vec<u8>>,
}

impl From<ShareRecord> for ShareInput {
    fn from(record: ShareRecord) -> Self {
        Self {
            share: Zeroizing::new(record.share.expose_secret().to_vec()),
            key_id: record.key_id,
            label: record.label,
            epoch: record.epoch,
            index: record.index,
            threshold: record.threshold,
            parties: record.parties,
            modulus: record.modulus,
            public_exponent: record.public_exponent,
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
            .field(
                "share",
                &format_args!("[redacted; {} bytes]", self.share.len()),
            )
            .finish_non_exhaustive()
    }
}

/// A key's public part and epochs, as stored.
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
    /// How many partials combine (`k`).
    pub threshold: u8,
    /// How many appliances hold a share (`n`).
    pub parties: u8,
    /// The epoch whose share answers clients' partial requests; `None` until the first
    /// commit.
    pub active_epoch: Option<u64>,
    /// An epoch stored (by an import or a refresh) and not yet committed, if any.
    pub pending_epoch: Option<u64>,
}

impl KeyInfo {
    /// The key's entry in a status response.
    pub fn status(&self) -> KeyStatus {
        KeyStatus {
            key_id: self.key_id.clone(),
            label: self.label.clone(),
            active_epoch: self.active_epoch,
            pending_epoch: self.pending_epoch,
            threshold: self.threshold,
            parties: self.parties,
        }
    }
}

/// The record in the `keys` tree.
#[derive(Encode, Decode)]
struct StoredKey {
    key_id: KeyId,
    label: String,
    modulus: Vec<u8>,
    public_exponent: Vec<u8>,
    threshold: u8,
    parties: u8,
    active_epoch: Option<u64>,
    pending_epoch: Option<u64>,
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
        }
    }
}

impl StoredKey {
    /// Fails with [`StorageError::Conflict`] naming the first public field that differs.
    fn check_same_key(&self, input: &ShareInput) -> Result<(), StorageError> {
        let field = if self.modulus != input.modulus {
            "modulus"
        } else if self.public_exponent != input.public_exponent {
            "public exponent"
        } else if self.threshold != input.threshold {
            "threshold"
        } else if self.parties != input.parties {
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

    /// The epochs whose shares are stored.
    fn epochs(&self) -> impl Iterator<Item = u64> + use<> {
        self.active_epoch.into_iter().chain(self.pending_epoch)
    }

    /// Whether `epoch` is stored in `slot`.
    fn holds(&self, epoch: u64, slot: EpochSlot) -> bool {
        match slot {
            EpochSlot::Active => self.active_epoch == Some(epoch),
            EpochSlot::Pending => self.pending_epoch == Some(epoch),
            EpochSlot::Any => self.epochs().any(|e| e == epoch),
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
    /// The active or the pending epoch.
    Any,
}

/// The key of a share in the `shares` tree: the key id's length, the key id, the epoch
/// (big-endian), so one key's shares are contiguous and sorted by epoch.
fn share_key(key_id: &KeyId, epoch: u64) -> Vec<u8> {
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
        (&*input.share, "share must be 1 to 4096 bytes"),
    ] {
        check(!value.is_empty() && value.len() <= MAX_INTEGER_LEN, what)?;
    }
    Ok(())
}

impl Storage {
    /// Stores this appliance's share of a key for one epoch, as the key's pending epoch.
    ///
    /// A new key gets the share as its pending epoch and no active epoch: it answers no
    /// client until [`Storage::commit_epoch`]. For an existing key the public part
    /// (modulus, public exponent, threshold, parties and label) must match, and the epoch
    /// decides: a newer epoch than the active one is stored as the pending epoch; the
    /// active or pending epoch again is [`StorageError::AlreadyExists`]; an older one is
    /// [`StorageError::WrongEpoch`]; another one while an epoch is pending is
    /// [`StorageError::PendingEpoch`].
    ///
    /// # Errors
    ///
    /// Those above; [`StorageError::WrongIndex`] if the share is for another appliance,
    /// [`StorageError::Conflict`] for a different public part, [`StorageError::Invalid`]
    /// for sizes or sharing parameters out of range.
    pub fn store_share(&self, input: ShareInput) -> Result<(), StorageError> {
        let me = self.inner.appliance_index;
        if input.index != me {
            return Err(StorageError::WrongIndex {
                expected: me,
                got: input.index,
            });
        }
        validate(&input)?;
        let id = input.key_id.as_bytes();
        let aad = share_aad(me, &input.key_id, input.epoch);
        let sealed = codec::encode(&self.inner.sealing_key.seal(&input.share, &aad)?)?;
        let slot = share_key(&input.key_id, input.epoch);
        let new_key = codec::encode(&StoredKey {
            key_id: input.key_id.clone(),
            label: input.label.clone(),
            modulus: input.modulus.clone(),
            public_exponent: input.public_exponent.clone(),
            threshold: input.threshold,
            parties: input.parties,
            active_epoch: None,
            pending_epoch: Some(input.epoch),
        })?;

        (&self.inner.keys, &self.inner.shares)
            .transaction(|(keys, shares)| {
                let record = match keys.get(id)? {
                    None => new_key.clone(),
                    Some(bytes) => {
                        let mut key: StoredKey =
                            codec::decode(&bytes, "key record").map_err(abort)?;
                        key.check_same_key(&input).map_err(abort)?;
                        next_epoch(&key, &input).map_err(abort)?;
                        key.pending_epoch = Some(input.epoch);
                        codec::encode(&key).map_err(abort)?
                    }
                };
                if shares.get(slot.as_slice())?.is_some() {
                    return Err(abort(StorageError::Corrupt(format!(
                        "a share of key {} for epoch {} exists without its key record",
                        input.key_id, input.epoch
                    ))));
                }
                keys.insert(id, record)?;
                shares.insert(slot.as_slice(), sealed.as_slice())?;
                Ok::<_, TxError>(())
            })
            .db()?;
        self.flush()
    }

    /// Makes the pending `epoch` of a key its active epoch and erases the share of the
    /// previous active epoch, in one transaction, flushed before it returns.
    ///
    /// # Errors
    ///
    /// [`StorageError::UnknownKey`] if this appliance holds no share of the key;
    /// [`StorageError::WrongEpoch`] if `epoch` is not the key's pending epoch (nothing
    /// pending, another epoch pending, or `epoch` already committed);
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn commit_epoch(&self, key_id: &KeyId, epoch: u64) -> Result<(), StorageError> {
        let id = key_id.as_bytes();
        let slot = share_key(key_id, epoch);
        (&self.inner.keys, &self.inner.shares)
            .transaction(|(keys, shares)| {
                let Some(bytes) = keys.get(id)? else {
                    return Err(abort(StorageError::UnknownKey {
                        key_id: key_id.clone(),
                    }));
                };
                let mut key: StoredKey = codec::decode(&bytes, "key record").map_err(abort)?;
                if key.pending_epoch != Some(epoch) {
                    return Err(abort(StorageError::WrongEpoch {
                        key_id: key_id.clone(),
                        epoch,
                        active: key.active_epoch,
                        pending: key.pending_epoch,
                    }));
                }
                if shares.get(slot.as_slice())?.is_none() {
                    return Err(abort(StorageError::Corrupt(format!(
                        "the share of key {key_id} for epoch {epoch} is missing"
                    ))));
                }
                let previous = key.active_epoch.replace(epoch);
                key.pending_epoch = None;
                keys.insert(id, codec::encode(&key).map_err(abort)?)?;
                if let Some(previous) = previous {
                    shares.remove(share_key(key_id, previous))?;
                }
                Ok::<_, TxError>(())
            })
            .db()?;
        self.flush()
    }

    /// The public part and epochs of a key, if this appliance holds a share of it.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn key(&self, key_id: &KeyId) -> Result<Option<KeyInfo>, StorageError> {
        self.inner
            .keys
            .get(key_id.as_bytes())
            .db()?
            .map(|bytes| Ok(codec::decode::<StoredKey>(&bytes, "key record")?.into()))
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

    /// Unseals this appliance's share of `key_id` for `epoch`, if `epoch` is the key's
    /// active or pending epoch; `None` for an unknown key or another epoch.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unseal`] if the sealed share does not belong to this key, epoch and
    /// appliance (or was modified); [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn share(
        &self,
        key_id: &KeyId,
        epoch: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StorageError> {
        self.share_in(key_id, epoch, EpochSlot::Any)
    }

    /// Like [`Storage::share`], but only if `epoch` is in `slot` at the time of the read:
    /// a commit between the caller's check of the key and this read cannot hand out the
    /// share of an epoch that has changed roles since.
    ///
    /// # Errors
    ///
    /// As [`Storage::share`].
    pub fn share_in(
        &self,
        key_id: &KeyId,
        epoch: u64,
        slot_wanted: EpochSlot,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StorageError> {
        let slot = share_key(key_id, epoch);
        // Plain reads, no transaction: a read-only sled transaction still writes a batch
        // marker to the log and wakes sled's I/O threads, on every partial operation. The
        // answer holds as of the first read of the key record. Writers change a share and
        // the record that names it in one transaction, so a share found after the record
        // named its epoch is that epoch's share; a share missing while the record still
        // names its epoch is corruption, and one erased by a commit or delete in between
        // is no longer named by the record.
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
        let Some(sealed) = self.inner.shares.get(slot.as_slice()).db()? else {
            if holds()? {
                return Err(StorageError::Corrupt(format!(
                    "the share of key {key_id} for epoch {epoch} is missing"
                )));
            }
            return Ok(None);
        };
        let sealed: Sealed = codec::decode(&sealed, "sealed share")?;
        let aad = share_aad(self.inner.appliance_index, key_id, epoch);
        self.inner.sealing_key.unseal(&sealed, &aad).map(Some)
    }

    /// Deletes a key with all its shares; returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn delete_key(&self, key_id: &KeyId) -> Result<bool, StorageError> {
        let existed = (&self.inner.keys, &self.inner.shares)
            .transaction(|(keys, shares)| {
                let Some(bytes) = keys.remove(key_id.as_bytes())? else {
                    return Ok(false);
                };
                let key: StoredKey = codec::decode(&bytes, "key record").map_err(abort)?;
                for epoch in key.epochs() {
                    shares.remove(share_key(key_id, epoch))?;
                }
                Ok::<_, TxError>(true)
            })
            .db()?;
        if existed {
            self.flush()?;
        }
        Ok(existed)
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
        return Err(StorageError::WrongEpoch {
            key_id: key_id(),
            epoch,
            active: key.active_epoch,
            pending: key.pending_epoch,
        });
    }
    if let Some(pending) = key.pending_epoch {
        return Err(StorageError::PendingEpoch {
            key_id: key_id(),
            pending,
        });
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
        };
        assert_eq!(storage.key(&id(b"k1")).unwrap(), Some(expected.clone()));
        assert_eq!(storage.key(&id(b"nope")).unwrap(), None);
        assert_eq!(storage.share(&id(b"k1"), 5).unwrap().unwrap(), input.share);
        assert_eq!(storage.share(&id(b"k1"), 4).unwrap(), None);
        assert_eq!(storage.share(&id(b"nope"), 5).unwrap(), None);
        drop(storage);

        let storage = open(dir.path(), 2);
        let keys = storage.keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].key_id, id(b"k0"));
        assert_eq!(keys[1], expected);
        assert_eq!(storage.share(&id(b"k1"), 5).unwrap().unwrap(), input.share);
        let status = keys[1].status();
        assert_eq!((status.active_epoch, status.pending_epoch), (Some(5), None));
    }

    #[test]
    fn a_new_key_is_pending_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage.store_share(share_input(b"k", 1, 1)).unwrap();
        assert_eq!(epochs(&storage, b"k"), (None, Some(1)));
        let status = storage.key(&id(b"k")).unwrap().unwrap().status();
        assert_eq!((status.active_epoch, status.pending_epoch), (None, Some(1)));
        let share = share_input(b"k", 1, 1).share;
        // The pending share unseals, for the dealer's trial operation, but not as active.
        assert_eq!(storage.share(&id(b"k"), 1).unwrap().unwrap(), share);
        assert_eq!(
            storage
                .share_in(&id(b"k"), 1, EpochSlot::Pending)
                .unwrap()
                .unwrap(),
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
                .unwrap(),
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
            storage.share(&id(b"k"), 2).unwrap().unwrap(),
            share_input(b"k", 2, 1).share
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
            storage.share(&id(b"k"), 2).unwrap().unwrap(),
            share_input(b"k", 2, 1).share
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
            storage.share(&id(b"k"), 1).unwrap().unwrap(),
            share_input(b"k", 1, 1).share
        );
        assert_eq!(
            storage.share(&id(b"k"), 2).unwrap().unwrap(),
            share_input(b"k", 2, 1).share
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
            storage.share(&id(b"k"), 5).unwrap().unwrap(),
            share_input(b"k", 5, 1).share
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
                share: Zeroizing::new(vec![]),
                ..base()
            },
            ShareInput {
                share: Zeroizing::new(vec![1; MAX_INTEGER_LEN + 1]),
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
    fn move_share(storage: &Storage, from: (&[u8], u64), to: (&[u8], u64)) {
        let shares = &storage.inner.shares;
        let sealed = shares.get(share_key(&id(from.0), from.1)).unwrap().unwrap();
        shares.insert(share_key(&id(to.0), to.1), sealed).unwrap();
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
        let sealed = first
            .inner
            .shares
            .get(share_key(&id(b"k"), 1))
            .unwrap()
            .unwrap();
        second
            .inner
            .shares
            .insert(share_key(&id(b"k"), 1), sealed)
            .unwrap();
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
                            assert_eq!(share, share_input(b"k", epoch, 1).share);
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
        };
        let input = ShareInput::from(record);
        assert_eq!(&input.share[..], &[0x99; 20][..]);
        let printed = format!("{input:?}");
        assert!(printed.contains("[redacted; 20 bytes]"), "{printed}");
        assert!(!printed.contains("153"), "{printed}"); // 0x99
    }
}
