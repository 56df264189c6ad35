//! Dealerless key generation, all parties in one process: a driver routes every message,
//! keeps the transcript, and checks what no party could check alone. From the `shares`
//! messages of the accepted batch it reconstructs every party's `p_i`, `q_i` and checks that
//! `p = Σ p_i` and `q = Σ q_i` are primes (OpenSSL's test, independent of ours) with
//! `N = p·q`; from the shares it reconstructs `d` and checks `e·d ≡ 1 (mod φ)`; then any k
//! shares sign through the normal partial/combine path and k − 1 do not; the additive shares
//! sum to `d`, and the key still signs after three refreshes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use ittc_threshold::keygen::{
    Body, KeygenError, KeygenOutput, KeygenParams, Message, Outgoing, Party, Recipient, Shares,
    SieveShares, Step,
};
use ittc_threshold::{
    Backend, Bounds, Error, HolderShare, KeyShare, Partial, Plan, SharingParams, Source, combine,
    combine_robust, refresh_all, run_plan,
};
use num_bigint::{BigInt, BigUint};
use num_integer::Integer;
use num_traits::{One, Zero};
use openssl::bn::{BigNum, BigNumContext};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Everything a run produced, as seen by the driver.
struct Run {
    outputs: Vec<KeygenOutput>,
    /// Every batch's `shares` messages, by (batch, sender, recipient).
    shares: BTreeMap<(u32, usize, usize), Shares>,
    /// (batch, candidate) that went to the full test last.
    chosen: (u32, u32),
    /// Time spent in `step`, by the phase the party was in (all parties together).
    profile: BTreeMap<String, f64>,
}

/// One party's incoming messages of a round.
type Inbox = Vec<(usize, Message)>;

fn route(outgoing: Vec<(usize, Vec<Outgoing>)>, n: usize) -> Vec<Inbox> {
    let mut inboxes: Vec<Vec<(usize, Message)>> = vec![Vec::new(); n];
    for (from, list) in outgoing {
        for out in list {
            match out.to {
                Recipient::All => {
                    for (j, inbox) in inboxes.iter_mut().enumerate() {
                        if j + 1 != from {
                            inbox.push((from, out.message.clone()));
                        }
                    }
                }
                Recipient::One(j) => inboxes[j - 1].push((from, out.message)),
            }
        }
    }
    inboxes
}

fn run(params: &KeygenParams, seed: u64) -> Run {
    let n = params.parties;
    let mut parties: Vec<Party> = (1..=n).map(|i| Party::new(i, params).unwrap()).collect();
    let mut rngs: Vec<StdRng> = (0..n)
        .map(|i| StdRng::seed_from_u64(seed * 100 + i as u64))
        .collect();
    let mut inboxes: Vec<Vec<(usize, Message)>> = vec![Vec::new(); n];
    let mut shares = BTreeMap::new();
    let mut chosen = (u32::MAX, u32::MAX);
    let mut profile = BTreeMap::new();
    loop {
        let mut outgoing = Vec::new();
        let mut outputs = Vec::new();
        for (i, party) in parties.iter_mut().enumerate() {
            let shown = format!("{party:?}");
            let phase = shown.split('"').nth(1).unwrap_or("?").to_string();
            let started = Instant::now();
            let step = party.step(&inboxes[i], &mut rngs[i]).unwrap();
            *profile.entry(phase).or_insert(0.0) += started.elapsed().as_secs_f64();
            match step {
                Step::Send(list) => outgoing.push((i + 1, list)),
                Step::Done(output) => outputs.push(*output),
            }
        }
        if !outputs.is_empty() {
            assert_eq!(outputs.len(), n, "all parties finish in the same round");
            return Run {
                outputs,
                shares,
                chosen,
                profile,
            };
        }
        for (from, list) in &outgoing {
            for out in list {
                match (&out.message.body, out.to) {
                    (Body::Shares(s), Recipient::One(to)) => {
                        shares.insert((s.batch, *from, to), s.clone());
                    }
                    (Body::Biprime(b), _) => chosen = (b.batch, b.candidate),
                    _ => {}
                }
            }
        }
        inboxes = route(outgoing, n);
    }
}

