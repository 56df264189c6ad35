//! The hash functions the paddings use: SHA-1 and the SHA-2 family, one-shot and incremental,
//! with the DER `DigestInfo` prefixes of RFC 8017 §9.2, note 1.

use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// A hash function that PKCS#1 v1.5, PSS, OAEP and MGF1 can use.
///
/// SHA-1 is here for interoperability (OAEP and MGF1 with SHA-1 are still the defaults of many
/// applications); whether to accept it for new signatures is the caller's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-1 (FIPS 180-4), 20-byte output.
    Sha1,
    /// SHA-224 (FIPS 180-4), 28-byte output.
    Sha224,
    /// SHA-256 (FIPS 180-4), 32-byte output.
    Sha256,
    /// SHA-384 (FIPS 180-4), 48-byte output.
    Sha384,
    /// SHA-512 (FIPS 180-4), 64-byte output.
    Sha512,
}

impl HashAlg {
    /// Every supported hash, shortest output first.
    pub const ALL: [HashAlg; 5] = [
        HashAlg::Sha1,
        HashAlg::Sha224,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// Length of the digest in bytes (`hLen` in RFC 8017).
    pub const fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha224 => 28,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Hashes `data` in one call.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finalize()
    }

    /// A fresh incremental hasher for this function.
    pub fn hasher(self) -> Hasher {
        let state = match self {
            HashAlg::Sha1 => State::Sha1(Sha1::new()),
            HashAlg::Sha224 => State::Sha224(Sha224::new()),
            HashAlg::Sha256 => State::Sha256(Sha256::new()),
            HashAlg::Sha384 => State::Sha384(Sha384::new()),
            HashAlg::Sha512 => State::Sha512(Sha512::new()),
        };
        Hasher { state }
    }

    /// The DER encoding of `DigestInfo` up to, and including, the header of the `digest`
    /// OCTET STRING (RFC 8017 §9.2, note 1). Appending the `output_len()`-byte digest gives
    /// the complete `DigestInfo` that EMSA-PKCS1-v1_5 pads.
    pub const fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            HashAlg::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            HashAlg::Sha224 => &[
                0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x04, 0x05, 0x00, 0x04, 0x1c,
            ],
            HashAlg::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            HashAlg::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            HashAlg::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// An incremental hash computation, for callers that receive their input in parts
/// (`C_SignUpdate`), created by [`HashAlg::hasher`].
#[derive(Clone)]
pub struct Hasher {
    state: State,
}

#[derive(Clone)]
enum State {
    Sha1(Sha1),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    /// The hash function this hasher computes.
    pub fn alg(&self) -> HashAlg {
        match self.state {
            State::Sha1(_) => HashAlg::Sha1,
            State::Sha224(_) => HashAlg::Sha224,
            State::Sha256(_) => HashAlg::Sha256,
            State::Sha384(_) => HashAlg::Sha384,
            State::Sha512(_) => HashAlg::Sha512,
        }
    }

    /// Feeds more input.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Sha1(h) => h.update(data),
            State::Sha224(h) => h.update(data),
            State::Sha256(h) => h.update(data),
            State::Sha384(h) => h.update(data),
            State::Sha512(h) => h.update(data),
        }
    }

    /// Finishes the computation and returns the `alg().output_len()`-byte digest.
    pub fn finalize(self) -> Vec<u8> {
        match self.state {
            State::Sha1(h) => h.finalize().to_vec(),
            State::Sha224(h) => h.finalize().to_vec(),
            State::Sha256(h) => h.finalize().to_vec(),
            State::Sha384(h) => h.finalize().to_vec(),
            State::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The running state is derived from the input, which may be secret: print the name only.
        f.debug_struct("Hasher")
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// FIPS 180-4 example "abc" for each function.
    #[test]
    fn known_answers_abc() {
        let cases = [
            (HashAlg::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                HashAlg::Sha224,
                "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
            ),
            (
                HashAlg::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                HashAlg::Sha384,
                "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
                 8086072ba1e7cc2358baeca134c825a7",
            ),
            (
                HashAlg::Sha512,
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
        ];
        for (alg, want) in cases {
            let got = alg.digest(b"abc");
            assert_eq!(got, unhex(want), "{alg:?}");
            assert_eq!(got.len(), alg.output_len(), "{alg:?}");
        }
    }

    /// Each prefix is a well-formed DER header: SEQUENCE whose length covers the rest of the
    /// prefix plus the digest, ending in an OCTET STRING header of the digest length.
    #[test]
    fn digest_info_prefixes_are_consistent() {
        for alg in HashAlg::ALL {
            let p = alg.digest_info_prefix();
            assert_eq!(p[0], 0x30);
            assert_eq!(usize::from(p[1]), p.len() - 2 + alg.output_len(), "{alg:?}");
            assert_eq!(p[p.len() - 2], 0x04);
            assert_eq!(usize::from(p[p.len() - 1]), alg.output_len(), "{alg:?}");
        }
    }

    /// DER of an OBJECT IDENTIFIER's content octets, from its dotted form.
    fn oid_der(dotted: &str) -> Vec<u8> {
        let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().unwrap()).collect();
        let mut out = vec![u8::try_from(arcs[0] * 40 + arcs[1]).unwrap()];
        for &arc in &arcs[2..] {
            let mut groups = vec![(arc & 0x7f) as u8];
            let mut rest = arc >> 7;
            while rest > 0 {
                groups.push((rest & 0x7f) as u8 | 0x80);
                rest >>= 7;
            }
            out.extend(groups.iter().rev());
        }
        out
    }

    /// Each prefix is `SEQUENCE { SEQUENCE { OID, NULL }, OCTET STRING }` with the hash's OID
    /// (RFC 8017 appendix B.1, NIST CSOR), rebuilt here from the dotted OIDs.
    #[test]
    fn digest_info_prefixes_match_oids() {
        let oids = [
            (HashAlg::Sha1, "1.3.14.3.2.26"),
            (HashAlg::Sha224, "2.16.840.1.101.3.4.2.4"),
            (HashAlg::Sha256, "2.16.840.1.101.3.4.2.1"),
            (HashAlg::Sha384, "2.16.840.1.101.3.4.2.2"),
            (HashAlg::Sha512, "2.16.840.1.101.3.4.2.3"),
        ];
        for (alg, dotted) in oids {
            let oid = oid_der(dotted);
            let alg_id_len = 2 + oid.len() + 2;
            let mut want = vec![0x30, (2 + alg_id_len + 2 + alg.output_len()) as u8];
            want.extend([0x30, alg_id_len as u8, 0x06, oid.len() as u8]);
            want.extend(&oid);
            want.extend([0x05, 0x00, 0x04, alg.output_len() as u8]);
            assert_eq!(alg.digest_info_prefix(), &want[..], "{alg:?}");
        }
    }

    #[test]
    fn hasher_reports_its_alg() {
        for alg in HashAlg::ALL {
            assert_eq!(alg.hasher().alg(), alg);
            assert!(format!("{:?}", alg.hasher()).contains(&format!("{alg:?}")));
        }
    }

    proptest! {
        /// Feeding the input in two parts gives the one-shot digest.
        #[test]
        fn incremental_matches_one_shot(data in proptest::collection::vec(any::<u8>(), 0..300),
                                        cut in any::<prop::sample::Index>()) {
            let cut = cut.index(data.len() + 1);
            for alg in HashAlg::ALL {
                let mut h = alg.hasher();
                h.update(&data[..cut]);
                h.update(&data[cut..]);
                prop_assert_eq!(h.finalize(), alg.digest(&data));
            }
        }
    }
}
