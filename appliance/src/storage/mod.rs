//! The appliance's persistent state: shares, PINs, token objects and the audit log, in
//! one sled database. Nothing outside this module touches sled; no sled type appears in
//! its API.
//!
//! # What is stored where
//!
//! One sled database in the directory given to [`Storage::open`], with one tree per kind
//! of record. Values are bincode 2 (little-endian, fixed-size integers) of small private
//! record types; integers in tree keys are big-endian so that keys sort by value.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `schema` | the schema version ([`SCHEMA_VERSION`]) |
//! | `meta` | `appliance_index` | this appliance's index, fixed at creation |
//! | `meta` | `key_check` | a constant sealed under the sealing key |
//! | `meta` | `audit_head` | the audit chain's [`AuditHead`] |
//! | `meta` | `audit_base` | the [`AuditHead`] after the last entry exported to files (`audit_export.rs`); absent while none is |
//! | `keys` | key id | a key's public part: label, modulus, public exponent, threshold, parties, active epoch (none until the first commit) and pending epoch |
//! | `shares` | key id length (1 byte), key id, epoch (8 bytes) | the share of that epoch, sealed |
//! | `pins` | 0 (user) or 1 (security officer) | the PIN's Argon2id PHC string, failure count, lock flag |
//! | `objects` | object id (8 bytes) | the [`ittc_wire::TokenObject`], as the wire encodes it |
//! | `object_versions` | object id (8 bytes) | the object's [`ittc_wire::ObjectVersion`]; with no object in `objects`, a tombstone (none for an object stored before versions) |
//! | `revoked` | certificate serial (big-endian, no leading zero byte) | the deny-list entry's label and time |
//! | `meta` | `public_state_taking` | present while the public state is being taken from a peer (`public_state.rs`) |
//! | `audit` | sequence number (8 bytes) | an [`AuditEntry`] with its sequence number, previous hash and hash; from the base on |
//!
//! Audit entries past the retention leave the database for JSON-lines files in the export
//! folder ([`StorageOptions::audit_export_dir`]; `audit_export.rs` has the format).
//!
//! # What is sealed
//!
//! Shares, and the key check value, are sealed with AES-256-GCM under the [`SealingKey`]
//! with a fresh random 96-bit nonce each. A share's additional data binds it to the
//! appliance index, the key id and the epoch, so a sealed share copied to another key,
//! epoch or appliance fails to unseal ([`StorageError::Unseal`], without detail). The
//! check value, sealed when the database is created, makes [`Storage::open`] with the wrong
//! key fail ([`StorageError::WrongSealingKey`]) before anything else happens. The sealing
//! key itself is never written into the database. Unsealed shares are returned in
//! [`Zeroizing`](zeroize::Zeroizing) buffers, and every buffer that held a plaintext share
//! is zeroized.
//!
//! Everything else is stored in clear: public key parts, token objects (public by design:
//! every appliance holds a replica), PIN hashes (slow salted Argon2id, by design), the
//! certificate deny-list and the audit log.
//!
//! # What is flushed when
//!
//! Every mutating call flushes the database (`fsync`) before it returns `Ok`: a change is
//! durable before it is acknowledged. The one exception is
//! [`Storage::audit_append_start`], which asks the store's flush thread for a flush and
//! hands back a [`PendingFlush`] (entries asked for while a flush runs share the next one,
//! `flusher.rs`); the caller waits for it before it acknowledges anything, and
//! may work in the meantime (a partial operation exponentiates while its entry goes to
//! disk). Multi-record changes (a share with its key record, a commit with the erasure of
//! the previous share, a PIN failure count with its lock) are sled transactions, so a
//! crash leaves all or none of them; an audit entry and the head after it are two writes,
//! and an entry whose head a crash lost is adopted at the next start (see `audit.rs`). An
//! audit export `fsync`s its file lines before the transaction that removes those entries
//! and moves the base, and finishes an export that a crash interrupted before it does
//! anything else (see `audit_export.rs`).
//! [`Storage::check_pin`] counts an attempt as a failure and flushes that *before* it
//! computes the hash, and clears it again when the PIN is right: an attempt interrupted by
//! a crash (or a power cut timed by an attacker) counts as a failure, and parallel attempts
//! cannot compute more hashes than the limit allows.
//!
//! # Concurrency
//!
//! [`Storage`] is cheap to clone (an `Arc`), `Send` and `Sync`; the daemon calls it from
//! many threads. Read-modify-write sequences are transactions. Audit appends are serialized
//! by a mutex around the cached head (no chain reads); the flush happens after the mutex is
//! released, so concurrent appends share `fsync`s. Audit exports and verifications are
//! serialized by a lock of their own, which appends never take; an export takes the head
//! mutex only to copy the head.
//!
//! # What this module does not do
//!
//! * It does not decide who may do what (the handlers check roles and login state), nor
//!   enforce a PIN policy beyond the attempt limit (length and character rules are the
//!   handlers').
//! * It does not log; its errors never contain secrets.
//! * It does not replicate objects or read them from a quorum; that is the module's job.
//!   It keeps the newest version of each object it is sent, and refuses an older one.
//! * It does not yet discard the pending epoch of a committed key (a failed refresh):
//!   proactive refresh will add that. An import that was never committed is discarded by
//!   [`Storage::delete_key`].
//! * It does not guarantee that erased bytes leave the disk: sled is log-structured, and a
//!   deleted record may stay in a log segment until sled reuses it. Deleted shares stay
//!   sealed there, so they are as safe as the sealing key.
//! * The audit chain detects a modified, missing or reordered entry; it cannot detect a
//!   consistent rewrite of the chain's tail by someone who can write the database. Anchor
//!   the head elsewhere (the status response reports it) to detect that.

