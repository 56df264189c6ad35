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
//! Keys are refreshable: every holder also keeps an additive share of the private exponent,
//! which [`refresh`] re-splits and re-deals into a new sharing of the same key with shares of
//! the same size. [`keygen`] generates keys without a dealer, in the same form.
//!
//! What this crate does not do: talk to anything or store anything.
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
pub mod refresh;
mod secret;

pub use backend::{Backend, PartialExp, partial_exponent};
pub use blind::Blinding;
pub use combine::{CombineOutcome, Combiner, Partial, combine, combine_robust};
pub use dealer::{KeyShare, SharingParams, split_key};
pub use error::Error;
pub use key::{RsaPrivateKey, RsaPublicKey};
pub use refresh::{
    Bounds, HolderShare, Plan, RecoveryHelper, RefreshParty, Source, recover, refresh_all,
    run_plan, trial_input,
};
pub use secret::SecretInt;
