//! EMSA-PSS (RFC 8017 §9.1): encoding for signing, and verification of a recovered block.
//!
//! The message hash and the MGF1 hash may differ (PKCS#11's `CK_RSA_PKCS_PSS_PARAMS` names both),
//! and any salt length that fits is allowed, including 0. `emBits = modBits − 1`, so for a
//! modulus whose bit length is 1 mod 8 the encoded message is one byte shorter than the modulus;
//! both functions here work on `k`-byte buffers and handle that leading byte themselves.

use rand::CryptoRng;

use super::mgf::mgf1_xor;
use super::{HashAlg, PaddingError, check_digest_len, modulus_len};

const TRAILER: u8 = 0xbc;

/// EMSA-PSS encoding (RFC 8017 §9.1.1) of the message hash `m_hash` with a random salt of
/// `salt_len` bytes, for a modulus of `mod_bits` bits. Returns exactly
/// `k = ceil(mod_bits / 8)` bytes: `EM` left-padded with a zero byte when `EM` is one byte
/// shorter than the modulus.
///
/// Fails with [`PaddingError::WrongDigestLength`] if `m_hash` is not `hash.output_len()` bytes,
/// [`PaddingError::ModulusTooSmall`] if not even an empty salt fits, and
/// [`PaddingError::SaltTooLong`] if `salt_len` exceeds `emLen − hLen − 2`.
pub fn pss_encode<R: CryptoRng + ?Sized>(
    hash: HashAlg,
    mgf_hash: HashAlg,
    m_hash: &[u8],
    salt_len: usize,
    mod_bits: usize,
    rng: &mut R,
) -> Result<Vec<u8>, PaddingError> {
    let h_len = hash.output_len();
    check_digest_len(hash, m_hash)?;
    let geom = Geometry::new(mod_bits)?;
    let max_salt = geom
        .em_len
        .checked_sub(h_len + 2)
        .ok_or(PaddingError::ModulusTooSmall)?;
    if salt_len > max_salt {
        return Err(PaddingError::SaltTooLong {
            len: salt_len,
            max: max_salt,
        });
    }
    let mut salt = vec![0u8; salt_len];
    rng.fill_bytes(&mut salt);
    let h = m_prime_hash(hash, m_hash, &salt);

    // DB = PS || 0x01 || salt, then masked with MGF1(H).
    let db_len = geom.em_len - h_len - 1;
    let mut db = Vec::with_capacity(db_len);
    db.resize(db_len - salt_len - 1, 0x00);
    db.push(0x01);
    db.extend_from_slice(&salt);
    mgf1_xor(mgf_hash, &h, &mut db);
    if let Some(first) = db.first_mut() {
        *first &= geom.top_mask();
    }

    let mut em = Vec::with_capacity(geom.k);
    em.resize(geom.k - geom.em_len, 0x00);
    em.extend_from_slice(&db);
    em.extend_from_slice(&h);
    em.push(TRAILER);
    Ok(em)
}

/// EMSA-PSS verification (RFC 8017 §9.1.2) of a recovered block `em = s^e mod N`, which must be
/// exactly `k = ceil(mod_bits / 8)` bytes, against the message hash `m_hash`.
///
/// With `salt_len = Some(n)` the salt must be exactly `n` bytes; with `None` any salt length is
/// accepted and recovered from the block.
///
/// Fails with [`PaddingError::BadSignature`] if the block is not a valid encoding of `m_hash`,
/// and, for caller errors, with [`PaddingError::WrongDigestLength`] if `m_hash` is not
/// `hash.output_len()` bytes or [`PaddingError::InvalidLength`] if `em` is not `k` bytes.
pub fn pss_verify(
    hash: HashAlg,
    mgf_hash: HashAlg,
    m_hash: &[u8],
    salt_len: Option<usize>,
    mod_bits: usize,
    em: &[u8],
) -> Result<(), PaddingError> {
    const BAD: PaddingError = PaddingError::BadSignature;
    let h_len = hash.output_len();
    check_digest_len(hash, m_hash)?;
    let k = modulus_len(mod_bits);
    if em.len() != k {
        return Err(PaddingError::InvalidLength {
            len: em.len(),
            expected: k,
        });
    }
    let geom = Geometry::new(mod_bits)?;
    // The integer must fit in emLen bytes: the extra leading byte, if any, is zero.
    let (lead, em) = em.split_at_checked(geom.k - geom.em_len).ok_or(BAD)?;
    if lead.iter().any(|&b| b != 0) {
        return Err(BAD);
    }
    // emLen >= hLen + sLen + 2
    let min_len = h_len
        .checked_add(salt_len.unwrap_or(0))
        .and_then(|n| n.checked_add(2))
        .ok_or(BAD)?;
    if geom.em_len < min_len {
        return Err(BAD);
    }
    let (masked_db, rest) = em.split_at_checked(geom.em_len - h_len - 1).ok_or(BAD)?;
    let (h, trailer) = rest.split_at_checked(h_len).ok_or(BAD)?;
    if trailer != [TRAILER] {
        return Err(BAD);
    }
    if masked_db
        .first()
        .is_some_and(|&b| b & !geom.top_mask() != 0)
    {
        return Err(BAD);
    }
    let mut db = masked_db.to_vec();
    mgf1_xor(mgf_hash, h, &mut db);
    if let Some(first) = db.first_mut() {
        *first &= geom.top_mask();
    }
    // DB = PS (zeros) || 0x01 || salt
    let sep = match salt_len {
        Some(s) => db.len().checked_sub(s + 1).ok_or(BAD)?,
        None => db.iter().position(|&b| b != 0).ok_or(BAD)?,
    };
    let (ps, sep_salt) = db.split_at_checked(sep).ok_or(BAD)?;
    if ps.iter().any(|&b| b != 0) {
        return Err(BAD);
    }
    let Some((&0x01, salt)) = sep_salt.split_first() else {
        return Err(BAD);
    };
    if m_prime_hash(hash, m_hash, salt) != h {
        return Err(BAD);
    }
    Ok(())
}

