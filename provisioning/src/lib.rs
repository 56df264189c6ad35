//! The `ittc` operator side of a cluster: today its PKI, later the CLI.
//!
//! Built: [`pki`], the cluster's own certificate authority ([`pki::ClusterCa`]) and the
//! certificates it issues, each naming its holder's role (appliance `i`, client, admin) as
//! [`ittc_wire`] reads it. `ittc init` will use it to set up a cluster; tests use it now.
//!
//! Not built yet: the `ittc` CLI itself (configs, key import, PINs, status, the local demo
//! cluster). See docs/ARCHITECTURE.md for what exists today.

pub mod pki;
