//! PINs: an Argon2id hash (a PHC string with its own salt and parameters) per user kind,
//! with a persistent count of wrong attempts and a lock.
//!
//! [`Storage::check_pin`] counts every attempt as a failure, and flushes that, *before* it
//! computes the hash; a correct PIN then clears the count. So an attempt cut short by a
//! crash or a power cut counts, and however many attempts run in parallel, no more hashes
//! are computed than the limit allows. The attempt that reaches the limit returns
//! [`PinCheck::Incorrect`] with `remaining: 0` (if the PIN was wrong) and locks the PIN;
//! later attempts return [`PinCheck::Locked`] without computing a hash. Only
//! [`Storage::set_pin`] unlocks.
//!
//! PIN checks run one at a time (a lock held from the count to the verdict). Otherwise
//! correct attempts in parallel, a client opening several connections at once, would
//! each count the others' pending attempts as failures, and enough of them would lock
//! the PIN although every one was right.
//!
//! # A PIN proven recently
//!
//! A login ([`Storage::check_login_pin`]) that Argon2id has just proven right is
//! remembered for `pin.remember_s` (default 300 s): the same PIN for the same user kind is
//! then accepted again without the hash, so that a tool that starts a new process for
//! each signature (`openssl ca`, ssh) does not pay the hash on every appliance each time.
//! What is remembered is an HMAC-SHA256 tag of the PIN under a random key of this process,
//! in memory only, and a digest of the verifier it was proven against. A remembered PIN
//! counts only while the stored verifier is the same, unlocked and with no failure since;
//! any other PIN takes the counted, slow path, and a wrong one or a lock forgets what was
//! remembered for that user kind, as does setting the PIN. So guessing costs what it cost
//! before, and the disk holds nothing new (docs/security.md, "PINs").

use std::time::{Duration, Instant};

use argon2::password_hash::Error as HashError;
use argon2::{Algorithm, Argon2, PasswordHasher, PasswordVerifier, Version};
use bincode::{Decode, Encode};
use hmac::{Hmac, KeyInit, Mac};
use ittc_wire::{PinRecord, SecretBytes, UserKind};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::error::{SledResultExt, TxError, abort};
use super::{Storage, StorageError, codec};

/// The outcome of [`Storage::check_pin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinCheck {
    /// The PIN is right; the failure count is cleared.
    Correct,
    /// The PIN is wrong; `remaining` more wrong attempts are allowed before the lock. The
    /// attempt that locks the PIN returns `remaining: 0`.
    Incorrect {
        /// Wrong attempts left before the PIN locks.
        remaining: u32,
    },
    /// Too many wrong attempts: the PIN is locked until it is set again. No hash was
    /// computed.
    Locked,
    /// No PIN is set for this user kind.
    NotSet,
}

/// The state of one PIN, for status and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinStatus {
    /// Whether a PIN is set.
    pub set: bool,
    /// Wrong attempts since the PIN was set or last entered correctly (an attempt being
    /// checked counts until it proves correct).
    pub failures: u32,
    /// Whether the PIN is locked.
    pub locked: bool,
}

/// The record in the `pins` tree. The PHC string is a slow salted hash, stored in clear by
/// design; it is never logged.
#[derive(Encode, Decode)]
struct StoredPin {
    phc: String,
    failures: u32,
    locked: bool,
}

impl StoredPin {
    fn is_locked(&self, max_failures: u32) -> bool {
        self.locked || self.failures >= max_failures
    }
}

/// What the first step of a check found.
enum Admission {
    NotSet,
    Locked,
    /// The attempt is counted; check it against `phc`.
    Counted {
        phc: String,
        failures: u32,
    },
}

/// The PINs proven recently, one per user kind (see the module docs).
pub(super) struct Remembered {
    /// This process's key for the tags; never stored, zeroized on drop.
    key: Zeroizing<[u8; 32]>,
    /// How long a proof counts; zero: nothing is remembered.
    ttl: Duration,
    /// By [`pin_key`]: the user, then the security officer.
    entries: [Option<Proof>; 2],
}

/// One PIN proven by the slow check.
struct Proof {
    /// HMAC-SHA256 of the PIN under [`Remembered::key`].
    tag: Zeroizing<[u8; 32]>,
    /// SHA-256 of the verifier (PHC string) it was proven against.
    verifier: [u8; 32],
    /// When it stops counting.
    until: Instant,
}

