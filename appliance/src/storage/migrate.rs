//! Opening a database of an older schema: version 2 (before proactive refresh) or 3
//! (before reshares) becomes version 4 in one transaction.
//!
//! Version 3 kept one threshold and number of holders per key, and each epoch's additive
//! layer; version 4 keeps each epoch's sharing (threshold, holders, additive layer) and a
//! reshare that leaves the appliance out. The migration rewrites the key records only:
//! each epoch's sharing is the key's threshold among `1..=parties`.
//!
//! Version 2 kept a key's active and pending epochs only, and sealed each share under the
//! sealing key itself. Version 3 added the refresh state to every key record and seals each
//! epoch's secrets under an epoch key of its own (`epoch_keys.rs`). The migration unseals
//! every share, seals it again under a new epoch key (written to its file first), and
//! rewrites every key record, every share and the schema version in one transaction: a
//! crash leaves version 2, and epoch key files that no record names, which the next start
//! destroys. The
//! shares of such keys have no additive share; their first refresh converts them
//! (`ittc_threshold::refresh::legacy`).
//!
//! The version-2 sealed shares may stay in sled's log segments until sled reuses them,
//! readable with the sealing key: the erasure of refreshed epochs covers epochs sealed
//! from version 3 on (docs/security.md).

use bincode::{Decode, Encode};
use ittc_wire::KeyId;
use sled::Transactional;
use zeroize::Zeroizing;

use super::error::{SledResultExt, TxError};
use super::keys::{EpochSecret, EpochSharing, RefreshOrigin, StoredKey, share_key};
use super::seal::{Sealed, share_aad};
use super::{Inner, META_SCHEMA, SCHEMA_VERSION, Storage, StorageError, codec};

/// The key record of schema version 2.
#[derive(Encode, Decode)]
struct StoredKeyV2 {
    key_id: KeyId,
    label: String,
    modulus: Vec<u8>,
    public_exponent: Vec<u8>,
    threshold: u8,
    parties: u8,
    active_epoch: Option<u64>,
    pending_epoch: Option<u64>,
}

/// An epoch's additive layer in schema version 3.
#[derive(Encode, Decode)]
struct AdditiveLayerV3 {
    epoch: u64,
    holders: Vec<u8>,
    own: bool,
}

/// The key record of schema version 3.
#[derive(Encode, Decode)]
struct StoredKeyV3 {
    key_id: KeyId,
    label: String,
    modulus: Vec<u8>,
    public_exponent: Vec<u8>,
    threshold: u8,
    parties: u8,
    active_epoch: Option<u64>,
    pending_epoch: Option<u64>,
    pending_ready: bool,
    retiring_epoch: Option<u64>,
    refresh: Option<RefreshOrigin>,
    active_since_unix_ms: Option<u64>,
    last_refresh_unix_ms: Option<u64>,
    last_failure: Option<(u64, String)>,
    layers: Vec<AdditiveLayerV3>,
}

/// Rewrites a version-3 database as version 4 (see the module docs).
pub(super) fn from_v3(storage: &Storage) -> Result<(), StorageError> {
    let inner: &Inner = &storage.inner;
    let mut records = Vec::new();
    for bytes in inner.keys.iter().values() {
        let old: StoredKeyV3 = codec::decode(&bytes.db()?, "version 3 key record")?;
        let mut new = StoredKey {
            active_epoch: old.active_epoch,
            pending_epoch: old.pending_epoch,
            pending_ready: old.pending_ready,
            retiring_epoch: old.retiring_epoch,
            refresh: old.refresh,
            active_since_unix_ms: old.active_since_unix_ms,
            last_refresh_unix_ms: old.last_refresh_unix_ms,
            last_failure: old.last_failure,
            ..StoredKey::empty(
                old.key_id,
                old.label,
                old.modulus,
                old.public_exponent,
                (old.threshold, old.parties),
            )
        };
        for epoch in new.epochs().collect::<Vec<_>>() {
            let layer = old.layers.iter().find(|l| l.epoch == epoch);
            new.set_sharing(EpochSharing {
                epoch,
                threshold: old.threshold,
                parties: old.parties,
                holders: (1..=old.parties).collect(),
                additive_holders: layer.map(|l| l.holders.clone()).unwrap_or_default(),
                own_additive: layer.is_some_and(|l| l.own),
            });
        }
        records.push((new.key_id.as_bytes().to_vec(), codec::encode(&new)?));
    }
    write_migrated(storage, &records, &[])?;
    tracing::info!(
        keys = records.len(),
        "database migrated to schema version {SCHEMA_VERSION}: a sharing per epoch"
    );
    Ok(())
}

