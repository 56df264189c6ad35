//! The crate's error type.

use std::io;

/// Why encoding, decoding or moving a frame failed.
///
/// These are local failures (a broken stream, bytes that are not a valid message). An
/// error that the appliance reports on purpose travels as a [`crate::WireError`] inside
/// [`crate::Response::Error`] and is not an `Error` of this type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the stream failed, including an end of stream in the middle of
    /// a frame.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),

    /// The peer closed the stream cleanly, before the first byte of a frame.
    #[error("connection closed by peer")]
    Closed,

    /// A frame or message is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced or encoded length.
        len: u64,
        /// The limit ([`crate::MAX_FRAME`]).
        max: usize,
    },

    /// A frame header announced a body of zero bytes, which no message has.
    #[error("empty frame")]
    EmptyFrame,

    /// The bytes are not an encoding of the expected message type.
    #[error("malformed message: {0}")]
    Decode(String),

    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),

    /// A message decoded but bytes were left over after it.
    #[error("{extra} trailing bytes after the message")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },

    /// The message is well formed but breaks a documented limit or invariant (a string
    /// too long, a threshold larger than the number of parties, …).
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

impl From<bincode::error::DecodeError> for Error {
    fn from(err: bincode::error::DecodeError) -> Self {
        Error::Decode(err.to_string())
    }
}

impl From<bincode::error::EncodeError> for Error {
    fn from(err: bincode::error::EncodeError) -> Self {
        Error::Encode(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cause() {
        let err = Error::FrameTooLarge { len: 5, max: 4 };
        assert_eq!(
            err.to_string(),
            "frame of 5 bytes exceeds the limit of 4 bytes"
        );
        assert_eq!(
            Error::TrailingBytes { extra: 3 }.to_string(),
            "3 trailing bytes after the message"
        );
        assert_eq!(
            Error::Invalid("label too long").to_string(),
            "invalid message: label too long"
        );
    }

    #[test]
    fn bincode_errors_become_strings() {
        let err: Error = bincode::error::DecodeError::LimitExceeded.into();
        assert!(matches!(err, Error::Decode(_)));
    }
}
