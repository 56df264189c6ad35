//! Shared helpers for integration tests: loading Wycheproof vector files from
//! `vectors/wycheproof/`, hex decoding, and the RSA keys of a test group as plain integers with
//! textbook (non-constant-time) raw operations to check our code against.
//!
//! Use with `mod common;` from a test file. Every helper panics with a message naming the file
//! or field on malformed input: these are test fixtures, not untrusted data.

// Each test binary uses a different subset of these helpers; and as test fixtures they panic
// on bad data (clippy counts helpers outside `#[test]` functions as production code).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ittc_threshold::padding::HashAlg;
use ittc_threshold::{
    HolderShare, KeyShare, RecoveryHelper, RsaPublicKey, SecretInt, SharingParams, recover,
};
use num_bigint::BigUint;
use pkcs8::der::Decode;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Folder that holds the Wycheproof JSON files (and their LICENSE).
pub const WYCHEPROOF_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors/wycheproof/");

/// One Wycheproof vector file. Fields this loader does not model are kept in `fields`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestFile {
    /// File name it was loaded from.
    #[serde(skip)]
    pub name: String,
    /// `algorithm`, e.g. `RSAES-OAEP`.
    pub algorithm: String,
    /// Total number of test cases the file declares.
    pub number_of_tests: usize,
    /// The groups: each shares a key and parameters.
    pub test_groups: Vec<TestGroup>,
    /// Everything else (schema, header, notes).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl TestFile {
    /// All test cases with their group.
    pub fn cases(&self) -> impl Iterator<Item = (&TestGroup, &TestCase)> {
        self.test_groups
            .iter()
            .flat_map(|g| g.tests.iter().map(move |t| (g, t)))
    }
}

/// A group of test cases sharing a key and parameters. Parameters are read by name from
/// `fields` with the accessors below.
#[derive(Debug, Deserialize)]
pub struct TestGroup {
    /// The cases.
    pub tests: Vec<TestCase>,
    /// Key material and parameters (`sha`, `mgfSha`, `sLen`, `privateKeyPkcs8`, ...).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// What Wycheproof expects of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expected {
    /// Must be accepted.
    Valid,
    /// Must be rejected.
    Invalid,
    /// May go either way (weak but not broken parameters, legacy encodings).
    Acceptable,
}

/// One test case. Inputs and outputs are read by name from `fields`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestCase {
    /// Identifier, unique in the file.
    pub tc_id: u64,
    /// Free-text description.
    #[serde(default)]
    pub comment: String,
    /// Flags, explained in the file's `notes`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Expected outcome.
    pub result: Expected,
    /// `msg`, `ct`, `sig`, `label`, ...
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl TestCase {
    /// Hex field `key`, decoded.
    pub fn hex(&self, key: &str) -> Vec<u8> {
        unhex(field_str(&self.fields, key, &self.id()))
    }

    /// Hex field `key` decoded, or empty if the field is absent.
    pub fn hex_or_empty(&self, key: &str) -> Vec<u8> {
        self.fields
            .get(key)
            .map(|_| self.hex(key))
            .unwrap_or_default()
    }

    /// "tcId 12 (comment) [flags]", for assertion messages.
    pub fn id(&self) -> String {
        format!("tcId {} ({}) {:?}", self.tc_id, self.comment, self.flags)
    }
}

impl TestGroup {
    /// String field `key`.
    pub fn str(&self, key: &str) -> &str {
        field_str(&self.fields, key, "group")
    }

    /// Integer field `key` (e.g. `keySize`, `sLen`).
    pub fn usize(&self, key: &str) -> usize {
        self.fields
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or_else(|| panic!("group field {key} missing or not an integer"))
    }

    /// Hex field `key`, decoded.
    pub fn hex(&self, key: &str) -> Vec<u8> {
        unhex(self.str(key))
    }

    /// Hash named by field `key` (`sha`, `mgfSha`).
    pub fn hash(&self, key: &str) -> HashAlg {
        hash_alg(self.str(key))
    }

