//! PKCS#1 v1.5: EMSA-PKCS1-v1_5 signature encoding (RFC 8017 §9.2) and EME-PKCS1-v1_5
//! encryption padding and constant-time decoding (RFC 8017 §7.2).

use rand::CryptoRng;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};
use zeroize::Zeroizing;

use super::{HashAlg, PaddingError, check_digest_len, message_after};

/// Bytes of overhead in either block type: `00 || BT || PS (≥ 8 bytes) || 00`.
const OVERHEAD: usize = 11;
/// Shortest padding string allowed.
const MIN_PS: usize = 8;
/// Rounds of 64 replacement bytes drawn for zero bytes in PS before giving up on the RNG.
const MAX_REFILLS: usize = 16;

/// EMSA-PKCS1-v1_5 (RFC 8017 §9.2) of a digest computed with `hash`, for a modulus of `k`
/// bytes: `00 01 FF..FF 00 || DigestInfo(hash, digest)`, exactly `k` bytes.
///
/// Fails with [`PaddingError::WrongDigestLength`] if `digest` is not `hash.output_len()` bytes,
/// and [`PaddingError::ModulusTooSmall`] if `k` cannot hold the `DigestInfo` and 11 bytes of
/// padding.
pub fn pkcs1v15_sign(hash: HashAlg, digest: &[u8], k: usize) -> Result<Vec<u8>, PaddingError> {
    check_digest_len(hash, digest)?;
    let prefix = hash.digest_info_prefix();
    let t_len = prefix.len() + digest.len();
    if k < t_len + OVERHEAD {
        return Err(PaddingError::ModulusTooSmall);
    }
    Ok(pad_type1(&[prefix, digest], t_len, k))
}

/// `CKM_RSA_PKCS` signing: `00 01 FF..FF 00 || t` for a modulus of `k` bytes, with `t` (normally
/// a `DigestInfo` the caller built) taken verbatim.
///
/// Fails with [`PaddingError::MessageTooLong`] if `t` is longer than `k − 11` bytes, and
/// [`PaddingError::ModulusTooSmall`] if `k < 11`.
pub fn pkcs1v15_sign_raw(t: &[u8], k: usize) -> Result<Vec<u8>, PaddingError> {
    check_fits(t.len(), k)?;
    Ok(pad_type1(&[t], t.len(), k))
}

/// Checks a recovered EMSA-PKCS1-v1_5 block `em = s^e mod N` (exactly `k` bytes) against the
/// digest, by encoding again and comparing (RFC 8017 §8.2.2). No parsing of the block, so no
/// parsing flaws (BER laxness, garbage after the digest) can be accepted.
///
/// Fails with [`PaddingError::BadSignature`] if the block differs, and with the errors of
/// [`pkcs1v15_sign`] (wrong digest length, modulus too small) for caller errors.
pub fn pkcs1v15_verify(hash: HashAlg, digest: &[u8], em: &[u8]) -> Result<(), PaddingError> {
    let expected = pkcs1v15_sign(hash, digest, em.len())?;
    same_or_bad_signature(&expected, em)
}

/// Checks a recovered `CKM_RSA_PKCS` block `em = s^e mod N` (exactly `k` bytes) against the `t`
/// that was signed, by encoding again and comparing.
///
/// Fails with [`PaddingError::BadSignature`] if the block differs, and with the errors of
/// [`pkcs1v15_sign_raw`] for caller errors.
pub fn pkcs1v15_verify_raw(t: &[u8], em: &[u8]) -> Result<(), PaddingError> {
    let expected = pkcs1v15_sign_raw(t, em.len())?;
    same_or_bad_signature(&expected, em)
}

/// EME-PKCS1-v1_5 encryption padding (RFC 8017 §7.2.1): `00 02 || PS || 00 || msg`, exactly
/// `k` bytes, with `PS` at least 8 random nonzero bytes drawn from `rng`.
///
/// The result holds the message in clear and is zeroized on drop. Fails with
/// [`PaddingError::MessageTooLong`] if `msg` is longer than `k − 11` bytes,
/// [`PaddingError::ModulusTooSmall`] if `k < 11`, and [`PaddingError::RandomFailure`] if
/// `rng` returns almost nothing but zero bytes.
pub fn pkcs1v15_encrypt_pad<R: CryptoRng + ?Sized>(
    msg: &[u8],
    k: usize,
    rng: &mut R,
) -> Result<Zeroizing<Vec<u8>>, PaddingError> {
    check_fits(msg.len(), k)?;
    let mut ps = vec![0u8; k - msg.len() - 3];
    fill_nonzero(rng, &mut ps)?;
    let mut em = Zeroizing::new(Vec::with_capacity(k));
    em.extend_from_slice(&[0x00, 0x02]);
    em.extend_from_slice(&ps);
    em.push(0x00);
    em.extend_from_slice(msg);
    Ok(em)
}

