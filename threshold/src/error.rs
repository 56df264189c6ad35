//! The one error type of the threshold crate.

use crate::padding::PaddingError;

/// Everything that can go wrong in threshold-RSA math, key parsing and padding.
///
/// Messages name what was wrong with the input; they never contain secret values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key file could not be parsed as an RSA private key.
    #[error("not an RSA private key in PKCS#1 or PKCS#8, PEM or DER: {0}")]
    KeyFormat(String),
    /// The key parsed but its values are not a consistent RSA key.
    #[error("inconsistent RSA key: {0}")]
    KeyInvalid(&'static str),
    /// The modulus size is outside what ittc supports.
    #[error("modulus of {bits} bits is not supported (1024 to 8192 bits)")]
    ModulusSize {
        /// Bit length of the offered modulus.
        bits: usize,
    },
    /// The public exponent cannot be used for threshold RSA with this many appliances.
    #[error("public exponent {e} must be a prime larger than the number of appliances ({n})")]
    PublicExponent {
        /// The offered exponent (decimal), or a note that it is too large to print.
        e: String,
        /// Number of appliances.
        n: usize,
    },
    /// Threshold parameters outside 2 ≤ k ≤ n ≤ 16.
    #[error("threshold {k}-of-{n} is not supported: need 2 <= k <= n <= 16")]
    Threshold {
        /// Threshold.
        k: usize,
        /// Number of appliances.
        n: usize,
    },
    /// An appliance index outside 1..=n, or the same index twice.
    #[error("appliance index {index} is invalid or repeated (indices are 1..={n})")]
    Index {
        /// The offending index.
        index: usize,
        /// Number of appliances.
        n: usize,
    },
    /// An integer input (ciphertext, partial, share) is out of range.
    #[error("{0} is out of range")]
    OutOfRange(&'static str),
    /// Fewer than k correct partials among those given: either fewer than k were given, or
    /// no k of them combine into a result that verifies.
    #[error(
        "{received} partials given and no {needed} of them combine into a verifying result: \
         at least {missing} more correct partial(s) needed"
    )]
    NotEnoughGoodPartials {
        /// The threshold k.
        needed: usize,
        /// How many partials were given.
        received: usize,
        /// A lower bound on how many more correct partials would be needed.
        missing: usize,
    },
    /// A combined result failed the public-exponent check.
    #[error("combined result does not verify with the public exponent")]
    Verification,
    /// The exponentiation backend failed (out of memory, library error).
    #[error("exponentiation backend failed: {0}")]
    Backend(String),
    /// A refresh message (a piece or a dealt value) from holder `from` is malformed or out of
    /// range, or the values received do not add up: the refresh must be abandoned.
    #[error("refresh: holder {from}: {reason}")]
    RefreshMessage {
        /// The holder whose value was wrong (this holder itself when the sum is wrong).
        from: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// An error from a padding encoding or decoding.
    #[error(transparent)]
    Padding(#[from] PaddingError),
}
