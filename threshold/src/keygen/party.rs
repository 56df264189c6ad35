//! One party's state machine: which phase it is in, what it keeps between rounds, and the
//! checks on every message it receives.

use core::fmt;

use num_bigint::{BigInt, BigUint, Sign};
use num_integer::Integer;
use num_traits::{One, Zero};
use rand::CryptoRng;
use zeroize::Zeroizing;

use super::bgw::{Ring, decode_fixed, encode_fixed};
use super::candidates::{Sieve, draw, offset, share_bound};
use super::message::{
    Biprime, Body, Exponent, Fermat, Message, Products, Reveal, Shares, SieveShares,
};
use super::{
    KeygenError, KeygenOutput, KeygenParams, KeygenStats, Outgoing, Recipient, Step, biprimality,
    exponent, sharing, sieving,
};
use crate::{RsaPublicKey, SecretInt, SharingParams};

/// One appliance's side of a key generation.
///
/// Create it with [`Party::new`], call [`Party::step`] with no messages to get the first
/// round, then once per round with the messages every other party sent in the previous
/// round, until it returns [`Step::Done`]. Any error ends the run for this party (further
/// calls return [`KeygenError::Finished`]) and drops its secrets; the caller tells the other
/// parties to stop.
///
/// Secrets are zeroized on drop; `Debug` shows the index, round and phase only.
pub struct Party {
    index: usize,
    params: KeygenParams,
    sharing: SharingParams,
    field: Ring,
    /// The bound on a candidate share before the offset.
    share_bound: BigUint,
    /// The public offset party 1 adds to its candidate shares.
    offset: BigUint,
    share_len: usize,
    modulus_len: usize,
    sieve: Sieve,
    /// `Z_M` of the distributed sieve, if it is on.
    sieve_ring: Option<Ring>,
    /// Trial division by the primes of `M`, to draw units.
    sieve_units: Sieve,
    round: u32,
    stats: KeygenStats,
    state: State,
}

/// A secret signed integer between rounds.
struct SignedSecret {
    negative: bool,
    magnitude: SecretInt,
}

impl SignedSecret {
    fn new(x: &BigInt) -> Self {
        Self {
            negative: x.sign() == Sign::Minus,
            magnitude: SecretInt::from_be_bytes(x.magnitude().to_bytes_be()),
        }
    }

    fn open(&self) -> BigInt {
        let sign = if self.negative {
            Sign::Minus
        } else {
            Sign::Plus
        };
        BigInt::from_biguint(sign, open(&self.magnitude))
    }
}

/// This party's side of the distributed sieve of one batch, between its rounds.
///
/// The batch has `values = 2·batch` values (candidate `c`'s `p` at `2c`, its `q` at
/// `2c + 1`); every list below is value-major.
struct Sieving {
    number: u32,
    /// The level of the messages just sent: 0 for "sieve", then 1, 2, … for "reduce".
    level: u32,
    /// Sharings dealt per value at this level (by every party alike).
    dealt: usize,
    /// This party's own points of the sharings it dealt at this level, `dealt` per value.
    own: Vec<SecretInt>,
    /// Points of degree-`t` sharings carried to the next level unmultiplied (an odd one
    /// out), `carried` per value.
    carried: Vec<SecretInt>,
    /// Per value, this party's point of its own sharing of zero (level 0), then of the sum
    /// of all of them.
    zero: Vec<SecretInt>,
}

/// This party's candidates of one batch.
struct Batch {
    number: u32,
    p: Vec<SecretInt>,
    q: Vec<SecretInt>,
    /// Own evaluations `(f(i), g(i), z(i))` per candidate, until the products are sent.
    own: Vec<[SecretInt; 3]>,
}

/// The candidate under the full test.
struct Chosen {
    batch: u32,
    candidate: u32,
    n: BigUint,
    ring: Ring,
    p: SecretInt,
    q: SecretInt,
    /// Own Boneh–Franklin values of rounds 2.. (public).
    values: Vec<BigUint>,
    /// Own shares `(r(i), s(i), zero(i))` over `Z_N`.
    own: [SecretInt; 3],
    own_phi: Zeroizing<u64>,
}

enum State {
    Start,
    Sieve(Sieving),
    Shares(Batch),
    Products(Batch, Vec<BigUint>),
    Fermat(Batch, Vec<(usize, BigUint)>, Vec<BigUint>),
    Biprime(Box<Chosen>),
    Reveal(Box<Chosen>, BigUint, u64),
    Exponent {
        public: RsaPublicKey,
        x: BigUint,
        own_trial: BigUint,
        own_value: SignedSecret,
        /// `d_i`: with the rounding error (party 1), this party's additive share.
        d_i: SignedSecret,
    },
    Finished,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Start => "start",
            State::Sieve(..) => "sieve",
            State::Shares(..) => "shares",
            State::Products(..) => "products",
            State::Fermat(..) => "fermat",
            State::Biprime(..) => "biprime",
            State::Reveal(..) => "reveal",
            State::Exponent { .. } => "exponent",
            State::Finished => "finished",
        }
    }
}

impl fmt::Debug for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Party")
            .field("index", &self.index)
            .field("round", &self.round)
            .field("phase", &self.state.name())
            .finish_non_exhaustive()
    }
}

