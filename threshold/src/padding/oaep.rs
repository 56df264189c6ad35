//! EME-OAEP (RFC 8017 §7.1): encoding for encryption with the public key, and constant-time
//! decoding after decryption. The label hash and the MGF1 hash may differ, as PKCS#11's
//! `CK_RSA_PKCS_OAEP_PARAMS` allows.

use rand::CryptoRng;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use super::mgf::mgf1_xor;
use super::{HashAlg, PaddingError, message_after};

/// EME-OAEP encoding (RFC 8017 §7.1.1) of `msg` with `label`, for a modulus of `k` bytes:
/// `00 || maskedSeed || maskedDB`, exactly `k` bytes, with a fresh seed from `rng`.
///
/// `hash` hashes the label and sets the seed length; `mgf_hash` drives MGF1. The result can be
/// unmasked into the message and is zeroized on drop. Fails with
/// [`PaddingError::ModulusTooSmall`] if `k < 2·hLen + 2` and
/// [`PaddingError::MessageTooLong`] if `msg` is longer than `k − 2·hLen − 2` bytes.
pub fn oaep_encode<R: CryptoRng + ?Sized>(
    hash: HashAlg,
    mgf_hash: HashAlg,
    label: &[u8],
    msg: &[u8],
    k: usize,
    rng: &mut R,
) -> Result<Zeroizing<Vec<u8>>, PaddingError> {
    let h_len = hash.output_len();
    let max = k
        .checked_sub(2 * h_len + 2)
        .ok_or(PaddingError::ModulusTooSmall)?;
    if msg.len() > max {
        return Err(PaddingError::MessageTooLong {
            len: msg.len(),
            max,
        });
    }
    let db_len = k - h_len - 1;
    // DB = lHash || PS || 0x01 || M
    let mut db = Zeroizing::new(Vec::with_capacity(db_len));
    db.extend_from_slice(&hash.digest(label));
    db.resize(db_len - msg.len() - 1, 0x00);
    db.push(0x01);
    db.extend_from_slice(msg);
    let mut seed = Zeroizing::new(vec![0u8; h_len]);
    rng.fill_bytes(&mut seed);
    mgf1_xor(mgf_hash, &seed, &mut db);
    mgf1_xor(mgf_hash, &db, &mut seed);
    let mut em = Zeroizing::new(Vec::with_capacity(k));
    em.push(0x00);
    em.extend_from_slice(&seed);
    em.extend_from_slice(&db);
    Ok(em)
}

