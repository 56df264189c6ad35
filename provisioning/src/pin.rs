//! `ittc pin set` and `ittc pin change`: the same PIN on every appliance.

use ittc_wire::{Request, SecretBytes, UserKind};

use crate::cluster::{Cluster, expect_ok, on_all};
use crate::error::CliError;

/// Sets `user`'s PIN on every appliance (all must be reachable, so that no two appliances
/// end up with different PINs).
pub fn set(cluster: &Cluster, user: UserKind, pin: &[u8]) -> Result<(), CliError> {
    let mut connections = cluster.connect_all()?;
    let request = Request::SetPin {
        user,
        pin: SecretBytes::new(pin.to_vec()),
    };
    on_all(&mut connections, |i, c| expect_ok(i, c, &request)).map_err(|details| {
        CliError::Several {
            summary: "the PIN was not set on every appliance: run the command again".into(),
            details,
        }
    })
}

/// Changes `user`'s PIN on every appliance, proven by the old one.
pub fn change(cluster: &Cluster, user: UserKind, old: &[u8], new: &[u8]) -> Result<(), CliError> {
    let mut connections = cluster.connect_all()?;
    let request = Request::ChangePin {
        user,
        old: SecretBytes::new(old.to_vec()),
        new: SecretBytes::new(new.to_vec()),
    };
    on_all(&mut connections, |i, c| expect_ok(i, c, &request)).map_err(|details| {
        CliError::Several {
            summary:
                "the PIN was not changed on every appliance (where it failed, the old PIN still \
                  holds): fix the cause and run the command again with the PIN each one has"
                    .into(),
            details,
        }
    })
}
