//! Dealerless key generation (Boneh–Franklin), as one state machine per party.
//!
//! `n ≥ 3` appliances jointly generate an RSA modulus `N = p·q` that none of them can
//! factor and end with k-of-n integer shares of `d` exactly like a dealer's
//! ([`crate::dealer`]): any `k` partials combine with [`crate::combine`](mod@crate::combine).
//! The parties are semi-honest with an honest majority: up to `t = ⌊(n − 1)/2⌋` of them may
//! pool what they saw and still learn nothing about `p`, `q` or `d` beyond what is listed in
//! docs/security.md (`φ mod e`, the rounding error `r < n`, and which candidates failed).
//! A party that deviates from the protocol can make it fail or produce a bad key; it is not
//! detected as such.
//!
//! This module does no I/O. A [`Party`] consumes the messages of one round and produces
//! those of the next; the caller (the appliance's peer protocol, or a test) carries them.
//! In every round every party sends exactly one [`Message`] to every other party, either
//! one message for all ([`Recipient::All`]) or one per recipient ([`Recipient::One`]), and
//! receives exactly one from each other party. All parties move through the same phases in
//! the same rounds: every branch depends on public values only.
//!
//! # Message flow
//!
//! ```text
//! per batch of B candidate pairs (params.batch):
//!  s sieve     i → j   a_i (a unit of Z_M) for the p and q of B candidates, Shamir-shared
//!                      over Z_M (degree t), with a degree-2t sharing of zero [secret]
//!  r reduce    i → j   ⌈log2 n⌉ − 1 rounds (one for n ≤ 4): degree-t resharings of
//!                      the additive shares of pairwise products             [secret]
//!                      (no sieve rounds when the distributed sieve is off)
//!  1 shares    i → j   p_i, q_i of B candidates Shamir-shared over Z_P (degree t) with
//!                      a degree-2t sharing of zero                           [secret]
//!  2 products  i → all (Σp)(Σq) + Σzero at i, per candidate (BGW); everyone interpolates
//!                      each N, trial-divides it
//!  3 fermat    i → all screening value (a Boneh–Franklin value with a square base)
//!                      for each surviving N   (skipped when none survive: the next
//!                      batch starts in this round)
//! for the first N that passes (else the next batch):
//!  4 biprime   i → j   80 Boneh–Franklin values; shares over Z_N of r_i, of
//!                      p_i + q_i (− 1) and of zero for the gcd test; j's additive share
//!                      of φ_i mod e                                           [secret]
//!  5 reveal    i → all z-product share; sum of φ-shares received. Everyone checks all
//!                      rounds and gcd(z, N) = 1 (else the next batch), learns φ mod e
//!  6 exponent  i → j   x^(d_i) mod N; F_i(j) where F_i deals Δ·d_i           [secret]
//! done: everyone finds the rounding error r, sums s_j = Σ F_i(j) + Δ·r, and keeps d_j
//!       (party 1: d_1 + r) as its additive share for refreshes (crate::refresh).
//! ```
//!
//! A successful run therefore takes `(3 + ⌈log2 n⌉)·batches + 3` rounds of messages
//! (`3·batches + 3` without the distributed sieve; fewer when a batch has no survivor).
//! Round trips dominate on a network, so a batch is large (`bits/2` pairs by default; the
//! distributed sieve makes a quarter of the old `2·bits` enough).
//!
//! # Sieving
//!
//! Two sieves. The distributed sieve (`sieving.rs`, docs/security.md "Distributed
//! sieving") makes every candidate `p` and `q` coprime to the product `M` of the odd primes
//! in `(n, `[`KeygenParams::distributed_sieve_bound`]`]` before its `N` is computed: the
//! parties multiply random units of `Z_M` by BGW and turn the product into additive shares,
//! so nobody learns `p mod M`. The public sieve (`candidates.rs`) then trial-divides every
//! revealed `N` by the odd primes below [`KeygenParams::sieve_bound`], which catches the
//! primes up to `n` (they cannot be in `M`) and those between the two bounds, before any
//! exponentiation.
//!
//! # Secrets and timing
//!
//! Between rounds a party keeps its secrets (`p_i`, `q_i`, its own shares, `φ_i mod e`,
//! `d_i`, `F_i(i)`) as [`SecretInt`](crate::SecretInt) or zeroizing buffers, and secret
//! messages zeroize on drop. The arithmetic itself uses num-bigint, which neither zeroizes
//! its temporaries nor runs in constant time: functions that touch secrets here are named
//! `_vartime`. The one exception is the exponentiation of the Boneh–Franklin values, most
//! of a generation's arithmetic: it is constant time in every build, with the fastest
//! backend built (OpenSSL's in the appliance's default build, else GMP's, else
//! crypto-bigint's). The rest is acceptable for this protocol because it runs once per
//! key, on the appliance's own random secrets, with no input an attacker chooses and
//! nothing to repeat; a local attacker able to take fine-grained timing measurements of
//! the appliance during generation is out of scope (docs/security.md). A finished or
//! failed [`Party`] has dropped every secret except the share it returned.

