//! How token objects carry PKCS#11 attributes, so that the `ittc` CLI (which stores public
//! keys and certificates) and the PKCS#11 module (which shows them) agree.
//!
//! An [`crate::Attribute`] is a `CKA_*` type and its value bytes. Byte-string attributes
//! (`CKA_LABEL`, `CKA_ID`, `CKA_VALUE`, `CKA_MODULUS`, …) are stored as they are;
//! `CK_ULONG` attributes (`CKA_CLASS`, `CKA_KEY_TYPE`, `CKA_MODULUS_BITS`, …) as 8 bytes
//! little-endian, whatever the module's platform; `CK_BBOOL` attributes as one byte, 0 or 1.
//! The module converts to the platform's `CK_ULONG` when it answers an application.

use crate::{Attribute, ObjectClass, ObjectId, TokenObject};

/// `CKA_CLASS`.
pub const CKA_CLASS: u64 = 0x000;
/// `CKA_TOKEN`.
pub const CKA_TOKEN: u64 = 0x001;
/// `CKA_PRIVATE`.
pub const CKA_PRIVATE: u64 = 0x002;
/// `CKA_LABEL`.
pub const CKA_LABEL: u64 = 0x003;
/// `CKA_VALUE`.
pub const CKA_VALUE: u64 = 0x011;
/// `CKA_CERTIFICATE_TYPE`.
pub const CKA_CERTIFICATE_TYPE: u64 = 0x080;
/// `CKA_ISSUER`.
pub const CKA_ISSUER: u64 = 0x081;
/// `CKA_SERIAL_NUMBER`.
pub const CKA_SERIAL_NUMBER: u64 = 0x082;
/// `CKA_KEY_TYPE`.
pub const CKA_KEY_TYPE: u64 = 0x100;
/// `CKA_SUBJECT`.
pub const CKA_SUBJECT: u64 = 0x101;
/// `CKA_ID`.
pub const CKA_ID: u64 = 0x102;
/// `CKA_ENCRYPT`.
pub const CKA_ENCRYPT: u64 = 0x104;
/// `CKA_VERIFY`.
pub const CKA_VERIFY: u64 = 0x10a;
/// `CKA_MODULUS`.
pub const CKA_MODULUS: u64 = 0x120;
/// `CKA_MODULUS_BITS`.
pub const CKA_MODULUS_BITS: u64 = 0x121;
/// `CKA_PUBLIC_EXPONENT`.
pub const CKA_PUBLIC_EXPONENT: u64 = 0x122;

/// `CKO_PUBLIC_KEY`, `CKO_CERTIFICATE`…: see [`ObjectClass::cko`].
impl ObjectClass {
    /// The `CKO_*` value of the class.
    pub fn cko(self) -> u64 {
        match self {
            ObjectClass::Data => 0,
            ObjectClass::Certificate => 1,
            ObjectClass::PublicKey => 2,
            ObjectClass::PrivateKey => 3,
        }
    }
}

/// `CKK_RSA`.
pub const CKK_RSA: u64 = 0;
/// `CKC_X_509`.
pub const CKC_X_509: u64 = 0;

impl ObjectId {
    /// A handle derived from what the object is (`purpose`, e.g. `"public-key"`, and its
    /// `CKA_ID` or DER), so that every appliance and every run agree on it. FNV-1a, 63 bits,
    /// never 0 (`CK_INVALID_HANDLE`).
    pub fn derived(purpose: &str, data: &[u8]) -> ObjectId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in purpose.as_bytes().iter().chain([0u8].iter()).chain(data) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        ObjectId((hash >> 1).max(1))
    }
}

