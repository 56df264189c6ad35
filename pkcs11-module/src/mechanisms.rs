//! The mechanisms the token offers, their typed form with parameters, and their info.

use cryptoki_sys as ck;
use cryptoki_sys::{CK_FLAGS, CK_MECHANISM_TYPE, CK_ULONG};
use ittc_threshold::padding::HashAlg;

use crate::error::{Error, Result};

/// Smallest and largest modulus, in bits (what the threshold crate accepts).
pub const MIN_KEY_BITS: CK_ULONG = 1024;
/// See [`MIN_KEY_BITS`].
pub const MAX_KEY_BITS: CK_ULONG = 8192;

/// Smallest and largest modulus `C_GenerateKeyPair` asks the appliances for, in bits
/// (multiples of 1024). The appliances offer 2048 to 4096 unless their `keygen.min_bits`
/// allows 1024 (tests).
pub const GENERATE_BITS: (CK_ULONG, CK_ULONG) = (1024, 4096);

/// PSS parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pss {
    /// The message hash.
    pub hash: HashAlg,
    /// The MGF1 hash.
    pub mgf: HashAlg,
    /// Salt length in bytes.
    pub salt_len: usize,
}

/// A mechanism with its parameters, as the core uses it. The shell builds it from a
/// `CK_MECHANISM`; no raw pointer reaches the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// `CKM_RSA_PKCS`: sign the caller's `DigestInfo` verbatim; PKCS#1 v1.5 en/decryption.
    RsaPkcs,
    /// `CKM_RSA_X_509`: raw RSA.
    RsaX509,
    /// `CKM_SHA*_RSA_PKCS`: hash, then PKCS#1 v1.5.
    RsaPkcsHash(HashAlg),
    /// `CKM_RSA_PKCS_PSS` (`prehash: None`, the input is the digest) or
    /// `CKM_SHA*_RSA_PKCS_PSS` (`prehash: Some`, the module hashes).
    RsaPss {
        /// The hash the module applies first, if any.
        prehash: Option<HashAlg>,
        /// The PSS parameters.
        params: Pss,
    },
    /// `CKM_RSA_PKCS_OAEP`.
    RsaOaep {
        /// The label hash.
        hash: HashAlg,
        /// The MGF1 hash.
        mgf: HashAlg,
        /// The label.
        label: Vec<u8>,
    },
    /// `CKM_SHA_1`, `CKM_SHA256`, …
    Digest(HashAlg),
}

/// Every mechanism, in the order `C_GetMechanismList` reports them.
pub const LIST: [CK_MECHANISM_TYPE; 20] = [
    ck::CKM_RSA_PKCS_KEY_PAIR_GEN,
    ck::CKM_RSA_PKCS,
    ck::CKM_RSA_PKCS_PSS,
    ck::CKM_RSA_PKCS_OAEP,
    ck::CKM_RSA_X_509,
    ck::CKM_SHA1_RSA_PKCS,
    ck::CKM_SHA224_RSA_PKCS,
    ck::CKM_SHA256_RSA_PKCS,
    ck::CKM_SHA384_RSA_PKCS,
    ck::CKM_SHA512_RSA_PKCS,
    ck::CKM_SHA1_RSA_PKCS_PSS,
    ck::CKM_SHA224_RSA_PKCS_PSS,
    ck::CKM_SHA256_RSA_PKCS_PSS,
    ck::CKM_SHA384_RSA_PKCS_PSS,
    ck::CKM_SHA512_RSA_PKCS_PSS,
    ck::CKM_SHA_1,
    ck::CKM_SHA224,
    ck::CKM_SHA256,
    ck::CKM_SHA384,
    ck::CKM_SHA512,
];

/// Every mechanism type the token offers.
pub fn list() -> Vec<CK_MECHANISM_TYPE> {
    LIST.to_vec()
}

/// `(min bits, max bits, flags)` of a mechanism.
pub fn info(mechanism: CK_MECHANISM_TYPE) -> Result<(CK_ULONG, CK_ULONG, CK_FLAGS)> {
    let rsa = |flags| Ok((MIN_KEY_BITS, MAX_KEY_BITS, flags | ck::CKF_HW));
    match mechanism {
        ck::CKM_RSA_PKCS | ck::CKM_RSA_X_509 => {
            rsa(ck::CKF_SIGN | ck::CKF_VERIFY | ck::CKF_ENCRYPT | ck::CKF_DECRYPT)
        }
        ck::CKM_RSA_PKCS_OAEP => rsa(ck::CKF_ENCRYPT | ck::CKF_DECRYPT),
        ck::CKM_RSA_PKCS_KEY_PAIR_GEN => Ok((
            GENERATE_BITS.0,
            GENERATE_BITS.1,
            ck::CKF_GENERATE_KEY_PAIR | ck::CKF_HW,
        )),
        m if hash_of_mechanism(m).is_some() || m == ck::CKM_RSA_PKCS_PSS => {
            rsa(ck::CKF_SIGN | ck::CKF_VERIFY)
        }
        m if digest_of(m).is_some() => Ok((0, 0, ck::CKF_DIGEST)),
        _ => Err(Error::MechanismInvalid),
    }
}

