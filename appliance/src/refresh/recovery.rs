//! Finishing or rolling back a refresh that a crash interrupted, and catching up with the
//! others, by asking the peers. Every pass asks each peer for its status once, then for
//! each key with no refresh or rebuild under way here:
//!
//! * **A pending epoch from a refresh.** Its coordinator decided: if the coordinator has
//!   the epoch active, commit it here too; if it has not and runs no refresh of the key,
//!   it never will (it commits itself before anyone else), so discard it; if it cannot be
//!   reached, wait (the key signs on the old epoch meanwhile). When this appliance is the
//!   coordinator and runs nothing, it never committed: discard.
//! * **A retiring epoch.** Once `k` holders (this one included) have the new epoch
//!   active, no holder that answers still has it pending, and the refresh no longer runs
//!   on its coordinator (whose own erase step would come), erase it. A holder that is
//!   away does not hold the erasure back: it catches up by a rebuild when it returns.
//! * **Left out by a reshare.** A reshare that leaves this appliance out and was not
//!   committed is committed or forgotten as a pending epoch is; once committed, the key is
//!   erased here when `k` of the new holders have the new epoch active and none has it
//!   pending.
//! * **Behind.** When `k` peers hold a newer epoch active than this appliance (or hold a
//!   key this appliance does not have at all: it was replaced), rebuild this appliance's
//!   share of that epoch from them ([`super::rebuild`]); a failed rebuild is retried with
//!   back-off. If that epoch's holders do not include this appliance (a reshare retired
//!   it while it was away), erase the key here instead.
//!
//! Every decision taken here is audited (`self (refresh recovery)`, `self (share
//! recovery)`) and logged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ittc_wire::{KeyId, KeyStatus, Participant, RefreshStepKind, Request, StatusInfo};
use tracing::{debug, info, warn};

use super::{holder, rebuild};
use crate::handlers::audit_event;
use crate::peers;
use crate::state::State;
use crate::storage::{KeyInfo, Leaving, RefreshOrigin};

/// Who the audit log names for what recovery does.
const SELF: &str = "self (refresh recovery)";

/// What the peers reported in one pass.
struct View {
    statuses: BTreeMap<u8, Result<StatusInfo, String>>,
}

impl View {
    /// What peer `index` reports about `key_id` (`None`: it does not hold it).
    fn key(&self, index: u8, key_id: &KeyId) -> Result<Option<&KeyStatus>, String> {
        match self.statuses.get(&index) {
            Some(Ok(status)) => Ok(status.keys.iter().find(|k| &k.key_id == key_id)),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("appliance {index} has no address in peers")),
        }
    }

    /// Every key some peer holds.
    fn key_ids(&self) -> BTreeSet<KeyId> {
        self.statuses
            .values()
            .filter_map(|s| s.as_ref().ok())
            .flat_map(|s| s.keys.iter().map(|k| k.key_id.clone()))
            .collect()
    }
}

/// How often the peers are asked when nothing here waits for them (no pending or
/// retiring epoch): often enough to notice being behind, or that a leader is gone, and
/// rare enough to keep the peers' connection logs quiet.
pub const PEER_CHECK: Duration = Duration::from_secs(10);

