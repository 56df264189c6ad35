//! Running an appliance as a child process: the demo's background cluster, the
//! benchmark's and the tests' clusters all start appliances this one way.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::CliError;

/// `ittc-appliance` next to this program, else the installed one (`/usr/sbin`, which a
/// user's PATH often lacks), else the one on the PATH.
pub fn appliance_program() -> PathBuf {
    crate::installed::beside("ittc-appliance")
        .or_else(crate::installed::appliance)
        .unwrap_or_else(|| PathBuf::from("ittc-appliance"))
}

/// Starts `program --config config` with its standard error appended to `log`, waits up
/// to `timeout` for its `listening on ADDR` line, and returns the child and the address.
/// With `own_group`, the appliance gets its own process group, so that a Ctrl-C in the
/// terminal that started it does not reach it (the demo's appliances outlive `ittc`).
///
/// These local clusters run as whoever starts them: started as root (a container, a fresh
/// machine), the appliance is given `--allow-root`, which it otherwise refuses; it logs a
/// warning. A deployed appliance runs as a user of its own (the systemd unit).
pub fn spawn_appliance(
    program: &Path,
    config: &Path,
    log: &Path,
    own_group: bool,
    timeout: Duration,
) -> Result<(Child, SocketAddr), CliError> {
    spawn_appliance_with_env(program, config, log, own_group, timeout, &[])
}

/// [`spawn_appliance`] with extra environment variables (the tests' hooks).
pub fn spawn_appliance_with_env(
    program: &Path,
    config: &Path,
    log: &Path,
    own_group: bool,
    timeout: Duration,
    env: &[(&str, &str)],
) -> Result<(Child, SocketAddr), CliError> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| CliError::file(log, e))?;
    let mut command = Command::new(program);
    command.arg("--config").arg(config);
    if rustix::process::geteuid().is_root() {
        command.arg("--allow-root");
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .envs(env.iter().copied());
    if own_group {
        command.process_group(0);
    }
    let mut child = command
        .spawn()
        .map_err(|e| CliError::Usage(format!("cannot run {}: {e}", program.display())))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(CliError::Usage(
            "no standard output from the appliance".into(),
        ));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep reading so that the appliance never meets a full or closed pipe while
        // this process lives.
        for _ in lines {}
    });
    let address = rx.recv_timeout(timeout).ok().and_then(|line| {
        line.strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
    });
    match address {
        Some(address) => Ok((child, address)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let last = text.lines().last().unwrap_or("(empty log)");
            Err(CliError::Usage(format!(
                "{} did not start within {timeout:?}: {last} (log: {})",
                config.display(),
                log.display()
            )))
        }
    }
}