fn open(s: &SecretInt) -> BigUint {
    BigUint::from_bytes_be(s.as_be_bytes())
}

fn seal(x: &BigUint, len: usize) -> Result<SecretInt, KeygenError> {
    let be = Zeroizing::new(x.to_bytes_be());
    SecretInt::from_be_slice_padded(&be, len)
        .ok_or(KeygenError::Inconsistent("a secret longer than its bound"))
}

impl Party {
    /// Party `index` (1..=n) of a generation with `params`.
    pub fn new(index: usize, params: &KeygenParams) -> Result<Self, KeygenError> {
        let sharing = params.validate()?;
        if index == 0 || index > params.parties {
            return Err(KeygenError::UnknownParty {
                from: index,
                n: params.parties,
            });
        }
        let field = Ring::new(params.field_modulus(), params.parties)?;
        let sieve_modulus = sieving::modulus_for(params);
        let step = sieve_modulus
            .as_ref()
            .map_or_else(|| BigUint::from(4u8), |m| m << 2u8);
        let offset = offset(params.bits, &step);
        let share_bound = share_bound(params.bits, params.parties, &offset);
        let sieve_ring = sieve_modulus
            .map(|m| Ring::new(m, params.parties))
            .transpose()?;
        let sieved = sieving::primes(params.distributed_sieve_bound, params.parties);
        // Party 1's shares, with the offset, are below 2^(bits/2).
        let share_len = (params.bits / 2).div_ceil(8);
        Ok(Self {
            index,
            params: params.clone(),
            sharing,
            field,
            share_bound,
            offset,
            share_len,
            modulus_len: params.bits.div_ceil(8),
            sieve: Sieve::new_except(params.sieve_bound, &sieved, params.bits)?,
            sieve_units: Sieve::from_primes(&sieved, params.bits / 2),
            sieve_ring,
            round: 0,
            stats: KeygenStats::default(),
            state: State::Start,
        })
    }

    /// This party's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The counters so far.
    pub fn stats(&self) -> KeygenStats {
        self.stats
    }

    /// A candidate share to keep: with the public offset for party 1.
    fn seal_share(&self, share: BigUint) -> Result<SecretInt, KeygenError> {
        let share = if self.index == 1 {
            share + &self.offset
        } else {
            share
        };
        seal(&share, self.share_len)
    }

    /// Completes a round: `incoming` holds `(sender, message)` for the previous round, one
    /// from every other party (none for the first call). Returns this party's messages for
    /// the next round, or its result.
    ///
    /// Every message is checked (sender, round, phase, batch, lengths, ranges) before use;
    /// a bad one is an error, and any error ends the run for this party.
    pub fn step<R: CryptoRng + ?Sized>(
        &mut self,
        incoming: &[(usize, Message)],
        rng: &mut R,
    ) -> Result<Step, KeygenError> {
        let state = core::mem::replace(&mut self.state, State::Finished);
        let (next, step) = match state {
            State::Finished => return Err(KeygenError::Finished),
            State::Start => {
                if let Some((from, _)) = incoming.first() {
                    return Err(KeygenError::UnexpectedMessage {
                        from: *from,
                        round: 0,
                        reason: "nothing is expected before the first round",
                    });
                }
                self.start_batch(rng)?
            }
            state => {
                let bodies = self.collect(incoming)?;
                match state {
                    State::Sieve(sieving) => self.on_sieve(sieving, &bodies, rng)?,
                    State::Shares(batch) => self.on_shares(batch, &bodies)?,
                    State::Products(batch, own) => self.on_products(batch, own, &bodies, rng)?,
                    State::Fermat(batch, moduli, own) => {
                        self.on_fermat(batch, &moduli, own, &bodies, rng)?
                    }
                    State::Biprime(chosen) => self.on_biprime(chosen, &bodies, rng)?,
                    State::Reveal(chosen, z, phi) => {
                        self.on_reveal(*chosen, z, phi, &bodies, rng)?
                    }
                    State::Exponent {
                        public,
                        x,
                        own_trial,
                        own_value,
                        d_i,
                    } => self.on_exponent(public, &x, own_trial, &own_value, &d_i, &bodies)?,
                    State::Start | State::Finished => return Err(KeygenError::Finished),
                }
            }
        };
        self.state = next;
        self.round += 1;
        self.stats.rounds = self.round;
        match step {
            Step::Done(mut output) => {
                output.stats = self.stats;
                Ok(Step::Done(output))
            }
            send => Ok(send),
        }
    }

