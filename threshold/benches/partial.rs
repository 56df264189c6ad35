//! The cost of one partial operation next to its references, in one run on the same keys:
//!
//! * one partial `c^(s_i + i·2^L) mod N` with each backend compiled in (2-of-3 sharing),
//! * OpenSSL's ordinary CRT signature (`RSA_private_encrypt`, no padding) with the same key,
//! * OpenSSL's constant-time exponentiation with a random exponent of the share's length,
//! * what the PKCS#11 module adds per operation: blinding and unblinding, and combine
//!   (Lagrange in the exponent, Bezout, the `y^e = c` check) for k = 2, 3, 5.
//!
//! Run: `cargo bench -p ittc-threshold --features openssl-backend --bench partial`; with
//! `--features openssl-backend,gmp-backend` the GMP backend has its line too.
//! `ITTC_BENCH_SECONDS` sets the time spent on each figure (default 2).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use ittc_threshold::{
    Backend, Blinding, Combiner, KeyShare, Partial, RsaPrivateKey, SharingParams, split_key,
};
use num_bigint::BigUint;
use openssl::bn::{BigNum, BigNumContext};
use openssl::rsa::{Padding, Rsa};
use rand::RngExt;

fn load_key(bits: usize) -> (RsaPrivateKey, Rsa<openssl::pkey::Private>) {
    let path = format!(
        "{}/../vectors/wycheproof/rsa_pkcs1_{bits}_sig_gen_test.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let pem = file["testGroups"][0]["privateKeyPem"].as_str().unwrap();
    (
        RsaPrivateKey::from_bytes(pem.as_bytes(), None).unwrap(),
        Rsa::private_key_from_pem(pem.as_bytes()).unwrap(),
    )
}

/// Median time of one call, over batches run for about `budget`.
fn measure(budget: Duration, mut op: impl FnMut()) -> Duration {
    op(); // warm-up
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 5 {
        let t = Instant::now();
        op();
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:>9.3} ms", d.as_secs_f64() * 1e3)
}

fn random_input(key: &RsaPrivateKey) -> BigUint {
    let mut bytes = vec![0u8; key.public_key().size()];
    rand::rng().fill(&mut bytes[1..]);
    BigUint::from_bytes_be(&bytes)
}

fn main() {
    let seconds: f64 = std::env::var("ITTC_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let budget = Duration::from_secs_f64(seconds);
    println!(
        "ittc-threshold partial-operation benchmark ({} cores visible, median of runs over {seconds} s each)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!("| modulus | operation | exponent bits | time | vs OpenSSL CRT sign |");
    println!("|---|---|---|---|---|");
    for bits in [2048usize, 3072, 4096] {
        let (key, ossl) = load_key(bits);
        let params = SharingParams::new(2, 3).unwrap();
        let shares: Vec<KeyShare> =
            split_key(&key, params, Backend::default().get(), &mut rand::rng())
                .unwrap()
                .iter()
                .map(|h| h.share().clone())
                .collect();
        let share_bits = params.share_bits(key.public_key());
        let input = random_input(&key);

        let k = key.public_key().size();
        let em = key.public_key().integer_to_be(&input);
        let mut sig = vec![0u8; k];
        let crt = measure(budget, || {
            ossl.private_encrypt(black_box(&em), &mut sig, Padding::NONE)
                .unwrap();
        });
        println!(
            "| {bits} | OpenSSL CRT signature (RSA_private_encrypt) | {bits} | {} | 1.00 |",
            ms(crt)
        );

        for backend in Backend::available() {
            let backend = backend.get();
            let t = measure(budget, || {
                black_box(
                    backend
                        .partial(key.public_key(), &shares[0], black_box(&input))
                        .unwrap(),
                );
            });
            println!(
                "| {bits} | one partial, {} | {share_bits} | {} | {:.2} |",
                backend.name(),
                ms(t),
                t.as_secs_f64() / crt.as_secs_f64()
            );
        }

        let modulus = BigNum::from_slice(&key.public_key().n_be()).unwrap();
        let base = BigNum::from_slice(&em).unwrap();
        let mut exponent = BigNum::new().unwrap();
        exponent
            .rand(share_bits as i32, openssl::bn::MsbOption::ONE, false)
            .unwrap();
        exponent.set_const_time();
        let mut ctx = BigNumContext::new().unwrap();
        let mut out = BigNum::new().unwrap();
        let floor = measure(budget, || {
            out.mod_exp(black_box(&base), &exponent, &modulus, &mut ctx)
                .unwrap();
        });
        println!(
            "| {bits} | OpenSSL BN_mod_exp_mont_consttime (the floor) | {share_bits} | {} | {:.2} |",
            ms(floor),
            floor.as_secs_f64() / crt.as_secs_f64()
        );
    }

    println!();
    println!("| modulus | module-side operation | time |");
    println!("|---|---|---|");
    let (key, _) = load_key(2048);
    let input = random_input(&key);
    let t = measure(budget, || {
        let (blinding, blinded) =
            Blinding::new(key.public_key(), &input, &mut rand::rng()).unwrap();
        black_box(
            blinding
                .unblind(key.public_key(), black_box(&blinded))
                .unwrap(),
        );
    });
    println!("| 2048 | blind and unblind (apart) | {} |", ms(t));
    for k in [2usize, 3, 5] {
        let n = 2 * k - 1;
        let params = SharingParams::new(k, n).unwrap();
        let shares: Vec<KeyShare> =
            split_key(&key, params, Backend::default().get(), &mut rand::rng())
                .unwrap()
                .iter()
                .map(|h| h.share().clone())
                .collect();
        let input = random_input(&key);
        let partials: Vec<Partial> = shares
            .iter()
            .take(k)
            .map(|s| Partial {
                index: s.index(),
                value: Backend::default()
                    .get()
                    .partial(key.public_key(), s, &input)
                    .unwrap(),
            })
            .collect();
        let combiner = Combiner::new(key.public_key(), &params).unwrap();
        let t = measure(budget, || {
            black_box(combiner.combine(&input, black_box(&partials)).unwrap());
        });
        println!(
            "| 2048 | combine {k}-of-{n} (with the y^e = c check) | {} |",
            ms(t)
        );
        let (blinding, blinded) =
            Blinding::new(key.public_key(), &input, &mut rand::rng()).unwrap();
        let blinded_partials: Vec<Partial> = shares
            .iter()
            .take(k)
            .map(|s| Partial {
                index: s.index(),
                value: Backend::default()
                    .get()
                    .partial(key.public_key(), s, &blinded)
                    .unwrap(),
            })
            .collect();
        let t = measure(budget, || {
            // A fresh blinding each time (its cost counts), combined with a fixed one whose
            // partials were computed beforehand.
            black_box(Blinding::new(key.public_key(), &input, &mut rand::rng()).unwrap());
            let outcome = combiner
                .combine_robust_blinded(&blinded, black_box(&blinded_partials), blinding.clone())
                .unwrap();
            black_box(outcome);
        });
        println!(
            "| 2048 | blind, combine {k}-of-{n} and unblind (the module's whole share, less the partials) | {} |",
            ms(t)
        );
    }
}