impl Remembered {
    /// Nothing remembered yet; proofs count for `ttl`.
    pub(super) fn new(ttl: Duration) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::fill(&mut key[..]);
        Self {
            key,
            ttl,
            entries: [None, None],
        }
    }

    fn tag(&self, pin: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(pin);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    fn slot(&mut self, user: UserKind) -> &mut Option<Proof> {
        let [user_slot, officer_slot] = &mut self.entries;
        match user {
            UserKind::User => user_slot,
            UserKind::SecurityOfficer => officer_slot,
        }
    }

    /// Whether `pin` is the PIN proven last for `user`, within the time, against a
    /// verifier whose digest is `verifier` (computed only if a proof is at hand).
    fn proves(
        &mut self,
        user: UserKind,
        pin: &[u8],
        verifier: impl FnOnce() -> Option<[u8; 32]>,
    ) -> bool {
        let tag = self.tag(pin);
        let slot = self.slot(user);
        let Some(proof) = slot else {
            return false;
        };
        if Instant::now() >= proof.until {
            *slot = None;
            return false;
        }
        if !bool::from(proof.tag[..].ct_eq(&tag[..])) {
            return false;
        }
        verifier().is_some_and(|v| v == proof.verifier)
    }

    fn remember(&mut self, user: UserKind, pin: &[u8], phc: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let Some(until) = Instant::now().checked_add(self.ttl) else {
            return;
        };
        let proof = Proof {
            tag: self.tag(pin),
            verifier: Sha256::digest(phc.as_bytes()).into(),
            until,
        };
        *self.slot(user) = Some(proof);
    }

    fn forget(&mut self, user: UserKind) {
        *self.slot(user) = None;
    }
}

fn pin_key(user: UserKind) -> [u8; 1] {
    match user {
        UserKind::User => [0],
        UserKind::SecurityOfficer => [1],
    }
}

