//! Calling the built module as a careless C application does, shared by the C-caller test
//! (`tests/c_callers.rs`, which generates call sequences with proptest and replays the fuzz
//! corpus) and the fuzz target `fuzz/fuzz_targets/c_calls.rs` (which decodes them from
//! bytes, [`decode`]): the calls ([`Op`]), what a sequence knows of its handles
//! ([`Model`]), one call made and checked ([`run`]), the return codes PKCS#11 v2.40 allows
//! for each function ([`allowed`]), and a whole case from one or more threads or across a
//! `fork` ([`play_case`]).
//!
//! The calls go through the module's own `CK_FUNCTION_LIST`, not the `cryptoki` crate,
//! whose safe API cannot pass a NULL pointer or a short buffer. Calling C functions is
//! `unsafe`; each block says why its pointers are valid (or deliberately NULL). A broken
//! rule is a [`Failure`], not a panic, so that the fuzz target and proptest each report it
//! their own way.

// Each user (the test, the fuzz target) uses part of it.
#![allow(dead_code)]
// Test code: a failure to set up is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::c_void;
use std::path::Path;
use std::ptr;
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use openssl::pkey::{PKey, Public};

use crate::support::{KEY_ID, PIN, Setup};

/// A broken rule: which call, what it returned, what was expected.
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Returns a [`Failure`] unless the condition holds.
macro_rules! ensure {
    ($cond:expr $(,)?) => {
        ensure!($cond, "{}", stringify!($cond))
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::c_calls::Failure(format!($($fmt)+)));
        }
    };
}

/// Returns a [`Failure`] unless the two are equal.
macro_rules! ensure_eq {
    ($a:expr, $b:expr $(,)?) => {
        ensure_eq!($a, $b, "{} == {}", stringify!($a), stringify!($b))
    };
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = (&$a, &$b);
        ensure!(a == b, "{}: {:?} != {:?}", format!($($fmt)+), a, b);
    }};
}

/// Returns a [`Failure`] if the two are equal.
macro_rules! ensure_ne {
    ($a:expr, $b:expr $(,)?) => {
        ensure_ne!($a, $b, "{} != {}", stringify!($a), stringify!($b))
    };
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = (&$a, &$b);
        ensure!(a != b, "{}: both {:?}", format!($($fmt)+), a);
    }};
}

pub mod codes;
pub mod decode;
pub mod ops;

pub use codes::check;
pub use decode::decode;
pub use ops::{Handle, Model, Object, Op, Out, Pin, Template, run};

/// The module's slot.
pub const SLOT: CK_SLOT_ID = 1;
/// The module's C functions: the built library loaded a second time in the tests (the
/// fixture's `cryptoki` context holds the first load, which initialised it), or the
/// module linked into the fuzz target.
pub struct Module {
    /// The library, when loaded with `dlopen` ([`Module::load`]).
    _library: Option<libloading::Library>,
    /// Its 2.40 function list.
    pub list: &'static CK_FUNCTION_LIST,
}

impl Module {
    /// Loads the module at `path` (loaded already or not: `dlopen` of the same file gives
    /// the same library, so the same token).
    pub fn load(path: &Path) -> Self {
        // SAFETY: loading the module runs no initialiser that needs anything from us.
        let library = unsafe { libloading::Library::new(path) }.unwrap();
        let mut list: CK_FUNCTION_LIST_PTR = ptr::null_mut();
        // SAFETY: the symbol has the C_GetFunctionList signature; `list` is writable.
        let rv = unsafe {
            let get: libloading::Symbol<
                '_,
                unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV,
            > = library.get(b"C_GetFunctionList\0").unwrap();
            get(&mut list)
        };
        assert_eq!(rv, CKR_OK);
        // SAFETY: the module's function list is a static table; the library stays loaded
        // for as long as `Module` lives (and the fixture keeps it loaded besides).
        let list = unsafe { &*list };
        Self {
            _library: Some(library),
            list,
        }
    }

    /// The module linked into this program (the fuzz target's), by its function list.
    pub fn linked(list: &'static CK_FUNCTION_LIST) -> Self {
        Self {
            _library: None,
            list,
        }
    }

    /// `C_Initialize` with `CKF_OS_LOCKING_OK`.
    pub fn initialize(&self) -> CK_RV {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        // SAFETY: `args` is a live CK_C_INITIALIZE_ARGS.
        unsafe { self.list.C_Initialize.unwrap()((&raw mut args).cast::<c_void>()) }
    }
}