mod bgw;
mod biprimality;
mod candidates;
mod error;
mod exponent;
pub mod message;
mod party;
mod sharing;
mod sieving;

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::One;

pub use self::error::KeygenError;
pub use self::message::{
    Biprime, Body, Exponent, Fermat, Message, Products, Reveal, Shares, SieveShares,
};
pub use self::party::Party;
use crate::key::{MAX_MODULUS_BITS, MIN_MODULUS_BITS, is_prime_vartime};
use crate::{HolderShare, KeyShare, RsaPublicKey, SharingParams};

/// Default number of Boneh–Franklin rounds: error below 2^-80 with the 1/2 bound per round.
pub const DEFAULT_BIPRIMALITY_ROUNDS: u32 = 80;
/// Default public sieve bound up to 2048 bits: trial division of every `N` by the odd
/// primes below 2^17 (those not in the distributed sieve's `M`). A prime `l` rejects a
/// modulus with probability about `2/l` and saves a Boneh–Franklin exponentiation
/// (milliseconds at 2048 bits), while dividing costs every modulus a fixed amount per
/// prime, so large primes cost more than they save. Measured on the same six 2048-bit
/// generations (docs/performance.md): 2^17 and 2^18 were equally fast, 2^16 and 2^19
/// slower, 2^14 (the best bound when the division went word by word) 22% slower.
pub const DEFAULT_SIEVE_BOUND: u32 = 1 << 17;
/// Default public sieve bound above 2048 bits, where an exponentiation costs more against
/// a division: on the same three 3072-bit generations, 2^18 and 2^19 were 5% faster than
/// 2^17.
pub const DEFAULT_SIEVE_BOUND_LARGE: u32 = 1 << 18;

/// The default public sieve bound for moduli of `bits` bits.
pub fn default_sieve_bound(bits: usize) -> u32 {
    if bits > 2048 {
        DEFAULT_SIEVE_BOUND_LARGE
    } else {
        DEFAULT_SIEVE_BOUND
    }
}
/// Default cap on batches before giving up (about 25 times the expected number).
pub const DEFAULT_MAX_BATCHES: u32 = 1000;
/// Bits of the share bound that the distributed sieve's modulus `M` must leave free: `M`
/// has at most `bits/2 − 96` bits, so that every share keeps at least 88 random bits above
/// its residue modulo `4M` (docs/security.md, "Distributed sieving").
pub const SIEVE_MODULUS_MARGIN_BITS: usize = 96;
/// Upper limit on [`KeygenParams::distributed_sieve_bound`].
pub const MAX_DISTRIBUTED_SIEVE_BOUND: u32 = 1 << 16;

