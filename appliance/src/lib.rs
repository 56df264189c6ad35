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
//! deny-list. [`variant`] names this build (exponentiation backend, TLS provider,
//! allocator) and asks peers for theirs. What the appliance does not do (yet): rebuild a
//! lost appliance's shares.

pub mod config;
pub mod error;
pub mod handlers;
pub mod hygiene;
pub mod keygen;
pub mod peers;
pub mod public_state;
pub mod refresh;
pub mod refusals;
pub mod revocation;
pub mod server;
pub mod state;
pub mod storage;
pub mod variant;

use std::path::Path;
use std::sync::Arc;

use ittc_wire::client::TlsIdentity;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, LogFormat};
pub use crate::error::{ApplianceError, ConfigError};
use crate::state::State;
use crate::storage::{AuditEntry, AuditReport, SealingKey, Storage, StorageError};

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
        tracing::info!(%address, index = state.config.index, variant = %state.build_variant, "appliance started");
        refresh::schedule::start(state.clone());
        public_state::start(state.clone());
        println!("listening on {address}");
        use std::io::Write as _;
        std::io::stdout().flush()?;
        server::serve(listener, acceptor, state, shutdown_signal()).await;
        Ok(())
    })
}

/// `ittc-appliance audit verify`: checks the audit chain of a stopped appliance.
pub fn verify_audit(path: &Path) -> Result<AuditReport, StartError> {
    Ok(open_stopped(path)?.audit_verify()?)
}

/// `ittc-appliance audit show`: the audit entries of a stopped appliance, oldest first.
pub fn audit_entries(path: &Path) -> Result<Vec<(u64, AuditEntry)>, StartError> {
    Ok(open_stopped(path)?.audit_entries(0, usize::MAX)?)
}

/// The store of a stopped appliance (its configuration's data folder and sealing key).
fn open_stopped(path: &Path) -> Result<Storage, StartError> {
    let config = Config::load(path)?;
    let key = SealingKey::from_file(&config.sealing.key_file)?;
    let options = crate::storage::StorageOptions::default();
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
