//! The steps that move a key from one epoch to the next: ready, commit, erase, discard.
//!
//! Each is one transaction over the key record (and the share it removes), flushed before
//! it returns; an epoch key is destroyed only after the record stopped naming its epoch,
//! so a crash in between leaves a key file that names nothing, which the next start
//! destroys (`Storage::open`).

use ittc_wire::KeyId;
use sled::Transactional;

use super::error::{SledResultExt, TxError, abort};
use super::keys::{Leaving, RefreshOrigin, ShareInput, StoredKey, StoredShare, share_key};
use super::{Storage, StorageError, codec};

/// A refresh step's check of the session it belongs to: the one recorded with the
/// pending or retiring epoch.
fn check_session(key: &StoredKey, session: Option<&[u8; 16]>) -> Result<(), StorageError> {
    match (session, key.refresh) {
        (None, _) => Ok(()),
        (Some(asked), Some(RefreshOrigin { session, .. })) if *asked == session => Ok(()),
        (Some(_), _) => Err(StorageError::OtherSession {
            key_id: key.key_id.clone(),
        }),
    }
}

impl Storage {
    /// Marks the pending `epoch` of a key (from the refresh `session`) as verified: it
    /// answers clients from now on, next to the active epoch.
    ///
    /// # Errors
    ///
    /// [`StorageError::UnknownKey`]; [`StorageError::WrongEpoch`] if `epoch` is not
    /// pending; [`StorageError::OtherSession`] if it comes from another refresh.
    pub fn mark_ready(
        &self,
        key_id: &KeyId,
        epoch: u64,
        session: &[u8; 16],
    ) -> Result<(), StorageError> {
        self.update_key(key_id, |key| {
            if key.pending_epoch != Some(epoch) {
                return Err(key.wrong_epoch(epoch));
            }
            check_session(key, Some(session))?;
            key.pending_ready = true;
            Ok(())
        })
        .map(|_| ())
    }

