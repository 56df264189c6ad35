//! `ittc doctor`: checks the cluster folder on this host and the appliances it names, and
//! says what to fix.
//!
//! The checks: the private key files (`*.key`, `*.sealing`, and the TLS key that
//! `pkcs11.toml` names) must be readable by their owner only; every certificate must be
//! valid for at least 30 more days (expired, or not yet valid, is a fix; within 30 days a
//! warning); every appliance must answer, belong to this cluster and keep a clock within
//! [`MAX_SKEW`] of this host's; and no two appliances should run the same build variant
//! (a warning: one exploit would open both, docs/diversity.md). A finding to fix makes the
//! exit status 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ittc_wire::{Request, Response};

use crate::cluster::Cluster;
use crate::status::utc;

/// The largest difference between an appliance's clock and this host's that passes.
/// Appliances order token object writes by their clocks and refuse versions more than a
/// day ahead, and certificates are checked against them.
pub const MAX_SKEW: Duration = Duration::from_secs(5);
/// A certificate that expires within this time is a warning.
pub const RENEW_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// As it should be.
    Ok,
    /// Worth a look; does not change the exit status.
    Warn,
    /// Needs fixing: the exit status is 1.
    Fix,
}

/// One finding.
#[derive(Clone, Debug)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What was checked and found.
    pub what: String,
    /// What to do about it (for a warning or a fix).
    pub todo: Option<String>,
}

impl Finding {
    fn ok(what: String) -> Self {
        Self {
            level: Level::Ok,
            what,
            todo: None,
        }
    }

    fn bad(level: Level, what: String, todo: String) -> Self {
        Self {
            level,
            what,
            todo: Some(todo),
        }
    }
}

/// Every check, in order.
pub fn doctor(cluster: &Cluster) -> Vec<Finding> {
    let now_ms = ittc_wire::now_unix_ms();
    let mut findings = key_files(cluster);
    findings.extend(certificates(cluster, now_ms));
    findings.extend(appliances(cluster));
    findings
}

/// The findings as text, and the exit status (1 if anything needs fixing).
pub fn render(findings: &[Finding]) -> (String, u8) {
    let mut out = String::new();
    for f in findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fix => "FIX ",
        };
        out += &format!("{tag}  {}\n", f.what);
        if let Some(todo) = &f.todo {
            out += &format!("      -> {todo}\n");
        }
    }
    let count = |level| findings.iter().filter(|f| f.level == level).count();
    let (fix, warn) = (count(Level::Fix), count(Level::Warn));
    out += &format!("\n{fix} to fix, {warn} warning(s)\n");
    (out, u8::from(fix > 0))
}

/// The private key files: the folder's `*.key` and `*.sealing`, and the TLS key of
/// `pkcs11.toml`, each readable by its owner only.
fn key_files(cluster: &Cluster) -> Vec<Finding> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&cluster.dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file() && p.extension().is_some_and(|x| x == "key" || x == "sealing")
                })
                .collect()
        })
        .unwrap_or_default();
    // pkcs11.toml's paths are resolved against its folder when it is read.
    let tls_key = cluster.config.tls.key.clone();
    if !files.contains(&tls_key) {
        files.push(tls_key);
    }
    files.sort();
    let mut findings = Vec::new();
    let mut fine = 0;
    for path in files {
        match std::fs::metadata(&path) {
            Ok(m) if m.permissions().mode() & 0o077 == 0 => fine += 1,
            Ok(m) => findings.push(Finding::bad(
                Level::Fix,
                format!(
                    "{} is readable by others (mode {:o})",
                    path.display(),
                    m.permissions().mode() & 0o777
                ),
                format!("chmod 600 {}", path.display()),
            )),
            Err(e) => findings.push(Finding::bad(
                Level::Fix,
                format!("{}: {e}", path.display()),
                "put the file back, or fix pkcs11.toml's [tls] key".into(),
            )),
        }
    }
    findings.insert(
        0,
        Finding::ok(format!(
            "{fine} private key file(s) readable by their owner only"
        )),
    );
    findings
}

