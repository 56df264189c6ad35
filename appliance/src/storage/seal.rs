//! The sealing key and AES-256-GCM sealing of shares.
//!
//! A sealed value is a fresh random 96-bit nonce and the ciphertext with its 16-byte tag.
//! The additional data binds the value to where it belongs: a share to its appliance
//! index, key id and epoch ([`share_aad`]), the key check value to the appliance index
//! ([`check_aad`]). A sealed value copied to another place fails to unseal, with one
//! error ([`StorageError::Unseal`]) and no detail.

use core::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use aes_gcm::aead::{AeadInOut, KeyInit, Nonce};
use aes_gcm::{Aes256Gcm, Key};
use bincode::{Decode, Encode};
use ittc_wire::KeyId;
use rand::rngs::SysRng;
use rand::{Rng, TryRng};
use zeroize::Zeroizing;

use super::StorageError;

/// Length of a sealing key in bytes.
pub const SEALING_KEY_LEN: usize = 32;

/// Length of a nonce in bytes.
const NONCE_LEN: usize = 12;

/// Length of the GCM tag in bytes.
const TAG_LEN: usize = 16;

/// The longest key file accepted: 64 hexadecimal digits and `\r\n`.
const MAX_KEY_FILE_LEN: usize = 2 * SEALING_KEY_LEN + 2;

/// Domain separation of the additional data of a share.
const SHARE_DOMAIN: &[u8] = b"ittc-share-v1\0";

/// Domain separation of the additional data of the key check value.
const CHECK_DOMAIN: &[u8] = b"ittc-key-check-v1\0";

/// The appliance's AES-256 key that seals shares at rest.
///
/// It lives in a file outside the database (see [`SealingKey::from_file`]) and is never
/// written into the database. The bytes sit in one heap allocation that is zeroized on
/// drop, so moving the key does not leave copies behind. `Debug` prints nothing of it;
/// there is no `Clone`, no `Display` and no accessor for the raw bytes.
pub struct SealingKey(Box<Zeroizing<[u8; SEALING_KEY_LEN]>>);

impl SealingKey {
    /// Reads a key file: exactly 64 hexadecimal digits (either case), optionally followed
    /// by `\n` or `\r\n`, and nothing else.
    ///
    /// The file's contents are read into a zeroizing buffer and never appear in an error.
    /// Checking the file's permissions is the caller's job.
    ///
    /// # Errors
    ///
    /// [`StorageError::Io`] if the file cannot be read, [`StorageError::KeyFile`] if it
    /// holds anything else.
    pub fn from_file(path: &Path) -> Result<Self, StorageError> {
        let bad = |reason| StorageError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        // Capacity beyond the read limit, so that reading never reallocates (which would
        // leave an unzeroized copy) and never probes into a stack buffer.
        let mut text = Zeroizing::new(Vec::with_capacity(4 * MAX_KEY_FILE_LEN));
        File::open(path)?
            .take(u64::try_from(MAX_KEY_FILE_LEN + 1).unwrap_or(u64::MAX))
            .read_to_end(&mut text)?;
        let body = text
            .strip_suffix(b"\r\n")
            .or_else(|| text.strip_suffix(b"\n"))
            .unwrap_or(&text);
        if body.len() != 2 * SEALING_KEY_LEN {
            return Err(bad(
                "must hold 64 hexadecimal characters and an optional newline",
            ));
        }
        let mut key = Self::zeroed();
        if !decode_hex(body, &mut key.0[..]) {
            return Err(bad("contains a character that is not hexadecimal"));
        }
        Ok(key)
    }

    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: [u8; SEALING_KEY_LEN]) -> Self {
        // The argument is a copy on the stack: zeroize it once it is in the heap buffer.
        let bytes = Zeroizing::new(bytes);
        let mut key = Self::zeroed();
        key.0.copy_from_slice(&bytes[..]);
        key
    }

    /// A new random key from the operating system's generator (through `rand`'s
    /// thread-local generator).
    pub fn generate() -> Self {
        let mut key = Self::zeroed();
        rand::rng().fill_bytes(&mut key.0[..]);
        key
    }

    /// The key as 64 lowercase hexadecimal digits, for writing a key file
    /// (`ittc init`). The string is zeroized on drop.
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut hex = Zeroizing::new(String::with_capacity(2 * SEALING_KEY_LEN));
        for byte in self.0.iter() {
            hex.push(char::from(hex_digit(byte >> 4)));
            hex.push(char::from(hex_digit(byte & 0x0f)));
        }
        hex
    }

    /// The raw key, for sealing it under another key (an epoch key under the sealing key).
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0[..]
    }

    fn zeroed() -> Self {
        Self(Box::new(Zeroizing::new([0u8; SEALING_KEY_LEN])))
    }

    fn cipher(&self) -> Aes256Gcm {
        let key: &[u8; SEALING_KEY_LEN] = &self.0;
        Aes256Gcm::new(<&Key<Aes256Gcm>>::from(key))
    }

    /// Seals `plaintext` under a fresh random nonce, binding `aad`.
    pub(super) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, StorageError> {
        let mut nonce = [0u8; NONCE_LEN];
        SysRng.try_fill_bytes(&mut nonce).map_err(|err| {
            StorageError::Io(std::io::Error::other(format!(
                "system random generator failed: {err}"
            )))
        })?;
        // The buffer holds the plaintext until it is encrypted in place; its capacity
        // leaves room for the tag, so it never reallocates.
        let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        buf.extend_from_slice(plaintext);
        self.cipher()
            .encrypt_in_place(&Nonce::<Aes256Gcm>::from(nonce), aad, &mut *buf)
            .map_err(|_| StorageError::Invalid("value too long to seal"))?;
        Ok(Sealed {
            nonce,
            ciphertext: core::mem::take(&mut *buf),
        })
    }

    /// Unseals a value sealed with the same key and `aad`.
    pub(super) fn unseal(
        &self,
        sealed: &Sealed,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StorageError> {
        let mut buf = Zeroizing::new(sealed.ciphertext.clone());
        self.cipher()
            .decrypt_in_place(&Nonce::<Aes256Gcm>::from(sealed.nonce), aad, &mut *buf)
            .map_err(|_| StorageError::Unseal)?;
        Ok(buf)
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey([redacted])")
    }
}

