//! Process hygiene (docs/appliance.md, "Process hygiene"): what the appliance does to its
//! own process before it reads a secret.
//!
//! * It makes itself **non-dumpable** (`prctl(PR_SET_DUMPABLE, 0)`): no core dump, and no
//!   other process of its user may attach to it or read its memory through `/proc`.
//! * It **locks its memory** where the platform allows (`mlockall` with `MCL_CURRENT |
//!   MCL_FUTURE | MCL_ONFAULT`: each page as it is first touched, so nothing is faulted in
//!   ahead and the resident size is unchanged), so that no share or key is written to
//!   swap. Locking counts against `RLIMIT_MEMLOCK` unless the process has
//!   `CAP_IPC_LOCK`, and with `MCL_FUTURE` an allocation past that limit would fail: so
//!   without the capability it is done only when the limit is unlimited, and otherwise
//!   logged as not done, with the reason.
//! * It **refuses to run as root** unless told to: an appliance runs as a user of its own.

use std::fmt;

use rustix::mm::{MlockAllFlags, mlockall};
use rustix::process::{
    DumpableBehavior, Resource, geteuid, getrlimit, set_dumpable_behavior, setrlimit,
};
use rustix::thread::{CapabilitySet, capabilities};

/// Makes the process non-dumpable.
///
/// # Errors
///
/// The `prctl` call's error.
pub fn make_non_dumpable() -> std::io::Result<()> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Whether the process is dumpable now (`PR_GET_DUMPABLE`).
pub fn is_dumpable() -> bool {
    !matches!(
        rustix::process::dumpable_behavior(),
        Ok(DumpableBehavior::NotDumpable)
    )
}

/// Whether the process runs as root (effective user id 0).
pub fn is_root() -> bool {
    geteuid().is_root()
}

/// What [`lock_memory`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryLock {
    /// `mlockall` succeeded.
    Locked,
    /// Not locked, and why.
    NotLocked(String),
}

impl fmt::Display for MemoryLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryLock::Locked => f.write_str("locked (mlockall, pages as they are touched)"),
            MemoryLock::NotLocked(why) => write!(f, "not locked: {why}"),
        }
    }
}

/// Locks the process's present and future pages, each as it is touched, where that cannot
/// make a later allocation fail: with `CAP_IPC_LOCK`, or with `RLIMIT_MEMLOCK` unlimited.
pub fn lock_memory() -> MemoryLock {
    let capable = capabilities(None)
        .map(|caps| caps.effective.contains(CapabilitySet::IPC_LOCK))
        .unwrap_or(false);
    let limit = getrlimit(Resource::Memlock).current;
    if !capable && limit.is_some() {
        return MemoryLock::NotLocked(format!(
            "RLIMIT_MEMLOCK is {} bytes and the process lacks CAP_IPC_LOCK; set \
             LimitMEMLOCK=infinity in the systemd unit (docs/appliance.md)",
            limit.unwrap_or(0)
        ));
    }
    match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT) {
        Ok(()) => MemoryLock::Locked,
        Err(err) => MemoryLock::NotLocked(format!("mlockall: {err}")),
    }
}

/// Raises the soft limit on open files to `want` (or the hard limit, if lower); returns the
/// soft limit in force after. Each connection takes a descriptor, and the usual soft limit
/// of 1024 is below what `max_connections` and `max_handshakes` allow together.
pub fn raise_file_limit(want: u64) -> u64 {
    let mut limit = getrlimit(Resource::Nofile);
    let target = limit.maximum.map_or(want, |hard| hard.min(want));
    if limit.current.is_some_and(|soft| soft < target) {
        limit.current = Some(target);
        if setrlimit(Resource::Nofile, limit).is_err() {
            return getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]

    use super::*;

    #[test]
    fn the_file_limit_is_raised_up_to_the_hard_limit() {
        let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
        let want = hard.min(4096);
        assert!(raise_file_limit(want) >= want);
        // Never lowered.
        assert!(raise_file_limit(16) >= want);
    }

    #[test]
    fn a_process_made_non_dumpable_says_so() {
        // The test process itself: it ends with the test run.
        make_non_dumpable().unwrap_or_else(|e| panic!("prctl: {e}"));
        assert!(!is_dumpable());
    }
}
