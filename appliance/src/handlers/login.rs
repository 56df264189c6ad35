//! Login and logout of a connection.

use ittc_wire::{Response, UserKind};

use crate::error::ApplianceError;
use crate::state::{Session, State};
use crate::storage::PinCheck;

/// Checks `pin` for `user` (counting failures persistently; a PIN proven recently is
/// accepted without the hash) and logs the connection in.
pub fn handle_login(
    state: &State,
    session: &mut Session,
    user: UserKind,
    pin: &[u8],
) -> Result<Response, ApplianceError> {
    match state.storage.check_login_pin(user, pin)? {
        PinCheck::Correct => {
            session.login = Some(user);
            Ok(Response::Ok)
        }
        PinCheck::Incorrect { remaining } => Err(ApplianceError::PinIncorrect { remaining }),
        PinCheck::Locked => Err(ApplianceError::PinLocked),
        PinCheck::NotSet => Err(ApplianceError::PinInvalid(
            "the PIN is not initialised".into(),
        )),
    }
}

/// Logs the connection out.
pub fn handle_logout(session: &mut Session) -> Result<Response, ApplianceError> {
    if session.login.take().is_none() {
        return Err(ApplianceError::NotLoggedIn("anyone"));
    }
    Ok(Response::Ok)
}