mod audit;
mod audit_export;
mod codec;
mod epoch_keys;
mod epochs;
mod error;
mod flusher;
mod keys;
mod migrate;
mod objects;
mod pin;
mod public_state;
mod revoked;
mod seal;
#[cfg(test)]
mod test_support;

use core::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use audit::{AuditEntry, AuditHead, AuditReport, MAX_AUDIT_FIELD_LEN};
pub use audit_export::{ExportOutcome, ExportPolicy};
pub use error::StorageError;
pub use keys::{EpochSecret, EpochSharing, EpochSlot, KeyInfo, Leaving, RefreshOrigin, ShareInput};
#[doc(hidden)]
pub use migrate::{SchemaTwoKey, write_schema_2};
pub use pin::{PinCheck, PinStatus};
pub use public_state::Adopted;
pub use seal::{SEALING_KEY_LEN, SealingKey};

use error::{SledResultExt, TxError, abort};

/// The schema version this build writes and accepts.
///
/// 2: a key's active epoch is optional (a key is stored pending and committed later).
/// 3: proactive refresh: a retiring epoch and refresh state per key; each epoch's secrets
/// (share, additive share, form) sealed under an epoch key of its own. A version-2
/// database is migrated when opened (`migrate.rs`).
/// 4: reshares: each epoch's sharing (threshold, holders) with its additive layer, and a
/// reshare that leaves this appliance out. A version-3 database is migrated when opened.
pub const SCHEMA_VERSION: u32 = 4;

/// The oldest schema version [`Storage::open`] migrates.
const OLDEST_MIGRATED: u32 = 2;

pub(super) const META_SCHEMA: &[u8] = b"schema";
pub(super) const META_INDEX: &[u8] = b"appliance_index";
pub(super) const META_KEY_CHECK: &[u8] = b"key_check";

/// The plaintext of the key check value.
pub(super) const KEY_CHECK_PLAINTEXT: &[u8] = b"ittc sealing key check";

