//! Hello (the version exchange) and status.

use ittc_wire::{HelloInfo, KeyStatus, PROTOCOL_VERSION, Response, StatusInfo};

use crate::error::ApplianceError;
use crate::state::{Session, State};

/// Answers the first request of a connection.
pub fn handle_hello(
    state: &State,
    session: &mut Session,
    protocol_version: u16,
    client_name: &str,
) -> Result<Response, ApplianceError> {
    if protocol_version != PROTOCOL_VERSION {
        return Err(ApplianceError::UnsupportedVersion(protocol_version));
    }
    tracing::debug!(client_name, "hello");
    session.hello = true;
    Ok(Response::HelloInfo(HelloInfo {
        protocol_version,
        appliance_index: state.config.index,
        build_variant: state.build_variant.clone(),
        cluster_id: state.config.cluster_id_bytes(),
    }))
}

/// Version, build variant, keys with epochs, audit head, uptime.
pub fn handle_status(state: &State) -> Result<Response, ApplianceError> {
    let keys = state
        .storage
        .keys()?
        .into_iter()
        .map(|k| KeyStatus {
            key_id: k.key_id,
            label: k.label,
            active_epoch: k.active_epoch,
            pending_epoch: k.pending_epoch,
            threshold: k.threshold,
            parties: k.parties,
        })
        .collect();
    Ok(Response::Status(StatusInfo {
        protocol_version: PROTOCOL_VERSION,
        software_version: env!("CARGO_PKG_VERSION").to_owned(),
        build_variant: state.build_variant.clone(),
        appliance_index: state.config.index,
        cluster_id: state.config.cluster_id_bytes(),
        keys,
        audit_head: state.storage.audit_head()?.hash,
        uptime_secs: state.started.elapsed().as_secs(),
    }))
}
