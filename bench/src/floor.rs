//! The arithmetic floor of one threshold signature: OpenSSL's constant-time exponentiation
//! with an exponent as long as a share, on the same modulus (what each appliance must do),
//! plus the module's combine and check — measured in the same run as the tokens. Also the
//! k partials of one signature started together on this machine's cores, which is what a
//! signature's partials cost here when the appliances share the cores, and the signatures
//! per second the cores give when they do nothing but partials and combines.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ittc_threshold::{Backend, Combiner, Partial, RsaPrivateKey, SharingParams, split_key};
use openssl::bn::{BigNum, BigNumContext, BigNumRef, MsbOption};
use serde::{Deserialize, Serialize};

/// The floor's parts, in milliseconds (medians).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Floor {
    /// One partial: BN_mod_exp_mont_consttime with a share-sized exponent.
    pub partial_ms: f64,
    /// Combine k partials and check with e.
    pub combine_ms: f64,
    /// partial + combine: the least one signature can cost in computation on its path.
    pub total_ms: f64,
    /// k partials started together, one per thread, until the last ends: what they cost
    /// when the k appliances share this machine's cores (at least k ÷ cores partials when
    /// k exceeds the cores, and more where running together slows each one down).
    #[serde(default)]
    pub at_once_ms: f64,
    /// Signatures per second when every core runs a thread that does nothing but one
    /// signature's k partials and its combine, one signature after another: what the
    /// throughput bound leaves once the combine and running together are paid, with no
    /// network, no TLS, no store and no scheduling between processes.
    #[serde(default)]
    pub busy_per_s: f64,
    /// Bits of the exponent.
    pub exponent_bits: u32,
}

fn median(budget: Duration, mut op: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    op()?;
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || times.len() < 5 {
        let t = Instant::now();
        op()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(0.0))
}

