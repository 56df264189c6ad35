//! RSA keys as the dealer reads them: the public key `(N, e)` and the private exponent `d`.
//!
//! Reads PKCS#1 (`RSA PRIVATE KEY`) and PKCS#8 (`PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`), PEM
//! or DER. Only `N`, `e` and `d` are kept; the CRT values are never copied out of the
//! zeroizing DER buffer. Checking that the three fit together is left to the dealer's trial
//! operation ([`crate::dealer::split_key`]), which exercises the shares it made.

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd, U2048, U3072, U4096, Uint};
use num_bigint::BigUint;
use num_traits::{One, Zero};
use pkcs1::der::{Decode, pem};
use zeroize::Zeroizing;

use crate::{Error, SecretInt};

/// Smallest modulus accepted, in bits. Smaller keys are only for protocol tests.
pub const MIN_MODULUS_BITS: usize = 512;
/// Largest modulus accepted, in bits.
pub const MAX_MODULUS_BITS: usize = 8192;

const RSA_ENCRYPTION_OID: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// `x^(−1) mod n` (constant time in `x`) on `L`-limb integers; `x` and `n` must have `L`
/// limbs.
fn invert_fixed<const L: usize>(x: &BoxedUint, n: &Odd<BoxedUint>) -> Option<BoxedUint> {
    let fixed = |v: &BoxedUint| -> Option<Uint<L>> {
        Some(Uint::from_words(v.as_words().try_into().ok()?))
    };
    let n = Odd::new(fixed(n.as_ref())?).into_option()?;
    let inverse = fixed(x)?.invert_odd_mod(&n).into_option()?;
    Some(BoxedUint::from_words(inverse.to_words()))
}

/// `Π x_j^(e_j)` for public exponents, by square-and-multiply over the bits of all the
/// exponents at once (one chain of squarings, Straus): variable time in the exponents only.
/// Montgomery multiplication is constant time, so a secret base (a blinding factor) is
/// safe. For the short or sparse exponents here (`e`, Lagrange coefficients) it costs about
/// a third of a fixed-window exponentiation per term, which spends 15 multiplications on
/// its table and scans the table in constant time at every window.
pub(crate) fn pow_public(
    terms: &[(&BoxedMontyForm, &BigUint)],
    params: &BoxedMontyParams,
) -> BoxedMontyForm {
    let bits = terms.iter().map(|(_, e)| e.bits()).max().unwrap_or(0);
    let mut acc: Option<BoxedMontyForm> = None;
    for i in (0..bits).rev() {
        if let Some(a) = acc.as_mut() {
            *a = a.square();
        }
        for (x, e) in terms {
            if e.bit(i) {
                acc = Some(match acc {
                    Some(a) => a.mul(x),
                    None => (*x).clone(),
                });
            }
        }
    }
    acc.unwrap_or_else(|| BoxedMontyForm::one(params))
}

/// An RSA public key. Everything about it is public, so its arithmetic may be variable time.
///
/// It carries the Montgomery parameters of `N`, computed once, for the arithmetic modulo `N`
/// that the module does per operation (verification, blinding, combine).
#[derive(Clone, Debug)]
pub struct RsaPublicKey {
    n: BigUint,
    e: BigUint,
    monty: BoxedMontyParams,
}

impl PartialEq for RsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.n == other.n && self.e == other.e
    }
}

impl Eq for RsaPublicKey {}

