//! End-to-end test harness: a cluster of real `ittc-appliance` processes on 127.0.0.1.
//!
//! [`Cluster::new`] writes what `ittc init` will write (a cluster CA, a certificate per
//! appliance, a client and an admin certificate, sealing keys, appliance configs) into a
//! temporary folder; [`Cluster::start`] runs an appliance and waits for its
//! `listening on ADDR` line. Every process is killed when the cluster is dropped, and every
//! wait is bounded.
//!
//! The appliance binary is looked up next to the test executable (`target/<profile>/`), so
//! build it first: the README's test command (`cargo test --workspace`) does. An appliance
//! can run another binary instead ([`Cluster::set_binary`]), such as a build variant of
//! `scripts/variants` ([`variant_binaries`]).

// A harness: a failure to set up is a test failure, reported with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cli;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ittc_provisioning::pki::{CertifiedKey, ClusterCa};
use ittc_threshold::{Backend, KeyShare, RsaPrivateKey, RsaPublicKey, SharingParams, split_key};
use ittc_wire::client::{Connection, Timeouts, TlsIdentity};
use ittc_wire::identity::Role;
use ittc_wire::{
    KeyId, ObjectId, Request, Response, SecretBytes, ShareRecord, TokenObject, UserKind,
};
use rand::RngExt;

/// How long an appliance may take to start or stop.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// Options written into every appliance config.
#[derive(Clone, Debug)]
pub struct Options {
    /// `pin.max_failures`.
    pub max_pin_failures: u32,
    /// `limits.max_inflight_partials`.
    pub max_inflight_partials: usize,
    /// `limits.partial_workers`.
    pub partial_workers: usize,
    /// `limits.max_frame`.
    pub max_frame: usize,
    /// `limits.idle_timeout_ms`.
    pub idle_timeout_ms: u64,
    /// `limits.max_connections`.
    pub max_connections: usize,
    /// `log.format`.
    pub log_format: &'static str,
    /// `log.level`.
    pub log_level: &'static str,
    /// `backend`, if set.
    pub backend: Option<String>,
    /// `keygen.min_bits`, if set (1024 lets tests generate small keys).
    pub keygen_min_bits: Option<u16>,
    /// `refresh.interval` (`"0"`: no scheduled refresh, the default of the tests; a
    /// refresh then runs only when a test asks).
    pub refresh_interval: &'static str,
    /// The body of the `[audit]` section (retention and export), if not empty.
    pub audit: String,
    /// Whether each appliance serves metrics (`[metrics]`, on a free loopback port).
    pub metrics: bool,
}

/// The value of `series` (a metric's name with its labels, as the text shows them) in
/// scraped metrics `text`, if it is there.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split(' ').next()?.parse().ok())
}

/// The forms a secret number could take in a log: hex in both cases, its first 40 decimal
/// digits, and the start of its bytes as a Debug list; the bytes themselves if they are
/// text (a PIN).
pub fn logged_forms(secret: &[u8]) -> Vec<String> {
    let mut forms = vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        format!("{:?}", &secret[..secret.len().min(12)])
            .trim_end_matches(']')
            .to_owned(),
    ];
    let decimal = num_bigint::BigUint::from_bytes_be(secret).to_string();
    if decimal.len() >= 40 {
        forms.push(decimal[..40].to_owned());
    }
    if let Ok(text) = std::str::from_utf8(secret) {
        forms.push(text.to_owned());
    }
    forms
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_pin_failures: 3,
            max_inflight_partials: 64,
            partial_workers: 0,
            max_frame: 1 << 20,
            idle_timeout_ms: 30_000,
            max_connections: 256,
            log_format: "human",
            log_level: "info,ittc_appliance=debug",
            backend: None,
            keygen_min_bits: None,
            refresh_interval: "0",
            audit: String::new(),
            metrics: false,
        }
    }
}

