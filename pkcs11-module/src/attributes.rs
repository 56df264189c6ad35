//! Attribute values as the application sees them (native `CK_ULONG`, one-byte `CK_BBOOL`,
//! byte strings) and as the appliances store them (`ittc_wire::attributes`: `CK_ULONG` as
//! 8 bytes little-endian), and the conversions between the two.

use cryptoki_sys as ck;
use cryptoki_sys::{CK_ATTRIBUTE_TYPE, CK_ULONG};

use crate::error::{Error, Result};

/// One attribute of a template, with its value in the application's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// `CKA_*`.
    pub kind: CK_ATTRIBUTE_TYPE,
    /// The value bytes, native layout.
    pub value: Vec<u8>,
}

/// The module's own attribute on private-key stubs and public keys: the cluster key id the
/// object belongs to, so that `CKA_ID` can change without losing the link.
pub const CKA_ITTC_KEY_ID: CK_ATTRIBUTE_TYPE = ck::CKA_VENDOR_DEFINED | 0x4954_0001;

/// Attributes whose value is a `CK_ULONG`.
pub fn is_ulong(kind: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(
        kind,
        ck::CKA_CLASS
            | ck::CKA_KEY_TYPE
            | ck::CKA_CERTIFICATE_TYPE
            | ck::CKA_MODULUS_BITS
            | ck::CKA_CERTIFICATE_CATEGORY
            | ck::CKA_JAVA_MIDP_SECURITY_DOMAIN
            | ck::CKA_NAME_HASH_ALGORITHM
            | ck::CKA_KEY_GEN_MECHANISM
            | ck::CKA_VALUE_LEN
            | ck::CKA_MECHANISM_TYPE
            | ck::CKA_HW_FEATURE_TYPE
            | ck::CKA_PRIME_BITS
            | ck::CKA_SUBPRIME_BITS
            | ck::CKA_VALUE_BITS
    )
}

/// Attributes whose value is a `CK_BBOOL`.
pub fn is_bool(kind: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(
        kind,
        ck::CKA_TOKEN
            | ck::CKA_PRIVATE
            | ck::CKA_MODIFIABLE
            | ck::CKA_COPYABLE
            | ck::CKA_DESTROYABLE
            | ck::CKA_TRUSTED
            | ck::CKA_SENSITIVE
            | ck::CKA_ENCRYPT
            | ck::CKA_DECRYPT
            | ck::CKA_WRAP
            | ck::CKA_UNWRAP
            | ck::CKA_SIGN
            | ck::CKA_SIGN_RECOVER
            | ck::CKA_VERIFY
            | ck::CKA_VERIFY_RECOVER
            | ck::CKA_DERIVE
            | ck::CKA_EXTRACTABLE
            | ck::CKA_LOCAL
            | ck::CKA_NEVER_EXTRACTABLE
            | ck::CKA_ALWAYS_SENSITIVE
            | ck::CKA_ALWAYS_AUTHENTICATE
            | ck::CKA_WRAP_WITH_TRUSTED
    )
}

/// A native `CK_ULONG` value.
pub fn ulong(value: CK_ULONG) -> Vec<u8> {
    value.to_ne_bytes().to_vec()
}

/// A native `CK_BBOOL` value.
pub fn bool_value(value: bool) -> Vec<u8> {
    vec![if value { ck::CK_TRUE } else { ck::CK_FALSE }]
}

/// Reads a native `CK_ULONG` template value.
pub fn read_ulong(value: &[u8]) -> Result<CK_ULONG> {
    let bytes: [u8; size_of::<CK_ULONG>()] =
        value.try_into().map_err(|_| Error::AttributeValueInvalid)?;
    Ok(CK_ULONG::from_ne_bytes(bytes))
}

/// Reads a `CK_BBOOL` template value.
pub fn read_bool(value: &[u8]) -> Result<bool> {
    match value {
        [b] => Ok(*b != ck::CK_FALSE),
        _ => Err(Error::AttributeValueInvalid),
    }
}

/// A stored value (appliance layout) in the application's layout.
pub fn to_native(kind: CK_ATTRIBUTE_TYPE, stored: &[u8]) -> Vec<u8> {
    if is_ulong(kind)
        && let Some(v) = ittc_wire::attributes::read_ulong(stored)
    {
        let v = CK_ULONG::try_from(v).unwrap_or(ck::CK_UNAVAILABLE_INFORMATION);
        return ulong(v);
    }
    stored.to_vec()
}

/// A template value (application layout) in the appliances' layout, checked.
pub fn to_stored(kind: CK_ATTRIBUTE_TYPE, native: &[u8]) -> Result<Vec<u8>> {
    if is_ulong(kind) {
        return Ok(ittc_wire::attributes::ulong(u64::from(read_ulong(native)?)));
    }
    if is_bool(kind) {
        return Ok(ittc_wire::attributes::bool_value(read_bool(native)?));
    }
    Ok(native.to_vec())
}

/// The value of `kind` in a template, if present.
pub fn find(template: &[Attr], kind: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
    template
        .iter()
        .find(|a| a.kind == kind)
        .map(|a| a.value.as_slice())
}

/// DER `SubjectPublicKeyInfo` of an RSA key (`CKA_PUBLIC_KEY_INFO`).
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    fn len(out: &mut Vec<u8>, n: usize) {
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
    }
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        len(&mut out, body.len());
        out.extend_from_slice(body);
        out
    }
    fn integer(be: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = be.iter().copied().skip_while(|b| *b == 0).collect();
        let mut body = Vec::with_capacity(trimmed.len() + 1);
        if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(&trimmed);
        tlv(0x02, &body)
    }
    // rsaEncryption OID 1.2.840.113549.1.1.1 and a NULL parameter.
    let algorithm = tlv(
        0x30,
        &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
        ],
    );
    let mut rsa_key = integer(modulus);
    rsa_key.extend_from_slice(&integer(exponent));
    let rsa_key = tlv(0x30, &rsa_key);
    let mut bits = vec![0u8];
    bits.extend_from_slice(&rsa_key);
    let mut spki = algorithm;
    spki.extend_from_slice(&tlv(0x03, &bits));
    tlv(0x30, &spki)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulongs_convert_both_ways() {
        let stored = to_stored(ck::CKA_CLASS, &ulong(ck::CKO_CERTIFICATE)).unwrap();
        assert_eq!(stored, 1u64.to_le_bytes());
        assert_eq!(
            to_native(ck::CKA_CLASS, &stored),
            ulong(ck::CKO_CERTIFICATE)
        );
        assert_eq!(
            to_stored(ck::CKA_CLASS, &[1, 2]),
            Err(Error::AttributeValueInvalid)
        );
        assert_eq!(to_stored(ck::CKA_TOKEN, &[5]).unwrap(), vec![1]);
        assert_eq!(to_stored(ck::CKA_LABEL, b"x").unwrap(), b"x");
    }

    #[test]
    fn spki_is_der() {
        let spki = rsa_spki(&[0xc1; 256], &[1, 0, 1]);
        // SEQUENCE, long form with two length bytes.
        assert_eq!(&spki[..2], &[0x30, 0x82]);
        assert_eq!(
            usize::from(spki[2]) * 256 + usize::from(spki[3]),
            spki.len() - 4
        );
    }
}