impl RsaPublicKey {
    /// Checks and builds a public key: `N` odd and of a supported size, `1 < e < N`, `e` odd.
    pub fn new(n: BigUint, e: BigUint) -> Result<Self, Error> {
        let bits = usize::try_from(n.bits()).unwrap_or(usize::MAX);
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits) {
            return Err(Error::ModulusSize { bits });
        }
        if !n.bit(0) {
            return Err(Error::KeyInvalid("the modulus is even"));
        }
        if e <= BigUint::one() || e >= n || !e.bit(0) {
            return Err(Error::KeyInvalid(
                "the public exponent must be odd and in (1, N)",
            ));
        }
        let precision = u32::try_from(bits).unwrap_or(u32::MAX);
        let odd = BoxedUint::from_be_slice(&n.to_bytes_be(), precision)
            .ok()
            .and_then(|m| m.to_odd().into_option())
            .ok_or(Error::KeyInvalid("the modulus is even"))?;
        let monty = BoxedMontyParams::new_vartime(odd);
        Ok(Self { n, e, monty })
    }

    /// Builds a public key from big-endian encodings of `N` and `e`.
    pub fn from_be_bytes(n: &[u8], e: &[u8]) -> Result<Self, Error> {
        Self::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
    }

    /// The modulus `N`.
    pub fn n(&self) -> &BigUint {
        &self.n
    }

    /// The public exponent `e`.
    pub fn e(&self) -> &BigUint {
        &self.e
    }

    /// Bit length of `N`.
    pub fn bits(&self) -> usize {
        usize::try_from(self.n.bits()).unwrap_or(usize::MAX)
    }

    /// Byte length of `N`: the length of every signature, ciphertext and encoded message.
    pub fn size(&self) -> usize {
        self.bits().div_ceil(8)
    }

    /// `N` big-endian, without leading zeros.
    pub fn n_be(&self) -> Vec<u8> {
        self.n.to_bytes_be()
    }

    /// `e` big-endian, without leading zeros.
    pub fn e_be(&self) -> Vec<u8> {
        self.e.to_bytes_be()
    }

    /// `x^e mod N`: verification and encryption. Public inputs only.
    pub fn raw_public_vartime(&self, x: &BigUint) -> Result<BigUint, Error> {
        let x = self.to_monty(x, "input to the public operation")?;
        Ok(self.retrieve(&self.pow_e(&x)))
    }

    /// `x` in Montgomery form modulo `N`; `x` must be below `N`.
    pub(crate) fn to_monty(
        &self,
        x: &BigUint,
        what: &'static str,
    ) -> Result<BoxedMontyForm, Error> {
        if x >= &self.n {
            return Err(Error::OutOfRange(what));
        }
        let x = BoxedUint::from_be_slice(&x.to_bytes_be(), self.monty.bits_precision())
            .map_err(|_| Error::OutOfRange(what))?;
        Ok(BoxedMontyForm::new(x, &self.monty))
    }

    /// Back from Montgomery form.
    pub(crate) fn retrieve(&self, x: &BoxedMontyForm) -> BigUint {
        BigUint::from_bytes_be(&x.retrieve().to_be_bytes())
    }

    /// The Montgomery parameters of `N`.
    pub(crate) fn monty(&self) -> &BoxedMontyParams {
        &self.monty
    }

    /// `x^(−1)` in Montgomery form, constant time in `x`; `None` if `x` shares a factor
    /// with `N`. For 2048-, 3072- and 4096-bit moduli it runs on fixed-size integers, which
    /// crypto-bigint inverts about a third faster than boxed ones.
    pub(crate) fn invert(&self, x: &BoxedMontyForm) -> Option<BoxedMontyForm> {
        let n = self.monty.modulus();
        let inverse = match self.monty.bits_precision() {
            2048 => invert_fixed::<{ U2048::LIMBS }>(&x.retrieve(), n),
            3072 => invert_fixed::<{ U3072::LIMBS }>(&x.retrieve(), n),
            4096 => invert_fixed::<{ U4096::LIMBS }>(&x.retrieve(), n),
            _ => return x.invert().into_option(),
        }?;
        Some(BoxedMontyForm::new(inverse, &self.monty))
    }

    /// `x^e` in Montgomery form.
    pub(crate) fn pow_e(&self, x: &BoxedMontyForm) -> BoxedMontyForm {
        pow_public(&[(x, &self.e)], &self.monty)
    }

    /// A uniformly random integer in `[1, N)`: a trial input, a blinding factor.
    pub fn random_residue<R: rand::CryptoRng + ?Sized>(&self, rng: &mut R) -> BigUint {
        crate::dealer::random_below_vartime(&self.n, rng)
    }

    /// Reads a big-endian integer of at most `size()` bytes that must be below `N`.
    pub fn integer_from_be(&self, bytes: &[u8], what: &'static str) -> Result<BigUint, Error> {
        if bytes.len() > self.size() {
            return Err(Error::OutOfRange(what));
        }
        let x = BigUint::from_bytes_be(bytes);
        if x >= self.n {
            return Err(Error::OutOfRange(what));
        }
        Ok(x)
    }

    /// Encodes an integer below `N` as exactly `size()` big-endian bytes.
    pub fn integer_to_be(&self, x: &BigUint) -> Vec<u8> {
        let be = x.to_bytes_be();
        let mut out = vec![0u8; self.size().saturating_sub(be.len())];
        out.extend_from_slice(&be);
        out
    }
}