/// One appliance of the cluster.
pub struct Appliance {
    /// Its index.
    pub index: u8,
    /// Its config file.
    pub config: PathBuf,
    /// Its data folder.
    pub data_dir: PathBuf,
    child: Option<Child>,
    /// The address it listens on, picked free when the cluster was written.
    listen: SocketAddr,
    log: PathBuf,
    /// The binary it runs, if not [`appliance_binary`].
    binary: Option<PathBuf>,
    /// Where it serves metrics, if [`Options::metrics`].
    metrics: Option<SocketAddr>,
}

/// A cluster of n appliances in a temporary folder.
pub struct Cluster {
    dir: tempfile::TempDir,
    cluster_id: [u8; 16],
    /// The cluster CA.
    pub ca: ClusterCa,
    /// The appliances, index i at position i−1.
    pub appliances: Vec<Appliance>,
}

fn write(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The build variants that `scripts/variants` built, in the order of its matrix:
/// `(number, name, binary)`, only those whose binary exists; empty when it has not run.
/// Those of `scripts/variants --debug` (the test command runs it, from the tree under
/// test), in `variants/` beside the running test's profile folder, come first; else the
/// release builds of `target/variants/`, which are of whatever tree was there when it ran.
pub fn variant_binaries() -> Vec<(u8, String, PathBuf)> {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/variants, then target/variants.
    let profile = exe.parent().and_then(Path::parent);
    let folders = [
        profile.map(|p| p.join("variants")),
        profile.and_then(Path::parent).map(|t| t.join("variants")),
    ];
    folders
        .into_iter()
        .flatten()
        .map(|dir| variants_in(&dir))
        .find(|found| !found.is_empty())
        .unwrap_or_default()
}

/// The variants listed in `dir` whose binary exists.
fn variants_in(dir: &Path) -> Vec<(u8, String, PathBuf)> {
    ittc_provisioning::demo::listed_variants(dir)
        .into_iter()
        .filter(|(_, _, binary)| binary.is_file())
        .collect()
}

/// The `ittc-appliance` binary next to the running test executable.
pub fn appliance_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/ittc-appliance
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("ittc-appliance");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p ittc-appliance, or cargo test --workspace)",
        bin.display()
    );
    bin
}

