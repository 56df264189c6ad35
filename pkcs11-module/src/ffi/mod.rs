//! The C ABI shell: the only code in the workspace with `unsafe`.
//!
//! One macro, [`entry!`], emits each `extern "C" fn C_Xxx`: it installs logging, traces the
//! call, catches any panic (which then becomes `CKR_GENERAL_ERROR` instead of unwinding into
//! C), runs a body that turns raw pointers into checked slices and typed values
//! (`convert`), calls the safe core ([`crate::Module`]) and returns `err.rv()`. No C struct
//! or raw pointer reaches the core.
//!
//! The module value lives in a static slot that `C_Initialize` fills and `C_Finalize`
//! empties; the slot's lock is held only to clone or swap an `Arc`, never across a call
//! into the core. The slot remembers the pid that filled it: in a forked child every call
//! reports `CKR_CRYPTOKI_NOT_INITIALIZED` until the child calls `C_Initialize`, and the
//! parent's module (its connections, which the child shares with the parent) is leaked in
//! the child rather than dropped, so no TLS stream is ever used by two processes. The
//! child's new module keeps the TLS identity the parent loaded: servers such as nginx
//! fork workers that run as a user who may no longer read the key files.

#![allow(unsafe_code)]

macro_rules! entry {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// Every pointer argument is NULL or valid for what the PKCS#11 specification says
        /// the function reads or writes through it.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> cryptoki_sys::CK_RV {
            $crate::ffi::call(stringify!($name), || -> $crate::error::Result<()> { $body })
        }
    };
}

mod convert;
mod functions;
mod lists;
mod unsupported;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use cryptoki_sys::{CK_RV, CKR_GENERAL_ERROR, CKR_OK};

use crate::client::lock;
use crate::error::{Error, Result};
use crate::module::Module;

/// The initialised module and the process that initialised it.
struct Slot {
    module: Arc<Module>,
    pid: u32,
}

static SLOT: Mutex<Option<Slot>> = Mutex::new(None);

/// Runs one entry point's body: logging, tracing, panics, the return code.
fn call(name: &'static str, body: impl FnOnce() -> Result<()>) -> CK_RV {
    crate::log::init();
    tracing::trace!(function = name, "call");
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(err)) => {
            tracing::debug!(function = name, %err, "returns an error");
            err.rv()
        }
        Err(_) => {
            tracing::error!(function = name, "panic caught at the C boundary");
            CKR_GENERAL_ERROR
        }
    }
}

/// The module of this process.
fn module() -> Result<Arc<Module>> {
    match lock(&SLOT).as_ref() {
        Some(slot) if slot.pid == std::process::id() => Ok(Arc::clone(&slot.module)),
        _ => Err(Error::NotInitialized),
    }
}

/// Fills the slot with `make(None)`; refuses if this process filled it already. In a
/// forked child the module is made with `make(Some(parent's module))`, and the parent's
/// module is leaked, not dropped.
fn install(make: impl FnOnce(Option<&Module>) -> Result<Module>) -> Result<()> {
    let mut slot = lock(&SLOT);
    let pid = std::process::id();
    let module = match slot.take() {
        Some(old) if old.pid == pid => {
            *slot = Some(old);
            return Err(Error::AlreadyInitialized);
        }
        Some(old) => {
            tracing::info!(
                parent = old.pid,
                child = pid,
                "initialising again after fork"
            );
            let made = make(Some(&old.module));
            std::mem::forget(old);
            made?
        }
        None => make(None)?,
    };
    *slot = Some(Slot {
        module: Arc::new(module),
        pid,
    });
    Ok(())
}

/// Empties the slot. The module is dropped when the last call using it returns.
fn uninstall() -> Result<()> {
    let mut slot = lock(&SLOT);
    match slot.take() {
        Some(old) if old.pid == std::process::id() => {
            drop(slot);
            drop(old);
            Ok(())
        }
        Some(old) => {
            std::mem::forget(old);
            Err(Error::NotInitialized)
        }
        None => Err(Error::NotInitialized),
    }
}
