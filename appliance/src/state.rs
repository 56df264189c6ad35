//! What every connection shares (the [`State`]) and what each one has of its own (the
//! [`Session`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ittc_threshold::PartialExp;
use ittc_wire::UserKind;
use ittc_wire::identity::Identity;
use tokio::sync::Semaphore;

use ittc_wire::Participant;

use crate::config::Config;
use crate::error::ApplianceError;
use crate::handlers::KeyMathCache;
use crate::keygen::Keygens;
use crate::metrics::Metrics;
use crate::peers::Peer;
use crate::refresh::Refreshes;
use crate::refusals::Refusals;
use crate::revocation::DenyList;
use crate::storage::{SealingKey, Storage, StorageOptions};

/// The appliance's shared state.
pub struct State {
    /// The configuration it started with.
    pub config: Config,
    /// The share store.
    pub storage: Storage,
    /// The exponentiation backend of this build and config.
    pub backend: &'static dyn PartialExp,
    /// Reported in the handshake and status: backend, TLS provider and allocator
    /// ([`crate::variant::name`]).
    pub build_variant: String,
    /// Start time, for the uptime.
    pub started: Instant,
    /// Admission of partial operations: running or waiting for a worker.
    pub inflight: Semaphore,
    /// Workers for partial operations: one per core unless configured.
    pub workers: Semaphore,
    /// Client TLS configuration for connecting to peers (this appliance's certificate
    /// serves as a client certificate too); `None` until [`State::with_peer_client`].
    pub peer_client: Option<Arc<rustls::ClientConfig>>,
    /// Key generations in progress.
    pub keygen: Keygens,
    /// Refreshes in progress, and the schedule.
    pub refresh: Refreshes,
    /// The public set-up of the keys partial operations use.
    pub key_math: KeyMathCache,
    /// The certificate deny-list check, over the store (server side, and the peer TLS
    /// configuration's).
    pub deny_list: Arc<DenyList>,
    /// Refused connections and frames: logged once per kind and period, all counted.
    pub refusals: Arc<Refusals>,
    /// The Prometheus metrics (`metrics.rs`).
    pub metrics: Metrics,
}

impl State {
    /// Opens the store and picks the backend.
    pub fn open(config: Config) -> Result<Self, crate::StartError> {
        let key = SealingKey::from_file(&config.sealing.key_file)?;
        let options = StorageOptions {
            max_pin_failures: config.pin.max_failures,
            argon2_m_cost_kib: config.pin.argon2_m_cost_kib,
            argon2_t_cost: config.pin.argon2_t_cost,
            argon2_p_cost: config.pin.argon2_p_cost,
            pin_remember: std::time::Duration::from_secs(config.pin.remember_s),
            cache_bytes: config.limits.store_cache_mb.saturating_mul(1 << 20),
            audit_export_dir: Some(config.audit_export_dir()),
        };
        let storage = Storage::open(&config.data_dir, key, config.index, options)?;
        for serial in config.revoked_serials() {
            let entry = ittc_wire::RevokedCertificate {
                serial,
                label: "from the configuration".into(),
                revoked_unix_ms: ittc_wire::now_unix_ms(),
            };
            storage.revoke_certificate(&entry)?;
        }
        let deny_list = Arc::new(DenyList::new(storage.clone()));
        let backend = crate::variant::backend(&config);
        let build_variant = crate::variant::name(backend.name());
        let inflight = Semaphore::new(config.limits.max_inflight_partials);
        let workers = Semaphore::new(config.limits.workers());
        let metrics = Metrics::new(&build_variant);
        Ok(Self {
            config,
            storage,
            backend,
            build_variant,
            started: Instant::now(),
            inflight,
            workers,
            peer_client: None,
            keygen: Keygens::default(),
            refresh: Refreshes::default(),
            key_math: KeyMathCache::default(),
            deny_list,
            refusals: Arc::default(),
            metrics,
        })
    }

    /// Sets the TLS configuration used to reach the peers (key generation, refresh).
    pub fn with_peer_client(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.peer_client = Some(config);
        self
    }

    /// The other participants of a run, each at the address of this appliance's `peers`
    /// configuration if it has one, else at the address given.
    pub fn peers_of(&self, participants: &[Participant]) -> Vec<Peer> {
        participants
            .iter()
            .filter(|p| p.index != self.config.index)
            .map(|p| {
                let address = self
                    .config
                    .peers
                    .iter()
                    .find(|c| c.index == p.index)
                    .map_or_else(|| p.address.clone(), |c| c.address.clone());
                Peer::new(p.index, address)
            })
            .collect()
    }

    /// The client TLS configuration for the peers.
    ///
    /// # Errors
    ///
    /// `Internal` before [`State::with_peer_client`].
    pub fn peer_config(&self) -> Result<Arc<rustls::ClientConfig>, ApplianceError> {
        self.peer_client
            .clone()
            .ok_or_else(|| ApplianceError::Internal("no peer TLS configuration".into()))
    }
}

/// One connection's state.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who is on the other end, from the certificate.
    pub identity: Identity,
    /// Their address.
    pub peer: SocketAddr,
    /// Whether `Hello` has been answered.
    pub hello: bool,
    /// Who is logged in on this connection.
    pub login: Option<UserKind>,
}

impl Session {
    /// A connection that has completed the TLS handshake.
    pub fn new(identity: Identity, peer: SocketAddr) -> Self {
        Self {
            identity,
            peer,
            hello: false,
            login: None,
        }
    }
}
