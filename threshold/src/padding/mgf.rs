//! MGF1, the mask generation function of RFC 8017 §B.2.1, applied in place.

use zeroize::Zeroizing;

use super::HashAlg;

/// XORs `MGF1(seed, out.len())` with `hash` into `out`.
///
/// Applying the mask in place means the mask itself is never held in a buffer of its own; each
/// hash output block is zeroized after use, since for OAEP decoding it is derived from secrets.
/// RFC 8017 limits the mask to 2^32 hash blocks; every caller here asks for less than the
/// modulus length, far below that, so the 32-bit counter never wraps.
pub(crate) fn mgf1_xor(hash: HashAlg, seed: &[u8], out: &mut [u8]) {
    let mut counter: u32 = 0;
    for chunk in out.chunks_mut(hash.output_len()) {
        let mut h = hash.hasher();
        h.update(seed);
        h.update(&counter.to_be_bytes());
        let block = Zeroizing::new(h.finalize());
        for (o, m) in chunk.iter_mut().zip(block.iter()) {
            *o ^= m;
        }
        counter = counter.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask is the concatenation Hash(seed || 0) || Hash(seed || 1) || ..., truncated.
    #[test]
    fn mask_is_counter_mode_hash() {
        for alg in HashAlg::ALL {
            let seed = b"mgf1 seed";
            let len = 2 * alg.output_len() + 5;
            let mut out = vec![0u8; len];
            mgf1_xor(alg, seed, &mut out);
            let mut want = Vec::new();
            for c in 0u32..3 {
                want.extend(alg.digest(&[&seed[..], &c.to_be_bytes()].concat()));
            }
            want.truncate(len);
            assert_eq!(out, want, "{alg:?}");
            // XOR is an involution.
            mgf1_xor(alg, seed, &mut out);
            assert!(out.iter().all(|&b| b == 0));
        }
    }

    /// Known answer: MGF1-SHA-1 of "foo" to 3 bytes, and of "bar" to 5 bytes, from the
    /// Wikipedia / PyCryptodome examples.
    #[test]
    fn known_answer_sha1() {
        let mut out = [0u8; 3];
        mgf1_xor(HashAlg::Sha1, b"foo", &mut out);
        assert_eq!(out, [0x1a, 0xc9, 0x07]);
        let mut out = [0u8; 5];
        mgf1_xor(HashAlg::Sha1, b"bar", &mut out);
        assert_eq!(out, [0xbc, 0x0c, 0x65, 0x5e, 0x01]);
    }
}