/// Tunables of [`Storage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// Wrong PINs in a row after which the PIN is locked (at least 1; default 10).
    pub max_pin_failures: u32,
    /// Argon2id memory cost in KiB for new PIN hashes (default 19 MiB, OWASP's minimum).
    pub argon2_m_cost_kib: u32,
    /// Argon2id iterations for new PIN hashes (default 2).
    pub argon2_t_cost: u32,
    /// Argon2id parallelism for new PIN hashes (default 1).
    pub argon2_p_cost: u32,
    /// How long a login's PIN, once proven by the hash, is accepted again without it
    /// (default 5 minutes; zero: never). See `pin.rs`.
    pub pin_remember: std::time::Duration,
    /// The most the database keeps cached in memory, bytes (default 64 MiB; sled's own
    /// default, 1 GiB, would let the resident size grow with the audit log).
    pub cache_bytes: u64,
    /// The folder of the audit export files ([`Storage::audit_export`] writes them,
    /// [`Storage::audit_verify`] reads them); `None`: the store exports nothing, and its
    /// chain must start in the database.
    pub audit_export_dir: Option<PathBuf>,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            max_pin_failures: 10,
            argon2_m_cost_kib: argon2::Params::DEFAULT_M_COST,
            argon2_t_cost: argon2::Params::DEFAULT_T_COST,
            argon2_p_cost: argon2::Params::DEFAULT_P_COST,
            pin_remember: std::time::Duration::from_secs(300),
            cache_bytes: 64 << 20,
            audit_export_dir: None,
        }
    }
}

/// The appliance's store. See the module docs for what it keeps where.
///
/// Cloning is cheap and every clone is the same store.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    meta: sled::Tree,
    keys: sled::Tree,
    shares: sled::Tree,
    pins: sled::Tree,
    objects: sled::Tree,
    /// Every object's version, tombstones included (`objects.rs`).
    object_versions: sled::Tree,
    audit: sled::Tree,
    /// The certificate deny-list (`revoked.rs`).
    revoked: sled::Tree,
    sealing_key: SealingKey,
    /// One key per share epoch, in files outside the database.
    epoch_keys: epoch_keys::EpochKeys,
    appliance_index: u8,
    max_pin_failures: u32,
    pin_params: argon2::Params,
    /// The audit head, cached; appends hold this lock (see the module docs).
    audit_head: Mutex<AuditHead>,
    /// Flushes for the audit entries of partial operations, grouped.
    flusher: flusher::Flusher,
    /// The audit export folder and its lock, if the store has one.
    audit_export: Option<audit_export::ExportDir>,
    /// Held through each PIN check (`pin.rs`): one at a time.
    pin_check: Mutex<()>,
    /// The PINs proven recently (`pin.rs`).
    remembered: Mutex<pin::Remembered>,
    /// Argon2id verifications so far, for the tests of the PINs remembered.
    #[cfg(test)]
    pin_hashes: std::sync::atomic::AtomicU32,
}

