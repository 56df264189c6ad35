//! The certificate deny-list at work. Every appliance keeps one in its store (an admin adds
//! to it with `RevokeCertificate`; a replaced appliance takes its peers' with the rest of
//! the public state) and refuses a certificate on it on both ends of a connection:
//!
//! * as the server, after the handshake and again before every request (`server.rs`): the
//!   peer's first request is answered `Forbidden: certificate revoked` and the connection
//!   is closed;
//! * as a client of a peer appliance, in the handshake: the peer TLS configuration checks
//!   the server certificate's serial ([`DenyList`] is its
//!   [`ittc_wire::revocation::Revocations`]), so every connection to a peer, whatever
//!   opens it, fails with `certificate revoked`.
//!
//! Each refusal is logged; it is audited at most once a minute per certificate, so that a
//! holder of a revoked certificate cannot fill the audit log by reconnecting.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ittc_wire::limits::MAX_REVOKED;
use ittc_wire::revocation::{Revocations, certificate_serial};

use crate::storage::{AuditEntry, Storage};

/// How often a refusal of one certificate is audited (each one is logged).
pub const AUDIT_EVERY: Duration = Duration::from_secs(60);

/// The deny-list check over this appliance's store.
pub struct DenyList {
    storage: Storage,
    /// When a refusal of each serial was last audited.
    audited: Mutex<HashMap<Vec<u8>, Instant>>,
}

impl DenyList {
    /// The check over `storage`'s deny-list.
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            audited: Mutex::new(HashMap::new()),
        }
    }

    /// The serial of a peer's certificate (DER) if it is revoked, else `None`. A
    /// certificate whose serial cannot be read (rustls has parsed it already, so this does
    /// not happen) or a store that cannot be read counts as revoked: the check fails
    /// closed.
    pub fn revoked_serial(&self, der: &[u8]) -> Option<Vec<u8>> {
        let serial = match certificate_serial(der) {
            Ok(serial) => serial,
            Err(e) => {
                tracing::warn!(error = %e, "peer certificate without a readable serial: refused");
                return Some(Vec::new());
            }
        };
        self.check(&serial).then_some(serial)
    }

    /// Whether `serial` is on the list (a store error counts as yes, and is logged).
    pub fn check(&self, serial: &[u8]) -> bool {
        self.storage.is_revoked(serial).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the deny-list cannot be read: refusing the peer");
            true
        })
    }

    /// Logs a refusal of `who`'s certificate `serial` (`what`: `connect` as the server,
    /// `dial` as the client) and audits it, unless one of the same certificate was
    /// audited less than [`AUDIT_EVERY`] ago. Blocks on the audit's flush.
    pub fn refused(&self, who: &str, serial: &[u8], what: &str) {
        let serial_hex = hex::encode(serial);
        tracing::warn!(
            who,
            serial = serial_hex,
            what,
            "certificate revoked: refused"
        );
        if !self.due(serial) {
            return;
        }
        let entry = AuditEntry {
            time_unix_ms: ittc_wire::now_unix_ms(),
            client: who.to_owned(),
            request: what.to_owned(),
            key_id: Some(format!("certificate {serial_hex}")),
            result: "refused: certificate revoked".to_owned(),
        };
        if let Err(e) = self.storage.audit_append(&entry) {
            tracing::warn!(error = %e, "the refusal could not be audited");
        }
    }

    /// Whether a refusal of `serial` is due for the audit log now (and notes it).
    fn due(&self, serial: &[u8]) -> bool {
        let mut audited = self
            .audited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if audited
            .get(serial)
            .is_some_and(|last| now.duration_since(*last) < AUDIT_EVERY)
        {
            return false;
        }
        // Only revoked serials get here, so the map stays as small as the list; a store
        // error's refusals (empty serials) share one entry.
        if audited.len() > MAX_REVOKED {
            audited.clear();
        }
        audited.insert(serial.to_vec(), now);
        true
    }
}

impl Revocations for DenyList {
    fn is_revoked(&self, serial: &[u8], holder: &str) -> bool {
        let revoked = self.check(serial);
        if revoked {
            self.refused(holder, serial, "dial");
        }
        revoked
    }
}

impl fmt::Debug for DenyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DenyList").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_one_certificate_are_audited_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(
            dir.path(),
            crate::storage::SealingKey::from_bytes([7; 32]),
            1,
            crate::storage::StorageOptions {
                argon2_m_cost_kib: 8,
                argon2_t_cost: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let list = DenyList::new(storage.clone());
        assert!(!list.check(&[1, 2]));
        storage
            .revoke_certificate(&ittc_wire::RevokedCertificate {
                serial: vec![1, 2],
                label: "appliance 3".into(),
                revoked_unix_ms: 0,
            })
            .unwrap();
        assert!(list.is_revoked(&[1, 2], "appliance-3.ittc"));
        assert!(list.is_revoked(&[1, 2], "appliance-3.ittc"));
        list.refused("appliance 3 (\"x\")", &[9], "connect");
        let entries = storage.audit_entries(0, usize::MAX).unwrap();
        let refusals: Vec<_> = entries
            .iter()
            .map(|(_, e)| (e.client.as_str(), e.request.as_str(), e.key_id.as_deref()))
            .collect();
        assert_eq!(
            refusals,
            vec![
                ("appliance-3.ittc", "dial", Some("certificate 0102")),
                ("appliance 3 (\"x\")", "connect", Some("certificate 09")),
            ]
        );
        assert!(
            entries
                .iter()
                .all(|(_, e)| e.result == "refused: certificate revoked")
        );
    }
}