/// `f(0) mod m` of the polynomial through `points` (degree below their number).
fn interpolate_at_zero(points: &[(usize, BigUint)], m: &BigUint) -> BigUint {
    let m_int = BigInt::from(m.clone());
    let mut acc = BigInt::zero();
    for (j, y) in points {
        let mut num = BigInt::one();
        let mut den = BigInt::one();
        for (i, _) in points.iter().filter(|(i, _)| i != j) {
            num *= BigInt::from(*i);
            den *= BigInt::from(*i as i64 - *j as i64);
        }
        let den = den.mod_floor(&m_int).to_biguint().unwrap();
        let inv = BigInt::from(den.modinv(m).unwrap());
        acc += BigInt::from(y.clone()) * num * inv;
    }
    acc.mod_floor(&m_int).to_biguint().unwrap()
}

/// Party `i`'s value for the chosen candidate, from the shares it sent to the others.
fn party_secret(run: &Run, params: &KeygenParams, i: usize, pick: fn(&Shares) -> &[u8]) -> BigUint {
    party_secret_of(run, params, run.chosen, i, pick)
}

/// Party `i`'s value for candidate `(batch, c)`, from the shares it sent to the others.
fn party_secret_of(
    run: &Run,
    params: &KeygenParams,
    (batch, c): (u32, u32),
    i: usize,
    pick: fn(&Shares) -> &[u8],
) -> BigUint {
    let m = params.field_modulus();
    let len = m.bits().div_ceil(8) as usize;
    let c = c as usize;
    let points: Vec<(usize, BigUint)> = run
        .shares
        .range((batch, i, 0)..=(batch, i, usize::MAX))
        .map(|((_, _, to), s)| {
            (
                *to,
                BigUint::from_bytes_be(&pick(s)[c * len..(c + 1) * len]),
            )
        })
        .collect();
    assert_eq!(points.len(), params.parties - 1);
    interpolate_at_zero(&points, &m)
}

fn is_prime_openssl(x: &BigUint) -> bool {
    let bn = BigNum::from_slice(&x.to_bytes_be()).unwrap();
    bn.is_prime(64, &mut BigNumContext::new().unwrap()).unwrap()
}

fn partials(out: &[&KeygenOutput], input: &BigUint) -> Vec<Partial> {
    let backend = Backend::default().get();
    out.iter()
        .map(|o| Partial {
            index: o.share.index(),
            value: backend.partial(&o.public, &o.share, input).unwrap(),
        })
        .collect()
}

/// The integer `Σ λ_j s_j / Δ²` over the given shares (exact when they are k of a sharing).
fn reconstruct_d(shares: &[&KeyShare], delta: u64) -> BigInt {
    let mut acc = BigInt::zero();
    for s in shares {
        let mut num = BigInt::from(delta);
        let mut den = BigInt::one();
        for o in shares.iter().filter(|o| o.index() != s.index()) {
            num *= BigInt::from(o.index());
            den *= BigInt::from(o.index() as i64 - s.index() as i64);
        }
        assert!((&num % &den).is_zero());
        acc += BigInt::from(BigUint::from_bytes_be(s.value().as_be_bytes())) * (num / den);
    }
    let delta_sq = BigInt::from(delta) * BigInt::from(delta);
    assert!((&acc % &delta_sq).is_zero());
    acc / delta_sq
}

fn check(params: &KeygenParams, seed: u64) -> KeygenOutput {
    check_run(params, seed).outputs.into_iter().next().unwrap()
}

