//! `ittc audit verify`: every appliance checks its own audit chain, through its export
//! files and its store (`AuditVerify`, as the admin), and the answers are shown together.

use std::time::Duration;

use ittc_wire::{AuditVerification, Request, Response};

use crate::cluster::Cluster;

/// How long an appliance may take to walk its chain (it reads every entry).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(3600);

/// One appliance's answer, or why there is none.
#[derive(Debug)]
pub struct Checked {
    /// The appliance.
    pub index: u8,
    /// What it found, or why it did not answer.
    pub found: Result<AuditVerification, String>,
}

impl Checked {
    /// One line for the operator.
    pub fn render(&self) -> String {
        let index = self.index;
        match &self.found {
            Ok(v) => match &v.broken {
                None => format!(
                    "appliance {index}: intact, {} entries ({} in {} export files), head {}",
                    v.entries,
                    v.exported,
                    v.export_files,
                    hex::encode(v.head)
                ),
                Some(b) => format!("appliance {index}: BROKEN at entry {}: {}", b.seq, b.reason),
            },
            Err(e) => format!("appliance {index}: not checked: {e}"),
        }
    }

    /// Whether the appliance answered with an intact chain.
    pub fn intact(&self) -> bool {
        self.found.as_ref().is_ok_and(|v| v.broken.is_none())
    }
}

/// Asks every appliance (in parallel) to check its chain; the answers are in index order.
pub fn verify(cluster: &Cluster) -> Vec<Checked> {
    let timeouts = ittc_wire::Timeouts {
        io: VERIFY_TIMEOUT,
        ..cluster.config.timeouts.timeouts()
    };
    cluster
        .in_parallel(cluster.indices(), |index| {
            let mut c = cluster
                .connect_with(index, timeouts)
                .map_err(|e| e.to_string())?;
            match c.request(&Request::AuditVerify) {
                Ok(Response::AuditVerified(v)) => Ok(v),
                Ok(Response::Error(e)) => Err(e.to_string()),
                Ok(other) => Err(format!("unexpected answer {}", other.kind())),
                Err(e) => Err(e.to_string()),
            }
        })
        .into_iter()
        .map(|(index, found)| Checked { index, found })
        .collect()
}
