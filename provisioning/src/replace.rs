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

use std::path::{Path, PathBuf};

use ittc_wire::cluster::{ClusterConfig, FILE_NAME};
use ittc_wire::identity::Role;
use ittc_wire::{Request, revocation};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, expect_ok};
use crate::error::CliError;
use crate::init::{appliance_config, listen_address, new_sealing_key, write_private, write_public};
use crate::pki::ClusterCa;

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

/// The files of an appliance a replacement renews, by extension.
const FILES: [&str; 4] = ["pem", "key", "sealing", "toml"];

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
    let cluster_path = dir.join(FILE_NAME);
    let cluster_text = read(&cluster_path)?;
    let mut config: ClusterConfig = toml::from_str(&cluster_text)
        .map_err(|e| CliError::Cluster(format!("{}: {}", cluster_path.display(), e.message())))?;
    let Some(entry) = config.appliance(index) else {
        return Err(CliError::Usage(format!(
            "no appliance {index} in {}",
            cluster_path.display()
        )));
    };
    let old_address = entry.address.clone();
    let address = match &options.host {
        Some(host) => new_address(&old_address, host)?,
        None => old_address.clone(),
    };

    let record_path = dir.join(format!("{name}.replacing"));
    let mut record = match std::fs::read_to_string(&record_path) {
        Ok(text) => toml::from_str::<Record>(&text).map_err(|e| {
            CliError::Usage(format!(
                "{}: {} (remove it to start over)",
                record_path.display(),
                e.message()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let old_serial = hex::encode(pem_serial(&dir.join(format!("{name}.pem")))?);
            let record = Record {
                old_serial,
                new_serial: None,
            };
            write_record(&record_path, &record)?;
            record
        }
        Err(e) => return Err(CliError::file(&record_path, e)),
    };
    let resumed = record.new_serial.is_some();

    // The new files, written as *.new, then recorded, then swapped in (old ones to *.old).
    if record.new_serial.is_none() {
        step(&format!(
            "issuing a new certificate and sealing key for {name}"
        ));
        let ca = ClusterCa::from_pem(&read(&dir.join("ca.pem"))?, &read_ca_key(dir)?)?;
        let issued = ca.issue(Role::Appliance(index), &name)?;
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
        let fresh = appliance_config(index, &config.cluster_id, &appliances, &revoked);
        write_new(dir, &name, "pem", &issued.cert_pem, false)?;
        write_new(dir, &name, "key", &issued.key_pem, true)?;
        write_new(dir, &name, "sealing", &new_sealing_key(), true)?;
        write_new(dir, &name, "toml", &fresh, false)?;
        record.new_serial = Some(hex::encode(pem_serial(
            &dir.join(format!("{name}.pem.new")),
        )?));
        write_record(&record_path, &record)?;
    }
    for ext in FILES {
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
        write_cluster_config(&cluster_path, &config)?;
    }
    let own_config = dir.join(format!("{name}.toml"));
    let own = read(&own_config)?;
    if let Some(updated) = set_listen(&own, &listen_address(&address))
        && updated != own
    {
        replace_file(&own_config, &updated, false)?;
    }
    let mut configs_updated = Vec::new();
    let mut configs_not_updated = Vec::new();
    for other in config.appliances.iter().filter(|a| a.index != index) {
        let path = dir.join(format!("appliance-{}.toml", other.index));
        let Ok(text) = std::fs::read_to_string(&path) else {
            configs_not_updated.push(format!(
                "{} is not in the folder: set appliance {index}'s [[peers]] address there to {address}",
                path.display()
            ));
            continue;
        };
        match set_peer_address(&text, index, &address) {
            Some(updated) if updated != text => {
                replace_file(&path, &updated, false)?;
                configs_updated.push(other.index);
            }
            Some(_) => {}
            None => configs_not_updated.push(format!(
                "{} has no [[peers]] entry for appliance {index}: add one with address {address}",
                path.display()
            )),
        }
    }

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
        std::fs::remove_file(&record_path).map_err(|e| CliError::file(&record_path, e))?;
    }
    Ok(Replaced {
        index,
        old_serial: old,
        new_serial,
        resumed,
        address,
        address_changed,
        configs_updated,
        configs_not_updated,
        revoked_on,
        not_reached,
        new_appliance,
    })
}

/// The new address: `host` as given if it has a port, else `host` with the old port.
fn new_address(old: &str, host: &str) -> Result<String, CliError> {
    let bad = || CliError::Usage(format!("--host {host:?}: expected HOST or HOST:PORT"));
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '"') {
        return Err(bad());
    }
    let has_port = if host.starts_with('[') {
        host.contains("]:")
    } else {
        host.contains(':')
    };
    let address = if has_port {
        host.to_owned()
    } else {
        let port = old.rsplit_once(':').map(|(_, p)| p).ok_or_else(bad)?;
        format!("{host}:{port}")
    };
    let port = address.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
    if port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(address)
}

