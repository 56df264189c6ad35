//! The ittc share appliance: an HSM-style daemon that holds integer shares of RSA keys,
//! sealed at rest, and answers partial operations over mutual TLS.
//!
//! `main.rs` parses the command line and calls [`run`]: load the [`config`], install
//! tracing, open the [`storage`], bind, and [`server::serve`] until SIGTERM or SIGINT.
//! [`server`] owns connections (handshake, identity from the certificate, frames,
//! timeouts, limits); [`handlers`] own what each request does; [`storage`] is the only code
//! that touches the database.
//!
//! [`keygen`] runs dealerless key generation with the peers (`GenerateKey`); [`refresh`]
//! gives every key a new sharing on a schedule, with the peers, and recovers an interrupted
//! refresh by itself; both carry their messages through [`peers`]. [`revocation`] refuses
//! certificates on the deny-list, on both ends of a connection; [`public_state`] fills a
//! new (replaced) appliance's empty store with its peers' token objects, PIN records and
//! deny-list. [`retention`] moves audit entries past the retention from the store to export
//! files on a schedule. [`variant`] names this build (exponentiation backend, TLS provider,
//! allocator) and asks peers for theirs. [`metrics`] counts requests, refusals and
//! connections and serves them, with what the store says, to Prometheus when
//! `metrics.listen` is set.

pub mod config;
pub mod error;
pub mod handlers;
pub mod hygiene;
pub mod keygen;
pub mod metrics;
pub mod peers;
pub mod public_state;
pub mod refresh;
pub mod refusals;
pub mod retention;
pub mod revocation;
pub mod server;
pub mod state;
pub mod storage;
pub mod variant;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ittc_wire::client::TlsIdentity;
use ittc_wire::{Request, Response};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, LogFormat};
pub use crate::error::{ApplianceError, ConfigError};
use crate::state::State;
use crate::storage::{AuditEntry, AuditHead, AuditReport, SealingKey, Storage, StorageError};

/// Why the appliance could not start (or a tool could not run).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable. Exit code 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The share store could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The certificates or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] ittc_wire::Error),
    /// Binding or the runtime failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Started as root without `process.allow_root` or `--allow-root`. Exit code 2.
    #[error(
        "refusing to run as root: run the appliance as a user of its own (the systemd unit \
         uses `ittc`; docs/appliance.md), or allow it with --allow-root or \
         `[process] allow_root = true`"
    )]
    Root,
    /// The process could not be made non-dumpable.
    #[error("making the process non-dumpable (prctl PR_SET_DUMPABLE): {0}")]
    Dumpable(std::io::Error),
    /// A running appliance was to be asked (its store being in use) and did not answer.
    #[error("{0}")]
    Running(String),
}

impl StartError {
    /// The process exit code: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) | StartError::Root => 2,
            _ => 1,
        }
    }
}

/// Loads and checks a configuration, including that its certificate, key and sealing key
/// files are usable.
pub fn check_config(path: &Path) -> Result<Config, StartError> {
    let config = Config::load(path)?;
    tls_identity(&config)
        .and_then(|id| id.server_config())
        .map_err(|e| ConfigError::new(path, format!("tls: {e}")))?;
    SealingKey::from_file(&config.sealing.key_file)
        .map_err(|e| ConfigError::new(path, format!("sealing.key_file: {e}")))?;
    Ok(config)
}

/// The appliance's TLS identity, with this build's crypto provider
/// ([`variant::tls_crypto`]) for its listener and its connections to peers.
fn tls_identity(config: &Config) -> Result<TlsIdentity, ittc_wire::Error> {
    TlsIdentity::from_pem_files_with(
        &config.tls.ca,
        &config.tls.cert,
        &config.tls.key,
        variant::tls_crypto(),
    )
}

/// Runs the appliance until SIGTERM or SIGINT. Prints `listening on ADDR` on standard
/// output once it accepts connections (logs go to standard error).
///
/// Before it reads a secret, the process makes itself non-dumpable, refuses to go on as
/// root unless `allow_root` (or `process.allow_root`) says so, and locks its memory where
/// it can ([`hygiene`]).
pub fn run(path: &Path, allow_root: bool) -> Result<(), StartError> {
    hygiene::make_non_dumpable().map_err(StartError::Dumpable)?;
    let loaded = Config::load(path)?;
    let as_root = hygiene::is_root();
    if as_root && !(allow_root || loaded.process.allow_root) {
        return Err(StartError::Root);
    }
    let memory = if loaded.process.lock_memory {
        hygiene::lock_memory()
    } else {
        hygiene::MemoryLock::NotLocked("process.lock_memory is false".into())
    };
    let config = check_config(path)?;
    install_tracing(&config);
    // A descriptor per connection and handshake, and room for the store and the peers.
    let files = hygiene::raise_file_limit(
        (config.limits.max_connections + config.limits.max_handshakes) as u64 + 256,
    );
    tracing::info!(
        dumpable = hygiene::is_dumpable(),
        root = as_root,
        memory = %memory,
        open_files = files,
        "process hygiene"
    );
    if as_root {
        tracing::warn!("running as root, as allowed: an appliance should run as a user of its own");
    }
    if let hygiene::MemoryLock::NotLocked(why) = &memory {
        tracing::warn!(%why, "memory not locked: shares may reach swap");
    }
    let identity = tls_identity(&config)?;
    let acceptor = TlsAcceptor::from(identity.server_config()?);
    // Partial operations run on the runtime's workers (see `server::handle`): one worker
    // more than may run at once keeps the network served while they all exponentiate.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.limits.workers().saturating_add(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen).await?;
        let address = listener.local_addr()?;
        let state = State::open(config)?;
        // Every connection to a peer refuses a certificate on this appliance's deny-list.
        let peer_client = identity.client_config_with(state.deny_list.clone())?;
        let state = Arc::new(state.with_peer_client(peer_client));
        let metrics_listener = match state.config.metrics.listen {
            Some(wanted) => {
                let listener = TcpListener::bind(wanted).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("metrics.listen {wanted}: {e}"))
                })?;
                Some((listener.local_addr()?, listener))
            }
            None => None,
        };
        tracing::info!(%address, index = state.config.index, variant = %state.build_variant, "appliance started");
        refresh::schedule::start(state.clone());
        public_state::start(state.clone());
        retention::start(state.clone());
        // The first line tells a supervisor (`ittc demo`, the tests) that the appliance is up.
        println!("listening on {address}");
        if let Some((address, listener)) = metrics_listener {
            tracing::info!(%address, "metrics listening");
            println!("metrics on http://{address}/metrics");
            tokio::spawn(metrics::serve(listener, state.clone()));
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        server::serve(listener, acceptor, state, shutdown_signal()).await;
        Ok(())
    })
}

