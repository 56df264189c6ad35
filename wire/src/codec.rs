//! Turning messages into bytes and back.
//!
//! The encoding is bincode 2 with `config::standard()`, little-endian, **fixed-size
//! integers** (`with_fixed_int_encoding`: a `u64` is 8 bytes, a length is a `u64`, an enum
//! variant a `u32`) and a decode limit of [`MAX_FRAME`] bytes. Fixed-size integers are
//! chosen over varints because they make the encoding canonical: every value has exactly
//! one encoding, so `encode(decode(bytes)) == bytes` for every accepted input (the fuzz
//! target checks it), and a hash or signature over a message's bytes means one thing. The
//! few bytes they cost are nothing next to the RSA integers the messages carry.
//!
//! [`decode`] refuses more than [`MAX_FRAME`] bytes of input, rejects trailing bytes, and
//! runs [`Message::validate`] on the result; [`encode`] validates first and refuses to
//! produce more than [`MAX_FRAME`] bytes, so that a peer never receives what it would
//! reject.
//!
//! # Allocation bound
//!
//! Every allocation made while decoding is first claimed against a budget of [`MAX_FRAME`]
//! bytes, and fails before allocating if the budget would be exceeded: a byte string
//! claims its announced length, a vector of `T` claims `len * size_of::<T>()`. A vector
//! gives its claim back element by element as the elements are decoded (bincode's rule),
//! so the live allocations of one decode stay under twice [`MAX_FRAME`], however the
//! lengths in the bytes lie. Reading a frame adds the frame buffer, at most [`MAX_FRAME`].

use bincode::config::{self, Configuration, Fixint, Limit, LittleEndian};
use bincode::de::Decode;
use bincode::enc::Encode;
use bincode::enc::write::SizeWriter;

use crate::{Error, MAX_FRAME, Request, Response};

/// The bincode configuration of the protocol (see the module docs).
type WireConfig = Configuration<LittleEndian, Fixint, Limit<MAX_FRAME>>;

const CONFIG: WireConfig = config::standard()
    .with_fixed_int_encoding()
    .with_limit::<MAX_FRAME>();

/// A protocol message: a type the codec and the framing carry.
///
/// Implemented by [`Request`] and [`Response`]; a later peer-to-peer protocol between
/// appliances can implement it for its own messages and reuse the framing.
pub trait Message: Encode + Decode<()> {
    /// Checks the documented size limits and invariants that the type system does not
    /// express. [`encode`] and [`decode`] call it.
    fn validate(&self) -> Result<(), Error>;
}

impl Message for Request {
    fn validate(&self) -> Result<(), Error> {
        Request::validate(self)
    }
}

impl Message for Response {
    fn validate(&self) -> Result<(), Error> {
        Response::validate(self)
    }
}