/// An RSA private key as the dealer needs it: the public key and `d`.
///
/// Exists only in the dealer, for as long as it takes to split the key. `d` is zeroized on
/// drop and `Debug` prints the public part only.
#[derive(Clone)]
pub struct RsaPrivateKey {
    public: RsaPublicKey,
    d: SecretInt,
}

impl core::fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RsaPrivateKey")
            .field("bits", &self.public.bits())
            .field("e", &self.public.e)
            .field("d", &self.d)
            .finish()
    }
}

impl RsaPrivateKey {
    /// Builds a key from `N`, `e` and `d` (big-endian). `d` must be below `N`.
    pub fn from_components(n: &[u8], e: &[u8], d: &[u8]) -> Result<Self, Error> {
        let public = RsaPublicKey::from_be_bytes(n, e)?;
        let d = SecretInt::from_be_slice_padded(d, public.size()).ok_or(Error::KeyInvalid(
            "the private exponent is longer than the modulus",
        ))?;
        if d.as_be_bytes().iter().all(|b| *b == 0) {
            return Err(Error::KeyInvalid("the private exponent is zero"));
        }
        Ok(Self { public, d })
    }

    /// Reads a key file: PEM or DER, PKCS#1 or PKCS#8; an encrypted PKCS#8 key needs
    /// `passphrase`.
    pub fn from_bytes(data: &[u8], passphrase: Option<&[u8]>) -> Result<Self, Error> {
        if looks_like_pem(data) {
            let (label, der) =
                pem::decode_vec(data).map_err(|e| Error::KeyFormat(format!("PEM: {e}")))?;
            let der = Zeroizing::new(der);
            match label {
                "RSA PRIVATE KEY" => Self::from_pkcs1_der(&der),
                "PRIVATE KEY" => Self::from_pkcs8_der(&der),
                "ENCRYPTED PRIVATE KEY" => Self::from_encrypted_pkcs8_der(&der, passphrase),
                other => Err(Error::KeyFormat(format!(
                    "PEM label {other:?} is not an RSA private key"
                ))),
            }
        } else {
            Self::from_der(data, passphrase)
        }
    }

    /// Whether a key file is an encrypted PKCS#8 key (so a passphrase must be asked for).
    pub fn is_encrypted(data: &[u8]) -> bool {
        if looks_like_pem(data) {
            return matches!(pem::decode_label(data), Ok("ENCRYPTED PRIVATE KEY"));
        }
        pkcs8::EncryptedPrivateKeyInfoRef::from_der(data).is_ok()
    }

    /// Reads DER: PKCS#1, PKCS#8, or encrypted PKCS#8 with `passphrase`.
    pub fn from_der(der: &[u8], passphrase: Option<&[u8]>) -> Result<Self, Error> {
        if let Ok(key) = Self::from_pkcs1_der(der) {
            return Ok(key);
        }
        if pkcs8::PrivateKeyInfoRef::from_der(der).is_ok() {
            return Self::from_pkcs8_der(der);
        }
        if pkcs8::EncryptedPrivateKeyInfoRef::from_der(der).is_ok() {
            return Self::from_encrypted_pkcs8_der(der, passphrase);
        }
        Err(Error::KeyFormat(
            "DER is neither PKCS#1 RSAPrivateKey nor PKCS#8 PrivateKeyInfo".into(),
        ))
    }

