//! `ittc appliance replace`: a new appliance takes the place of a lost or compromised one,
//! at the same index.
//!
//! In the cluster folder (which needs `ca.key`): a new certificate and key, a new sealing
//! key and a fresh configuration for the appliance (the old files kept as `*.old`); its
//! address, if it moves, in `pkcs11.toml` and in the other appliances' configurations; its
//! old certificate's serial in `pkcs11.toml`'s `revoked` list (the PKCS#11 module and this
//! CLI refuse it). Then every other appliance is asked to put every serial of that list
//! on its deny-list (`RevokeCertificate`). The new appliance starts with an empty data
//! folder and takes the token objects, PIN records and deny-list from its peers by itself.
//!
//! The command can be run again until it has reached every appliance: a file
//! `appliance-<i>.replacing` records a replacement under way (the old serial, and the new
//! one once issued), so a second run issues nothing new and only finishes what is left.
//! Every file is written under a temporary name and renamed, and the record says how far
//! the files have got, so an interrupted run is finished by the next.

use std::path::Path;

use ittc_wire::cluster::FILE_NAME;
use ittc_wire::{Request, revocation};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, expect_ok};
use crate::error::CliError;
use crate::folder::{
    ClusterFile, cluster_ca, edit_appliance_configs, host_address, pem_serial, read, read_record,
    remove_record, replace_file, set_listen, set_peer_address, swap_in, write_new, write_record,
};
use crate::init::{APPLIANCE_FILES, ApplianceFiles, listen_address};

/// What `ittc appliance replace` is asked for.
#[derive(Clone, Debug)]
pub struct ReplaceOptions {
    /// The index of the appliance to replace.
    pub index: u8,
    /// Where the new appliance is reached: `HOST:PORT`, or `HOST` to keep the port;
    /// `None` keeps the address.
    pub host: Option<String>,
}

/// What a run did.
#[derive(Debug)]
pub struct Replaced {
    /// The appliance replaced.
    pub index: u8,
    /// Its old certificate's serial, hex.
    pub old_serial: String,
    /// Its new certificate's serial, hex.
    pub new_serial: String,
    /// Whether an earlier run had issued the new files already (this one finished it).
    pub resumed: bool,
    /// The appliance's address now.
    pub address: String,
    /// Whether the address changed in this run.
    pub address_changed: bool,
    /// The other appliances whose configuration now names the new address.
    pub configs_updated: Vec<u8>,
    /// Other appliances whose configuration is not in the folder, or has no `[[peers]]`
    /// entry for this appliance, one line each.
    pub configs_not_updated: Vec<String>,
    /// The appliances that hold every revoked serial now.
    pub revoked_on: Vec<u8>,
    /// The appliances that could not be told, one line each (appliance and reason).
    pub not_reached: Vec<String>,
    /// How the replaced appliance itself answered: `Ok` with its uptime in seconds, or why
    /// it did not (it usually is not started yet).
    pub new_appliance: Result<u64, String>,
}

impl Replaced {
    /// Whether every other appliance refuses the old certificate now.
    pub fn complete(&self) -> bool {
        self.not_reached.is_empty()
    }
}

/// The record of a replacement under way, `appliance-<i>.replacing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// The serial (hex) of the certificate being replaced.
    old_serial: String,
    /// The serial (hex) of the new certificate, once its files are written (as `*.new`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_serial: Option<String>,
}

/// The first line of the record.
const RECORD_COMMENT: &str =
    "a replacement under way: run `ittc appliance replace` again to finish it";

