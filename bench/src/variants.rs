//! One partial per build variant, next to the floor (docs/diversity.md): a 2-of-m cluster
//! whose appliance i runs variant i of `scripts/variants` and whose last appliance runs
//! the default build beside the benchmark. In each round the floor is measured, then
//! every appliance in turn serves single partials to one logged-in client: the time from
//! request to answer, which holds the exponentiation with the variant's own backend and
//! codegen, the TLS record, the audit entry on disk and the answer.
//!
//! Next to it, each exponentiation backend compiled into this benchmark does the same
//! exponentiation in-process, so that the share of the served time that is arithmetic
//! shows.

use std::path::Path;
use std::time::{Duration, Instant};

use ittc_provisioning::demo::{default_variants_dir, variant_programs};
use ittc_threshold::{Backend, RsaPrivateKey, SharingParams, split_key};
use ittc_wire::client::Timeouts;
use ittc_wire::cluster::ClusterConfig;
use ittc_wire::{Connection, KeyId, Request, Response, SecretBytes, UserKind};
use serde::Serialize;

use crate::floor;
use crate::report::median;
use crate::setup::{self, PIN};

/// The figures of one appliance build.
#[derive(Clone, Debug, Serialize)]
pub struct VariantFigures {
    /// The name it reports (`backend+tls+allocator`).
    pub name: String,
    /// Its number in `scripts/variants`, `None` for the default build.
    pub number: Option<u8>,
    /// Median time of one served partial (request to answer), median over the rounds.
    pub served_ms: f64,
    /// `served_ms` over the floor's partial, median of the rounds' ratios.
    pub vs_floor: f64,
    /// `served_ms` over the fastest build's in the same round, median of the rounds'.
    pub vs_fastest: f64,
}

/// One exponentiation backend of this benchmark, in-process.
#[derive(Clone, Debug, Serialize)]
pub struct BackendFigures {
    /// Its name.
    pub backend: String,
    /// Median time of one partial exponentiation, median over the rounds.
    pub partial_ms: f64,
    /// Over the floor's partial, median of the rounds' ratios.
    pub vs_floor: f64,
}

/// The variants section of the report.
#[derive(Clone, Debug, Serialize)]
pub struct VariantsReport {
    /// Modulus bits.
    pub bits: usize,
    /// The cluster's k and m (the variants and the default build).
    pub threshold: u8,
    /// Appliances.
    pub parties: u8,
    /// Rounds.
    pub rounds: usize,
    /// The floor's partial (OpenSSL's constant-time exponentiation), median over the rounds.
    pub floor_partial_ms: f64,
    /// Bits of the partial's exponent.
    pub exponent_bits: u32,
    /// Every build measured.
    pub variants: Vec<VariantFigures>,
    /// Every backend of this benchmark, in-process.
    pub backends: Vec<BackendFigures>,
    /// Variants listed but not measured, and why.
    pub skipped: Vec<String>,
}

/// How much to measure.
pub struct VariantPlan {
    /// Rounds.
    pub rounds: usize,
    /// Partials per build and round.
    pub samples: usize,
    /// The floor's time per round.
    pub floor_budget: Duration,
}

/// A client connection to appliance `index` of the cluster in `config`, logged in.
fn user_session(config: &Path, index: u8) -> Result<Connection, String> {
    let cluster = ClusterConfig::load(config).map_err(|e| e.to_string())?;
    let identity = cluster.identity().map_err(|e| e.to_string())?;
    let tls = cluster
        .client_config_for(&identity)
        .map_err(|e| e.to_string())?;
    let entry = cluster
        .appliance(index)
        .ok_or_else(|| format!("no appliance {index}"))?;
    let address = entry.resolve().map_err(|e| e.to_string())?;
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        io: Duration::from_secs(30),
    };
    let mut c = Connection::connect(address, index, tls, timeouts, "ittc-bench")
        .map_err(|e| format!("appliance {index}: {e}"))?;
    match c.request(&Request::Login {
        user: UserKind::User,
        pin: SecretBytes::new(PIN.as_bytes().to_vec()),
    }) {
        Ok(Response::Ok) => Ok(c),
        other => Err(format!("login on appliance {index}: {other:?}")),
    }
}

/// Median time of one in-process call of `op`, over `samples` calls after one warm-up.
fn time_each(samples: usize, mut op: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    op()?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        op()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times.into_iter()))
}

