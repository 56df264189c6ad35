//! `ittc-bench keygen`: how long a dealerless generation takes on a local 3-appliance
//! cluster, over several runs (median, 95th percentile and spread), with the protocol's own
//! counts.

use std::path::Path;
use std::time::Duration;

use ittc_provisioning::generate::{GenerateSpec, generate};
use serde::Serialize;

/// One generation.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// Wall time from the request to the commit, seconds.
    pub seconds: f64,
    /// Candidate pairs whose modulus was computed.
    pub candidates: u64,
    /// Moduli that reached the first biprimality test.
    pub biprimality_tests: u64,
    /// Candidate batches (one round trip of shares, products and a first test each).
    pub batches: u32,
    /// Rounds of messages between the appliances.
    pub rounds: u32,
}

/// All runs and their summary.
#[derive(Clone, Debug, Serialize)]
pub struct KeygenReport {
    /// Modulus bits.
    pub bits: u16,
    /// The runs, in order.
    pub runs: Vec<Run>,
    /// Median wall time, seconds.
    pub median_s: f64,
    /// Fastest, seconds.
    pub min_s: f64,
    /// Slowest, seconds.
    pub max_s: f64,
    /// 95th percentile (nearest rank), seconds.
    pub p95_s: f64,
    /// Mean candidate pairs per key.
    pub mean_candidates: f64,
    /// Median candidate pairs per key.
    pub median_candidates: f64,
    /// Cores visible.
    pub cores: usize,
}

/// Runs `runs` generations of `bits` on a fresh 2-of-3 cluster.
pub fn measure(bits: u16, runs: usize, bin_dir: &Path) -> Result<KeygenReport, String> {
    let extra = format!("\n[keygen]\nmin_bits = {}\n", bits.min(2048));
    let appliances = crate::setup::start_cluster(2, 3, &bin_dir.join("ittc-appliance"), &extra)?;
    let cluster = appliances.cluster()?;
    let mut results = Vec::new();
    for run in 0..runs {
        let id = [0x40, u8::try_from(run).unwrap_or(u8::MAX)];
        let spec = GenerateSpec {
            bits,
            public_exponent: 65537,
            id: &id,
            label: "bench keygen",
            timeout: Duration::from_secs(1800),
        };
        let generated = generate(&cluster, &spec, &|_| {}).map_err(|e| e.to_string())?;
        let r = Run {
            seconds: generated.elapsed.as_secs_f64(),
            candidates: generated.stats.candidates,
            biprimality_tests: generated.stats.biprimality_tests,
            batches: generated.stats.batches,
            rounds: generated.stats.rounds,
        };
        eprintln!(
            "==> run {}: {:.1} s, {} candidate pairs, {} biprimality tests, {} batches",
            run + 1,
            r.seconds,
            r.candidates,
            r.biprimality_tests,
            r.batches
        );
        results.push(r);
    }
    let mut times: Vec<f64> = results.iter().map(|r| r.seconds).collect();
    times.sort_by(f64::total_cmp);
    let mut pairs: Vec<f64> = results.iter().map(|r| r.candidates as f64).collect();
    pairs.sort_by(f64::total_cmp);
    Ok(KeygenReport {
        bits,
        median_s: median(&times),
        p95_s: times
            .get((times.len() * 95).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(0.0),
        mean_candidates: pairs.iter().sum::<f64>() / pairs.len().max(1) as f64,
        median_candidates: median(&pairs),
        min_s: times.first().copied().unwrap_or(0.0),
        max_s: times.last().copied().unwrap_or(0.0),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        runs: results,
    })
}

/// The median of sorted values (0 for none).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        l if l % 2 == 1 => sorted[l / 2],
        l => (sorted[l / 2 - 1] + sorted[l / 2]) / 2.0,
    }
}

impl KeygenReport {
    /// The table, markdown.
    pub fn table(&self) -> String {
        let mut out = format!(
            "RSA-{} generation, 3 appliances (2-of-3) on loopback, {} cores\n\n\
             | run | seconds | candidate pairs | biprimality tests | batches | rounds |\n|---|---|---|---|---|---|\n",
            self.bits, self.cores
        );
        for (i, r) in self.runs.iter().enumerate() {
            out += &format!(
                "| {} | {:.1} | {} | {} | {} | {} |\n",
                i + 1,
                r.seconds,
                r.candidates,
                r.biprimality_tests,
                r.batches,
                r.rounds
            );
        }
        out += &format!(
            "\nmedian {:.1} s, 95th percentile {:.1} s (min {:.1}, max {:.1}) over {} runs; \
             candidate pairs per key: median {:.0}, mean {:.0}. Targets for RSA-2048: median \
             at most 5 s, 95th percentile at most 15 s; RSA-3072: median at most 30 s.\n",
            self.median_s,
            self.p95_s,
            self.min_s,
            self.max_s,
            self.runs.len(),
            self.median_candidates,
            self.mean_candidates
        );
        out
    }
}
