//! `ittc appliance add`: one more appliance in the cluster folder, the first step of
//! growing a cluster (the second, `ittc cluster reshare`, gives it shares of the keys).
//!
//! In the cluster folder (which needs `ca.key`), for the new appliance `I`, exactly what
//! `ittc init` would have written: a certificate and key (role `appliance-I`, issued by
//! the cluster CA), a sealing key, and a configuration with a new data folder, every other
//! appliance of `pkcs11.toml` as a peer, and the cluster's revoked serials refused from the
//! start. Then a `[[peers]]` entry for `I` in the configuration of every other appliance
//! in the folder, and `I` in `pkcs11.toml`'s `[[appliances]]` (in index order; the
//! threshold stays). No appliance is asked anything: the running ones read their new peer
//! when they restart, and the new one, started with an empty data folder, takes the token
//! objects, PIN records and deny-list from its peers by itself (they answer any appliance
//! of the cluster, listed in their `peers` or not). It holds no share until a reshare.
//!
//! The command can be run again until it is done: a file `appliance-<I>.adding` records
//! an addition under way (the address, and the certificate's serial once issued), so a
//! second run issues nothing new and only finishes what is left. Every file is written
//! under a temporary name and renamed; `pkcs11.toml` is written last, and the record
//! removed after it.

use std::path::Path;

use ittc_wire::MAX_APPLIANCES;
use ittc_wire::cluster::{ApplianceEntry, ClusterConfig, FILE_NAME};
use serde::{Deserialize, Serialize};

use crate::error::CliError;
use crate::folder::{
    ClusterFile, add_peer, cluster_ca, edit_appliance_configs, host_address, pem_serial,
    read_record, remove_record, swap_in, write_new, write_record,
};
use crate::init::{APPLIANCE_FILES, ApplianceFiles, BASE_PORT};

/// What `ittc appliance add` is asked for.
#[derive(Clone, Debug, Default)]
pub struct AddOptions {
    /// The new appliance's index; `None`: the lowest free one.
    pub index: Option<u8>,
    /// Where it is reached: `HOST:PORT`, or `HOST` for port 7300 + index; `None`:
    /// `127.0.0.1:7300+index`, as `ittc init` has it.
    pub host: Option<String>,
}

/// What a run did.
#[derive(Debug)]
pub struct Added {
    /// The new appliance.
    pub index: u8,
    /// Its address.
    pub address: String,
    /// Its certificate's serial, hex.
    pub serial: String,
    /// Whether an earlier run had started the addition (this one finished it).
    pub resumed: bool,
    /// Whether an earlier run had done everything but say so: nothing was left to do.
    pub was_complete: bool,
    /// The other appliances whose configuration now has the new appliance as a peer
    /// (changed by this run).
    pub configs_updated: Vec<u8>,
    /// Other appliances whose configuration is not in the folder or could not be edited,
    /// one line each.
    pub configs_not_updated: Vec<String>,
    /// The cluster's appliances now, in index order.
    pub appliances: Vec<u8>,
    /// The cluster's threshold (unchanged).
    pub threshold: u8,
}

/// The record of an addition under way, `appliance-<i>.adding`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// Where the new appliance is reached.
    address: String,
    /// The serial (hex) of its certificate, once its files are written (as `*.new`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serial: Option<String>,
}

/// The first line of the record.
const RECORD_COMMENT: &str = "an addition under way: run `ittc appliance add` again to finish it";

