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
    Step,
};
use ittc_threshold::{
    Backend, Bounds, Error, HolderShare, KeyShare, Partial, Plan, SharingParams, Source, combine,
    combine_robust, refresh_all, run_plan,
};
use num_bigint::{BigInt, BigUint};
use num_integer::Integer;
use num_traits::{One, Zero};
use openssl::bn::{BigNum, BigNumContext};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Everything a run produced, as seen by the driver.
struct Run {
    outputs: Vec<KeygenOutput>,
    /// The last batch's `shares` messages, by (sender, recipient).
    shares: BTreeMap<(usize, usize), Shares>,
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
                        shares.insert((*from, to), s.clone());
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

/// Party `i`'s value for one candidate, from the shares it sent to the others.
fn party_secret(run: &Run, params: &KeygenParams, i: usize, pick: fn(&Shares) -> &[u8]) -> BigUint {
    let m = params.field_modulus();
    let len = m.bits().div_ceil(8) as usize;
    let c = run.chosen.1 as usize;
    let points: Vec<(usize, BigUint)> = run
        .shares
        .iter()
        .filter(|((from, _), s)| *from == i && s.batch == run.chosen.0)
        .map(|((_, to), s)| {
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
    run.outputs.into_iter().next().unwrap()
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

/// Three parties of a small generation and their first-round messages.
fn first_round() -> (KeygenParams, Vec<Party>, Vec<Inbox>, StdRng) {
    let mut params = KeygenParams::new(512, 65537, 3, 2).unwrap();
    params.batch = 4;
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
    let (_, mut parties, mut inboxes, mut rng) = first_round();
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
    let outgoing: Vec<(usize, Vec<Outgoing>)> = parties
        .iter_mut()
        .enumerate()
        .map(|(i, p)| match p.step(&inboxes[i], &mut rng).unwrap() {
            Step::Send(list) => (i + 1, list),
            Step::Done(_) => panic!(),
        })
        .collect();
    let mut inboxes = route(outgoing, 3);
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
    let shown = format!("{:?}", parties[0]);
    assert!(
        shown.contains("index: 1") && shown.contains("shares"),
        "{shown}"
    );
}

/// Counters and times over several seeds (KEYGEN_RUNS, default 5) at KEYGEN_BITS (default
/// 1024), all parties in this one thread: `cargo test -p ittc-threshold --test keygen
/// keygen_statistics -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check: several full generations"]
fn keygen_statistics() {
    let bits = std::env::var("KEYGEN_BITS").map_or(1024, |v| v.parse().unwrap());
    let runs = std::env::var("KEYGEN_RUNS").map_or(5, |v| v.parse().unwrap());
    let params = KeygenParams::new(bits, 65537, 3, 2).unwrap();
    for seed in 0..runs {
        check(&params, 1000 + seed);
    }
}
