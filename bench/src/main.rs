//! `ittc-bench`: how fast a threshold signature is next to what a user would pick instead.
//!
//! In one run on one machine it sets up a local ittc cluster on loopback and a SoftHSM2
//! token, drives both through the same PKCS#11 calls (the `cryptoki` crate, in a child
//! process per module so each module gets its own environment), measures the arithmetic
//! floor on the same modulus, and prints one table with the ratios. It measures in rounds,
//! each with the floor, ittc and SoftHSM2 in turn, and pairs each ratio within its round.
//! `--json FILE` writes the same figures. `--quick` covers RSA-2048 2-of-3 only and
//! finishes in under a minute; the full run adds 3072 and 4096 bits and 3-of-5;
//! `--only BITS:K:N` picks the configurations instead.
//! Where `scripts/variants` has built the appliance's build variants (docs/diversity.md),
//! it also measures one partial served by each, next to the floor; `variants` measures
//! only that. `compare` measures two appliance builds in turn instead, and `keygen` times
//! key generation.
//!
//! Build first: `cargo build --release -p ittc-bench -p ittc-appliance -p ittc-pkcs11`
//! (the benchmark runs the appliance and loads the module from its own folder), and
//! install SoftHSM2 (`apt-get install softhsm2`). `scripts/bench` does both.

mod compare;
mod first;
mod floor;
mod keygen;
mod report;
mod setup;
mod variants;
mod worker;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::report::{ConfigFigures, FirstPair, Report, Round};
use crate::worker::{ModuleFigures, WorkerArgs};

/// Benchmark ittc through PKCS#11 against SoftHSM2 and the arithmetic floor.
#[derive(Parser)]
#[command(name = "ittc-bench", version, about)]
struct Cli {
    /// RSA-2048 2-of-3 only, short runs (under a minute).
    #[arg(long)]
    quick: bool,
    /// Measure only this configuration, BITS:K:N (for example 2048:3:5); repeat for
    /// several. The rounds and samples stay those of the mode (`--quick` or full).
    #[arg(long, value_name = "BITS:K:N", value_parser = parse_config)]
    only: Vec<(usize, u8, u8)>,
    /// Also write the figures as JSON to FILE.
    #[arg(long, value_name = "FILE", global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Run>,
}

#[derive(Subcommand)]
enum Run {
    /// (internal) measure one module; run by the benchmark itself.
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// (internal) one fresh process's first signature, each step timed; run by the
    /// benchmark itself.
    #[command(hide = true)]
    FirstSign(first::FirstArgs),
    /// Compare two builds instead: two local 2-of-3 clusters with the same RSA-2048 key,
    /// one per appliance build (and module), measured in turn round after round; prints
    /// the change of 2-thread throughput and 1-thread median with its standard error.
    Compare(compare::CompareArgs),
    /// Measure only one partial served by each build variant of `scripts/variants` (and
    /// the default build), next to the floor: RSA-2048, one appliance per build.
    Variants {
        /// Rounds.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Partials per build and round.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// Time dealerless key generation on a local 3-appliance cluster instead: median and
    /// spread over several runs, with candidates tried, biprimality tests and rounds.
    Keygen {
        /// Modulus bits.
        #[arg(long, default_value_t = 2048)]
        bits: u16,
        /// How many generations.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

/// What one run measures. Each configuration is measured in `rounds` rounds, each with the
/// floor, ittc and SoftHSM2 one after the other (a share of the samples and seconds each),
/// so that all three see the same stretches of the machine's life: on a shared or
/// virtual machine its speed drifts by a fifth from one second to the next.
struct Plan {
    configs: Vec<(usize, u8, u8)>,
    rounds: usize,
    /// Latency samples per operation and round.
    samples: usize,
    /// Seconds per throughput figure and round.
    seconds: f64,
    /// The floor's time per round.
    floor_budget: Duration,
    threads: Vec<usize>,
    /// Fresh processes signing once, per module and round (RSA-2048 2-of-3).
    first_runs: usize,
}

fn bin_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    exe.parent()
        .map(Path::to_owned)
        .ok_or_else(|| "no folder".into())
}

/// Runs `ittc-bench worker` with `env` set for the module, and reads its figures.
fn measure_module(
    module: &Path,
    env: (&str, &Path),
    generate: Option<usize>,
    plan: &Plan,
) -> Result<ModuleFigures, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let threads: Vec<String> = plan.threads.iter().map(usize::to_string).collect();
    let mut command = Command::new(exe);
    command
        .arg("worker")
        .arg("--module")
        .arg(module)
        .args(["--pin", setup::PIN, "--id", setup::KEY_ID])
        .args([
            "--samples",
            &plan.samples.to_string(),
            "--seconds",
            &plan.seconds.to_string(),
        ])
        .args(["--threads", &threads.join(",")])
        .env(env.0, env.1)
        .stdin(Stdio::null());
    if let Some(bits) = generate {
        command.args(["--generate", &bits.to_string()]);
    }
    let out = command.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "measuring {}: {}",
            module.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("worker output: {e}"))
}