    /// Checks that `incoming` holds exactly one message of the previous round from every
    /// other party; returns the bodies in party order (`None` at this party's own place).
    fn collect<'a>(
        &self,
        incoming: &'a [(usize, Message)],
    ) -> Result<Vec<Option<&'a Body>>, KeygenError> {
        let n = self.params.parties;
        let expected_round = self.round.saturating_sub(1);
        let mut bodies: Vec<Option<&Body>> = vec![None; n];
        for (from, message) in incoming {
            let from = *from;
            let slot = match from.checked_sub(1).and_then(|i| bodies.get_mut(i)) {
                Some(slot) if from != self.index && slot.is_none() => slot,
                _ => return Err(KeygenError::UnknownParty { from, n }),
            };
            if message.round != expected_round {
                return Err(KeygenError::UnexpectedMessage {
                    from,
                    round: expected_round,
                    reason: "message of another round",
                });
            }
            *slot = Some(&message.body);
        }
        if incoming.len() != n - 1 {
            return Err(KeygenError::MissingMessages {
                round: expected_round,
                expected: n - 1,
                got: incoming.len(),
            });
        }
        Ok(bodies)
    }

    fn unexpected(&self, from: usize, reason: &'static str) -> KeygenError {
        KeygenError::UnexpectedMessage {
            from,
            round: self.round.saturating_sub(1),
            reason,
        }
    }

    fn message(&self, body: Body) -> Message {
        Message {
            round: self.round,
            body,
        }
    }

    fn broadcast(&self, body: Body) -> Step {
        Step::Send(vec![Outgoing {
            to: Recipient::All,
            message: self.message(body),
        }])
    }

    fn others(&self) -> impl Iterator<Item = usize> + use<> {
        let me = self.index;
        (1..=self.params.parties).filter(move |&j| j != me)
    }

    /// A new batch: round "sieve" if the distributed sieve is on, else round "shares" with
    /// candidates drawn at random.
    fn start_batch<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<(State, Step), KeygenError> {
        if self.stats.batches >= self.params.max_batches {
            return Err(KeygenError::GaveUp {
                batches: self.stats.batches,
            });
        }
        let number = self.stats.batches;
        self.stats.batches += 1;
        if self.sieve_ring.is_some() {
            return self.start_sieve(number, rng);
        }
        let size = self.params.batch;
        let mut p = Vec::with_capacity(size);
        let mut q = Vec::with_capacity(size);
        for _ in 0..size {
            p.push(self.seal_share(draw(self.index, &self.share_bound, rng))?);
            q.push(self.seal_share(draw(self.index, &self.share_bound, rng))?);
        }
        self.send_shares(number, p, q, rng)
    }

    /// Round "sieve": a unit of `Z_M` per value, Shamir-shared, and a sharing of zero.
    fn start_sieve<R: CryptoRng + ?Sized>(
        &mut self,
        number: u32,
        rng: &mut R,
    ) -> Result<(State, Step), KeygenError> {
        let ring = self
            .sieve_ring
            .as_ref()
            .ok_or(KeygenError::Inconsistent("no sieve modulus"))?;
        let t = self.params.corruption_bound();
        let n = self.params.parties;
        let values = 2 * self.params.batch;
        let len = ring.len();
        let me = self.index - 1;
        let mut out: Vec<SieveShares> = (0..n)
            .map(|_| SieveShares {
                batch: number,
                level: 0,
                values: Vec::with_capacity(values * len),
                zero: Vec::with_capacity(values * len),
            })
            .collect();
        let mut own = Vec::with_capacity(values);
        let mut zero = Vec::with_capacity(values);
        for _ in 0..values {
            let a = sieving::random_unit_vartime(ring.modulus(), &self.sieve_units, rng);
            let shares = ring.share(&a, t, rng);
            let zeros = ring.share(&BigUint::zero(), 2 * t, rng);
            for (j, msg) in out.iter_mut().enumerate() {
                if let (Some(x), Some(z)) = (shares.get(j), zeros.get(j)) {
                    ring.encode_into(x, &mut msg.values);
                    ring.encode_into(z, &mut msg.zero);
                }
            }
            let (Some(x), Some(z)) = (shares.get(me), zeros.get(me)) else {
                return Err(KeygenError::Inconsistent("own share missing"));
            };
            own.push(seal(x, len)?);
            zero.push(seal(z, len)?);
        }
        let sieving = Sieving {
            number,
            level: 0,
            dealt: 1,
            own,
            carried: Vec::new(),
            zero,
        };
        Ok((State::Sieve(sieving), self.send_each(out, Body::Sieve)))
    }

    /// One message per other party from a list indexed by party.
    fn send_each<T>(&self, out: Vec<T>, body: fn(T) -> Body) -> Step {
        let mut sends = Vec::with_capacity(self.params.parties - 1);
        for (position, item) in out.into_iter().enumerate() {
            let j = position + 1;
            if j != self.index {
                sends.push(Outgoing {
                    to: Recipient::One(j),
                    message: self.message(body(item)),
                });
            }
        }
        Step::Send(sends)
    }

    /// Sieve shares of a level received: the points of the next level's sharings; then
    /// either the next round "reduce" or, with two sharings left, the additive shares of
    /// `p mod M` and `q mod M`, the candidate shares and round "shares".
    fn on_sieve<R: CryptoRng + ?Sized>(
        &mut self,
        sieving: Sieving,
        bodies: &[Option<&Body>],
        rng: &mut R,
    ) -> Result<(State, Step), KeygenError> {
        let ring = self
            .sieve_ring
            .clone()
            .ok_or(KeygenError::Inconsistent("no sieve modulus"))?;
        let m = ring.modulus();
        let values = 2 * self.params.batch;
        let n = self.params.parties;
        let dealt = sieving.dealt;
        let carried_per = sieving.carried.len() / values.max(1);
        // points[v]: this party's points of the sharings at the next level, value v.
        let mut points: Vec<Vec<BigUint>> = Vec::with_capacity(values);
        let mut zero: Vec<BigUint> = sieving.zero.iter().map(open).collect();
        if sieving.level == 0 {
            // One sharing per party: the points are the values each party dealt.
            for v in 0..values {
                let mut row = vec![BigUint::zero(); n];
                if let (Some(slot), Some(own)) = (row.get_mut(self.index - 1), sieving.own.get(v)) {
                    *slot = open(own);
                }
                points.push(row);
            }
        } else {
            // Each pair's product sharing is the sum of every party's resharing.
            for v in 0..values {
                let row: Vec<BigUint> = sieving
                    .own
                    .get(v * dealt..(v + 1) * dealt)
                    .unwrap_or_default()
                    .iter()
                    .map(open)
                    .collect();
                points.push(row);
            }
        }
        for (position, body) in bodies.iter().enumerate() {
            let from = position + 1;
            let Some(body) = body else { continue };
            let Body::Sieve(msg) = body else {
                return Err(self.unexpected(from, "expected sieve shares"));
            };
            if msg.batch != sieving.number || msg.level != sieving.level {
                return Err(self.unexpected(from, "sieve shares of another batch or level"));
            }
            let received = ring.decode_all(&msg.values, values * dealt, from)?;
            let zero_count = if sieving.level == 0 { values } else { 0 };
            let zeros = ring.decode_all(&msg.zero, zero_count, from)?;
            for (z, r) in zero.iter_mut().zip(zeros) {
                *z = (&*z + r) % m;
            }
            for (v, chunk) in received.chunks(dealt).enumerate() {
                let Some(row) = points.get_mut(v) else { break };
                if sieving.level == 0 {
                    if let (Some(slot), Some(x)) = (row.get_mut(from - 1), chunk.first()) {
                        *slot = x.clone();
                    }
                } else {
                    for (acc, x) in row.iter_mut().zip(chunk) {
                        *acc = (&*acc + x) % m;
                    }
                }
            }
        }
        for (v, row) in points.iter_mut().enumerate() {
            let carried = sieving
                .carried
                .get(v * carried_per..(v + 1) * carried_per)
                .unwrap_or_default();
            row.extend(carried.iter().map(open));
        }
        drop(sieving.own);
        drop(sieving.carried);
        let width = points.first().map_or(0, Vec::len);
        if width > 2 {
            return self.reduce(
                sieving.number,
                sieving.level + 1,
                &ring,
                &points,
                &zero,
                rng,
            );
        }
        // Two sharings left: additive shares b_j of the product, then the candidates.
        let mut p = Vec::with_capacity(self.params.batch);
        let mut q = Vec::with_capacity(self.params.batch);
        for (v, (row, z)) in points.iter().zip(&zero).enumerate() {
            let (Some(x), Some(y)) = (row.first(), row.get(1)) else {
                return Err(KeygenError::Inconsistent("sieve sharings missing"));
            };
            let b = ring.lagrange_times(self.index, &((x * y + z) % m));
            let share = sieving::lift_vartime(self.index, &b, m, &self.share_bound, rng);
            let sealed = self.seal_share(share)?;
            if v % 2 == 0 {
                p.push(sealed);
            } else {
                q.push(sealed);
            }
        }
        drop(points);
        drop(zero);
        self.send_shares(sieving.number, p, q, rng)
    }

    /// Round "reduce": for each value, the sharings at this level multiplied in pairs, each
    /// product's additive share re-shared with degree `t`; an odd one out is carried.
    fn reduce<R: CryptoRng + ?Sized>(
        &mut self,
        number: u32,
        level: u32,
        ring: &Ring,
        points: &[Vec<BigUint>],
        zero: &[BigUint],
        rng: &mut R,
    ) -> Result<(State, Step), KeygenError> {
        let t = self.params.corruption_bound();
        let n = self.params.parties;
        let m = ring.modulus();
        let len = ring.len();
        let me = self.index - 1;
        let width = points.first().map_or(0, Vec::len);
        let dealt = width / 2;
        let mut out: Vec<SieveShares> = (0..n)
            .map(|_| SieveShares {
                batch: number,
                level,
                values: Vec::with_capacity(points.len() * dealt * len),
                zero: Vec::new(),
            })
            .collect();
        let mut own = Vec::with_capacity(points.len() * dealt);
        let mut carried = Vec::new();
        for row in points {
            for pair in row.chunks(2) {
                let [x, y] = pair else {
                    for x in pair {
                        carried.push(seal(x, len)?);
                    }
                    continue;
                };
                let w = ring.lagrange_times(self.index, &((x * y) % m));
                let shares = ring.share(&w, t, rng);
                for (j, msg) in out.iter_mut().enumerate() {
                    if let Some(s) = shares.get(j) {
                        ring.encode_into(s, &mut msg.values);
                    }
                }
                let s = shares
                    .get(me)
                    .ok_or(KeygenError::Inconsistent("own share missing"))?;
                own.push(seal(s, len)?);
            }
        }
        let zero = zero
            .iter()
            .map(|z| seal(z, len))
            .collect::<Result<Vec<_>, _>>()?;
        let sieving = Sieving {
            number,
            level,
            dealt,
            own,
            carried,
            zero,
        };
        Ok((State::Sieve(sieving), self.send_each(out, Body::Sieve)))
    }

    /// Round "shares" of batch `number` for the candidate shares `p`, `q` (one per
    /// candidate, sealed to the share length).
    fn send_shares<R: CryptoRng + ?Sized>(
        &mut self,
        number: u32,
        candidates_p: Vec<SecretInt>,
        candidates_q: Vec<SecretInt>,
        rng: &mut R,
    ) -> Result<(State, Step), KeygenError> {
        let t = self.params.corruption_bound();
        let n = self.params.parties;
        let size = self.params.batch;
        let len = self.field.len();
        let mut out: Vec<Shares> = (0..n)
            .map(|_| Shares {
                batch: number,
                p: Vec::with_capacity(size * len),
                q: Vec::with_capacity(size * len),
                zero: Vec::with_capacity(size * len),
            })
            .collect();
        let mut batch = Batch {
            number,
            p: Vec::with_capacity(size),
            q: Vec::with_capacity(size),
            own: Vec::with_capacity(size),
        };
        let zero = BigUint::zero();
        for (p, q) in candidates_p.into_iter().zip(candidates_q) {
            let ps = self.field.share(&open(&p), t, rng);
            let qs = self.field.share(&open(&q), t, rng);
            let zs = self.field.share(&zero, 2 * t, rng);
            for (j, shares) in out.iter_mut().enumerate() {
                if let (Some(a), Some(b), Some(c)) = (ps.get(j), qs.get(j), zs.get(j)) {
                    self.field.encode_into(a, &mut shares.p);
                    self.field.encode_into(b, &mut shares.q);
                    self.field.encode_into(c, &mut shares.zero);
                }
            }
            let me = self.index - 1;
            let own = match (ps.get(me), qs.get(me), zs.get(me)) {
                (Some(a), Some(b), Some(c)) => [seal(a, len)?, seal(b, len)?, seal(c, len)?],
                _ => return Err(KeygenError::Inconsistent("own share missing")),
            };
            batch.p.push(p);
            batch.q.push(q);
            batch.own.push(own);
        }
        Ok((State::Shares(batch), self.send_each(out, Body::Shares)))
    }

    /// Shares received: the product share of every candidate, broadcast.
    fn on_shares(
        &mut self,
        mut batch: Batch,
        bodies: &[Option<&Body>],
    ) -> Result<(State, Step), KeygenError> {
        let size = batch.own.len();
        let m = self.field.modulus().clone();
        let mut sum_p: Vec<BigUint> = batch.own.iter().map(|o| open(&o[0])).collect();
        let mut sum_q: Vec<BigUint> = batch.own.iter().map(|o| open(&o[1])).collect();
        let mut sum_z: Vec<BigUint> = batch.own.iter().map(|o| open(&o[2])).collect();
        for (position, body) in bodies.iter().enumerate() {
            let from = position + 1;
            let Some(body) = body else { continue };
            let Body::Shares(shares) = body else {
                return Err(self.unexpected(from, "expected shares"));
            };
            if shares.batch != batch.number {
                return Err(self.unexpected(from, "shares of another batch"));
            }
            for (list, sums) in [
                (&shares.p, &mut sum_p),
                (&shares.q, &mut sum_q),
                (&shares.zero, &mut sum_z),
            ] {
                let values = self.field.decode_all(list, size, from)?;
                for (sum, v) in sums.iter_mut().zip(values) {
                    *sum += v;
                }
            }
        }
        batch.own.clear();
        let mut values = Vec::with_capacity(size * self.field.len());
        let mut own = Vec::with_capacity(size);
        for ((p, q), z) in sum_p.iter().zip(&sum_q).zip(&sum_z) {
            let y = ((p % &m) * (q % &m) + z) % &m;
            self.field.encode_into(&y, &mut values);
            own.push(y);
        }
        let step = self.broadcast(Body::Products(Products {
            batch: batch.number,
            values,
        }));
        Ok((State::Products(batch, own), step))
    }

    /// Products received: every `N`; sieve; first biprimality round on the survivors.
    fn on_products<R: CryptoRng + ?Sized>(
        &mut self,
        batch: Batch,
        own: Vec<BigUint>,
        bodies: &[Option<&Body>],
        rng: &mut R,
    ) -> Result<(State, Step), KeygenError> {
        let size = own.len();
        let mut columns: Vec<Vec<BigUint>> = Vec::with_capacity(self.params.parties);
        let mut own = Some(own);
        for (position, body) in bodies.iter().enumerate() {
            let from = position + 1;
            let Some(body) = body else {
                columns.push(own.take().unwrap_or_default());
                continue;
            };
            let Body::Products(products) = body else {
                return Err(self.unexpected(from, "expected products"));
            };
            if products.batch != batch.number {
                return Err(self.unexpected(from, "products of another batch"));
            }
            columns.push(self.field.decode_all(&products.values, size, from)?);
        }
        let mut moduli = Vec::new();
        for c in 0..size {
            let ys: Vec<BigUint> = columns
                .iter()
                .map(|col| col.get(c).cloned().unwrap_or_default())
                .collect();
            let n = self.field.interpolate(&ys);
            self.stats.candidates += 1;
            if usize::try_from(n.bits()).ok() != Some(self.params.bits) {
                self.stats.wrong_size += 1;
            } else if self.sieve.has_small_factor_vartime(&n) {
                self.stats.sieved_out += 1;
            } else {
                moduli.push((c, n));
            }
        }
        if moduli.is_empty() {
            drop(batch);
            return self.start_batch(rng);
        }
        self.stats.biprimality_tests += moduli.len() as u64;
        let mut values = Vec::with_capacity(moduli.len() * self.modulus_len);
        let mut own_values = Vec::with_capacity(moduli.len());
        for (c, n) in &moduli {
            let (Some(p), Some(q)) = (batch.p.get(*c), batch.q.get(*c)) else {
                return Err(KeygenError::Inconsistent("candidate missing"));
            };
            let v = self.bf_value_vartime(n, &open(p), &open(q), 0)?;
            encode_fixed(&v, self.modulus_len, &mut values);
            own_values.push(v);
        }
        let step = self.broadcast(Body::Fermat(Fermat {
            batch: batch.number,
            values,
        }));
        Ok((State::Fermat(batch, moduli, own_values), step))
    }

    /// This party's Boneh–Franklin value for base number `round` of modulus `n`.
    fn bf_value_vartime(
        &self,
        n: &BigUint,
        p: &BigUint,
        q: &BigUint,
        round: u32,
    ) -> Result<BigUint, KeygenError> {
        let exponent = Zeroizing::new(
            biprimality::exponent_vartime(self.index, n, p, q)
                .ok_or(KeygenError::Inconsistent(
                    "candidate shares of the wrong form",
                ))?
                .to_bytes_be(),
        );
        let g = biprimality::base_vartime(n, round);
        Ok(biprimality::pow(&g, &exponent, n)?)
    }

    /// Decodes one value modulo `n` per entry of `bounds`, each below its bound.
    fn decode_mod(
        &self,
        bytes: &[u8],
        bounds: &[&BigUint],
        from: usize,
    ) -> Result<Vec<BigUint>, KeygenError> {
        let top = BigUint::one() << self.params.bits;
        let values = decode_fixed(bytes, bounds.len(), self.modulus_len, &top, from)?;
        if values.iter().zip(bounds).any(|(v, b)| v >= *b) {
            return Err(KeygenError::BadMessage {
                from,
                reason: "value out of range",
            });
        }
        Ok(values)
    }

    /// First-round values received: the first modulus that passes goes to the full test.
    fn on_fermat<R: CryptoRng + ?Sized>(
        &mut self,
        mut batch: Batch,
        moduli: &[(usize, BigUint)],
        own: Vec<BigUint>,
        bodies: &[Option<&Body>],
        rng: &mut R,
    ) -> Result<(State, Step), KeygenError> {
        let bounds: Vec<&BigUint> = moduli.iter().map(|(_, n)| n).collect();
        let mut columns: Vec<Vec<BigUint>> = Vec::with_capacity(self.params.parties);
        let mut own = Some(own);
        for (position, body) in bodies.iter().enumerate() {
            let from = position + 1;
            let Some(body) = body else {
                columns.push(own.take().unwrap_or_default());
                continue;
            };
            let Body::Fermat(fermat) = body else {
                return Err(self.unexpected(from, "expected first biprimality values"));
            };
            if fermat.batch != batch.number {
                return Err(self.unexpected(from, "values of another batch"));
            }
            columns.push(self.decode_mod(&fermat.values, &bounds, from)?);
        }
        for (position, (c, n)) in moduli.iter().enumerate() {
            let values: Vec<BigUint> = columns
                .iter()
                .map(|col| col.get(position).cloned().unwrap_or_default())
                .collect();
            if biprimality::accepts_vartime(n, &values) {
                let (p, q) = (
                    core::mem::replace(&mut batch.p[*c], SecretInt::from_be_bytes(Vec::new())),
                    core::mem::replace(&mut batch.q[*c], SecretInt::from_be_bytes(Vec::new())),
                );
                let candidate = u32::try_from(*c).map_err(|_| KeygenError::Params("batch"))?;
                let number = batch.number;
                drop(batch);
                return self.start_biprime(number, candidate, n.clone(), p, q, rng);
            }
        }
        drop(batch);
        self.start_batch(rng)
    }

    /// Round "biprime" for the chosen candidate.
    fn start_biprime<R: CryptoRng + ?Sized>(
        &mut self,
        batch: u32,
        candidate: u32,
        n: BigUint,
        p: SecretInt,
        q: SecretInt,
        rng: &mut R,
    ) -> Result<(State, Step), KeygenError> {
        let ring = Ring::new(n.clone(), self.params.parties)?;
        let t = self.params.corruption_bound();
        let (p_open, q_open) = (open(&p), open(&q));
        let mut values = Vec::new();
        let mut encoded = Vec::new();
        for round in 1..=self.params.biprimality_rounds {
            let v = self.bf_value_vartime(&n, &p_open, &q_open, round)?;
            encode_fixed(&v, self.modulus_len, &mut encoded);
            values.push(v);
        }
        let r = ring.random(rng);
        let s = if self.index == 1 {
            (&p_open + &q_open) - 1u8
        } else {
            &p_open + &q_open
        };
        let rs = ring.share(&r, t, rng);
        let ss = ring.share(&s, t, rng);
        let zs = ring.share(&BigUint::zero(), 2 * t, rng);
        let phi_i = exponent::phi_share(self.index, &n, &p_open, &q_open);
        let e = self.params.e;
        let phi_split = Zeroizing::new(exponent::split_mod_e(
            exponent::mod_e(&phi_i, e),
            e,
            self.params.parties,
            rng,
        ));
        let mut sends = Vec::with_capacity(self.params.parties - 1);
        for j in self.others() {
            let (Some(a), Some(b), Some(c), Some(f)) = (
                rs.get(j - 1),
                ss.get(j - 1),
                zs.get(j - 1),
                phi_split.get(j - 1),
            ) else {
                return Err(KeygenError::Inconsistent("share missing"));
            };
            let mut body = Biprime {
                batch,
                candidate,
                values: encoded.clone(),
                r: Vec::new(),
                s: Vec::new(),
                zero: Vec::new(),
                phi_mod_e: *f,
            };
            ring.encode_into(a, &mut body.r);
            ring.encode_into(b, &mut body.s);
            ring.encode_into(c, &mut body.zero);
            sends.push(Outgoing {
                to: Recipient::One(j),
                message: self.message(Body::Biprime(body)),
            });
        }
        let me = self.index - 1;
        let (Some(a), Some(b), Some(c), Some(f)) =
            (rs.get(me), ss.get(me), zs.get(me), phi_split.get(me))
        else {
            return Err(KeygenError::Inconsistent("own share missing"));
        };
        let len = ring.len();
        let chosen = Chosen {
            batch,
            candidate,
            own: [seal(a, len)?, seal(b, len)?, seal(c, len)?],
            own_phi: Zeroizing::new(*f),
            n,
            ring,
            p,
            q,
            values,
        };
        Ok((State::Biprime(Box::new(chosen)), Step::Send(sends)))
    }

    /// Full test inputs received: check every round, then share `z` and `φ mod e`.
    fn on_biprime<R: CryptoRng + ?Sized>(
        &mut self,
        chosen: Box<Chosen>,
        bodies: &[Option<&Body>],
        rng: &mut R,
    ) -> Result<(State, Step), KeygenError> {
        let n = &chosen.n;
        let rounds = chosen.values.len();
        let bounds = vec![n; rounds];
        let e = self.params.e;
        let mut columns: Vec<Vec<BigUint>> = Vec::with_capacity(self.params.parties);
        let mut r_sum = open(&chosen.own[0]);
        let mut s_sum = open(&chosen.own[1]);
        let mut z_sum = open(&chosen.own[2]);
        let mut phi = *chosen.own_phi;
        for (position, body) in bodies.iter().enumerate() {
            let from = position + 1;
            let Some(body) = body else {
                columns.push(chosen.values.clone());
                continue;
            };
            let Body::Biprime(msg) = body else {
                return Err(self.unexpected(from, "expected biprimality test inputs"));
            };
            if msg.batch != chosen.batch || msg.candidate != chosen.candidate {
                return Err(self.unexpected(from, "test inputs for another candidate"));
            }
            columns.push(self.decode_mod(&msg.values, &bounds, from)?);
            for (bytes, sum) in [
                (&msg.r, &mut r_sum),
                (&msg.s, &mut s_sum),
                (&msg.zero, &mut z_sum),
            ] {
                let v = chosen.ring.decode_all(bytes, 1, from)?;
                *sum += v.into_iter().sum::<BigUint>();
            }
            if msg.phi_mod_e >= e {
                return Err(KeygenError::BadMessage {
                    from,
                    reason: "share of φ mod e out of range",
                });
            }
            phi = exponent::sum_mod_e([phi, msg.phi_mod_e], e);
        }
        for round in 0..rounds {
            let values: Vec<BigUint> = columns
                .iter()
                .map(|col| col.get(round).cloned().unwrap_or_default())
                .collect();
            if !biprimality::accepts_vartime(n, &values) {
                self.stats.late_rejections += 1;
                drop(chosen);
                return self.start_batch(rng);
            }
        }
        let z = ((r_sum % n) * (s_sum % n) + z_sum) % n;
        let mut z_bytes = Vec::new();
        chosen.ring.encode_into(&z, &mut z_bytes);
        let step = self.broadcast(Body::Reveal(Reveal {
            batch: chosen.batch,
            z: z_bytes,
            phi_mod_e: phi,
        }));
        Ok((State::Reveal(chosen, z, phi), step))
    }

    /// `z` and `φ mod e` revealed: gcd test, then `d_i`, its trial value and its dealing.
    fn on_reveal<R: CryptoRng + ?Sized>(
        &mut self,
        chosen: Chosen,
        own_z: BigUint,
        own_phi: u64,
        bodies: &[Option<&Body>],
        rng: &mut R,
    ) -> Result<(State, Step), KeygenError> {
        let e = self.params.e;
        let mut zs = Vec::with_capacity(self.params.parties);
        let mut phi_mod_e = 0u64;
        for (position, body) in bodies.iter().enumerate() {
            let from = position + 1;
            let Some(body) = body else {
                zs.push(own_z.clone());
                phi_mod_e = exponent::sum_mod_e([phi_mod_e, own_phi], e);
                continue;
            };
            let Body::Reveal(msg) = body else {
                return Err(self.unexpected(from, "expected the gcd-test reveal"));
            };
            if msg.batch != chosen.batch {
                return Err(self.unexpected(from, "reveal for another batch"));
            }
            zs.extend(chosen.ring.decode_all(&msg.z, 1, from)?);
            if msg.phi_mod_e >= e {
                return Err(KeygenError::BadMessage {
                    from,
                    reason: "φ mod e out of range",
                });
            }
            phi_mod_e = exponent::sum_mod_e([phi_mod_e, msg.phi_mod_e], e);
        }
        let n = chosen.n.clone();
        let z = chosen.ring.interpolate(&zs);
        let zeta = exponent::zeta(phi_mod_e, e);
        let Some(zeta) = zeta.filter(|_| z.gcd(&n).is_one()) else {
            // `N` is not p·q for distinct primes with gcd(N, p + q − 1) = 1, or e | φ.
            self.stats.late_rejections += 1;
            drop(chosen);
            return self.start_batch(rng);
        };
        let public = RsaPublicKey::new(n.clone(), BigUint::from(e))?;
        let phi_i = exponent::phi_share(self.index, &n, &open(&chosen.p), &open(&chosen.q));
        let d_i = exponent::d_share(self.index, zeta, &phi_i, e);
        drop(phi_i);
        drop(chosen);
        let x = exponent::trial_input_vartime(&n);
        let own_trial = exponent::trial_value_vartime(&x, &d_i, &n)
            .ok_or(KeygenError::Inconsistent("trial input not invertible"))?;
        let dealt = sharing::deal(&d_i, &public, &self.sharing, &self.params.holders, rng);
        let d_i = SignedSecret::new(&d_i);
        let mut trial = Vec::new();
        encode_fixed(&own_trial, self.modulus_len, &mut trial);
        let mut sends = Vec::with_capacity(self.params.parties - 1);
        for j in self.others() {
            let Some(value) = dealt.get(j - 1) else {
                return Err(KeygenError::Inconsistent("share missing"));
            };
            let (share_negative, share) = sharing::encode_signed(value);
            sends.push(Outgoing {
                to: Recipient::One(j),
                message: self.message(Body::Exponent(Exponent {
                    trial: trial.clone(),
                    share_negative,
                    share,
                })),
            });
        }
        let own_value = dealt
            .get(self.index - 1)
            .map(SignedSecret::new)
            .ok_or(KeygenError::Inconsistent("own share missing"))?;
        let state = State::Exponent {
            public,
            x,
            own_trial,
            own_value,
            d_i,
        };
        Ok((state, Step::Send(sends)))
    }

    /// Trial values and shares received: the rounding error, then this party's share.
    fn on_exponent(
        &mut self,
        public: RsaPublicKey,
        x: &BigUint,
        own_trial: BigUint,
        own_value: &SignedSecret,
        d_i: &SignedSecret,
        bodies: &[Option<&Body>],
    ) -> Result<(State, Step), KeygenError> {
        let n = public.n().clone();
        let max_len = sharing::max_value_len(&public, &self.sharing);
        let mut y = own_trial;
        let mut values = vec![own_value.open()];
        for (position, body) in bodies.iter().enumerate() {
            let from = position + 1;
            let Some(body) = body else { continue };
            let Body::Exponent(msg) = body else {
                return Err(self.unexpected(from, "expected the exponent round"));
            };
            let trial = self.decode_mod(&msg.trial, &[&n], from)?;
            let trial = trial.into_iter().next().unwrap_or_default();
            if trial.is_zero() {
                return Err(KeygenError::BadMessage {
                    from,
                    reason: "zero trial value",
                });
            }
            y = y * trial % &n;
            values.push(sharing::decode_signed(
                msg.share_negative,
                &msg.share,
                max_len,
                from,
            )?);
        }
        let rounding =
            exponent::find_rounding_vartime(x, &y, &n, self.params.e, self.params.parties).ok_or(
                KeygenError::Inconsistent("no rounding error makes the trial values a signature"),
            )?;
        let holder_index = self
            .params
            .holders
            .get(self.index - 1)
            .copied()
            .ok_or(KeygenError::Inconsistent("no holder index"))?;
        let holder = sharing::assemble(
            &values,
            &d_i.open(),
            rounding,
            &public,
            &self.sharing,
            holder_index,
            self.index == 1,
        )?;
        let output = KeygenOutput {
            public,
            sharing: self.sharing,
            share: holder.share().clone(),
            holder,
            stats: self.stats,
        };
        Ok((State::Finished, Step::Done(Box::new(output))))
    }
}
