//! Finishing or rolling back a refresh that a crash interrupted, by asking the peers.
//!
//! For each key with no refresh under way here:
//!
//! * **A pending epoch from a refresh.** Its coordinator decided: if the coordinator has
//!   the epoch active, commit it here too; if it has not and runs no refresh of the key,
//!   it never will (it commits itself before anyone else), so discard it; if it cannot be
//!   reached, wait (the key signs on the old epoch meanwhile). When this appliance is the
//!   coordinator and runs nothing, it never committed: discard.
//! * **A retiring epoch.** Once every other holder reports the new epoch active, erase it.
//!
//! Every decision taken here is audited (`self (refresh recovery)`) and logged.

use std::sync::Arc;

use ittc_wire::{KeyStatus, RefreshStepKind, Request, Response};
use tracing::{debug, info, warn};

use super::holder;
use crate::handlers::audit_event;
use crate::peers::Peer;
use crate::state::State;
use crate::storage::{KeyInfo, RefreshOrigin};

/// Who the audit log names for what recovery does.
const SELF: &str = "self (refresh recovery)";

/// One pass over every key (see the module docs).
pub fn reconcile(state: &State) {
    let keys = match state.storage.keys() {
        Ok(keys) => keys,
        Err(e) => {
            warn!(error = %e, "refresh recovery: keys not read");
            return;
        }
    };
    let Ok(config) = state.peer_config() else {
        return;
    };
    for key in keys {
        if state.refresh.running(&key.key_id).is_some() {
            continue;
        }
        match (key.pending_epoch, key.active_epoch, key.refresh) {
            (Some(pending), Some(_), Some(origin)) => {
                pending_epoch(state, &config, &key, pending, origin)
            }
            (None, Some(active), _) if key.retiring_epoch.is_some() => {
                retiring_epoch(state, &config, &key, active);
            }
            _ => {}
        }
    }
}

/// What the peer `index` reports about `key`, or why it could not be asked.
fn peer_status(
    state: &State,
    config: &Arc<rustls::ClientConfig>,
    index: u8,
    key: &KeyInfo,
) -> Result<Option<KeyStatus>, String> {
    let address = state
        .config
        .peers
        .iter()
        .find(|p| p.index == index)
        .map(|p| p.address.clone())
        .ok_or_else(|| format!("appliance {index} has no address in peers"))?;
    match Peer::new(index, address).ask(config, &Request::Status)? {
        Response::Status(status) => Ok(status.keys.into_iter().find(|k| k.key_id == key.key_id)),
        other => Err(format!(
            "appliance {index} answered a status request with {}",
            other.kind()
        )),
    }
}

fn pending_epoch(
    state: &State,
    config: &Arc<rustls::ClientConfig>,
    key: &KeyInfo,
    pending: u64,
    origin: RefreshOrigin,
) {
    let decision = if origin.coordinator == state.config.index {
        // This appliance coordinated and runs nothing now: it never committed.
        Some(RefreshStepKind::Discard)
    } else {
        match peer_status(state, config, origin.coordinator, key) {
            Ok(Some(status)) if status.active_epoch >= Some(pending) => {
                Some(RefreshStepKind::Commit)
            }
            Ok(Some(status)) if status.refresh.running == Some(origin.session) => None,
            // The coordinator has the old epoch and runs nothing (or no longer has the key).
            Ok(_) => Some(RefreshStepKind::Discard),
            Err(reason) => {
                debug!(key = %key.key_id, reason = %reason, "refresh recovery: coordinator not reachable; waiting");
                None
            }
        }
    };
    let Some(step) = decision else {
        return;
    };
    apply(state, key, pending, origin, step);
}

fn retiring_epoch(state: &State, config: &Arc<rustls::ClientConfig>, key: &KeyInfo, active: u64) {
    let me = state.config.index;
    for index in (1..=key.parties).filter(|i| *i != me) {
        match peer_status(state, config, index, key) {
            Ok(Some(status)) if status.active_epoch >= Some(active) => {}
            Ok(_) => return,
            Err(reason) => {
                debug!(key = %key.key_id, reason = %reason, "refresh recovery: a holder not reachable; old epoch kept");
                return;
            }
        }
    }
    let origin = key.refresh.unwrap_or(RefreshOrigin {
        session: [0; 16],
        coordinator: me,
    });
    apply(state, key, active, origin, RefreshStepKind::Erase);
}

fn apply(state: &State, key: &KeyInfo, epoch: u64, origin: RefreshOrigin, step: RefreshStepKind) {
    let result = holder::step(state, None, &key.key_id, &origin.session, epoch, step);
    let kind = Request::RefreshStep {
        key_id: key.key_id.clone(),
        session: origin.session,
        epoch,
        step,
    }
    .kind();
    let outcome = match &result {
        Ok(()) => {
            info!(key = %key.key_id, epoch, step = step.as_str(), "refresh recovered");
            "ok".to_owned()
        }
        Err(e) => {
            warn!(key = %key.key_id, epoch, step = step.as_str(), error = %e, "refresh recovery failed");
            e.to_wire().code.as_str().to_owned()
        }
    };
    if let Err(e) = audit_event(state, SELF, kind, &key.key_id, &outcome) {
        warn!(error = %e, "refresh recovery not audited");
    }
}