/// A hex serial as the deny-lists compare it: lower case, no leading zero bytes.
fn normalized_hex(text: &str) -> String {
    hex::decode(text).map_or_else(
        |_| text.to_ascii_lowercase(),
        |bytes| hex::encode(revocation::normalize_serial(&bytes)),
    )
}

/// The serial of the certificate in a PEM file, normalized.
pub(crate) fn pem_serial(path: &Path) -> Result<Vec<u8>, CliError> {
    let der = crate::cert::read_certificate(path)?;
    revocation::certificate_serial(&der)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))
}

fn read_ca_key(dir: &Path) -> Result<zeroize::Zeroizing<String>, CliError> {
    let path = dir.join("ca.key");
    match std::fs::read_to_string(&path) {
        Ok(key) => Ok(zeroize::Zeroizing::new(key)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CliError::Usage(format!(
            "{} is missing: bring the cluster CA's key back from offline storage for this command",
            path.display()
        ))),
        Err(e) => Err(CliError::file(path, e)),
    }
}

fn with_ext(dir: &Path, name: &str, ext: &str) -> PathBuf {
    dir.join(format!("{name}.{ext}"))
}

/// Writes `NAME.EXT.new` (replacing a leftover one).
fn write_new(
    dir: &Path,
    name: &str,
    ext: &str,
    contents: &str,
    private: bool,
) -> Result<(), CliError> {
    let path = with_ext(dir, name, &format!("{ext}.new"));
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CliError::file(&path, e)),
    }
    if private {
        write_private(&path, contents)
    } else {
        write_public(&path, contents)
    }
}

/// Moves `NAME.EXT` to `NAME.EXT.old` and `NAME.EXT.new` to `NAME.EXT`, if there is a
/// `.new` one; nothing otherwise (done already).
fn swap_in(dir: &Path, name: &str, ext: &str) -> Result<(), CliError> {
    let new = with_ext(dir, name, &format!("{ext}.new"));
    if !new.exists() {
        return Ok(());
    }
    let current = with_ext(dir, name, ext);
    if current.exists() {
        let old = with_ext(dir, name, &format!("{ext}.old"));
        std::fs::rename(&current, &old).map_err(|e| CliError::file(&current, e))?;
    }
    std::fs::rename(&new, &current).map_err(|e| CliError::file(&new, e))
}

/// Writes `config` to `path` (a `pkcs11.toml`), keeping the comment lines at the top of
/// the file it replaces, and the previous contents as `*.old`.
///
/// # Errors
///
/// File errors; [`CliError::Cluster`] if `config` cannot be written as TOML.
pub(crate) fn write_cluster_config(path: &Path, config: &ClusterConfig) -> Result<(), CliError> {
    let header: String = read(path)?
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = config
        .to_toml()
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    replace_file(path, &format!("{header}{text}"), true)
}

/// Replaces a file through a temporary one and a rename, keeping the previous contents as
/// `*.old` if `keep_old`.
fn replace_file(path: &Path, contents: &str, keep_old: bool) -> Result<(), CliError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    write_public(&tmp, contents)?;
    if keep_old {
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        std::fs::copy(path, PathBuf::from(old)).map_err(|e| CliError::file(path, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| CliError::file(path, e))
}

fn write_record(path: &Path, record: &Record) -> Result<(), CliError> {
    let text = toml::to_string(record).map_err(|e| CliError::Usage(e.to_string()))?;
    replace_file(
        path,
        &format!(
            "# a replacement under way: run `ittc appliance replace` again to finish it\n{text}"
        ),
        false,
    )
}

/// `text` (an appliance configuration) with the `address` of its `[[peers]]` entry for
/// `index` set to `address`; `None` if it has no such entry. Only that line changes:
/// comments and the rest stay as they are.
fn set_peer_address(text: &str, index: u8, address: &str) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let mut found = false;
    let mut table_start = None;
    let mut flush = |start: Option<usize>, end: usize, out: &mut Vec<String>| {
        let Some(start) = start else { return };
        let slice = &lines[start..end];
        let is_index = slice
            .iter()
            .any(|l| key_value(l, "index").is_some_and(|v| v == index.to_string()));
        if !is_index {
            return;
        }
        if let Some(at) = slice.iter().position(|l| key_value(l, "address").is_some()) {
            out[start + at] = replace_value(lines[start + at], address);
            found = true;
        }
    };
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            flush(table_start, i, &mut out);
            table_start = (trimmed == "[[peers]]").then_some(i);
        }
    }
    flush(table_start, lines.len(), &mut out);
    found.then(|| out.concat())
}