/// Replaces appliance `options.index` of the cluster in `dir`; `step` hears each step.
///
/// # Errors
///
/// [`CliError::Usage`] for an index not in the cluster, a bad `--host`, or a folder without
/// `ca.key`; file errors; [`CliError::Cluster`] for an unusable `pkcs11.toml`. Appliances
/// that cannot be reached are not an error: see [`Replaced::not_reached`].
pub fn replace(
    dir: &Path,
    options: &ReplaceOptions,
    step: &dyn Fn(&str),
) -> Result<Replaced, CliError> {
    let index = options.index;
    let name = format!("appliance-{index}");
    let mut cluster_file = ClusterFile::read(dir)?;
    let config = &mut cluster_file.config;
    let Some(entry) = config.appliance(index) else {
        return Err(CliError::Usage(format!(
            "no appliance {index} in {}",
            dir.join(FILE_NAME).display()
        )));
    };
    let old_address = entry.address.clone();
    let address = match &options.host {
        Some(host) => host_address(&old_address, host)?,
        None => old_address.clone(),
    };

    let record_path = dir.join(format!("{name}.replacing"));
    let mut record = match read_record::<Record>(&record_path)? {
        Some(record) => record,
        None => {
            let old_serial = hex::encode(pem_serial(&dir.join(format!("{name}.pem")))?);
            let record = Record {
                old_serial,
                new_serial: None,
            };
            write_record(&record_path, RECORD_COMMENT, &record)?;
            record
        }
    };
    let resumed = record.new_serial.is_some();

    // The new files, written as *.new, then recorded, then swapped in (old ones to *.old).
    if record.new_serial.is_none() {
        step(&format!(
            "issuing a new certificate and sealing key for {name}"
        ));
        let ca = cluster_ca(dir)?;
        let mut appliances = config.appliances.clone();
        for a in &mut appliances {
            if a.index == index {
                a.address.clone_from(&address);
            }
        }
        let mut revoked = config.revoked.clone();
        if !revoked
            .iter()
            .any(|s| normalized_hex(s) == normalized_hex(&record.old_serial))
        {
            revoked.push(record.old_serial.clone());
        }
        ApplianceFiles::issue(&ca, index, &config.cluster_id, &appliances, &revoked)?
            .write(|ext, contents, private| write_new(dir, &name, ext, contents, private))?;
        record.new_serial = Some(hex::encode(pem_serial(
            &dir.join(format!("{name}.pem.new")),
        )?));
        write_record(&record_path, RECORD_COMMENT, &record)?;
    }
    for ext in APPLIANCE_FILES {
        swap_in(dir, &name, ext)?;
    }
    let new_serial = record.new_serial.clone().unwrap_or_default();

    // The address, wherever it is written; the old serial in pkcs11.toml.
    let address_changed = address != old_address;
    let mut changed = false;
    for a in &mut config.appliances {
        if a.index == index && a.address != address {
            a.address.clone_from(&address);
            changed = true;
        }
    }
    if !config
        .revoked
        .iter()
        .any(|s| normalized_hex(s) == normalized_hex(&record.old_serial))
    {
        config.revoked.push(record.old_serial.clone());
        changed = true;
    }
    if changed {
        step(&format!("updating {FILE_NAME}"));
        cluster_file.write()?;
    }
    let own_config = dir.join(format!("{name}.toml"));
    let own = read(&own_config)?;
    if let Some(updated) = set_listen(&own, &listen_address(&address))
        && updated != own
    {
        replace_file(&own_config, &updated, false)?;
    }
    let others = cluster_file.config.appliances.iter().map(|a| a.index);
    let edits = edit_appliance_configs(
        dir,
        others.filter(|i| *i != index),
        |path| {
            format!(
                "{} is not in the folder: set appliance {index}'s [[peers]] address there to {address}",
                path.display()
            )
        },
        |path, text| {
            set_peer_address(text, index, &address).ok_or_else(|| {
                format!(
                    "{} has no [[peers]] entry for appliance {index}: add one with address {address}",
                    path.display()
                )
            })
        },
    )?;

    // The revocations, on every other appliance and (if it runs) the new one.
    let cluster = Cluster::open(dir)?;
    let serials: Vec<Vec<u8>> = cluster
        .config
        .revoked_serials()
        .map_err(|e| CliError::Cluster(e.to_string()))?
        .serials()
        .map(<[u8]>::to_vec)
        .collect();
    let old = normalized_hex(&record.old_serial);
    let requests: Vec<Request> = serials
        .iter()
        .map(|serial| Request::RevokeCertificate {
            serial: serial.clone(),
            label: if hex::encode(serial) == old {
                format!("appliance {index} (replaced)")
            } else {
                "revoked in pkcs11.toml".to_owned()
            },
        })
        .collect();
    step("revoking the old certificate on every appliance");
    let others: Vec<u8> = cluster
        .indices()
        .into_iter()
        .filter(|i| *i != index)
        .collect();
    let results = cluster.in_parallel(others, |i| -> Result<(), CliError> {
        let mut c = cluster.connect(i)?;
        for request in &requests {
            expect_ok(i, &mut c, request)?;
        }
        Ok(())
    });
    let mut revoked_on = Vec::new();
    let mut not_reached = Vec::new();
    for (i, result) in results {
        match result {
            Ok(()) => revoked_on.push(i),
            Err(e) => not_reached.push(e.to_string()),
        }
    }
    let new_appliance = cluster
        .connect(index)
        .and_then(|mut c| {
            for request in &requests {
                expect_ok(index, &mut c, request)?;
            }
            match c.request(&Request::Status) {
                Ok(ittc_wire::Response::Status(s)) => Ok(s.uptime_secs),
                Ok(other) => Err(CliError::appliance(
                    index,
                    format!("answered {}", other.kind()),
                )),
                Err(e) => Err(CliError::appliance(index, e)),
            }
        })
        .map_err(|e| match e {
            CliError::Appliance { message, .. } => message,
            other => other.to_string(),
        });
    if new_appliance.is_ok() {
        revoked_on.push(index);
        revoked_on.sort_unstable();
    }
    if not_reached.is_empty() {
        remove_record(&record_path)?;
    }
    Ok(Replaced {
        index,
        old_serial: old,
        new_serial,
        resumed,
        address,
        address_changed,
        configs_updated: edits.updated,
        configs_not_updated: edits.not_updated,
        revoked_on,
        not_reached,
        new_appliance,
    })
}

/// A hex serial as the deny-lists compare it: lower case, no leading zero bytes.
fn normalized_hex(text: &str) -> String {
    hex::decode(text).map_or_else(
        |_| text.to_ascii_lowercase(),
        |bytes| hex::encode(revocation::normalize_serial(&bytes)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_without_leading_zeros_or_case() {
        assert_eq!(normalized_hex("00FF01"), "ff01");
        assert_eq!(normalized_hex("7f"), "7f");
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("appliance-3.replacing");
        let record = Record {
            old_serial: "3c3c".into(),
            new_serial: Some("4d4d".into()),
        };
        write_record(&path, RECORD_COMMENT, &record).unwrap();
        assert_eq!(read_record::<Record>(&path).unwrap(), Some(record));
    }
}