    /// Reads a PKCS#1 `RSAPrivateKey` in DER.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, Error> {
        let key = pkcs1::RsaPrivateKeyRef::from_der(der)
            .map_err(|e| Error::KeyFormat(format!("PKCS#1: {e}")))?;
        Self::from_components(
            key.modulus.as_bytes(),
            key.public_exponent.as_bytes(),
            key.private_exponent.as_bytes(),
        )
    }

    /// Reads a PKCS#8 `PrivateKeyInfo` holding an RSA key, in DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let info = pkcs8::PrivateKeyInfoRef::from_der(der)
            .map_err(|e| Error::KeyFormat(format!("PKCS#8: {e}")))?;
        if info.algorithm.oid != RSA_ENCRYPTION_OID {
            return Err(Error::KeyFormat(format!(
                "PKCS#8 key algorithm {} is not rsaEncryption",
                info.algorithm.oid
            )));
        }
        Self::from_pkcs1_der(info.private_key.as_bytes())
    }

    /// Reads an encrypted PKCS#8 key in DER with its passphrase.
    pub fn from_encrypted_pkcs8_der(der: &[u8], passphrase: Option<&[u8]>) -> Result<Self, Error> {
        let passphrase = passphrase.ok_or_else(|| {
            Error::KeyFormat("the key is encrypted and no passphrase was given".into())
        })?;
        let info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(der)
            .map_err(|e| Error::KeyFormat(format!("encrypted PKCS#8: {e}")))?;
        let plain = info.decrypt(passphrase).map_err(|_| {
            Error::KeyFormat(
                "cannot decrypt the key: wrong passphrase or unsupported cipher".into(),
            )
        })?;
        Self::from_pkcs8_der(plain.as_bytes())
    }

    /// The public half.
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    /// The private exponent, padded to the modulus length.
    pub(crate) fn d(&self) -> &SecretInt {
        &self.d
    }
}

fn looks_like_pem(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    data.get(start..)
        .is_some_and(|rest| rest.starts_with(b"-----BEGIN "))
}

