//! Process hygiene of the appliance (docs/appliance.md): it refuses to run as root unless
//! told to, makes itself non-dumpable and locks its memory where it may, each checked from
//! outside the process through `/proc`. Real appliance processes on 127.0.0.1.
//!
//! The checks that need another user run when the tests run as root (as in CI): the
//! appliance then also runs as `nobody`.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ittc_tests::{Cluster, Options, appliance_binary};

/// The user id of `nobody` on Debian.
const NOBODY: u32 = 65534;

/// An appliance process started here, killed when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ittc-appliance --config CONFIG ARGS`, as `uid` if given, with its standard error
/// in `log`. `Ok` once it prints `listening on`, `Err(exit code)` if it exits first; at
/// most 30 s.
fn start(config: &Path, args: &[&str], uid: Option<u32>, log: &Path) -> Result<Started, i32> {
    let mut command = Command::new(appliance_binary());
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let listening = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.starts_with("listening on"));
        let _ = tx.send(listening);
    });
    let mut started = Started(child);
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(true) => Ok(started),
        _ => {
            let status = started.0.wait().unwrap();
            Err(status.code().unwrap_or(-1))
        }
    }
}

/// A field of `/proc/PID/status`, e.g. `VmLck` → `"0 kB"`.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Locked memory of a process, kB.
fn locked_kb(pid: u32) -> u64 {
    status_field(pid, "VmLck")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

#[test]
fn as_root_the_appliance_starts_only_when_allowed_and_then_locks_its_memory() {
    let cluster = Cluster::new(1, &Options::default());
    let config = &cluster.appliances[0].config;
    let log = cluster.dir().join("root.log");
    if !is_root() {
        // Not root: nothing to refuse, and it starts without being told anything.
        let _started = start(config, &[], None, &log).unwrap();
        return;
    }
    // Root, not allowed: a configuration error (exit code 2) that says what to do.
    let code = start(config, &[], None, &log).err();
    assert_eq!(code, Some(2), "{}", std::fs::read_to_string(&log).unwrap());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("refusing to run as root"), "{said}");

    // Allowed by the configuration.
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str("\n[process]\nallow_root = true\n");
    std::fs::write(config, &text).unwrap();
    let started = start(config, &[], None, &log).unwrap();
    // Root has CAP_IPC_LOCK: the memory is locked, page by page as it is touched.
    let pid = started.0.id();
    assert!(locked_kb(pid) > 0, "VmLck {}", status_field(pid, "VmLck"));
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("running as root, as allowed"), "{said}");
    drop(started);

    // Allowed by the flag; and with lock_memory off, nothing is locked.
    text = text.replace("allow_root = true", "lock_memory = false");
    std::fs::write(config, &text).unwrap();
    let started = start(config, &["--allow-root"], None, &log).unwrap();
    assert_eq!(locked_kb(started.0.id()), 0);
}

#[test]
fn the_appliance_process_is_not_dumpable() {
    if !is_root() {
        // Without root there is no other user to run it as; the unit test of
        // `hygiene::make_non_dumpable` checks PR_GET_DUMPABLE in-process.
        return;
    }
    let cluster = Cluster::new(1, &Options::default());
    // Its files belong to `nobody`, who runs it.
    chown_tree(cluster.dir(), NOBODY);
    let config = &cluster.appliances[0].config;
    let log = cluster.dir().join("nobody.log");
    let started = start(config, &[], Some(NOBODY), &log)
        .unwrap_or_else(|code| panic!("exit {code}: {}", std::fs::read_to_string(&log).unwrap()));
    let pid = started.0.id();
    let uids = status_field(pid, "Uid");
    assert!(uids.starts_with(&NOBODY.to_string()), "Uid: {uids}");
    // proc(5): the files of a process that is not dumpable belong to root, not to the
    // process's user; so its user cannot read its memory or attach to it.
    for file in ["mem", "environ", "maps"] {
        let owner = std::fs::metadata(format!("/proc/{pid}/{file}"))
            .unwrap()
            .uid();
        assert_eq!(owner, 0, "/proc/{pid}/{file} belongs to {owner}");
    }
    // Without CAP_IPC_LOCK and with a bounded RLIMIT_MEMLOCK it does not lock, and says why.
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("memory not locked"), "{said}");
    assert_eq!(locked_kb(pid), 0);
}

fn chown_tree(dir: &Path, uid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            chown_tree(&path, uid);
        } else {
            std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        }
    }
}