/// Every certificate of the folder (`*.pem` that holds one) and those `pkcs11.toml`
/// names: valid now and for [`RENEW_WITHIN`].
fn certificates(cluster: &Cluster, now_ms: u64) -> Vec<Finding> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&cluster.dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pem"))
                .collect()
        })
        .unwrap_or_default();
    for path in [&cluster.config.tls.ca, &cluster.config.tls.cert] {
        if !files.contains(path) {
            files.push(path.clone());
        }
    }
    files.sort();
    let renew_ms = u64::try_from(RENEW_WITHIN.as_millis()).unwrap_or(u64::MAX);
    let mut findings = Vec::new();
    for path in files {
        let Ok(data) = std::fs::read(&path) else {
            findings.push(Finding::bad(
                Level::Fix,
                format!("{} cannot be read", path.display()),
                "put the certificate back, or fix pkcs11.toml's [tls] paths".into(),
            ));
            continue;
        };
        let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&data) else {
            continue; // a public key or another PEM file
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(&pem.contents) else {
            continue;
        };
        let validity = cert.validity();
        let to_ms = |t: x509_parser::time::ASN1Time| {
            u64::try_from(t.timestamp())
                .unwrap_or(0)
                .saturating_mul(1000)
        };
        let (from, until) = (to_ms(validity.not_before), to_ms(validity.not_after));
        let name = path.display();
        let renew = renew_command(&path);
        if until <= now_ms {
            findings.push(Finding::bad(
                Level::Fix,
                format!("{name} expired on {}", utc(until)),
                renew,
            ));
        } else if from > now_ms {
            findings.push(Finding::bad(
                Level::Fix,
                format!("{name} is not valid before {}", utc(from)),
                "check this host's clock, or issue the certificate again".into(),
            ));
        } else if until - now_ms < renew_ms {
            findings.push(Finding::bad(
                Level::Warn,
                format!("{name} expires on {}", utc(until)),
                renew,
            ));
        } else {
            findings.push(Finding::ok(format!("{name} valid until {}", utc(until))));
        }
    }
    findings
}

/// The command that renews the certificate in `path`, by its file name.
fn renew_command(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    match stem {
        "client" => "ittc cert renew --client".into(),
        "admin" => "ittc cert renew --admin".into(),
        "ca" => "the cluster CA itself: plan a new cluster (a CA is not renewed in place)".into(),
        _ => match stem.strip_prefix("appliance-").map(str::parse::<u8>) {
            Some(Ok(i)) => format!("ittc cert renew --appliance {i}"),
            _ => "issue it again".into(),
        },
    }
}

/// Every appliance: answers, is of this cluster, keeps this host's time; and the build
/// variants.
fn appliances(cluster: &Cluster) -> Vec<Finding> {
    let answers = cluster.in_parallel(cluster.indices(), |index| {
        let mut c = cluster.connect(index).map_err(|e| e.to_string())?;
        let sent = ittc_wire::now_unix_ms();
        let started = Instant::now();
        match c.request(&Request::Status) {
            Ok(Response::Status(s)) => {
                // This host's time halfway through the exchange.
                let half = i128::try_from(started.elapsed().as_millis() / 2).unwrap_or(0);
                let skew = i128::from(s.clock_unix_ms) - i128::from(sent) - half;
                Ok((s, skew))
            }
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    });
    let max_skew = i128::try_from(MAX_SKEW.as_millis()).unwrap_or(i128::MAX);
    let mut findings = Vec::new();
    let mut variants: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (index, answer) in answers {
        let address = cluster
            .config
            .appliance(index)
            .map(|a| a.address.clone())
            .unwrap_or_default();
        let (status, skew) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                findings.push(Finding::bad(
                    Level::Fix,
                    format!("appliance {index} ({address}) does not answer: {e}"),
                    "start it (systemctl start ittc-appliance), or check its address and \
                     the network"
                        .into(),
                ));
                continue;
            }
        };
        if hex::encode(status.cluster_id) != cluster.config.cluster_id {
            findings.push(Finding::bad(
                Level::Fix,
                format!("appliance {index} ({address}) belongs to another cluster"),
                "check the address in pkcs11.toml".into(),
            ));
            continue;
        }
        let seconds = skew as f64 / 1000.0;
        if skew.abs() > max_skew {
            let side = if skew > 0 { "ahead of" } else { "behind" };
            findings.push(Finding::bad(
                Level::Fix,
                format!(
                    "appliance {index}'s clock is {:.1} s {side} this host's",
                    seconds.abs()
                ),
                "keep every host's clock synchronised (NTP: systemd-timesyncd or chrony)".into(),
            ));
        } else {
            findings.push(Finding::ok(format!(
                "appliance {index} ({address}) answers, {}, clock within {:.1} s",
                status.build_variant, seconds
            )));
        }
        variants
            .entry(status.build_variant)
            .or_default()
            .push(index);
    }
    for (variant, indices) in variants.into_iter().filter(|(_, i)| i.len() > 1) {
        findings.push(Finding::bad(
            Level::Warn,
            format!("appliances {indices:?} run the same build variant {variant}"),
            "install a different variant on each host (docs/diversity.md): one exploit \
             would open all of them"
                .into(),
        ));
    }
    findings
}
