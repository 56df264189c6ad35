//! The table and the JSON document.

use serde::Serialize;

use crate::first::FirstFigures;
use crate::floor::Floor;
use crate::variants::VariantsReport;
use crate::worker::{Latency, ModuleFigures};

/// The three headline ratios.
#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    /// ittc 1-thread p50 / SoftHSM2 1-thread p50, C_Sign CKM_SHA256_RSA_PKCS.
    pub latency_vs_softhsm: f64,
    /// ittc 1-thread p50 / (one partial + combine).
    pub latency_vs_floor: f64,
    /// ittc throughput at 2 threads / (cores ÷ (k × one partial)).
    pub throughput_vs_bound: f64,
    /// The cores doing nothing but partials and combines ([`Floor::busy_per_s`]) / the
    /// bound: the most of the bound this machine leaves once the combine is paid.
    pub busy_vs_bound: f64,
}

/// One round of one configuration: the floor, then ittc, then SoftHSM2.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    /// ittc through its PKCS#11 module.
    pub ittc: ModuleFigures,
    /// SoftHSM2 through its PKCS#11 module.
    pub softhsm: ModuleFigures,
    /// The arithmetic floor.
    pub floor: Floor,
    /// A fresh process's first signature through each module (RSA-2048 2-of-3 only).
    pub first: Option<FirstPair>,
}

/// A fresh process's first signature through ittc and through SoftHSM2, in one round.
#[derive(Clone, Debug, Serialize)]
pub struct FirstPair {
    /// Through ittc.
    pub ittc: FirstFigures,
    /// Through SoftHSM2.
    pub softhsm: FirstFigures,
}

impl Round {
    /// cores ÷ (k × one partial), signatures per second.
    fn bound(&self, k: u8) -> f64 {
        cores() as f64 / (f64::from(k) * self.floor.partial_ms / 1e3)
    }

    fn ratios(&self, k: u8) -> Ratios {
        Ratios {
            latency_vs_softhsm: self.ittc.sign_pkcs1.p50_ms / self.softhsm.sign_pkcs1.p50_ms,
            latency_vs_floor: self.ittc.sign_pkcs1.p50_ms / self.floor.total_ms,
            throughput_vs_bound: throughput_at(&self.ittc, 2) / self.bound(k),
            busy_vs_bound: self.floor.busy_per_s / self.bound(k),
        }
    }
}

/// C_Sign per second on `threads` threads; 0 if that was not measured.
pub fn throughput_at(figures: &ModuleFigures, threads: usize) -> f64 {
    figures
        .throughput
        .iter()
        .find(|(t, _)| *t == threads)
        .map_or(0.0, |(_, v)| *v)
}

/// The median of some values (the upper one of the middle two); 0 for none.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_latency(all: &[&Latency]) -> Latency {
    Latency {
        p50_ms: median(all.iter().map(|l| l.p50_ms)),
        p90_ms: median(all.iter().map(|l| l.p90_ms)),
        p99_ms: median(all.iter().map(|l| l.p99_ms)),
        samples: all.iter().map(|l| l.samples).sum(),
    }
}

/// Each figure's median over the rounds.
fn median_figures(all: &[&ModuleFigures]) -> ModuleFigures {
    let pick = |f: fn(&ModuleFigures) -> &Latency| {
        median_latency(&all.iter().map(|m| f(m)).collect::<Vec<_>>())
    };
    let threads: Vec<usize> = all
        .first()
        .map(|m| m.throughput.iter().map(|(t, _)| *t).collect())
        .unwrap_or_default();
    ModuleFigures {
        sign_pkcs1: pick(|m| &m.sign_pkcs1),
        sign_pss: pick(|m| &m.sign_pss),
        decrypt_oaep: pick(|m| &m.decrypt_oaep),
        oaep_hash: all.first().map(|m| m.oaep_hash.clone()).unwrap_or_default(),
        throughput: threads
            .into_iter()
            .map(|t| (t, median(all.iter().map(|m| throughput_at(m, t)))))
            .collect(),
    }
}