impl Storage {
    /// Opens the database in `dir`, creating it (and the directory) if absent.
    ///
    /// A new database records [`SCHEMA_VERSION`], `appliance_index` and a check value
    /// sealed under `key`. An existing one must have the same schema version and appliance
    /// index, and its check value must unseal under `key`.
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] for an appliance index of 0, a `max_pin_failures` of 0 or
    /// Argon2 parameters out of range; [`StorageError::Schema`],
    /// [`StorageError::WrongAppliance`] or [`StorageError::WrongSealingKey`] for a database
    /// that is not this appliance's; [`StorageError::Io`] if the directory cannot be used
    /// (another process holding the database included); [`StorageError::Corrupt`] or
    /// [`StorageError::Db`] otherwise.
    pub fn open(
        dir: &Path,
        key: SealingKey,
        appliance_index: u8,
        opts: StorageOptions,
    ) -> Result<Self, StorageError> {
        if appliance_index == 0 {
            return Err(StorageError::Invalid(
                "the appliance index must be at least 1",
            ));
        }
        if opts.max_pin_failures == 0 {
            return Err(StorageError::Invalid("max_pin_failures must be at least 1"));
        }
        let pin_params = argon2::Params::new(
            opts.argon2_m_cost_kib,
            opts.argon2_t_cost,
            opts.argon2_p_cost,
            None,
        )
        .map_err(|_| StorageError::Invalid("Argon2 parameters out of range"))?;

        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes)
            .open()
            .db()?;
        let tree = |name: &str| db.open_tree(name).db();
        let epoch_keys = epoch_keys::EpochKeys::open(dir, appliance_index)?;
        let inner = Inner {
            meta: tree("meta")?,
            keys: tree("keys")?,
            shares: tree("shares")?,
            pins: tree("pins")?,
            objects: tree("objects")?,
            object_versions: tree("object_versions")?,
            audit: tree("audit")?,
            revoked: tree("revoked")?,
            db: db.clone(),
            sealing_key: key,
            epoch_keys,
            appliance_index,
            max_pin_failures: opts.max_pin_failures,
            pin_params,
            audit_head: Mutex::new(AuditHead::GENESIS),
            flusher: flusher::Flusher::start(db.clone())?,
            audit_export: opts.audit_export_dir.map(audit_export::ExportDir::new),
            pin_check: Mutex::new(()),
            remembered: Mutex::new(pin::Remembered::new(opts.pin_remember)),
            #[cfg(test)]
            pin_hashes: std::sync::atomic::AtomicU32::new(0),
        };
        let schema = inner.initialize_or_check()?;
        let head = audit::recover_head(&inner.audit, &inner.meta)?;
        let storage = Self {
            inner: Arc::new(inner),
        };
        *storage.audit_lock() = head;
        match schema {
            OLDEST_MIGRATED => migrate::from_v2(&storage)?,
            3 => migrate::from_v3(&storage)?,
            _ => {}
        }
        storage.destroy_orphan_epoch_keys()?;
        Ok(storage)
    }

    /// Destroys the epoch keys that no key record names (left by a crash between an
    /// erasure's commit and the key's destruction, or by a store that failed).
    fn destroy_orphan_epoch_keys(&self) -> Result<(), StorageError> {
        let mut named = std::collections::HashSet::new();
        for bytes in self.inner.keys.iter().values() {
            let key: keys::StoredKey = codec::decode(&bytes.db()?, "key record")?;
            for epoch in key.epochs() {
                if let Some(tag) = self.share_tag(&key.key_id, epoch)? {
                    named.insert((key.key_id.clone(), epoch, tag));
                }
            }
        }
        for name in self.inner.epoch_keys.list()? {
            if !named.contains(&name) {
                tracing::info!(key = %name.0, epoch = name.1, "destroying an epoch key no record names");
                self.inner.epoch_keys.destroy(&name)?;
            }
        }
        Ok(())
    }

    /// This appliance's index, as recorded in the database.
    pub fn appliance_index(&self) -> u8 {
        self.inner.appliance_index
    }

    /// The database's size on disk, in bytes (sled's estimate: its files).
    ///
    /// # Errors
    ///
    /// [`StorageError::Db`].
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.inner.db.size_on_disk().db()
    }

    /// Flushes every change so far to disk.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.inner.db.flush().db()?;
        Ok(())
    }

    /// Asks the store's flush thread to flush every change so far and returns at once;
    /// the changes are durable when [`PendingFlush::wait`] returns `Ok`.
    fn flush_start(&self) -> PendingFlush {
        PendingFlush(self.inner.flusher.ask())
    }
}

/// A flush asked of the store's flush thread (see [`Storage::audit_append_start`]).
#[must_use = "the change is durable only once the flush has been waited for"]
pub struct PendingFlush(flusher::Ticket);

impl PendingFlush {
    /// Blocks until a flush that started after this one was asked has finished.
    ///
    /// # Errors
    ///
    /// [`StorageError::Io`] (or another of sled's errors) if sled could not write or sync
    /// its log, in this flush or an earlier one.
    pub fn wait(self) -> Result<(), StorageError> {
        self.0.wait()
    }
}

impl fmt::Debug for PendingFlush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingFlush")
    }
}