/// EME-PKCS1-v1_5 decoding (RFC 8017 §7.2.2) of `em = c^d mod N`, which must be `k` bytes.
///
/// Constant time in the contents of `em`: every byte is examined, the separator position is
/// kept with conditional assignment, and the checks (`00 02` header, a zero separator, at least
/// 8 bytes of padding) are combined into one [`Choice`] that is branched on once. Only the
/// final copy of the message depends on its length, which is then public. Every failure is
/// [`PaddingError::Decryption`].
pub fn pkcs1v15_decrypt(em: &[u8], k: usize) -> Result<Zeroizing<Vec<u8>>, PaddingError> {
    if em.len() != k || k < OVERHEAD {
        return Err(PaddingError::Decryption);
    }
    let Some((header, rest)) = em.split_first_chunk::<2>() else {
        return Err(PaddingError::Decryption);
    };
    let mut valid = header[0].ct_eq(&0x00) & header[1].ct_eq(&0x02);
    // Find the first zero byte after the header, without branching on where it is.
    let mut looking = Choice::from(1u8);
    let mut sep: u64 = 0;
    for (i, b) in rest.iter().enumerate() {
        let is_zero = b.ct_eq(&0);
        sep.conditional_assign(&(i as u64), looking & is_zero);
        looking &= !is_zero;
    }
    valid &= !looking;
    // `sep` counts the bytes of PS.
    valid &= sep.ct_gt(&(MIN_PS as u64 - 1));
    message_after(valid, sep, rest)
}

/// Whether `len` bytes fit in a block of `k` bytes with 11 bytes of padding.
fn check_fits(len: usize, k: usize) -> Result<(), PaddingError> {
    let max = k
        .checked_sub(OVERHEAD)
        .ok_or(PaddingError::ModulusTooSmall)?;
    if len > max {
        return Err(PaddingError::MessageTooLong { len, max });
    }
    Ok(())
}

/// `00 01 FF..FF 00 || parts`, `k` bytes; the caller checked `t_len + 11 <= k`.
fn pad_type1(parts: &[&[u8]], t_len: usize, k: usize) -> Vec<u8> {
    let mut em = Vec::with_capacity(k);
    em.extend_from_slice(&[0x00, 0x01]);
    em.resize(k.saturating_sub(t_len + 1), 0xff);
    em.push(0x00);
    for part in parts {
        em.extend_from_slice(part);
    }
    em
}

fn same_or_bad_signature(expected: &[u8], em: &[u8]) -> Result<(), PaddingError> {
    if bool::from(expected.ct_eq(em)) {
        Ok(())
    } else {
        Err(PaddingError::BadSignature)
    }
}

