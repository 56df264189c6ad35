//! Audit retention end to end: a real appliance moves its old audit entries into export
//! files while it serves partial operations, `ittc-appliance audit verify` checks the chain
//! across the files and the store of the *running* appliance, and a SIGKILL in the middle
//! of an export loses and repeats nothing. The soak that measures disk use over a million
//! partials is here too, ignored by default (docs/appliance.md, "Audit log").

// Test code: a failure is a test failure, reported with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ittc_tests::{Cluster, FIRST_EPOCH, Options, appliance_binary};
use ittc_threshold::RsaPrivateKey;
use ittc_wire::client::Connection;
use ittc_wire::{AuditVerification, KeyId, Request, Response};
use rand::RngExt;

const PIN: &[u8] = b"123456";
const KEY: &[u8] = b"audited";

/// A 1024-bit key (what an audit entry holds does not depend on the size), imported on the
/// running appliances; returns the modulus length in bytes.
fn import_small_key(cluster: &Cluster) -> usize {
    let openssl = openssl::rsa::Rsa::generate(1024).unwrap();
    let key = RsaPrivateKey::from_bytes(&openssl.private_key_to_pem().unwrap(), None).unwrap();
    cluster.import_key(&key, 2, KEY, "audited key");
    cluster.set_user_pin(PIN);
    openssl.size() as usize
}

/// One partial operation on a random input below the modulus; panics unless it is served.
fn partial(c: &mut Connection, modulus_len: usize) {
    let mut input = vec![0u8; modulus_len - 1];
    rand::rng().fill(&mut input[..]);
    let r = c
        .request(&Request::Partial {
            key_id: KeyId::new(KEY.to_vec()).unwrap(),
            epoch: FIRST_EPOCH,
            input,
        })
        .unwrap();
    assert!(matches!(r, Response::PartialResult(_)), "{r:?}");
}

/// `AuditVerify` as the admin.
fn verify(cluster: &Cluster, index: u8) -> AuditVerification {
    let mut c = cluster.connect_as(index, "admin").unwrap();
    match c.request(&Request::AuditVerify).unwrap() {
        Response::AuditVerified(v) => v,
        other => panic!("{other:?}"),
    }
}

/// `AuditVerify` until `done` holds of the answer, for at most `limit`.
fn verify_until(
    cluster: &Cluster,
    limit: Duration,
    done: impl Fn(&AuditVerification) -> bool,
) -> AuditVerification {
    let start = Instant::now();
    loop {
        let v = verify(cluster, 1);
        assert_eq!(v.broken, None);
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {v:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn export_dir(cluster: &Cluster) -> PathBuf {
    cluster.appliances[0].data_dir.join("audit-export")
}

/// The export files, in name order, with their line counts.
fn export_files(cluster: &Cluster) -> Vec<(String, usize)> {
    let mut files: Vec<(String, usize)> = std::fs::read_dir(export_dir(cluster))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let lines = std::fs::read_to_string(&path).unwrap().lines().count();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                lines,
            )
        })
        .collect();
    files.sort();
    files
}

