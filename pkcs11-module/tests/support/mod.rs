//! Shared by the end-to-end tests: the built module's path, a cluster with one imported
//! key and a `pkcs11.toml` for it, a test proxy that corrupts an appliance's partial
//! results or holds them until k are in flight, and the runner that gives each token test
//! its own process.
//!
//! The module is one per process and reads `ITTC_PKCS11_CONFIG` and `ITTC_PKCS11_LOG`
//! from the environment. Rather than change the test process's environment (which is
//! `unsafe` and races with other threads), [`isolated`] runs a test's body in a child
//! process of the test binary — `current_exe() <test> --exact` — with those variables set
//! through `Command::env`: every token test gets a fresh module, its own configuration
//! and log file, and its appliances die with it (the child is a process group of its own,
//! killed whole if it overruns).

// Each test binary uses part of this module.
#![allow(dead_code)]

pub mod guide;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ittc_tests::{Cluster, Options};
use ittc_threshold::RsaPrivateKey;
use ittc_wire::client::{Connection, Timeouts};
use ittc_wire::cluster::{ApplianceEntry, ClusterConfig, TimeoutConfig, TlsFiles, TokenConfig};
use ittc_wire::{Request, Response, read_frame_blocking, write_frame_blocking};
use num_bigint::BigUint;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};

/// The user PIN every fixture sets.
pub const PIN: &str = "123456";
/// `CKA_ID` (and key id) of the imported key.
pub const KEY_ID: &[u8] = b"\x01";
/// The label of the imported key.
pub const KEY_LABEL: &str = "test key";
/// The environment variable that marks the child process of [`isolated`].
pub const CHILD_ENV: &str = "ITTC_PKCS11_TEST_CHILD";
/// How long one isolated test may run.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(300);
/// `timeouts.keygen_ms` of the module: a 1024-bit generation takes seconds, and the
/// isolated test must end well within [`CHILD_TIMEOUT`].
pub const KEYGEN_TIMEOUT_MS: u64 = 180_000;

/// The built `libittc_pkcs11.so` next to the test executable.
pub fn module_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/libittc_pkcs11.so
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("libittc_pkcs11.so");
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p ittc-pkcs11)",
        path.display()
    );
    path
}

/// Whether this process is the child of [`isolated`].
pub fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Isolated tests of one binary run one at a time: each starts a cluster.
static TURN: Mutex<()> = Mutex::new(());