/// Rewrites a version-2 database as version 4 (see the module docs).
pub(super) fn from_v2(storage: &Storage) -> Result<(), StorageError> {
    let inner: &Inner = &storage.inner;
    let mut records = Vec::new();
    let mut shares = Vec::new();
    for bytes in inner.keys.iter().values() {
        let old: StoredKeyV2 = codec::decode(&bytes.db()?, "version 2 key record")?;
        for epoch in old.active_epoch.into_iter().chain(old.pending_epoch) {
            let slot = share_key(&old.key_id, epoch);
            let sealed = inner.shares.get(&slot).db()?.ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "the share of key {} for epoch {epoch} is missing",
                    old.key_id
                ))
            })?;
            let sealed: Sealed = codec::decode(&sealed, "sealed share")?;
            let aad = share_aad(inner.appliance_index, &old.key_id, epoch);
            let share = inner.sealing_key.unseal(&sealed, &aad)?;
            let secret = EpochSecret {
                additive: None,
                share: Zeroizing::new(share.to_vec()).to_vec(),
            };
            shares.push((slot, storage.seal_epoch(&old.key_id, epoch, &secret)?.0));
        }
        let new = StoredKey {
            active_epoch: old.active_epoch,
            pending_epoch: old.pending_epoch,
            ..StoredKey::empty(
                old.key_id,
                old.label,
                old.modulus,
                old.public_exponent,
                (old.threshold, old.parties),
            )
        };
        records.push((new.key_id.as_bytes().to_vec(), codec::encode(&new)?));
    }
    write_migrated(storage, &records, &shares)?;
    tracing::info!(
        keys = records.len(),
        shares = shares.len(),
        "database migrated to schema version {SCHEMA_VERSION}: shares sealed under epoch keys"
    );
    Ok(())
}

/// Writes the migrated key `records` and `shares` and this build's schema version in one
/// transaction, and flushes.
fn write_migrated(
    storage: &Storage,
    records: &[(Vec<u8>, Vec<u8>)],
    shares: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), StorageError> {
    let inner: &Inner = &storage.inner;
    let schema = codec::encode(&SCHEMA_VERSION)?;
    (&inner.meta, &inner.keys, &inner.shares)
        .transaction(|(meta, keys, share_tree)| {
            for (id, record) in records {
                keys.insert(id.as_slice(), record.as_slice())?;
            }
            for (slot, sealed) in shares {
                share_tree.insert(slot.as_slice(), sealed.as_slice())?;
            }
            meta.insert(META_SCHEMA, schema.as_slice())?;
            Ok::<_, TxError>(())
        })
        .db()?;
    storage.flush()
}

/// A key as a version-2 database held it (for [`write_schema_2`]).
#[doc(hidden)]
pub struct SchemaTwoKey<'a> {
    /// The key.
    pub key_id: &'a KeyId,
    /// Its label.
    pub label: &'a str,
    /// `N`, big-endian.
    pub modulus: &'a [u8],
    /// `e`, big-endian.
    pub public_exponent: &'a [u8],
    /// k.
    pub threshold: u8,
    /// n.
    pub parties: u8,
    /// The active epoch.
    pub epoch: u64,
    /// This appliance's share, big-endian.
    pub share: &'a [u8],
}