/// Sizes derived from the modulus length.
struct Geometry {
    /// Modulus length in bytes.
    k: usize,
    /// `emBits = modBits − 1`.
    em_bits: usize,
    /// `emLen = ceil(emBits / 8)`, `k` or `k − 1`.
    em_len: usize,
}

impl Geometry {
    fn new(mod_bits: usize) -> Result<Self, PaddingError> {
        let em_bits = mod_bits
            .checked_sub(1)
            .ok_or(PaddingError::ModulusTooSmall)?;
        Ok(Geometry {
            k: modulus_len(mod_bits),
            em_bits,
            em_len: em_bits.div_ceil(8),
        })
    }

    /// Mask that clears the leftmost `8·emLen − emBits` bits of the first byte.
    fn top_mask(&self) -> u8 {
        // 8·emLen − emBits, computed without overflow for any emBits: 0..=7.
        let unused = ((8 - self.em_bits % 8) % 8) as u32;
        0xffu8.checked_shr(unused).unwrap_or(0)
    }
}

/// `H = Hash(00 00 00 00 00 00 00 00 || mHash || salt)`.
fn m_prime_hash(hash: HashAlg, m_hash: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut h = hash.hasher();
    h.update(&[0u8; 8]);
    h.update(m_hash);
    h.update(salt);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    fn hash_alg() -> impl Strategy<Value = HashAlg> {
        prop::sample::select(HashAlg::ALL.to_vec())
    }

    /// The worked example of RSA Laboratories' PSS test vectors (pss-vect.txt, "Example 1.1"):
    /// its encoded message, for a 1024-bit modulus, SHA-1 and a 20-byte salt, verifies.
    #[test]
    fn verifies_published_example() {
        let hex = |s: &str| -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let msg = hex("85 9e ef 2f d7 8a ca 00 30 8b dc 47 11 93 bf 55
            bf 9d 78 db 8f 8a 67 2b 48 46 34 f3 c9 c2 6e 64
            78 ae 10 26 0f e0 dd 8c 08 2e 53 a5 29 3a f2 17
            3c d5 0c 6d 5d 35 4f eb f7 8b 26 02 1c 25 c0 27
            12 e7 8c d4 69 4c 9f 46 97 77 e4 51 e7 f8 e9 e0
            4c d3 73 9c 6b bf ed ae 48 7f b5 56 44 e9 ca 74
            ff 77 a5 3c b7 29 80 2f 6e d4 a5 ff a8 ba 15 98
            90 fc");
        let em = hex("66 e4 67 2e 83 6a d1 21 ba 24 4b ed 65 76 b8 67
            d9 a4 47 c2 8a 6e 66 a5 b8 7d ee 7f bc 7e 65 af
            50 57 f8 6f ae 89 84 d9 ba 7f 96 9a d6 fe 02 a4
            d7 5f 74 45 fe fd d8 5b 6d 3a 47 7c 28 d2 4b a1
            e3 75 6f 79 2d d1 dc e8 ca 94 44 0e cb 52 79 ec
            d3 18 3a 31 1f c8 96 da 1c b3 93 11 af 37 ea 4a
            75 e2 4b db fd 5c 1d a0 de 7c ec df 1a 89 6f 9d
            8b c8 16 d9 7c d7 a2 c4 3b ad 54 6f be 8c fe bc");
        let m_hash = HashAlg::Sha1.digest(&msg);
        assert_eq!(m_hash, hex("37b66ae0445843353d47ecb0b4fd14c110e62d6a"));
        let sha1 = HashAlg::Sha1;
        assert_eq!(pss_verify(sha1, sha1, &m_hash, Some(20), 1024, &em), Ok(()));
        assert_eq!(pss_verify(sha1, sha1, &m_hash, None, 1024, &em), Ok(()));
        assert_eq!(
            pss_verify(sha1, sha1, &m_hash, Some(19), 1024, &em),
            Err(PaddingError::BadSignature)
        );
        let mut other = m_hash.clone();
        other[0] ^= 1;
        assert_eq!(
            pss_verify(sha1, sha1, &other, Some(20), 1024, &em),
            Err(PaddingError::BadSignature)
        );
    }

    #[test]
    fn length_errors() {
        let h = HashAlg::Sha256;
        let m = h.digest(b"m");
        assert_eq!(
            pss_encode(h, h, &m[..31], 32, 2048, &mut rng(0)),
            Err(PaddingError::WrongDigestLength {
                len: 31,
                expected: 32
            })
        );
        // 2048 bits: emLen = 256, max salt = 256 - 32 - 2 = 222.
        assert!(pss_encode(h, h, &m, 222, 2048, &mut rng(0)).is_ok());
        assert_eq!(
            pss_encode(h, h, &m, 223, 2048, &mut rng(0)),
            Err(PaddingError::SaltTooLong { len: 223, max: 222 })
        );
        // 2049 bits: k = 257 but emLen = 256.
        assert_eq!(
            pss_encode(h, h, &m, 223, 2049, &mut rng(0)),
            Err(PaddingError::SaltTooLong { len: 223, max: 222 })
        );
        assert_eq!(
            pss_encode(h, h, &m, 0, 8 * 33, &mut rng(0)),
            Err(PaddingError::ModulusTooSmall)
        );
        assert_eq!(
            pss_encode(h, h, &m, 0, 0, &mut rng(0)),
            Err(PaddingError::ModulusTooSmall)
        );
        let em = pss_encode(h, h, &m, 32, 2048, &mut rng(0)).unwrap();
        assert_eq!(
            pss_verify(h, h, &m, Some(32), 2048, &em[1..]),
            Err(PaddingError::InvalidLength {
                len: 255,
                expected: 256
            })
        );
    }

    /// For every modulus length mod 8 the block is `k` bytes, below 2^(modBits-1), and ends
    /// in 0xbc; flipping any bit breaks verification.
    #[test]
    fn every_bit_length_and_tamper() {
        let h = HashAlg::Sha256;
        let m = h.digest(b"tamper");
        for mod_bits in 1017..1025 {
            let em = pss_encode(h, h, &m, 20, mod_bits, &mut rng(mod_bits as u64)).unwrap();
            let k = modulus_len(mod_bits);
            assert_eq!(em.len(), k);
            assert_eq!(em[k - 1], 0xbc);
            // The top bits above emBits are zero.
            let excess = 8 * k - (mod_bits - 1);
            let top = u16::from(em[0]) << 8 | u16::from(em[1]);
            assert_eq!(top >> (16 - excess), 0, "mod_bits {mod_bits}");
            assert_eq!(pss_verify(h, h, &m, Some(20), mod_bits, &em), Ok(()));
            for byte in [0, 1, k / 2, k - 2, k - 1] {
                for bit in 0..8 {
                    let mut bad = em.clone();
                    bad[byte] ^= 1 << bit;
                    assert_eq!(
                        pss_verify(h, h, &m, Some(20), mod_bits, &bad),
                        Err(PaddingError::BadSignature),
                        "mod_bits {mod_bits} byte {byte} bit {bit}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(hash in hash_alg(), mgf in hash_alg(), mod_bits in 1024usize..2100,
                      salt_len in 0usize..100, seed in any::<u64>(), msg in any::<Vec<u8>>()) {
            let m_hash = hash.digest(&msg);
            let max_salt = modulus_len(mod_bits - 1) - hash.output_len() - 2;
            let salt_len = salt_len.min(max_salt);
            let em = pss_encode(hash, mgf, &m_hash, salt_len, mod_bits, &mut rng(seed)).unwrap();
            prop_assert_eq!(em.len(), modulus_len(mod_bits));
            prop_assert_eq!(pss_verify(hash, mgf, &m_hash, Some(salt_len), mod_bits, &em), Ok(()));
            prop_assert_eq!(pss_verify(hash, mgf, &m_hash, None, mod_bits, &em), Ok(()));
            if salt_len > 0 {
                prop_assert_eq!(
                    pss_verify(hash, mgf, &m_hash, Some(salt_len - 1), mod_bits, &em),
                    Err(PaddingError::BadSignature)
                );
            }
        }

        #[test]
        fn verify_never_panics(hash in hash_alg(), mgf in hash_alg(),
                               em in proptest::collection::vec(any::<u8>(), 0..200),
                               mod_bits in 0usize..1700, salt in proptest::option::of(0usize..300)) {
            let m_hash = vec![0u8; hash.output_len()];
            let _ = pss_verify(hash, mgf, &m_hash, salt, mod_bits, &em);
            // With a length that matches, too.
            let k = modulus_len(mod_bits);
            let mut em = em;
            em.resize(k, 0xbc);
            let _ = pss_verify(hash, mgf, &m_hash, salt, mod_bits, &em);
        }
    }
}