/// Measures the floor for `key` shared k-of-n.
pub fn measure(key: &RsaPrivateKey, k: usize, n: usize, budget: Duration) -> Result<Floor, String> {
    let public = key.public_key();
    let params = SharingParams::new(k, n).map_err(|e| e.to_string())?;
    let bits = params.share_bits(public);
    let err = |e: openssl::error::ErrorStack| e.to_string();
    let modulus = BigNum::from_slice(&public.n_be()).map_err(err)?;
    let mut exponent = BigNum::new().map_err(err)?;
    exponent
        .rand(bits as i32, MsbOption::ONE, false)
        .map_err(err)?;
    exponent.set_const_time();
    let input = public.random_residue(&mut rand::rng());
    let base = BigNum::from_slice(&input.to_bytes_be()).map_err(err)?;
    let mut ctx = BigNumContext::new().map_err(err)?;
    let mut out = BigNum::new().map_err(err)?;
    let partial_ms = median(budget, || {
        out.mod_exp(&base, &exponent, &modulus, &mut ctx)
            .map_err(err)
    })?;
    let at_once_ms = at_once(k, budget, &base, &exponent, &modulus)?;

    let shares = split_key(key, params, Backend::default().get(), &mut rand::rng())
        .map_err(|e| e.to_string())?;
    let partials = shares
        .iter()
        .map(ittc_threshold::HolderShare::share)
        .take(k)
        .map(|s| {
            Backend::default()
                .get()
                .partial(public, s, &input)
                .map(|value| Partial {
                    index: s.index(),
                    value,
                })
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let combiner = Combiner::new(public, &params).map_err(|e| e.to_string())?;
    let combine = || {
        combiner
            .combine(&input, &partials)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let combine_ms = median(budget, combine)?;
    let busy_per_s = busy(k, budget, &base, &exponent, &modulus, &combine)?;
    Ok(Floor {
        partial_ms,
        combine_ms,
        total_ms: partial_ms + combine_ms,
        at_once_ms,
        busy_per_s,
        exponent_bits: bits,
    })
}

/// Signatures per second on one thread per core, each thread doing `k` exponentiations and
/// `combine` per signature, for `budget` after every thread has done one.
fn busy(
    k: usize,
    budget: Duration,
    base: &BigNum,
    exponent: &BigNum,
    modulus: &BigNum,
    combine: &(impl Fn() -> Result<(), String> + Sync),
) -> Result<f64, String> {
    let err = |e: openssl::error::ErrorStack| e.to_string();
    let threads = crate::report::cores();
    let states = (0..threads)
        .map(|_| copies(base, exponent, modulus))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers = states
            .into_iter()
            .map(|(base, exponent, modulus, mut ctx, mut out)| {
                let (start, stop) = (&start, &stop);
                scope.spawn(move || -> Result<f64, String> {
                    let mut sign = || -> Result<(), String> {
                        for _ in 0..k {
                            out.mod_exp(&base, &exponent, &modulus, &mut ctx)
                                .map_err(err)?;
                        }
                        combine()
                    };
                    // One signature before the clock starts, then count until told to stop.
                    let warm = sign();
                    start.wait();
                    warm?;
                    let clock = Instant::now();
                    let mut done = 0_u32;
                    while !stop.load(Ordering::Acquire) {
                        sign()?;
                        done += 1;
                    }
                    // This thread's own rate, to the end of its last signature: the
                    // threads end at different times once told to stop.
                    Ok(f64::from(done) / clock.elapsed().as_secs_f64())
                })
            })
            .collect::<Vec<_>>();
        start.wait();
        std::thread::sleep(budget);
        stop.store(true, Ordering::Release);
        let mut per_s = 0.0;
        for worker in workers {
            per_s += worker
                .join()
                .map_err(|_| "a floor thread panicked".to_owned())??;
        }
        Ok(per_s)
    })
}

/// One thread's own copies of the operands, its context and its result.
fn copies(
    base: &BigNum,
    exponent: &BigNum,
    modulus: &BigNum,
) -> Result<(BigNum, BigNum, BigNum, BigNumContext, BigNum), String> {
    let err = |e: openssl::error::ErrorStack| e.to_string();
    let mut exponent = BigNumRef::to_owned(exponent).map_err(err)?;
    exponent.set_const_time();
    Ok((
        BigNumRef::to_owned(base).map_err(err)?,
        exponent,
        BigNumRef::to_owned(modulus).map_err(err)?,
        BigNumContext::new().map_err(err)?,
        BigNum::new().map_err(err)?,
    ))
}

/// The median time of `k` exponentiations started together on `k` threads, until the last
/// ends. Each thread has its own copies; two barriers start and end every repetition.
fn at_once(
    k: usize,
    budget: Duration,
    base: &BigNum,
    exponent: &BigNum,
    modulus: &BigNum,
) -> Result<f64, String> {
    let err = |e: openssl::error::ErrorStack| e.to_string();
    let start = Barrier::new(k + 1);
    let end = Barrier::new(k + 1);
    let stop = AtomicBool::new(false);
    // Each thread's copies and context are made here, so that a thread cannot fail before
    // it meets the barriers (which would leave the others waiting).
    let states = (0..k)
        .map(|_| copies(base, exponent, modulus))
        .collect::<Result<Vec<_>, _>>()?;
    std::thread::scope(|scope| {
        let workers = states
            .into_iter()
            .map(|(base, exponent, modulus, mut ctx, mut out)| {
                let (start, end, stop) = (&start, &end, &stop);
                scope.spawn(move || -> Result<(), String> {
                    let mut result = Ok(());
                    loop {
                        start.wait();
                        if stop.load(Ordering::Acquire) {
                            return result;
                        }
                        if result.is_ok() {
                            result = out
                                .mod_exp(&base, &exponent, &modulus, &mut ctx)
                                .map(|_| ())
                                .map_err(err);
                        }
                        end.wait();
                    }
                })
            })
            .collect::<Vec<_>>();
        let timed = median(budget, || {
            start.wait();
            end.wait();
            Ok(())
        });
        stop.store(true, Ordering::Release);
        start.wait();
        for worker in workers {
            worker
                .join()
                .map_err(|_| "a floor thread panicked".to_owned())??;
        }
        timed
    })
}
