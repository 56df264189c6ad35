//! The padding side of each mechanism: what goes into the raw private operation and what
//! comes out, and the public-key operations (verify, encrypt) done locally.

use ittc_threshold::RsaPublicKey;
use ittc_threshold::padding::{
    self, HashAlg, Hasher, oaep_decrypt, oaep_encode, pkcs1v15_decrypt, pkcs1v15_encrypt_pad,
    pkcs1v15_sign, pkcs1v15_sign_raw, pkcs1v15_verify, pkcs1v15_verify_raw, pss_encode, pss_verify,
};
use num_bigint::BigUint;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mechanisms::Mechanism;

/// The most data buffered for a multi-part operation on a mechanism that does not hash.
pub const MAX_BUFFERED: usize = 64 * 1024;

/// The input of a sign or verify operation, accumulated over `C_*Update` calls.
#[derive(Debug)]
pub enum Input {
    /// The module hashes as data arrives.
    Hashing(Hasher),
    /// The data is used as it is (raw mechanisms and PSS on a digest).
    Buffered(Vec<u8>),
}

impl Input {
    /// A fresh input for a signing mechanism.
    pub fn for_mechanism(mechanism: &Mechanism) -> Self {
        match mechanism {
            Mechanism::RsaPkcsHash(hash)
            | Mechanism::RsaPss {
                prehash: Some(hash),
                ..
            } => Input::Hashing(hash.hasher()),
            _ => Input::Buffered(Vec::new()),
        }
    }

    /// Adds data.
    pub fn update(&mut self, data: &[u8]) -> Result<()> {
        match self {
            Input::Hashing(h) => h.update(data),
            Input::Buffered(buf) => {
                if buf.len() + data.len() > MAX_BUFFERED {
                    return Err(Error::DataLenRange);
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(())
    }

    /// The digest (hashing mechanisms) or the data.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Input::Hashing(h) => h.finalize(),
            Input::Buffered(buf) => buf,
        }
    }
}

/// The encoded message to raise to `d`, for signing `input` (already hashed if the
/// mechanism hashes).
pub fn sign_encode(mechanism: &Mechanism, public: &RsaPublicKey, input: &[u8]) -> Result<Vec<u8>> {
    let k = public.size();
    Ok(match mechanism {
        Mechanism::RsaPkcs => pkcs1v15_sign_raw(input, k)?,
        Mechanism::RsaX509 => {
            let em = padding::raw(input, k)?;
            below_modulus(public, &em).ok_or(Error::DataInvalid)?;
            em
        }
        Mechanism::RsaPkcsHash(hash) => pkcs1v15_sign(*hash, input, k)?,
        Mechanism::RsaPss { params, .. } => {
            let mut rng = crate::rng()?;
            pss_encode(
                params.hash,
                params.mgf,
                input,
                params.salt_len,
                public.bits(),
                &mut rng,
            )?
        }
        Mechanism::RsaOaep { .. } | Mechanism::Digest(_) => {
            return Err(Error::KeyFunctionNotPermitted);
        }
    })
}

/// Checks a signature with the public key.
pub fn verify(
    mechanism: &Mechanism,
    public: &RsaPublicKey,
    input: &[u8],
    signature: &[u8],
) -> Result<()> {
    let k = public.size();
    if signature.len() != k {
        return Err(Error::SignatureLenRange);
    }
    let s = below_modulus(public, signature).ok_or(Error::SignatureInvalid)?;
    let em = public.integer_to_be(
        &public
            .raw_public_vartime(&s)
            .map_err(|_| Error::SignatureInvalid)?,
    );
    let checked = match mechanism {
        Mechanism::RsaPkcs => pkcs1v15_verify_raw(input, &em),
        Mechanism::RsaX509 => {
            let expected = padding::raw(input, k)?;
            if expected == em {
                Ok(())
            } else {
                Err(padding::PaddingError::BadSignature)
            }
        }
        Mechanism::RsaPkcsHash(hash) => pkcs1v15_verify(*hash, input, &em),
        Mechanism::RsaPss { params, .. } => pss_verify(
            params.hash,
            params.mgf,
            input,
            Some(params.salt_len),
            public.bits(),
            &em,
        ),
        Mechanism::RsaOaep { .. } | Mechanism::Digest(_) => {
            return Err(Error::KeyFunctionNotPermitted);
        }
    };
    checked.map_err(|err| match err {
        padding::PaddingError::WrongDigestLength { .. }
        | padding::PaddingError::MessageTooLong { .. } => Error::DataLenRange,
        _ => Error::SignatureInvalid,
    })
}

/// Encrypts with the public key.
pub fn encrypt(mechanism: &Mechanism, public: &RsaPublicKey, msg: &[u8]) -> Result<Vec<u8>> {
    let k = public.size();
    let mut rng = crate::rng()?;
    let em: Zeroizing<Vec<u8>> = match mechanism {
        Mechanism::RsaPkcs => pkcs1v15_encrypt_pad(msg, k, &mut rng)?,
        Mechanism::RsaX509 => Zeroizing::new(padding::raw(msg, k)?),
        Mechanism::RsaOaep { hash, mgf, label } => {
            oaep_encode(*hash, *mgf, label, msg, k, &mut rng)?
        }
        _ => return Err(Error::KeyFunctionNotPermitted),
    };
    let m = below_modulus(public, &em).ok_or(Error::DataInvalid)?;
    let c = public
        .raw_public_vartime(&m)
        .map_err(|_| Error::DataInvalid)?;
    Ok(public.integer_to_be(&c))
}

/// The integer a ciphertext stands for, checked: `k` bytes and below `N`.
pub fn ciphertext(public: &RsaPublicKey, c: &[u8]) -> Result<BigUint> {
    if c.len() != public.size() {
        return Err(Error::EncryptedDataLenRange);
    }
    below_modulus(public, c).ok_or(Error::EncryptedDataInvalid)
}

/// Decodes the raw decryption `em` (`k` bytes).
pub fn decrypt_decode(
    mechanism: &Mechanism,
    public: &RsaPublicKey,
    em: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let k = public.size();
    let decoded = match mechanism {
        Mechanism::RsaPkcs => pkcs1v15_decrypt(em, k),
        Mechanism::RsaOaep { hash, mgf, label } => oaep_decrypt(*hash, *mgf, label, em, k),
        Mechanism::RsaX509 => return Ok(Zeroizing::new(em.to_vec())),
        _ => return Err(Error::KeyFunctionNotPermitted),
    };
    decoded.map_err(|_| {
        tracing::info!("decryption failed");
        Error::EncryptedDataInvalid
    })
}

/// The one-shot digest of a digest mechanism.
pub fn digest_len(hash: HashAlg) -> usize {
    hash.output_len()
}

fn below_modulus(public: &RsaPublicKey, bytes: &[u8]) -> Option<BigUint> {
    let x = BigUint::from_bytes_be(bytes);
    (&x < public.n()).then_some(x)
}