/// What every sequence may use.
#[derive(Clone)]
pub struct Keys {
    /// The private key.
    pub private: CK_OBJECT_HANDLE,
    /// The public key.
    pub public: CK_OBJECT_HANDLE,
    /// [`PLAINTEXT`] encrypted to the key with PKCS#1 v1.5 padding.
    pub ciphertext: Vec<u8>,
}

/// What [`Keys::ciphertext`] decrypts to.
pub const PLAINTEXT: &[u8] = b"a secret for the threshold to open";

impl Keys {
    /// The key handles, found in a session of their own with the user logged in, and a
    /// PKCS#1 v1.5 ciphertext of [`PLAINTEXT`] made by OpenSSL with `public`.
    pub fn find(m: &Module, public: &PKey<Public>) -> Result<Self, Failure> {
        let f = m.list;
        let mut h: CK_SESSION_HANDLE = 0;
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        // SAFETY: `h` is a live local.
        let rv =
            unsafe { f.C_OpenSession.unwrap()(SLOT, flags, ptr::null_mut(), None, &raw mut h) };
        ensure_eq!(rv, CKR_OK, "C_OpenSession");
        let mut pin = PIN.as_bytes().to_vec();
        // SAFETY: `pin` has the length passed.
        let rv =
            unsafe { f.C_Login.unwrap()(h, CKU_USER, pin.as_mut_ptr(), pin.len() as CK_ULONG) };
        let found = (
            find_key(m, h, CKO_PRIVATE_KEY),
            find_key(m, h, CKO_PUBLIC_KEY),
        );
        // SAFETY: no pointers.
        unsafe { f.C_CloseSession.unwrap()(h) };
        ensure!(
            rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN,
            "C_Login returned {rv:#x}"
        );
        let (private, public_handle) = (found.0?, found.1?);
        let encrypt = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
            let mut enc = openssl::encrypt::Encrypter::new(public)?;
            enc.set_rsa_padding(openssl::rsa::Padding::PKCS1)?;
            let mut ciphertext = vec![0; enc.encrypt_len(PLAINTEXT)?];
            let n = enc.encrypt(PLAINTEXT, &mut ciphertext)?;
            ciphertext.truncate(n);
            Ok(ciphertext)
        };
        let ciphertext = encrypt().map_err(|e| Failure(format!("OpenSSL: {e}")))?;
        Ok(Self {
            private,
            public: public_handle,
            ciphertext,
        })
    }
}

/// The one object of `class` with `CKA_ID` [`KEY_ID`], found in session `h`.
fn find_key(
    m: &Module,
    h: CK_SESSION_HANDLE,
    class: CK_OBJECT_CLASS,
) -> Result<CK_OBJECT_HANDLE, Failure> {
    let f = m.list;
    let mut value = class;
    let mut id = KEY_ID.to_vec();
    let mut template = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: (&raw mut value).cast::<c_void>(),
            ulValueLen: size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        },
        CK_ATTRIBUTE {
            type_: CKA_ID,
            pValue: id.as_mut_ptr().cast::<c_void>(),
            ulValueLen: id.len() as CK_ULONG,
        },
    ];
    // SAFETY: both attributes point into live locals of the lengths given.
    let rv = unsafe { f.C_FindObjectsInit.unwrap()(h, template.as_mut_ptr(), 2) };
    ensure_eq!(rv, CKR_OK, "C_FindObjectsInit for class {class}");
    let mut found: [CK_OBJECT_HANDLE; 2] = [0; 2];
    let mut count: CK_ULONG = 0;
    // SAFETY: `found` has room for the 2 handles asked for; `count` is a live local.
    let rv = unsafe { f.C_FindObjects.unwrap()(h, found.as_mut_ptr(), 2, &raw mut count) };
    // SAFETY: no pointers.
    let end = unsafe { f.C_FindObjectsFinal.unwrap()(h) };
    ensure_eq!(
        (rv, end, count),
        (CKR_OK, CKR_OK, 1),
        "finding the key of class {class}"
    );
    Ok(found[0])
}

/// Opens a read-write session (and logs the user in, if `login`), then makes the calls.
pub fn play(m: &Module, model: &mut Model, login: bool, ops: &[Op]) -> Result<(), Failure> {
    let open = Op::OpenSession {
        flags: CKF_SERIAL_SESSION | CKF_RW_SESSION,
        null_out: false,
    };
    run(m, model, &open)?;
    if login {
        let login = Op::Login {
            session: Handle::Open(0),
            user: CKU_USER,
            pin: Pin::Right,
        };
        run(m, model, &login)?;
    }
    for op in ops {
        run(m, model, op)?;
    }
    Ok(())
}