/// Runs a generation, checks everything [`check`] does, and returns the transcript.
fn check_run(params: &KeygenParams, seed: u64) -> Run {
    let started = Instant::now();
    let run = run(params, seed);
    let elapsed = started.elapsed();
    let (n, k) = (params.parties, params.threshold);
    let first = &run.outputs[0];
    for (i, o) in run.outputs.iter().enumerate() {
        assert_eq!(o.public, first.public);
        assert_eq!(o.stats, first.stats);
        assert_eq!(o.share.index(), i + 1);
        assert_eq!(o.sharing, SharingParams::new(k, n).unwrap());
    }
    let modulus = first.public.n().clone();
    assert_eq!(modulus.bits() as usize, params.bits);

    // p and q from the transcript: prime, and their product is N.
    let p: BigUint = (1..=n)
        .map(|i| party_secret(&run, params, i, |s| &s.p))
        .sum();
    let q: BigUint = (1..=n)
        .map(|i| party_secret(&run, params, i, |s| &s.q))
        .sum();
    assert_eq!(&p * &q, modulus, "N = p·q");
    assert!(
        is_prime_openssl(&p) && is_prime_openssl(&q),
        "p and q are prime"
    );
    assert_ne!(p, q);
    // The public offset: the top two bits of p and q are set, so no modulus of the run had
    // the wrong length.
    for factor in [&p, &q] {
        assert_eq!(factor.bits() as usize, params.bits / 2);
        assert_eq!(factor >> (params.bits / 2 - 2), BigUint::from(3u8));
    }
    assert_eq!(first.stats.wrong_size, 0);

    // d from any k shares: e·d ≡ 1 (mod φ).
    let phi = BigInt::from((&p - 1u8) * (&q - 1u8));
    let delta = first.sharing.delta();
    let shares: Vec<&KeyShare> = run.outputs.iter().map(|o| &o.share).collect();
    let d = reconstruct_d(&shares[..k], delta);
    assert_eq!(d, reconstruct_d(&shares[n - k..], delta));
    assert!(
        (BigInt::from(params.e) * &d).mod_floor(&phi).is_one(),
        "e·d ≡ 1 mod φ"
    );

    // Any k shares sign through the normal path; k − 1 do not.
    let mut rng = StdRng::seed_from_u64(seed);
    let input = first.public.random_residue(&mut rng);
    let outs: Vec<&KeygenOutput> = run.outputs.iter().collect();
    for window in 0..=n - k {
        let set = &outs[window..window + k];
        let y = combine(
            &first.public,
            &first.sharing,
            &input,
            &partials(set, &input),
        )
        .unwrap();
        assert_eq!(first.public.raw_public_vartime(&y).unwrap(), input);
    }
    let fewer = partials(&outs[..k - 1], &input);
    assert!(matches!(
        combine_robust(&first.public, &first.sharing, &input, &fewer),
        Err(Error::NotEnoughGoodPartials { .. })
    ));
    if k >= 3 {
        let as_fewer = SharingParams::new(k - 1, n).unwrap();
        assert!(matches!(
            combine(&first.public, &as_fewer, &input, &fewer),
            Err(Error::Verification)
        ));
    } else {
        // One share read as a 1-of-n sharing (constant polynomial Δ·d): y = (x^s)^(Δ·a)·x^b
        // with a·Δ² + b·e = 1 would be x^d.
        let g = BigInt::from(delta * delta).extended_gcd(&BigInt::from(params.e));
        let pow = |base: &BigUint, exp: &BigInt| {
            let r = base.modpow(exp.magnitude(), &modulus);
            if exp.sign() == num_bigint::Sign::Minus {
                r.modinv(&modulus).unwrap()
            } else {
                r
            }
        };
        let w = pow(&fewer[0].value, &(g.x * BigInt::from(delta)));
        let y = w * pow(&input, &g.y) % &modulus;
        assert_ne!(first.public.raw_public_vartime(&y).unwrap(), input);
    }
    // The additive shares sum to the same d, and the key refreshes like an imported one.
    let bounds = Bounds::new(&first.public, &first.sharing).unwrap();
    let additive_sum: BigInt = run
        .outputs
        .iter()
        .map(|o| {
            assert_eq!(o.holder.share(), &o.share);
            let bytes = o.holder.additive().unwrap().as_be_bytes();
            let value = BigInt::from(BigUint::from_bytes_be(bytes));
            if bytes[0] & 0x80 != 0 {
                value - (BigInt::one() << bounds.precision())
            } else {
                value
            }
        })
        .sum();
    assert_eq!(additive_sum, d, "the additive shares sum to d");
    let mut holders: Vec<HolderShare> = run.outputs.iter().map(|o| o.holder.clone()).collect();
    for _ in 0..3 {
        holders = refresh_all(&first.public, &first.sharing, &holders, 1, &mut rng).unwrap();
    }
    let backend = Backend::default().get();
    let refreshed: Vec<Partial> = holders[n - k..]
        .iter()
        .map(|h| Partial {
            index: h.index(),
            value: backend.partial(&first.public, h.share(), &input).unwrap(),
        })
        .collect();
    let y = combine(&first.public, &first.sharing, &input, &refreshed).unwrap();
    assert_eq!(first.public.raw_public_vartime(&y).unwrap(), input);

    println!(
        "{} bits, {k}-of-{n}: {:.1} s, {:?}\n  time in step by phase (s): {:.2?}",
        params.bits,
        elapsed.as_secs_f64(),
        first.stats,
        run.profile
    );
    run
}