/// `ittc-appliance audit SUBCOMMAND --config` of appliance 1: exit status, stdout, stderr.
fn audit_command(cluster: &Cluster, subcommand: &str) -> (bool, String, String) {
    let out = Command::new(appliance_binary())
        .args(["audit", subcommand, "--config"])
        .arg(&cluster.appliances[0].config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ittc-appliance audit show` of stopped appliance 1: each entry's sequence number and
/// request.
fn shown(cluster: &Cluster) -> Vec<(u64, String)> {
    let (ok, stdout, stderr) = audit_command(cluster, "show");
    assert!(ok, "{stderr}");
    stdout
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            (fields[0].parse().unwrap(), fields[3].to_owned())
        })
        .collect()
}

/// How many of `shown` entries are partial operations.
fn partials(shown: &[(u64, String)]) -> usize {
    shown
        .iter()
        .filter(|(_, request)| request == "partial")
        .count()
}

/// A two-appliance cluster of which appliance 1 runs (with `env`), with the retention
/// `audit`, and the small key.
fn one_appliance(audit: &str, env: &[(&str, &str)]) -> (Cluster, usize) {
    let options = Options {
        audit: audit.into(),
        ..Options::default()
    };
    let mut cluster = Cluster::new(2, &options);
    cluster.restart_with_env(1, env);
    let modulus_len = import_small_key(&cluster);
    (cluster, modulus_len)
}

const SMALL_RETENTION: &str = "keep_entries = 50\nexport_interval_s = 1\nfile_entries = 100";

#[test]
fn old_entries_move_to_export_files_and_the_running_appliance_verifies() {
    let (mut cluster, modulus_len) = one_appliance(SMALL_RETENTION, &[]);
    let mut c = cluster.user_session(1, PIN);
    let start = Instant::now();
    let mut most_in_store = 0;
    for i in 1..=400 {
        partial(&mut c, modulus_len);
        if i % 100 == 0 {
            let v = verify(&cluster, 1);
            assert_eq!(v.broken, None);
            most_in_store = most_in_store.max(v.entries - v.exported);
        }
    }
    let rate = 400.0 / start.elapsed().as_secs_f64();
    // The store holds the retention plus what arrives between two exports (one interval,
    // and one more for an export that was under way).
    let bound = 50 + (2.0 * rate) as u64 + 10;
    assert!(
        most_in_store <= bound,
        "{most_in_store} entries in the store while serving {rate:.0}/s, bound {bound}"
    );
    let v = verify_until(&cluster, Duration::from_secs(10), |v| {
        v.entries - v.exported <= 52
    });
    assert!(v.exported >= 350, "{v:?}");

    // The files: 100 entries each and a header, the last one partly filled.
    let files = export_files(&cluster);
    assert_eq!(files[0].0, "audit-00000000000000000000.jsonl");
    assert_eq!(files[1].0, "audit-00000000000000000100.jsonl");
    let lines: usize = files.iter().map(|(_, n)| n - 1).sum();
    assert!(lines as u64 >= v.exported, "{files:?} {v:?}");
    assert!(
        files.iter().rev().skip(1).all(|(_, n)| *n == 101),
        "{files:?}"
    );

    // The command of a running appliance asks it.
    let (ok, stdout, stderr) = audit_command(&cluster, "verify");
    assert!(ok, "{stdout} {stderr}");
    assert!(stdout.contains("audit log intact"), "{stdout}");
    assert!(
        stdout.contains("checked by the running appliance"),
        "{stdout}"
    );

    // A client may not ask, an admin may; the answer is audited.
    let mut client = cluster.connect_as(1, "client").unwrap();
    assert!(matches!(
        client.request(&Request::AuditVerify).unwrap(),
        Response::Error(_)
    ));

    // Stopped: the command reads the files and the store itself, and `show` prints every
    // entry, the exported ones first.
    drop(c);
    cluster.stop(1);
    let (ok, stdout, stderr) = audit_command(&cluster, "verify");
    assert!(ok, "{stdout} {stderr}");
    assert!(!stdout.contains("running"), "{stdout}");
    let entries: u64 = stdout
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap();
    let shown = shown(&cluster);
    let seqs: Vec<u64> = shown.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (0..entries).collect::<Vec<_>>());
    assert_eq!(partials(&shown), 400);

    // A changed exported line is named, by file and line.
    let first = export_dir(&cluster).join("audit-00000000000000000100.jsonl");
    let text = std::fs::read_to_string(&first).unwrap();
    let changed = text.replacen("\"result\":\"ok\"", "\"result\":\"no\"", 1);
    assert_ne!(text, changed);
    std::fs::write(&first, changed).unwrap();
    let (ok, stdout, stderr) = audit_command(&cluster, "verify");
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("audit log broken at entry 1")
            && stderr.contains("audit-00000000000000000100.jsonl line"),
        "{stderr}"
    );
}

#[test]
fn a_kill_during_an_export_loses_and_repeats_nothing() {
    let (mut cluster, modulus_len) = one_appliance(
        SMALL_RETENTION,
        &[("ITTC_TEST_AUDIT_EXPORT_PAUSE", "written")],
    );
    let mut served = 0;
    let mut c = cluster.user_session(1, PIN);
    for _ in 0..200 {
        partial(&mut c, modulus_len);
        served += 1;
    }
    // The next export writes its lines, syncs them and stops before the store lets go.
    let start = Instant::now();
    while !cluster.log(1).contains("audit export paused") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{}",
            cluster.log(1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Partials are served meanwhile: appends do not wait for an export.
    for _ in 0..20 {
        partial(&mut c, modulus_len);
        served += 1;
    }
    let lines_before: usize = export_files(&cluster).iter().map(|(_, n)| *n).sum();
    assert!(lines_before > 1);
    drop(c);
    cluster.kill(1);

    cluster.restart(1);
    // The entries were in the files and in the store: the restarted appliance finishes
    // the removal and goes on exporting.
    let v = verify_until(&cluster, Duration::from_secs(10), |v| {
        v.entries - v.exported <= 52
    });
    assert_eq!(v.broken, None);
    let (ok, stdout, stderr) = audit_command(&cluster, "verify");
    assert!(
        ok && stdout.contains("running appliance"),
        "{stdout} {stderr}"
    );
    let mut c = cluster.user_session(1, PIN);
    for _ in 0..30 {
        partial(&mut c, modulus_len);
        served += 1;
    }
    drop(c);
    cluster.stop(1);
    let shown = shown(&cluster);
    let seqs: Vec<u64> = shown.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "every entry once"
    );
    assert_eq!(
        partials(&shown),
        served,
        "every partial served has its entry, once"
    );
    let (ok, stdout, stderr) = audit_command(&cluster, "verify");
    assert!(ok, "{stdout} {stderr}");
}

/// The bytes of the files under `dir`, leaving out `skip`.
fn bytes_under(dir: &Path, skip: Option<&Path>) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if Some(path.as_path()) == skip {
                0
            } else if path.is_dir() {
                bytes_under(&path, skip)
            } else {
                // Allocated blocks, as `du` counts them.
                use std::os::unix::fs::MetadataExt;
                e.metadata().map_or(0, |m| m.blocks() * 512)
            }
        })
        .sum()
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The soak of docs/appliance.md: one appliance with the default retention serves
/// `ITTC_SOAK_PARTIALS` partial operations (1,000,000) on `ITTC_SOAK_THREADS` connections
/// (4), and every `ITTC_SOAK_SAMPLE_S` seconds (30) a line gives the store's size on disk
/// (the data folder without the export folder), the export files' size, the entries in
/// the store and in files, and the appliance's resident size. Build the appliance in
/// release first:
///
/// ```sh
/// cargo build --release -p ittc-appliance
/// cargo test --release -p ittc-tests --test audit_retention -- --ignored --nocapture soak
/// ```
#[test]
#[ignore = "a soak of a million partials: run by hand (see the doc comment)"]
fn soak_disk_use_with_retention() {
    let target = env_number("ITTC_SOAK_PARTIALS", 1_000_000);
    let threads = env_number("ITTC_SOAK_THREADS", 4);
    let sample = Duration::from_secs(env_number("ITTC_SOAK_SAMPLE_S", 30));
    let (cluster, modulus_len) = one_appliance("", &[]);
    let cluster = Arc::new(cluster);
    let pid = cluster.pid(1).unwrap();
    let data = cluster.appliances[0].data_dir.clone();
    let exports = export_dir(&cluster);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    println!("seconds\tpartials\tstore_bytes\texport_bytes\tin_store\texported\tvm_rss_kib");
    let report = |cluster: &Cluster, partials: u64| {
        let v = verify(cluster, 1);
        assert_eq!(v.broken, None, "{v:?}");
        println!(
            "{:.0}\t{partials}\t{}\t{}\t{}\t{}\t{}",
            start.elapsed().as_secs_f64(),
            bytes_under(&data, Some(&exports)),
            bytes_under(&exports, None),
            v.entries - v.exported,
            v.exported,
            vm_rss_kib(pid)
        );
        v
    };
    report(&cluster, 0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (cluster, done, stop) = (cluster.clone(), done.clone(), stop.clone());
            scope.spawn(move || {
                let mut c = cluster.user_session(1, PIN);
                while !stop.load(Ordering::Relaxed) {
                    if done.fetch_add(1, Ordering::Relaxed) >= target {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    partial(&mut c, modulus_len);
                }
            });
        }
        let mut next = Instant::now() + sample;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            if Instant::now() >= next {
                report(&cluster, done.load(Ordering::Relaxed).min(target));
                next += sample;
            }
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    // One more export interval, then the final figures.
    std::thread::sleep(Duration::from_secs(65));
    let v = report(&cluster, target);
    let export_bytes = bytes_under(&exports, None);
    println!(
        "{target} partials in {elapsed:.0} s ({:.0}/s); {} entries, {} in export files: \
         {:.0} bytes an exported entry",
        target as f64 / elapsed,
        v.entries,
        v.exported,
        export_bytes as f64 / v.exported.max(1) as f64
    );
}
