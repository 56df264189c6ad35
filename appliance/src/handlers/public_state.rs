//! The cluster's public state for a peer that starts with an empty store (a replaced
//! appliance): token objects, PIN records, deny-list, one page at a time. The peer side
//! is [`crate::public_state`].

use ittc_wire::{MAX_FRAME, ObjectId, Response};

use crate::error::ApplianceError;
use crate::state::State;

/// The encoded size of one page's objects, PIN records and deny-list: half a frame.
pub const PAGE_BUDGET: usize = MAX_FRAME / 2;

/// One page of this appliance's public state, from object `from` on.
pub fn handle_public_state(
    state: &State,
    from: Option<ObjectId>,
) -> Result<Response, ApplianceError> {
    let page = state.storage.public_state_page(from, PAGE_BUDGET)?;
    tracing::info!(
        objects = page.objects.len(),
        pins = page.pins.len(),
        revoked = page.revoked.len(),
        "public state page served"
    );
    Ok(Response::PublicState(page))
}