    /// The group's RSA private key, parsed from its `privateKeyPkcs8` DER.
    pub fn private_key(&self) -> TestPrivateKey {
        TestPrivateKey::from_pkcs8_der(&self.hex("privateKeyPkcs8"))
    }

    /// The group's RSA public key, from its `publicKey` object or, failing that, the modulus
    /// and public exponent of its `privateKey` object.
    pub fn public_key(&self) -> TestPublicKey {
        let obj = self
            .fields
            .get("publicKey")
            .or_else(|| self.fields.get("privateKey"))
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("group has neither publicKey nor privateKey"));
        TestPublicKey {
            n: BigUint::from_bytes_be(&unhex(field_str(obj, "modulus", "key"))),
            e: BigUint::from_bytes_be(&unhex(field_str(obj, "publicExponent", "key"))),
        }
    }
}

fn field_str<'a>(fields: &'a Map<String, Value>, key: &str, ctx: &str) -> &'a str {
    fields
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{ctx}: field {key} missing or not a string"))
}

/// Loads `vectors/wycheproof/<name>` and checks that the declared number of tests is there.
pub fn load(name: &str) -> TestFile {
    let path = format!("{WYCHEPROOF_DIR}{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut file: TestFile =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"));
    file.name = name.to_owned();
    assert_eq!(
        file.cases().count(),
        file.number_of_tests,
        "{name}: numberOfTests does not match the cases present"
    );
    file
}

/// Names of the files in the vector folder that start with `prefix` and end in `_test.json`,
/// sorted.
pub fn files_matching(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(WYCHEPROOF_DIR)
        .unwrap_or_else(|e| panic!("listing {WYCHEPROOF_DIR}: {e}"))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix) && n.ends_with("_test.json"))
        .collect();
    names.sort();
    names
}

/// Decodes a hex string (either case, even length).
pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// The hash Wycheproof names `name` (`SHA-1`, `SHA-256`, ...).
pub fn hash_alg(name: &str) -> HashAlg {
    match name {
        "SHA-1" => HashAlg::Sha1,
        "SHA-224" => HashAlg::Sha224,
        "SHA-256" => HashAlg::Sha256,
        "SHA-384" => HashAlg::Sha384,
        "SHA-512" => HashAlg::Sha512,
        other => panic!("unsupported hash {other}"),
    }
}

/// `x` as exactly `len` big-endian bytes (I2OSP); panics if it does not fit.
pub fn i2osp(x: &BigUint, len: usize) -> Vec<u8> {
    let bytes = x.to_bytes_be();
    let bytes = if bytes == [0] { Vec::new() } else { bytes };
    assert!(
        bytes.len() <= len,
        "integer of {} bytes does not fit in {len}",
        bytes.len()
    );
    let mut out = vec![0u8; len - bytes.len()];
    out.extend_from_slice(&bytes);
    out
}

/// An RSA public key as plain integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPublicKey {
    /// Modulus.
    pub n: BigUint,
    /// Public exponent.
    pub e: BigUint,
}

impl TestPublicKey {
    /// Bit length of the modulus.
    pub fn mod_bits(&self) -> usize {
        usize::try_from(self.n.bits()).unwrap()
    }

    /// Byte length of the modulus, `k`.
    pub fn k(&self) -> usize {
        self.mod_bits().div_ceil(8)
    }

    /// The integer of `input` if it is a valid RSA input: exactly `k` bytes and below `n`.
    pub fn to_int(&self, input: &[u8]) -> Option<BigUint> {
        let x = BigUint::from_bytes_be(input);
        (input.len() == self.k() && x < self.n).then_some(x)
    }

    /// `x^e mod n` as `k` bytes (RSAEP / RSAVP1), or `None` if `x` is not a valid input.
    pub fn public_op(&self, x: &[u8]) -> Option<Vec<u8>> {
        let x = self.to_int(x)?;
        Some(i2osp(&x.modpow(&self.e, &self.n), self.k()))
    }
}

