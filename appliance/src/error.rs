//! The appliance's errors, and the one place they become wire error codes.

use std::path::{Path, PathBuf};

use ittc_wire::{ErrorCode, WireError};

use crate::storage::StorageError;

/// A configuration file that cannot be used: one line naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("config {}: {message}", path.display())]
pub struct ConfigError {
    path: PathBuf,
    message: String,
}

impl ConfigError {
    /// An error about the file at `path`.
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// Why a request failed. [`ApplianceError::to_wire`] gives the client a closed code and a
/// message without internal detail; the full error goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    /// The client speaks another protocol version.
    #[error("protocol version {0} is not supported")]
    UnsupportedVersion(u16),
    /// The request is malformed or out of order.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The peer's role may not make this request.
    #[error("{role} may not send {request}")]
    Forbidden {
        /// The peer's role.
        role: String,
        /// The request kind.
        request: &'static str,
    },
    /// The request needs a login.
    #[error("not logged in as {0}")]
    NotLoggedIn(&'static str),
    /// A wrong PIN.
    #[error("incorrect PIN, {remaining} attempts left")]
    PinIncorrect {
        /// Attempts left before the PIN locks.
        remaining: u32,
    },
    /// The PIN is locked.
    #[error("PIN locked after too many wrong attempts")]
    PinLocked,
    /// The PIN is not set, or a new PIN breaks the policy.
    #[error("{0}")]
    PinInvalid(String),
    /// No share of that key here.
    #[error("no key {0}")]
    UnknownKey(String),
    /// No share for that epoch.
    #[error("no share of key {key} for epoch {asked}")]
    WrongEpoch {
        /// The key.
        key: String,
        /// The epoch asked for.
        asked: u64,
    },
    /// No such object.
    #[error("no object {0}")]
    NotFound(u64),
    /// Too many partial operations in flight.
    #[error("busy: {0} partial operations in flight")]
    Busy(usize),
    /// The share store failed or refused.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The threshold math refused the input or failed.
    #[error(transparent)]
    Threshold(#[from] ittc_threshold::Error),
    /// A key generation failed or was refused; the message says why (never a secret).
    #[error("key generation failed: {0}")]
    Keygen(String),
    /// A message or progress request for a session (key generation, refresh) this
    /// appliance does not run: not started here yet, or over.
    #[error("no such session here (not started yet, or over)")]
    NoSession,
    /// A run with the peers could not start or go on (a peer gave up, too many runs).
    #[error("{0}")]
    Peers(String),
    /// A refresh failed or was refused; the message says why (never a secret).
    #[error("refresh failed: {0}")]
    Refresh(String),
    /// Anything else inside the appliance.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApplianceError {
    /// The closed code and the message a client sees. Internal failures say only that they
    /// happened; the log has the rest.
    pub fn to_wire(&self) -> WireError {
        use ittc_threshold::Error as T;
        let (code, public) = match self {
            Self::UnsupportedVersion(_) => (ErrorCode::UnsupportedVersion, true),
            Self::BadRequest(_) => (ErrorCode::BadRequest, true),
            Self::Forbidden { .. } => (ErrorCode::Forbidden, true),
            Self::NotLoggedIn(_) => (ErrorCode::NotLoggedIn, true),
            Self::PinIncorrect { .. } => (ErrorCode::PinIncorrect, true),
            Self::PinLocked => (ErrorCode::PinLocked, true),
            Self::PinInvalid(_) => (ErrorCode::PinInvalid, true),
            Self::UnknownKey(_) => (ErrorCode::UnknownKey, true),
            Self::WrongEpoch { .. } => (ErrorCode::WrongEpoch, true),
            Self::NotFound(_) => (ErrorCode::NotFound, true),
            Self::Busy(_) => (ErrorCode::Busy, true),
            Self::NoSession => (ErrorCode::NotFound, true),
            // Not an internal fault: the message names the peer and the step, no secret.
            Self::Keygen(_) | Self::Peers(_) | Self::Refresh(_) => (ErrorCode::Internal, true),
            Self::Storage(e) => (
                storage_code(e),
                !matches!(storage_code(e), ErrorCode::Internal),
            ),
            Self::Threshold(T::OutOfRange(_)) => (ErrorCode::BadRequest, true),
            Self::Threshold(_) | Self::Internal(_) => (ErrorCode::Internal, false),
        };
        let message = if public {
            self.to_string()
        } else {
            "internal error; see the appliance log".into()
        };
        WireError::new(code, message)
    }
}

fn storage_code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::AlreadyExists { .. } | StorageError::Conflict { .. } => {
            ErrorCode::AlreadyExists
        }
        StorageError::WrongEpoch { .. } => ErrorCode::WrongEpoch,
        StorageError::UnknownKey { .. } => ErrorCode::UnknownKey,
        StorageError::PendingEpoch { .. } | StorageError::RefreshUnfinished { .. } => {
            ErrorCode::Busy
        }
        StorageError::OtherSession { .. } => ErrorCode::Forbidden,
        StorageError::Superseded { .. } => ErrorCode::Superseded,
        StorageError::WrongIndex { .. } | StorageError::Invalid(_) => ErrorCode::BadRequest,
        StorageError::Unseal
        | StorageError::WrongSealingKey
        | StorageError::WrongAppliance { .. }
        | StorageError::Schema { .. }
        | StorageError::KeyFile { .. }
        | StorageError::Corrupt(_)
        | StorageError::Db(_)
        | StorageError::Io(_) => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_closed_and_internal_detail_stays_inside() {
        let table = [
            (
                ApplianceError::UnsupportedVersion(9),
                ErrorCode::UnsupportedVersion,
            ),
            (
                ApplianceError::BadRequest("x".into()),
                ErrorCode::BadRequest,
            ),
            (
                ApplianceError::Forbidden {
                    role: "client".into(),
                    request: "store-share",
                },
                ErrorCode::Forbidden,
            ),
            (ApplianceError::NotLoggedIn("user"), ErrorCode::NotLoggedIn),
            (
                ApplianceError::PinIncorrect { remaining: 3 },
                ErrorCode::PinIncorrect,
            ),
            (ApplianceError::PinLocked, ErrorCode::PinLocked),
            (
                ApplianceError::PinInvalid("short".into()),
                ErrorCode::PinInvalid,
            ),
            (
                ApplianceError::UnknownKey("01".into()),
                ErrorCode::UnknownKey,
            ),
            (
                ApplianceError::WrongEpoch {
                    key: "01".into(),
                    asked: 2,
                },
                ErrorCode::WrongEpoch,
            ),
            (ApplianceError::NotFound(7), ErrorCode::NotFound),
            (ApplianceError::Busy(64), ErrorCode::Busy),
            (
                ApplianceError::Threshold(ittc_threshold::Error::OutOfRange("input")),
                ErrorCode::BadRequest,
            ),
            (
                ApplianceError::Threshold(ittc_threshold::Error::Verification),
                ErrorCode::Internal,
            ),
            (
                ApplianceError::Internal("disk on fire at /secret/path".into()),
                ErrorCode::Internal,
            ),
        ];
        for (err, code) in table {
            let wire = err.to_wire();
            assert_eq!(wire.code, code, "{err}");
            if code == ErrorCode::Internal {
                assert!(!wire.message.contains("secret"), "{}", wire.message);
            }
        }
        assert!(
            ApplianceError::PinIncorrect { remaining: 3 }
                .to_wire()
                .message
                .contains('3')
        );
    }

    #[test]
    fn storage_refusals_keep_their_codes_and_messages() {
        let key_id = ittc_wire::KeyId::new(b"k".to_vec()).unwrap();
        let table = [
            (
                StorageError::UnknownKey {
                    key_id: key_id.clone(),
                },
                ErrorCode::UnknownKey,
            ),
            (
                StorageError::WrongEpoch {
                    key_id: key_id.clone(),
                    epoch: 2,
                    active: None,
                    pending: Some(1),
                },
                ErrorCode::WrongEpoch,
            ),
            (
                StorageError::PendingEpoch {
                    key_id: key_id.clone(),
                    pending: 1,
                },
                ErrorCode::Busy,
            ),
            (
                StorageError::AlreadyExists { key_id, epoch: 1 },
                ErrorCode::AlreadyExists,
            ),
        ];
        for (err, code) in table {
            let text = err.to_string();
            let wire = ApplianceError::Storage(err).to_wire();
            assert_eq!(wire.code, code, "{text}");
            assert_eq!(wire.message, text);
        }
    }
}