/// What to generate and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeygenParams {
    /// Modulus size in bits (even, 512 to 8192; the appliance offers 2048, 3072, 4096).
    pub bits: usize,
    /// Public exponent: a prime larger than `parties` (65537).
    pub e: u64,
    /// Number of parties `n ≥ 3` (honest majority).
    pub parties: usize,
    /// Threshold `k` of the resulting shares, `2 ≤ k ≤ n`.
    pub threshold: usize,
    /// Candidate pairs per batch (one BGW round trip), 1 to 65536.
    pub batch: usize,
    /// Trial division bound on every revealed `N`, 3 to 2^24.
    pub sieve_bound: u32,
    /// Distributed sieve: every candidate `p`, `q` is coprime to the product of the odd
    /// primes `l` with `parties < l ≤` this bound before its `N` is computed. 0 turns the
    /// distributed sieve off; otherwise at most 2^16 and with a product of at most
    /// `bits/2 − 96` bits ([`default_distributed_sieve_bound`] is the largest that fits).
    pub distributed_sieve_bound: u32,
    /// Boneh–Franklin rounds, at least 1, on the first modulus that passes the screening
    /// round every survivor of the sieve goes through.
    pub biprimality_rounds: u32,
    /// Batches tried before giving up.
    pub max_batches: u32,
    /// The holder index of each party (party `i` holds index `holders[i − 1]`),
    /// ascending, in `1..=key_parties`: `1..=parties` unless some holders of the key are
    /// away ([`KeygenParams::with_holders`]).
    pub holders: Vec<usize>,
    /// `n` of the resulting sharing: the parties and the holders away, who get their
    /// shares later by recovery.
    pub key_parties: usize,
}

impl KeygenParams {
    /// Parameters with the default batch size (`bits/2`), sieves, rounds and cap; validated.
    pub fn new(bits: usize, e: u64, parties: usize, threshold: usize) -> Result<Self, KeygenError> {
        let params = Self {
            bits,
            e,
            parties,
            threshold,
            batch: bits / 2,
            sieve_bound: default_sieve_bound(bits),
            distributed_sieve_bound: default_distributed_sieve_bound(bits),
            biprimality_rounds: DEFAULT_BIPRIMALITY_ROUNDS,
            max_batches: DEFAULT_MAX_BATCHES,
            holders: (1..=parties).collect(),
            key_parties: parties,
        };
        params.validate()?;
        Ok(params)
    }

    /// The same generation run by the holders `holders` (ascending) of a `k`-of-
    /// `key_parties` sharing, the others away: the parties are those holders, and each
    /// party's share is that of its holder index.
    ///
    /// # Errors
    ///
    /// [`KeygenError::Params`] for holders that do not fit (fewer than 3, not ascending,
    /// out of `1..=key_parties`, fewer than `k`).
    pub fn with_holders(
        mut self,
        holders: Vec<usize>,
        key_parties: usize,
    ) -> Result<Self, KeygenError> {
        self.parties = holders.len();
        self.holders = holders;
        self.key_parties = key_parties;
        self.validate()?;
        Ok(self)
    }

