//! A cluster folder as the CLI uses it: `pkcs11.toml` for the appliances and the threshold,
//! the admin certificate beside it, and connections to every appliance.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ittc_wire::client::{Connection, Timeouts, TlsIdentity};
use ittc_wire::cluster::{ClusterConfig, FILE_NAME};
use ittc_wire::{ErrorCode, Request, Response};

use crate::error::CliError;

/// The environment variable naming the cluster folder.
pub const CLUSTER_ENV: &str = "ITTC_CLUSTER";

/// `--cluster DIR`, else `$ITTC_CLUSTER`, else the current folder.
pub fn locate(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os(CLUSTER_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// An opened cluster folder.
pub struct Cluster {
    /// The folder.
    pub dir: PathBuf,
    /// Its `pkcs11.toml`.
    pub config: ClusterConfig,
    admin: Arc<rustls::ClientConfig>,
}

impl Cluster {
    /// Reads `DIR/pkcs11.toml` and the admin certificate `DIR/admin.pem`, `DIR/admin.key`.
    pub fn open(dir: &Path) -> Result<Self, CliError> {
        let path = dir.join(FILE_NAME);
        if !path.is_file() {
            return Err(CliError::Cluster(format!(
                "{} not found: name the cluster folder with --cluster DIR or ${CLUSTER_ENV} \
                 (made by `ittc init`)",
                path.display()
            )));
        }
        let config = ClusterConfig::load(&path).map_err(|e| CliError::Cluster(e.to_string()))?;
        // The certificates revoked in this cluster (`revoked` in pkcs11.toml) are refused
        // here too: an appliance that presents one is not believed.
        let admin = TlsIdentity::from_pem_files(
            &config.tls.ca,
            &dir.join("admin.pem"),
            &dir.join("admin.key"),
        )
        .and_then(|id| config.client_config_for(&id))
        .map_err(|e| CliError::Cluster(format!("admin certificate: {e}")))?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            admin,
        })
    }

    /// Number of appliances.
    pub fn parties(&self) -> usize {
        self.config.appliances.len()
    }

    /// The appliance indices, in order.
    pub fn indices(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self.config.appliances.iter().map(|a| a.index).collect();
        v.sort_unstable();
        v
    }

    /// Connects to appliance `index` as admin.
    pub fn connect(&self, index: u8) -> Result<Connection, CliError> {
        self.connect_with(index, self.config.timeouts.timeouts())
    }

    /// Connects to appliance `index` as admin with other time limits (a key generation
    /// answers after minutes, not seconds).
    pub fn connect_with(
        &self,
        index: u8,
        timeouts: ittc_wire::client::Timeouts,
    ) -> Result<Connection, CliError> {
        let entry = self.config.appliance(index).ok_or_else(|| {
            CliError::Cluster(format!("no appliance {index} in the configuration"))
        })?;
        let address = entry.resolve().map_err(|e| CliError::appliance(index, e))?;
        Connection::connect(address, index, self.admin.clone(), timeouts, "ittc")
            .map_err(|e| CliError::appliance(index, format!("{} unreachable: {e}", entry.address)))
    }

    /// Connects to every appliance at once (in parallel); the first failure, if any, names
    /// its appliance.
    pub fn connect_all(&self) -> Result<Vec<(u8, Connection)>, CliError> {
        self.connect_to(self.indices())
    }

    /// Connects to the appliances `indices` at once (in parallel); the failures, if any,
    /// name their appliances.
    pub fn connect_to(&self, indices: Vec<u8>) -> Result<Vec<(u8, Connection)>, CliError> {
        let results = self.in_parallel(indices, |index| self.connect(index));
        let mut connections = Vec::new();
        let mut failures = Vec::new();
        for (index, result) in results {
            match result {
                Ok(c) => connections.push((index, c)),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(connections)
        } else {
            Err(CliError::Several {
                summary: "not every appliance is reachable".into(),
                details: failures,
            })
        }
    }

    /// Runs `f` for each index on its own thread and returns the results in index order.
    pub fn in_parallel<T: Send>(
        &self,
        indices: Vec<u8>,
        f: impl Fn(u8) -> T + Sync,
    ) -> Vec<(u8, T)> {
        let f = &f;
        std::thread::scope(|scope| {
            let handles: Vec<_> = indices
                .into_iter()
                .map(|i| (i, scope.spawn(move || f(i))))
                .collect();
            handles
                .into_iter()
                .filter_map(|(i, h)| h.join().ok().map(|r| (i, r)))
                .collect()
        })
    }
}

/// Longest wait for a connection to, or an answer from, an appliance asked how a long
/// request goes ([`Poller`]): a slow answer only leaves the previous one on show.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks one appliance how a long request goes (`KeygenProgress`, `RefreshProgress`), on an
/// admin connection of its own with short time limits, while another connection waits for
/// the request's answer. Failures only skip a tick: the connection is opened again next
/// time. An appliance that does not know the request (an older version) or refuses it is
/// not asked again.
pub struct Poller<'a> {
    cluster: &'a Cluster,
    index: u8,
    request: Request,
    connection: Option<Connection>,
    gave_up: bool,
}

