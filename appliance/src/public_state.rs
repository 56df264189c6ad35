//! A new appliance takes the cluster's public state from its peers: when its store holds
//! no token object and no PIN (a new data folder, as after `ittc appliance replace` or
//! `ittc appliance add`), or an earlier taking was cut short, a thread of its own asks the
//! configured peers, in index order, for their public state (`PublicState`, one page at a
//! time: token objects, PIN records with their failure counts, the certificate deny-list)
//! and adopts the first that has any, keeping whatever was set here meanwhile. Each
//! attempt is bounded (the peer connection's time limits, a page count); when no peer
//! answers, it tries again after 1 s, 2 s, 4 s, … at most a minute. It stops once the state
//! is taken, once every peer has answered with none (a new cluster), or once the store
//! holds state of its own.
//!
//! Keys and shares are not part of it: rebuilding a lost appliance's shares is the peers'
//! recovery protocol.

use std::sync::Arc;
use std::time::Duration;

use ittc_wire::client::Timeouts;
use ittc_wire::limits::MAX_OBJECTS;
use ittc_wire::{ObjectId, PublicState, Request, Response};
use tracing::{info, warn};

use crate::peers::Peer;
use crate::state::State;
use crate::storage::{Adopted, AuditEntry};

/// The first wait after a pass in which no peer could give its state.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between passes.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Time limits of one peer connection.
const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    io: Duration::from_secs(10),
};

/// Starts the thread that takes the public state, if this appliance needs it and has
/// peers to ask.
pub fn start(state: Arc<State>) {
    match state.storage.needs_public_state() {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            warn!(error = %e, "cannot tell whether the store needs the public state");
            return;
        }
    }
    if state.config.peers.is_empty() {
        info!("empty store and no peers configured: no public state to take");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("public-state".into())
        .spawn(move || run(&state));
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the thread that takes the public state");
    }
}

/// What one pass over the peers came to.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// Peer `from` gave its state; this much of it was new here.
    Taken { from: u8, adopted: Adopted },
    /// Every peer answered, none with any state.
    NothingToTake,
    /// No peer gave its state; why, per peer.
    Failed(Vec<String>),
}