/// EME-OAEP decoding (RFC 8017 §7.1.2) of `em = c^d mod N`, which must be `k` bytes.
///
/// Constant time in the contents of `em`: both masks are always computed, the whole of DB is
/// scanned, the position of the `01` separator is kept with conditional assignment, and the
/// checks (leading zero byte, label hash, only zero bytes before the separator, a separator at
/// all) are combined into one [`Choice`] that is branched on once. Only the final copy of the
/// message depends on its length, which is then public. The unmasked seed and DB are zeroized.
/// Every failure, including a modulus too small for `hash`, is [`PaddingError::Decryption`].
pub fn oaep_decrypt(
    hash: HashAlg,
    mgf_hash: HashAlg,
    label: &[u8],
    em: &[u8],
    k: usize,
) -> Result<Zeroizing<Vec<u8>>, PaddingError> {
    let h_len = hash.output_len();
    if em.len() != k || k < 2 * h_len + 2 {
        return Err(PaddingError::Decryption);
    }
    let l_hash = hash.digest(label);
    let Some((y, rest)) = em.split_first() else {
        return Err(PaddingError::Decryption);
    };
    let Some((masked_seed, masked_db)) = rest.split_at_checked(h_len) else {
        return Err(PaddingError::Decryption);
    };
    let mut seed = Zeroizing::new(masked_seed.to_vec());
    mgf1_xor(mgf_hash, masked_db, &mut seed);
    let mut db = Zeroizing::new(masked_db.to_vec());
    mgf1_xor(mgf_hash, &seed, &mut db);
    let Some((l_hash_got, ps_m)) = db.split_at_checked(h_len) else {
        return Err(PaddingError::Decryption);
    };

    let mut valid = y.ct_eq(&0x00) & l_hash_got.ct_eq(&l_hash);
    // PS || 0x01 || M: find the first nonzero byte, which must be 0x01.
    let mut looking = Choice::from(1u8);
    let mut sep: u64 = 0;
    for (i, b) in ps_m.iter().enumerate() {
        let is_zero = b.ct_eq(&0x00);
        let is_one = b.ct_eq(&0x01);
        sep.conditional_assign(&(i as u64), looking & is_one);
        valid &= !(looking & !is_zero & !is_one);
        looking &= is_zero;
    }
    valid &= !looking;
    message_after(valid, sep, ps_m)
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

    /// Unmasks `em` by hand (no constant-time care) so tests can build malformed blocks.
    fn unmask(hash: HashAlg, mgf: HashAlg, em: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let h = hash.output_len();
        let mut seed = em[1..1 + h].to_vec();
        mgf1_xor(mgf, &em[1 + h..], &mut seed);
        let mut db = em[1 + h..].to_vec();
        mgf1_xor(mgf, &seed, &mut db);
        (seed, db)
    }

    fn remask(mgf: HashAlg, y: u8, seed: &[u8], db: &[u8]) -> Vec<u8> {
        let mut db = db.to_vec();
        let mut seed = seed.to_vec();
        mgf1_xor(mgf, &seed, &mut db);
        mgf1_xor(mgf, &db, &mut seed);
        [&[y][..], &seed, &db].concat()
    }

    #[test]
    fn layout_after_unmasking() {
        let (hash, mgf) = (HashAlg::Sha256, HashAlg::Sha1);
        let em = oaep_encode(hash, mgf, b"label", b"msg", 128, &mut rng(7)).unwrap();
        assert_eq!(em.len(), 128);
        assert_eq!(em[0], 0);
        let (_, db) = unmask(hash, mgf, &em);
        assert_eq!(&db[..32], &hash.digest(b"label")[..]);
        assert!(db[32..db.len() - 4].iter().all(|&b| b == 0));
        assert_eq!(&db[db.len() - 4..], b"\x01msg");
    }

    #[test]
    fn length_limits() {
        // SHA-512: 2*64+2 = 130.
        assert_eq!(
            oaep_encode(HashAlg::Sha512, HashAlg::Sha1, b"", b"", 129, &mut rng(0)).map(|_| ()),
            Err(PaddingError::ModulusTooSmall)
        );
        assert!(oaep_encode(HashAlg::Sha512, HashAlg::Sha1, b"", b"", 130, &mut rng(0)).is_ok());
        assert!(
            oaep_encode(
                HashAlg::Sha1,
                HashAlg::Sha1,
                b"",
                &[1; 86],
                128,
                &mut rng(0)
            )
            .is_ok()
        );
        assert_eq!(
            oaep_encode(
                HashAlg::Sha1,
                HashAlg::Sha1,
                b"",
                &[1; 87],
                128,
                &mut rng(0)
            )
            .map(|_| ()),
            Err(PaddingError::MessageTooLong { len: 87, max: 86 })
        );
        assert_eq!(
            oaep_decrypt(HashAlg::Sha512, HashAlg::Sha1, b"", &[0; 129], 129).map(|_| ()),
            Err(PaddingError::Decryption)
        );
    }

    /// Each way a block can be malformed gives the same error.
    #[test]
    fn decrypt_rejects_each_malformation() {
        let (hash, mgf) = (HashAlg::Sha256, HashAlg::Sha256);
        let k = 128;
        let em = oaep_encode(hash, mgf, b"L", b"hello", k, &mut rng(3)).unwrap();
        assert_eq!(
            &oaep_decrypt(hash, mgf, b"L", &em, k).unwrap()[..],
            b"hello"
        );
        let (seed, db) = unmask(hash, mgf, &em);
        let sep = db.len() - 6;
        assert_eq!(db[sep], 1);

        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        cases.push(("nonzero Y", remask(mgf, 1, &seed, &db)));
        let mut d = db.clone();
        d[0] ^= 1;
        cases.push(("label hash", remask(mgf, 0, &seed, &d)));
        let mut d = db.clone();
        d[sep] = 2;
        cases.push(("separator 02", remask(mgf, 0, &seed, &d)));
        let mut d = db.clone();
        d[sep] = 0;
        d[sep + 1..].fill(0);
        cases.push(("no separator", remask(mgf, 0, &seed, &d)));
        let mut d = db.clone();
        d[40] = 7;
        cases.push(("garbage in PS", remask(mgf, 0, &seed, &d)));
        let mut d = db.clone();
        d[32] = 0xff;
        cases.push(("nonzero first PS byte", remask(mgf, 0, &seed, &d)));
        cases.push(("short", em[1..].to_vec()));
        for (what, bad) in &cases {
            assert_eq!(
                oaep_decrypt(hash, mgf, b"L", bad, k).map(|_| ()),
                Err(PaddingError::Decryption),
                "{what}"
            );
        }
        // Wrong label, wrong hashes.
        for (h, m, l) in [
            (hash, mgf, &b"M"[..]),
            (hash, HashAlg::Sha1, &b"L"[..]),
            (HashAlg::Sha384, mgf, &b"L"[..]),
        ] {
            assert_eq!(
                oaep_decrypt(h, m, l, &em, k).map(|_| ()),
                Err(PaddingError::Decryption)
            );
        }
        // The separator right after lHash (PS empty, longest message) is fine.
        let long = vec![0xabu8; k - 2 * 32 - 2];
        let em = oaep_encode(hash, mgf, b"", &long, k, &mut rng(4)).unwrap();
        assert_eq!(
            &oaep_decrypt(hash, mgf, b"", &em, k).unwrap()[..],
            &long[..]
        );
    }

    proptest! {
        #[test]
        fn round_trip(hash in hash_alg(), mgf in hash_alg(),
                      label in proptest::collection::vec(any::<u8>(), 0..40),
                      msg in proptest::collection::vec(any::<u8>(), 0..=126),
                      k in 130usize..400, seed in any::<u64>()) {
            let max = k - 2 * hash.output_len() - 2;
            let msg = &msg[..msg.len().min(max)];
            let em = oaep_encode(hash, mgf, &label, msg, k, &mut rng(seed)).unwrap();
            prop_assert_eq!(em.len(), k);
            let back = oaep_decrypt(hash, mgf, &label, &em, k).unwrap();
            prop_assert_eq!(&back[..], msg);
        }

        #[test]
        fn decoder_never_panics(hash in hash_alg(), mgf in hash_alg(),
                                em in proptest::collection::vec(any::<u8>(), 0..300),
                                k in 0usize..300) {
            if let Ok(msg) = oaep_decrypt(hash, mgf, b"", &em, k) {
                prop_assert!(msg.len() <= k - 2 * hash.output_len() - 2);
            }
        }

        /// Random blocks with a zero first byte essentially never decode (the label hash would
        /// have to match by chance).
        #[test]
        fn random_blocks_fail(rest in proptest::collection::vec(any::<u8>(), 127)) {
            let em = [&[0u8][..], &rest].concat();
            prop_assert_eq!(
                oaep_decrypt(HashAlg::Sha1, HashAlg::Sha1, b"", &em, 128).map(|_| ()),
                Err(PaddingError::Decryption)
            );
        }
    }
}
