//! The messages parties exchange, one per round from every party to every other party.
//!
//! Every field is a byte string or an integer, and every type derives bincode 2's
//! `Encode`/`Decode`, so the appliance can carry them in its peer protocol with the wire
//! codec's configuration and size limit. Big integers are big-endian and of fixed length:
//! field elements (`Z_P`, see [`KeygenParams::field_modulus`](super::KeygenParams::field_modulus))
//! in the byte length of `P`, values modulo `N` in the byte length of `N`. Lists of integers
//! are concatenations of such encodings. A receiving party checks every length and range
//! before it uses a value ([`Party::step`](super::Party::step)).
//!
//! Messages that carry a share meant for one recipient ([`SieveShares`], [`Shares`],
//! [`Biprime`], [`Exponent`]) are secret: their `Debug` prints lengths only and they are zeroized on
//! drop. The others hold values every party learns anyway.

use core::fmt;

use bincode::{Decode, Encode};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// One message of one round.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Message {
    /// The round it belongs to: the sender's count of rounds before it, from 0.
    pub round: u32,
    /// What it says.
    pub body: Body,
}

/// The contents of a message, by phase (see the [module docs](super) for the flow).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Body {
    /// Shamir shares of a batch of candidates, to one party.
    Shares(Shares),
    /// BGW product shares of the batch's moduli, to all.
    Products(Products),
    /// First biprimality round for the batch's surviving moduli, to all.
    Fermat(Fermat),
    /// The remaining biprimality rounds and the inputs of the gcd test and of `φ mod e`, to
    /// one party.
    Biprime(Biprime),
    /// The gcd-test product share and the recipient's sum of `φ mod e` shares, to all.
    Reveal(Reveal),
    /// The trial value `x^(d_i)` and a share of `Δ·d_i`, to one party.
    Exponent(Exponent),
    /// Shamir shares over `Z_M` of the distributed sieve of a batch, to one party (last, so
    /// that the other variants keep their encodings).
    Sieve(SieveShares),
}

/// Rounds "sieve" (level 0) and "reduce" (levels 1..): Shamir shares over `Z_M`
/// (degree `t`) for the distributed sieve of batch `batch`, at the recipient's index. The
/// batch's values are its candidates' `p` and `q` in turn (`2·batch_size` of them); `values`
/// holds, per value, one element of `Z_M` per sharing the sender deals at this level (one
/// at level 0: its unit `a_i`; then one per pair of sharings it multiplied), and `zero` at
/// level 0 one element per value of a degree-`2t` sharing of zero (empty at later levels).
/// Elements have the byte length of `M`.
#[derive(Clone, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct SieveShares {
    /// Batch number, from 0.
    #[zeroize(skip)]
    pub batch: u32,
    /// Level: 0 for the round "sieve", then 1, 2, … for the rounds "reduce".
    #[zeroize(skip)]
    pub level: u32,
    /// Shares of the sharings the sender deals at this level, value-major.
    pub values: Vec<u8>,
    /// Shares of zero (level 0 only), one per value.
    pub zero: Vec<u8>,
}

/// Round "shares": for each candidate `c` of batch `batch`, the sender's polynomials for
/// `p_i`, `q_i` (degree `t`) and a sharing of zero (degree `2t`), evaluated at the
/// recipient's index. Each list holds `batch_size` field elements.
#[derive(Clone, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct Shares {
    /// Batch number, from 0.
    #[zeroize(skip)]
    pub batch: u32,
    /// Shares of the sender's `p_i`, one field element per candidate.
    pub p: Vec<u8>,
    /// Shares of the sender's `q_i`.
    pub q: Vec<u8>,
    /// Shares of zero (degree `2t`) that randomize the product polynomial.
    pub zero: Vec<u8>,
}

/// Round "products": the sender's share `(Σp)(Σq) + Σzero` of every candidate's `N`, one
/// field element per candidate. Interpolating all `n` gives `N`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Products {
    /// Batch number.
    pub batch: u32,
    /// One field element per candidate.
    pub values: Vec<u8>,
}

/// Round "fermat": the sender's first Boneh–Franklin value for every modulus of the batch
/// that passed the size check and trial division, in candidate order; one value modulo
/// that `N` (in `N`'s byte length) each.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Fermat {
    /// Batch number.
    pub batch: u32,
    /// The values, concatenated.
    pub values: Vec<u8>,
}

/// Round "biprime", for the first candidate that passed the first round.
#[derive(Clone, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct Biprime {
    /// Batch number.
    #[zeroize(skip)]
    pub batch: u32,
    /// The candidate's position in its batch.
    #[zeroize(skip)]
    pub candidate: u32,
    /// The sender's Boneh–Franklin values for rounds 2.. (public), each modulo `N`.
    #[zeroize(skip)]
    pub values: Vec<u8>,
    /// Share (over `Z_N`, degree `t`) of the sender's random `r_i` for the gcd test.
    pub r: Vec<u8>,
    /// Share of the sender's `p_i + q_i` (party 1: `p_1 + q_1 − 1`).
    pub s: Vec<u8>,
    /// Share of zero (degree `2t`) that randomizes the product.
    pub zero: Vec<u8>,
    /// The recipient's additive share of the sender's `φ_i mod e`.
    pub phi_mod_e: u64,
}

/// Round "reveal": the sender's share of `z = r·(p + q − 1) mod N` and the sum modulo `e`
/// of the `φ_i mod e` shares it received.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Reveal {
    /// Batch number.
    pub batch: u32,
    /// Product share modulo `N`.
    pub z: Vec<u8>,
    /// Sum of received `φ_i mod e` shares, modulo `e`.
    pub phi_mod_e: u64,
}

/// Round "exponent": the sender's trial value `x^(d_i) mod N` (public) and its polynomial
/// `F_i(X) = Δ·d_i + c_1·X + … + c_(k−1)·X^(k−1)` at the recipient's index, a signed integer.
#[derive(Clone, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct Exponent {
    /// `x^(d_i) mod N`, in `N`'s byte length.
    #[zeroize(skip)]
    pub trial: Vec<u8>,
    /// Whether `F_i(j)` is negative.
    pub share_negative: bool,
    /// `|F_i(j)|`, big-endian, at most the byte length of a key share plus one.
    pub share: Vec<u8>,
}

impl fmt::Debug for SieveShares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SieveShares")
            .field("batch", &self.batch)
            .field("level", &self.level)
            .field("bytes", &(self.values.len(), self.zero.len()))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Shares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shares")
            .field("batch", &self.batch)
            .field("bytes", &(self.p.len(), self.q.len(), self.zero.len()))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Biprime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Biprime")
            .field("batch", &self.batch)
            .field("candidate", &self.candidate)
            .field("values", &self.values.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Exponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exponent")
            .field("trial", &self.trial.len())
            .finish_non_exhaustive()
    }
}

impl Body {
    /// The phase's name, for errors and traces.
    pub fn phase(&self) -> &'static str {
        match self {
            Body::Sieve(s) if s.level == 0 => "sieve",
            Body::Sieve(_) => "reduce",
            Body::Shares(_) => "shares",
            Body::Products(_) => "products",
            Body::Fermat(_) => "fermat",
            Body::Biprime(_) => "biprime",
            Body::Reveal(_) => "reveal",
            Body::Exponent(_) => "exponent",
        }
    }
}