/// A `CK_ULONG` attribute value.
pub fn ulong(value: u64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// Reads a `CK_ULONG` attribute value.
pub fn read_ulong(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A `CK_BBOOL` attribute value.
pub fn bool_value(value: bool) -> Vec<u8> {
    vec![u8::from(value)]
}

fn attr(kind: u64, value: Vec<u8>) -> Attribute {
    Attribute { kind, value }
}

impl TokenObject {
    /// The value of attribute `kind`, if present.
    pub fn attribute(&self, kind: u64) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| a.value.as_slice())
    }

    /// Sets (adds or replaces) attribute `kind`.
    pub fn set_attribute(&mut self, kind: u64, value: Vec<u8>) {
        match self.attributes.iter_mut().find(|a| a.kind == kind) {
            Some(a) => a.value = value,
            None => self.attributes.push(attr(kind, value)),
        }
    }

    /// The RSA public key object of a cluster key: what the module shows as
    /// `CKO_PUBLIC_KEY`, and where it reads the modulus of the private key it synthesises
    /// for the same `CKA_ID`.
    pub fn rsa_public_key(
        handle: ObjectId,
        id: &[u8],
        label: &str,
        modulus: &[u8],
        exponent: &[u8],
    ) -> Self {
        let bits = modulus.iter().skip_while(|b| **b == 0).count() as u64 * 8
            - u64::from(
                modulus
                    .iter()
                    .find(|b| **b != 0)
                    .map_or(0, |b| b.leading_zeros()),
            );
        TokenObject {
            handle,
            class: ObjectClass::PublicKey,
            attributes: vec![
                attr(CKA_CLASS, ulong(ObjectClass::PublicKey.cko())),
                attr(CKA_TOKEN, bool_value(true)),
                attr(CKA_PRIVATE, bool_value(false)),
                attr(CKA_KEY_TYPE, ulong(CKK_RSA)),
                attr(CKA_ID, id.to_vec()),
                attr(CKA_LABEL, label.as_bytes().to_vec()),
                attr(CKA_MODULUS, modulus.to_vec()),
                attr(CKA_MODULUS_BITS, ulong(bits)),
                attr(CKA_PUBLIC_EXPONENT, exponent.to_vec()),
                attr(CKA_VERIFY, bool_value(true)),
                attr(CKA_ENCRYPT, bool_value(true)),
            ],
        }
    }

    /// An X.509 certificate object. `subject`, `issuer` and `serial` are the DER of the
    /// certificate's fields (NSS reads them before login).
    pub fn x509_certificate(
        handle: ObjectId,
        id: &[u8],
        label: &str,
        der: &[u8],
        subject: &[u8],
        issuer: &[u8],
        serial: &[u8],
    ) -> Self {
        TokenObject {
            handle,
            class: ObjectClass::Certificate,
            attributes: vec![
                attr(CKA_CLASS, ulong(ObjectClass::Certificate.cko())),
                attr(CKA_TOKEN, bool_value(true)),
                attr(CKA_PRIVATE, bool_value(false)),
                attr(CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
                attr(CKA_ID, id.to_vec()),
                attr(CKA_LABEL, label.as_bytes().to_vec()),
                attr(CKA_VALUE, der.to_vec()),
                attr(CKA_SUBJECT, subject.to_vec()),
                attr(CKA_ISSUER, issuer.to_vec()),
                attr(CKA_SERIAL_NUMBER, serial.to_vec()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_handles_are_stable_and_distinct() {
        let a = ObjectId::derived("public-key", b"\x01");
        assert_eq!(a, ObjectId::derived("public-key", b"\x01"));
        assert_ne!(a, ObjectId::derived("certificate", b"\x01"));
        assert_ne!(a, ObjectId::derived("public-key", b"\x02"));
        assert!(a.0 > 0 && a.0 < 1 << 63);
    }

    #[test]
    fn public_key_object_carries_bits_and_round_trips() {
        let modulus = [0x00, 0x01, 0xff, 0xff];
        let object = TokenObject::rsa_public_key(ObjectId(7), b"\x01", "k", &modulus, &[1, 0, 1]);
        assert_eq!(
            read_ulong(object.attribute(CKA_MODULUS_BITS).unwrap()),
            Some(17)
        );
        assert_eq!(read_ulong(object.attribute(CKA_CLASS).unwrap()), Some(2));
        let request = crate::Request::PutObject {
            object: object.clone(),
            version: crate::ObjectVersion::ORIGINAL,
        };
        let bytes = crate::encode(&request).unwrap();
        assert_eq!(crate::decode::<crate::Request>(&bytes).unwrap(), request);
        let mut renamed = object.clone();
        renamed.set_attribute(CKA_LABEL, b"new".to_vec());
        assert_eq!(renamed.attribute(CKA_LABEL), Some(&b"new"[..]));
        assert_eq!(renamed.attributes.len(), object.attributes.len());
    }
}