/// `p` and `q` of every candidate whose `N` was computed, rebuilt from the transcript.
fn all_candidates(run: &Run, params: &KeygenParams) -> Vec<(BigUint, BigUint)> {
    let batches: Vec<u32> = run.shares.keys().map(|(b, _, _)| *b).collect();
    let mut out = Vec::new();
    for batch in batches
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
    {
        let size =
            run.shares[&(batch, 1, 2)].p.len() / params.field_modulus().bits().div_ceil(8) as usize;
        for c in 0..size as u32 {
            let sum = |pick: fn(&Shares) -> &[u8]| -> BigUint {
                (1..=params.parties)
                    .map(|i| party_secret_of(run, params, (batch, c), i, pick))
                    .sum()
            };
            out.push((sum(|s| &s.p), sum(|s| &s.q)));
        }
    }
    out
}

/// The odd primes `l` with `n < l ≤ bound` (the distributed sieve's), by trial division.
fn sieve_primes(bound: u32, n: usize) -> Vec<u32> {
    (3..=bound)
        .filter(|&l| l as usize > n && (2..l).take_while(|d| d * d <= l).all(|d| l % d != 0))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// With the distributed sieve, no candidate p or q of any batch has a prime factor in
    /// M, each is 3 mod 4, and the key is good (`check`: primes, d, signatures, refresh),
    /// for 3 to 5 parties (two reduce rounds at 5).
    #[test]
    fn sieved_candidates_have_no_factor_in_m(
        seed in 0u64..1 << 40,
        n in 3usize..=5,
        k_low in any::<bool>(),
    ) {
        let k = if k_low { 2 } else { n.div_ceil(2) + 1 };
        let mut params = KeygenParams::new(512, 65537, n, k.min(n)).unwrap();
        params.batch = 64;
        prop_assert!(params.distributed_sieve_bound > 100);
        let run = check_run(&params, seed);
        let primes = sieve_primes(params.distributed_sieve_bound, n);
        let candidates = all_candidates(&run, &params);
        prop_assert_eq!(candidates.len() as u64, run.outputs[0].stats.candidates);
        for (p, q) in &candidates {
            for x in [p, q] {
                prop_assert_eq!(x % 4u8, BigUint::from(3u8));
                for &l in &primes {
                    prop_assert!(!(x % l).is_zero(), "{} divides a candidate", l);
                }
            }
        }
    }
}

