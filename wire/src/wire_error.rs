//! Errors that an appliance reports to its client, inside [`crate::Response::Error`].

use core::fmt;

use bincode::{Decode, Encode};

use crate::Error;
use crate::limits::{MAX_ERROR_MESSAGE_LEN, check_len};

/// An error reported by an appliance: a closed code for programs and a message for people.
///
/// The fields are frozen across protocol versions (see the crate docs).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    /// What went wrong, for the client to act on.
    pub code: ErrorCode,
    /// Details for logs, at most [`MAX_ERROR_MESSAGE_LEN`] bytes; never contains secrets.
    pub message: String,
}

impl WireError {
    /// An error with a message, cut to [`MAX_ERROR_MESSAGE_LEN`] bytes (at a character
    /// boundary) so that it always encodes.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_LEN {
            let mut end = MAX_ERROR_MESSAGE_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { code, message }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_len(
            self.message.len(),
            MAX_ERROR_MESSAGE_LEN,
            "error message too long",
        )
    }
}

/// Why an appliance refused or failed a request.
///
/// The set is closed: a client matches on it exhaustively. Existing values keep their
/// encoding; a later protocol version may append new ones, never reorder them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum ErrorCode {
    /// The appliance does not speak the client's protocol version.
    UnsupportedVersion,
    /// The request is not valid here (malformed, out of order, or before `Hello`).
    BadRequest,
    /// The request frame was larger than the appliance accepts.
    FrameTooLarge,
    /// The peer's role (its certificate, or its login state) does not allow the request.
    Forbidden,
    /// The request needs a logged-in user or security officer.
    NotLoggedIn,
    /// The PIN is wrong.
    PinIncorrect,
    /// Too many wrong PINs: the PIN is locked.
    PinLocked,
    /// The new PIN breaks the PIN policy.
    PinInvalid,
    /// The appliance holds no share of that key.
    UnknownKey,
    /// The appliance does not hold a share of the key for that epoch.
    WrongEpoch,
    /// No such object.
    NotFound,
    /// The key or object exists already.
    AlreadyExists,
    /// The appliance is busy (e.g. a refresh is running); retry later.
    Busy,
    /// Something failed inside the appliance; its log says what.
    Internal,
    /// A newer version of the object is stored: the write lost to another.
    Superseded,
}

impl ErrorCode {
    /// Every code, in encoding order.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::UnsupportedVersion,
        ErrorCode::BadRequest,
        ErrorCode::FrameTooLarge,
        ErrorCode::Forbidden,
        ErrorCode::NotLoggedIn,
        ErrorCode::PinIncorrect,
        ErrorCode::PinLocked,
        ErrorCode::PinInvalid,
        ErrorCode::UnknownKey,
        ErrorCode::WrongEpoch,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::Superseded,
    ];

    /// A short fixed name, e.g. `"pin_locked"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::PinIncorrect => "pin_incorrect",
            ErrorCode::PinLocked => "pin_locked",
            ErrorCode::PinInvalid => "pin_invalid",
            ErrorCode::UnknownKey => "unknown_key",
            ErrorCode::WrongEpoch => "wrong_epoch",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::Superseded => "superseded",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_their_encoding() {
        // The discriminant is the position in ALL; a reorder would break old peers.
        let config = bincode::config::standard().with_fixed_int_encoding();
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            let bytes = bincode::encode_to_vec(code, config).unwrap();
            assert_eq!(bytes, u32::try_from(i).unwrap().to_le_bytes());
        }
        assert_eq!(ErrorCode::ALL[0], ErrorCode::UnsupportedVersion);
        assert_eq!(ErrorCode::ALL[13], ErrorCode::Internal);
    }

    #[test]
    fn names_are_distinct() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn new_truncates_long_messages_at_a_char_boundary() {
        let err = WireError::new(ErrorCode::Internal, "é".repeat(MAX_ERROR_MESSAGE_LEN));
        assert!(err.message.len() <= MAX_ERROR_MESSAGE_LEN);
        assert!(err.validate().is_ok());
        let short = WireError::new(ErrorCode::PinLocked, "locked after 5 failures");
        assert_eq!(short.to_string(), "pin_locked: locked after 5 failures");
    }
}