    /// Makes the pending `epoch` of a key its active epoch, in one transaction, flushed
    /// before it returns. An epoch from a refresh keeps the previous active epoch as the
    /// retiring one (it answers clients until [`Storage::erase_retiring`]); an import's
    /// commit erases the previous share at once.
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
        let now = ittc_wire::now_unix_ms();
        let erased = (&self.inner.keys, &self.inner.shares)
            .transaction(|(keys, shares)| {
                let Some(bytes) = keys.get(id)? else {
                    return Err(abort(StorageError::UnknownKey {
                        key_id: key_id.clone(),
                    }));
                };
                let mut key: StoredKey = codec::decode(&bytes, "key record").map_err(abort)?;
                if key.pending_epoch != Some(epoch) {
                    return Err(abort(key.wrong_epoch(epoch)));
                }
                if shares.get(slot.as_slice())?.is_none() {
                    return Err(abort(StorageError::Corrupt(format!(
                        "the share of key {key_id} for epoch {epoch} is missing"
                    ))));
                }
                if let Some(sharing) = key.sharing_of(epoch) {
                    (key.threshold, key.parties) = (sharing.threshold, sharing.parties);
                }
                let previous = key.active_epoch.replace(epoch);
                key.pending_epoch = None;
                key.pending_ready = false;
                key.active_since_unix_ms = Some(now);
                let mut erased = None;
                if key.refresh.is_some() {
                    key.retiring_epoch = previous;
                    key.last_refresh_unix_ms = Some(now);
                    key.last_failure = None;
                } else if let Some(previous) = previous
                    && let Some(share) = shares.remove(share_key(key_id, previous))?
                {
                    let tag = StoredShare::decode(&share).map_err(abort)?.tag;
                    erased = Some((key_id.clone(), previous, tag));
                }
                keys.insert(id, codec::encode(&key).map_err(abort)?)?;
                Ok::<_, TxError>(erased)
            })
            .db()?;
        self.flush()?;
        if let Some(name) = erased {
            self.inner.epoch_keys.destroy(&name)?;
        }
        Ok(())
    }

    /// Erases the retiring epoch of a key whose active epoch is `active` (the refresh that
    /// made it, `session` if given, is over everywhere): its share leaves the database and
    /// its epoch key is destroyed. Nothing to do if it is erased already.
    ///
    /// # Errors
    ///
    /// [`StorageError::UnknownKey`]; [`StorageError::WrongEpoch`] if `active` is not the
    /// key's active epoch; [`StorageError::OtherSession`].
    pub fn erase_retiring(
        &self,
        key_id: &KeyId,
        active: u64,
        session: Option<&[u8; 16]>,
    ) -> Result<(), StorageError> {
        let retired = self.end_epoch(key_id, |key| {
            if key.active_epoch != Some(active) {
                return Err(key.wrong_epoch(active));
            }
            let Some(retiring) = key.retiring_epoch else {
                return Ok(None);
            };
            check_session(key, session)?;
            key.retiring_epoch = None;
            key.refresh = None;
            Ok(Some(retiring))
        })?;
        if let Some(epoch) = retired {
            tracing::info!(key = %key_id, epoch, "retiring epoch erased");
        }
        Ok(())
    }

    /// Deletes the pending `epoch` of a key (a refresh that failed before its commit;
    /// `session` if given must be the refresh's), with its epoch key; a key that a reshare
    /// was to give this appliance goes with it. Nothing to do if it is not pending any more
    /// and was never committed.
    ///
    /// # Errors
    ///
    /// [`StorageError::UnknownKey`]; [`StorageError::WrongEpoch`] if `epoch` is the active
    /// epoch (committed: too late to discard) or the key has no active epoch and its
    /// pending one is not from a refresh (an import: delete the key instead);
    /// [`StorageError::OtherSession`].
    pub fn discard_pending(
        &self,
        key_id: &KeyId,
        epoch: u64,
        session: Option<&[u8; 16]>,
    ) -> Result<(), StorageError> {
        self.end_epoch(key_id, |key| {
            let joining = key.active_epoch.is_none() && key.refresh.is_some();
            if !joining && key.active_epoch.is_none_or(|a| a >= epoch) {
                return Err(key.wrong_epoch(epoch));
            }
            if key.pending_epoch != Some(epoch) {
                return Ok(None);
            }
            check_session(key, session)?;
            key.pending_epoch = None;
            key.pending_ready = false;
            if key.retiring_epoch.is_none() {
                key.refresh = None;
            }
            Ok(Some(epoch))
        })
        .map(|_| ())
    }

    /// Records that this appliance took part in the reshare `origin` to `epoch`, which
    /// leaves it out: it keeps answering on its active epoch (`epoch − 1`) and takes part
    /// in no other refresh of the key until the reshare is committed and the key erased,
    /// or discarded.
    ///
    /// # Errors
    ///
    /// [`StorageError::UnknownKey`]; [`StorageError::WrongEpoch`] unless the active epoch
    /// is `epoch − 1`; [`StorageError::RefreshUnfinished`] while an epoch is pending or
    /// retiring, or another reshare leaves it out.
    pub fn mark_leaving(
        &self,
        key_id: &KeyId,
        epoch: u64,
        origin: RefreshOrigin,
    ) -> Result<(), StorageError> {
        self.update_key(key_id, |key| {
            if key.active_epoch.map(|a| a.saturating_add(1)) != Some(epoch) {
                return Err(key.wrong_epoch(epoch));
            }
            if key.pending_epoch.is_some() || key.retiring_epoch.is_some() {
                return Err(StorageError::RefreshUnfinished {
                    key_id: key_id.clone(),
                });
            }
            match key.leaving {
                Some(l) if l.origin == origin && l.epoch == epoch => Ok(()),
                Some(_) => Err(StorageError::RefreshUnfinished {
                    key_id: key_id.clone(),
                }),
                None => {
                    key.leaving = Some(Leaving {
                        epoch,
                        origin,
                        committed: false,
                    });
                    Ok(())
                }
            }
        })
        .map(|_| ())
    }

    /// Records that the reshare to `epoch` that leaves this appliance out was committed
    /// (`session` if given must be its own). Nothing to do if it was recorded already.
    ///
    /// # Errors
    ///
    /// [`StorageError::UnknownKey`]; [`StorageError::WrongEpoch`] if no reshare to `epoch`
    /// leaves it out; [`StorageError::OtherSession`].
    pub fn commit_leaving(
        &self,
        key_id: &KeyId,
        epoch: u64,
        session: Option<&[u8; 16]>,
    ) -> Result<(), StorageError> {
        self.update_key(key_id, |key| match &mut key.leaving {
            Some(l) if l.epoch == epoch => {
                if session.is_some_and(|s| *s != l.origin.session) {
                    return Err(StorageError::OtherSession {
                        key_id: key_id.clone(),
                    });
                }
                l.committed = true;
                Ok(())
            }
            _ => Err(key.wrong_epoch(epoch)),
        })
        .map(|_| ())
    }

    /// Forgets a reshare to `epoch` that leaves this appliance out and failed before its
    /// commit (`session` if given must be its own): the key goes on as before. Nothing to
    /// do if none is recorded.
    ///
    /// # Errors
    ///
    /// [`StorageError::UnknownKey`]; [`StorageError::WrongEpoch`] if it was committed;
    /// [`StorageError::OtherSession`].
    pub fn discard_leaving(
        &self,
        key_id: &KeyId,
        epoch: u64,
        session: Option<&[u8; 16]>,
    ) -> Result<(), StorageError> {
        self.update_key(key_id, |key| match key.leaving {
            Some(l) if l.epoch == epoch => {
                if session.is_some_and(|s| *s != l.origin.session) {
                    return Err(StorageError::OtherSession {
                        key_id: key_id.clone(),
                    });
                }
                if l.committed {
                    return Err(key.wrong_epoch(epoch));
                }
                key.leaving = None;
                Ok(())
            }
            _ => Ok(()),
        })
        .map(|_| ())
    }

    /// Installs a share rebuilt by recovery as the key's active epoch, in one transaction:
    /// the key record is created if this appliance has none, and every epoch stored
    /// before (active, pending, retiring, all older than `input`'s) is erased with its
    /// epoch key. A crash leaves either the old state or the new one.
    ///
    /// # Errors
    ///
    /// As [`Storage::store_share`] for the input; [`StorageError::WrongEpoch`] if the key
    /// has an epoch as new as `input`'s already.
    pub fn install_recovered(&self, input: ShareInput) -> Result<(), StorageError> {
        let (sealed, tag) = self.seal_input(&input)?;
        let id = input.key_id.as_bytes();
        let epoch = input.epoch;
        let slot = share_key(&input.key_id, epoch);
        let sharing = input.sharing();
        let now = ittc_wire::now_unix_ms();
        let installed = (&self.inner.keys, &self.inner.shares)
            .transaction(|(keys, shares)| {
                let mut key = match keys.get(id)? {
                    Some(bytes) => {
                        let key: StoredKey = codec::decode(&bytes, "key record").map_err(abort)?;
                        key.check_same_key(&input).map_err(abort)?;
                        if key.epochs().any(|e| e >= epoch) {
                            return Err(abort(key.wrong_epoch(epoch)));
                        }
                        key
                    }
                    None => StoredKey::new(&input),
                };
                let mut erased = Vec::new();
                for old in key.epochs() {
                    if let Some(share) = shares.remove(share_key(&input.key_id, old))? {
                        let tag = StoredShare::decode(&share).map_err(abort)?.tag;
                        erased.push((input.key_id.clone(), old, tag));
                    }
                }
                key.active_epoch = Some(epoch);
                key.pending_epoch = None;
                key.pending_ready = false;
                key.retiring_epoch = None;
                key.refresh = None;
                key.active_since_unix_ms = Some(now);
                key.last_failure = None;
                key.sharings = vec![sharing.clone()];
                (key.threshold, key.parties) = (input.threshold, input.parties);
                key.leaving = None;
                keys.insert(id, codec::encode(&key).map_err(abort)?)?;
                shares.insert(slot.as_slice(), sealed.as_slice())?;
                Ok::<_, TxError>(erased)
            })
            .db();
        let erased = match installed {
            Ok(erased) => erased,
            Err(err) => {
                let _ = self
                    .inner
                    .epoch_keys
                    .destroy(&(input.key_id.clone(), epoch, tag));
                return Err(err);
            }
        };
        self.flush()?;
        for name in erased {
            tracing::info!(key = %name.0, epoch = name.1, "epoch erased: a newer one was recovered");
            self.inner.epoch_keys.destroy(&name)?;
        }
        Ok(())
    }

    /// Removes one epoch of a key: `choose` updates the record and returns the epoch to
    /// remove (or `None` for nothing to do); the share goes in the same transaction, the
    /// epoch key after the flush.
    fn end_epoch(
        &self,
        key_id: &KeyId,
        choose: impl Fn(&mut StoredKey) -> Result<Option<u64>, StorageError>,
    ) -> Result<Option<u64>, StorageError> {
        let id = key_id.as_bytes();
        let ended = (&self.inner.keys, &self.inner.shares)
            .transaction(|(keys, shares)| {
                let Some(bytes) = keys.get(id)? else {
                    return Err(abort(StorageError::UnknownKey {
                        key_id: key_id.clone(),
                    }));
                };
                let mut key: StoredKey = codec::decode(&bytes, "key record").map_err(abort)?;
                let Some(epoch) = choose(&mut key).map_err(abort)? else {
                    return Ok(None);
                };
                let tag = match shares.remove(share_key(key_id, epoch))? {
                    Some(share) => Some(StoredShare::decode(&share).map_err(abort)?.tag),
                    None => None,
                };
                if key.epochs().next().is_none() {
                    // A key that had only this epoch (a reshare that was to give it to
                    // this appliance): nothing of it is left.
                    keys.remove(id)?;
                } else {
                    keys.insert(id, codec::encode(&key).map_err(abort)?)?;
                }
                Ok::<_, TxError>(Some((epoch, tag)))
            })
            .db()?;
        let Some((epoch, tag)) = ended else {
            return Ok(None);
        };
        self.flush()?;
        if let Some(tag) = tag {
            self.inner
                .epoch_keys
                .destroy(&(key_id.clone(), epoch, tag))?;
        }
        Ok(Some(epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::super::EpochSlot;
    use super::super::test_support::*;
    use super::*;

    fn id(bytes: &[u8]) -> KeyId {
        KeyId::new(bytes.to_vec()).unwrap()
    }

    const SESSION: [u8; 16] = [9; 16];

    fn origin() -> Option<RefreshOrigin> {
        Some(RefreshOrigin {
            session: SESSION,
            coordinator: 1,
        })
    }

    /// A committed key `k` at epoch 1 and its refresh to epoch 2 stored as pending.
    fn refreshing(storage: &Storage) {
        storage.store_share(share_input(b"k", 1, 1)).unwrap();
        storage.commit_epoch(&id(b"k"), 1).unwrap();
        let mut next = share_input(b"k", 2, 1);
        next.refresh = origin();
        storage.store_share(next).unwrap();
    }

    fn serving(storage: &Storage, epoch: u64) -> bool {
        storage
            .share_in(&id(b"k"), epoch, EpochSlot::Serving)
            .unwrap()
            .is_some()
    }

    /// Appliance `me`'s share of key `k` from a reshare of epoch 1 to 3-of-5 (epoch 2).
    fn reshare_input(me: u8) -> ShareInput {
        ShareInput {
            threshold: 3,
            parties: 5,
            holders: vec![1, 2, 3, 4, 5],
            additive_holders: vec![1, 2, 3, 4, 5],
            refresh: origin(),
            ..share_input(b"k", 2, me)
        }
    }

    #[test]
    fn a_reshare_gives_a_new_holder_the_key_with_the_new_sharing_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 4);
        // A refresh does not create a key; a reshare's new holder does.
        assert!(matches!(
            storage.store_share(reshare_input(4)),
            Err(StorageError::UnknownKey { .. })
        ));
        let joining = ShareInput {
            joins: true,
            ..reshare_input(4)
        };
        storage.store_share(joining.clone()).unwrap();
        let key = storage.key(&id(b"k")).unwrap().unwrap();
        assert_eq!((key.active_epoch, key.pending_epoch), (None, Some(2)));
        let status = key.status();
        assert_eq!((status.threshold, status.parties), (3, 5));
        assert_eq!(status.holders, vec![1, 2, 3, 4, 5]);
        // Rolled back: nothing of the key is left.
        storage
            .discard_pending(&id(b"k"), 2, Some(&SESSION))
            .unwrap();
        assert_eq!(storage.key(&id(b"k")).unwrap(), None);
        assert_eq!(epoch_key_files(dir.path()), 0);
        // Committed: the key is active with the new sharing.
        storage.store_share(joining).unwrap();
        storage.mark_ready(&id(b"k"), 2, &SESSION).unwrap();
        storage.commit_epoch(&id(b"k"), 2).unwrap();
        storage
            .erase_retiring(&id(b"k"), 2, Some(&SESSION))
            .unwrap();
        let key = storage.key(&id(b"k")).unwrap().unwrap();
        assert_eq!(
            (key.active_epoch, key.threshold, key.parties),
            (Some(2), 3, 5)
        );
        assert!(serving(&storage, 2));
    }

    #[test]
    fn an_old_holder_moves_to_the_new_sharing_at_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage.store_share(share_input(b"k", 1, 1)).unwrap();
        storage.commit_epoch(&id(b"k"), 1).unwrap();
        storage.store_share(reshare_input(1)).unwrap();
        let key = storage.key(&id(b"k")).unwrap().unwrap();
        // Until the commit the key shows the active epoch's sharing; each epoch has its own.
        assert_eq!(key.status().threshold, 2);
        assert_eq!(key.sharing(1).threshold, 2);
        assert_eq!(key.sharing(2).threshold, 3);
        storage.mark_ready(&id(b"k"), 2, &SESSION).unwrap();
        storage.commit_epoch(&id(b"k"), 2).unwrap();
        let key = storage.key(&id(b"k")).unwrap().unwrap();
        assert_eq!(key.status().threshold, 3);
        assert_eq!(
            key.sharing(1).threshold,
            2,
            "the retiring epoch keeps its own"
        );
    }

    #[test]
    fn a_holder_left_out_waits_for_the_commit_then_erases_or_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 2);
        storage.store_share(share_input(b"k", 1, 2)).unwrap();
        storage.commit_epoch(&id(b"k"), 1).unwrap();
        let origin = origin().unwrap();
        // Only for the epoch after the active one.
        assert!(matches!(
            storage.mark_leaving(&id(b"k"), 3, origin),
            Err(StorageError::WrongEpoch { .. })
        ));
        storage.mark_leaving(&id(b"k"), 2, origin).unwrap();
        storage.mark_leaving(&id(b"k"), 2, origin).unwrap();
        // No refresh meanwhile, and the old epoch still answers.
        let mut next = share_input(b"k", 2, 2);
        next.refresh = Some(origin);
        assert!(matches!(
            storage.store_share(next),
            Err(StorageError::RefreshUnfinished { .. })
        ));
        assert!(serving(&storage, 1));
        // From another session: refused.
        assert!(matches!(
            storage.commit_leaving(&id(b"k"), 2, Some(&[1; 16])),
            Err(StorageError::OtherSession { .. })
        ));
        // Rolled back: the key goes on.
        storage
            .discard_leaving(&id(b"k"), 2, Some(&SESSION))
            .unwrap();
        assert_eq!(storage.key(&id(b"k")).unwrap().unwrap().leaving, None);
        // Committed: a discard is refused from then on.
        storage.mark_leaving(&id(b"k"), 2, origin).unwrap();
        storage
            .commit_leaving(&id(b"k"), 2, Some(&SESSION))
            .unwrap();
        assert!(matches!(
            storage.discard_leaving(&id(b"k"), 2, None),
            Err(StorageError::WrongEpoch { .. })
        ));
        assert!(
            storage
                .key(&id(b"k"))
                .unwrap()
                .unwrap()
                .leaving
                .unwrap()
                .committed
        );
        assert!(serving(&storage, 1));
    }

    #[test]
    fn a_recovered_epoch_replaces_every_older_one_and_creates_a_missing_key() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        refreshing(&storage);
        let files_before = epoch_key_files(dir.path());
        assert_eq!(files_before, 2);
        let mut recovered = share_input(b"k", 5, 1);
        recovered.secret.additive = None;
        recovered.additive_holders = vec![2, 3];
        // Not newer than what is stored: refused, nothing changes.
        let mut old = recovered.clone();
        old.epoch = 2;
        assert!(matches!(
            storage.install_recovered(old),
            Err(StorageError::WrongEpoch { .. })
        ));
        storage.install_recovered(recovered.clone()).unwrap();
        let key = storage.key(&id(b"k")).unwrap().unwrap();
        assert_eq!(
            (key.active_epoch, key.pending_epoch, key.retiring_epoch),
            (Some(5), None, None)
        );
        let sharing = key.sharing(5);
        assert_eq!(
            (sharing.additive_holders, sharing.own_additive),
            (vec![2, 3], false)
        );
        assert!(serving(&storage, 5) && !serving(&storage, 1));
        assert_eq!(storage.share(&id(b"k"), 1).unwrap(), None);
        assert_eq!(storage.share(&id(b"k"), 2).unwrap(), None);
        assert_eq!(epoch_key_files(dir.path()), 1);
        // A key this appliance never had (a replaced appliance).
        let mut fresh = share_input(b"new", 3, 1);
        fresh.secret.additive = None;
        storage.install_recovered(fresh).unwrap();
        assert_eq!(
            storage.key(&id(b"new")).unwrap().unwrap().active_epoch,
            Some(3)
        );
    }

    fn epoch_key_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("epoch-keys")).unwrap().count()
    }

    #[test]
    fn a_refresh_goes_pending_ready_committed_erased() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        refreshing(&storage);
        assert!(serving(&storage, 1) && !serving(&storage, 2));

        storage.mark_ready(&id(b"k"), 2, &SESSION).unwrap();
        assert!(serving(&storage, 1) && serving(&storage, 2));

        storage.commit_epoch(&id(b"k"), 2).unwrap();
        let key = storage.key(&id(b"k")).unwrap().unwrap();
        assert_eq!(
            (key.active_epoch, key.pending_epoch, key.retiring_epoch),
            (Some(2), None, Some(1))
        );
        assert!(key.last_refresh_unix_ms.is_some());
        assert!(serving(&storage, 1) && serving(&storage, 2));

        // A restart in between keeps all of it.
        drop(storage);
        let storage = open(dir.path(), 1);
        assert!(serving(&storage, 1) && serving(&storage, 2));

        storage
            .erase_retiring(&id(b"k"), 2, Some(&SESSION))
            .unwrap();
        assert!(!serving(&storage, 1) && serving(&storage, 2));
        assert_eq!(storage.share(&id(b"k"), 1).unwrap(), None);
        let key = storage.key(&id(b"k")).unwrap().unwrap();
        assert_eq!(key.retiring_epoch, None);
        assert_eq!(key.refresh, None);
        // Again: nothing to do.
        storage.erase_retiring(&id(b"k"), 2, None).unwrap();
        assert_eq!(storage.inner.shares.len(), 1);
        let tag = storage.share_tag(&id(b"k"), 2).unwrap().unwrap();
        assert_eq!(
            storage.inner.epoch_keys.list().unwrap(),
            vec![(id(b"k"), 2, tag)]
        );
    }

    #[test]
    fn a_refresh_that_fails_before_its_commit_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        refreshing(&storage);
        // Another session's discard, or of the active epoch, is refused.
        assert!(matches!(
            storage.discard_pending(&id(b"k"), 2, Some(&[1; 16])),
            Err(StorageError::OtherSession { .. })
        ));
        assert!(matches!(
            storage.discard_pending(&id(b"k"), 1, None),
            Err(StorageError::WrongEpoch { .. })
        ));
        storage
            .discard_pending(&id(b"k"), 2, Some(&SESSION))
            .unwrap();
        let key = storage.key(&id(b"k")).unwrap().unwrap();
        assert_eq!((key.active_epoch, key.pending_epoch), (Some(1), None));
        assert_eq!(key.refresh, None);
        assert_eq!(storage.share(&id(b"k"), 2).unwrap(), None);
        let tag = storage.share_tag(&id(b"k"), 1).unwrap().unwrap();
        assert_eq!(
            storage.inner.epoch_keys.list().unwrap(),
            vec![(id(b"k"), 1, tag)]
        );
        // Again: nothing to do.
        storage.discard_pending(&id(b"k"), 2, None).unwrap();
        // And a new refresh may start.
        let mut next = share_input(b"k", 2, 1);
        next.refresh = origin();
        storage.store_share(next).unwrap();
    }

    #[test]
    fn refresh_steps_check_epochs_and_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        refreshing(&storage);
        assert!(matches!(
            storage.mark_ready(&id(b"k"), 2, &[1; 16]),
            Err(StorageError::OtherSession { .. })
        ));
        assert!(matches!(
            storage.mark_ready(&id(b"k"), 3, &SESSION),
            Err(StorageError::WrongEpoch { .. })
        ));
        assert!(matches!(
            storage.erase_retiring(&id(b"k"), 2, None),
            Err(StorageError::WrongEpoch { .. })
        ));
        assert!(matches!(
            storage.mark_ready(&id(b"nope"), 2, &SESSION),
            Err(StorageError::UnknownKey { .. })
        ));
        // No refresh may start while one is pending or retiring.
        let mut again = share_input(b"k", 3, 1);
        again.refresh = origin();
        assert!(matches!(
            storage.store_share(again.clone()),
            Err(StorageError::PendingEpoch { .. })
        ));
        storage.commit_epoch(&id(b"k"), 2).unwrap();
        assert!(matches!(
            storage.store_share(again.clone()),
            Err(StorageError::RefreshUnfinished { .. })
        ));
        assert!(matches!(
            storage.erase_retiring(&id(b"k"), 2, Some(&[1; 16])),
            Err(StorageError::OtherSession { .. })
        ));
        storage.erase_retiring(&id(b"k"), 2, None).unwrap();
        storage.store_share(again).unwrap();
        // A refresh epoch must follow the active one.
        storage.discard_pending(&id(b"k"), 3, None).unwrap();
        let mut skip = share_input(b"k", 4, 1);
        skip.refresh = origin();
        assert!(matches!(
            storage.store_share(skip),
            Err(StorageError::WrongEpoch { .. })
        ));
    }

    #[test]
    fn failures_are_recorded_until_a_refresh_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        refreshing(&storage);
        storage
            .record_refresh_failure(&id(b"k"), &"x".repeat(5000))
            .unwrap();
        let failure = storage.key(&id(b"k")).unwrap().unwrap().last_failure;
        assert_eq!(failure.map(|(_, r)| r.len()), Some(1024));
        storage
            .record_refresh_failure(&id(b"nope"), "gone")
            .unwrap();
        storage.commit_epoch(&id(b"k"), 2).unwrap();
        assert_eq!(storage.key(&id(b"k")).unwrap().unwrap().last_failure, None);
    }

    /// Every 16-byte window of `needle` found in any file under `dir`.
    fn on_disk(dir: &std::path::Path, needle: &[u8]) -> bool {
        fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files(&path, out);
                } else {
                    out.push(std::fs::read(&path).unwrap());
                }
            }
        }
        let mut contents = Vec::new();
        files(dir, &mut contents);
        needle
            .windows(16)
            .any(|w| contents.iter().any(|f| f.windows(16).any(|x| x == w)))
    }

    #[test]
    fn an_erased_epoch_cannot_be_opened_with_anything_left_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        refreshing(&storage);
        let old = share_key(&id(b"k"), 1);
        let record = storage.inner.shares.get(&old).unwrap().unwrap().to_vec();
        let stored = StoredShare::decode(&record).unwrap();
        let name = (id(b"k"), 1, stored.tag);
        let epoch_key = storage
            .inner
            .epoch_keys
            .get(&storage.inner.sealing_key, &name)
            .unwrap()
            .unwrap();
        let raw_key = epoch_key.as_bytes().to_vec();
        let key_file = std::fs::read(storage.inner.epoch_keys.dir().join(format!(
            "{}-1-{:016x}",
            id(b"k"),
            stored.tag
        )))
        .unwrap();
        drop(epoch_key);

        storage.mark_ready(&id(b"k"), 2, &SESSION).unwrap();
        storage.commit_epoch(&id(b"k"), 2).unwrap();
        storage
            .erase_retiring(&id(b"k"), 2, Some(&SESSION))
            .unwrap();
        storage.flush().unwrap();
        drop(storage);
        let storage = open(dir.path(), 1);

        // The epoch key and its sealed file are gone from every file; the sealed share
        // itself may well linger in sled's log, which is why its key had to go.
        assert!(
            !on_disk(dir.path(), &raw_key),
            "the old epoch key is on disk"
        );
        assert!(
            !on_disk(dir.path(), &key_file),
            "the old key file's bytes are on disk"
        );
        assert!(
            storage
                .inner
                .epoch_keys
                .get(&storage.inner.sealing_key, &name)
                .unwrap()
                .is_none()
        );
        let aad = super::super::seal::share_aad(1, &id(b"k"), 1);
        assert!(matches!(
            storage.inner.sealing_key.unseal(&stored.sealed, &aad),
            Err(StorageError::Unseal)
        ));
        for other in storage.inner.epoch_keys.list().unwrap() {
            let key = storage
                .inner
                .epoch_keys
                .get(&storage.inner.sealing_key, &other)
                .unwrap()
                .unwrap();
            assert!(matches!(
                key.unseal(&stored.sealed, &aad),
                Err(StorageError::Unseal)
            ));
        }
        // The key itself still opens it: the check above can fail.
        let key = crate::storage::SealingKey::from_bytes(raw_key.try_into().unwrap());
        assert!(key.unseal(&stored.sealed, &aad).is_ok());
    }
}