/// Over many generations: the residues of the candidates modulo small primes of M are
/// uniform over the units (chi-square), and the candidate pairs per key fall as the sieve
/// predicts (without it, about 15,700 pairs per 512-bit key: 1/88.7 for each 256-bit
/// p ≡ 3 (mod 4) to be prime, half the moduli of the wrong size).
#[test]
fn sieved_residues_are_uniform_and_candidates_fewer() {
    let mut params = KeygenParams::new(512, 65537, 3, 2).unwrap();
    params.batch = 64;
    let runs = 16u64;
    let primes = [5u32, 7, 11, 13];
    let mut counts: Vec<Vec<u64>> = primes.iter().map(|&l| vec![0; l as usize]).collect();
    let mut pairs = 0u64;
    for seed in 0..runs {
        let run = run(&params, 500 + seed);
        pairs += run.outputs[0].stats.candidates;
        for (p, q) in all_candidates(&run, &params) {
            for x in [p, q] {
                for (l, count) in primes.iter().zip(&mut counts) {
                    let r: u32 = (&x % *l).try_into().unwrap();
                    count[r as usize] += 1;
                }
            }
        }
    }
    // 99.9% quantiles of chi-square with l − 2 degrees of freedom.
    let limits = [16.27, 20.52, 27.88, 31.26];
    for ((l, count), limit) in primes.iter().zip(&counts).zip(limits) {
        assert_eq!(count[0], 0, "a candidate divisible by {l}");
        let total: u64 = count.iter().sum();
        let expected = total as f64 / f64::from(l - 1);
        let chi2: f64 = count[1..]
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        println!("mod {l}: {:?}, chi-square {chi2:.2}", &count[1..]);
        assert!(chi2 < limit, "residues mod {l} not uniform: {chi2:.2}");
    }
    let mean = pairs as f64 / runs as f64;
    println!("candidate pairs per key: {mean:.0} over {runs} runs");
    assert!(mean < 3000.0, "{mean} pairs per key");
}

#[test]
fn generates_512_bit_key_2_of_3() {
    check(&KeygenParams::new(512, 65537, 3, 2).unwrap(), 1);
}

#[test]
fn generates_512_bit_key_3_of_5() {
    check(&KeygenParams::new(512, 65537, 5, 3).unwrap(), 2);
}

/// Prints the run's counters: `cargo test -p ittc-threshold --test keygen -- --nocapture`.
#[test]
fn generates_1024_bit_key_2_of_3() {
    let out = check(&KeygenParams::new(1024, 65537, 3, 2).unwrap(), 3);
    assert!(out.stats.candidates > 0 && out.stats.biprimality_tests > 0);
}

#[test]
fn small_public_exponent_works() {
    // e = 5: a fifth of the moduli have e | φ and are rejected after the reveal.
    check(&KeygenParams::new(512, 5, 3, 3).unwrap(), 4);
}

#[test]
fn generates_with_holders_away_who_then_rebuild_their_shares() {
    // Holders 1, 3 and 4 of a 2-of-5 key generate it; 2 and 5 are away.
    let params = KeygenParams::new(512, 65537, 3, 2)
        .unwrap()
        .with_holders(vec![1, 3, 4], 5)
        .unwrap();
    let run = run(&params, 6);
    let sharing = SharingParams::new(2, 5).unwrap();
    let first = &run.outputs[0];
    let indices: Vec<usize> = run.outputs.iter().map(|o| o.share.index()).collect();
    assert_eq!(indices, [1, 3, 4]);
    assert!(run.outputs.iter().all(|o| o.sharing == sharing));
    let public = &first.public;
    let mut rng = StdRng::seed_from_u64(6);
    let input = public.random_residue(&mut rng);
    let backend = Backend::default().get();
    let signs = |holders: &[&HolderShare]| {
        let partials: Vec<Partial> = holders
            .iter()
            .map(|h| Partial {
                index: h.index(),
                value: backend.partial(public, h.share(), &input).unwrap(),
            })
            .collect();
        let y = combine(public, &sharing, &input, &partials).unwrap();
        assert_eq!(public.raw_public_vartime(&y).unwrap(), input);
    };
    let generated: Vec<HolderShare> = run.outputs.iter().map(|o| o.holder.clone()).collect();
    signs(&[&generated[0], &generated[1]]);
    signs(&[&generated[1], &generated[2]]);
    // The absent ones rebuild their shares from two of the others, with no additive share.
    let mut all = generated.clone();
    for (target, helpers) in [(2, [1, 3]), (5, [3, 4])] {
        let (share, _) = common::rebuild(public, &sharing, &generated, &helpers, target, &mut rng);
        all.push(HolderShare::without_additive(share));
    }
    all.sort_by_key(HolderShare::index);
    signs(&[&all[1], &all[4]]);
    // The generators' additive shares sum to d: the next refresh starts from them and
    // gives all five an additive share.
    let plan = Plan {
        source: Source::Additive {
            holders: vec![1, 3, 4],
        },
        ..Plan::all(sharing, (1..=5).collect(), 2)
    };
    let next = run_plan(public, &plan, &all, &mut rng).unwrap();
    assert!(next.iter().all(|h| h.additive().is_some()));
    signs(&[&next[1], &next[4]]);
    signs(&[&next[0], &next[2]]);
}