impl Storage {
    /// Sets a PIN (hashed with Argon2id under the configured parameters and a fresh
    /// salt), clearing its failure count and lock.
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] if the PIN cannot be hashed (longer than Argon2 allows),
    /// [`StorageError::Db`].
    pub fn set_pin(&self, user: UserKind, pin: &[u8]) -> Result<(), StorageError> {
        let hasher = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            self.inner.pin_params.clone(),
        );
        let phc = hasher
            .hash_password(pin)
            .map_err(|_| StorageError::Invalid("the PIN cannot be hashed"))?
            .to_string();
        let record = codec::encode(&StoredPin {
            phc,
            failures: 0,
            locked: false,
        })?;
        let key = pin_key(user);
        self.inner
            .pins
            .transaction(|pins| {
                pins.insert(&key, record.as_slice())?;
                Ok::<_, TxError>(())
            })
            .db()?;
        self.remembered().forget(user);
        self.flush()
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.inner
            .remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a PIN (see the module docs for the counting rules).
    ///
    /// The comparison is argon2's, in constant time.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] if the stored hash is unreadable, [`StorageError::Db`].
    pub fn check_pin(&self, user: UserKind, pin: &[u8]) -> Result<PinCheck, StorageError> {
        let _one_at_a_time = self.one_pin_check();
        Ok(self.check_pin_slowly(user, pin)?.0)
    }

    /// [`Storage::check_pin`] for a login: a PIN proven recently is accepted without the
    /// hash (see the module docs); one proven now is remembered.
    ///
    /// # Errors
    ///
    /// As [`Storage::check_pin`].
    pub fn check_login_pin(&self, user: UserKind, pin: &[u8]) -> Result<PinCheck, StorageError> {
        let _one_at_a_time = self.one_pin_check();
        let max = self.inner.max_pin_failures;
        let proven = self.remembered().proves(user, pin, || {
            let bytes = self.inner.pins.get(pin_key(user)).ok()??;
            let record: StoredPin = codec::decode(&bytes, "PIN record").ok()?;
            (!record.is_locked(max) && record.failures == 0)
                .then(|| Sha256::digest(record.phc.as_bytes()).into())
        });
        if proven {
            return Ok(PinCheck::Correct);
        }
        let (check, phc) = self.check_pin_slowly(user, pin)?;
        if let (PinCheck::Correct, Some(phc)) = (check, phc) {
            self.remembered().remember(user, pin, &phc);
        }
        Ok(check)
    }

    fn one_pin_check(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .pin_check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counted check, under the lock of [`Storage::one_pin_check`]; with a correct
    /// PIN, also the verifier it was checked against. Anything but a correct PIN forgets
    /// the PIN remembered for `user`.
    fn check_pin_slowly(
        &self,
        user: UserKind,
        pin: &[u8],
    ) -> Result<(PinCheck, Option<String>), StorageError> {
        let key = pin_key(user);
        let max = self.inner.max_pin_failures;
        let admission = self
            .inner
            .pins
            .transaction(|pins| {
                let Some(bytes) = pins.get(key)? else {
                    return Ok(Admission::NotSet);
                };
                let mut record: StoredPin = codec::decode(&bytes, "PIN record").map_err(abort)?;
                if record.is_locked(max) {
                    return Ok(Admission::Locked);
                }
                record.failures = record.failures.saturating_add(1);
                record.locked = record.failures >= max;
                pins.insert(&key, codec::encode(&record).map_err(abort)?)?;
                Ok::<_, TxError>(Admission::Counted {
                    phc: record.phc,
                    failures: record.failures,
                })
            })
            .db()?;
        let (phc, failures) = match admission {
            Admission::Counted { phc, failures } => (phc, failures),
            Admission::NotSet => {
                self.remembered().forget(user);
                return Ok((PinCheck::NotSet, None));
            }
            Admission::Locked => {
                self.remembered().forget(user);
                return Ok((PinCheck::Locked, None));
            }
        };
        self.flush()?;

        #[cfg(test)]
        self.inner
            .pin_hashes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match Argon2::default().verify_password(pin, phc.as_str()) {
            Ok(()) => {
                self.clear_failures(user, &phc)?;
                Ok((PinCheck::Correct, Some(phc)))
            }
            Err(HashError::PasswordInvalid) => {
                self.remembered().forget(user);
                let remaining = max.saturating_sub(failures);
                Ok((PinCheck::Incorrect { remaining }, None))
            }
            Err(err) => Err(StorageError::Corrupt(format!(
                "the stored PIN hash is unusable: {err}"
            ))),
        }
    }

    /// Clears the failure count and lock after a correct PIN, unless the PIN was set
    /// again meanwhile (which cleared them already).
    fn clear_failures(&self, user: UserKind, phc: &str) -> Result<(), StorageError> {
        let key = pin_key(user);
        self.inner
            .pins
            .transaction(|pins| {
                let Some(bytes) = pins.get(key)? else {
                    return Ok(());
                };
                let mut record: StoredPin = codec::decode(&bytes, "PIN record").map_err(abort)?;
                if record.phc == phc {
                    record.failures = 0;
                    record.locked = false;
                    pins.insert(&key, codec::encode(&record).map_err(abort)?)?;
                }
                Ok::<_, TxError>(())
            })
            .db()?;
        self.flush()
    }

    /// The stored PIN records (verifier, failure count, lock), for a peer that starts
    /// with an empty store.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn pin_records(&self) -> Result<Vec<PinRecord>, StorageError> {
        let mut records = Vec::new();
        for user in [UserKind::User, UserKind::SecurityOfficer] {
            if let Some(bytes) = self.inner.pins.get(pin_key(user)).db()? {
                let record: StoredPin = codec::decode(&bytes, "PIN record")?;
                records.push(PinRecord {
                    user,
                    verifier: SecretBytes::new(record.phc.into_bytes()),
                    failures: record.failures,
                    locked: record.locked,
                });
            }
        }
        Ok(records)
    }

    /// Stores a PIN record a peer holds, unless a PIN is set here for that user already
    /// (set here since, which is newer); returns whether it was stored. Not flushed: the
    /// caller flushes (see `public_state.rs`).
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] if the verifier is not an Argon2id PHC string;
    /// [`StorageError::Db`].
    pub(super) fn adopt_pin_record(&self, record: &PinRecord) -> Result<bool, StorageError> {
        let phc = std::str::from_utf8(record.verifier.expose_secret())
            .map_err(|_| StorageError::Invalid("a PIN verifier is not text"))?;
        let parsed = argon2::PasswordHash::new(phc)
            .map_err(|_| StorageError::Invalid("a PIN verifier is not a PHC string"))?;
        if parsed.algorithm.as_str() != "argon2id" {
            return Err(StorageError::Invalid("a PIN verifier is not Argon2id"));
        }
        let stored = codec::encode(&StoredPin {
            phc: phc.to_owned(),
            failures: record.failures,
            locked: record.locked,
        })?;
        let adopted = self
            .inner
            .pins
            .compare_and_swap(pin_key(record.user), None::<&[u8]>, Some(stored))
            .db()?;
        Ok(adopted.is_ok())
    }

    /// Whether a PIN is set, its failure count and whether it is locked.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn pin_status(&self, user: UserKind) -> Result<PinStatus, StorageError> {
        let Some(bytes) = self.inner.pins.get(pin_key(user)).db()? else {
            return Ok(PinStatus {
                set: false,
                failures: 0,
                locked: false,
            });
        };
        let record: StoredPin = codec::decode(&bytes, "PIN record")?;
        Ok(PinStatus {
            set: true,
            failures: record.failures,
            locked: record.is_locked(self.inner.max_pin_failures),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::StorageOptions;
    use super::super::test_support::*;
    use super::*;

    const USER: UserKind = UserKind::User;
    const SO: UserKind = UserKind::SecurityOfficer;

    fn status(set: bool, failures: u32, locked: bool) -> PinStatus {
        PinStatus {
            set,
            failures,
            locked,
        }
    }

    #[test]
    fn set_and_check() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        assert_eq!(storage.check_pin(USER, b"1234").unwrap(), PinCheck::NotSet);
        assert_eq!(storage.pin_status(USER).unwrap(), status(false, 0, false));
        storage.set_pin(USER, b"1234").unwrap();
        assert_eq!(storage.check_pin(USER, b"1234").unwrap(), PinCheck::Correct);
        assert_eq!(storage.check_pin(SO, b"1234").unwrap(), PinCheck::NotSet);
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 0, false));
        // Hashed with Argon2id under the configured parameters, with a salt.
        let bytes = storage.inner.pins.get(pin_key(USER)).unwrap().unwrap();
        let record: StoredPin = codec::decode(&bytes, "pin").unwrap();
        assert!(
            record.phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"),
            "{}",
            record.phc
        );
        assert!(!record.phc.contains("1234"));
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.check_pin(USER, b"1234").unwrap(), PinCheck::Correct);
    }

    #[test]
    fn right_pins_checked_in_parallel_never_lock() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1); // max_pin_failures: 3
        storage.set_pin(USER, b"1234").unwrap();
        // Twelve connections logging in at once, four times the limit.
        let outcomes: Vec<PinCheck> = std::thread::scope(|scope| {
            let checks: Vec<_> = (0..12)
                .map(|_| scope.spawn(|| storage.check_pin(USER, b"1234").unwrap()))
                .collect();
            checks.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert!(
            outcomes.iter().all(|o| *o == PinCheck::Correct),
            "{outcomes:?}"
        );
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 0, false));
    }

    fn hashes(storage: &Storage) -> u32 {
        storage
            .inner
            .pin_hashes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn remembering(dir: &Path, ttl: Duration) -> Storage {
        let options = StorageOptions {
            pin_remember: ttl,
            ..test_options()
        };
        try_open(dir, TEST_KEY, 1, options).unwrap()
    }

    #[test]
    fn a_login_pin_proven_recently_is_accepted_without_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let storage = remembering(dir.path(), Duration::from_secs(300));
        storage.set_pin(USER, b"right").unwrap();
        storage.set_pin(SO, b"officer").unwrap();
        let correct = PinCheck::Correct;
        assert_eq!(storage.check_login_pin(USER, b"right").unwrap(), correct);
        assert_eq!(hashes(&storage), 1);
        for _ in 0..5 {
            assert_eq!(storage.check_login_pin(USER, b"right").unwrap(), correct);
        }
        assert_eq!(hashes(&storage), 1);
        // Another PIN, or the other user kind, is not what was proven.
        let wrong = storage.check_login_pin(USER, b"wrong").unwrap();
        assert_eq!(wrong, PinCheck::Incorrect { remaining: 2 });
        assert_eq!(storage.check_login_pin(SO, b"right").unwrap(), wrong);
        assert_eq!(hashes(&storage), 3);
        // The wrong PIN counted and made the appliance forget: the right one pays again
        // (and clears the count), then is remembered again.
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 1, false));
        assert_eq!(storage.check_login_pin(USER, b"right").unwrap(), correct);
        assert_eq!(storage.check_login_pin(USER, b"right").unwrap(), correct);
        assert_eq!(hashes(&storage), 4);
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 0, false));
        // The plain check (a PIN change's) never takes the shortcut.
        assert_eq!(storage.check_pin(USER, b"right").unwrap(), correct);
        assert_eq!(hashes(&storage), 5);
        // A new PIN: the old one is not accepted, whatever was remembered.
        assert_eq!(storage.check_login_pin(USER, b"right").unwrap(), correct);
        storage.set_pin(USER, b"changed").unwrap();
        let old = storage.check_login_pin(USER, b"right").unwrap();
        assert_eq!(old, PinCheck::Incorrect { remaining: 2 });
        // Nothing of it is in the database.
        drop(storage);
        let storage = remembering(dir.path(), Duration::from_secs(300));
        assert_eq!(storage.check_login_pin(USER, b"changed").unwrap(), correct);
        assert_eq!(hashes(&storage), 1);
    }

    #[test]
    fn a_locked_pin_stays_locked_for_a_remembered_login() {
        let dir = tempfile::tempdir().unwrap();
        let storage = remembering(dir.path(), Duration::from_secs(300));
        storage.set_pin(USER, b"right").unwrap();
        assert_eq!(
            storage.check_login_pin(USER, b"right").unwrap(),
            PinCheck::Correct
        );
        for _ in 0..3 {
            storage.check_login_pin(USER, b"wrong").unwrap();
        }
        assert_eq!(
            storage.check_login_pin(USER, b"right").unwrap(),
            PinCheck::Locked
        );
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 3, true));
    }

    #[test]
    fn a_proof_counts_for_its_time_only_and_not_at_all_when_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        let storage = remembering(dir.path(), Duration::from_millis(200));
        storage.set_pin(USER, b"right").unwrap();
        assert_eq!(
            storage.check_login_pin(USER, b"right").unwrap(),
            PinCheck::Correct
        );
        assert_eq!(
            storage.check_login_pin(USER, b"right").unwrap(),
            PinCheck::Correct
        );
        assert_eq!(hashes(&storage), 1);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            storage.check_login_pin(USER, b"right").unwrap(),
            PinCheck::Correct
        );
        assert_eq!(hashes(&storage), 2);
        drop(storage);

        let storage = remembering(dir.path(), Duration::ZERO);
        for _ in 0..3 {
            assert_eq!(
                storage.check_login_pin(USER, b"right").unwrap(),
                PinCheck::Correct
            );
        }
        assert_eq!(hashes(&storage), 3);
    }

    #[test]
    fn wrong_pins_count_down_lock_and_stay_locked() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1); // max_pin_failures: 3
        storage.set_pin(USER, b"right").unwrap();
        storage.set_pin(SO, b"officer").unwrap();
        let wrong = |remaining| PinCheck::Incorrect { remaining };
        assert_eq!(storage.check_pin(USER, b"wrong").unwrap(), wrong(2));
        assert_eq!(storage.check_pin(USER, b"wrong").unwrap(), wrong(1));
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 2, false));
        // A correct PIN clears the count.
        assert_eq!(
            storage.check_pin(USER, b"right").unwrap(),
            PinCheck::Correct
        );
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 0, false));
        assert_eq!(storage.check_pin(USER, b"wrong").unwrap(), wrong(2));
        assert_eq!(storage.check_pin(USER, b"wrong").unwrap(), wrong(1));
        // The attempt that reaches the limit says so, and locks.
        assert_eq!(storage.check_pin(USER, b"wrong").unwrap(), wrong(0));
        assert_eq!(storage.check_pin(USER, b"right").unwrap(), PinCheck::Locked);
        assert_eq!(storage.check_pin(USER, b"wrong").unwrap(), PinCheck::Locked);
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 3, true));
        // The other user kind is unaffected.
        assert_eq!(
            storage.check_pin(SO, b"officer").unwrap(),
            PinCheck::Correct
        );
        drop(storage);

        let storage = open(dir.path(), 1);
        assert_eq!(storage.check_pin(USER, b"right").unwrap(), PinCheck::Locked);
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 3, true));
        storage.set_pin(USER, b"new").unwrap();
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 0, false));
        assert_eq!(storage.check_pin(USER, b"right").unwrap(), wrong(2));
        assert_eq!(storage.check_pin(USER, b"new").unwrap(), PinCheck::Correct);
    }

    #[test]
    fn a_wrong_pin_is_counted_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage.set_pin(USER, b"right").unwrap();
        assert_eq!(
            storage.check_pin(USER, b"wrong").unwrap(),
            PinCheck::Incorrect { remaining: 2 }
        );
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 1, false));
    }

    #[test]
    fn a_locked_pin_is_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        // An unusable hash: computing it would fail with Corrupt.
        let record = |locked| {
            codec::encode(&StoredPin {
                phc: "not a PHC string".into(),
                failures: 3,
                locked,
            })
            .unwrap()
        };
        storage
            .inner
            .pins
            .insert(pin_key(USER), record(true))
            .unwrap();
        assert_eq!(storage.check_pin(USER, b"x").unwrap(), PinCheck::Locked);
        // Three failures reach the limit even without the flag.
        storage
            .inner
            .pins
            .insert(pin_key(USER), record(false))
            .unwrap();
        assert_eq!(storage.check_pin(USER, b"x").unwrap(), PinCheck::Locked);
        // And an unlocked record with that hash does get hashed (so the test can fail).
        let unlocked = codec::encode(&StoredPin {
            phc: "not a PHC string".into(),
            failures: 0,
            locked: false,
        })
        .unwrap();
        storage.inner.pins.insert(pin_key(USER), unlocked).unwrap();
        assert!(matches!(
            storage.check_pin(USER, b"x"),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn pin_records_move_to_an_empty_store_with_their_counts() {
        let dir = tempfile::tempdir().unwrap();
        let from = open(&dir.path().join("a"), 1);
        from.set_pin(USER, b"right").unwrap();
        from.set_pin(SO, b"officer").unwrap();
        assert_eq!(
            from.check_pin(USER, b"wrong").unwrap(),
            PinCheck::Incorrect { remaining: 2 }
        );
        let records = from.pin_records().unwrap();
        assert_eq!(records.len(), 2);
        assert!(!format!("{records:?}").contains("argon2"), "{records:?}");

        let to = open(&dir.path().join("b"), 2);
        // A PIN set here already is newer than the peer's: it stays.
        to.set_pin(SO, b"new officer").unwrap();
        let adopted: Vec<bool> = records
            .iter()
            .map(|r| to.adopt_pin_record(r).unwrap())
            .collect();
        assert_eq!(adopted, vec![true, false]);
        assert_eq!(to.pin_status(USER).unwrap(), status(true, 1, false));
        assert_eq!(
            to.check_pin(USER, b"wrong").unwrap(),
            PinCheck::Incorrect { remaining: 1 }
        );
        assert_eq!(to.check_pin(USER, b"right").unwrap(), PinCheck::Correct);
        assert_eq!(to.check_pin(SO, b"new officer").unwrap(), PinCheck::Correct);
        // Something that is not an Argon2id verifier is refused.
        for bad in [
            &b"not a PHC string"[..],
            b"$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            &[0xff],
        ] {
            let record = PinRecord {
                user: USER,
                verifier: SecretBytes::new(bad.to_vec()),
                failures: 0,
                locked: false,
            };
            assert!(matches!(
                to.adopt_pin_record(&record),
                Err(StorageError::Invalid(_))
            ));
        }
    }

    #[test]
    fn parallel_wrong_pins_get_no_more_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage.set_pin(USER, b"right").unwrap();
        let results: Vec<PinCheck> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..12)
                .map(|i| {
                    let storage = storage.clone();
                    scope.spawn(move || storage.check_pin(USER, format!("{i}").as_bytes()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        let incorrect = results
            .iter()
            .filter(|r| matches!(r, PinCheck::Incorrect { .. }))
            .count();
        let locked = results.iter().filter(|r| **r == PinCheck::Locked).count();
        assert_eq!((incorrect, locked), (3, 9), "{results:?}");
        let mut remaining: Vec<u32> = results
            .iter()
            .filter_map(|r| match r {
                PinCheck::Incorrect { remaining } => Some(*remaining),
                _ => None,
            })
            .collect();
        remaining.sort_unstable();
        assert_eq!(remaining, vec![0, 1, 2]);
        assert_eq!(storage.pin_status(USER).unwrap(), status(true, 3, true));
    }
}