/// A sealed value as stored: the nonce and the ciphertext followed by the tag.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub(super) struct Sealed {
    /// The random nonce.
    pub(super) nonce: [u8; NONCE_LEN],
    /// The ciphertext and the 16-byte tag.
    pub(super) ciphertext: Vec<u8>,
}

/// The additional data of a share: the domain, the appliance index, the key id (with its
/// length) and the epoch.
pub(super) fn share_aad(appliance_index: u8, key_id: &KeyId, epoch: u64) -> Vec<u8> {
    let id = key_id.as_bytes();
    let id_len = u64::try_from(id.len()).unwrap_or(u64::MAX);
    let mut aad = Vec::with_capacity(SHARE_DOMAIN.len() + 1 + 8 + id.len() + 8);
    aad.extend_from_slice(SHARE_DOMAIN);
    aad.push(appliance_index);
    aad.extend_from_slice(&id_len.to_be_bytes());
    aad.extend_from_slice(id);
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad
}

/// The additional data of the key check value: the domain and the appliance index.
pub(super) fn check_aad(appliance_index: u8) -> Vec<u8> {
    let mut aad = CHECK_DOMAIN.to_vec();
    aad.push(appliance_index);
    aad
}

/// `0xff` if `a < b`, else `0`, without a branch.
fn lt_mask(a: u8, b: u8) -> u8 {
    // The difference is negative exactly when a < b; the shift keeps only the sign.
    ((i16::from(a) - i16::from(b)) >> 8) as u8
}

/// The lowercase hexadecimal digit of a nibble (`n < 16`), without a branch.
fn hex_digit(n: u8) -> u8 {
    b'0' + n + (lt_mask(9, n) & (b'a' - b'0' - 10))
}

