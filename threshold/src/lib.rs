//! Threshold RSA over the integers, with no I/O.
//!
//! An RSA private exponent `d` is split by a dealer into `n` integer shares `s_i = f(i)` of a
//! polynomial whose constant term is `Δ·d` (`Δ = n!`), following Rabin (1998) and
//! Damgård–Thorbek: nothing is reduced modulo a secret, so no party needs `φ(N)`. Any `k`
//! appliances raise a blinded input to their share ([`backend`]); [`combine`](mod@combine) turns any `k`
//! such partials into `c^d mod N`, checks the result with the public exponent and, given more
//! than `k` partials, names the ones that were wrong. [`padding`] holds the encodings that
//! turn a digest or a ciphertext into the input of that raw operation and back.
//!
//! What this crate does not do: talk to anything, store anything, or generate keys
//! without a dealer (that arrives with the key-generation protocol).
//!
//! Secret values (`d`, shares, polynomial coefficients) live in [`SecretInt`], which is
//! zeroized on drop and prints as `[redacted]`. The partial exponentiation is constant time
//! in the share; functions whose name ends in `_vartime` must never see a secret.

pub mod backend;
pub mod blind;
pub mod combine;
pub mod dealer;
mod error;
pub mod key;
pub mod keygen;
pub mod padding;
mod secret;

pub use backend::{Backend, PartialExp};
pub use blind::Blinding;
pub use combine::{CombineOutcome, Combiner, Partial, combine, combine_robust};
pub use dealer::{KeyShare, SharingParams, split_key};
pub use error::Error;
pub use key::{RsaPrivateKey, RsaPublicKey};
pub use secret::SecretInt;
