//! The certificate deny-list: an admin puts a certificate on it (a replaced appliance's
//! old one). The server refuses what is on it (`server.rs`), and so does every
//! connection this appliance opens to a peer ([`crate::revocation::DenyList`]).

use ittc_wire::{Response, RevokedCertificate};

use crate::error::ApplianceError;
use crate::state::State;

/// Puts the certificate with `serial` on the deny-list (again is fine: nothing changes).
pub fn handle_revoke(
    state: &State,
    serial: Vec<u8>,
    label: String,
) -> Result<Response, ApplianceError> {
    let entry = RevokedCertificate {
        serial,
        label,
        revoked_unix_ms: ittc_wire::now_unix_ms(),
    };
    let serial = hex::encode(&entry.serial);
    if state.storage.revoke_certificate(&entry)? {
        tracing::info!(serial, label = entry.label, "certificate revoked");
    } else {
        tracing::info!(serial, label = entry.label, "certificate revoked already");
    }
    Ok(Response::Ok)
}
