//! The ittc PKCS#11 token: a thin C ABI shell over a safe token core that talks to the share
//! appliances, combines their partial results and hands applications ordinary RSA results.
//!
//! Not built yet: this crate only fixes the place of the module in the workspace. See
//! docs/ARCHITECTURE.md for what exists today.