/// One key size and threshold: each figure is the median over the rounds, and each ratio
/// the median of the rounds' ratios (each round's ittc against that round's references).
#[derive(Clone, Debug, Serialize)]
pub struct ConfigFigures {
    /// Modulus bits.
    pub bits: usize,
    /// k.
    pub threshold: u8,
    /// n.
    pub parties: u8,
    /// ittc through its PKCS#11 module.
    pub ittc: ModuleFigures,
    /// SoftHSM2 through its PKCS#11 module.
    pub softhsm: ModuleFigures,
    /// The arithmetic floor.
    pub floor: Floor,
    /// cores ÷ (k × one partial), signatures per second.
    pub throughput_bound: f64,
    /// The ratios for this configuration.
    pub ratios: Ratios,
    /// Every round as measured.
    pub rounds: Vec<Round>,
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl ConfigFigures {
    /// Puts one configuration's rounds together.
    pub fn new(bits: usize, threshold: u8, parties: u8, rounds: Vec<Round>) -> Self {
        let ittc = median_figures(&rounds.iter().map(|r| &r.ittc).collect::<Vec<_>>());
        let softhsm = median_figures(&rounds.iter().map(|r| &r.softhsm).collect::<Vec<_>>());
        let floor = Floor {
            partial_ms: median(rounds.iter().map(|r| r.floor.partial_ms)),
            combine_ms: median(rounds.iter().map(|r| r.floor.combine_ms)),
            total_ms: median(rounds.iter().map(|r| r.floor.total_ms)),
            at_once_ms: median(rounds.iter().map(|r| r.floor.at_once_ms)),
            busy_per_s: median(rounds.iter().map(|r| r.floor.busy_per_s)),
            exponent_bits: rounds.first().map_or(0, |r| r.floor.exponent_bits),
        };
        let ratios: Vec<Ratios> = rounds.iter().map(|r| r.ratios(threshold)).collect();
        Self {
            bits,
            threshold,
            parties,
            ittc,
            softhsm,
            throughput_bound: median(rounds.iter().map(|r| r.bound(threshold))),
            floor,
            ratios: Ratios {
                latency_vs_softhsm: median(ratios.iter().map(|r| r.latency_vs_softhsm)),
                latency_vs_floor: median(ratios.iter().map(|r| r.latency_vs_floor)),
                throughput_vs_bound: median(ratios.iter().map(|r| r.throughput_vs_bound)),
                busy_vs_bound: median(ratios.iter().map(|r| r.busy_vs_bound)),
            },
            rounds,
        }
    }

    /// The first-signature lines, where this configuration measured them: the medians
    /// over the rounds of each round's medians.
    fn first_table(&self) -> String {
        let pairs: Vec<&FirstPair> = self
            .rounds
            .iter()
            .filter_map(|r| r.first.as_ref())
            .collect();
        if pairs.is_empty() {
            return String::new();
        }
        let m = |f: fn(&FirstPair) -> f64| median(pairs.iter().map(|p| f(p)));
        let runs: usize = pairs.iter().map(|p| p.ittc.runs).sum();
        format!(
            "\nA fresh process's first signature, RSA-{} {}-of-{} (load the module, \
             C_Initialize, C_OpenSession, C_Login, C_FindObjects, C_Sign, C_Finalize, exit; \
             {runs} runs each): ittc {:.1} ms (target ≤ 30 ms), SoftHSM2 {:.1} ms. \
             ittc's steps: initialize {:.1}, open {:.1}, login {:.1}, find {:.1}, sign {:.1}, \
             finalize {:.1} ms.\n",
            self.bits,
            self.threshold,
            self.parties,
            m(|p| p.ittc.median.process_ms),
            m(|p| p.softhsm.median.process_ms),
            m(|p| p.ittc.median.initialize_ms),
            m(|p| p.ittc.median.open_ms),
            m(|p| p.ittc.median.login_ms),
            m(|p| p.ittc.median.find_ms),
            m(|p| p.ittc.median.sign_ms),
            m(|p| p.ittc.median.finalize_ms),
        )
    }

    /// The k partials of a signature started together on this machine (measured with the
    /// floor): where the appliances share the machine's cores, that plus the combine is the
    /// least one signature takes here, above the floor when k exceeds the cores (they
    /// cannot all run at once; on separate appliance hosts they would) or when running
    /// together slows each partial down. The latency against that.
    fn together_line(&self) -> String {
        let cores = cores();
        let k = usize::from(self.threshold);
        let least = |r: &Round| r.floor.at_once_ms + r.floor.combine_ms;
        let shared = if k > cores {
            format!(
                "; {k} ÷ {cores} of one: {:.2} ms",
                k as f64 * self.floor.partial_ms / cores as f64
            )
        } else {
            String::new()
        };
        format!(
            "\nRSA-{} {}-of-{} on this machine's {cores} cores: its {k} partials started together \
             took {:.2} ms until the last ended (one alone {:.2} ms{shared}). \
             With the combine, the least a signature takes here is {:.2} ms; the 1-thread \
             C_Sign p50 is {:.2}× that (and {:.2}× the floor).\n",
            self.bits,
            self.threshold,
            self.parties,
            self.floor.at_once_ms,
            self.floor.partial_ms,
            median(self.rounds.iter().map(least)),
            self.ratio(|r| r.ittc.sign_pkcs1.p50_ms / least(r)),
            self.ratios.latency_vs_floor,
        )
    }

    /// The cores doing nothing but signatures' partials and combines (measured with the
    /// floor): what the throughput bound leaves on this machine once the combine and
    /// running together are paid. The 2-thread throughput against that and against the
    /// bound.
    fn busy_line(&self) -> String {
        format!(
            "\nRSA-{} {}-of-{}: one thread per core, each doing nothing but a signature's {} \
             partials and its combine, one signature after another (no network, TLS or store): \
             {:.0}/s, {:.0}% of the bound. C_Sign on 2 threads reaches {:.0}% of that.\n",
            self.bits,
            self.threshold,
            self.parties,
            self.threshold,
            self.floor.busy_per_s,
            100.0 * self.ratios.busy_vs_bound,
            100.0 * self.ratio(|r| throughput_at(&r.ittc, 2) / r.floor.busy_per_s),
        )
    }

    /// The median over the rounds of one per-round ratio.
    fn ratio(&self, f: impl Fn(&Round) -> f64) -> f64 {
        median(self.rounds.iter().map(f))
    }
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// RSA-2048 2-of-3, CKM_SHA256_RSA_PKCS.
    pub ratios: Option<Ratios>,
    /// `quick` or `full`.
    pub mode: &'static str,
    /// Rounds per configuration.
    pub rounds: usize,
    /// CPU model and cores.
    pub machine: String,
    /// Cores visible.
    pub cores: usize,
    /// UTC date.
    pub date: String,
    /// Every configuration.
    pub configs: Vec<ConfigFigures>,
    /// One partial per build variant, where `scripts/variants` has built them.
    pub variants: Option<VariantsReport>,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The CPU, its cores and today's date, as every table states them.
pub fn machine_line() -> String {
    format!("{}, {} cores, {}", cpu_model(), cores(), today())
}

impl Report {
    /// Assembles the report.
    pub fn new(quick: bool, configs: Vec<ConfigFigures>, variants: Option<VariantsReport>) -> Self {
        let ratios = configs
            .iter()
            .find(|c| c.bits == 2048 && c.threshold == 2 && c.parties == 3)
            .map(|c| c.ratios.clone());
        Self {
            ratios,
            mode: if quick { "quick" } else { "full" },
            rounds: configs.first().map_or(0, |c| c.rounds.len()),
            machine: cpu_model(),
            cores: cores(),
            date: today(),
            configs,
            variants,
        }
    }

    /// The table, markdown.
    pub fn table(&self) -> String {
        let mut out = format!(
            "ittc-bench ({}), {}, {} cores, {}\n\n\
             Each figure is the median over {} rounds (the floor, ittc and SoftHSM2 in turn in \
             each); each ratio is the median of the rounds' own ratios.\n\n",
            self.mode, self.machine, self.cores, self.date, self.rounds
        );
        out += "| key | what | ittc | SoftHSM2 | floor | ittc/SoftHSM2 | ittc/floor |\n|---|---|---|---|---|---|---|\n";
        for c in &self.configs {
            let key = format!("RSA-{} {}-of-{}", c.bits, c.threshold, c.parties);
            let row = |what: &str, pick: fn(&ModuleFigures) -> f64, against_floor: bool| {
                let (i, s) = (pick(&c.ittc), pick(&c.softhsm));
                let vs_softhsm = c.ratio(|r| pick(&r.ittc) / pick(&r.softhsm));
                let (f, vs_floor) = if against_floor {
                    (
                        format!("{:.2} ms", c.floor.total_ms),
                        format!("{:.2}", c.ratio(|r| pick(&r.ittc) / r.floor.total_ms)),
                    )
                } else {
                    (String::new(), String::new())
                };
                format!(
                    "| {key} | {what} | {i:.2} ms | {s:.2} ms | {f} | {vs_softhsm:.2} | {vs_floor} |\n"
                )
            };
            out += &row("C_Sign SHA256-RSA-PKCS p50", |m| m.sign_pkcs1.p50_ms, true);
            out += &row("C_Sign SHA256-RSA-PKCS p90", |m| m.sign_pkcs1.p90_ms, false);
            out += &row("C_Sign SHA256-RSA-PKCS p99", |m| m.sign_pkcs1.p99_ms, false);
            out += &row(
                "C_Sign SHA256-RSA-PKCS-PSS p50",
                |m| m.sign_pss.p50_ms,
                true,
            );
            let what = format!(
                "C_Decrypt OAEP p50 (ittc {}, SoftHSM2 {})",
                c.ittc.oaep_hash, c.softhsm.oaep_hash
            );
            out += &row(&what, |m| m.decrypt_oaep.p50_ms, true);
            for (threads, i) in &c.ittc.throughput {
                let s = throughput_at(&c.softhsm, *threads);
                let vs_softhsm = c.ratio(|r| {
                    throughput_at(&r.ittc, *threads) / throughput_at(&r.softhsm, *threads)
                });
                let (bound, vs_bound) = if *threads >= 2 {
                    (
                        format!("{:.0}/s bound", c.throughput_bound),
                        format!(
                            "{:.2}",
                            c.ratio(|r| throughput_at(&r.ittc, *threads) / r.bound(c.threshold))
                        ),
                    )
                } else {
                    (String::new(), String::new())
                };
                out += &format!(
                    "| {key} | C_Sign/s, {threads} thread(s) | {i:.0}/s | {s:.0}/s | {bound} | {vs_softhsm:.2} | {vs_bound} |\n"
                );
            }
            out += &format!(
                "| {key} | floor: one partial ({} bits) + combine | | | {:.2} + {:.2} ms | | |\n",
                c.floor.exponent_bits, c.floor.partial_ms, c.floor.combine_ms
            );
        }
        if let Some(r) = &self.ratios {
            out += &format!(
                "\nRSA-2048 2-of-3, CKM_SHA256_RSA_PKCS: latency p50 {:.2}× the floor (target ≤ 1.15); \
                 throughput at 2 threads {:.0}% of the bound (target ≥ 90%; the cores doing \
                 nothing but partials and combines give {:.0}% of it). \
                 For information, not a target: {:.2}× SoftHSM2, which signs with the CRT \
                 (a partial cannot: no appliance knows p or q; docs/performance.md).\n",
                r.latency_vs_floor,
                100.0 * r.throughput_vs_bound,
                100.0 * r.busy_vs_bound,
                r.latency_vs_softhsm,
            );
        }
        for c in &self.configs {
            out += &c.first_table();
            out += &c.together_line();
            out += &c.busy_line();
        }
        match &self.variants {
            Some(v) => out += &v.table(),
            None => {
                out += "\nNo build variants beside this build (scripts/variants builds them): one partial per variant not measured.\n";
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(p50_ms: f64) -> Latency {
        Latency {
            p50_ms,
            p90_ms: 2.0 * p50_ms,
            p99_ms: 3.0 * p50_ms,
            samples: 10,
        }
    }

    fn module(p50_ms: f64, at_two: f64) -> ModuleFigures {
        ModuleFigures {
            sign_pkcs1: latency(p50_ms),
            sign_pss: latency(p50_ms),
            decrypt_oaep: latency(p50_ms),
            oaep_hash: "SHA-256".into(),
            throughput: vec![(1, at_two / 2.0), (2, at_two)],
        }
    }

    fn round(ittc_ms: f64, softhsm_ms: f64, partial_ms: f64, at_two: f64) -> Round {
        Round {
            ittc: module(ittc_ms, at_two),
            softhsm: module(softhsm_ms, 10.0 * at_two),
            floor: Floor {
                partial_ms,
                combine_ms: 0.0,
                total_ms: partial_ms,
                at_once_ms: partial_ms,
                busy_per_s: 0.0,
                exponent_bits: 2183,
            },
            first: None,
        }
    }

    #[test]
    fn figures_are_medians_and_ratios_are_medians_of_each_rounds_ratio() {
        // The machine runs at another speed in each round; each round's ratio pairs ittc
        // with the references measured next to it.
        let c = ConfigFigures::new(
            2048,
            2,
            3,
            vec![
                round(4.0, 1.0, 2.0, 100.0),
                round(6.0, 2.0, 2.5, 90.0),
                round(3.0, 0.5, 3.0, 80.0),
            ],
        );
        assert_eq!(c.rounds.len(), 3);
        assert_eq!(c.ittc.sign_pkcs1.p50_ms, 4.0);
        assert_eq!(c.ittc.sign_pkcs1.samples, 30);
        assert_eq!(c.softhsm.sign_pkcs1.p50_ms, 1.0);
        assert_eq!(c.floor.partial_ms, 2.5);
        assert_eq!(throughput_at(&c.ittc, 2), 90.0);
        // Per round: 4/1, 6/2, 3/0.5 → median 4 (the medians' ratio would be 4/1 too);
        // 4/2, 6/2.5, 3/3 → median 2 (the medians' ratio would be 1.6).
        assert_eq!(c.ratios.latency_vs_softhsm, 4.0);
        assert_eq!(c.ratios.latency_vs_floor, 2.0);
        // Bound per round: cores / (2 × partial); the ratio is taken in each round.
        let cores = cores() as f64;
        let per_round = [100.0 * 4.0 / cores, 90.0 * 5.0 / cores, 80.0 * 6.0 / cores];
        let mut sorted = per_round;
        sorted.sort_by(f64::total_cmp);
        assert!((c.ratios.throughput_vs_bound - sorted[1] / 1e3).abs() < 1e-12);
    }

    #[test]
    fn the_least_here_is_the_partials_together_plus_the_combine() {
        let mut rounds = vec![round(6.0, 1.0, 2.0, 100.0), round(9.0, 1.0, 3.0, 100.0)];
        for (r, together) in rounds.iter_mut().zip([4.0, 6.0]) {
            r.floor.at_once_ms = together;
            r.floor.combine_ms = 1.0;
        }
        let c = ConfigFigures::new(2048, 3, 5, rounds);
        let line = c.together_line();
        // Per round: 6 / (4 + 1) = 1.2 and 9 / (6 + 1) ≈ 1.29; the median is the upper one.
        assert!(line.contains("took 6.00 ms"), "{line}");
        assert!(
            line.contains("the least a signature takes here is 7.00 ms"),
            "{line}"
        );
        assert!(line.contains("p50 is 1.29× that"), "{line}");
    }

    #[test]
    fn the_busy_cores_are_set_against_the_bound_and_the_throughput() {
        let mut rounds = vec![round(4.0, 1.0, 2.0, 100.0), round(4.0, 1.0, 2.0, 60.0)];
        for (r, busy) in rounds.iter_mut().zip([200.0, 100.0]) {
            r.floor.busy_per_s = busy;
        }
        let c = ConfigFigures::new(2048, 2, 3, rounds);
        let line = c.busy_line();
        // The bound is cores ÷ (2 × 2 ms) in both rounds: 250/s per core.
        let cores = cores() as f64;
        let of_bound = [200.0, 100.0].map(|b| 100.0 * b / (250.0 * cores));
        let expected = format!("{:.0}% of the bound", of_bound[0].max(of_bound[1]));
        assert!(line.contains(&expected), "{line}");
        // 100/200 and 60/100: the median of two is the upper one.
        assert!(line.contains("reaches 60% of that"), "{line}");
        assert!(line.contains("200/s"), "{line}");
    }
}