#[test]
fn parameters_are_validated() {
    assert!(KeygenParams::new(512, 65537, 2, 2).is_err(), "n = 2");
    assert!(KeygenParams::new(512, 65537, 3, 4).is_err(), "k > n");
    assert!(KeygenParams::new(513, 65537, 3, 2).is_err(), "odd size");
    assert!(KeygenParams::new(256, 65537, 3, 2).is_err(), "too small");
    assert!(KeygenParams::new(512, 65535, 3, 2).is_err(), "e not prime");
    assert!(KeygenParams::new(512, 3, 3, 2).is_err(), "e ≤ n");
    let three = || KeygenParams::new(512, 65537, 3, 2).unwrap();
    assert!(three().with_holders(vec![1, 2], 5).is_err(), "2 parties");
    assert!(
        three().with_holders(vec![1, 3, 2], 5).is_err(),
        "not ascending"
    );
    assert!(
        three().with_holders(vec![1, 3, 6], 5).is_err(),
        "index beyond n"
    );
    assert!(
        KeygenParams::new(512, 65537, 3, 3)
            .unwrap()
            .with_holders(vec![1, 2, 3], 7)
            .is_ok()
    );
    assert!(
        KeygenParams::new(512, 5, 3, 2)
            .unwrap()
            .with_holders(vec![1, 2, 3], 5)
            .is_err(),
        "e ≤ n of the key"
    );
    let mut params = KeygenParams::new(512, 65537, 3, 2).unwrap();
    params.batch = 0;
    assert!(Party::new(1, &params).is_err());
    let params = KeygenParams::new(512, 65537, 3, 2).unwrap();
    assert!(Party::new(0, &params).is_err());
    assert!(Party::new(4, &params).is_err());
}

/// Three parties of a small generation without the distributed sieve and their
/// first-round messages ("shares").
/// Every party steps on its inbox and sends; the next round's inboxes.
fn next_round(parties: &mut [Party], inboxes: &[Inbox], rng: &mut StdRng) -> Vec<Inbox> {
    let outgoing: Vec<(usize, Vec<Outgoing>)> = parties
        .iter_mut()
        .enumerate()
        .map(|(i, p)| match p.step(&inboxes[i], rng).unwrap() {
            Step::Send(list) => (i + 1, list),
            Step::Done(_) => panic!(),
        })
        .collect();
    route(outgoing, parties.len())
}

fn first_round() -> (KeygenParams, Vec<Party>, Vec<Inbox>, StdRng) {
    first_round_with(0)
}

/// The same with the distributed sieve up to `sieve_bound` (round "sieve" when not 0).
fn first_round_with(sieve_bound: u32) -> (KeygenParams, Vec<Party>, Vec<Inbox>, StdRng) {
    let mut params = KeygenParams::new(512, 65537, 3, 2).unwrap();
    params.batch = 4;
    params.distributed_sieve_bound = sieve_bound;
    let mut rng = StdRng::seed_from_u64(9);
    let mut parties: Vec<Party> = (1..=3).map(|i| Party::new(i, &params).unwrap()).collect();
    let outgoing = parties
        .iter_mut()
        .enumerate()
        .map(|(i, p)| match p.step(&[], &mut rng).unwrap() {
            Step::Send(list) => (i + 1, list),
            Step::Done(_) => panic!("done in round 0"),
        })
        .collect();
    (params, parties, route(outgoing, 3), rng)
}

fn expect_error(mutate: impl FnOnce(&mut Vec<(usize, Message)>), check: fn(&KeygenError) -> bool) {
    expect_error_with(0, mutate, check);
}

