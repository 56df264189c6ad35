//! `ittc-bench compare`: two builds side by side, for performance work. It starts two
//! local 2-of-3 clusters with the same RSA-2048 key, one running appliance build A and one
//! build B (each with its own PKCS#11 module if asked), and measures them in turn, round
//! after round (A first in odd rounds, B first in even ones), so that both see the same
//! drift of the machine's speed: 2-thread C_Sign throughput and the 1-thread C_Sign median.
//! The summary is the mean of the rounds' changes B/A − 1 with its standard error.
//!
//! With `--refreshes-b N`, B's key is refreshed N times before the rounds (both clusters
//! may then run the same build): what a key costs after many proactive refreshes, against
//! a freshly imported one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::report::throughput_at;
use crate::setup::{self, IttcCluster};
use crate::{Plan, measure_module};

/// What to compare.
#[derive(Clone, Debug, clap::Args)]
pub struct CompareArgs {
    /// The appliance binary of build A, the reference (e.g. built from the commit before).
    #[arg(long, value_name = "FILE")]
    appliance_a: PathBuf,
    /// The appliance binary of build B [default: the one beside ittc-bench].
    #[arg(long, value_name = "FILE")]
    appliance_b: Option<PathBuf>,
    /// The PKCS#11 module for A [default: the one beside ittc-bench].
    #[arg(long, value_name = "FILE")]
    module_a: Option<PathBuf>,
    /// The PKCS#11 module for B [default: the one beside ittc-bench].
    #[arg(long, value_name = "FILE")]
    module_b: Option<PathBuf>,
    /// Rounds.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Client threads for the throughput figure.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds per throughput figure.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Latency samples per round.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Refresh B's key this many times before measuring.
    #[arg(long, default_value_t = 0)]
    refreshes_b: u32,
}

/// One build's figures in one round.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    /// C_Sign CKM_SHA256_RSA_PKCS per second on `threads` threads.
    pub throughput: f64,
    /// C_Sign CKM_SHA256_RSA_PKCS median on 1 thread, ms.
    pub p50_ms: f64,
}

/// B against A over the rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// Mean of A's figures.
    pub a: f64,
    /// Mean of B's figures.
    pub b: f64,
    /// Mean of the rounds' B/A − 1.
    pub change: f64,
    /// Standard error of that mean.
    pub standard_error: f64,
    /// Rounds in which B did better (higher throughput, lower latency).
    pub b_better: usize,
}

