//! The cluster folder's files as the commands that change a cluster write them
//! (`ittc appliance replace`, `ittc appliance add`).
//!
//! Every file is written under a temporary name and renamed, so that an interrupted
//! command leaves each file whole, as it was or as it is meant to be; a record of the work
//! under way (`appliance-<i>.replacing`, `appliance-<i>.adding`) lets the next run finish
//! it. `pkcs11.toml` is rewritten whole but keeps its header comments and its previous
//! version as `pkcs11.toml.old`; the appliances' configurations are edited a line at a
//! time, so that an operator's comments and settings stay as they are.

use std::path::{Path, PathBuf};

use ittc_wire::cluster::{ClusterConfig, FILE_NAME};
use ittc_wire::revocation;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CliError;
use crate::init::write_file;
use crate::pki::ClusterCa;

/// The folder's `pkcs11.toml` as read: its text (for the header comments) and contents.
pub(crate) struct ClusterFile {
    path: PathBuf,
    text: String,
    /// What it says; [`ClusterFile::write`] writes this back.
    pub config: ClusterConfig,
}

impl ClusterFile {
    /// Reads `DIR/pkcs11.toml` as written (relative paths stay relative).
    pub(crate) fn read(dir: &Path) -> Result<Self, CliError> {
        let path = dir.join(FILE_NAME);
        let text = read(&path)?;
        let config = toml::from_str(&text)
            .map_err(|e| CliError::Cluster(format!("{}: {}", path.display(), e.message())))?;
        Ok(Self { path, text, config })
    }

    /// Writes [`ClusterFile::config`] back with the file's header comments, keeping the
    /// previous file as `pkcs11.toml.old`.
    pub(crate) fn write(&self) -> Result<(), CliError> {
        let header: String = self
            .text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let text = self
            .config
            .to_toml()
            .map_err(|e| CliError::Cluster(e.to_string()))?;
        replace_file(&self.path, &format!("{header}{text}"), true)
    }
}

/// The cluster CA from `ca.pem` and `ca.key`; a missing `ca.key` is a usage error that
/// says where it belongs.
pub(crate) fn cluster_ca(dir: &Path) -> Result<ClusterCa, CliError> {
    let path = dir.join("ca.key");
    let key = match std::fs::read_to_string(&path) {
        Ok(key) => zeroize::Zeroizing::new(key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::Usage(format!(
                "{} is missing: bring the cluster CA's key back from offline storage for this command",
                path.display()
            )));
        }
        Err(e) => return Err(CliError::file(path, e)),
    };
    Ok(ClusterCa::from_pem(&read(&dir.join("ca.pem"))?, &key)?)
}

/// A file's text.
pub(crate) fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))
}

/// The serial of the certificate in a PEM file, normalized.
pub(crate) fn pem_serial(path: &Path) -> Result<Vec<u8>, CliError> {
    let der = crate::cert::read_certificate(path)?;
    revocation::certificate_serial(&der)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// An appliance's address for `--host HOST[:PORT]`: `host` as given if it has a port,
/// else `host` with the port of `current`.
pub(crate) fn host_address(current: &str, host: &str) -> Result<String, CliError> {
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
        let port = current.rsplit_once(':').map(|(_, p)| p).ok_or_else(bad)?;
        format!("{host}:{port}")
    };
    let port = address.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
    if port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(address)
}

fn with_ext(dir: &Path, name: &str, ext: &str) -> PathBuf {
    dir.join(format!("{name}.{ext}"))
}

/// Writes `NAME.EXT.new` (replacing a leftover one), to be moved in by [`swap_in`].
pub(crate) fn write_new(
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
    write_file(&path, contents, private)
}

/// Moves `NAME.EXT` to `NAME.EXT.old` and `NAME.EXT.new` to `NAME.EXT`, if there is a
/// `.new` one; nothing otherwise (done already). Whether it moved anything.
pub(crate) fn swap_in(dir: &Path, name: &str, ext: &str) -> Result<bool, CliError> {
    let new = with_ext(dir, name, &format!("{ext}.new"));
    if !new.exists() {
        return Ok(false);
    }
    let current = with_ext(dir, name, ext);
    if current.exists() {
        let old = with_ext(dir, name, &format!("{ext}.old"));
        std::fs::rename(&current, &old).map_err(|e| CliError::file(&current, e))?;
    }
    std::fs::rename(&new, &current).map_err(|e| CliError::file(&new, e))?;
    Ok(true)
}

