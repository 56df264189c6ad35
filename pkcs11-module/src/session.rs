//! Sessions and the operations active in each.

use cryptoki_sys::CK_OBJECT_HANDLE;
use ittc_threshold::padding::Hasher;
use zeroize::Zeroizing;

use crate::mechanisms::Mechanism;
use crate::objects::KeyEntry;
use crate::operations::Input;

/// A sign or verify operation.
#[derive(Debug)]
pub struct SignOp {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// The key.
    pub key: KeyEntry,
    /// The input so far.
    pub input: Input,
}

/// An encrypt or decrypt operation.
#[derive(Debug)]
pub struct CryptOp {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// The key.
    pub key: KeyEntry,
    /// The input the `C_EncryptUpdate` or `C_DecryptUpdate` calls gave so far: at most
    /// the modulus length (one RSA block), zeroized when dropped.
    pub input: Zeroizing<Vec<u8>>,
}

impl CryptOp {
    /// An operation with `key`, no input yet.
    pub fn new(mechanism: Mechanism, key: KeyEntry) -> Self {
        Self {
            mechanism,
            key,
            input: Zeroizing::default(),
        }
    }
}

/// One session.
#[derive(Debug, Default)]
pub struct Session {
    /// Opened with `CKF_RW_SESSION`.
    pub rw: bool,
    /// The handles a search found and has not returned yet.
    pub find: Option<Vec<CK_OBJECT_HANDLE>>,
    /// Active signing.
    pub sign: Option<SignOp>,
    /// Active verification.
    pub verify: Option<SignOp>,
    /// Active encryption.
    pub encrypt: Option<CryptOp>,
    /// Active decryption.
    pub decrypt: Option<CryptOp>,
    /// Active digest.
    pub digest: Option<Hasher>,
}

impl Session {
    /// A fresh session.
    pub fn new(rw: bool) -> Self {
        Self {
            rw,
            ..Self::default()
        }
    }
}