/// Adds an appliance to the cluster in `dir`; `step` hears each step.
///
/// # Errors
///
/// [`CliError::Usage`] for an index in use or out of range, an address in use, a bad
/// `--host`, an `--index` or `--host` other than those of an addition under way, or a
/// folder without `ca.key`; file errors; [`CliError::Cluster`] for an unusable
/// `pkcs11.toml`.
pub fn add(dir: &Path, options: &AddOptions, step: &dyn Fn(&str)) -> Result<Added, CliError> {
    let mut cluster = ClusterFile::read(dir)?;
    let names = folder_names(dir)?;
    let (index, mut record) = match under_way(dir, &names)? {
        Some((index, record)) => {
            resuming(dir, index, &record, options)?;
            (index, Some(record))
        }
        None => (
            choose_index(dir, &cluster.config, &names, options.index)?,
            None,
        ),
    };
    let resumed = record.is_some();
    let name = format!("appliance-{index}");
    let record_path = dir.join(format!("{name}.adding"));
    let address = match &record {
        Some(r) => r.address.clone(),
        None => new_address(&cluster.config, index, options.host.as_deref())?,
    };
    let mut appliances = cluster.config.appliances.clone();
    if cluster.config.appliance(index).is_none() {
        appliances.push(ApplianceEntry {
            index,
            address: address.clone(),
        });
        appliances.sort_by_key(|a| a.index);
    }

    // The new files, written as *.new, then recorded, then moved in.
    let mut was_complete = resumed;
    let serial = match record.as_ref().and_then(|r| r.serial.clone()) {
        Some(serial) => serial,
        None => {
            let ca = cluster_ca(dir)?;
            let record = record.get_or_insert_with(|| Record {
                address: address.clone(),
                serial: None,
            });
            write_record(&record_path, RECORD_COMMENT, record)?;
            step(&format!("issuing a certificate and sealing key for {name}"));
            let config = &cluster.config;
            ApplianceFiles::issue(&ca, index, &config.cluster_id, &appliances, &config.revoked)?
                .write(|ext, contents, private| write_new(dir, &name, ext, contents, private))?;
            let serial = hex::encode(pem_serial(&dir.join(format!("{name}.pem.new")))?);
            record.serial = Some(serial.clone());
            write_record(&record_path, RECORD_COMMENT, record)?;
            was_complete = false;
            serial
        }
    };
    for ext in APPLIANCE_FILES {
        was_complete &= !swap_in(dir, &name, ext)?;
    }

    // A peer of every other appliance; then one of the cluster's.
    let others = cluster.config.appliances.iter().map(|a| a.index);
    let edits = edit_appliance_configs(
        dir,
        others.filter(|i| *i != index),
        |path| {
            format!(
                "{} is not in the folder: add a [[peers]] entry there with index = {index} and address = \"{address}\"",
                path.display()
            )
        },
        |path, text| {
            add_peer(text, index, &address).ok_or_else(|| {
                format!(
                    "{}: its peers are not written as [[peers]] tables: add appliance {index} at {address} by hand",
                    path.display()
                )
            })
        },
    )?;
    was_complete &= edits.updated.is_empty();
    if cluster.config.appliance(index).is_none() {
        step(&format!("adding appliance {index} to {FILE_NAME}"));
        cluster.config.appliances = appliances;
        cluster.write()?;
        was_complete = false;
    }
    remove_record(&record_path)?;
    Ok(Added {
        index,
        address,
        serial,
        resumed,
        was_complete,
        configs_updated: edits.updated,
        configs_not_updated: edits.not_updated,
        appliances: cluster.config.appliances.iter().map(|a| a.index).collect(),
        threshold: cluster.config.threshold,
    })
}