/// One pass over every key (see the module docs). Returns the peers that answered (those
/// of the last pass that asked them, if this one did not).
pub fn reconcile(state: &State) -> Vec<u8> {
    let keys = match state.storage.keys() {
        Ok(keys) => keys,
        Err(e) => {
            warn!(error = %e, "refresh recovery: keys not read");
            return Vec::new();
        }
    };
    let waiting = keys
        .iter()
        .any(|k| k.pending_epoch.is_some() || k.retiring_epoch.is_some() || k.leaving.is_some());
    if !waiting && let Some(answered) = state.refresh.recent_peer_check(PEER_CHECK) {
        return answered;
    }
    let peers: Vec<Participant> = state
        .config
        .peers
        .iter()
        .map(|p| Participant {
            index: p.index,
            address: p.address.clone(),
        })
        .collect();
    if peers.is_empty() || state.peer_config().is_err() {
        return Vec::new();
    }
    let view = View {
        statuses: peers::statuses(state, &peers).into_iter().collect(),
    };
    for key in &keys {
        if state.refresh.running(&key.key_id).is_some() {
            continue;
        }
        if let Some(leaving) = key.leaving {
            left_out(state, &view, key, leaving);
            continue;
        }
        match (key.pending_epoch, key.active_epoch, key.refresh) {
            // With an active epoch, a refresh's; without, a reshare's to a new holder.
            (Some(pending), _, Some(origin)) => {
                pending_epoch(state, &view, key, pending, origin);
            }
            (None, Some(active), _) if key.retiring_epoch.is_some() => {
                retiring_epoch(state, &view, key, active);
            }
            _ => {}
        }
    }
    for key_id in view.key_ids() {
        let local = keys.iter().find(|k| k.key_id == key_id);
        catch_up(state, &view, &peers, &key_id, local);
    }
    let answered: Vec<u8> = view
        .statuses
        .iter()
        .filter(|(_, s)| s.is_ok())
        .map(|(i, _)| *i)
        .collect();
    state.refresh.peers_checked(answered.clone());
    answered
}

fn pending_epoch(state: &State, view: &View, key: &KeyInfo, pending: u64, origin: RefreshOrigin) {
    if let Some(step) = decide(state, view, key, pending, origin) {
        apply(state, key, pending, origin, step);
    }
}