/// 2-of-3, and so many wrong PINs allowed that the random ones never lock the token: a
/// locked PIN would leave the later sequences little to do.
pub fn setup() -> Setup {
    let mut setup = Setup::new(2, 3);
    setup.options.max_pin_failures = 1_000_000;
    setup
}

/// Starts each case from no sessions (and so nobody logged in).
pub fn reset(m: &Module) -> Result<(), Failure> {
    // SAFETY: no pointers.
    let rv = unsafe { m.list.C_CloseAllSessions.unwrap()(SLOT) };
    ensure_eq!(rv, CKR_OK, "C_CloseAllSessions");
    Ok(())
}

/// How long a forked child may take.
pub const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// One case: each thread's sequence (whether it logs in first, and its calls) and, with one
/// thread, after how many of its calls the process forks.
#[derive(Clone, Debug)]
pub struct Case {
    /// One sequence per thread.
    pub threads: Vec<(bool, Vec<Op>)>,
    /// One thread only: the fork's place among its calls. The parent then makes the rest
    /// of its calls; the child initialises the module again and makes them on a session
    /// of its own.
    pub fork: Option<usize>,
}

/// Plays `case` from no sessions: one thread with a strict model, across a fork, or one
/// scoped thread per sequence (whose models cannot know which handles the others hold).
pub fn play_case(m: &Module, keys: &Keys, case: &Case) -> Result<(), Failure> {
    reset(m)?;
    match (case.threads.as_slice(), case.fork) {
        ([(login, ops)], Some(at)) => forked(m, keys, *login, ops, at),
        ([(login, ops)], None) => play(m, &mut Model::new(keys, true), *login, ops),
        (threads, _) => std::thread::scope(|scope| {
            let running: Vec<_> = threads
                .iter()
                .map(|(login, ops)| {
                    scope.spawn(move || play(m, &mut Model::new(keys, false), *login, ops))
                })
                .collect();
            running.into_iter().try_for_each(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(Failure("a calling thread panicked".into())))
            })
        }),
    }
}

/// Makes the first `at` calls, forks, and makes the rest in the parent and, after
/// `C_Initialize`, on a session of its own in the child.
fn forked(m: &Module, keys: &Keys, login: bool, ops: &[Op], at: usize) -> Result<(), Failure> {
    let (before, after) = ops.split_at(at.min(ops.len()));
    let mut model = Model::new(keys, true);
    play(m, &mut model, login, before)?;
    fork(
        || {
            ensure_eq!(m.initialize(), CKR_OK, "C_Initialize in the forked child");
            play(m, &mut Model::new(keys, true), login, after)
        },
        || after.iter().try_for_each(|op| run(m, &mut model, op)),
    )
}

/// Forks: the child runs `child` and leaves with `_exit`; the parent runs `parent`, then
/// waits at most [`CHILD_LIMIT`] for the child, which must have succeeded.
pub fn fork<E: std::fmt::Display>(
    child: impl FnOnce() -> Result<(), E>,
    parent: impl FnOnce() -> Result<(), Failure>,
) -> Result<(), Failure> {
    // SAFETY: the child calls only the module (whose C_Initialize is made for a forked
    // child) and leaves with _exit, running no destructor of the parent's state.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork failed");
    if pid == 0 {
        // A panic must not unwind into a second copy of the caller (a test harness).
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!("the forked child: {e}");
                1
            }
            Err(_) => 2,
        };
        // SAFETY: ends the child without unwinding into the parent's state.
        unsafe { libc::_exit(code) };
    }
    let parent = parent();
    let status = wait_child(pid, CHILD_LIMIT);
    parent?;
    match status {
        Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0 => Ok(()),
        Some(s) => Err(Failure(format!("the forked child failed (status {s:#x})"))),
        None => Err(Failure(format!("the forked child hung ({CHILD_LIMIT:?})"))),
    }
}

/// Waits at most `limit` for the child `pid` and returns its status; on overrun kills it
/// and returns `None`.
fn wait_child(pid: libc::pid_t, limit: Duration) -> Option<libc::c_int> {
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live local; `pid` is our child.
        let done = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
        if done == pid {
            return Some(status);
        }
        if done < 0 {
            return Some(-1);
        }
        if start.elapsed() > limit {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &raw mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
