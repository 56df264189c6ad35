//! Token objects: certificates, public keys and data objects, stored as the client gave
//! them and replicated by the client to every appliance.

use ittc_wire::{ObjectId, Response, TokenObject};

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
    Ok(Response::Object(object))
}

/// Creates or replaces an object.
pub fn handle_put(state: &State, object: &TokenObject) -> Result<Response, ApplianceError> {
    state.storage.put_object(object)?;
    Ok(Response::Ok)
}

/// Deletes an object.
pub fn handle_delete(state: &State, handle: ObjectId) -> Result<Response, ApplianceError> {
    if !state.storage.delete_object(handle)? {
        return Err(ApplianceError::NotFound(handle.0));
    }
    Ok(Response::Ok)
}
