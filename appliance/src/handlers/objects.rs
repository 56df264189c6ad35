//! Token objects: certificates, public keys and data objects, stored as the client gave
//! them with the version it gave, and replicated by the client to every appliance.

use ittc_wire::{ObjectId, ObjectVersion, Response, TokenObject};

use crate::error::ApplianceError;
use crate::state::State;

/// Every object's handle and class.
pub fn handle_list(state: &State) -> Result<Response, ApplianceError> {
    Ok(Response::Objects(state.storage.objects()?))
}

/// One object.
pub fn handle_get(state: &State, handle: ObjectId) -> Result<Response, ApplianceError> {
    let object = state
        .storage
        .object(handle)?
        .ok_or(ApplianceError::NotFound(handle.0))?;
    let (object, version) = object;
    Ok(Response::Object { object, version })
}

/// Creates or replaces an object, unless a newer version is stored.
pub fn handle_put(
    state: &State,
    object: &TokenObject,
    version: ObjectVersion,
) -> Result<Response, ApplianceError> {
    state.storage.put_object(object, version)?;
    Ok(Response::Ok)
}

/// Deletes an object (leaves a tombstone), unless a newer version is stored.
pub fn handle_delete(
    state: &State,
    handle: ObjectId,
    version: ObjectVersion,
) -> Result<Response, ApplianceError> {
    state.storage.delete_object(handle, version)?;
    Ok(Response::Ok)
}
