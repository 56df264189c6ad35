//! The ittc appliance protocol: message types, codec and framing.
//!
//! Every client of a share appliance (the PKCS#11 module, the `ittc` operator CLI) and the
//! appliance itself speak the protocol defined here:
//!
//! * [`Request`] and [`Response`]: one enum each, with every type they carry ([`KeyId`],
//!   [`TokenObject`], [`ShareRecord`], [`StatusInfo`], …) and the documented maximum size
//!   of every string and vector ([`limits`]).
//! * [`codec`]: bincode 2 with a fixed configuration, a hard size limit, no trailing bytes,
//!   and [`Message::validate`] run on every message encoded or decoded.
//! * [`frame`]: a 4-byte big-endian length prefix and the body, over async
//!   (`tokio::io`) or blocking (`std::io`) streams.
//!
//! [`revocation`] holds certificate serials and the deny-list check a member applies when
//! it dials an appliance.
//!
//! The crate also holds what every cluster member needs to reach another: [`Role`] and
//! [`identity_from_cert`] (a certificate names its holder's role as a subjectAltName such
//! as `appliance-3.ittc`), [`TlsIdentity`] (the cluster CA, a member's certificate and
//! key, and the TLS 1.3-only rustls configurations of both ends, client certificates
//! required), and [`Connection`], the blocking mutually authenticated client connection
//! (connect, `Hello`, one request, one response, each within [`Timeouts`]) that the
//! module and the CLI build on.
//!
//! What this crate does not do: serve connections (the appliance runs its own listener
//! with [`TlsIdentity::server_config`]), or decide who may send what: the appliance checks
//! each request against the role named by the peer's certificate ([`peer_identity`]).
//!
//! # Untrusted input
//!
//! Decoding any byte string returns a value or an [`Error`]; it never panics and never
//! allocates more than twice [`MAX_FRAME`] (see [`codec`]). A frame header
//! announcing more than [`MAX_FRAME`] bytes is rejected before anything is allocated.
//! PINs and shares travel in [`SecretBytes`], zeroized on drop and redacted when printed;
//! the frame buffers that held them are zeroized too.
//!
//! # Versions and compatibility
//!
//! A connection starts with [`Request::Hello`] carrying the client's
//! [`PROTOCOL_VERSION`]; an appliance that does not speak it answers
//! [`Response::Error`] with [`ErrorCode::UnsupportedVersion`]. So that this exchange
//! works between any two versions, these parts of the encoding are frozen: the frame
//! format, `Request::Hello` as variant 0 with its fields, `Response::Error` as variant 0
//! and `Response::HelloInfo` as variant 1 with their fields, and the existing
//! [`ErrorCode`] values (new codes are appended). Anything else may change with the
//! version number.

pub mod attributes;
pub mod client;
pub mod cluster;
pub mod codec;
mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzz;
pub mod identity;
mod key_id;
pub mod limits;
mod objects;
pub mod refresh;
mod request;
mod response;
pub mod revocation;
mod secret;
mod sync;
mod tls;
mod wire_error;

pub use client::{Connection, Timeouts};
pub use codec::{Message, decode, encode};
pub use error::Error;
pub use frame::{read_frame, read_frame_blocking, write_frame, write_frame_blocking};
pub use identity::{
    Identity, MAX_APPLIANCES, ROLE_DOMAIN, Role, identity_from_cert, peer_identity, role_dns_name,
};
pub use key_id::KeyId;
pub use limits::MAX_FRAME;
pub use objects::{
    Attribute, ObjectClass, ObjectId, ObjectRecord, ObjectSummary, ObjectVersion, TokenObject,
};
pub use refresh::{
    RecoverPart, RecoverSpec, RefreshFailure, RefreshOutcome, RefreshProgress, RefreshSource,
    RefreshSpec, RefreshStage, RefreshStatus, RefreshStepKind, RefreshStored, Resharing,
};
pub use request::{KEYGEN_EPOCH, KeygenSpec, Participant, Request, ShareRecord, UserKind};
pub use response::{
    AuditBreak, AuditVerification, HelloInfo, KeyStatus, KeygenProgress, KeygenResult,
    PartialResult, Response, StatusInfo,
};
pub use revocation::RevokedCertificate;
pub use secret::SecretBytes;
pub use sync::{PinRecord, PublicState};
pub use tls::{KeyLoader, TlsCrypto, TlsIdentity};
pub use wire_error::{ErrorCode, WireError};

/// Milliseconds since the Unix epoch by the system clock (0 before it; saturating far
/// after): the unit of every time the protocol and the stores carry.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The protocol version this crate speaks, sent in [`Request::Hello`] and answered in
/// [`HelloInfo`]. Version 2 added proactive refresh (the additive share in
/// [`ShareRecord`], refresh state in [`KeyStatus`], the refresh requests). Version 3 added
/// the certificate deny-list ([`Request::RevokeCertificate`], the count in [`StatusInfo`])
/// and the public state a replaced appliance takes from its peers
/// ([`Request::PublicState`]). Version 4 added reshares ([`Request::ReshareKey`],
/// [`RefreshSpec::reshare`]) and each key's holders in [`KeyStatus`] and [`RecoverPart`].
/// Version 5 changed what a partial is: `c^(s_i + i·2^L)`, whose exponent has a length
/// independent of the share (`ittc_threshold::partial_exponent`); partials of versions 4
/// and 5 do not combine with each other. Version 6 gave token objects versions and
/// tombstones ([`ObjectVersion`], [`ObjectRecord`], [`ErrorCode::Superseded`]) and added
/// [`Request::AuditVerify`], the audit chain checked by a running appliance. Version 7
/// changed the key-generation messages that [`Request::KeygenRound`] carries: distributed
/// sieving adds rounds (`ittc_threshold::keygen::SieveShares`) before each batch's shares,
/// so appliances of versions 6 and 7 cannot generate a key together. Version 8 changed how
/// key generation draws and tests its candidates (a public offset on party 1's shares, a
/// screening round with a square base, 80 rounds after it); the messages are the same, but
/// appliances of versions 7 and 8 would compute different things from them. Version 8 also
/// added the appliance's clock to [`StatusInfo`] (`ittc doctor` compares it with its own).
pub const PROTOCOL_VERSION: u16 = 8;
