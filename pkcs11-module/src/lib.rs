//! The ittc PKCS#11 token (`libittc_pkcs11.so`): a thin C ABI shell over a safe token core
//! that talks to the share appliances, combines their partial results and hands
//! applications ordinary RSA results.
//!
//! * `ffi` (private) is the only code with `unsafe`: one macro emits every `C_Xxx`
//!   entry point, turns raw pointers into checked values and calls the core.
//! * [`Module`] is the token: slot, sessions, login, objects and operations, each a safe
//!   method returning [`Result`]. Tests can build many; the shell holds one.
//! * [`client`] talks to the appliances: pooled mTLS connections, back-off, fan-out.
//! * [`private_op`] runs one private operation: blind, ask k appliances, combine robustly,
//!   verify, unblind. [`operations`] holds the paddings and the local public-key
//!   operations (verify, encrypt).
//!
//! `C_GenerateKeyPair` has the appliances generate a key together (no dealer) and finishes
//! it as `ittc key generate` does (`module`'s `keygen`). The crate never links OpenSSL (it
//! is loaded into processes that carry their own).
//! Session objects and copies of the private key live in the module (`module`'s
//! `session_objects`). docs/pkcs11.md lists functions, mechanisms, attributes and limits.

// `CK_ULONG` is `u64` on LP64 targets but `u32` on others (Windows); the `u64::from` and
// `try_from` conversions between it and the wire's `u64` keep the code portable.
#![allow(clippy::useless_conversion)]

pub mod attributes;
pub mod client;
pub mod config;
mod error;
mod ffi;
pub mod log;
pub mod mechanisms;
pub mod module;
pub mod objects;
pub mod operations;
pub mod private_op;
pub mod session;

pub use error::{Error, Result};
pub use module::{InitOptions, Module};

/// A random generator seeded from the operating system for one operation, so that a
/// forked child never repeats its parent's random values (blinding factors, salts).
pub(crate) fn rng() -> Result<rand::rngs::StdRng> {
    use rand::SeedableRng;
    rand::rngs::StdRng::try_from_rng(&mut rand::rngs::SysRng)
        .map_err(|err| Error::General(format!("operating system random generator: {err}")))
}
