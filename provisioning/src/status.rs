//! `ittc status`: which appliances answer, what they run, and for each key whether it is
//! usable now and how many more appliance failures it survives.

use std::collections::BTreeMap;

use ittc_wire::{Request, Response, StatusInfo};
use serde::Serialize;

use crate::cluster::Cluster;

/// One appliance.
#[derive(Debug, Serialize)]
pub struct ApplianceReport {
    /// Index.
    pub index: u8,
    /// Address from the configuration.
    pub address: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Why not, if it did not.
    pub error: Option<String>,
    /// Software version.
    pub version: Option<String>,
    /// Build variant (exponentiation backend and TLS provider).
    pub build_variant: Option<String>,
    /// Seconds since it started.
    pub uptime_secs: Option<u64>,
    /// Head of its audit chain, hex.
    pub audit_head: Option<String>,
}

/// One key across the cluster.
#[derive(Debug, Serialize)]
pub struct KeyReport {
    /// Key id (`CKA_ID`), hex.
    pub id: String,
    /// Label.
    pub label: String,
    /// k.
    pub threshold: u8,
    /// n.
    pub parties: u8,
    /// The active epoch most reachable holders agree on.
    pub epoch: Option<u64>,
    /// Reachable appliances that hold the share of that epoch.
    pub holders: Vec<u8>,
    /// Whether k holders answer now.
    pub usable: bool,
    /// How many more appliances may fail with the key still usable.
    pub tolerates: usize,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Cluster id.
    pub cluster_id: String,
    /// k.
    pub threshold: u8,
    /// Appliances.
    pub appliances: Vec<ApplianceReport>,
    /// Keys.
    pub keys: Vec<KeyReport>,
    /// How many different build variants answer (diversity).
    pub distinct_variants: usize,
}

impl StatusReport {
    /// Whether every key is usable (and there is at least one appliance answering).
    pub fn healthy(&self) -> bool {
        self.appliances.iter().any(|a| a.reachable) && self.keys.iter().all(|k| k.usable)
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = format!(
            "cluster {} ({}-of-{})\n\nappliances:\n",
            self.cluster_id,
            self.threshold,
            self.appliances.len()
        );
        for a in &self.appliances {
            if a.reachable {
                out += &format!(
                    "  {:>2}  {:<22} up     {} {} (up {}s)\n",
                    a.index,
                    a.address,
                    a.version.as_deref().unwrap_or("?"),
                    a.build_variant.as_deref().unwrap_or("?"),
                    a.uptime_secs.unwrap_or(0)
                );
            } else {
                out += &format!(
                    "  {:>2}  {:<22} DOWN   {}\n",
                    a.index,
                    a.address,
                    a.error.as_deref().unwrap_or("")
                );
            }
        }
        out += &format!(
            "  build variants answering: {}\n\nkeys:\n",
            self.distinct_variants
        );
        if self.keys.is_empty() {
            out += "  (none)\n";
        }
        for k in &self.keys {
            let state = if k.usable {
                format!(
                    "usable, tolerates {} more appliance failure(s)",
                    k.tolerates
                )
            } else if k.epoch.is_none() {
                "NOT USABLE: never committed".to_owned()
            } else {
                format!(
                    "NOT USABLE: {} of {} needed holders answer",
                    k.holders.len(),
                    k.threshold
                )
            };
            out += &format!(
                "  id {} \"{}\" {}-of-{} epoch {}: holders {:?}: {state}\n",
                k.id,
                k.label,
                k.threshold,
                k.parties,
                k.epoch.map_or("-".to_owned(), |e| e.to_string()),
                k.holders
            );
        }
        out
    }
}

/// Per key: its status as the first appliance reported it, and each reporting appliance
/// with its active epoch.
type KeySightings = BTreeMap<Vec<u8>, (ittc_wire::KeyStatus, Vec<(u8, Option<u64>)>)>;

/// Asks every appliance (in parallel) and puts the answers together.
pub fn status(cluster: &Cluster) -> StatusReport {
    let answers = cluster.in_parallel(cluster.indices(), |index| -> Result<StatusInfo, String> {
        let mut c = cluster.connect(index).map_err(|e| match e {
            crate::CliError::Appliance { message, .. } => message,
            other => other.to_string(),
        })?;
        match c.request(&Request::Status) {
            Ok(Response::Status(s)) => Ok(s),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    });
    let mut appliances = Vec::new();
    let mut keys: KeySightings = BTreeMap::new();
    let mut variants = std::collections::BTreeSet::new();
    for (index, answer) in answers {
        let address = cluster
            .config
            .appliance(index)
            .map(|a| a.address.clone())
            .unwrap_or_default();
        match answer {
            Ok(s) => {
                variants.insert(s.build_variant.clone());
                for k in &s.keys {
                    keys.entry(k.key_id.as_bytes().to_vec())
                        .or_insert_with(|| (k.clone(), Vec::new()))
                        .1
                        .push((index, k.active_epoch));
                }
                appliances.push(ApplianceReport {
                    index,
                    address,
                    reachable: true,
                    error: None,
                    version: Some(s.software_version),
                    build_variant: Some(s.build_variant),
                    uptime_secs: Some(s.uptime_secs),
                    audit_head: Some(hex::encode(s.audit_head)),
                });
            }
            Err(e) => appliances.push(ApplianceReport {
                index,
                address,
                reachable: false,
                error: Some(e),
                version: None,
                build_variant: None,
                uptime_secs: None,
                audit_head: None,
            }),
        }
    }
    let keys = keys
        .into_values()
        .map(|(k, holders)| {
            // The epoch most holders report active.
            let mut counts: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            for (index, epoch) in &holders {
                if let Some(e) = epoch {
                    counts.entry(*e).or_default().push(*index);
                }
            }
            let best = counts.into_iter().max_by_key(|(e, h)| (h.len(), *e));
            let (epoch, holders) = best.map_or((None, Vec::new()), |(e, h)| (Some(e), h));
            let usable = holders.len() >= usize::from(k.threshold);
            KeyReport {
                id: hex::encode(k.key_id.as_bytes()),
                label: k.label,
                threshold: k.threshold,
                parties: k.parties,
                epoch,
                tolerates: holders.len().saturating_sub(usize::from(k.threshold)),
                holders,
                usable,
            }
        })
        .collect();
    StatusReport {
        cluster_id: cluster.config.cluster_id.clone(),
        threshold: cluster.config.threshold,
        appliances,
        keys,
        distinct_variants: variants.len(),
    }
}