impl Change {
    fn new(pairs: &[(f64, f64)], higher_is_better: bool) -> Self {
        let n = pairs.len().max(1) as f64;
        let changes: Vec<f64> = pairs.iter().map(|(a, b)| b / a - 1.0).collect();
        let change = changes.iter().sum::<f64>() / n;
        let variance =
            changes.iter().map(|c| (c - change).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Self {
            a: pairs.iter().map(|(a, _)| a).sum::<f64>() / n,
            b: pairs.iter().map(|(_, b)| b).sum::<f64>() / n,
            change,
            standard_error: (variance / n).sqrt(),
            b_better: pairs
                .iter()
                .filter(|(a, b)| if higher_is_better { b > a } else { b < a })
                .count(),
        }
    }
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// Build A: appliance and module.
    pub a: (String, String),
    /// Build B: appliance and module.
    pub b: (String, String),
    /// How many times B's key was refreshed before the rounds.
    pub refreshes_b: u32,
    /// Bits of the shares the partial operations exponentiate with, A and B.
    pub share_bits: (u32, u32),
    /// Client threads of the throughput figures.
    pub threads: usize,
    /// Each round: A, then B.
    pub rounds: Vec<(Side, Side)>,
    /// Throughput, B against A.
    pub throughput: Change,
    /// 1-thread median latency, B against A.
    pub latency: Change,
}

fn measure(
    cluster: &IttcCluster,
    module: &Path,
    plan: &Plan,
    threads: usize,
) -> Result<Side, String> {
    let f = measure_module(
        module,
        ("ITTC_PKCS11_CONFIG", &cluster.appliances.config()),
        None,
        plan,
    )?;
    Ok(Side {
        throughput: throughput_at(&f, threads),
        p50_ms: f.sign_pkcs1.p50_ms,
    })
}

/// Runs the comparison.
pub fn run(args: &CompareArgs, bins: &Path) -> Result<CompareReport, String> {
    let beside = |name: &str| bins.join(name);
    let appliance_b = args
        .appliance_b
        .clone()
        .unwrap_or_else(|| beside("ittc-appliance"));
    let module_a = args
        .module_a
        .clone()
        .unwrap_or_else(|| beside("libittc_pkcs11.so"));
    let module_b = args
        .module_b
        .clone()
        .unwrap_or_else(|| beside("libittc_pkcs11.so"));
    for file in [&args.appliance_a, &appliance_b, &module_a, &module_b] {
        if !file.is_file() {
            return Err(format!("{} does not exist", file.display()));
        }
    }
    let plan = Plan {
        configs: Vec::new(),
        rounds: args.rounds,
        samples: args.samples,
        seconds: args.seconds,
        floor_budget: Duration::ZERO,
        threads: vec![args.threads],
        first_runs: 0,
    };
    let key = setup::dealer_key(2048)?;
    eprintln!(
        "==> cluster A ({}), cluster B ({})",
        args.appliance_a.display(),
        appliance_b.display()
    );
    let share_bits = ittc_threshold::Bounds::new(
        key.public_key(),
        &ittc_threshold::SharingParams::new(2, 3).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?
    .share_bits();
    let a = setup::ittc_cluster_with(key.clone(), 2, 3, &args.appliance_a)?;
    let b = setup::ittc_cluster_with(key, 2, 3, &appliance_b)?;
    if args.refreshes_b > 0 {
        eprintln!("==> refreshing B's key {} times", args.refreshes_b);
        setup::refresh(&b, args.refreshes_b)?;
    }
    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        eprintln!("==> round {round} of {}", args.rounds);
        let (side_a, side_b) = if round % 2 == 1 {
            let side_a = measure(&a, &module_a, &plan, args.threads)?;
            (side_a, measure(&b, &module_b, &plan, args.threads)?)
        } else {
            let side_b = measure(&b, &module_b, &plan, args.threads)?;
            (measure(&a, &module_a, &plan, args.threads)?, side_b)
        };
        rounds.push((side_a, side_b));
    }
    let pairs = |f: fn(&Side) -> f64| -> Vec<(f64, f64)> {
        rounds.iter().map(|(a, b)| (f(a), f(b))).collect()
    };
    Ok(CompareReport {
        a: (
            args.appliance_a.display().to_string(),
            module_a.display().to_string(),
        ),
        b: (
            appliance_b.display().to_string(),
            module_b.display().to_string(),
        ),
        refreshes_b: args.refreshes_b,
        share_bits: (share_bits, share_bits),
        threads: args.threads,
        throughput: Change::new(&pairs(|s| s.throughput), true),
        latency: Change::new(&pairs(|s| s.p50_ms), false),
        rounds,
    })
}

impl CompareReport {
    /// The table, markdown.
    pub fn table(&self) -> String {
        let t = self.threads;
        let mut out = format!(
            "ittc-bench compare, {}\n\nA: {} with {}, a freshly imported key (shares of {} bits)\n\
             B: {} with {}, the same key refreshed {} times (shares of {} bits)\n\n\
             | round | A C_Sign/s ({t} threads) | B | A p50 (1 thread) | B |\n|---|---|---|---|---|\n",
            crate::report::machine_line(),
            self.a.0,
            self.a.1,
            self.share_bits.0,
            self.b.0,
            self.b.1,
            self.refreshes_b,
            self.share_bits.1,
        );
        for (i, (a, b)) in self.rounds.iter().enumerate() {
            out += &format!(
                "| {} | {:.0}/s | {:.0}/s | {:.2} ms | {:.2} ms |\n",
                i + 1,
                a.throughput,
                b.throughput,
                a.p50_ms,
                b.p50_ms
            );
        }
        let line = |what: &str, c: &Change| {
            format!(
                "{what}: B against A {:+.1}% (standard error {:.1}%; B better in {} of {} rounds)\n",
                100.0 * c.change,
                100.0 * c.standard_error,
                c.b_better,
                self.rounds.len()
            )
        };
        out += "\n";
        out += &line(&format!("C_Sign/s on {t} threads"), &self.throughput);
        out += &line("C_Sign median on 1 thread", &self.latency);
        out
    }
}