/// Decodes hexadecimal `text` into `out` (half its length) without branching on the
/// digits; returns whether every character was a hexadecimal digit.
fn decode_hex(text: &[u8], out: &mut [u8]) -> bool {
    let mut valid = 0xffu8;
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        let mut value = 0u8;
        for &c in pair {
            let digit = c.wrapping_sub(b'0');
            let is_digit = lt_mask(digit, 10);
            let letter = (c | 0x20).wrapping_sub(b'a');
            let is_letter = lt_mask(letter, 6);
            value = (value << 4) | (digit & is_digit) | (letter.wrapping_add(10) & is_letter);
            valid &= is_digit | is_letter;
        }
        *byte = value;
    }
    valid == 0xff && text.len() == 2 * out.len()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn key_id(bytes: &[u8]) -> KeyId {
        KeyId::new(bytes.to_vec()).unwrap()
    }

    #[test]
    fn seal_round_trips_with_a_fresh_nonce() {
        let key = SealingKey::generate();
        let aad = share_aad(1, &key_id(b"k"), 3);
        let a = key.seal(b"secret share", &aad).unwrap();
        let b = key.seal(b"secret share", &aad).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(a.ciphertext.len(), 12 + TAG_LEN);
        assert_eq!(&key.unseal(&a, &aad).unwrap()[..], b"secret share");
        assert_eq!(&key.unseal(&b, &aad).unwrap()[..], b"secret share");
    }

    #[test]
    fn unsealing_elsewhere_fails() {
        let key = SealingKey::from_bytes([7; 32]);
        let sealed = key.seal(b"share", &share_aad(1, &key_id(b"k"), 3)).unwrap();
        for aad in [
            share_aad(2, &key_id(b"k"), 3),
            share_aad(1, &key_id(b"j"), 3),
            share_aad(1, &key_id(b"k"), 4),
            check_aad(1),
        ] {
            assert!(matches!(
                key.unseal(&sealed, &aad),
                Err(StorageError::Unseal)
            ));
        }
        let other = SealingKey::from_bytes([8; 32]);
        let aad = share_aad(1, &key_id(b"k"), 3);
        assert!(matches!(
            other.unseal(&sealed, &aad),
            Err(StorageError::Unseal)
        ));
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(
            key.unseal(&flipped, &aad),
            Err(StorageError::Unseal)
        ));
        let short = Sealed {
            nonce: sealed.nonce,
            ciphertext: vec![0; 3],
        };
        assert!(matches!(
            key.unseal(&short, &aad),
            Err(StorageError::Unseal)
        ));
    }

    #[test]
    fn share_aad_is_unambiguous() {
        // A longer key id cannot absorb the epoch's bytes: the length is part of the data.
        assert_ne!(
            share_aad(1, &key_id(b"ab"), 0),
            share_aad(1, &key_id(b"a"), u64::from(b'b') << 56)
        );
    }

    #[test]
    fn hex_round_trips_and_matches_a_naive_decoder() {
        let key = SealingKey::from_bytes(core::array::from_fn(|i| (i * 37) as u8));
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        let mut back = [0u8; 32];
        assert!(decode_hex(hex.as_bytes(), &mut back));
        assert_eq!(&back[..], &key.0[..]);
        for c in 0..=255u8 {
            for d in [b'0', b'a'] {
                let mut out = [0u8; 1];
                let ok = decode_hex(&[c, d], &mut out);
                let naive = (c as char).to_digit(16);
                assert_eq!(ok, naive.is_some(), "character {c}");
                if let Some(v) = naive {
                    let low = (d as char).to_digit(16).unwrap();
                    assert_eq!(u32::from(out[0]), v * 16 + low);
                }
            }
        }
        for n in 0..16u8 {
            assert_eq!(
                char::from(hex_digit(n)),
                char::from_digit(n.into(), 16).unwrap()
            );
        }
    }

    #[test]
    fn key_files_accept_hex_and_refuse_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealing.key");
        let write = |contents: &[u8]| {
            let mut file = File::create(&path).unwrap();
            file.write_all(contents).unwrap();
        };
        let hex = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";
        for ok in [hex.to_string(), format!("{hex}\n"), format!("{hex}\r\n")] {
            write(ok.as_bytes());
            let key = SealingKey::from_file(&path).unwrap();
            assert_eq!(*key.to_hex(), hex.to_ascii_lowercase());
        }
        let bad = [
            hex[..63].to_string(),
            format!("{hex}0"),
            format!("{hex}\n\n"),
            format!("{hex} "),
            format!(" {hex}"),
            format!("{}g", &hex[..63]),
            String::new(),
            format!("{hex}{hex}"),
        ];
        for contents in bad {
            write(contents.as_bytes());
            let err = SealingKey::from_file(&path).unwrap_err();
            assert!(matches!(err, StorageError::KeyFile { .. }), "{contents:?}");
            assert!(!err.to_string().contains("0123456789"), "{err}");
        }
        assert!(matches!(
            SealingKey::from_file(&dir.path().join("missing")),
            Err(StorageError::Io(_))
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let key = SealingKey::from_bytes([0xab; 32]);
        let printed = format!("{key:?}");
        assert_eq!(printed, "SealingKey([redacted])");
        assert!(!format!("{:?}", Some(&key)).contains("ab"));
    }
}
