//! What the benchmark measures against: a local ittc cluster (made with the `ittc` CLI's
//! own functions, appliances as child processes killed on drop) and a SoftHSM2 token.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use ittc_provisioning::cluster::Cluster;
use ittc_provisioning::init::{InitOptions, init};
use ittc_provisioning::process::spawn_appliance;
use ittc_threshold::RsaPrivateKey;
use ittc_wire::UserKind;
use rsa::pkcs8::EncodePrivateKey as _;

/// The PIN both tokens get.
pub const PIN: &str = "123456";
/// The key id both tokens use.
pub const KEY_ID: &str = "be";
/// Debian's SoftHSM2 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Running appliances of a local cluster, killed on drop.
pub struct Appliances {
    /// The cluster folder (pkcs11.toml inside).
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Appliances {
    /// The module's configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join(ittc_wire::cluster::FILE_NAME)
    }

    /// The cluster as the CLI opens it.
    pub fn cluster(&self) -> Result<Cluster, String> {
        Cluster::open(self.dir.path()).map_err(|e| e.to_string())
    }
}

impl Drop for Appliances {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A local cluster with one imported key.
pub struct IttcCluster {
    /// The appliances.
    pub appliances: Appliances,
    /// The key that was imported (kept by the benchmark for the floor's combine).
    pub key: RsaPrivateKey,
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// `ittc init` for a k-of-n cluster on free loopback ports (`appliance_extra` appended to
/// each appliance config), its appliances (the binary `program`) started, and the user PIN
/// set.
pub fn start_cluster(
    k: u8,
    n: u8,
    program: &Path,
    appliance_extra: &str,
) -> Result<Appliances, String> {
    start_cluster_of(k, &vec![program; usize::from(n)], appliance_extra)
}

/// [`start_cluster`] with appliance i running `programs[i − 1]` (n = their number).
pub fn start_cluster_of(
    k: u8,
    programs: &[&Path],
    appliance_extra: &str,
) -> Result<Appliances, String> {
    let n = u8::try_from(programs.len()).map_err(|_| "too many appliances")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cluster_dir = dir.path().to_owned();
    let mut hosts = Vec::new();
    for index in 1..=n {
        hosts.push((index, format!("127.0.0.1:{}", free_port()?)));
    }
    init(&InitOptions {
        appliances: n,
        threshold: k,
        out: cluster_dir.clone(),
        hosts,
    })
    .map_err(|e| e.to_string())?;
    let mut appliances = Appliances {
        dir,
        children: Vec::new(),
    };
    for (index, program) in (1..=n).zip(programs) {
        let config = cluster_dir.join(format!("appliance-{index}.toml"));
        let mut text = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
        text.push_str(appliance_extra);
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let log = cluster_dir.join(format!("appliance-{index}.log"));
        let (child, _) = spawn_appliance(program, &config, &log, false, Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        appliances.children.push(child);
    }
    ittc_provisioning::pin::set(&appliances.cluster()?, UserKind::User, PIN.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(appliances)
}

/// A fresh RSA key of `bits`, as a dealer imports it.
pub fn dealer_key(bits: usize) -> Result<RsaPrivateKey, String> {
    let generated = rsa::PrivateKey::new(&mut rand::rng(), bits).map_err(|e| e.to_string())?;
    let der = generated.to_pkcs8_der().map_err(|e| e.to_string())?;
    RsaPrivateKey::from_der(der.as_bytes(), None).map_err(|e| e.to_string())
}

/// Generates an RSA key of `bits` (a dealer's key), starts a k-of-n cluster of the
/// appliance beside the benchmark on loopback and imports the key.
pub fn ittc_cluster(bits: usize, k: u8, n: u8, bin_dir: &Path) -> Result<IttcCluster, String> {
    ittc_cluster_with(dealer_key(bits)?, k, n, &bin_dir.join("ittc-appliance"))
}

/// Starts a k-of-n cluster of the appliance binary `program` on loopback and imports `key`.
pub fn ittc_cluster_with(
    key: RsaPrivateKey,
    k: u8,
    n: u8,
    program: &Path,
) -> Result<IttcCluster, String> {
    ittc_cluster_of(key, k, &vec![program; usize::from(n)])
}

/// [`ittc_cluster_with`] with appliance i running `programs[i − 1]`.
pub fn ittc_cluster_of(
    key: RsaPrivateKey,
    k: u8,
    programs: &[&Path],
) -> Result<IttcCluster, String> {
    let appliances = start_cluster_of(k, programs, "")?;
    let id = hex::decode(KEY_ID).map_err(|e| e.to_string())?;
    ittc_provisioning::import::import(&appliances.cluster()?, &key, &id, "bench", None, &|_| {})
        .map_err(|e| e.to_string())?;
    Ok(IttcCluster { appliances, key })
}

/// Refreshes the cluster's key `times` times (as `ittc key refresh` does, one after the
/// other).
pub fn refresh(cluster: &IttcCluster, times: u32) -> Result<(), String> {
    let id = hex::decode(KEY_ID).map_err(|e| e.to_string())?;
    let cli = cluster.appliances.cluster()?;
    for _ in 0..times {
        let results = ittc_provisioning::refresh::refresh(
            &cli,
            ittc_provisioning::refresh::Which::Key(&id),
            ittc_provisioning::refresh::DEFAULT_TIMEOUT,
            &|_: &ittc_provisioning::refresh::KeyRefresh| {},
        )
        .map_err(|e| e.to_string())?;
        for r in results {
            if r.result.is_err() {
                return Err(r.line());
            }
        }
    }
    Ok(())
}

/// A SoftHSM2 token in a temporary folder.
pub struct SoftHsm {
    /// Its folder.
    pub dir: tempfile::TempDir,
}

impl SoftHsm {
    /// The `SOFTHSM2_CONF` file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }
}

/// Initialises a fresh SoftHSM2 token with the user PIN.
pub fn softhsm() -> Result<SoftHsm, String> {
    if !Path::new(SOFTHSM_MODULE).is_file() {
        return Err(format!(
            "{SOFTHSM_MODULE} is missing: apt-get install softhsm2"
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).map_err(|e| e.to_string())?;
    let hsm = SoftHsm { dir };
    std::fs::write(
        hsm.config(),
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "12345678",
            "--pin",
            PIN,
        ])
        .env("SOFTHSM2_CONF", hsm.config())
        .output()
        .map_err(|e| format!("softhsm2-util: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "softhsm2-util: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(hsm)
}