/// What becomes of the refresh `origin` to `epoch` that this appliance stored (or that
/// leaves it out), from what its coordinator reports: commit, discard, or wait (`None`).
fn decide(
    state: &State,
    view: &View,
    key: &KeyInfo,
    pending: u64,
    origin: RefreshOrigin,
) -> Option<RefreshStepKind> {
    if origin.coordinator == state.config.index {
        // This appliance coordinated and runs nothing now: it never committed.
        Some(RefreshStepKind::Discard)
    } else {
        match view.key(origin.coordinator, &key.key_id) {
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
    }
}

/// A reshare that leaves this appliance out: decided like a pending epoch; once
/// committed, the key is erased here when `k` of the new holders answer with the new epoch
/// active, none has it pending, and the reshare no longer runs on its coordinator.
fn left_out(state: &State, view: &View, key: &KeyInfo, leaving: Leaving) {
    let origin = leaving.origin;
    if !leaving.committed {
        if let Some(step) = decide(state, view, key, leaving.epoch, origin) {
            apply(state, key, leaving.epoch, origin, step);
        }
        return;
    }
    if let Ok(Some(status)) = view.key(origin.coordinator, &key.key_id)
        && status.refresh.running == Some(origin.session)
    {
        return;
    }
    let mut holding = 0;
    let mut threshold = None;
    for &index in view.statuses.keys() {
        match view.key(index, &key.key_id) {
            Ok(Some(status)) if status.active_epoch >= Some(leaving.epoch) => {
                holding += 1;
                threshold = Some(status.threshold);
            }
            Ok(Some(status)) if status.pending_epoch == Some(leaving.epoch) => return,
            Ok(_) | Err(_) => {}
        }
    }
    if threshold.is_some_and(|k| holding >= usize::from(k)) {
        apply(state, key, leaving.epoch, origin, RefreshStepKind::Erase);
    }
}

fn retiring_epoch(state: &State, view: &View, key: &KeyInfo, active: u64) {
    let me = state.config.index;
    // The refresh still runs on its coordinator: its own erase step is on the way.
    if let Some(origin) = key.refresh
        && origin.coordinator != me
        && let Ok(Some(status)) = view.key(origin.coordinator, &key.key_id)
        && status.refresh.running == Some(origin.session)
    {
        return;
    }
    let sharing = key.sharing(active);
    let mut holding = 1;
    for &index in sharing.holders.iter().filter(|i| **i != me) {
        match view.key(index, &key.key_id) {
            Ok(Some(status)) if status.active_epoch >= Some(active) => holding += 1,
            Ok(Some(status)) if status.pending_epoch == Some(active) => {
                debug!(key = %key.key_id, index, "refresh recovery: a holder has not committed yet; old epoch kept");
                return;
            }
            // Behind or away: it catches up by a rebuild.
            Ok(_) | Err(_) => {}
        }
    }
    if holding < usize::from(sharing.threshold) {
        debug!(key = %key.key_id, holding, "refresh recovery: too few holders of the new epoch answer; old epoch kept");
        return;
    }
    let origin = key.refresh.unwrap_or(RefreshOrigin {
        session: [0; 16],
        coordinator: me,
    });
    apply(state, key, active, origin, RefreshStepKind::Erase);
}

/// Rebuilds this appliance's share of `key_id` if `k` peers hold a newer epoch active
/// than it does (or it has none).
fn catch_up(
    state: &State,
    view: &View,
    peers: &[Participant],
    key_id: &KeyId,
    local: Option<&KeyInfo>,
) {
    let me = state.config.index;
    if let Some(local) = local
        && (local.pending_epoch.is_some()
            || local.retiring_epoch.is_some()
            || local.leaving.is_some())
    {
        // A refresh to finish first (above).
        return;
    }
    // Each epoch some peer has active: who has it, its threshold and its holders.
    let mut epochs: BTreeMap<u64, (Vec<u8>, u8, Vec<u8>)> = BTreeMap::new();
    for peer in peers {
        if let Ok(Some(status)) = view.key(peer.index, key_id)
            && let Some(epoch) = status.active_epoch
        {
            let entry = epochs
                .entry(epoch)
                .or_insert_with(|| (Vec::new(), status.threshold, status.holders.clone()));
            entry.0.push(peer.index);
        }
    }
    let Some((&epoch, (helpers, threshold, holders))) = epochs
        .iter()
        .rev()
        .find(|(_, (h, k, _))| h.len() >= usize::from(*k))
    else {
        return;
    };
    let threshold = *threshold;
    let current = local.and_then(|l| l.active_epoch);
    if current >= Some(epoch) || state.refresh.running(key_id).is_some() {
        return;
    }
    if !holders.contains(&me) {
        if local.is_some() {
            retired(state, key_id, epoch);
        }
        return;
    }
    if !state.refresh.rebuild_due(key_id) {
        return;
    }
    let helpers: Vec<Participant> = helpers
        .iter()
        .take(usize::from(threshold))
        .filter_map(|i| peers.iter().find(|p| p.index == *i).cloned())
        .collect();
    info!(
        key = %key_id,
        have = ?current,
        epoch,
        helpers = ?helpers.iter().map(|h| h.index).collect::<Vec<_>>(),
        "behind the other holders: rebuilding this appliance's share"
    );
    // A key new here (generated while this appliance was away): its public-key object
    // too, and whatever else was stored meanwhile, before the key answers here.
    if local.is_none()
        && let Some(index) = helpers.first().map(|h| h.index)
        && let Err(e) = crate::public_state::take_from(state, index)
    {
        warn!(key = %key_id, error = %e, "the key's objects were not taken from a peer");
    }
    match rebuild::rebuild(state, key_id, epoch, helpers) {
        Ok(()) => state.refresh.rebuild_done(key_id, true),
        Err(e) => {
            warn!(key = %key_id, epoch, error = %e, "rebuilding the share failed; will retry");
            state.refresh.rebuild_done(key_id, false);
            if local.is_some()
                && let Err(e) = state
                    .storage
                    .record_refresh_failure(key_id, &format!("catching up to epoch {epoch}: {e}"))
            {
                warn!(key = %key_id, error = %e, "rebuild failure not recorded");
            }
        }
    }
}

/// `k` peers have `epoch` of `key_id` active, and its holders leave this appliance out: a
/// reshare retired it while it was away. Its share of an older epoch is erased.
fn retired(state: &State, key_id: &KeyId, epoch: u64) {
    let outcome = match state.storage.delete_key(key_id) {
        Ok(_) => {
            info!(key = %key_id, epoch, "a reshare left this appliance out: its share of the key is erased");
            "ok".to_owned()
        }
        Err(e) => {
            warn!(key = %key_id, error = %e, "erasing the key a reshare took from this appliance failed");
            crate::error::ApplianceError::from(e)
                .to_wire()
                .code
                .as_str()
                .to_owned()
        }
    };
    if let Err(e) = audit_event(state, SELF, "reshare_retired", key_id, &outcome) {
        warn!(error = %e, "retirement not audited");
    }
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