/// The names of the folder's entries.
fn folder_names(dir: &Path) -> Result<Vec<String>, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::file(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::file(dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// The addition under way, if any (the lowest index, should there be several).
fn under_way(dir: &Path, names: &[String]) -> Result<Option<(u8, Record)>, CliError> {
    for index in 1..=MAX_APPLIANCES {
        let file = format!("appliance-{index}.adding");
        if names.contains(&file)
            && let Some(record) = read_record(&dir.join(file))?
        {
            return Ok(Some((index, record)));
        }
    }
    Ok(None)
}

/// Checks that `options` ask for nothing other than the addition under way.
fn resuming(dir: &Path, index: u8, record: &Record, options: &AddOptions) -> Result<(), CliError> {
    let file = dir.join(format!("appliance-{index}.adding"));
    if options.index.is_some_and(|i| i != index) {
        return Err(CliError::Usage(format!(
            "the addition of appliance {index} is under way ({}): run `ittc appliance add` \
             without --index to finish it first",
            file.display()
        )));
    }
    if let Some(host) = &options.host
        && host_address(&record.address, host)? != record.address
    {
        return Err(CliError::Usage(format!(
            "appliance {index} is being added at {} ({}): run `ittc appliance add` without \
             --host to finish that first",
            record.address,
            file.display()
        )));
    }
    Ok(())
}

/// `asked` if it is free, else the lowest free index: one that `pkcs11.toml` does not
/// list and that has no `appliance-<i>.*` file or `appliance-<i>-data` folder (an earlier
/// appliance's files are never overwritten).
fn choose_index(
    dir: &Path,
    config: &ClusterConfig,
    names: &[String],
    asked: Option<u8>,
) -> Result<u8, CliError> {
    let has_files = |i: u8| {
        let (files, data) = (format!("appliance-{i}."), format!("appliance-{i}-data"));
        names.iter().any(|n| n.starts_with(&files) || *n == data)
    };
    match asked {
        Some(i) if i == 0 || i > MAX_APPLIANCES => Err(CliError::Usage(format!(
            "--index {i}: appliance indices are 1..={MAX_APPLIANCES}"
        ))),
        Some(i) if config.appliance(i).is_some() => Err(CliError::Usage(format!(
            "--index {i}: appliance {i} is in {} already; leave --index out for the lowest \
             free index",
            dir.join(FILE_NAME).display()
        ))),
        Some(i) if has_files(i) => Err(CliError::Usage(format!(
            "--index {i}: {} has appliance-{i}.* files (an earlier appliance {i}'s?) though \
             {FILE_NAME} does not list it: move them away, or choose another index",
            dir.display()
        ))),
        Some(i) => Ok(i),
        None => (1..=MAX_APPLIANCES)
            .find(|i| config.appliance(*i).is_none() && !has_files(*i))
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "no free index in 1..={MAX_APPLIANCES}: {FILE_NAME} or the appliance-<i>.* \
                     files in {} use them all",
                    dir.display()
                ))
            }),
    }
}

