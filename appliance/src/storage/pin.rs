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

use argon2::password_hash::Error as HashError;
use argon2::{Algorithm, Argon2, PasswordHasher, PasswordVerifier, Version};
use bincode::{Decode, Encode};
use ittc_wire::{PinRecord, SecretBytes, UserKind};

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
        self.flush()
    }

    /// Checks a PIN (see the module docs for the counting rules).
    ///
    /// The comparison is argon2's, in constant time.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] if the stored hash is unreadable, [`StorageError::Db`].
    pub fn check_pin(&self, user: UserKind, pin: &[u8]) -> Result<PinCheck, StorageError> {
        let key = pin_key(user);
        let max = self.inner.max_pin_failures;
        let _one_at_a_time = self
            .inner
            .pin_check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
            Admission::NotSet => return Ok(PinCheck::NotSet),
            Admission::Locked => return Ok(PinCheck::Locked),
            Admission::Counted { phc, failures } => (phc, failures),
        };
        self.flush()?;

        match Argon2::default().verify_password(pin, phc.as_str()) {
            Ok(()) => {
                self.clear_failures(user, &phc)?;
                Ok(PinCheck::Correct)
            }
            Err(HashError::PasswordInvalid) => Ok(PinCheck::Incorrect {
                remaining: max.saturating_sub(failures),
            }),
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