/// Writes the database an older release (schema version 2) left in `dir`, holding one
/// committed key: for tests of the migration and of the conversion of such keys, which
/// need a database this build no longer writes.
///
/// # Errors
///
/// The store's, if sled cannot write it.
#[doc(hidden)]
pub fn write_schema_2(
    dir: &std::path::Path,
    sealing_key: super::SealingKey,
    appliance_index: u8,
    key: &SchemaTwoKey<'_>,
) -> Result<(), StorageError> {
    use super::error::SledResultExt as _;
    use super::{KEY_CHECK_PLAINTEXT, META_INDEX, META_KEY_CHECK, seal};
    let db = sled::Config::new().path(dir).open().db()?;
    let meta = db.open_tree("meta").db()?;
    meta.insert(META_SCHEMA, codec::encode(&2u32)?).db()?;
    meta.insert(META_INDEX, codec::encode(&appliance_index)?)
        .db()?;
    let check = sealing_key.seal(KEY_CHECK_PLAINTEXT, &seal::check_aad(appliance_index))?;
    meta.insert(META_KEY_CHECK, codec::encode(&check)?).db()?;
    let record = StoredKeyV2 {
        key_id: key.key_id.clone(),
        label: key.label.to_owned(),
        modulus: key.modulus.to_vec(),
        public_exponent: key.public_exponent.to_vec(),
        threshold: key.threshold,
        parties: key.parties,
        active_epoch: Some(key.epoch),
        pending_epoch: None,
    };
    db.open_tree("keys")
        .db()?
        .insert(key.key_id.as_bytes(), codec::encode(&record)?)
        .db()?;
    let sealed = sealing_key.seal(
        key.share,
        &share_aad(appliance_index, key.key_id, key.epoch),
    )?;
    db.open_tree("shares")
        .db()?
        .insert(share_key(key.key_id, key.epoch), codec::encode(&sealed)?)
        .db()?;
    db.flush().db()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn a_schema_3_database_gets_a_sharing_per_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage.store_share(share_input(b"k", 1, 1)).unwrap();
        storage
            .commit_epoch(&KeyId::new(b"k".to_vec()).unwrap(), 1)
            .unwrap();
        // Rewrite the record as a version-3 database held it.
        let key_id = KeyId::new(b"k".to_vec()).unwrap();
        let v3 = StoredKeyV3 {
            key_id: key_id.clone(),
            label: "signing".into(),
            modulus: vec![0xc5; 256],
            public_exponent: vec![1, 0, 1],
            threshold: 2,
            parties: 3,
            active_epoch: Some(1),
            pending_epoch: None,
            pending_ready: false,
            retiring_epoch: None,
            refresh: None,
            active_since_unix_ms: Some(5),
            last_refresh_unix_ms: None,
            last_failure: None,
            layers: vec![AdditiveLayerV3 {
                epoch: 1,
                holders: vec![1, 2],
                own: true,
            }],
        };
        storage
            .inner
            .keys
            .insert(key_id.as_bytes(), codec::encode(&v3).unwrap())
            .unwrap();
        storage
            .inner
            .meta
            .insert(META_SCHEMA, codec::encode(&3u32).unwrap())
            .unwrap();
        drop(storage);
        let storage = open(dir.path(), 1);
        let key = storage.key(&key_id).unwrap().unwrap();
        let sharing = key.sharing(1);
        assert_eq!(
            (
                sharing.threshold,
                sharing.parties,
                sharing.holders,
                sharing.additive_holders,
                sharing.own_additive
            ),
            (2, 3, vec![1, 2, 3], vec![1, 2], true)
        );
        assert_eq!(key.active_since_unix_ms, Some(5));
        assert_eq!(storage.share(&key_id, 1).unwrap().unwrap(), secret_for(1));
    }

    #[test]
    fn a_schema_2_database_is_migrated_and_its_share_kept() {
        let dir = tempfile::tempdir().unwrap();
        let share: Vec<u8> = (0..300).map(|i| (i * 7) as u8).collect();
        let key_id = KeyId::new(b"old".to_vec()).unwrap();
        write_schema_2(
            dir.path(),
            test_key(),
            1,
            &SchemaTwoKey {
                key_id: &key_id,
                label: "from before refresh",
                modulus: &[0xc5; 256],
                public_exponent: &[1, 0, 1],
                threshold: 2,
                parties: 3,
                epoch: 4,
                share: &share,
            },
        )
        .unwrap();
        let storage = open(dir.path(), 1);
        let key = storage.key(&key_id).unwrap().unwrap();
        assert_eq!((key.active_epoch, key.pending_epoch), (Some(4), None));
        assert_eq!(key.label, "from before refresh");
        let secret = storage.share(&key_id, 4).unwrap().unwrap();
        assert_eq!(secret.share, share);
        assert!(secret.additive.is_none());
        let schema: u32 = codec::decode(
            &storage.inner.meta.get(META_SCHEMA).unwrap().unwrap(),
            "schema",
        )
        .unwrap();
        assert_eq!(schema, SCHEMA_VERSION);
        assert_eq!(storage.inner.epoch_keys.list().unwrap().len(), 1);
        // Opening again changes nothing.
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.share(&key_id, 4).unwrap().unwrap().share, share);
        assert_eq!(storage.inner.epoch_keys.list().unwrap().len(), 1);
    }
}