/// Appliance `index`'s address: `host` (with port 7300 + index if it has none), else
/// `127.0.0.1:7300+index`; refused if another appliance has it.
fn new_address(config: &ClusterConfig, index: u8, host: Option<&str>) -> Result<String, CliError> {
    let default = format!("127.0.0.1:{}", BASE_PORT + u16::from(index));
    let address = match host {
        Some(host) => host_address(&default, host)?,
        None => default,
    };
    if let Some(other) = config.appliances.iter().find(|a| a.address == address) {
        return Err(CliError::Usage(format!(
            "appliance {} is at {address} already: give appliance {index} another --host",
            other.index
        )));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::init::{InitOptions, init};

    /// A 2-of-3 cluster written by `ittc init`, appliance 2 at 10.0.0.2:7302.
    fn cluster() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        init(&InitOptions {
            appliances: 3,
            threshold: 2,
            out: dir.clone(),
            hosts: vec![(2, "10.0.0.2:7302".into())],
        })
        .unwrap();
        (tmp, dir)
    }

    fn run(dir: &Path, index: Option<u8>, host: Option<&str>) -> Result<Added, CliError> {
        let options = AddOptions {
            index,
            host: host.map(str::to_owned),
        };
        add(dir, &options, &|_| {})
    }

    fn peers(dir: &Path, index: u8) -> Vec<(i64, String)> {
        let text = std::fs::read_to_string(dir.join(format!("appliance-{index}.toml"))).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        table["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["index"].as_integer().unwrap(),
                    p["address"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn the_lowest_free_index_is_added_everywhere_as_init_would_have_it() {
        let (_tmp, dir) = cluster();
        // A revoked serial (a replaced appliance's) reaches the new appliance's config.
        let mut file = ClusterFile::read(&dir).unwrap();
        file.config.revoked.push("3c3c".into());
        file.write().unwrap();
        let added = run(&dir, None, None).unwrap();
        assert_eq!(added.index, 4);
        assert_eq!(added.address, "127.0.0.1:7304");
        assert_eq!(added.appliances, vec![1, 2, 3, 4]);
        assert_eq!(added.threshold, 2);
        assert_eq!(added.configs_updated, vec![1, 2, 3]);
        assert!(added.configs_not_updated.is_empty());
        assert!(!added.resumed && !added.was_complete);

        let config = ClusterConfig::load(&dir.join(FILE_NAME)).unwrap();
        assert_eq!(config.threshold, 2);
        assert_eq!(config.appliance(4).unwrap().address, "127.0.0.1:7304");
        let indices: Vec<u8> = config.appliances.iter().map(|a| a.index).collect();
        assert_eq!(indices, vec![1, 2, 3, 4]);
        assert!(read(dir.join(FILE_NAME)).starts_with("# ittc PKCS#11 module"));
        for j in 1..=3 {
            let p = peers(&dir, j);
            assert_eq!(p.len(), 3, "appliance {j}: {p:?}");
            assert_eq!(p[2], (4, "127.0.0.1:7304".to_owned()), "appliance {j}");
        }
        // The new appliance's files, as init writes them: its peers, its own listen
        // address, a new data folder, the revoked serial; a certificate for its role.
        let own = read(dir.join("appliance-4.toml"));
        assert!(own.contains("listen = \"127.0.0.1:7304\""), "{own}");
        assert!(own.contains("data_dir = \"appliance-4-data\""), "{own}");
        assert!(own.contains("revoked = [\"3c3c\"]"), "{own}");
        assert_eq!(
            peers(&dir, 4),
            vec![
                (1, "127.0.0.1:7301".to_owned()),
                (2, "10.0.0.2:7302".to_owned()),
                (3, "127.0.0.1:7303".to_owned())
            ]
        );
        let identity = ittc_wire::client::TlsIdentity::from_pem_files(
            &dir.join("ca.pem"),
            &dir.join("appliance-4.pem"),
            &dir.join("appliance-4.key"),
        )
        .unwrap();
        assert_eq!(
            identity.identity().role,
            ittc_wire::identity::Role::Appliance(4)
        );
        assert_eq!(
            hex::encode(pem_serial(&dir.join("appliance-4.pem")).unwrap()),
            added.serial
        );
        assert_eq!(read(dir.join("appliance-4.sealing")).len(), 64);
        assert!(!dir.join("appliance-4.adding").exists());
        assert!(!dir.join("appliance-4-data").exists());
        let leftovers: Vec<String> = folder_names(&dir)
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".new") || n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Again: the next one, 5, with a host of its own (the default port).
        let added = run(&dir, None, Some("10.0.0.5")).unwrap();
        assert_eq!((added.index, added.address.as_str()), (5, "10.0.0.5:7305"));
        assert_eq!(peers(&dir, 4).last().unwrap().0, 5);
        assert_eq!(peers(&dir, 5).len(), 4);
    }

    #[test]
    fn used_indices_and_addresses_are_refused_and_files_are_never_overwritten() {
        let (_tmp, dir) = cluster();
        let before = read(dir.join(FILE_NAME));
        for (index, says) in [(2, "appliance 2 is in"), (0, "1..=16"), (17, "1..=16")] {
            match run(&dir, Some(index), None) {
                Err(CliError::Usage(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("--index {index}: {other:?}"),
            }
        }
        match run(&dir, Some(5), Some("10.0.0.2:7302")) {
            Err(CliError::Usage(m)) => assert!(m.contains("appliance 2 is at"), "{m}"),
            other => panic!("{other:?}"),
        }
        // An earlier appliance 4's files and appliance 5's data folder: skipped by
        // default, refused when asked for.
        std::fs::write(dir.join("appliance-4.pem.old"), "old").unwrap();
        std::fs::create_dir(dir.join("appliance-5-data")).unwrap();
        match run(&dir, Some(4), None) {
            Err(CliError::Usage(m)) => assert!(m.contains("appliance-4.* files"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(read(dir.join(FILE_NAME)), before);
        assert!(!dir.join("appliance-4.adding").exists());
        assert_eq!(run(&dir, None, None).unwrap().index, 6);
        assert_eq!(read(dir.join("appliance-4.pem.old")), "old");
        // An explicit free index, past a gap.
        assert_eq!(run(&dir, Some(9), None).unwrap().index, 9);
        let config = ClusterConfig::load(&dir.join(FILE_NAME)).unwrap();
        let indices: Vec<u8> = config.appliances.iter().map(|a| a.index).collect();
        assert_eq!(indices, vec![1, 2, 3, 6, 9]);
    }

    #[test]
    fn without_ca_key_nothing_is_written() {
        let (_tmp, dir) = cluster();
        std::fs::rename(dir.join("ca.key"), dir.join("offline.key")).unwrap();
        match run(&dir, None, None) {
            Err(CliError::Usage(m)) => assert!(m.contains("ca.key is missing"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(
            !folder_names(&dir)
                .unwrap()
                .iter()
                .any(|n| n.starts_with("appliance-4"))
        );
    }

    #[test]
    fn an_interrupted_addition_is_finished_without_a_second_certificate() {
        let (_tmp, dir) = cluster();
        // Cut off before pkcs11.toml is written: its temporary name is taken.
        let blocker = dir.join(format!("{FILE_NAME}.tmp"));
        std::fs::create_dir(&blocker).unwrap();
        assert!(run(&dir, None, Some("10.0.0.4:9004")).is_err());
        assert!(dir.join("appliance-4.adding").is_file());
        let cert = read(dir.join("appliance-4.pem"));
        let sealing = read(dir.join("appliance-4.sealing"));
        assert!(
            ClusterConfig::load(&dir.join(FILE_NAME))
                .unwrap()
                .appliance(4)
                .is_none()
        );
        assert_eq!(peers(&dir, 1).last().unwrap().0, 4);
        let record = read(dir.join("appliance-4.adding"));

        // Another index or host is not started meanwhile.
        std::fs::remove_dir(&blocker).unwrap();
        for (index, host) in [(Some(5), None), (None, Some("10.0.0.9"))] {
            assert!(
                matches!(run(&dir, index, host), Err(CliError::Usage(m)) if m.contains("appliance 4")),
                "{index:?} {host:?}"
            );
        }
        // The same command finishes it with the same files; peers are not added twice.
        let added = run(&dir, None, Some("10.0.0.4:9004")).unwrap();
        assert!(added.resumed && !added.was_complete, "{added:?}");
        assert_eq!((added.index, added.address.as_str()), (4, "10.0.0.4:9004"));
        assert!(added.configs_updated.is_empty(), "{added:?}");
        assert_eq!(read(dir.join("appliance-4.pem")), cert);
        assert_eq!(read(dir.join("appliance-4.sealing")), sealing);
        let config = ClusterConfig::load(&dir.join(FILE_NAME)).unwrap();
        assert_eq!(config.appliance(4).unwrap().address, "10.0.0.4:9004");
        for j in 1..=3 {
            assert_eq!(peers(&dir, j).len(), 3, "appliance {j}");
        }
        assert!(!dir.join("appliance-4.adding").exists());

        // Cut off after everything but removing the record: nothing is left to do.
        std::fs::write(dir.join("appliance-4.adding"), &record).unwrap();
        let added = run(&dir, None, None).unwrap();
        assert!(added.resumed && added.was_complete, "{added:?}");
        assert_eq!(read(dir.join("appliance-4.pem")), cert);
        assert_eq!(
            ClusterConfig::load(&dir.join(FILE_NAME))
                .unwrap()
                .appliances
                .len(),
            4
        );
        assert!(!dir.join("appliance-4.adding").exists());

        // Cut off after the record, before the files were recorded: issued anew, once.
        std::fs::write(
            dir.join("appliance-5.adding"),
            "address = \"127.0.0.1:7305\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("appliance-5.pem.new"), "half written").unwrap();
        let added = run(&dir, None, None).unwrap();
        assert!(added.resumed && !added.was_complete, "{added:?}");
        assert_eq!(added.index, 5);
        assert_eq!(
            hex::encode(pem_serial(&dir.join("appliance-5.pem")).unwrap()),
            added.serial
        );
        assert_eq!(peers(&dir, 4).last().unwrap().0, 5);
    }

    #[test]
    fn a_config_not_in_the_folder_is_named() {
        let (_tmp, dir) = cluster();
        std::fs::rename(dir.join("appliance-2.toml"), dir.join("elsewhere.toml")).unwrap();
        let added = run(&dir, None, None).unwrap();
        assert_eq!(added.configs_updated, vec![1, 3]);
        assert_eq!(added.configs_not_updated.len(), 1);
        assert!(
            added.configs_not_updated[0].contains("appliance-2.toml is not in the folder"),
            "{added:?}"
        );
        assert!(added.configs_not_updated[0].contains("127.0.0.1:7304"));
    }
}