impl<'a> Poller<'a> {
    /// Will ask appliance `index` `request` at each [`Poller::poll`].
    pub fn new(cluster: &'a Cluster, index: u8, request: Request) -> Self {
        Self {
            cluster,
            index,
            request,
            connection: None,
            gave_up: false,
        }
    }

    /// Asks once; `read` takes the answer apart. `None` when there is nothing to show this
    /// time: no connection or answer in time, or `NotFound` (the run is not registered
    /// there yet, or just over). Any other error, or an answer `read` does not take,
    /// stops the asking.
    pub fn poll<T>(&mut self, read: impl FnOnce(Response) -> Option<T>) -> Option<T> {
        if self.gave_up {
            return None;
        }
        if self.connection.as_ref().is_some_and(Connection::is_broken) {
            self.connection = None;
        }
        if self.connection.is_none() {
            let base = self.cluster.config.timeouts.timeouts();
            let timeouts = Timeouts {
                connect: base.connect.min(POLL_TIMEOUT),
                io: POLL_TIMEOUT,
            };
            self.connection = self.cluster.connect_with(self.index, timeouts).ok();
        }
        match self.connection.as_mut()?.request(&self.request) {
            Ok(Response::Error(e)) if e.code == ErrorCode::NotFound => None,
            Ok(Response::Error(_)) => {
                self.gave_up = true;
                None
            }
            Ok(answer) => {
                let value = read(answer);
                self.gave_up = value.is_none();
                value
            }
            Err(_) => {
                self.connection = None;
                None
            }
        }
    }
}

/// Sends `request` and expects `Ok`; an error answer becomes a [`CliError`] naming the
/// appliance.
pub fn expect_ok(
    index: u8,
    connection: &mut Connection,
    request: &Request,
) -> Result<(), CliError> {
    match connection.request(request) {
        Ok(Response::Ok) => Ok(()),
        Ok(Response::Error(e)) => Err(CliError::appliance(
            index,
            format!("{}: {}", e.code, e.message),
        )),
        Ok(other) => Err(CliError::appliance(
            index,
            format!("unexpected answer to {}: {other:?}", request.kind()),
        )),
        Err(e) => Err(CliError::appliance(index, e)),
    }
}

/// Runs `f` on every connection in parallel and collects the failures, one line each.
pub fn on_all(
    connections: &mut [(u8, Connection)],
    f: impl Fn(u8, &mut Connection) -> Result<(), CliError> + Sync,
) -> Result<(), Vec<String>> {
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = connections
            .iter_mut()
            .map(|(i, c)| scope.spawn(|| f(*i, c)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("a worker thread failed".into()),
            })
            .collect()
    });
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}