/// Encodes a message, after checking it with [`Message::validate`].
///
/// The buffer is allocated once at its final size, so no partial copy of a secret is left
/// behind by reallocation; the caller owns it (and should zeroize it if the message carries
/// a secret).
///
/// # Errors
///
/// [`Error::Invalid`] if the message breaks a limit, [`Error::FrameTooLarge`] if its
/// encoding exceeds [`MAX_FRAME`].
pub fn encode<T: Message>(msg: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `msg` to `out`, reserving exactly the space it needs first.
pub(crate) fn encode_into<T: Message>(msg: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    let len = encoded_len(msg)?;
    out.reserve_exact(len);
    bincode::encode_into_std_write(msg, out, CONFIG)?;
    Ok(())
}

/// The length of the encoding of `msg`, after checking it; fails if it exceeds
/// [`MAX_FRAME`].
fn encoded_len<T: Message>(msg: &T) -> Result<usize, Error> {
    msg.validate()?;
    let mut size = SizeWriter::default();
    bincode::encode_into_writer(msg, &mut size, CONFIG)?;
    check_frame_len(size.bytes_written)?;
    Ok(size.bytes_written)
}

/// Decodes exactly one message from `bytes` and checks it with [`Message::validate`].
///
/// Never panics; allocates less than twice [`MAX_FRAME`] (see the module docs).
///
/// # Errors
///
/// [`Error::FrameTooLarge`] for more than [`MAX_FRAME`] bytes, [`Error::Decode`] for bytes
/// that are not an encoding of `T`, [`Error::TrailingBytes`] if bytes are left over,
/// [`Error::Invalid`] if the message breaks a limit.
pub fn decode<T: Message>(bytes: &[u8]) -> Result<T, Error> {
    check_frame_len(bytes.len())?;
    let (msg, read): (T, usize) = bincode::decode_from_slice(bytes, CONFIG)?;
    if read != bytes.len() {
        return Err(Error::TrailingBytes {
            extra: bytes.len().saturating_sub(read),
        });
    }
    msg.validate()?;
    Ok(msg)
}

/// Fails with [`Error::FrameTooLarge`] if `len` exceeds [`MAX_FRAME`].
pub(crate) fn check_frame_len(len: usize) -> Result<(), Error> {
    if len > MAX_FRAME {
        Err(Error::FrameTooLarge {
            len: u64::try_from(len).unwrap_or(u64::MAX),
            max: MAX_FRAME,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::{sample_requests, sample_responses};
    use crate::limits::{MAX_ATTRIBUTE_VALUE_LEN, MAX_KEY_ID_LEN, MAX_NAME_LEN};
    use crate::{Attribute, KeyId, ObjectClass, ObjectId, TokenObject};

    #[test]
    fn samples_round_trip() {
        for req in sample_requests().unwrap() {
            let bytes = encode(&req).unwrap();
            assert_eq!(bytes.capacity(), bytes.len(), "allocated once, exactly");
            assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        }
        for resp in sample_responses().unwrap() {
            let bytes = encode(&resp).unwrap();
            assert_eq!(decode::<Response>(&bytes).unwrap(), resp);
        }
    }

    #[test]
    fn hello_encoding_is_frozen() {
        let hello = Request::Hello {
            protocol_version: 1,
            client_name: "ab".into(),
        };
        let expected = [
            0, 0, 0, 0, // variant 0
            1, 0, // protocol_version
            2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', // client_name
        ];
        assert_eq!(encode(&hello).unwrap(), expected);

        let error = Response::Error(crate::WireError {
            code: crate::ErrorCode::UnsupportedVersion,
            message: "v".into(),
        });
        let expected = [
            0, 0, 0, 0, // variant 0
            0, 0, 0, 0, // UnsupportedVersion
            1, 0, 0, 0, 0, 0, 0, 0, b'v', // message
        ];
        assert_eq!(encode(&error).unwrap(), expected);
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&Request::Logout).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(Error::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn truncated_input_is_rejected() {
        let bytes = encode(&sample_requests().unwrap()[0]).unwrap();
        for end in 0..bytes.len() {
            assert!(matches!(
                decode::<Request>(&bytes[..end]),
                Err(Error::Decode(_))
            ));
        }
    }

    #[test]
    fn oversize_key_id_is_rejected() {
        // DeleteKey is variant 12 and carries only a key id, encoded like a Vec<u8>.
        let fake = |len: usize| bincode::encode_to_vec((12u32, vec![7u8; len]), CONFIG).unwrap();
        let ok = decode::<Request>(&fake(MAX_KEY_ID_LEN)).unwrap();
        assert_eq!(
            ok,
            Request::DeleteKey {
                key_id: KeyId::new(vec![7; MAX_KEY_ID_LEN]).unwrap()
            }
        );
        assert!(matches!(
            decode::<Request>(&fake(MAX_KEY_ID_LEN + 1)),
            Err(Error::Decode(_))
        ));
        assert!(matches!(decode::<Request>(&fake(0)), Err(Error::Decode(_))));
    }

    #[test]
    fn decode_validates() {
        let long = (0u32, 1u16, "n".repeat(MAX_NAME_LEN + 1));
        let bytes = bincode::encode_to_vec(long, CONFIG).unwrap();
        assert!(matches!(decode::<Request>(&bytes), Err(Error::Invalid(_))));
    }

    #[test]
    fn encode_validates() {
        let long = Request::Hello {
            protocol_version: 1,
            client_name: "n".repeat(MAX_NAME_LEN + 1),
        };
        assert!(matches!(encode(&long), Err(Error::Invalid(_))));
    }

    #[test]
    fn messages_over_the_frame_limit_are_refused_both_ways() {
        let attribute = Attribute {
            kind: 0x11,
            value: vec![0; MAX_ATTRIBUTE_VALUE_LEN],
        };
        let object = Request::PutObject {
            object: TokenObject {
                handle: ObjectId(1),
                class: ObjectClass::Data,
                attributes: vec![attribute; MAX_FRAME / MAX_ATTRIBUTE_VALUE_LEN],
            },
            version: crate::ObjectVersion::ORIGINAL,
        };
        assert!(matches!(
            encode(&object),
            Err(Error::FrameTooLarge { max: MAX_FRAME, .. })
        ));
        let big = vec![0u8; MAX_FRAME + 1];
        assert!(matches!(
            decode::<Request>(&big),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn lying_lengths_fail_cleanly() {
        // A PutObject announcing u64::MAX attributes, then nothing.
        let mut bytes = bincode::encode_to_vec((6u32, 1u64, 3u32), CONFIG).unwrap();
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode::<Request>(&bytes), Err(Error::Decode(_))));
        // The same announcing just under the frame limit's worth of attributes.
        let mut bytes = bincode::encode_to_vec((6u32, 1u64, 3u32), CONFIG).unwrap();
        bytes.extend_from_slice(&(MAX_FRAME as u64 / 40).to_le_bytes());
        assert!(matches!(decode::<Request>(&bytes), Err(Error::Decode(_))));
        // An unknown variant.
        let bytes = bincode::encode_to_vec(99u32, CONFIG).unwrap();
        assert!(matches!(decode::<Request>(&bytes), Err(Error::Decode(_))));
    }
}
