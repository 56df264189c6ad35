//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::WireError;

/// Why encoding, decoding or moving a frame, or a connection to an appliance, failed.
///
/// These are local failures (a broken stream, bytes that are not a valid message, a TLS
/// handshake that failed). An error that the appliance reports on purpose travels as a
/// [`crate::WireError`] inside [`crate::Response::Error`] and is not an `Error` of this
/// type, except when it refuses the `Hello` ([`Error::Refused`]).
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

    /// A certificate or private key cannot be used: a PEM file holds none or garbage, a
    /// key does not match its certificate, a certificate names no role (see
    /// [`crate::identity_from_cert`]), or the peer's certificate was rejected (another CA,
    /// another name, expired).
    #[error("certificate: {0}")]
    Certificate(String),

    /// A setting given by the caller is unusable (an appliance index outside
    /// `1..=`[`crate::MAX_APPLIANCES`]).
    #[error("configuration: {0}")]
    Config(String),

    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },

    /// The TLS layer failed: a configuration rustls refuses, a handshake the peer aborted
    /// (for example because it rejected our certificate), a corrupt record.
    #[error("tls: {0}")]
    Tls(String),

    /// Connecting, the handshake or a request did not finish within its timeout
    /// ([`crate::Timeouts`]). The connection is unusable afterwards.
    #[error("timed out")]
    Timeout,

    /// The appliance broke the protocol: it answered `Hello` with something else than
    /// `HelloInfo`, with another protocol version, or as another appliance than the one
    /// dialled.
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// The appliance answered `Hello` with an error (for example
    /// [`crate::ErrorCode::UnsupportedVersion`]).
    #[error("appliance refused the connection: {0}")]
    Refused(WireError),

    /// An earlier request on this [`crate::Connection`] failed in transport, so the stream
    /// may be out of step; open a new connection.
    #[error("connection unusable after an earlier error")]
    Broken,
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