/// An RSA private key as plain integers, with the DER it was parsed from.
#[derive(Debug, Clone)]
pub struct TestPrivateKey {
    /// Public part.
    pub public: TestPublicKey,
    /// Private exponent.
    pub d: BigUint,
    /// First prime.
    pub p: BigUint,
    /// Second prime.
    pub q: BigUint,
    /// `d mod (p − 1)`.
    pub dp: BigUint,
    /// `d mod (q − 1)`.
    pub dq: BigUint,
    /// `q^-1 mod p`.
    pub qinv: BigUint,
    /// The PKCS#8 `PrivateKeyInfo` DER.
    pub pkcs8_der: Vec<u8>,
}

impl TestPrivateKey {
    /// Parses a two-prime RSA key from PKCS#8 `PrivateKeyInfo` DER.
    pub fn from_pkcs8_der(der: &[u8]) -> TestPrivateKey {
        let info = pkcs8::PrivateKeyInfoRef::from_der(der)
            .unwrap_or_else(|e| panic!("PKCS#8 PrivateKeyInfo: {e}"));
        let key = pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes())
            .unwrap_or_else(|e| panic!("PKCS#1 RSAPrivateKey: {e}"));
        let int = |u: pkcs1::UintRef<'_>| BigUint::from_bytes_be(u.as_bytes());
        TestPrivateKey {
            public: TestPublicKey {
                n: int(key.modulus),
                e: int(key.public_exponent),
            },
            d: int(key.private_exponent),
            p: int(key.prime1),
            q: int(key.prime2),
            dp: int(key.exponent1),
            dq: int(key.exponent2),
            qinv: int(key.coefficient),
            pkcs8_der: der.to_vec(),
        }
    }

    /// `x^d mod n` as `k` bytes (RSADP / RSASP1) by the Chinese remainder theorem, or `None`
    /// if `x` is not a valid input. Not constant time: test keys only.
    pub fn private_op(&self, x: &[u8]) -> Option<Vec<u8>> {
        let x = self.public.to_int(x)?;
        let m1 = (&x % &self.p).modpow(&self.dp, &self.p);
        let m2 = (&x % &self.q).modpow(&self.dq, &self.q);
        let h = (&self.qinv * ((&m1 + &self.p - (&m2 % &self.p)) % &self.p)) % &self.p;
        let m = m2 + h * &self.q;
        Some(i2osp(&m, self.public.k()))
    }

    /// `x^d mod n` with the full private exponent, no CRT; a cross-check of [`Self::private_op`].
    pub fn private_op_no_crt(&self, x: &[u8]) -> Option<Vec<u8>> {
        let x = self.public.to_int(x)?;
        Some(i2osp(&x.modpow(&self.d, &self.public.n), self.public.k()))
    }
}

/// Rebuilds holder `target`'s share from `helpers`, as the appliances do: the helpers'
/// masks, then their contributions, then the target's sum.
pub fn rebuild(
    public: &RsaPublicKey,
    params: &SharingParams,
    holders: &[HolderShare],
    helpers: &[usize],
    target: usize,
    rng: &mut (impl rand::CryptoRng + ?Sized),
) -> (KeyShare, Vec<(usize, SecretInt)>) {
    let mut parts: Vec<RecoveryHelper> = helpers
        .iter()
        .map(|&j| {
            let h = holders.iter().find(|h| h.index() == j).unwrap();
            RecoveryHelper::new(public, params, helpers, target, h.share()).unwrap()
        })
        .collect();
    let masks: Vec<(usize, Vec<(usize, SecretInt)>)> = parts
        .iter_mut()
        .zip(helpers)
        .map(|(p, &j)| (j, p.masks(rng).unwrap()))
        .collect();
    let contributions: Vec<(usize, SecretInt)> = parts
        .into_iter()
        .zip(helpers)
        .map(|(p, &j)| {
            let received: Vec<(usize, SecretInt)> = masks
                .iter()
                .filter_map(|(from, out)| {
                    out.iter()
                        .find(|(to, _)| *to == j)
                        .map(|(_, m)| (*from, m.clone()))
                })
                .collect();
            (j, p.contribution(&received).unwrap())
        })
        .collect();
    let share = recover(public, params, helpers, target, &contributions).unwrap();
    (share, contributions)
}
