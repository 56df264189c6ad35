//! The certificate deny-list: serial numbers of certificates this appliance refuses although
//! the cluster CA signed them (a replaced appliance's old certificate), each with a label
//! for logs and the time it was added. At most [`MAX_REVOKED`] entries; entries are never
//! removed (a serial names one key of this cluster's CA, which is not used again).

use bincode::{Decode, Encode};
use ittc_wire::RevokedCertificate;
use ittc_wire::limits::MAX_REVOKED;
use ittc_wire::revocation::{check_label, check_serial};

use super::error::{SledResultExt, TxError, abort};
use super::{Storage, StorageError, codec};

/// The value under a serial in the `revoked` tree.
#[derive(Encode, Decode)]
struct StoredRevocation {
    label: String,
    revoked_unix_ms: u64,
}

impl Storage {
    /// Puts `entry` on the deny-list; returns whether it is new (an entry already on the
    /// list keeps its label and time).
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] for a serial or label the wire would refuse, or when the
    /// list holds [`MAX_REVOKED`] entries already; [`StorageError::Db`].
    pub fn revoke_certificate(&self, entry: &RevokedCertificate) -> Result<bool, StorageError> {
        check_serial(&entry.serial)
            .map_err(|_| StorageError::Invalid("not a certificate serial"))?;
        check_label(&entry.label).map_err(|_| StorageError::Invalid("bad revocation label"))?;
        let record = codec::encode(&StoredRevocation {
            label: entry.label.clone(),
            revoked_unix_ms: entry.revoked_unix_ms,
        })?;
        // The count is read outside the transaction: two revocations at once may both pass
        // the check when one place is left, so the list holds at most one entry more per
        // concurrent request. What bounds it is the admin's certificate.
        let full = self.inner.revoked.len() >= MAX_REVOKED;
        let added = self
            .inner
            .revoked
            .transaction(|tree| {
                if tree.get(entry.serial.as_slice())?.is_some() {
                    return Ok(false);
                }
                if full {
                    return Err(abort(StorageError::Invalid(
                        "the certificate deny-list is full",
                    )));
                }
                tree.insert(entry.serial.as_slice(), record.as_slice())?;
                Ok::<_, TxError>(true)
            })
            .db()?;
        if added {
            self.flush()?;
        }
        Ok(added)
    }

    /// Whether the certificate with this serial (normalized, see
    /// [`ittc_wire::revocation::normalize_serial`]) is on the deny-list.
    ///
    /// # Errors
    ///
    /// [`StorageError::Db`].
    pub fn is_revoked(&self, serial: &[u8]) -> Result<bool, StorageError> {
        self.inner.revoked.contains_key(serial).db()
    }

    /// The deny-list, ordered by serial.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] for a record that does not decode; [`StorageError::Db`].
    pub fn revoked_certificates(&self) -> Result<Vec<RevokedCertificate>, StorageError> {
        self.inner
            .revoked
            .iter()
            .map(|item| {
                let (serial, value) = item.db()?;
                let stored: StoredRevocation = codec::decode(&value, "revocation")?;
                Ok(RevokedCertificate {
                    serial: serial.to_vec(),
                    label: stored.label,
                    revoked_unix_ms: stored.revoked_unix_ms,
                })
            })
            .collect()
    }

    /// How many certificates are on the deny-list.
    pub fn revoked_count(&self) -> usize {
        self.inner.revoked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn entry(serial: &[u8], label: &str) -> RevokedCertificate {
        RevokedCertificate {
            serial: serial.to_vec(),
            label: label.into(),
            revoked_unix_ms: 1_765_000_000_000,
        }
    }

    #[test]
    fn revocations_are_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        assert!(!storage.is_revoked(&[0x3c; 20]).unwrap());
        assert_eq!(storage.revoked_count(), 0);
        assert!(
            storage
                .revoke_certificate(&entry(&[0x3c; 20], "appliance 3"))
                .unwrap()
        );
        assert!(storage.revoke_certificate(&entry(&[7], "client")).unwrap());
        drop(storage);

        let storage = open(dir.path(), 1);
        assert!(storage.is_revoked(&[0x3c; 20]).unwrap());
        assert!(storage.is_revoked(&[7]).unwrap());
        assert!(!storage.is_revoked(&[0x3c; 19]).unwrap());
        assert_eq!(storage.revoked_count(), 2);
        assert_eq!(
            storage.revoked_certificates().unwrap(),
            vec![entry(&[7], "client"), entry(&[0x3c; 20], "appliance 3")]
        );
    }

    #[test]
    fn revoking_again_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        assert!(
            storage
                .revoke_certificate(&entry(&[1, 2], "appliance 2"))
                .unwrap()
        );
        let again = RevokedCertificate {
            revoked_unix_ms: 5,
            ..entry(&[1, 2], "someone else")
        };
        assert!(!storage.revoke_certificate(&again).unwrap());
        assert_eq!(
            storage.revoked_certificates().unwrap(),
            vec![entry(&[1, 2], "appliance 2")]
        );
    }

    #[test]
    fn malformed_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        for bad in [
            entry(&[], "x"),
            entry(&[0, 1], "x"),
            entry(&[1; 33], "x"),
            entry(&[1], "two\nlines"),
        ] {
            assert!(
                matches!(
                    storage.revoke_certificate(&bad),
                    Err(StorageError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(storage.revoked_count(), 0);
    }

    #[test]
    fn the_list_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        for i in 0..MAX_REVOKED {
            let serial = (i as u32 + 1).to_be_bytes();
            let serial = ittc_wire::revocation::normalize_serial(&serial);
            // Straight into the tree: one flush for the lot.
            storage
                .inner
                .revoked
                .insert(
                    serial,
                    codec::encode(&StoredRevocation {
                        label: String::new(),
                        revoked_unix_ms: 0,
                    })
                    .unwrap(),
                )
                .unwrap();
        }
        assert_eq!(storage.revoked_count(), MAX_REVOKED);
        let err = storage
            .revoke_certificate(&entry(&[0xff; 8], "one too many"))
            .unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        assert!(!storage.is_revoked(&[0xff; 8]).unwrap());
        // One already there is still answered as such.
        assert!(!storage.revoke_certificate(&entry(&[1], "x")).unwrap());
    }
}