impl Cluster {
    /// Writes the PKI, sealing keys and configs of an n-appliance cluster.
    pub fn new(n: u8, options: &Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let ca = ClusterCa::generate("ittc test cluster").unwrap();
        write(&root.join("ca.pem"), ca.cert_pem().as_bytes());
        let cluster_id: [u8; 16] = rand::rng().random();
        let save = |name: &str, certified: &CertifiedKey| {
            write(
                &root.join(format!("{name}.pem")),
                certified.cert_pem.as_bytes(),
            );
            write(
                &root.join(format!("{name}.key")),
                certified.key_pem.as_bytes(),
            );
        };
        save("client", &ca.issue(Role::Client, "test client").unwrap());
        save("admin", &ca.issue(Role::Admin, "test admin").unwrap());
        // Free loopback ports, picked now so that every config can name its peers (key
        // generation and refresh reach them there).
        let ports = if options.metrics { 2 * n } else { n };
        let listeners: Vec<std::net::TcpListener> = (0..ports)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addresses: Vec<SocketAddr> =
            listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        drop(listeners);
        let mut appliances = Vec::new();
        for index in 1..=n {
            let name = format!("appliance-{index}");
            save(&name, &ca.issue(Role::Appliance(index), &name).unwrap());
            let sealing: [u8; 32] = rand::rng().random();
            write(
                &root.join(format!("{name}.sealing")),
                hex::encode(sealing).as_bytes(),
            );
            let data_dir = root.join(format!("{name}-data"));
            let backend = options
                .backend
                .as_ref()
                .map(|b| format!("backend = \"{b}\"\n"))
                .unwrap_or_default();
            let keygen = options
                .keygen_min_bits
                .map(|bits| format!("\n[keygen]\nmin_bits = {bits}\n"))
                .unwrap_or_default();
            let audit = if options.audit.is_empty() {
                String::new()
            } else {
                format!("\n[audit]\n{}\n", options.audit)
            };
            let listen = addresses[usize::from(index) - 1];
            let metrics = options
                .metrics
                .then(|| addresses[usize::from(n + index) - 1]);
            let metrics_section = metrics
                .map(|m| format!("\n[metrics]\nlisten = \"{m}\"\n"))
                .unwrap_or_default();
            let peers: String = (1..=n)
                .filter(|i| *i != index)
                .map(|i| {
                    format!(
                        "\n[[peers]]\nindex = {i}\naddress = \"{}\"\n",
                        addresses[usize::from(i) - 1]
                    )
                })
                .collect();
            let config = format!(
                "listen = \"{listen}\"\nindex = {index}\ncluster_id = \"{}\"\ndata_dir = \"{name}-data\"\n{backend}\n\
                 [tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n\n\
                 [sealing]\nkey_file = \"{name}.sealing\"\n\n\
                 [limits]\nmax_frame = {}\nmax_inflight_partials = {}\npartial_workers = {}\nidle_timeout_ms = {}\n\
                 max_connections = {}\nhandshake_timeout_ms = 3000\nread_timeout_ms = 3000\nshutdown_grace_ms = 5000\n\n\
                 [pin]\nmax_failures = {}\nargon2_m_cost_kib = 256\nargon2_t_cost = 1\n\n\
                 [log]\nformat = \"{}\"\nlevel = \"{}\"\n\n\
                 [refresh]\ninterval = \"{}\"\n{keygen}{audit}{metrics_section}{peers}",
                hex::encode(cluster_id),
                options.max_frame,
                options.max_inflight_partials,
                options.partial_workers,
                options.idle_timeout_ms,
                options.max_connections,
                options.max_pin_failures,
                options.log_format,
                options.log_level,
                options.refresh_interval,
            );
            let config_path = root.join(format!("{name}.toml"));
            write(&config_path, config.as_bytes());
            appliances.push(Appliance {
                index,
                config: config_path,
                data_dir,
                child: None,
                listen,
                log: root.join(format!("{name}.log")),
                binary: None,
                metrics,
            });
        }
        Self {
            dir,
            cluster_id,
            ca,
            appliances,
        }
    }

    /// The cluster id written into every appliance config.
    pub fn cluster_id(&self) -> [u8; 16] {
        self.cluster_id
    }

