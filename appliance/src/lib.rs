//! The ittc share appliance: a daemon that holds integer shares of RSA keys sealed at rest and
//! answers partial operations over mutual TLS.
//!
//! Not built yet: this crate only fixes the place of the appliance in the workspace. See
//! docs/ARCHITECTURE.md for what exists today.
