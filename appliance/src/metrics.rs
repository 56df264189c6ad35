//! Prometheus metrics (docs/appliance.md, "Metrics"): counters the request path moves, values
//! read from the store at each scrape, and the listener that serves them as OpenMetrics text
//! on `GET /metrics`.
//!
//! The listener is ours, not an HTTP crate's: it answers one fixed path, reads at most
//! [`MAX_HEAD`] bytes of a request within [`SCRAPE_TIMEOUT`], serves at most
//! [`MAX_SCRAPES`] connections at once and closes each after its answer. It is off unless
//! `metrics.listen` is set, and on loopback unless `metrics.allow_remote` is (config.rs).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ittc_wire::{ErrorCode, UserKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::refusals::Refusal;
use crate::state::State;

/// The longest request head read (request line and headers).
pub const MAX_HEAD: usize = 4096;
/// How long one scrape connection may take, from accept to the last byte written.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrape connections served at once; more are closed at accept.
pub const MAX_SCRAPES: usize = 4;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserLabels {
    user: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: String,
    label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    variant: String,
}

/// How a request ended, for [`Metrics::request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Refused with this code (the peer's request, or the appliance's state, is the cause).
    Refused(ErrorCode),
    /// Failed inside the appliance (storage, a bug).
    Failed,
}

impl Outcome {
    /// The outcome of an error answered with `code`: `Failed` when the code says the
    /// fault is the appliance's (`Internal`: storage, a peer, a bug), else `Refused` (the
    /// request, or the state the appliance is in, such as a wrong epoch or `Busy`).
    pub fn of(code: ErrorCode) -> Self {
        if code == ErrorCode::Internal {
            Outcome::Failed
        } else {
            Outcome::Refused(code)
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused(_) => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// The appliance's metrics. The counters move as requests end; the rest is read at each
/// scrape ([`Metrics::render`]).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    partials_refused: Family<ReasonLabels, Counter>,
    partial_seconds: Histogram,
    pin_failures: Counter,
    pin_lockouts: Counter,
    connections: Family<RoleLabels, Gauge>,
    connections_refused: Family<ReasonLabels, Counter>,
    partials_in_flight: Gauge,
    requests_in_flight: Gauge,
    key_epoch: Family<KeyLabels, Gauge>,
    key_refresh_age: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    key_refresh_failed: Family<KeyLabels, Gauge>,
    audit_entries: Gauge,
    database_bytes: Gauge,
    pin_locked: Family<UserLabels, Gauge>,
    uptime: Gauge,
    /// One scrape at a time sets the values read from the store and encodes them.
    scrape: Mutex<()>,
}

impl Metrics {
    /// The metrics of an appliance of `variant`, all at zero.
    pub fn new(variant: &str) -> Self {
        let mut registry = Registry::with_prefix("ittc");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by kind and outcome (ok, refused, failed)",
            requests.clone(),
        );
        let partials_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "partials_refused",
            "Partial operations refused, by the error code the client got",
            partials_refused.clone(),
        );
        // 0.5 ms to about 2 s: a 2048-bit partial takes 1.5–3 ms, a 4096-bit one 12–25 ms.
        let partial_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 13));
        registry.register(
            "partial_seconds",
            "Time from a partial operation's arrival to its answer (admission, the \
             exponentiation, the audit entry on disk)",
            partial_seconds.clone(),
        );
        let pin_failures = Counter::default();
        registry.register(
            "pin_failures",
            "Wrong PINs entered, and PINs entered while locked",
            pin_failures.clone(),
        );
        let pin_lockouts = Counter::default();
        registry.register(
            "pin_lockouts",
            "Wrong PINs that locked their PIN",
            pin_lockouts.clone(),
        );
        let connections = Family::<RoleLabels, Gauge>::default();
        registry.register(
            "connections",
            "Authenticated connections open, by the peer's role",
            connections.clone(),
        );
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections and frames refused before any request ran, by reason",
            connections_refused.clone(),
        );
        let partials_in_flight = Gauge::default();
        registry.register(
            "partials_in_flight",
            "Partial operations admitted: running or waiting for a worker",
            partials_in_flight.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests of any kind being handled (partials, logins, key generations, …)",
            requests_in_flight.clone(),
        );
        let key_epoch = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "key_epoch",
            "Each key's active epoch on this appliance",
            key_epoch.clone(),
        );
        let key_refresh_age = Family::<KeyLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "key_refresh_age_seconds",
            "Seconds since the key's active epoch became active here: its last refresh, or \
             its import or generation before any",
            key_refresh_age.clone(),
        );
        let key_refresh_failed = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "key_refresh_failed",
            "1 when the key's last refresh failed here and none has succeeded since",
            key_refresh_failed.clone(),
        );
        let audit_entries = Gauge::default();
        registry.register(
            "audit_entries",
            "Entries in the audit chain, exported ones included",
            audit_entries.clone(),
        );
        let database_bytes = Gauge::default();
        registry.register(
            "database_bytes",
            "Size of the share store on disk",
            database_bytes.clone(),
        );
        let pin_locked = Family::<UserLabels, Gauge>::default();
        registry.register(
            "pin_locked",
            "1 when the PIN of the user kind is locked",
            pin_locked.clone(),
        );
        let uptime = Gauge::default();
        registry.register(
            "uptime_seconds",
            "Seconds since the appliance started",
            uptime.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                variant: variant.to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The software version and build variant (exponentiation, TLS crypto, allocator)",
            build,
        );
        Self {
            registry,
            requests,
            partials_refused,
            partial_seconds,
            pin_failures,
            pin_lockouts,
            connections,
            connections_refused,
            partials_in_flight,
            requests_in_flight,
            key_epoch,
            key_refresh_age,
            key_refresh_failed,
            audit_entries,
            database_bytes,
            pin_locked,
            uptime,
            scrape: Mutex::new(()),
        }
    }

    /// Counts a request of `kind` that ended with `outcome` after `elapsed`; `locked` says
    /// that it was the wrong PIN that locked its PIN.
    pub fn request(&self, kind: &'static str, outcome: Outcome, elapsed: Duration, locked: bool) {
        self.requests
            .get_or_create(&RequestLabels {
                kind,
                outcome: outcome.label(),
            })
            .inc();
        if kind == "partial" {
            match outcome {
                Outcome::Ok => self.partial_seconds.observe(elapsed.as_secs_f64()),
                Outcome::Refused(code) => {
                    self.partials_refused
                        .get_or_create(&ReasonLabels {
                            reason: code.as_str(),
                        })
                        .inc();
                }
                Outcome::Failed => {
                    self.partials_refused
                        .get_or_create(&ReasonLabels { reason: "failed" })
                        .inc();
                }
            }
        }
        if let Outcome::Refused(ErrorCode::PinIncorrect | ErrorCode::PinLocked) = outcome {
            self.pin_failures.inc();
        }
        if locked {
            self.pin_lockouts.inc();
        }
    }

    /// Counts an open connection of `role` until the guard is dropped.
    pub fn connected(&self, role: &'static str) -> Held {
        let gauge = self.connections.get_or_create(&RoleLabels { role }).clone();
        gauge.inc();
        Held(gauge)
    }

    /// Counts a request being handled until the guard is dropped.
    pub fn handling(&self) -> Held {
        self.requests_in_flight.inc();
        Held(self.requests_in_flight.clone())
    }

    /// Reads what the store knows, and encodes every metric as OpenMetrics text. Blocks on
    /// the store: call it off the async workers.
    pub fn render(&self, state: &State) -> String {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = self.read_store(state) {
            // The counters are still worth serving; the store's values stay as last read.
            tracing::warn!(error = %e, "metrics: reading the store failed");
        }
        for kind in Refusal::ALL {
            let total = state.refusals.total(kind);
            let counter = self.connections_refused.get_or_create(&ReasonLabels {
                reason: kind.label(),
            });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let limit = state.config.limits.max_inflight_partials;
        let in_flight = limit.saturating_sub(state.inflight.available_permits());
        self.partials_in_flight
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        self.uptime.set(as_gauge(state.started.elapsed().as_secs()));
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "metrics: encoding failed");
        }
        text
    }

    fn read_store(&self, state: &State) -> Result<(), crate::storage::StorageError> {
        let now = ittc_wire::now_unix_ms();
        self.key_epoch.clear();
        self.key_refresh_age.clear();
        self.key_refresh_failed.clear();
        for key in state.storage.keys()? {
            let status = key.status();
            let labels = KeyLabels {
                key: status.key_id.to_string(),
                label: status.label.clone(),
            };
            if let Some(epoch) = status.active_epoch {
                self.key_epoch
                    .get_or_create(&labels)
                    .set(i64::try_from(epoch).unwrap_or(i64::MAX));
            }
            // An epoch made active by an import or a generation counts from then: the
            // alert is the same (the shares in use are too old).
            if let Some(at) = key.active_since_unix_ms.or(key.last_refresh_unix_ms) {
                let age_ms = now.saturating_sub(at);
                // Milliseconds to seconds, as a gauge of seconds wants.
                #[allow(clippy::cast_precision_loss)]
                let age = age_ms as f64 / 1000.0;
                self.key_refresh_age.get_or_create(&labels).set(age);
            }
            self.key_refresh_failed
                .get_or_create(&labels)
                .set(i64::from(status.refresh.last_failure.is_some()));
        }
        self.audit_entries
            .set(as_gauge(state.storage.audit_head()?.seq));
        self.database_bytes
            .set(as_gauge(state.storage.size_on_disk()?));
        for (user, name) in [(UserKind::User, "user"), (UserKind::SecurityOfficer, "so")] {
            let locked = state.storage.pin_status(user)?.locked;
            self.pin_locked
                .get_or_create(&UserLabels { user: name })
                .set(i64::from(locked));
        }
        Ok(())
    }
}