    /// The cluster folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn appliance(&mut self, index: u8) -> &mut Appliance {
        self.appliances.get_mut(usize::from(index) - 1).unwrap()
    }

    /// Makes appliance `index` run `binary` (another build variant, say) from its next
    /// start or restart on, instead of [`appliance_binary`].
    pub fn set_binary(&mut self, index: u8, binary: impl Into<PathBuf>) {
        let binary = binary.into();
        assert!(binary.is_file(), "{} is missing", binary.display());
        self.appliance(index).binary = Some(binary);
    }

    /// [`Cluster::set_binary`], then [`Cluster::start`].
    pub fn start_with_binary(&mut self, index: u8, binary: impl Into<PathBuf>) -> SocketAddr {
        self.set_binary(index, binary);
        self.start(index)
    }

    /// Starts appliance `index` and waits until it listens; returns its address.
    pub fn start(&mut self, index: u8) -> SocketAddr {
        self.spawn(index, &[]).unwrap_or_else(|msg| panic!("{msg}"))
    }

    /// Starts a stopped or killed appliance again, on the address it had (every config
    /// names a fixed one). The listener sets `SO_REUSEADDR` (tokio does on Unix), so
    /// connections of the previous process in TIME_WAIT do not block the bind; a bind
    /// that fails anyway is retried for a few seconds.
    pub fn restart(&mut self, index: u8) -> SocketAddr {
        self.restart_with_env(index, &[])
    }

    /// [`Cluster::restart`] with extra environment variables (the appliance's test hooks).
    pub fn restart_with_env(&mut self, index: u8, env: &[(&str, &str)]) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(index, env) {
                Ok(address) => return address,
                Err(msg) if Instant::now() >= deadline => panic!("{msg}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Runs appliance `index` with `env` and waits for its `listening on` line.
    fn spawn(&mut self, index: u8, env: &[(&str, &str)]) -> Result<SocketAddr, String> {
        let a = self.appliance(index);
        let bin = a.binary.clone().unwrap_or_else(appliance_binary);
        assert!(a.child.is_none(), "appliance {index} is running already");
        let (child, address) = ittc_provisioning::process::spawn_appliance_with_env(
            &bin,
            &a.config,
            &a.log,
            false,
            PROCESS_TIMEOUT,
            env,
        )
        .map_err(|e| format!("appliance {index}: {e}"))?;
        assert_eq!(address, a.listen, "appliance {index} listens elsewhere");
        a.child = Some(child);
        Ok(address)
    }

    /// Sends `request`, a whole HTTP request head, to appliance `index`'s metrics listener
    /// and returns the whole answer: status line, headers and body.
    pub fn metrics_http(&self, index: u8, request: &str) -> String {
        use std::io::{Read as _, Write as _};
        let address = self.appliances[usize::from(index) - 1]
            .metrics
            .expect("the cluster was written without metrics");
        let mut tcp = std::net::TcpStream::connect_timeout(&address, PROCESS_TIMEOUT).unwrap();
        tcp.set_read_timeout(Some(PROCESS_TIMEOUT)).unwrap();
        tcp.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        answer
    }

    /// `GET /metrics` on appliance `index`: the body, once the answer is checked to be a
    /// 200 of OpenMetrics text.
    pub fn scrape(&self, index: u8) -> String {
        let answer = self.metrics_http(index, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(
            head.contains("Content-Type: application/openmetrics-text"),
            "{head}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        body.to_owned()
    }

    /// Starts every appliance.
    pub fn start_all(&mut self) {
        for i in 1..=self.appliances.len() as u8 {
            self.start(i);
        }
    }

    /// The address of appliance `index` (running or not: every config names a fixed one).
    pub fn address(&self, index: u8) -> SocketAddr {
        self.appliances[usize::from(index) - 1].listen
    }

    /// The process id of appliance `index`, if it runs.
    pub fn pid(&self, index: u8) -> Option<u32> {
        self.appliances[usize::from(index) - 1]
            .child
            .as_ref()
            .map(Child::id)
    }

    /// Whether appliance `index` runs.
    pub fn is_running(&self, index: u8) -> bool {
        self.appliances[usize::from(index) - 1].child.is_some()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self, index: u8) -> ExitStatus {
        let a = self.appliance(index);
        let mut child = a.child.take().expect("appliance not running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        wait_bounded(&mut child, PROCESS_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("appliance {index} did not stop within {PROCESS_TIMEOUT:?} of SIGTERM")
        })
    }

    /// Sends `signal` (`STOP`, `CONT`) to appliance `index`: a hung appliance, and back.
    pub fn signal(&self, index: u8, signal: &str) {
        let a = &self.appliances[usize::from(index) - 1];
        let child = a.child.as_ref().expect("appliance not running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} appliance {index}");
    }

    /// SIGKILL, no warning.
    pub fn kill(&mut self, index: u8) {
        let a = self.appliance(index);
        let mut child = a.child.take().expect("appliance not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The appliance's log so far.
    pub fn log(&self, index: u8) -> String {
        std::fs::read_to_string(&self.appliances[usize::from(index) - 1].log).unwrap_or_default()
    }

    /// Stops every appliance (SIGTERM) and fails unless each logged at `trace` level
    /// ([`Options::log_level`]) and none of `secrets` ([`logged_forms`]) is in its log.
    pub fn assert_logs_hold_none_of(&mut self, secrets: &[String]) {
        for index in 1..=self.appliances.len() as u8 {
            let status = self.stop(index);
            let log = self.log(index);
            assert!(
                status.success(),
                "appliance {index} ended with {status} after SIGTERM:\n{log}"
            );
            assert!(
                log.matches(" TRACE ").count() > 100,
                "not at trace level:\n{log}"
            );
            for secret in secrets {
                assert!(
                    !log.contains(secret.as_str()),
                    "appliance {index} logged {secret}"
                );
            }
        }
    }

    /// The TLS identity stored under `name` (`client`, `admin`, `appliance-2`).
    pub fn identity(&self, name: &str) -> TlsIdentity {
        let root = self.dir.path();
        TlsIdentity::from_pem_files(
            &root.join("ca.pem"),
            &root.join(format!("{name}.pem")),
            &root.join(format!("{name}.key")),
        )
        .unwrap()
    }

    /// Connects to appliance `index` as `name`.
    pub fn connect_as(&self, index: u8, name: &str) -> Result<Connection, ittc_wire::Error> {
        connect(self.address(index), index, &self.identity(name))
    }

    /// Connects as the client, logged in as the user with `pin`.
    pub fn user_session(&self, index: u8, pin: &[u8]) -> Connection {
        let mut c = self.connect_as(index, "client").unwrap();
        let r = c
            .request(&Request::Login {
                user: UserKind::User,
                pin: SecretBytes::new(pin.to_vec()),
            })
            .unwrap();
        assert_eq!(r, Response::Ok, "login on appliance {index}");
        c
    }

    /// Sets the user PIN on every running appliance, as admin.
    pub fn set_user_pin(&self, pin: &[u8]) {
        for a in self.running() {
            self.admin_ok(
                a.index,
                &Request::SetPin {
                    user: UserKind::User,
                    pin: SecretBytes::new(pin.to_vec()),
                },
            );
        }
    }
}

/// The epoch of a freshly imported key (as `ittc key import` stores it).
pub const FIRST_EPOCH: u64 = 1;

/// The handle of the public-key token object of the key `id` (`CKA_ID`), as
/// [`Cluster::import_key`] and `ittc key import` store it.
pub fn public_key_object_id(id: &[u8]) -> ObjectId {
    ObjectId::derived("public-key", id)
}

impl Cluster {
    /// Imports `key` as `id` (`CKA_ID`, also the key id) and `label`, k-of-n with n the
    /// cluster's size, the way `ittc key import` does: splits it (checked by the dealer),
    /// stores each share on its appliance and commits epoch [`FIRST_EPOCH`], and stores
    /// the public-key token object ([`public_key_object_id`]) — on every *running*
    /// appliance, as admin. Panics on any refusal.
    pub fn import_key(
        &self,
        key: &RsaPrivateKey,
        k: usize,
        id: &[u8],
        label: &str,
    ) -> SharingParams {
        self.import_key_with_shares(key, k, id, label).0
    }

    /// [`Cluster::import_key`], also returning the shares (for tests that look for them).
    pub fn import_key_with_shares(
        &self,
        key: &RsaPrivateKey,
        k: usize,
        id: &[u8],
        label: &str,
    ) -> (SharingParams, Vec<KeyShare>) {
        let (params, shares) = self.store_shares(key, k, id, label);
        self.commit_epoch(id, FIRST_EPOCH);
        self.put_public_key_object(key.public_key(), id, label);
        (params, shares)
    }

    /// Splits `key` k-of-n (n the cluster's size) and stores each running appliance's
    /// share for epoch [`FIRST_EPOCH`], as admin, without committing it: the key stays
    /// pending (unusable by clients) until [`Cluster::commit_epoch`].
    pub fn store_shares(
        &self,
        key: &RsaPrivateKey,
        k: usize,
        id: &[u8],
        label: &str,
    ) -> (SharingParams, Vec<KeyShare>) {
        let params = SharingParams::new(k, self.appliances.len()).unwrap();
        self.store_shares_of(key, params, id, label)
    }

    /// [`Cluster::import_key`] with a sharing of the first `params.parties()` appliances
    /// only (the others, if running, get nothing: they can join by a reshare).
    pub fn import_key_among(
        &self,
        key: &RsaPrivateKey,
        params: SharingParams,
        id: &[u8],
        label: &str,
    ) {
        self.store_shares_of(key, params, id, label);
        self.commit_epoch(id, FIRST_EPOCH);
        self.put_public_key_object(key.public_key(), id, label);
    }

    fn store_shares_of(
        &self,
        key: &RsaPrivateKey,
        params: SharingParams,
        id: &[u8],
        label: &str,
    ) -> (SharingParams, Vec<KeyShare>) {
        let (k, n) = (params.threshold(), params.parties());
        let holders = split_key(key, params, Backend::default().get(), &mut rand::rng()).unwrap();
        let key_id = KeyId::new(id.to_vec()).unwrap();
        let public = key.public_key();
        for a in self.running().filter(|a| usize::from(a.index) <= n) {
            let holder = holders
                .iter()
                .find(|s| s.index() == usize::from(a.index))
                .unwrap();
            let record = ShareRecord {
                key_id: key_id.clone(),
                label: label.to_owned(),
                epoch: FIRST_EPOCH,
                index: a.index,
                threshold: u8::try_from(k).unwrap(),
                parties: u8::try_from(n).unwrap(),
                modulus: public.n_be(),
                public_exponent: public.e_be(),
                share: SecretBytes::new(holder.share().value().as_be_bytes().to_vec()),
                additive: SecretBytes::new(holder.additive().unwrap().as_be_bytes().to_vec()),
            };
            self.admin_ok(a.index, &Request::StoreShare(record));
        }
        let shares = holders.iter().map(|h| h.share().clone()).collect();
        (params, shares)
    }

    /// Commits `epoch` of key `id` on every running appliance, as admin.
    pub fn commit_epoch(&self, id: &[u8], epoch: u64) {
        let key_id = KeyId::new(id.to_vec()).unwrap();
        for a in self.running() {
            self.admin_ok(
                a.index,
                &Request::CommitEpoch {
                    key_id: key_id.clone(),
                    epoch,
                },
            );
        }
    }

    /// Stores the public-key token object of key `id` on every running appliance, as
    /// admin, under [`public_key_object_id`].
    pub fn put_public_key_object(&self, public: &RsaPublicKey, id: &[u8], label: &str) {
        let object = TokenObject::rsa_public_key(
            public_key_object_id(id),
            id,
            label,
            &public.n_be(),
            &public.e_be(),
        );
        let request = Request::PutObject {
            object,
            version: ittc_wire::ObjectVersion::next(None, 1),
        };
        for a in self.running() {
            self.admin_ok(a.index, &request);
        }
    }

    /// The running appliances.
    fn running(&self) -> impl Iterator<Item = &Appliance> {
        self.appliances.iter().filter(|a| a.child.is_some())
    }

    /// Sends `request` to appliance `index` as admin and checks that it is answered `Ok`.
    /// The connection is tried again for a few seconds: under a small
    /// `limits.max_connections`, the connections a step before closed may still hold
    /// their slots until the appliance reads their end.
    fn admin_ok(&self, index: u8, request: &Request) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut c = loop {
            match self.connect_as(index, "admin") {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("admin on appliance {index}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let r = c.request(request).unwrap();
        assert_eq!(r, Response::Ok, "{} on appliance {index}", request.kind());
    }
}

/// Connects with short timeouts.
pub fn connect(
    address: SocketAddr,
    index: u8,
    identity: &TlsIdentity,
) -> Result<Connection, ittc_wire::Error> {
    let timeouts = Timeouts {
        connect: Duration::from_secs(3),
        io: Duration::from_secs(10),
    };
    Connection::connect(
        address,
        index,
        identity.client_config()?,
        timeouts,
        "ittc-tests",
    )
}

/// A rustls client config with a given identity, for raw-stream tests.
pub fn client_config(identity: &TlsIdentity) -> Arc<rustls::ClientConfig> {
    identity.client_config().unwrap()
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.appliances {
            if let Some(mut child) = a.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
