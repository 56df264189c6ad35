//! The `ittc` operator CLI: sets up a cluster and its keys without anyone ever handling a
//! share.
//!
//! One module per command: [`init`] (PKI, sealing keys, configs), [`import`] (the dealer),
//! [`generate`] (a key without a dealer), [`refresh`] (a new sharing of a key now),
//! [`pin`], [`status`], [`cert`], [`replace`] (a new appliance in a lost one's place, the
//! old certificate revoked everywhere), [`add`] (one more appliance, before a reshare gives
//! it shares), [`demo`] (a local cluster). [`cluster`] opens a cluster folder and talks to
//! its appliances as admin; `folder` writes the files of a cluster folder that `replace`
//! and `add` change; [`pki`] is the cluster's certificate authority; [`token`] signs
//! through the PKCS#11 module as any application does (`ittc sign`, and the demo's check);
//! [`installed`] finds the appliance, the module and the build variants beside `ittc` in a
//! build or where the Debian packages put them.
//! `main.rs` is only the command line.

pub mod add;
pub mod audit;
pub mod cert;
pub mod cluster;
pub mod demo;
pub mod doctor;
mod error;
mod folder;
pub mod generate;
pub mod import;
pub mod init;
pub mod installed;
pub mod pin;
pub mod pki;
pub mod process;
pub mod prompt;
pub mod refresh;
pub mod replace;
pub mod reshare;
pub mod status;
pub mod token;

pub use error::CliError;
