//! Random sequences of `C_` calls with random arguments (NULL pointers, short buffers,
//! stale and foreign handles, calls in the wrong session state), from one to four threads
//! and across a `fork`, decoded from the fuzzer's bytes and played against the PKCS#11
//! module linked into this target and a real 2-of-3 cluster on 127.0.0.1 that the target
//! starts once per process.
//!
//! A crash, a hang (libFuzzer's `-timeout`), a return code that PKCS#11 does not allow for
//! the function, or a panic is a finding: the module's C shell turns a panic into
//! `CKR_GENERAL_ERROR`, but libfuzzer-sys's panic hook aborts first. The decoder, the calls
//! and their checks are the C-caller test's (`pkcs11-module/tests/support/c_calls/`),
//! which replays this target's corpus (`corpus/c_calls/`).

#![no_main]
// A failure to set up the cluster ends the fuzzer with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../pkcs11-module/tests/support/mod.rs"]
mod support;
#[path = "../../pkcs11-module/tests/support/c_calls/mod.rs"]
mod c_calls;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::ptr;
use std::sync::OnceLock;

use c_calls::{Keys, Module, decode, play_case, setup};
use cryptoki_sys::{CK_FUNCTION_LIST_PTR_PTR, CK_RV, CKR_OK};
use libfuzzer_sys::fuzz_target;
use support::Fixture;

// The module, linked into this target: nothing names the crate, so it is linked by hand.
extern crate ittc_pkcs11 as _;

// The module's 2.40 entry point.
unsafe extern "C" {
    fn C_GetFunctionList(list: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV;
}

/// What every input is played against.
struct Target {
    module: Module,
    keys: Keys,
    /// The cluster, kept to the end: libFuzzer leaves with _exit, which runs no
    /// destructor, so the reaper stops the appliances.
    _fixture: Fixture,
    /// The write end of the reaper's standard input, open while this process lives.
    _reaper: ChildStdin,
}

static TARGET: OnceLock<Target> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let target = TARGET.get_or_init(start);
    let case = decode(data);
    if let Err(failure) = play_case(&target.module, &target.keys, &case) {
        panic!("{failure}\n{case:?}");
    }
});

/// Starts the cluster (with the C-caller test's setup: 2-of-3, wrong PINs never lock),
/// points the module at it, initialises the module and finds the key.
fn start() -> Target {
    let dir = tempfile::tempdir().unwrap().keep();
    let config = dir.join("pkcs11.toml");
    // SAFETY: no other thread of this process runs yet (libFuzzer runs the target on its
    // main thread, and neither the cluster nor the module has started one), so nothing
    // reads the environment meanwhile.
    unsafe { std::env::set_var("ITTC_PKCS11_CONFIG", &config) };
    let mut setup = setup();
    setup.appliance = Some(appliance());
    let fx = Fixture::prepare(&setup, &config);
    let pids = (1..=setup.n).filter_map(|i| fx.cluster.pid(i));
    let reaper = reaper(pids, &[fx.cluster.dir(), &dir]);
    let mut list = ptr::null_mut();
    // SAFETY: `list` is a live local for the function to write.
    assert_eq!(unsafe { C_GetFunctionList(&mut list) }, CKR_OK);
    // SAFETY: the module's function list is a static table of this program.
    let module = Module::linked(unsafe { &*list });
    assert_eq!(module.initialize(), CKR_OK, "C_Initialize");
    let keys = Keys::find(&module, &fx.public()).unwrap();
    Target {
        module,
        keys,
        _fixture: fx,
        _reaper: reaper,
    }
}

/// `$ITTC_FUZZ_APPLIANCE`, else the workspace's release build, else its debug build.
fn appliance() -> PathBuf {
    if let Some(path) = std::env::var_os("ITTC_FUZZ_APPLIANCE") {
        return path.into();
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("ittc-appliance"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no ittc-appliance in {}: cargo build --release -p ittc-appliance",
                target.display()
            )
        })
}

/// A shell that waits until this process ends, however it ends (its standard input is a
/// pipe whose write end only this process holds), then kills `pids` and removes `dirs`.
fn reaper(pids: impl Iterator<Item = u32>, dirs: &[&Path]) -> ChildStdin {
    let script = r#"cat >/dev/null
for a; do
  case "$a" in
    /*) rm -rf -- "$a" ;;
    *) kill -KILL "$a" 2>/dev/null ;;
  esac
done"#;
    let mut child = Command::new("sh")
        .args(["-c", script, "reaper"])
        .args(pids.map(|pid| pid.to_string()))
        .args(dirs)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Not in the terminal's process group: a Ctrl-C must not end it first.
        .process_group(0)
        .spawn()
        .unwrap();
    child.stdin.take().unwrap()
}