/// Runs `body` in a child process of this test binary that runs only the test `name`,
/// with `ITTC_PKCS11_CONFIG` and `ITTC_PKCS11_LOG` naming files in a fresh folder (see
/// [`config_path`], [`log_path`]). In the child, runs `body` itself. The parent waits at
/// most [`CHILD_TIMEOUT`], then kills the child's whole process group (its appliances
/// too), and fails unless the child ran exactly that one test and it passed.
pub fn isolated(name: &str, body: impl FnOnce()) {
    if in_child() {
        body();
        return;
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("child.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .env("ITTC_PKCS11_CONFIG", dir.path().join("pkcs11.toml"))
        .env("ITTC_PKCS11_LOG", dir.path().join("pkcs11.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .process_group(0)
        .spawn()
        .unwrap();
    let status = wait_or_kill_group(&mut child, CHILD_TIMEOUT);
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let log = std::fs::read_to_string(dir.path().join("pkcs11.log")).unwrap_or_default();
    let report = format!("child output:\n{output}\nmodule log:\n{log}");
    let status = status.unwrap_or_else(|| panic!("{name} overran {CHILD_TIMEOUT:?}\n{report}"));
    assert!(status.success(), "{name} failed ({status})\n{report}");
    assert!(
        output.contains(&format!("test {name} ... ok")) && output.contains("1 passed"),
        "the child did not run {name}\n{report}"
    );
}

/// Waits at most `limit` for `child`; on overrun kills its process group (it must lead
/// one) and returns `None`.
pub fn wait_or_kill_group(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// In the child of [`isolated`]: where the module reads its configuration.
pub fn config_path() -> PathBuf {
    PathBuf::from(std::env::var_os("ITTC_PKCS11_CONFIG").expect("run through isolated()"))
}

/// In the child of [`isolated`]: the module's log file.
pub fn log_path() -> PathBuf {
    PathBuf::from(std::env::var_os("ITTC_PKCS11_LOG").expect("run through isolated()"))
}

/// What a [`Fixture`] sets up.
#[derive(Clone, Debug)]
pub struct Setup {
    /// k.
    pub k: usize,
    /// n.
    pub n: u8,
    /// `timeouts.retry_after_ms` of the module.
    pub retry_after_ms: u64,
    /// Appliances reached through a [`Proxy`] that corrupts their partial results.
    pub bad: Vec<u8>,
    /// Every appliance reached through a [`Proxy`] that holds each partial request until
    /// k are held at once ([`Rendezvous`]).
    pub rendezvous: bool,
    /// Appliance options.
    pub options: Options,
    /// The appliance binary, if not the one next to the test executable (the fuzz
    /// target's).
    pub appliance: Option<PathBuf>,
}

impl Setup {
    /// k-of-n, 5 s back-off, nobody bad.
    pub fn new(k: usize, n: u8) -> Self {
        Self {
            k,
            n,
            retry_after_ms: 5000,
            bad: Vec::new(),
            rendezvous: false,
            options: Options::default(),
            appliance: None,
        }
    }

    /// k-of-n whose appliances generate 1024-bit keys (`keygen.min_bits = 1024`).
    pub fn keygen(k: usize, n: u8) -> Self {
        let mut setup = Self::new(k, n);
        setup.options.keygen_min_bits = Some(1024);
        setup
    }
}

/// A running cluster with one imported RSA-2048 key ([`KEY_ID`]), the user PIN [`PIN`]
/// set, a `pkcs11.toml` for it, and (after [`Fixture::load`]) the module.
pub struct Fixture {
    /// The appliances.
    pub cluster: Cluster,
    /// The key, for checking results.
    pub openssl: PKey<Private>,
    /// The module's configuration file.
    pub config_path: PathBuf,
    /// The loaded module.
    pub pkcs11: Option<Pkcs11>,
    /// The rendezvous of the proxies, with [`Setup::rendezvous`].
    pub rendezvous: Option<Arc<Rendezvous>>,
    proxies: Vec<Proxy>,
}

impl Fixture {
    /// In the child of [`isolated`]: the cluster, its configuration where the module
    /// looks for it, and the module loaded and initialised with `CKF_OS_LOCKING_OK`.
    pub fn new(setup: &Setup) -> Self {
        let mut fx = Self::prepare(setup, &config_path());
        fx.load(CInitializeFlags::OS_LOCKING_OK);
        fx
    }

    /// The cluster and its configuration written to `config`; the module not loaded.
    pub fn prepare(setup: &Setup, config: &Path) -> Self {
        let mut cluster = Cluster::new(setup.n, &setup.options);
        if let Some(binary) = &setup.appliance {
            for i in 1..=setup.n {
                cluster.set_binary(i, binary);
            }
        }
        cluster.start_all();
        let rsa = Rsa::generate(2048).unwrap();
        let key = RsaPrivateKey::from_bytes(&rsa.private_key_to_pem().unwrap(), None).unwrap();
        cluster.import_key(&key, setup.k, KEY_ID, KEY_LABEL);
        cluster.set_user_pin(PIN.as_bytes());
        let modulus = BigUint::from_bytes_be(&rsa.n().to_vec());
        let rendezvous = setup.rendezvous.then(|| Arc::new(Rendezvous::new(setup.k)));
        let proxies: Vec<Proxy> = match &rendezvous {
            Some(r) => (1..=setup.n)
                .map(|i| Proxy::start(&cluster, i, Behaviour::Rendezvous(Arc::clone(r))))
                .collect(),
            None => setup
                .bad
                .iter()
                .map(|&i| Proxy::start(&cluster, i, Behaviour::Corrupt(modulus.clone())))
                .collect(),
        };
        let address = |i: u8| {
            proxies
                .iter()
                .find(|p| p.index == i)
                .map_or_else(|| cluster.address(i), |p| p.address)
        };
        let dir = cluster.dir();
        let config_toml = ClusterConfig {
            cluster_id: hex::encode(cluster.cluster_id()),
            threshold: u8::try_from(setup.k).unwrap(),
            revoked: Vec::new(),
            tls: TlsFiles {
                ca: dir.join("ca.pem"),
                cert: dir.join("client.pem"),
                key: dir.join("client.key"),
            },
            appliances: (1..=setup.n)
                .map(|i| ApplianceEntry {
                    index: i,
                    address: address(i).to_string(),
                })
                .collect(),
            timeouts: TimeoutConfig {
                connect_ms: 1000,
                request_ms: 5000,
                retry_after_ms: setup.retry_after_ms,
                keygen_ms: KEYGEN_TIMEOUT_MS,
                ..TimeoutConfig::default()
            },
            token: TokenConfig::default(),
        };
        std::fs::write(config, config_toml.to_toml().unwrap()).unwrap();
        Self {
            cluster,
            openssl: PKey::from_rsa(rsa).unwrap(),
            config_path: config.to_owned(),
            pkcs11: None,
            rendezvous,
            proxies,
        }
    }

    /// Loads and initialises the module (the configuration must be where it looks).
    pub fn load(&mut self, flags: CInitializeFlags) {
        let pkcs11 = Pkcs11::new(module_path()).unwrap();
        pkcs11.initialize(CInitializeArgs::new(flags)).unwrap();
        self.pkcs11 = Some(pkcs11);
    }

    /// The loaded module.
    pub fn pkcs11(&self) -> &Pkcs11 {
        self.pkcs11.as_ref().unwrap()
    }

    /// A read-write session, not logged in.
    pub fn session(&self) -> Session {
        let slot = self.pkcs11().get_slots_with_token().unwrap()[0];
        self.pkcs11().open_rw_session(slot).unwrap()
    }

    /// A read-write session with the user logged in.
    pub fn user_session(&self) -> Session {
        let session = self.session();
        session
            .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
            .unwrap();
        session
    }

    /// The public key.
    pub fn public(&self) -> PKey<Public> {
        PKey::public_key_from_der(&self.openssl.public_key_to_der().unwrap()).unwrap()
    }

    /// Writes the public key as PEM into the cluster folder; returns its path.
    pub fn public_pem(&self) -> PathBuf {
        let path = self.cluster.dir().join("public.pem");
        std::fs::write(&path, self.openssl.public_key_to_pem().unwrap()).unwrap();
        path
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(p) = self.pkcs11.take() {
            let _ = p.finalize();
        }
    }
}

/// The one object of `class` with `CKA_ID` [`KEY_ID`].
pub fn find_one(session: &Session, class: ObjectClass) -> ObjectHandle {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Id(KEY_ID.to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1, "{class:?}");
    found[0]
}

/// The PKCS#11 return code of an error.
pub fn rv(err: CkError) -> RvError {
    match err {
        CkError::Pkcs11(rv, _) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// Checks a PKCS#1 v1.5 signature of `msg` with OpenSSL.
pub fn verify_pkcs1(public: &PKey<Public>, md: MessageDigest, msg: &[u8], sig: &[u8]) {
    let mut v = Verifier::new(md, public).unwrap();
    v.set_rsa_padding(Padding::PKCS1).unwrap();
    v.update(msg).unwrap();
    assert!(
        v.verify(sig).unwrap(),
        "PKCS#1 v1.5 signature, {} bytes",
        sig.len()
    );
}

/// Checks a PSS signature of `msg` (MGF1 with the same hash, salt = digest length).
pub fn verify_pss(public: &PKey<Public>, md: MessageDigest, msg: &[u8], sig: &[u8]) {
    let mut v = Verifier::new(md, public).unwrap();
    v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
    v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
    v.set_rsa_mgf1_md(md).unwrap();
    v.update(msg).unwrap();
    assert!(v.verify(sig).unwrap(), "PSS signature, {} bytes", sig.len());
}

/// Where partial requests that must be in flight together meet: each waits (up to
/// [`Rendezvous::PATIENCE`]) until k have arrived, then all k go on. One that waits in
/// vain is counted and goes on alone: the appliances were asked one after the other.
pub struct Rendezvous {
    k: usize,
    /// (meetings so far, requests waiting for the next).
    state: Mutex<(u64, usize)>,
    met: Condvar,
    missed: AtomicUsize,
}

impl Rendezvous {
    /// How long a partial request waits for the others.
    pub const PATIENCE: Duration = Duration::from_secs(2);

    fn new(k: usize) -> Self {
        Self {
            k,
            state: Mutex::new((0, 0)),
            met: Condvar::new(),
            missed: AtomicUsize::new(0),
        }
    }

    fn arrive(&self) {
        let mut state = self.state.lock().unwrap();
        let meeting = state.0;
        state.1 += 1;
        if state.1 == self.k {
            *state = (meeting + 1, 0);
            self.met.notify_all();
            return;
        }
        let (mut state, _) = self
            .met
            .wait_timeout_while(state, Self::PATIENCE, |s| s.0 == meeting)
            .unwrap();
        if state.0 == meeting {
            state.1 -= 1;
            self.missed.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Partial requests that waited for the others in vain.
    pub fn missed(&self) -> usize {
        self.missed.load(Ordering::SeqCst)
    }
}

/// What a [`Proxy`] does to partial operations.
#[derive(Clone)]
pub enum Behaviour {
    /// Answers `value + 1 mod N` (modulus given): a wrong partial.
    Corrupt(BigUint),
    /// Relays each request once k are in flight together.
    Rendezvous(Arc<Rendezvous>),
}

/// A TLS endpoint that presents appliance `index`'s certificate, relays every request to
/// the real appliance (as the test client) and answers with its responses — except for
/// partial operations, which it treats as its [`Behaviour`] says: with `Corrupt`, every
/// partial result is replaced by `value + 1 mod N`, a wrong partial from a genuine,
/// authenticated appliance. The module reaches that appliance only through the proxy.
pub struct Proxy {
    /// The appliance it stands for.
    pub index: u8,
    /// Where it listens.
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy for appliance `index` of `cluster` (which must be running).
    pub fn start(cluster: &Cluster, index: u8, behaviour: Behaviour) -> Self {
        let server = cluster
            .identity(&format!("appliance-{index}"))
            .server_config()
            .unwrap();
        let client = cluster.identity("client").client_config().unwrap();
        let upstream = cluster.address(index);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let accept = std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let (server, client, behaviour) =
                    (Arc::clone(&server), Arc::clone(&client), behaviour.clone());
                // Each connection lives until the module closes it or the process ends.
                std::thread::spawn(move || {
                    let _ = relay(tcp, server, client, upstream, index, &behaviour);
                });
            }
        });
        Self {
            index,
            address,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn relay(
    tcp: TcpStream,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    upstream: SocketAddr,
    index: u8,
    behaviour: &Behaviour,
) -> Result<(), ittc_wire::Error> {
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        io: Duration::from_secs(10),
    };
    let mut real = Connection::connect(upstream, index, client, timeouts, "ittc test proxy")?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let conn =
        rustls::ServerConnection::new(server).map_err(|e| ittc_wire::Error::Tls(e.to_string()))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    loop {
        let request: Request = read_frame_blocking(&mut tls)?;
        let response = match request {
            Request::Hello { .. } => Response::HelloInfo(real.hello().clone()),
            other => {
                if let (Request::Partial { .. }, Behaviour::Rendezvous(r)) = (&other, behaviour) {
                    r.arrive();
                }
                match (real.request(&other)?, behaviour) {
                    (Response::PartialResult(mut p), Behaviour::Corrupt(modulus)) => {
                        let wrong = (BigUint::from_bytes_be(&p.value) + 1u32) % modulus;
                        p.value = wrong.to_bytes_be();
                        Response::PartialResult(p)
                    }
                    (answer, _) => answer,
                }
            }
        };
        write_frame_blocking(&mut tls, &response)?;
    }
}

/// Runs `program` with `args` and extra environment, bounded by `limit` (the process is
/// killed on overrun, which fails the test); returns the exit status and the combined
/// standard output and error.
pub fn run(
    program: &str,
    args: &[OsString],
    env: &[(&str, OsString)],
    limit: Duration,
) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .process_group(0);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{program}: {e}"));
    let status = wait_or_kill_group(&mut child, limit);
    let mut output = String::new();
    let _ = std::fs::File::open(&out_path).and_then(|mut f| f.read_to_string(&mut output));
    let status =
        status.unwrap_or_else(|| panic!("{program} {args:?} overran {limit:?}; output:\n{output}"));
    (status, output)
}

/// Writes `bytes` to `path`.
pub fn write_file(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
}