/// The hash of a `CKM_SHA*` digest mechanism (also the `hashAlg` of PSS and OAEP
/// parameters).
pub fn digest_of(mechanism: CK_MECHANISM_TYPE) -> Option<HashAlg> {
    Some(match mechanism {
        ck::CKM_SHA_1 => HashAlg::Sha1,
        ck::CKM_SHA224 => HashAlg::Sha224,
        ck::CKM_SHA256 => HashAlg::Sha256,
        ck::CKM_SHA384 => HashAlg::Sha384,
        ck::CKM_SHA512 => HashAlg::Sha512,
        _ => return None,
    })
}

/// The hash of an MGF1 generator (`CKG_MGF1_SHA*`).
pub fn mgf_of(mgf: CK_ULONG) -> Option<HashAlg> {
    Some(match mgf {
        ck::CKG_MGF1_SHA1 => HashAlg::Sha1,
        ck::CKG_MGF1_SHA224 => HashAlg::Sha224,
        ck::CKG_MGF1_SHA256 => HashAlg::Sha256,
        ck::CKG_MGF1_SHA384 => HashAlg::Sha384,
        ck::CKG_MGF1_SHA512 => HashAlg::Sha512,
        _ => return None,
    })
}

/// `(hash, is PSS)` of a `CKM_SHA*_RSA_PKCS[_PSS]` mechanism.
pub fn hash_of_mechanism(mechanism: CK_MECHANISM_TYPE) -> Option<(HashAlg, bool)> {
    Some(match mechanism {
        ck::CKM_SHA1_RSA_PKCS => (HashAlg::Sha1, false),
        ck::CKM_SHA224_RSA_PKCS => (HashAlg::Sha224, false),
        ck::CKM_SHA256_RSA_PKCS => (HashAlg::Sha256, false),
        ck::CKM_SHA384_RSA_PKCS => (HashAlg::Sha384, false),
        ck::CKM_SHA512_RSA_PKCS => (HashAlg::Sha512, false),
        ck::CKM_SHA1_RSA_PKCS_PSS => (HashAlg::Sha1, true),
        ck::CKM_SHA224_RSA_PKCS_PSS => (HashAlg::Sha224, true),
        ck::CKM_SHA256_RSA_PKCS_PSS => (HashAlg::Sha256, true),
        ck::CKM_SHA384_RSA_PKCS_PSS => (HashAlg::Sha384, true),
        ck::CKM_SHA512_RSA_PKCS_PSS => (HashAlg::Sha512, true),
        _ => return None,
    })
}

/// Raw PSS parameters as the shell read them.
#[derive(Clone, Copy, Debug)]
pub struct RawPss {
    /// `hashAlg`.
    pub hash: CK_MECHANISM_TYPE,
    /// `mgf`.
    pub mgf: CK_ULONG,
    /// `sLen`.
    pub salt_len: CK_ULONG,
}

/// Raw OAEP parameters as the shell read them.
#[derive(Clone, Debug)]
pub struct RawOaep {
    /// `hashAlg`.
    pub hash: CK_MECHANISM_TYPE,
    /// `mgf`.
    pub mgf: CK_ULONG,
    /// The label (`pSourceData` when `source` is `CKZ_DATA_SPECIFIED`).
    pub label: Vec<u8>,
}

/// Parameters the shell found behind `pParameter`.
#[derive(Clone, Debug)]
pub enum RawParams {
    /// No parameter.
    None,
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss(RawPss),
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep(RawOaep),
}

/// Which parameter structure a mechanism takes, so the shell knows how to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// None (any given is ignored).
    None,
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss,
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep,
}

/// The parameter structure of a mechanism type.
pub fn param_kind(mechanism: CK_MECHANISM_TYPE) -> ParamKind {
    match mechanism {
        ck::CKM_RSA_PKCS_PSS => ParamKind::Pss,
        m if hash_of_mechanism(m).is_some_and(|(_, pss)| pss) => ParamKind::Pss,
        ck::CKM_RSA_PKCS_OAEP => ParamKind::Oaep,
        _ => ParamKind::None,
    }
}