fn run(cli: &Cli) -> Result<Report, String> {
    let (plan, variant_plan) = if cli.quick {
        (
            Plan {
                configs: vec![(2048, 2, 3)],
                rounds: 3,
                samples: 70,
                seconds: 0.6,
                floor_budget: Duration::from_millis(300),
                threads: vec![1, 2, 4, 16],
                first_runs: 5,
            },
            variants::VariantPlan {
                rounds: 3,
                samples: 40,
                floor_budget: Duration::from_millis(300),
            },
        )
    } else {
        (
            Plan {
                configs: vec![(2048, 2, 3), (3072, 2, 3), (4096, 2, 3), (2048, 3, 5)],
                rounds: 5,
                samples: 200,
                seconds: 1.0,
                floor_budget: Duration::from_millis(500),
                threads: vec![1, 2, 4, 16],
                first_runs: 10,
            },
            variants::VariantPlan {
                rounds: 5,
                samples: 200,
                floor_budget: Duration::from_millis(500),
            },
        )
    };
    let mut plan = plan;
    if !cli.only.is_empty() {
        plan.configs.clone_from(&cli.only);
    }
    let bins = bin_dir()?;
    let module = bins.join("libittc_pkcs11.so");
    if !module.is_file() || !bins.join("ittc-appliance").is_file() {
        return Err(format!(
            "{} needs libittc_pkcs11.so and ittc-appliance beside it: \
             cargo build --release -p ittc-bench -p ittc-appliance -p ittc-pkcs11",
            bins.display()
        ));
    }
    let mut configs = Vec::new();
    for &(bits, k, n) in &plan.configs {
        eprintln!("==> RSA-{bits} {k}-of-{n}: cluster, key import; SoftHSM2 token");
        let cluster = setup::ittc_cluster(bits, k, n, &bins)?;
        let hsm = setup::softhsm()?;
        let mut rounds = Vec::with_capacity(plan.rounds);
        for round in 1..=plan.rounds {
            eprintln!(
                "==> RSA-{bits} {k}-of-{n}, round {round} of {}: floor, ittc, SoftHSM2",
                plan.rounds
            );
            let floor = floor::measure(
                &cluster.key,
                usize::from(k),
                usize::from(n),
                plan.floor_budget,
            )?;
            let ittc = measure_module(
                &module,
                ("ITTC_PKCS11_CONFIG", &cluster.appliances.config()),
                None,
                &plan,
            )?;
            // The SoftHSM2 key is made in the first round and used in the others.
            let softhsm = measure_module(
                Path::new(setup::SOFTHSM_MODULE),
                ("SOFTHSM2_CONF", &hsm.config()),
                (round == 1).then_some(bits),
                &plan,
            )?;
            // What a process that signs once and exits pays, at the headline size.
            let first = if (bits, k, n) == (2048, 2, 3) {
                Some(FirstPair {
                    ittc: first::measure(
                        &module,
                        ("ITTC_PKCS11_CONFIG", &cluster.appliances.config()),
                        plan.first_runs,
                    )?,
                    softhsm: first::measure(
                        Path::new(setup::SOFTHSM_MODULE),
                        ("SOFTHSM2_CONF", &hsm.config()),
                        plan.first_runs,
                    )?,
                })
            } else {
                None
            };
            rounds.push(Round {
                ittc,
                softhsm,
                floor,
                first,
            });
        }
        configs.push(ConfigFigures::new(bits, k, n, rounds));
    }
    let variants = variants::measure(2048, &bins, &variant_plan)?;
    Ok(Report::new(cli.quick, configs, variants))
}

/// Prints a report's table and, with `--json`, writes it as JSON.
fn finish<R: serde::Serialize>(
    cli: &Cli,
    report: Result<R, String>,
    table: fn(&R) -> String,
) -> ExitCode {
    let written = report.and_then(|report| {
        print!("{}", table(&report));
        match &cli.json {
            Some(path) => serde_json::to_string_pretty(&report)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
                }),
            None => Ok(()),
        }
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ittc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `BITS:K:N`, as `--only` takes it.
fn parse_config(text: &str) -> Result<(usize, u8, u8), String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [bits, k, n] = parts.as_slice() else {
        return Err("BITS:K:N, for example 2048:3:5".into());
    };
    let bits: usize = bits.parse().map_err(|e| format!("bits: {e}"))?;
    let k: u8 = k.parse().map_err(|e| format!("k: {e}"))?;
    let n: u8 = n.parse().map_err(|e| format!("n: {e}"))?;
    if ![1024, 2048, 3072, 4096].contains(&bits) || k < 2 || n < k {
        return Err("bits 1024, 2048, 3072 or 4096, and 2 ≤ k ≤ n".into());
    }
    Ok((bits, k, n))
}

/// A child's figures on standard output as one JSON line, or its error on standard error.
fn child_output<T: serde::Serialize>(figures: Result<T, String>) -> ExitCode {
    match figures.and_then(|f| serde_json::to_string(&f).map_err(|e| e.to_string())) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Run::Worker(args)) => child_output(worker::run(args)),
        Some(Run::FirstSign(args)) => child_output(first::run(args)),
        Some(Run::Compare(args)) => {
            let report = bin_dir().and_then(|bins| compare::run(args, &bins));
            finish(&cli, report, compare::CompareReport::table)
        }
        Some(Run::Variants { rounds, samples }) => {
            let plan = variants::VariantPlan {
                rounds: *rounds,
                samples: *samples,
                floor_budget: Duration::from_millis(500),
            };
            let report = bin_dir().and_then(|bins| {
                variants::measure(2048, &bins, &plan)?.ok_or_else(|| {
                    "no build variants beside this build: run scripts/variants first".to_owned()
                })
            });
            finish(&cli, report, variants::VariantsReport::table)
        }
        Some(Run::Keygen { bits, runs }) => {
            let report = bin_dir().and_then(|bins| keygen::measure(*bits, *runs, &bins));
            finish(&cli, report, keygen::KeygenReport::table)
        }
        None => finish(&cli, run(&cli), Report::table),
    }
}
