//! The table and the JSON document.

use serde::Serialize;

use crate::floor::Floor;
use crate::worker::ModuleFigures;

/// The three headline ratios.
#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    /// ittc 1-thread p50 / SoftHSM2 1-thread p50, C_Sign CKM_SHA256_RSA_PKCS.
    pub latency_vs_softhsm: f64,
    /// ittc 1-thread p50 / (one partial + combine).
    pub latency_vs_floor: f64,
    /// ittc throughput at 2 threads / (cores ÷ (k × one partial)).
    pub throughput_vs_bound: f64,
}

/// One key size and threshold.
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
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl ConfigFigures {
    /// Puts one configuration's figures together.
    pub fn new(
        bits: usize,
        threshold: u8,
        parties: u8,
        ittc: ModuleFigures,
        softhsm: ModuleFigures,
        floor: Floor,
    ) -> Self {
        let throughput_bound = cores() as f64 / (f64::from(threshold) * floor.partial_ms / 1e3);
        let at_two = ittc
            .throughput
            .iter()
            .find(|(t, _)| *t == 2)
            .map_or(0.0, |(_, v)| *v);
        let ratios = Ratios {
            latency_vs_softhsm: ittc.sign_pkcs1.p50_ms / softhsm.sign_pkcs1.p50_ms,
            latency_vs_floor: ittc.sign_pkcs1.p50_ms / floor.total_ms,
            throughput_vs_bound: at_two / throughput_bound,
        };
        Self {
            bits,
            threshold,
            parties,
            ittc,
            softhsm,
            floor,
            throughput_bound,
            ratios,
        }
    }
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// RSA-2048 2-of-3, CKM_SHA256_RSA_PKCS.
    pub ratios: Option<Ratios>,
    /// `quick` or `full`.
    pub mode: &'static str,
    /// CPU model and cores.
    pub machine: String,
    /// Cores visible.
    pub cores: usize,
    /// UTC date.
    pub date: String,
    /// Every configuration.
    pub configs: Vec<ConfigFigures>,
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

impl Report {
    /// Assembles the report.
    pub fn new(quick: bool, configs: Vec<ConfigFigures>) -> Self {
        let ratios = configs
            .iter()
            .find(|c| c.bits == 2048 && c.threshold == 2 && c.parties == 3)
            .map(|c| c.ratios.clone());
        Self {
            ratios,
            mode: if quick { "quick" } else { "full" },
            machine: cpu_model(),
            cores: cores(),
            date: today(),
            configs,
        }
    }

    /// The table, markdown.
    pub fn table(&self) -> String {
        let mut out = format!(
            "ittc-bench ({}), {}, {} cores, {}\n\n",
            self.mode, self.machine, self.cores, self.date
        );
        out += "| key | what | ittc | SoftHSM2 | floor | ittc/SoftHSM2 | ittc/floor |\n|---|---|---|---|---|---|---|\n";
        for c in &self.configs {
            let key = format!("RSA-{} {}-of-{}", c.bits, c.threshold, c.parties);
            let row = |what: &str, i: f64, s: f64, floor: Option<f64>| {
                let (f, rf) = floor.map_or(("".to_owned(), "".to_owned()), |f| {
                    (format!("{f:.2} ms"), format!("{:.2}", i / f))
                });
                format!(
                    "| {key} | {what} | {i:.2} ms | {s:.2} ms | {f} | {:.2} | {rf} |\n",
                    i / s
                )
            };
            out += &row(
                "C_Sign SHA256-RSA-PKCS p50",
                c.ittc.sign_pkcs1.p50_ms,
                c.softhsm.sign_pkcs1.p50_ms,
                Some(c.floor.total_ms),
            );
            out += &row(
                "C_Sign SHA256-RSA-PKCS p90",
                c.ittc.sign_pkcs1.p90_ms,
                c.softhsm.sign_pkcs1.p90_ms,
                None,
            );
            out += &row(
                "C_Sign SHA256-RSA-PKCS p99",
                c.ittc.sign_pkcs1.p99_ms,
                c.softhsm.sign_pkcs1.p99_ms,
                None,
            );
            out += &row(
                "C_Sign SHA256-RSA-PKCS-PSS p50",
                c.ittc.sign_pss.p50_ms,
                c.softhsm.sign_pss.p50_ms,
                Some(c.floor.total_ms),
            );
            let what = format!(
                "C_Decrypt OAEP p50 (ittc {}, SoftHSM2 {})",
                c.ittc.oaep_hash, c.softhsm.oaep_hash
            );
            out += &row(
                &what,
                c.ittc.decrypt_oaep.p50_ms,
                c.softhsm.decrypt_oaep.p50_ms,
                Some(c.floor.total_ms),
            );
            for ((threads, i), (_, s)) in c.ittc.throughput.iter().zip(&c.softhsm.throughput) {
                let bound = if *threads >= 2 {
                    format!("{:.0}/s bound", c.throughput_bound)
                } else {
                    String::new()
                };
                let vs = if *threads >= 2 {
                    format!("{:.2}", i / c.throughput_bound)
                } else {
                    String::new()
                };
                out += &format!(
                    "| {key} | C_Sign/s, {threads} thread(s) | {i:.0}/s | {s:.0}/s | {bound} | {:.2} | {vs} |\n",
                    i / s
                );
            }
            out += &format!(
                "| {key} | floor: one partial ({} bits) + combine | | | {:.2} + {:.2} ms | | |\n",
                c.floor.exponent_bits, c.floor.partial_ms, c.floor.combine_ms
            );
        }
        if let Some(r) = &self.ratios {
            out += &format!(
                "\nRSA-2048 2-of-3, CKM_SHA256_RSA_PKCS: latency {:.2}× SoftHSM2 (target ≤ 2.5), {:.2}× the floor (target ≤ 1.3); \
                 throughput at 2 threads {:.0}% of the bound (target ≥ 80%).\n",
                r.latency_vs_softhsm,
                r.latency_vs_floor,
                100.0 * r.throughput_vs_bound
            );
        }
        out
    }
}