/// Measures every variant that `scripts/variants` built beside the benchmark's build, and
/// the default build, at RSA-`bits`. `Ok(None)` when there is no variant to measure.
pub fn measure(
    bits: usize,
    bins: &Path,
    plan: &VariantPlan,
) -> Result<Option<VariantsReport>, String> {
    let default = bins.join("ittc-appliance");
    let Some(dir) = default_variants_dir() else {
        return Ok(None);
    };
    let (found, skipped) = variant_programs(&dir, &default);
    if found.is_empty() {
        return Ok(None);
    }
    let mut builds: Vec<(Option<u8>, String, std::path::PathBuf)> = found
        .into_iter()
        .map(|(n, p)| (Some(n), p.variant.unwrap_or_default(), p.path))
        .collect();
    builds.push((None, String::new(), default));
    let parties = u8::try_from(builds.len()).map_err(|_| "too many variants")?;
    let threshold = 2;
    let programs: Vec<&Path> = builds.iter().map(|(_, _, p)| p.as_path()).collect();
    let key = setup::dealer_key(bits)?;
    let cluster = setup::ittc_cluster_of(key, threshold, &programs)?;
    let config = cluster.appliances.config();
    let mut sessions = (1..=parties)
        .map(|i| user_session(&config, i))
        .collect::<Result<Vec<_>, _>>()?;
    // Each build's name as it reports it in its hello (the default build's is not listed).
    for ((_, name, _), session) in builds.iter_mut().zip(&sessions) {
        name.clone_from(&session.hello().build_variant);
    }

    let public = cluster.key.public_key().clone();
    let key_id = KeyId::new(hex::decode(setup::KEY_ID).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let input = public.random_residue(&mut rand::rng());
    let request = Request::Partial {
        key_id,
        epoch: 1,
        input: public.integer_to_be(&input),
    };
    // In-process shares of the same size (k, m) for the backends of this benchmark.
    let params = SharingParams::new(usize::from(threshold), usize::from(parties))
        .map_err(|e| e.to_string())?;
    let local = local_share(&cluster.key, params)?;

    let mut floors = Vec::new();
    let mut served: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    let mut served_vs_floor: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    let mut served_vs_fastest: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    let backends = Backend::available();
    let mut local_ms: Vec<Vec<f64>> = vec![Vec::new(); backends.len()];
    let mut local_vs_floor: Vec<Vec<f64>> = vec![Vec::new(); backends.len()];
    let mut exponent_bits = 0;
    for round in 1..=plan.rounds {
        eprintln!(
            "==> build variants, RSA-{bits} {threshold}-of-{parties}, round {round} of {}: floor, {} builds, {} backends in-process",
            plan.rounds,
            builds.len(),
            backends.len()
        );
        let floor = floor::measure(
            &cluster.key,
            usize::from(threshold),
            usize::from(parties),
            plan.floor_budget,
        )?;
        exponent_bits = floor.exponent_bits;
        let mut round_served = Vec::with_capacity(builds.len());
        for (i, session) in sessions.iter_mut().enumerate() {
            let ms = time_each(plan.samples, || match session.request(&request) {
                Ok(Response::PartialResult(_)) => Ok(()),
                other => Err(format!("partial from appliance {}: {other:?}", i + 1)),
            })?;
            round_served.push(ms);
        }
        let fastest = round_served.iter().copied().fold(f64::INFINITY, f64::min);
        for (i, ms) in round_served.into_iter().enumerate() {
            served[i].push(ms);
            served_vs_floor[i].push(ms / floor.partial_ms);
            served_vs_fastest[i].push(ms / fastest);
        }
        for (i, backend) in backends.iter().enumerate() {
            let exp = backend.get();
            let ms = time_each(plan.samples, || {
                exp.partial(&public, &local, &input)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })?;
            local_ms[i].push(ms);
            local_vs_floor[i].push(ms / floor.partial_ms);
        }
        floors.push(floor.partial_ms);
    }
    let variants = builds
        .into_iter()
        .enumerate()
        .map(|(i, (number, name, _))| VariantFigures {
            name,
            number,
            served_ms: median(served[i].iter().copied()),
            vs_floor: median(served_vs_floor[i].iter().copied()),
            vs_fastest: median(served_vs_fastest[i].iter().copied()),
        })
        .collect();
    let backends = backends
        .iter()
        .enumerate()
        .map(|(i, b)| BackendFigures {
            backend: b.get().name().to_owned(),
            partial_ms: median(local_ms[i].iter().copied()),
            vs_floor: median(local_vs_floor[i].iter().copied()),
        })
        .collect();
    Ok(Some(VariantsReport {
        bits,
        threshold,
        parties,
        rounds: plan.rounds,
        floor_partial_ms: median(floors.into_iter()),
        exponent_bits,
        variants,
        backends,
        skipped,
    }))
}

/// One share of `key` split `params`, for the in-process figures.
fn local_share(
    key: &RsaPrivateKey,
    params: SharingParams,
) -> Result<ittc_threshold::KeyShare, String> {
    let holders = split_key(key, params, Backend::default().get(), &mut rand::rng())
        .map_err(|e| e.to_string())?;
    holders
        .first()
        .map(|h| h.share().clone())
        .ok_or_else(|| "no share".into())
}

impl VariantsReport {
    /// The section of the table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "\nBuild variants (docs/diversity.md), RSA-{} {}-of-{} (one appliance per build), \
             medians over {} rounds: one partial as served (request to answer, with TLS and the \
             audit entry on disk), next to the floor's partial ({:.2} ms, {} bits) and to the \
             fastest build.\n\n\
             | build | one partial, served | ×floor | ×fastest |\n|---|---|---|---|\n",
            self.bits,
            self.threshold,
            self.parties,
            self.rounds,
            self.floor_partial_ms,
            self.exponent_bits
        );
        for v in &self.variants {
            let label = match v.number {
                Some(n) => format!("variant {n}: {}", v.name),
                None => format!("default build: {}", v.name),
            };
            out += &format!(
                "| {label} | {:.2} ms | {:.2} | {:.2} |\n",
                v.served_ms, v.vs_floor, v.vs_fastest
            );
        }
        out += "\n| backend in this benchmark (in-process) | one partial exponentiation | ×floor |\n|---|---|---|\n";
        for b in &self.backends {
            out += &format!(
                "| {} | {:.2} ms | {:.2} |\n",
                b.backend, b.partial_ms, b.vs_floor
            );
        }
        for s in &self.skipped {
            out += &format!("\nnot measured: {s}\n");
        }
        out
    }
}
