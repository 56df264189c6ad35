//! `ittc init`: everything a cluster needs before its appliances start.
//!
//! In the output folder: the cluster CA (`ca.pem`, `ca.key`), for each appliance its
//! certificate and key, its sealing key and its config (`appliance-<i>.*`), a client
//! certificate for PKCS#11 hosts (`client.*`), an admin certificate for this CLI
//! (`admin.*`), and the module's `pkcs11.toml`. Private files are created with mode 0600.
//! An existing cluster is never overwritten.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use ittc_wire::cluster::{
    ApplianceEntry, ClusterConfig, FILE_NAME, TimeoutConfig, TlsFiles, TokenConfig,
};
use ittc_wire::identity::Role;
use rand::RngExt as _;

use crate::error::CliError;
use crate::pki::{CertifiedKey, ClusterCa};

/// What `ittc init` is asked for.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// n.
    pub appliances: u8,
    /// k.
    pub threshold: u8,
    /// The folder to create.
    pub out: PathBuf,
    /// `index → host:port`; the rest default to `127.0.0.1:7300+index`.
    pub hosts: Vec<(u8, String)>,
}

/// The first port of the default addresses (`127.0.0.1:7301` for appliance 1).
pub const BASE_PORT: u16 = 7300;

/// Writes a new cluster folder.
pub fn init(options: &InitOptions) -> Result<ClusterConfig, CliError> {
    let n = options.appliances;
    if !(2..=16).contains(&n) || options.threshold < 2 || options.threshold > n {
        return Err(CliError::Usage(format!(
            "--threshold {} of --appliances {n}: need 2 <= threshold <= appliances <= 16",
            options.threshold
        )));
    }
    if n < 3 {
        eprintln!("note: with fewer than 3 appliances, dealerless key generation is not possible");
    }
    for (index, _) in &options.hosts {
        if *index == 0 || *index > n {
            return Err(CliError::Usage(format!(
                "--host {index}=…: no appliance {index} in 1..={n}"
            )));
        }
    }
    let dir = &options.out;
    if dir.join(FILE_NAME).exists() || dir.join("ca.key").exists() {
        return Err(CliError::Usage(format!(
            "{} already holds a cluster: refusing to overwrite it",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| CliError::file(dir, e))?;

    let cluster_id: [u8; 16] = rand::rng().random();
    let ca = ClusterCa::generate(&format!("ittc cluster {}", hex::encode(&cluster_id[..4])))?;
    write_public(&dir.join("ca.pem"), ca.cert_pem())?;
    write_private(&dir.join("ca.key"), &ca.key_pem())?;
    save(dir, "client", &ca.issue(Role::Client, "ittc client")?)?;
    save(dir, "admin", &ca.issue(Role::Admin, "ittc admin")?)?;

    let address = |index: u8| {
        options
            .hosts
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| format!("127.0.0.1:{}", BASE_PORT + u16::from(index)))
    };
    let appliances: Vec<ApplianceEntry> = (1..=n)
        .map(|index| ApplianceEntry {
            index,
            address: address(index),
        })
        .collect();
    for entry in &appliances {
        let files =
            ApplianceFiles::issue(&ca, entry.index, &hex::encode(cluster_id), &appliances, &[])?;
        files.write(|ext, contents, private| {
            write_file(
                &dir.join(format!("appliance-{}.{ext}", entry.index)),
                contents,
                private,
            )
        })?;
    }

    let config = ClusterConfig {
        cluster_id: hex::encode(cluster_id),
        threshold: options.threshold,
        revoked: Vec::new(),
        tls: TlsFiles {
            ca: "ca.pem".into(),
            cert: "client.pem".into(),
            key: "client.key".into(),
        },
        appliances,
        timeouts: TimeoutConfig::default(),
        token: TokenConfig::default(),
    };
    let text = config
        .to_toml()
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    write_public(
        &dir.join(FILE_NAME),
        &format!("# ittc PKCS#11 module and CLI configuration: see docs/config.md\n{text}"),
    )?;
    Ok(config)
}

/// The extensions of an appliance's own files in the cluster folder: certificate, key,
/// sealing key, configuration (`appliance-<i>.pem`, …).
pub(crate) const APPLIANCE_FILES: [&str; 4] = ["pem", "key", "sealing", "toml"];

/// What a new appliance's files hold: a certificate and key for its role, a new sealing
/// key, and its configuration ([`appliance_config`]), with a new data folder.
pub(crate) struct ApplianceFiles {
    certified: CertifiedKey,
    sealing: zeroize::Zeroizing<String>,
    config: String,
}

impl ApplianceFiles {
    /// Issues appliance `index`'s certificate with `ca` and writes its configuration in a
    /// cluster of `appliances` (see [`appliance_config`]).
    pub(crate) fn issue(
        ca: &ClusterCa,
        index: u8,
        cluster_id: &str,
        appliances: &[ApplianceEntry],
        revoked: &[String],
    ) -> Result<Self, CliError> {
        let name = format!("appliance-{index}");
        Ok(Self {
            certified: ca.issue(Role::Appliance(index), &name)?,
            sealing: new_sealing_key(),
            config: appliance_config(index, cluster_id, appliances, revoked),
        })
    }

    /// Hands each file to `put` as (extension of [`APPLIANCE_FILES`], contents, whether
    /// it is private).
    pub(crate) fn write(
        &self,
        mut put: impl FnMut(&str, &str, bool) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        put("pem", &self.certified.cert_pem, false)?;
        put("key", &self.certified.key_pem, true)?;
        put("sealing", &self.sealing, true)?;
        put("toml", &self.config, false)
    }
}

/// A new sealing key, as the hex text of its file.
fn new_sealing_key() -> zeroize::Zeroizing<String> {
    let mut sealing: [u8; 32] = rand::rng().random();
    let text = zeroize::Zeroizing::new(hex::encode(sealing));
    zeroize::Zeroize::zeroize(&mut sealing);
    text
}

/// The configuration of appliance `index` (`cluster_id` in hex) in a cluster of
/// `appliances`: it listens on its own entry's port, keeps its store in
/// `appliance-<index>-data` beside the file, reaches every other appliance at its entry's
/// address, and refuses the certificates with the `revoked` serials (hex) from the start.
fn appliance_config(
    index: u8,
    cluster_id: &str,
    appliances: &[ApplianceEntry],
    revoked: &[String],
) -> String {
    let name = format!("appliance-{index}");
    let own = appliances
        .iter()
        .find(|a| a.index == index)
        .map_or_else(String::new, |a| listen_address(&a.address));
    let peers: String = appliances
        .iter()
        .filter(|p| p.index != index)
        .map(|p| {
            format!(
                "\n[[peers]]\nindex = {}\naddress = \"{}\"\n",
                p.index, p.address
            )
        })
        .collect();
    let revoked = if revoked.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = revoked.iter().map(|s| format!("\"{s}\"")).collect();
        format!(
            "# certificates refused from the start (replaced appliances' old ones)\nrevoked = [{}]\n",
            list.join(", ")
        )
    };
    format!(
        "# ittc appliance {index} of cluster {cluster_id}: see docs/appliance.md\n\
         listen = \"{own}\"\nindex = {index}\ncluster_id = \"{cluster_id}\"\ndata_dir = \"{name}-data\"\n{revoked}\n\
         [tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n\n\
         [sealing]\nkey_file = \"{name}.sealing\"\n{peers}"
    )
}

/// An appliance listens on its own address's port, on every interface unless the address
/// is a loopback one (the single-machine and test case).
pub(crate) fn listen_address(address: &str) -> String {
    let port = address.rsplit(':').next().unwrap_or("7301");
    let host = address.rsplit_once(':').map_or("", |(h, _)| h);
    if host.starts_with("127.") || host == "localhost" || host == "[::1]" {
        address.replace("localhost", "127.0.0.1")
    } else {
        format!("0.0.0.0:{port}")
    }
}

fn save(dir: &Path, name: &str, certified: &CertifiedKey) -> Result<(), CliError> {
    write_public(&dir.join(format!("{name}.pem")), &certified.cert_pem)?;
    write_private(&dir.join(format!("{name}.key")), &certified.key_pem)
}

/// Creates a file anyone can read. Refuses to replace an existing file.
pub(crate) fn write_public(path: &Path, contents: &str) -> Result<(), CliError> {
    write_mode(path, contents, 0o644)
}

/// Creates a file only its owner can read. Refuses to replace an existing file.
pub fn write_private(path: &Path, contents: &str) -> Result<(), CliError> {
    write_mode(path, contents, 0o600)
}

/// [`write_private`] if `private`, else [`write_public`].
pub(crate) fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CliError> {
    write_mode(path, contents, if private { 0o600 } else { 0o644 })
}

fn write_mode(path: &Path, contents: &str, mode: u32) -> Result<(), CliError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CliError::file(path, e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| CliError::file(path, e))?;
    file.sync_all().map_err(|e| CliError::file(path, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn writes_a_loadable_cluster_with_private_files_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("c");
        let options = InitOptions {
            appliances: 3,
            threshold: 2,
            out: out.clone(),
            hosts: vec![(2, "10.1.2.3:9000".into())],
        };
        let config = init(&options).unwrap();
        let loaded = ClusterConfig::load(&out.join(FILE_NAME)).unwrap();
        assert_eq!(loaded.threshold, 2);
        assert_eq!(loaded.appliances, config.appliances);
        assert_eq!(loaded.appliance(2).unwrap().address, "10.1.2.3:9000");
        assert_eq!(loaded.appliance(3).unwrap().address, "127.0.0.1:7303");
        loaded.identity().unwrap();
        let appliance2 = std::fs::read_to_string(out.join("appliance-2.toml")).unwrap();
        assert!(
            appliance2.contains("listen = \"0.0.0.0:9000\""),
            "{appliance2}"
        );
        for private in [
            "ca.key",
            "client.key",
            "admin.key",
            "appliance-1.key",
            "appliance-3.sealing",
        ] {
            let mode = std::fs::metadata(out.join(private))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{private}");
        }
        assert!(matches!(init(&options), Err(CliError::Usage(m)) if m.contains("overwrite")));
        let bad = InitOptions {
            threshold: 4,
            out: dir.path().join("d"),
            ..options
        };
        assert!(matches!(init(&bad), Err(CliError::Usage(_))));
    }
}
