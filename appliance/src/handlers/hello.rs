//! Hello (the version exchange) and status.

use ittc_wire::{HelloInfo, PROTOCOL_VERSION, Response, StatusInfo};

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

/// Version, build variant, keys with epochs and refresh state, audit head, uptime.
pub fn handle_status(state: &State) -> Result<Response, ApplianceError> {
    let keys = state
        .storage
        .keys()?
        .into_iter()
        .map(|k| {
            let mut status = k.status();
            status.refresh.next_due_unix_ms = state.refresh.schedule.due_unix_ms(state, &k);
            status.refresh.running = state.refresh.running(&k.key_id);
            status
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
        revoked_certificates: u32::try_from(state.storage.revoked_count()).unwrap_or(u32::MAX),
        clock_unix_ms: ittc_wire::now_unix_ms(),
    }))
}