impl Mechanism {
    /// Builds the typed mechanism, checking the parameters.
    pub fn parse(mechanism: CK_MECHANISM_TYPE, params: RawParams) -> Result<Self> {
        let pss = |params: RawParams| -> Result<Pss> {
            let RawParams::Pss(p) = params else {
                return Err(Error::MechanismParamInvalid);
            };
            Ok(Pss {
                hash: digest_of(p.hash).ok_or(Error::MechanismParamInvalid)?,
                mgf: mgf_of(p.mgf).ok_or(Error::MechanismParamInvalid)?,
                salt_len: usize::try_from(p.salt_len).map_err(|_| Error::MechanismParamInvalid)?,
            })
        };
        Ok(match mechanism {
            ck::CKM_RSA_PKCS => Mechanism::RsaPkcs,
            ck::CKM_RSA_X_509 => Mechanism::RsaX509,
            ck::CKM_RSA_PKCS_PSS => Mechanism::RsaPss {
                prehash: None,
                params: pss(params)?,
            },
            ck::CKM_RSA_PKCS_OAEP => {
                let RawParams::Oaep(p) = params else {
                    return Err(Error::MechanismParamInvalid);
                };
                Mechanism::RsaOaep {
                    hash: digest_of(p.hash).ok_or(Error::MechanismParamInvalid)?,
                    mgf: mgf_of(p.mgf).ok_or(Error::MechanismParamInvalid)?,
                    label: p.label,
                }
            }
            m => {
                if let Some(hash) = digest_of(m) {
                    Mechanism::Digest(hash)
                } else if let Some((hash, is_pss)) = hash_of_mechanism(m) {
                    if is_pss {
                        let params = pss(params)?;
                        if params.hash != hash {
                            return Err(Error::MechanismParamInvalid);
                        }
                        Mechanism::RsaPss {
                            prehash: Some(hash),
                            params,
                        }
                    } else {
                        Mechanism::RsaPkcsHash(hash)
                    }
                } else {
                    return Err(Error::MechanismInvalid);
                }
            }
        })
    }

    /// Whether the mechanism signs and verifies.
    pub fn can_sign(&self) -> bool {
        !matches!(self, Mechanism::RsaOaep { .. } | Mechanism::Digest(_))
    }

    /// Whether the mechanism encrypts and decrypts.
    pub fn can_encrypt(&self) -> bool {
        matches!(
            self,
            Mechanism::RsaPkcs | Mechanism::RsaX509 | Mechanism::RsaOaep { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_mechanism_has_info_and_parses() {
        for m in list() {
            assert!(info(m).is_ok(), "{m:#x}");
            if m == ck::CKM_RSA_PKCS_KEY_PAIR_GEN {
                // C_GenerateKeyPair's only mechanism: never parsed for an operation.
                assert_eq!(
                    Mechanism::parse(m, RawParams::None),
                    Err(Error::MechanismInvalid)
                );
                continue;
            }
            let params = match param_kind(m) {
                ParamKind::None => RawParams::None,
                ParamKind::Pss => RawParams::Pss(RawPss {
                    hash: hash_of_mechanism(m).map_or(ck::CKM_SHA256, |(h, _)| match h {
                        HashAlg::Sha1 => ck::CKM_SHA_1,
                        HashAlg::Sha224 => ck::CKM_SHA224,
                        HashAlg::Sha256 => ck::CKM_SHA256,
                        HashAlg::Sha384 => ck::CKM_SHA384,
                        HashAlg::Sha512 => ck::CKM_SHA512,
                    }),
                    mgf: ck::CKG_MGF1_SHA256,
                    salt_len: 32,
                }),
                ParamKind::Oaep => RawParams::Oaep(RawOaep {
                    hash: ck::CKM_SHA256,
                    mgf: ck::CKG_MGF1_SHA256,
                    label: vec![],
                }),
            };
            assert!(Mechanism::parse(m, params).is_ok(), "{m:#x}");
        }
        assert_eq!(info(ck::CKM_AES_CBC), Err(Error::MechanismInvalid));
    }

    #[test]
    fn pss_hash_must_match_the_mechanism() {
        let params = RawParams::Pss(RawPss {
            hash: ck::CKM_SHA_1,
            mgf: ck::CKG_MGF1_SHA1,
            salt_len: 20,
        });
        assert_eq!(
            Mechanism::parse(ck::CKM_SHA256_RSA_PKCS_PSS, params),
            Err(Error::MechanismParamInvalid)
        );
        assert_eq!(
            Mechanism::parse(ck::CKM_RSA_PKCS_PSS, RawParams::None),
            Err(Error::MechanismParamInvalid)
        );
    }
}