impl Inner {
    /// Writes the meta records of a new database, or checks those of an existing one;
    /// returns its schema version ([`SCHEMA_VERSION`], or an older one from
    /// [`OLDEST_MIGRATED`] on for a database the caller migrates).
    fn initialize_or_check(&self) -> Result<u32, StorageError> {
        if self.meta.get(META_SCHEMA).db()?.is_none() {
            self.initialize()?;
        }
        let schema = self
            .meta
            .get(META_SCHEMA)
            .db()?
            .ok_or_else(|| missing("schema version"))?;
        let found: u32 = codec::decode(&schema, "schema version")?;
        if !(OLDEST_MIGRATED..=SCHEMA_VERSION).contains(&found) {
            return Err(StorageError::Schema {
                found,
                expected: SCHEMA_VERSION,
            });
        }
        let index = self
            .meta
            .get(META_INDEX)
            .db()?
            .ok_or_else(|| missing("appliance index"))?;
        let stored: u8 = codec::decode(&index, "appliance index")?;
        if stored != self.appliance_index {
            return Err(StorageError::WrongAppliance {
                stored,
                given: self.appliance_index,
            });
        }
        let check = self
            .meta
            .get(META_KEY_CHECK)
            .db()?
            .ok_or_else(|| missing("key check value"))?;
        let check: seal::Sealed = codec::decode(&check, "key check value")?;
        match self
            .sealing_key
            .unseal(&check, &seal::check_aad(self.appliance_index))
        {
            Ok(plain) if plain.as_slice() == KEY_CHECK_PLAINTEXT => Ok(found),
            Ok(_) | Err(StorageError::Unseal) => Err(StorageError::WrongSealingKey),
            Err(other) => Err(other),
        }
    }

    /// Writes the meta records of a new database; refuses a database that has records but
    /// no schema version.
    fn initialize(&self) -> Result<(), StorageError> {
        let trees = [
            &self.meta,
            &self.keys,
            &self.shares,
            &self.pins,
            &self.objects,
            &self.object_versions,
            &self.audit,
            &self.revoked,
        ];
        if trees.iter().any(|tree| !tree.is_empty()) {
            return Err(missing("schema version"));
        }
        let schema = codec::encode(&SCHEMA_VERSION)?;
        let index = codec::encode(&self.appliance_index)?;
        let check = self
            .sealing_key
            .seal(KEY_CHECK_PLAINTEXT, &seal::check_aad(self.appliance_index))?;
        let check = codec::encode(&check)?;
        self.meta
            .transaction(|meta| {
                if meta.get(META_SCHEMA)?.is_some() {
                    return Err(abort(missing("schema version")));
                }
                meta.insert(META_SCHEMA, schema.as_slice())?;
                meta.insert(META_INDEX, index.as_slice())?;
                meta.insert(META_KEY_CHECK, check.as_slice())?;
                Ok::<_, TxError>(())
            })
            .db()?;
        self.db.flush().db()?;
        Ok(())
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("appliance_index", &self.inner.appliance_index)
            .finish_non_exhaustive()
    }
}

