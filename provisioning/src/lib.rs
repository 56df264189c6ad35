//! The `ittc` operator CLI: cluster certificates, configs, key import, PINs, status and the
//! local demo cluster.
//!
//! Not built yet: this crate only fixes the place of the CLI in the workspace. See
//! docs/ARCHITECTURE.md for what exists today.
