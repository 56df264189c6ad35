//! Token objects: certificates, public keys and data objects, stored as the client gave
//! them with the version it gave, and replicated by the client to every appliance.

use ittc_wire::{ObjectId, ObjectVersion, Response, TokenObject};

use crate::error::ApplianceError;
use crate::state::State;

/// How far ahead of this appliance's clock a version's counter may be. Versions are the
/// writers' clocks; one far in the future would make the object unchangeable for as long.
const MAX_AHEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// Refuses a version whose counter is more than [`MAX_AHEAD_MS`] ahead of the clock.
fn check_version(version: ObjectVersion) -> Result<(), ApplianceError> {
    let now = ittc_wire::now_unix_ms();
    if version.counter > now.saturating_add(MAX_AHEAD_MS) {
        return Err(ApplianceError::BadRequest(format!(
            "object version {} is more than a day ahead of this appliance's clock",
            version.counter
        )));
    }
    Ok(())
}

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
    check_version(version)?;
    state.storage.put_object(object, version)?;
    Ok(Response::Ok)
}

/// Deletes an object (leaves a tombstone), unless a newer version is stored.
pub fn handle_delete(
    state: &State,
    handle: ObjectId,
    version: ObjectVersion,
) -> Result<Response, ApplianceError> {
    check_version(version)?;
    state.storage.delete_object(handle, version)?;
    Ok(Response::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_far_in_the_future_are_refused() {
        let now = ObjectVersion::next(None, 0);
        assert!(check_version(now).is_ok());
        assert!(check_version(ObjectVersion::ORIGINAL).is_ok());
        let ahead = ObjectVersion {
            counter: now.counter + MAX_AHEAD_MS / 2,
            writer: 0,
        };
        assert!(check_version(ahead).is_ok());
        let far = ObjectVersion {
            counter: now.counter + 2 * MAX_AHEAD_MS,
            writer: 0,
        };
        assert!(matches!(
            check_version(far),
            Err(ApplianceError::BadRequest(_))
        ));
        assert!(
            check_version(ObjectVersion {
                counter: u64::MAX,
                writer: 0
            })
            .is_err()
        );
    }
}