/// Whether a public value is prime (Miller–Rabin with fixed bases: deterministic below
/// 3.3·10^24, and an error below 4^-24 above). For `e`, which is public; variable time.
pub fn is_prime_vartime(x: &BigUint) -> bool {
    const BASES: [u32; 24] = [
        2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
    ];
    let two = BigUint::from(2u8);
    if x < &two {
        return false;
    }
    for p in BASES {
        let p = BigUint::from(p);
        if x == &p {
            return true;
        }
        if (x % &p).is_zero() {
            return false;
        }
    }
    let x_minus_1 = x - 1u8;
    let s = x_minus_1.trailing_zeros().unwrap_or(0);
    let d = &x_minus_1 >> s;
    'bases: for a in BASES {
        let mut y = BigUint::from(a).modpow(&d, x);
        if y.is_one() || y == x_minus_1 {
            continue;
        }
        for _ in 1..s {
            y = y.modpow(&two, x);
            if y == x_minus_1 {
                continue 'bases;
            }
        }
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primality_of_small_and_known_values() {
        let primes = [
            2u64,
            3,
            17,
            257,
            65537,
            1_000_000_007,
            2_305_843_009_213_693_951,
        ];
        for p in primes {
            assert!(is_prime_vartime(&BigUint::from(p)), "{p} is prime");
        }
        let composites = [
            0u64,
            1,
            4,
            65535,
            561,
            3_215_031_751,
            2_305_843_009_213_693_953,
        ];
        for c in composites {
            assert!(!is_prime_vartime(&BigUint::from(c)), "{c} is composite");
        }
    }

    #[test]
    fn public_key_rejects_bad_values() {
        let n = (BigUint::one() << 1023u32) + 1u8;
        assert!(RsaPublicKey::new(n.clone(), BigUint::from(65537u32)).is_ok());
        assert!(matches!(
            RsaPublicKey::new(n.clone() + 1u8, BigUint::from(65537u32)),
            Err(Error::KeyInvalid(_))
        ));
        assert!(matches!(
            RsaPublicKey::new(n.clone(), BigUint::from(1u32)),
            Err(Error::KeyInvalid(_))
        ));
        assert!(matches!(
            RsaPublicKey::new(BigUint::from(65539u32), BigUint::from(3u32)),
            Err(Error::ModulusSize { bits: 17 })
        ));
    }

    /// `N = 3·m` for an odd `m` of `bits − 2` bits or so, so that 3 has no inverse.
    fn modulus_with_factor_3(bits: u32) -> BigUint {
        let m = (BigUint::one() << (bits - 2)) + 0x1234_5677u32;
        BigUint::from(3u8) * m
    }

    #[test]
    fn inversion_on_fixed_and_boxed_sizes() {
        // Moduli of 32, 48 and 64 limbs (2047 bits rounds up to 32) take the fixed-size path,
        // the others the boxed one.
        for bits in [1024u32, 1536, 2047, 2048, 3072, 4096, 4160] {
            let n = modulus_with_factor_3(bits);
            let key = RsaPublicKey::new(n.clone(), BigUint::from(65537u32)).unwrap();
            for x in [
                BigUint::from(2u8),
                &n - 1u8,
                (BigUint::one() << (bits - 7)) + 12_345u32,
            ] {
                let xm = key.to_monty(&x, "x").unwrap();
                let inverse = key.retrieve(&key.invert(&xm).unwrap());
                assert_eq!((&x * &inverse) % &n, BigUint::one(), "{bits} bits");
            }
            let three = key.to_monty(&BigUint::from(3u8), "3").unwrap();
            assert!(key.invert(&three).is_none(), "{bits} bits");
        }
    }

    #[test]
    fn public_powers_match_plain_arithmetic() {
        let n = modulus_with_factor_3(2048);
        let key = RsaPublicKey::new(n.clone(), BigUint::from(65537u32)).unwrap();
        let bases = [
            BigUint::from(7u8),
            &n - 2u8,
            (BigUint::one() << 2000u32) + 99u8,
        ];
        let exps = [
            BigUint::from(0u8),
            BigUint::from(1u8),
            BigUint::from(65537u32),
            BigUint::from(0xdead_beef_u64),
        ];
        let monty: Vec<_> = bases
            .iter()
            .map(|b| key.to_monty(b, "b").unwrap())
            .collect();
        let terms: Vec<_> = monty.iter().zip(&exps).collect();
        let expected = bases
            .iter()
            .zip(&exps)
            .fold(BigUint::one(), |acc, (b, e)| acc * b.modpow(e, &n) % &n);
        assert_eq!(key.retrieve(&pow_public(&terms, key.monty())), expected);
        assert_eq!(key.retrieve(&pow_public(&[], key.monty())), BigUint::one());
        assert_eq!(
            key.retrieve(&key.pow_e(&monty[1])),
            bases[1].modpow(&BigUint::from(65537u32), &n)
        );
    }

    #[test]
    fn garbage_is_a_format_error() {
        for data in [
            &b""[..],
            b"hello",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(matches!(
                RsaPrivateKey::from_bytes(data, None),
                Err(Error::KeyFormat(_))
            ));
        }
    }

    #[test]
    fn integer_encoding_is_fixed_length() {
        let n = (BigUint::one() << 1023u32) + 1u8;
        let key = RsaPublicKey::new(n, BigUint::from(65537u32)).unwrap();
        assert_eq!(key.size(), 128);
        let be = key.integer_to_be(&BigUint::from(5u8));
        assert_eq!(be.len(), 128);
        assert_eq!(key.integer_from_be(&be, "x").unwrap(), BigUint::from(5u8));
        assert!(key.integer_from_be(&key.n_be(), "x").is_err());
        assert!(key.integer_from_be(&[1u8; 129], "x").is_err());
    }
}