/// Fills `out` with random nonzero bytes: zero bytes are replaced by fresh draws, so each byte
/// is uniform over 1..=255.
fn fill_nonzero<R: CryptoRng + ?Sized>(rng: &mut R, out: &mut [u8]) -> Result<(), PaddingError> {
    rng.fill_bytes(out);
    let mut spare = Zeroizing::new([0u8; 64]);
    let mut pos = spare.len();
    let mut refills = 0;
    for b in out.iter_mut() {
        while *b == 0 {
            if pos >= spare.len() {
                if refills == MAX_REFILLS {
                    return Err(PaddingError::RandomFailure);
                }
                rng.fill_bytes(&mut spare[..]);
                refills += 1;
                pos = 0;
            }
            if let Some(&x) = spare.get(pos) {
                *b = x;
            }
            pos += 1;
        }
    }
    Ok(())
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

    /// The SHA-256 EMSA-PKCS1-v1_5 block has the exact layout of RFC 8017 §9.2.
    #[test]
    fn sign_layout() {
        let digest = HashAlg::Sha256.digest(b"hello");
        let em = pkcs1v15_sign(HashAlg::Sha256, &digest, 128).unwrap();
        assert_eq!(em.len(), 128);
        let t_len = 19 + 32;
        assert_eq!(&em[..2], &[0x00, 0x01]);
        assert!(em[2..128 - t_len - 1].iter().all(|&b| b == 0xff));
        assert_eq!(em[128 - t_len - 1], 0x00);
        assert_eq!(
            &em[128 - t_len..128 - 32],
            HashAlg::Sha256.digest_info_prefix()
        );
        assert_eq!(&em[128 - 32..], &digest[..]);
        // The same block through the raw entry point.
        let t = [HashAlg::Sha256.digest_info_prefix(), &digest[..]].concat();
        assert_eq!(pkcs1v15_sign_raw(&t, 128).unwrap(), em);
    }

    #[test]
    fn sign_rejects_bad_lengths() {
        assert_eq!(
            pkcs1v15_sign(HashAlg::Sha256, &[0; 31], 256),
            Err(PaddingError::WrongDigestLength {
                len: 31,
                expected: 32
            })
        );
        // SHA-512 DigestInfo is 83 bytes: needs k >= 94.
        assert!(pkcs1v15_sign(HashAlg::Sha512, &[0; 64], 94).is_ok());
        assert_eq!(
            pkcs1v15_sign(HashAlg::Sha512, &[0; 64], 93),
            Err(PaddingError::ModulusTooSmall)
        );
        assert!(pkcs1v15_sign_raw(&[7; 245], 256).is_ok());
        assert_eq!(
            pkcs1v15_sign_raw(&[7; 246], 256),
            Err(PaddingError::MessageTooLong { len: 246, max: 245 })
        );
        assert_eq!(
            pkcs1v15_sign_raw(&[], 10),
            Err(PaddingError::ModulusTooSmall)
        );
    }

    #[test]
    fn verify_accepts_own_and_rejects_changes() {
        for alg in HashAlg::ALL {
            let digest = alg.digest(b"message");
            let em = pkcs1v15_sign(alg, &digest, 256).unwrap();
            assert_eq!(pkcs1v15_verify(alg, &digest, &em), Ok(()));
            for i in [0, 1, 2, 100, 255] {
                let mut bad = em.clone();
                bad[i] ^= 0x01;
                assert_eq!(
                    pkcs1v15_verify(alg, &digest, &bad),
                    Err(PaddingError::BadSignature)
                );
            }
            let other = alg.digest(b"other message");
            assert_eq!(
                pkcs1v15_verify(alg, &other, &em),
                Err(PaddingError::BadSignature)
            );
        }
        let em = pkcs1v15_sign_raw(b"any T", 64).unwrap();
        assert_eq!(pkcs1v15_verify_raw(b"any T", &em), Ok(()));
        assert_eq!(
            pkcs1v15_verify_raw(b"any U", &em),
            Err(PaddingError::BadSignature)
        );
    }

    #[test]
    fn encrypt_pad_layout() {
        let em = pkcs1v15_encrypt_pad(b"secret", 64, &mut rng(1)).unwrap();
        assert_eq!(em.len(), 64);
        assert_eq!(&em[..2], &[0x00, 0x02]);
        let ps = &em[2..64 - 7];
        assert!(ps.iter().all(|&b| b != 0));
        assert_eq!(em[64 - 7], 0x00);
        assert_eq!(&em[64 - 6..], b"secret");
        assert_eq!(
            pkcs1v15_encrypt_pad(&[1; 54], 64, &mut rng(1)).map(|_| ()),
            Err(PaddingError::MessageTooLong { len: 54, max: 53 })
        );
    }

    /// An RNG stuck at zero gets an error, not an endless loop.
    #[test]
    fn encrypt_pad_gives_up_on_a_zero_rng() {
        struct Zeros;
        impl rand::TryRng for Zeros {
            type Error = std::convert::Infallible;
            fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
                Ok(0)
            }
            fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
                Ok(0)
            }
            fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
                dst.fill(0);
                Ok(())
            }
        }
        impl rand::TryCryptoRng for Zeros {}
        assert_eq!(
            pkcs1v15_encrypt_pad(b"m", 64, &mut Zeros).map(|_| ()),
            Err(PaddingError::RandomFailure)
        );
    }

    /// Hand-built blocks that each break one rule are all rejected with the same error.
    #[test]
    fn decrypt_rejects_each_malformation() {
        let k = 32;
        let good = |msg: &[u8], ps_len: usize| {
            let mut em = vec![0x00, 0x02];
            em.extend(std::iter::repeat_n(0x5a, ps_len));
            em.push(0);
            em.extend_from_slice(msg);
            em
        };
        let ok = good(b"0123456789abcdefghijk", 8);
        assert_eq!(ok.len(), k);
        assert_eq!(
            &pkcs1v15_decrypt(&ok, k).unwrap()[..],
            b"0123456789abcdefghijk"
        );
        // Empty message, separator in the last byte.
        let empty = good(b"", k - 3);
        assert_eq!(&pkcs1v15_decrypt(&empty, k).unwrap()[..], b"");
        // A message that itself contains zero bytes: the first zero is the separator.
        let zeros = good(&[0, 0, 1, 0], k - 7);
        assert_eq!(&pkcs1v15_decrypt(&zeros, k).unwrap()[..], &[0, 0, 1, 0]);

        let mut bad = Vec::new();
        let mut b = ok.clone();
        b[0] = 1;
        bad.push(b);
        let mut b = ok.clone();
        b[1] = 1;
        bad.push(b);
        let mut b = ok.clone();
        b[1] = 0;
        bad.push(b);
        // PS of 7 bytes.
        bad.push(good(b"0123456789abcdefghijkl", 7));
        // Zero inside the first 8 bytes of PS.
        let mut b = ok.clone();
        b[5] = 0;
        bad.push(b);
        // No separator at all.
        bad.push(good(b"", k - 2)[..k].to_vec());
        // Wrong length.
        bad.push(ok[1..].to_vec());
        for (i, em) in bad.iter().enumerate() {
            assert_eq!(
                pkcs1v15_decrypt(em, k).map(|_| ()),
                Err(PaddingError::Decryption),
                "case {i}"
            );
        }
        assert_eq!(
            pkcs1v15_decrypt(&[0, 2, 1, 1, 1, 1, 1, 1, 1, 1], 10).map(|_| ()),
            Err(PaddingError::Decryption)
        );
    }

    proptest! {
        #[test]
        fn encrypt_decrypt_round_trip(msg in proptest::collection::vec(any::<u8>(), 0..=117),
                                      seed in any::<u64>()) {
            let k = 128;
            let em = pkcs1v15_encrypt_pad(&msg, k, &mut rng(seed)).unwrap();
            prop_assert_eq!(em.len(), k);
            let back = pkcs1v15_decrypt(&em, k).unwrap();
            prop_assert_eq!(&back[..], &msg[..]);
        }

        #[test]
        fn sign_verify_round_trip(t in proptest::collection::vec(any::<u8>(), 0..=53),
                                  k in 64usize..600) {
            let em = pkcs1v15_sign_raw(&t, k).unwrap();
            prop_assert_eq!(em.len(), k);
            prop_assert_eq!(pkcs1v15_verify_raw(&t, &em), Ok(()));
        }

        /// Arbitrary bytes never panic, and anything accepted really is a valid block.
        #[test]
        fn decoders_never_panic(em in proptest::collection::vec(any::<u8>(), 0..300),
                                k in 0usize..300) {
            if let Ok(msg) = pkcs1v15_decrypt(&em, k) {
                prop_assert_eq!(em.len(), k);
                prop_assert_eq!(&em[..2], &[0u8, 2][..]);
                prop_assert!(msg.len() <= k - 11);
                prop_assert_eq!(&em[k - msg.len()..], &msg[..]);
            }
            let _ = pkcs1v15_verify(HashAlg::Sha256, &[0; 32], &em);
            let _ = pkcs1v15_verify_raw(&em[..em.len().min(20)], &em);
        }

        /// Valid-looking blocks (right header, random tail) decode exactly when a zero byte
        /// follows at least 8 nonzero bytes, as a plain reference parser says.
        #[test]
        fn decrypt_matches_reference(tail in proptest::collection::vec(
                                         prop_oneof![3 => 1u8..=255, 1 => Just(0u8)], 62)) {
            let mut em = vec![0u8, 2];
            em.extend_from_slice(&tail);
            let reference = tail.iter().position(|&b| b == 0)
                .filter(|&p| p >= 8)
                .map(|p| tail[p + 1..].to_vec());
            let ours = pkcs1v15_decrypt(&em, 64).ok().map(|m| m.to_vec());
            prop_assert_eq!(ours, reference);
        }
    }
}