/// A count as a gauge's value (gauges are signed).
fn as_gauge(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A connection or request counted in a gauge while it lives.
pub struct Held(Gauge);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `GET /metrics` on `listener` for as long as the runtime runs.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit: closed at once, so a flood of scrapes cannot hold the appliance.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _slot = slot;
            if timeout(SCRAPE_TIMEOUT, answer(tcp, state)).await.is_err() {
                tracing::debug!("metrics: scrape timed out");
            }
        });
    }
}

/// Reads one request head and answers it; the connection then closes.
async fn answer(mut tcp: TcpStream, state: Arc<State>) {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let complete = loop {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
    };
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next());
    let path = target.map(|t| t.split(|b| *b == b'?').next().unwrap_or_default());
    let (status, body, content_type) = match (complete, method, path) {
        (false, _, _) => ("431 Request Header Fields Too Large", String::new(), TEXT),
        (true, b"GET" | b"HEAD", Some(b"/metrics")) => {
            let rendering = Arc::clone(&state);
            match tokio::task::spawn_blocking(move || rendering.metrics.render(&rendering)).await {
                Ok(text) => ("200 OK", text, OPENMETRICS),
                Err(_) => ("500 Internal Server Error", String::new(), TEXT),
            }
        }
        (true, b"GET" | b"HEAD", _) => ("404 Not Found", "try /metrics\n".to_owned(), TEXT),
        _ => ("405 Method Not Allowed", String::new(), TEXT),
    };
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    if method != b"HEAD" {
        reply.push_str(&body);
    }
    let _ = tcp.write_all(reply.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