    /// Checks every field; returns the sharing parameters of the result.
    pub fn validate(&self) -> Result<SharingParams, KeygenError> {
        let sharing = SharingParams::new(self.threshold, self.key_parties)?;
        if self.parties < 3 {
            return Err(KeygenError::Params("at least 3 parties (honest majority)"));
        }
        if self.holders.len() != self.parties
            || !self.holders.windows(2).all(|w| w[0] < w[1])
            || !self
                .holders
                .iter()
                .all(|h| (1..=self.key_parties).contains(h))
        {
            return Err(KeygenError::Params(
                "holders must be one ascending index in 1..=n per party",
            ));
        }
        if self.threshold > self.parties {
            return Err(KeygenError::Params(
                "the parties must be at least the threshold",
            ));
        }
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&self.bits)
            || !self.bits.is_multiple_of(2)
        {
            return Err(KeygenError::Params(
                "modulus size must be even, 512 to 8192 bits",
            ));
        }
        let e = BigUint::from(self.e);
        if self.e <= self.key_parties as u64 || !is_prime_vartime(&e) {
            return Err(KeygenError::Params(
                "e must be a prime larger than the party count",
            ));
        }
        if !(1..=1 << 16).contains(&self.batch) {
            return Err(KeygenError::Params("batch must be 1 to 65536 candidates"));
        }
        if !(3..=1 << 24).contains(&self.sieve_bound) {
            return Err(KeygenError::Params("sieve bound must be 3 to 2^24"));
        }
        if self.biprimality_rounds == 0 || self.max_batches == 0 {
            return Err(KeygenError::Params("rounds and batches must be at least 1"));
        }
        if self.distributed_sieve_bound > MAX_DISTRIBUTED_SIEVE_BOUND
            || sieving::modulus_bits(self.distributed_sieve_bound, self.parties)
                > sieving::modulus_budget(self.bits)
        {
            return Err(KeygenError::Params(
                "distributed sieve bound above 2^16 or its product above bits/2 − 96 bits",
            ));
        }
        Ok(sharing)
    }

    /// `t = ⌊(n − 1)/2⌋`: the degree of the BGW sharings and the number of colluding
    /// parties the generation tolerates.
    pub fn corruption_bound(&self) -> usize {
        (self.parties - 1) / 2
    }

    /// The modulus `P` of the BGW ring: the smallest integer above `2^(bits + 8)` coprime to
    /// `n!`. Every revealed `N` is below `2^(bits + 2)`, so `N mod P = N`; see `bgw.rs` for
    /// why `P` need not be prime.
    pub fn field_modulus(&self) -> BigUint {
        let delta: u64 = (1..=self.parties as u64).product();
        let delta = BigUint::from(delta);
        let mut p = (BigUint::from(1u8) << (self.bits + 8)) + 1u8;
        while !p.gcd(&delta).is_one() {
            p += 2u8;
        }
        p
    }
}

/// The largest distributed sieve bound whose product `M` (odd primes up to it) has at most
/// `bits/2 − 96` bits, counting every odd prime so that it fits for any number of parties.
pub fn default_distributed_sieve_bound(bits: usize) -> u32 {
    sieving::largest_bound(sieving::modulus_budget(bits))
}

/// Who a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// Every other party (the same message to each).
    All,
    /// One party, by index.
    One(usize),
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Its recipient(s).
    pub to: Recipient,
    /// The message.
    pub message: Message,
}

/// What [`Party::step`] produced.
#[derive(Debug)]
pub enum Step {
    /// The messages of the next round: together, exactly one for every other party.
    Send(Vec<Outgoing>),
    /// The protocol finished for this party.
    Done(Box<KeygenOutput>),
}

/// One party's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeygenOutput {
    /// The generated public key `(N, e)`, the same at every party.
    pub public: RsaPublicKey,
    /// `k` of `n`.
    pub sharing: SharingParams,
    /// This party's integer share, to be stored like an imported key's.
    pub share: KeyShare,
    /// The same share with this party's additive share of `d`: what a refresh needs.
    pub holder: HolderShare,
    /// How the run went (public).
    pub stats: KeygenStats,
}

/// Counters of one run, the same at every party. All public.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeygenStats {
    /// Batches started.
    pub batches: u32,
    /// Candidate pairs whose `N` was computed.
    pub candidates: u64,
    /// Of those, moduli of the wrong bit length.
    pub wrong_size: u64,
    /// Of those, moduli with a factor below the sieve bound.
    pub sieved_out: u64,
    /// First Boneh–Franklin rounds run (moduli that survived the sieve).
    pub biprimality_tests: u64,
    /// Moduli that passed the first round but failed a later round or the gcd test.
    pub late_rejections: u64,
    /// Calls to `step`: the rounds of messages this party sent plus the final call that
    /// returned the output.
    pub rounds: u32,
}