/// How long `ittc-appliance audit verify` waits for a running appliance's answer: it
/// reads the whole log first (about a million entries a few seconds).
const AUDIT_VERIFY_TIMEOUT: Duration = Duration::from_secs(3600);

/// Who checked the chain for `ittc-appliance audit verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditVerifier {
    /// This process, in the store of a stopped appliance.
    Store,
    /// The running appliance at this address, asked with its own certificate.
    Running(SocketAddr),
}

/// `ittc-appliance audit verify`: checks the audit chain through the export files and the
/// store. It opens the store of a stopped appliance; while the appliance runs (the store
/// is locked), it asks the appliance instead (`AuditVerify` over TLS, with the
/// appliance's own certificate from the configuration, at its `listen` address).
pub fn verify_audit(path: &Path) -> Result<(AuditReport, AuditVerifier), StartError> {
    let config = Config::load(path)?;
    match open_store(&config) {
        Ok(storage) => Ok((storage.audit_verify()?, AuditVerifier::Store)),
        Err(StartError::Storage(StorageError::Io(in_use))) => {
            let address = local_address(&config)?;
            let report = ask_running(&config, address).map_err(|e| {
                StartError::Running(format!(
                    "the store cannot be opened ({in_use}), and the running appliance at \
                     {address} did not answer: {e}"
                ))
            })?;
            Ok((report, AuditVerifier::Running(address)))
        }
        Err(e) => Err(e),
    }
}

/// Where this host reaches the appliance its configuration describes: `listen`, with a
/// loopback address for an unspecified one.
fn local_address(config: &Config) -> Result<SocketAddr, StartError> {
    let mut address = config.listen;
    if address.port() == 0 {
        return Err(StartError::Running(
            "the store is in use, and the configuration's listen port is 0 (chosen at \
             start), so the running appliance cannot be asked"
                .into(),
        ));
    }
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(address)
}

/// Asks the running appliance to check its chain.
fn ask_running(config: &Config, address: SocketAddr) -> Result<AuditReport, String> {
    let identity = tls_identity(config).map_err(|e| e.to_string())?;
    let client = identity.client_config().map_err(|e| e.to_string())?;
    let timeouts = ittc_wire::Timeouts {
        connect: Duration::from_secs(5),
        io: AUDIT_VERIFY_TIMEOUT,
    };
    let name = concat!(
        "ittc-appliance ",
        env!("CARGO_PKG_VERSION"),
        " audit verify"
    );
    let mut connection =
        ittc_wire::Connection::connect(address, config.index, client, timeouts, name)
            .map_err(|e| e.to_string())?;
    match connection.request(&Request::AuditVerify) {
        Ok(Response::AuditVerified(found)) => Ok(match found.broken {
            None => AuditReport::Intact {
                entries: found.entries,
                head: AuditHead {
                    seq: found.entries,
                    hash: found.head,
                },
                exported: found.exported,
                files: found.export_files,
            },
            Some(broken) => AuditReport::Broken {
                seq: broken.seq,
                reason: broken.reason,
            },
        }),
        Ok(Response::Error(e)) => Err(e.to_string()),
        Ok(other) => Err(format!("unexpected answer: {}", other.kind())),
        Err(e) => Err(e.to_string()),
    }
}

/// `ittc-appliance audit show`: calls `f` on every audit entry of a stopped appliance,
/// oldest first: those in the export files, then those in the store.
pub fn audit_entries(path: &Path, f: impl FnMut(u64, &AuditEntry)) -> Result<(), StartError> {
    let config = Config::load(path)?;
    Ok(open_store(&config)?.audit_visit(f)?)
}

/// The store of a stopped appliance (its configuration's data folder, sealing key and
/// audit export folder).
fn open_store(config: &Config) -> Result<Storage, StartError> {
    let key = SealingKey::from_file(&config.sealing.key_file)?;
    let options = crate::storage::StorageOptions {
        audit_export_dir: Some(config.audit_export_dir()),
        ..crate::storage::StorageOptions::default()
    };
    Ok(Storage::open(&config.data_dir, key, config.index, options)?)
}

fn install_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second install (tests running `run` twice in one process) keeps the first.
    let _ = match config.log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminate = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        () = terminate => tracing::info!("SIGTERM"),
    }
}