/// Replaces a file through a temporary one and a rename, keeping the previous contents as
/// `*.old` if `keep_old`.
pub(crate) fn replace_file(path: &Path, contents: &str, keep_old: bool) -> Result<(), CliError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, contents, false)?;
    if keep_old {
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        std::fs::copy(path, PathBuf::from(old)).map_err(|e| CliError::file(path, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| CliError::file(path, e))
}

/// The record of work under way at `path`, if there is one.
pub(crate) fn read_record<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map(Some).map_err(|e| {
            CliError::Usage(format!(
                "{}: {} (remove it to start over)",
                path.display(),
                e.message()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::file(path, e)),
    }
}

/// Writes the record of work under way, after a comment line that says what it is.
pub(crate) fn write_record<T: Serialize>(
    path: &Path,
    comment: &str,
    record: &T,
) -> Result<(), CliError> {
    let text = toml::to_string(record).map_err(|e| CliError::Usage(e.to_string()))?;
    replace_file(path, &format!("# {comment}\n{text}"), false)
}

/// Removes the record of work that is over.
pub(crate) fn remove_record(path: &Path) -> Result<(), CliError> {
    std::fs::remove_file(path).map_err(|e| CliError::file(path, e))
}

/// What editing the other appliances' configurations came to.
#[derive(Debug, Default)]
pub(crate) struct ConfigEdits {
    /// The appliances whose configuration was changed.
    pub updated: Vec<u8>,
    /// One line for each configuration that is not in the folder or could not be edited.
    pub not_updated: Vec<String>,
}

/// Edits `appliance-<i>.toml` for each of `indices`: `edit` returns the new text (the same
/// text when there is nothing to do) or the line to tell the operator why it cannot; a
/// configuration that is not in the folder gets the line `missing` makes of its path.
pub(crate) fn edit_appliance_configs(
    dir: &Path,
    indices: impl IntoIterator<Item = u8>,
    missing: impl Fn(&Path) -> String,
    edit: impl Fn(&Path, &str) -> Result<String, String>,
) -> Result<ConfigEdits, CliError> {
    let mut edits = ConfigEdits::default();
    for index in indices {
        let path = dir.join(format!("appliance-{index}.toml"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            edits.not_updated.push(missing(&path));
            continue;
        };
        match edit(&path, &text) {
            Ok(updated) if updated != text => {
                replace_file(&path, &updated, false)?;
                edits.updated.push(index);
            }
            Ok(_) => {}
            Err(line) => edits.not_updated.push(line),
        }
    }
    Ok(edits)
}

/// `text` (an appliance configuration) with the `address` of its `[[peers]]` entry for
/// `index` set to `address`; `None` if it has no such entry. Only that line changes:
/// comments and the rest stay as they are.
pub(crate) fn set_peer_address(text: &str, index: u8, address: &str) -> Option<String> {
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

/// `text` (an appliance configuration) with a `[[peers]]` entry for appliance `index` at
/// `address`: its entry for `index` set to that address if it has one, else a new entry
/// after its last `[[peers]]` entry (at the end if it has none); nothing else changes.
/// `None` if the result would not read back with that entry (peers written some other
/// way than as `[[peers]]` tables).
pub(crate) fn add_peer(text: &str, index: u8, address: &str) -> Option<String> {
    let updated = set_peer_address(text, index, address).unwrap_or_else(|| {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let entry = format!("\n[[peers]]\nindex = {index}\naddress = \"{address}\"\n");
        // Before the table that follows the last entry, and before the blank lines and
        // comments just above that table (they belong to it).
        let at = lines
            .iter()
            .rposition(|l| l.trim() == "[[peers]]")
            .and_then(|last| {
                let next = last + 1 + lines[last + 1..].iter().position(|l| is_header(l))?;
                let above = lines[last + 1..next]
                    .iter()
                    .rev()
                    .take_while(|l| l.trim().is_empty() || l.trim().starts_with('#'))
                    .count();
                Some(next - above)
            });
        match at {
            Some(at) => format!("{}{entry}{}", lines[..at].concat(), lines[at..].concat()),
            None if text.is_empty() || text.ends_with('\n') => format!("{text}{entry}"),
            None => format!("{text}\n{entry}"),
        }
    });
    let table: toml::Table = toml::from_str(&updated).ok()?;
    let listed = table.get("peers")?.as_array()?.iter().any(|p| {
        p.get("index").and_then(toml::Value::as_integer) == Some(i64::from(index))
            && p.get("address").and_then(toml::Value::as_str) == Some(address)
    });
    listed.then_some(updated)
}

/// Whether the line opens a table (`[name]` or `[[name]]`).
fn is_header(line: &str) -> bool {
    line.trim_start().starts_with('[')
}

/// `text` with its top-level `listen` set to `listen`; `None` if it has none.
pub(crate) fn set_listen(text: &str, listen: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    let mut top_level = true;
    for line in text.split_inclusive('\n') {
        top_level &= !is_header(line);
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
    fn a_new_peer_goes_after_the_last_and_nothing_else_changes() {
        let updated = add_peer(CONFIG, 4, "10.0.0.14:7404").unwrap();
        assert_eq!(
            updated,
            CONFIG.replace(
                "address = \"127.0.0.1:7403\"\n",
                "address = \"127.0.0.1:7403\"\n\n[[peers]]\nindex = 4\naddress = \"10.0.0.14:7404\"\n"
            )
        );
        let table: toml::Table = toml::from_str(&updated).unwrap();
        let indices: Vec<i64> = table["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["index"].as_integer().unwrap())
            .collect();
        assert_eq!(indices, vec![2, 3, 4]);
        assert_eq!(table["limits"]["max_frame"].as_integer(), Some(4096));
        // Again: nothing to do; with another address: that address.
        assert_eq!(add_peer(&updated, 4, "10.0.0.14:7404").unwrap(), updated);
        let moved = add_peer(&updated, 4, "10.0.0.15:7404").unwrap();
        assert_eq!(moved, updated.replace("10.0.0.14", "10.0.0.15"));

        // The comments above the next table stay with it.
        let commented = CONFIG.replace("\n[limits]", "\n# limits\n[limits]");
        let updated = add_peer(&commented, 4, "h:1").unwrap();
        assert!(
            updated.ends_with("address = \"h:1\"\n\n# limits\n[limits]\nmax_frame = 4096\n"),
            "{updated}"
        );
        // The last table, or no peers yet: at the end.
        let last = "index = 1\n\n[[peers]]\nindex = 2\naddress = \"a:2\"";
        assert_eq!(
            add_peer(last, 3, "a:3").unwrap(),
            format!("{last}\n\n[[peers]]\nindex = 3\naddress = \"a:3\"\n")
        );
        assert_eq!(
            add_peer("index = 1\n", 2, "a:2").unwrap(),
            "index = 1\n\n[[peers]]\nindex = 2\naddress = \"a:2\"\n"
        );
        // Peers written as an inline array are not edited.
        assert_eq!(
            add_peer("peers = [{index = 2, address = \"a:2\"}]\n", 3, "a:3"),
            None
        );
    }

    #[test]
    fn the_listen_address_changes() {
        let updated = set_listen(CONFIG, "0.0.0.0:9000").unwrap();
        assert!(updated.contains("listen = \"0.0.0.0:9000\"\n"));
        assert_eq!(updated.lines().count(), CONFIG.lines().count());
        assert_eq!(set_listen("index = 1\n", "x"), None);
    }

    #[test]
    fn hosts_keep_the_current_port_unless_given_one() {
        assert_eq!(
            host_address("10.0.0.3:7403", "10.0.0.9").unwrap(),
            "10.0.0.9:7403"
        );
        assert_eq!(
            host_address("10.0.0.3:7403", "h.example:80").unwrap(),
            "h.example:80"
        );
        assert_eq!(host_address("[::1]:7403", "[::2]").unwrap(), "[::2]:7403");
        assert_eq!(host_address("x:1", "[::2]:9").unwrap(), "[::2]:9");
        for bad in ["", "a b", "h:port", "h:70000", "a\"b"] {
            assert!(host_address("x:1", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_round_trip() {
        #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
        struct Record {
            serial: String,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("appliance-3.replacing");
        assert_eq!(read_record::<Record>(&path).unwrap(), None);
        let record = Record {
            serial: "3c3c".into(),
        };
        write_record(&path, "work under way", &record).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# work under way\n"), "{text}");
        assert_eq!(read_record::<Record>(&path).unwrap(), Some(record));
        std::fs::write(&path, "serial = 3").unwrap();
        assert!(matches!(
            read_record::<Record>(&path),
            Err(CliError::Usage(m)) if m.contains("start over")
        ));
        remove_record(&path).unwrap();
        assert!(!path.exists());
    }
}