/// `text` with its top-level `listen` set to `listen`; `None` if it has none.
fn set_listen(text: &str, listen: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    let mut top_level = true;
    for line in text.split_inclusive('\n') {
        top_level &= !line.trim().starts_with('[');
        if top_level && !found && key_value(line, "listen").is_some() {
            out.push_str(&replace_value(line, listen));
            found = true;
        } else {
            out.push_str(line);
        }
    }
    found.then_some(out)
}

/// The value of `key = value` on this line (quotes and a trailing comment removed), if the
/// line sets `key`.
fn key_value(line: &str, key: &str) -> Option<String> {
    let (k, v) = line.split_once('=')?;
    if k.trim() != key {
        return None;
    }
    let v = v.trim();
    let v = match v.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or_default(),
        None => v.split('#').next().unwrap_or_default().trim(),
    };
    Some(v.to_owned())
}

/// `key = "value"` with the line's own indentation and line ending.
fn replace_value(line: &str, value: &str) -> String {
    let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
    let key = line.split_once('=').map_or("", |(k, _)| k.trim());
    let ending = if line.ends_with('\n') { "\n" } else { "" };
    format!("{indent}{key} = \"{value}\"{ending}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "# appliance 1\nlisten = \"127.0.0.1:7401\"\nindex = 1\n\n[tls]\nca = \"ca.pem\"\n\n[[peers]]\nindex = 2\naddress = \"127.0.0.1:7402\"\n\n[[peers]]\n# the third\nindex = 3   # comment\naddress = \"127.0.0.1:7403\"\n\n[limits]\nmax_frame = 4096\n";

    #[test]
    fn a_peer_address_changes_and_nothing_else() {
        let updated = set_peer_address(CONFIG, 3, "10.0.0.9:7403").unwrap();
        assert_eq!(
            updated,
            CONFIG.replace(
                "address = \"127.0.0.1:7403\"",
                "address = \"10.0.0.9:7403\""
            )
        );
        let table: toml::Table = toml::from_str(&updated).unwrap();
        let peers = table["peers"].as_array().unwrap();
        assert_eq!(peers[1]["address"].as_str(), Some("10.0.0.9:7403"));
        assert_eq!(peers[0]["address"].as_str(), Some("127.0.0.1:7402"));
        assert_eq!(
            set_peer_address(CONFIG, 3, "127.0.0.1:7403").unwrap(),
            CONFIG
        );
        assert_eq!(set_peer_address(CONFIG, 4, "x:1"), None);
        // `index = 1` at the top is not a peer entry.
        assert_eq!(set_peer_address(CONFIG, 1, "x:1"), None);
    }

    #[test]
    fn the_listen_address_changes() {
        let updated = set_listen(CONFIG, "0.0.0.0:9000").unwrap();
        assert!(updated.contains("listen = \"0.0.0.0:9000\"\n"));
        assert_eq!(updated.lines().count(), CONFIG.lines().count());
        assert_eq!(set_listen("index = 1\n", "x"), None);
    }

    #[test]
    fn hosts_keep_the_old_port_unless_given_one() {
        assert_eq!(
            new_address("10.0.0.3:7403", "10.0.0.9").unwrap(),
            "10.0.0.9:7403"
        );
        assert_eq!(
            new_address("10.0.0.3:7403", "h.example:80").unwrap(),
            "h.example:80"
        );
        assert_eq!(new_address("[::1]:7403", "[::2]").unwrap(), "[::2]:7403");
        assert_eq!(new_address("x:1", "[::2]:9").unwrap(), "[::2]:9");
        for bad in ["", "a b", "h:port", "h:70000", "a\"b"] {
            assert!(new_address("x:1", bad).is_err(), "{bad}");
        }
    }

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
        write_record(&path, &record).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(toml::from_str::<Record>(&text).unwrap(), record);
        write_record(&path, &record).unwrap();
    }
}