/// The error for a required record that is absent.
fn missing(what: &str) -> StorageError {
    StorageError::Corrupt(format!("the {what} is missing"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ittc_wire::{KeyId, UserKind};

    use super::test_support::*;
    use super::*;

    #[test]
    fn storage_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Storage>();
    }

    #[test]
    fn reopening_with_the_same_key_and_index_works() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        assert_eq!(storage.appliance_index(), 1);
        assert!(format!("{storage:?}").contains("appliance_index: 1"));
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.keys().unwrap(), vec![]);
    }

    #[test]
    fn a_wrong_sealing_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), 1));
        let err = try_open(dir.path(), [0x55; 32], 1, test_options()).unwrap_err();
        assert!(matches!(err, StorageError::WrongSealingKey), "{err}");
    }

    #[test]
    fn another_appliance_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), 2));
        let err = try_open(dir.path(), TEST_KEY, 3, test_options()).unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::WrongAppliance {
                    stored: 2,
                    given: 3
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn another_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage
            .inner
            .meta
            .insert(META_SCHEMA, codec::encode(&(SCHEMA_VERSION + 1)).unwrap())
            .unwrap();
        storage.flush().unwrap();
        drop(storage);
        let err = try_open(dir.path(), TEST_KEY, 1, test_options()).unwrap_err();
        assert!(
            matches!(err, StorageError::Schema { found, expected: SCHEMA_VERSION } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
    }

    #[test]
    fn records_without_a_schema_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("objects").unwrap().insert(b"x", b"y").unwrap();
            db.flush().unwrap();
        }
        let err = try_open(dir.path(), TEST_KEY, 1, test_options()).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
    }

    #[test]
    fn bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open_with = |index, opts| try_open(dir.path(), TEST_KEY, index, opts);
        assert!(matches!(
            open_with(0, test_options()),
            Err(StorageError::Invalid(_))
        ));
        let no_attempts = StorageOptions {
            max_pin_failures: 0,
            ..test_options()
        };
        assert!(matches!(
            open_with(1, no_attempts),
            Err(StorageError::Invalid(_))
        ));
        let no_memory = StorageOptions {
            argon2_m_cost_kib: 1,
            ..test_options()
        };
        assert!(matches!(
            open_with(1, no_memory),
            Err(StorageError::Invalid(_))
        ));
        assert_eq!(StorageOptions::default().argon2_m_cost_kib, 19 * 1024);
    }

    #[test]
    fn a_second_open_of_the_same_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _storage = open(dir.path(), 1);
        let second = Storage::open(dir.path(), test_key(), 1, test_options());
        assert!(matches!(second, Err(StorageError::Io(_))), "{second:?}");
    }

    /// Every file under `dir`, recursively.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    /// Whether any 16-byte window of `needle` occurs in any file under `dir`.
    fn any_window_on_disk(dir: &Path, needle: &[u8]) -> bool {
        let contents: Vec<Vec<u8>> = files(dir)
            .iter()
            .map(|path| std::fs::read(path).unwrap())
            .collect();
        assert!(contents.iter().map(Vec::len).sum::<usize>() > 0);
        needle.windows(16).any(|window| {
            contents
                .iter()
                .any(|file| file.windows(16).any(|w| w == window))
        })
    }

    #[test]
    fn no_plaintext_share_or_sealing_key_reaches_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let share: Vec<u8> = (0..300).map(|_| rand::random::<u8>()).collect();
        let additive: Vec<u8> = (0..320).map(|_| rand::random::<u8>()).collect();
        // A control: the same kind of random bytes stored in clear must be found, so the
        // scan below is able to fail.
        let control: Vec<u8> = (0..300).map(|_| rand::random::<u8>()).collect();
        let key_bytes: [u8; 32] = rand::random();
        {
            let storage = Storage::open(
                dir.path(),
                SealingKey::from_bytes(key_bytes),
                1,
                test_options(),
            )
            .unwrap();
            storage
                .store_share(ShareInput {
                    secret: EpochSecret {
                        share: share.clone(),
                        additive: Some(additive.clone()),
                    },
                    ..share_input(b"key", 1, 1)
                })
                .unwrap();
            storage
                .put_object(
                    &ittc_wire::TokenObject {
                        handle: ittc_wire::ObjectId(1),
                        class: ittc_wire::ObjectClass::Data,
                        attributes: vec![ittc_wire::Attribute {
                            kind: 0x11,
                            value: control.clone(),
                        }],
                    },
                    ittc_wire::ObjectVersion::ORIGINAL,
                )
                .unwrap();
            storage.set_pin(UserKind::User, b"123456").unwrap();
            storage.flush().unwrap();
        }
        assert!(
            any_window_on_disk(dir.path(), &control),
            "control not found"
        );
        assert!(!any_window_on_disk(dir.path(), &share), "share on disk");
        assert!(
            !any_window_on_disk(dir.path(), &additive),
            "additive share on disk"
        );
        assert!(
            !any_window_on_disk(dir.path(), &key_bytes),
            "sealing key on disk"
        );
        // And the share is still there, sealed.
        let storage = try_open(dir.path(), key_bytes, 1, test_options()).unwrap();
        let id = KeyId::new(b"key".to_vec()).unwrap();
        assert_eq!(storage.share(&id, 1).unwrap().unwrap().share, share);
    }
}