fn run(state: &State) {
    let mut wait = FIRST_RETRY;
    loop {
        match state.storage.needs_public_state() {
            Ok(true) => {}
            Ok(false) => {
                info!("the store has state of its own now: not taking the peers'");
                return;
            }
            Err(e) => warn!(error = %e, "cannot read the store"),
        }
        match pass(state) {
            Pass::Taken { from, adopted } => {
                info!(
                    from,
                    objects = adopted.objects,
                    pins = adopted.pins,
                    revoked = adopted.revoked,
                    "public state taken from a peer"
                );
                audit(
                    state,
                    from,
                    &format!(
                        "ok: {} objects, {} PIN records, {} revoked certificates",
                        adopted.objects, adopted.pins, adopted.revoked
                    ),
                );
                return;
            }
            Pass::NothingToTake => {
                info!("the peers hold no public state yet: nothing to take");
                if let Err(e) = state.storage.mark_taking_public_state(false) {
                    warn!(error = %e, "cannot record that the public state is taken");
                }
                return;
            }
            Pass::Failed(reasons) => {
                warn!(
                    retry_in_s = wait.as_secs(),
                    reasons = reasons.join("; "),
                    "no peer gave its public state yet"
                );
            }
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// Asks each peer in index order; adopts the state of the first that has any.
fn pass(state: &State) -> Pass {
    let config = match state.peer_config() {
        Ok(config) => config,
        Err(e) => return Pass::Failed(vec![e.to_string()]),
    };
    let mut peers: Vec<_> = state.config.peers.iter().collect();
    peers.sort_by_key(|p| p.index);
    let mut failures = Vec::new();
    for p in peers {
        let mut peer = Peer::with_timeouts(p.index, p.address.clone(), TIMEOUTS);
        let first = match ask(&mut peer, &config, None) {
            Ok(page) => page,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        if first.pins.is_empty()
            && first.revoked.is_empty()
            && first.objects.is_empty()
            && first.next.is_none()
        {
            continue;
        }
        match adopt_all(state, &mut peer, &config, first) {
            Ok(adopted) => {
                return Pass::Taken {
                    from: p.index,
                    adopted,
                };
            }
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Pass::NothingToTake
    } else {
        Pass::Failed(failures)
    }
}

/// Takes what this appliance lacks of appliance `index`'s public state (an appliance that
/// was away while a key was generated and stored its objects), keeping everything it has;
/// audited as when a new appliance takes it.
///
/// # Errors
///
/// Why the peer could not be asked or its state not stored.
pub fn take_from(state: &State, index: u8) -> Result<Adopted, String> {
    let config = state.peer_config().map_err(|e| e.to_string())?;
    let address = state
        .config
        .peers
        .iter()
        .find(|p| p.index == index)
        .map(|p| p.address.clone())
        .ok_or_else(|| format!("appliance {index} has no address in peers"))?;
    let mut peer = Peer::with_timeouts(index, address, TIMEOUTS);
    let first = ask(&mut peer, &config, None)?;
    let adopted = adopt_all(state, &mut peer, &config, first)?;
    audit(
        state,
        index,
        &format!(
            "ok: {} objects, {} PIN records, {} revoked certificates new here",
            adopted.objects, adopted.pins, adopted.revoked
        ),
    );
    Ok(adopted)
}

/// Adopts `first` and every page after it; the store is marked as taking the state
/// until the last page is in.
fn adopt_all(
    state: &State,
    peer: &mut Peer,
    config: &Arc<rustls::ClientConfig>,
    first: PublicState,
) -> Result<Adopted, String> {
    let index = peer.index;
    let store = |e: crate::storage::StorageError| format!("storing appliance {index}'s state: {e}");
    state
        .storage
        .mark_taking_public_state(true)
        .map_err(store)?;
    let mut total = state.storage.adopt_public_state(&first).map_err(store)?;
    let mut from = first.next;
    // Each later page holds at least one object, so this many pages hold them all.
    for _ in 0..=MAX_OBJECTS {
        let Some(start) = from else {
            state
                .storage
                .mark_taking_public_state(false)
                .map_err(store)?;
            return Ok(total);
        };
        let page = ask(peer, config, Some(start))?;
        let moved_on = page.objects.first().is_some_and(|o| o.handle >= start)
            && page.next.is_none_or(|n| n > start);
        if !moved_on || !page.pins.is_empty() || !page.revoked.is_empty() {
            return Err(format!(
                "appliance {index} answered a page of its public state out of order"
            ));
        }
        total.add(state.storage.adopt_public_state(&page).map_err(store)?);
        from = page.next;
    }
    Err(format!(
        "appliance {index} sent more pages of its public state than it can have"
    ))
}

/// One page of `peer`'s public state.
fn ask(
    peer: &mut Peer,
    config: &Arc<rustls::ClientConfig>,
    from: Option<ObjectId>,
) -> Result<PublicState, String> {
    let index = peer.index;
    match peer.ask(config, &Request::PublicState { from })? {
        Response::PublicState(page) => Ok(page),
        Response::Error(e) => Err(format!("appliance {index} refused: {e}")),
        other => Err(format!(
            "appliance {index} answered a public state request with {}",
            other.kind()
        )),
    }
}

/// Records what was taken in the audit log.
fn audit(state: &State, from: u8, result: &str) {
    let entry = AuditEntry {
        time_unix_ms: ittc_wire::now_unix_ms(),
        client: "self (public state)".to_owned(),
        request: "public_state_taken".to_owned(),
        key_id: Some(format!("from appliance {from}")),
        result: result.to_owned(),
    };
    if let Err(e) = state.storage.audit_append(&entry) {
        warn!(error = %e, "taking the public state could not be audited");
    }
}