fn expect_error_with(
    sieve_bound: u32,
    mutate: impl FnOnce(&mut Vec<(usize, Message)>),
    check: fn(&KeygenError) -> bool,
) {
    let (_, mut parties, mut inboxes, mut rng) = first_round_with(sieve_bound);
    mutate(&mut inboxes[0]);
    let err = parties[0].step(&inboxes[0], &mut rng).unwrap_err();
    assert!(check(&err), "{err:?}");
    // Any error ends the run.
    assert!(matches!(
        parties[0].step(&inboxes[0], &mut rng),
        Err(KeygenError::Finished)
    ));
}

fn shares_of(inbox: &mut [(usize, Message)]) -> &mut Shares {
    match &mut inbox[0].1.body {
        Body::Shares(s) => s,
        other => panic!("{other:?}"),
    }
}

fn sieve_of(inbox: &mut [(usize, Message)]) -> &mut SieveShares {
    match &mut inbox[0].1.body {
        Body::Sieve(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_sieve_messages_are_errors() {
    let bad = |e: &KeygenError| matches!(e, KeygenError::BadMessage { .. });
    let unexpected = |e: &KeygenError| matches!(e, KeygenError::UnexpectedMessage { .. });
    let on = |mutate: fn(&mut SieveShares), check: fn(&KeygenError) -> bool| {
        expect_error_with(100, |inbox| mutate(sieve_of(inbox)), check);
    };
    on(
        |s| {
            s.values.pop();
        },
        bad,
    );
    on(|s| s.zero.extend([0u8; 2]), bad);
    on(|s| s.zero.clear(), bad);
    on(|s| s.values.iter_mut().for_each(|b| *b = 0xff), bad);
    on(|s| s.zero.iter_mut().for_each(|b| *b = 0xff), bad);
    on(|s| s.level = 1, unexpected);
    on(|s| s.batch = 3, unexpected);
    expect_error_with(
        100,
        |inbox| {
            inbox[0].1.body = Body::Products(ittc_threshold::keygen::Products {
                batch: 0,
                values: Vec::new(),
            })
        },
        unexpected,
    );
    // A "shares" message where the sieve is expected, and the other way round.
    let (_, _, mut shares_inboxes, _) = first_round();
    let shares = shares_inboxes[0].remove(0).1;
    expect_error_with(100, |inbox| inbox[0].1.body = shares.body, unexpected);
    let (_, _, mut sieve_inboxes, _) = first_round_with(100);
    let sieve = sieve_inboxes[0].remove(0).1;
    expect_error(|inbox| inbox[0].1.body = sieve.body, unexpected);
    // The reduce round checks its level and size too.
    let (_, mut parties, inboxes, mut rng) = first_round_with(100);
    let mut inboxes = next_round(&mut parties, &inboxes, &mut rng);
    let reduce = sieve_of(&mut inboxes[1]);
    assert_eq!((reduce.level, reduce.zero.len()), (1, 0));
    reduce.values.truncate(reduce.values.len() - 1);
    assert!(matches!(
        parties[1].step(&inboxes[1], &mut rng),
        Err(KeygenError::BadMessage { from: 1, .. })
    ));
}

#[test]
fn bad_messages_are_errors() {
    let bad = |e: &KeygenError| matches!(e, KeygenError::BadMessage { .. });
    let unknown = |e: &KeygenError| matches!(e, KeygenError::UnknownParty { .. });
    let unexpected = |e: &KeygenError| matches!(e, KeygenError::UnexpectedMessage { .. });
    expect_error(
        |inbox| {
            shares_of(inbox).p.pop();
        },
        bad,
    );
    expect_error(|inbox| shares_of(inbox).q.extend([0u8; 3]), bad);
    expect_error(|inbox| shares_of(inbox).zero.clear(), bad);
    expect_error(
        |inbox| shares_of(inbox).p.iter_mut().for_each(|b| *b = 0xff),
        bad,
    );
    expect_error(|inbox| inbox[0].0 = 0, unknown);
    expect_error(|inbox| inbox[0].0 = 4, unknown);
    expect_error(|inbox| inbox[0].0 = 1, unknown);
    expect_error(|inbox| inbox[1].0 = inbox[0].0, unknown);
    expect_error(
        |inbox| {
            inbox.pop();
        },
        |e| matches!(e, KeygenError::MissingMessages { .. }),
    );
    expect_error(|inbox| inbox[0].1.round = 1, unexpected);
    expect_error(|inbox| shares_of(inbox).batch = 7, unexpected);
    expect_error(
        |inbox| {
            inbox[0].1.body = Body::Reveal(ittc_threshold::keygen::Reveal {
                batch: 0,
                z: Vec::new(),
                phi_mod_e: 0,
            })
        },
        unexpected,
    );
    // Messages before the first round.
    let (params, _, inboxes, mut rng) = first_round();
    let mut fresh = Party::new(1, &params).unwrap();
    assert!(fresh.step(&inboxes[0], &mut rng).is_err());
}

#[test]
fn bad_products_are_errors() {
    let (_, mut parties, inboxes, mut rng) = first_round();
    let mut inboxes = next_round(&mut parties, &inboxes, &mut rng);
    let Body::Products(products) = &mut inboxes[1][0].1.body else {
        panic!()
    };
    products.values.iter_mut().for_each(|b| *b = 0xff);
    assert!(matches!(
        parties[1].step(&inboxes[1], &mut rng),
        Err(KeygenError::BadMessage { from: 1, .. })
    ));
}

#[test]
fn messages_round_trip_through_bincode_and_secrets_are_redacted() {
    let (_, parties, inboxes, _) = first_round();
    let config = bincode::config::standard();
    for (_, message) in &inboxes[0] {
        let bytes = bincode::encode_to_vec(message, config).unwrap();
        let (back, used): (Message, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(&back, message);
        let shown = format!("{message:?}");
        assert!(
            shown.contains("Shares") && !shown.contains("p: ["),
            "{shown}"
        );
    }
    let (_, parties_sieving, inboxes, _) = first_round_with(100);
    for (_, message) in &inboxes[0] {
        let bytes = bincode::encode_to_vec(message, config).unwrap();
        let (back, _): (Message, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(&back, message);
        let shown = format!("{message:?}");
        assert!(
            shown.contains("SieveShares") && !shown.contains("values: ["),
            "{shown}"
        );
    }
    let shown = format!("{:?}", parties_sieving[0]);
    assert!(shown.contains("sieve"), "{shown}");
    let shown = format!("{:?}", parties[0]);
    assert!(
        shown.contains("index: 1") && shown.contains("shares"),
        "{shown}"
    );
}

/// Counters and times over several seeds (KEYGEN_RUNS, default 5) at KEYGEN_BITS (default
/// 1024), all parties in this one thread, optionally with KEYGEN_SIEVE_BOUND (the
/// distributed sieve's) and KEYGEN_PUBLIC_SIEVE_BOUND: `cargo test -p ittc-threshold --test keygen
/// keygen_statistics -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check: several full generations"]
fn keygen_statistics() {
    let bits = std::env::var("KEYGEN_BITS").map_or(1024, |v| v.parse().unwrap());
    let runs = std::env::var("KEYGEN_RUNS").map_or(5, |v| v.parse().unwrap());
    let mut params = KeygenParams::new(bits, 65537, 3, 2).unwrap();
    if let Ok(bound) = std::env::var("KEYGEN_SIEVE_BOUND") {
        params.distributed_sieve_bound = bound.parse().unwrap();
    }
    if let Ok(bound) = std::env::var("KEYGEN_PUBLIC_SIEVE_BOUND") {
        params.sieve_bound = bound.parse().unwrap();
    }
    let (mut seconds, mut pairs) = (0.0, 0);
    for seed in 0..runs {
        let started = Instant::now();
        let out = check(&params, 1000 + seed);
        seconds += started.elapsed().as_secs_f64();
        pairs += out.stats.candidates;
    }
    println!(
        "distributed sieve bound {}, public {}: {:.1} s and {} pairs per key over {runs} runs",
        params.distributed_sieve_bound,
        params.sieve_bound,
        seconds / runs as f64,
        pairs / runs
    );
}
