//! The appliance client: pooled mutually authenticated connections, per-appliance back-off,
//! parallel fan-out, and login replay.
//!
//! Each appliance has a small pool of idle [`Connection`]s. A request checks one out
//! (dropping any the appliance has closed meanwhile, see [`Connection::is_stale`]) or
//! connects, brings its login state in line with the module's (the PIN is replayed on a
//! connection that has not seen it), sends the request and checks the connection back in
//! unless the transport failed. A transport failure (connect, handshake, timeout, reset)
//! puts the appliance in back-off for `retry_after_ms`: until then it is not asked at all,
//! so a dead appliance costs one timeout and then nothing until it answers again.
//!
//! Fan-out to appliances that each have a pooled connection ready (logged in as the
//! module is) is pipelined on the calling thread: every request is sent, then every answer
//! read, so the appliances work at once and no thread is started. Otherwise (a connection
//! to open, a login to replay) fan-out runs one scoped thread per appliance asked and
//! joins them all before it returns: no thread outlives a call, none is left after
//! `C_Finalize`. When the application forbids threads
//! (`CKF_LIBRARY_CANT_CREATE_OS_THREADS`) that case makes the requests one after the
//! other. A key generation's requests, which take minutes, go on connections of their own
//! ([`ApplianceClient::fan_out_alone`]): sent to every appliance in turn, then the answers
//! read in turn, on the calling thread whether threads are allowed or not. No lock is held
//! across network I/O: the pool mutex is held only to pop or push a connection.
//!
//! A private operation asks for its k partials with [`ApplianceClient::gather`], which does
//! not wait on a hung appliance: a partial that has not come back within three times the
//! recent 99th percentile of partial latency (bounded by `timeouts.hedge_floor_ms` and
//! `hedge_ceiling_ms`) is also asked of another appliance, on the same thread (`poll` over
//! the connections), and the first k good answers win. The connection to the late
//! appliance goes back to the pool still waiting for its answer, which is read and dropped
//! when it comes; until then, or for `retry_after_ms`, that appliance is asked last.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ittc_wire::client::{Connection, Timeouts};
use ittc_wire::cluster::ClusterConfig;
use ittc_wire::{ErrorCode, Request, Response, SecretBytes, UserKind, WireError};
use rustls::ClientConfig;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Idle connections kept per appliance. A pool only grows to the number of requests an
/// application had in flight at once, so this bounds what a busy multi-threaded client
/// keeps; with 8, sixteen signing threads closed and reopened connections (a TLS handshake
/// each) all the time and signed 12% slower (`ittc-bench`). The appliances close
/// connections left idle for their `limits.idle_timeout_ms`.
const MAX_IDLE: usize = 32;

/// Why one exchange with one appliance produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The appliance is in back-off after an earlier failure.
    #[error("in back-off after an earlier failure")]
    BackedOff,
    /// Connecting or the exchange failed; the appliance is now in back-off.
    #[error("transport: {0}")]
    Transport(#[from] ittc_wire::Error),
    /// The PIN replay on a fresh connection was refused.
    #[error("login replay refused: {0}")]
    Login(WireError),
}

/// The module's login, replayed on every connection that has not seen it.
struct Credentials {
    user: UserKind,
    pin: Zeroizing<Vec<u8>>,
}

struct Pooled {
    conn: Connection,
    login: Option<UserKind>,
}

struct ApplianceState {
    index: u8,
    address: String,
    idle: Mutex<Vec<Pooled>>,
    down_until: Mutex<Option<Instant>>,
    /// When a partial of this appliance was first and last given up on (another
    /// answered instead); cleared by its next answer.
    late_since: Mutex<Option<(Instant, Instant)>>,
}

/// Latencies of recent partials kept for the wait before a hedge.
const LATENCY_SAMPLES: usize = 256;
/// Below this many samples the wait is the ceiling.
const MIN_LATENCY_SAMPLES: usize = 20;

/// The latencies of the most recent partials, any appliance.
#[derive(Default)]
struct Latencies(VecDeque<Duration>);

impl Latencies {
    fn record(&mut self, latency: Duration) {
        if self.0.len() == LATENCY_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(latency);
    }

    /// Three times the 99th percentile, within `[floor, ceiling]`; the ceiling while
    /// fewer than [`MIN_LATENCY_SAMPLES`] are known.
    fn hedge_after(&self, floor: Duration, ceiling: Duration) -> Duration {
        if self.0.len() < MIN_LATENCY_SAMPLES {
            return ceiling;
        }
        let mut sorted: Vec<Duration> = self.0.iter().copied().collect();
        sorted.sort_unstable();
        let at = (sorted.len() * 99).div_ceil(100).saturating_sub(1);
        let p99 = sorted.get(at).copied().unwrap_or(ceiling);
        p99.saturating_mul(3).clamp(floor, ceiling)
    }
}

/// A request in flight on a pooled connection, sent at `sent`.
struct Flight<'a> {
    a: &'a ApplianceState,
    pooled: Pooled,
    sent: Instant,
}

/// The connections to every appliance of one cluster.
pub struct ApplianceClient {
    tls: Arc<ClientConfig>,
    timeouts: Timeouts,
    retry_after: Duration,
    threshold: usize,
    parallel: bool,
    client_name: String,
    appliances: Vec<ApplianceState>,
    credentials: Mutex<Option<Credentials>>,
    rotate: AtomicUsize,
    latencies: Mutex<Latencies>,
    /// Bounds of the wait before a hedge.
    hedge: (Duration, Duration),
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every critical
/// section here leaves the data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ApplianceClient {
    /// Prepares the client of a cluster: loads the TLS identity; connects to nothing yet.
    ///
    /// # Errors
    ///
    /// [`Error::General`] if the TLS files are unusable.
    pub fn new(config: &ClusterConfig, parallel: bool) -> Result<Self> {
        let tls = config
            .identity()
            .and_then(|id| config.client_config_for(&id))
            .map_err(|err| {
                tracing::error!(%err, "client TLS identity unusable");
                Error::General(format!("TLS identity: {err}"))
            })?;
        Ok(Self::with_tls(config, parallel, tls))
    }

    /// A client like this one, with its TLS identity (already loaded) but nothing else: no
    /// connection, no login. For a forked child that initialises again, possibly after
    /// giving up the privileges needed to read the key files.
    pub fn fresh(&self, config: &ClusterConfig, parallel: bool) -> Self {
        Self::with_tls(config, parallel, Arc::clone(&self.tls))
    }

    fn with_tls(config: &ClusterConfig, parallel: bool, tls: Arc<ClientConfig>) -> Self {
        let appliances = config
            .appliances
            .iter()
            .map(|a| ApplianceState {
                index: a.index,
                address: a.address.clone(),
                idle: Mutex::new(Vec::new()),
                down_until: Mutex::new(None),
                late_since: Mutex::new(None),
            })
            .collect();
        Self {
            tls,
            timeouts: config.timeouts.timeouts(),
            retry_after: config.timeouts.retry_after(),
            threshold: usize::from(config.threshold),
            parallel,
            client_name: format!("ittc-pkcs11 {}", env!("CARGO_PKG_VERSION")),
            appliances,
            credentials: Mutex::new(None),
            rotate: AtomicUsize::new(0),
            latencies: Mutex::new(Latencies::default()),
            hedge: config.timeouts.hedge_bounds(),
        }
    }

    /// k, from the configuration.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Every configured appliance index.
    pub fn indices(&self) -> Vec<u8> {
        self.appliances.iter().map(|a| a.index).collect()
    }

    /// The appliances not in back-off, in an order that rotates from call to call so that
    /// load spreads over the cluster; those that were late lately (see [`Self::gather`])
    /// come last.
    pub fn available(&self) -> Vec<u8> {
        let now = Instant::now();
        let mut up: Vec<u8> = self
            .appliances
            .iter()
            .filter(|a| lock(&a.down_until).is_none_or(|until| now >= until))
            .map(|a| a.index)
            .collect();
        if !up.is_empty() {
            let start = self.rotate.fetch_add(1, Ordering::Relaxed) % up.len();
            up.rotate_left(start);
        }
        up.sort_by_key(|&i| self.state(i).is_some_and(|a| self.is_late(a, now)));
        up
    }

    /// Whether `a` left a partial unanswered within the last `retry_after`.
    fn is_late(&self, a: &ApplianceState, now: Instant) -> bool {
        lock(&a.late_since)
            .is_some_and(|(_, last)| now.saturating_duration_since(last) < self.retry_after)
    }

    /// Late, with no answer since, for longer than the hedge ceiling: hung rather than
    /// slow. A new connection to it would wait as long as its pooled ones.
    fn is_hung(&self, a: &ApplianceState, now: Instant) -> bool {
        self.is_late(a, now)
            && lock(&a.late_since)
                .is_some_and(|(first, _)| now.saturating_duration_since(first) >= self.hedge.1)
    }

    /// Remembers the login to replay on connections; `None` forgets it (logout).
    pub fn set_credentials(&self, login: Option<(UserKind, Zeroizing<Vec<u8>>)>) {
        *lock(&self.credentials) = login.map(|(user, pin)| Credentials { user, pin });
    }

    fn state(&self, index: u8) -> Option<&ApplianceState> {
        self.appliances.iter().find(|a| a.index == index)
    }

    fn mark_down(&self, a: &ApplianceState, err: &ittc_wire::Error) {
        tracing::warn!(appliance = a.index, %err, retry_after = ?self.retry_after,
            "appliance unreachable; leaving it alone for a while");
        *lock(&a.down_until) = Instant::now().checked_add(self.retry_after);
        // Its other idle connections are probably dead too.
        lock(&a.idle).clear();
    }

    fn connect(&self, a: &ApplianceState) -> Result<Connection, ittc_wire::Error> {
        let cfg = ittc_wire::cluster::ApplianceEntry {
            index: a.index,
            address: a.address.clone(),
        };
        let addr = cfg.resolve()?;
        Connection::connect(
            addr,
            a.index,
            Arc::clone(&self.tls),
            self.timeouts,
            &self.client_name,
        )
    }

    /// One request to one appliance, on a pooled connection whose login state matches
    /// the module's. `login` overrides the stored credentials (C_Login itself).
    pub fn exchange(
        &self,
        index: u8,
        request: &Request,
    ) -> std::result::Result<Response, ExchangeError> {
        let a = self.state(index).ok_or(ExchangeError::BackedOff)?;
        if lock(&a.down_until).is_some_and(|until| Instant::now() < until) {
            return Err(ExchangeError::BackedOff);
        }
        let pooled = self.pop_live(a, |_| true);
        let mut pooled = match pooled {
            Some(p) => p,
            None => match self.connect(a) {
                Ok(conn) => Pooled { conn, login: None },
                Err(err) => {
                    self.mark_down(a, &err);
                    return Err(err.into());
                }
            },
        };
        let result = self.sync_login(&mut pooled).and_then(|()| {
            pooled
                .conn
                .request(request)
                .map_err(ExchangeError::Transport)
        });
        self.settle(a, pooled, request, result)
    }

    /// After an exchange on `pooled`: the connection back to the pool (unless the
    /// transport failed), the appliance out of back-off or into it, the login state
    /// followed.
    fn settle(
        &self,
        a: &ApplianceState,
        mut pooled: Pooled,
        request: &Request,
        result: std::result::Result<Response, ExchangeError>,
    ) -> std::result::Result<Response, ExchangeError> {
        match result {
            Ok(response) => {
                *lock(&a.down_until) = None;
                *lock(&a.late_since) = None;
                if let (Request::Login { user, .. }, Response::Ok) = (request, &response) {
                    pooled.login = Some(*user);
                }
                if matches!(request, Request::Logout) {
                    pooled.login = None;
                }
                self.check_in(a, pooled);
                Ok(response)
            }
            Err(ExchangeError::Transport(err)) => {
                if pooled.conn.is_broken() || !matches!(err, ittc_wire::Error::Invalid(_)) {
                    self.mark_down(a, &err);
                } else {
                    self.check_in(a, pooled);
                }
                Err(ExchangeError::Transport(err))
            }
            Err(other) => {
                self.check_in(a, pooled);
                Err(other)
            }
        }
    }

    /// A pooled connection to `a` that needs nothing before a request: the appliance is
    /// not in back-off and the connection's login matches the module's.
    fn ready(&self, a: &ApplianceState) -> Option<Pooled> {
        if lock(&a.down_until).is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let wanted = lock(&self.credentials).as_ref().map(|c| c.user);
        self.pop_live(a, |p| p.login == wanted)
    }

    /// The most recently pooled connection to `a` that `fits`, dropping on the way every
    /// connection the appliance has closed meanwhile (its idle timeout): those are not a
    /// failure of the appliance. A connection still waiting for the answer of a request
    /// given up on is taken only once that answer has come; it is read and dropped first.
    fn pop_live(&self, a: &ApplianceState, fits: impl Fn(&Pooled) -> bool) -> Option<Pooled> {
        loop {
            let mut pooled = {
                let mut idle = lock(&a.idle);
                let position = idle
                    .iter()
                    .rposition(|p| fits(p) && (!p.conn.is_awaiting() || p.conn.answer_arrived()))?;
                idle.swap_remove(position)
            };
            if pooled.conn.is_awaiting() {
                // The late answer is here: the appliance answers again.
                if pooled.conn.discard_late_answer().is_err() {
                    continue;
                }
                *lock(&a.late_since) = None;
                tracing::debug!(appliance = a.index, "late answer read and dropped");
            }
            if !pooled.conn.is_stale() {
                return Some(pooled);
            }
            tracing::debug!(
                appliance = a.index,
                "pooled connection closed by the appliance"
            );
        }
    }

    fn check_in(&self, a: &ApplianceState, pooled: Pooled) {
        if pooled.conn.is_broken() {
            return;
        }
        let mut idle = lock(&a.idle);
        if idle.len() < MAX_IDLE {
            idle.push(pooled);
        }
    }

    /// Logs a connection in or out so that it matches the stored credentials.
    fn sync_login(&self, pooled: &mut Pooled) -> std::result::Result<(), ExchangeError> {
        let wanted = {
            let creds = lock(&self.credentials);
            creds
                .as_ref()
                .map(|c| (c.user, SecretBytes::new(c.pin.to_vec())))
        };
        match (wanted, pooled.login) {
            (Some((user, _)), Some(have)) if have == user => Ok(()),
            (None, None) => Ok(()),
            (None, Some(_)) => {
                match pooled.conn.request(&Request::Logout)? {
                    Response::Ok => {}
                    other => tracing::debug!(?other, "logout of a pooled connection"),
                }
                pooled.login = None;
                Ok(())
            }
            (Some((user, pin)), _) => match pooled.conn.request(&Request::Login { user, pin })? {
                Response::Ok => {
                    pooled.login = Some(user);
                    Ok(())
                }
                Response::Error(err) => Err(ExchangeError::Login(err)),
                other => Err(ExchangeError::Transport(ittc_wire::Error::Protocol(
                    format!("answered login with {}", other.kind()),
                ))),
            },
        }
    }

    /// The same request to each of `indices`, in parallel (scoped threads, all joined
    /// before returning) unless threads are forbidden.
    pub fn fan_out(
        &self,
        indices: &[u8],
        request: &Request,
    ) -> Vec<(u8, std::result::Result<Response, ExchangeError>)> {
        self.fan_out_with(indices, |_| request.clone())
    }

    /// Like [`Self::fan_out`], with a request built per appliance.
    pub fn fan_out_with(
        &self,
        indices: &[u8],
        make: impl Fn(u8) -> Request + Sync,
    ) -> Vec<(u8, std::result::Result<Response, ExchangeError>)> {
        if indices.len() <= 1 {
            return indices
                .iter()
                .map(|&i| (i, self.exchange(i, &make(i))))
                .collect();
        }
        let targets: Vec<(&ApplianceState, Option<Pooled>)> = indices
            .iter()
            .filter_map(|&i| self.state(i))
            .map(|a| (a, self.ready(a)))
            .collect();
        if targets.len() == indices.len() && targets.iter().all(|(_, p)| p.is_some()) {
            let ready = targets
                .into_iter()
                .filter_map(|(a, p)| p.map(|p| (a, p)))
                .collect();
            return self.pipelined(ready, &make);
        }
        for (a, pooled) in targets {
            if let Some(pooled) = pooled {
                self.check_in(a, pooled);
            }
        }
        if !self.parallel {
            return indices
                .iter()
                .map(|&i| (i, self.exchange(i, &make(i))))
                .collect();
        }
        in_parallel(indices, |i| self.exchange(i, &make(i)))
    }

    /// Asks `candidates`, in their order, for `request` until `want` answers satisfy
    /// `good`, without waiting on a hung appliance.
    ///
    /// The first `want` are asked at once: on pooled connections that are ready, else as
    /// [`Self::fan_out`] does (connecting and logging in, in parallel where threads are
    /// allowed). An answer that is not good, or a failure, is replaced by asking the next
    /// candidate. When no answer has come for the hedge wait (three times the recent 99th
    /// percentile of good answers' latency, within the configured floor and ceiling), the
    /// next candidate is asked as well, and again after each further wait; the first
    /// `want` good answers win. The wait for answers uses `poll` on this thread, so it
    /// needs no thread of its own. Requests left unanswered once enough have come stay on
    /// their pooled connections, whose appliances count as late (asked last) until they
    /// answer; nothing at all within `request_ms` is a timeout, as elsewhere.
    ///
    /// Returns the answers read, in the order they came, and every appliance asked.
    pub fn gather(
        &self,
        candidates: &[u8],
        want: usize,
        request: &Request,
        good: impl Fn(u8, &Response) -> bool,
    ) -> (Answers, Vec<u8>) {
        let deadline = Instant::now().checked_add(self.timeouts.io);
        let wait = lock(&self.latencies).hedge_after(self.hedge.0, self.hedge.1);
        let mut queue: VecDeque<&ApplianceState> =
            candidates.iter().filter_map(|&i| self.state(i)).collect();
        let mut round = Round {
            answers: Vec::new(),
            asked: Vec::new(),
            good: 0,
            flights: Vec::new(),
        };
        // The first `want`: those with a ready connection first, at once; only if too few
        // have one, the first others through fan_out (connecting, logging in). A hung
        // appliance's connections all wait for answers, so it is not connected to anew
        // (which would wait the same) while others can answer.
        let mut unready = Vec::new();
        while round.flights.len() < want {
            let Some(a) = queue.pop_front() else { break };
            match self.ready(a) {
                Some(pooled) => {
                    round.asked.push(a.index);
                    self.send_in_flight(a, pooled, request, &mut round);
                }
                None => unready.push(a),
            }
        }
        let missing = want.saturating_sub(round.flights.len()).min(unready.len());
        let connect: Vec<u8> = unready.drain(..missing).map(|a| a.index).collect();
        queue.extend(unready);
        if !connect.is_empty() {
            round.asked.extend(&connect);
            for (index, result) in self.fan_out(&connect, request) {
                round.count(index, result, &good);
            }
        }
        let mut next_hedge = Instant::now() + wait;
        loop {
            while round.good + round.flights.len() < want {
                let Some(a) = queue.pop_front() else { break };
                self.start_one(a, request, &good, &mut round);
            }
            let now = Instant::now();
            if round.good >= want || round.flights.is_empty() || deadline.is_some_and(|d| now >= d)
            {
                break;
            }
            let until = if queue.is_empty() {
                deadline
            } else {
                Some(deadline.map_or(next_hedge, |d| d.min(next_hedge)))
            };
            let timeout = until.map_or(self.timeouts.io, |u| u.saturating_duration_since(now));
            let connections: Vec<&Connection> =
                round.flights.iter().map(|f| &f.pooled.conn).collect();
            let arrived =
                ittc_wire::client::readable(&connections, timeout).unwrap_or_else(|err| {
                    tracing::warn!(%err, "poll failed; reading the answers in turn");
                    vec![true; connections.len()]
                });
            if !arrived.contains(&true) {
                let now = Instant::now();
                if now >= next_hedge {
                    if let Some(a) = queue.pop_front() {
                        for f in &round.flights {
                            if now.saturating_duration_since(f.sent) >= wait {
                                mark_late(f.a, now);
                            }
                        }
                        tracing::debug!(
                            hedge = a.index,
                            ?wait,
                            "no answer in time: asking another appliance too"
                        );
                        self.start_one(a, request, &good, &mut round);
                    }
                    next_hedge = now + wait;
                }
                continue;
            }
            let flights = std::mem::take(&mut round.flights);
            for (flight, arrived) in flights.into_iter().zip(arrived) {
                if arrived {
                    self.read_answer(flight, request, &good, &mut round);
                } else {
                    round.flights.push(flight);
                }
            }
        }
        let now = Instant::now();
        for flight in std::mem::take(&mut round.flights) {
            if deadline.is_some_and(|d| now >= d) {
                // Nothing within the whole exchange time: a timeout, as anywhere else.
                let err = ittc_wire::Error::Timeout;
                self.mark_down(flight.a, &err);
                round
                    .answers
                    .push((flight.a.index, Err(ExchangeError::Transport(err))));
            } else {
                // Enough came from others: the connection goes back waiting for its answer.
                if now.saturating_duration_since(flight.sent) >= wait {
                    mark_late(flight.a, now);
                }
                self.check_in(flight.a, flight.pooled);
            }
        }
        (round.answers, round.asked)
    }

    /// Asks `a`: on a ready pooled connection without waiting for the answer, else the
    /// whole exchange now, as [`Self::exchange`] does (connecting and logging in). An
    /// appliance that has been late for longer than the hedge ceiling and has no ready
    /// connection is skipped: it is hung rather than slow, its connections still wait for
    /// earlier answers, and a new one would wait the same. One late for less (slow under
    /// load, say) is asked on a new connection.
    fn start_one<'a>(
        &self,
        a: &'a ApplianceState,
        request: &Request,
        good: &impl Fn(u8, &Response) -> bool,
        round: &mut Round<'a>,
    ) {
        round.asked.push(a.index);
        if let Some(pooled) = self.ready(a) {
            self.send_in_flight(a, pooled, request, round);
        } else if self.is_hung(a, Instant::now()) {
            round.answers.push((a.index, Err(ExchangeError::BackedOff)));
        } else {
            let result = self.exchange(a.index, request);
            round.count(a.index, result, good);
        }
    }

    fn send_in_flight<'a>(
        &self,
        a: &'a ApplianceState,
        mut pooled: Pooled,
        request: &Request,
        round: &mut Round<'a>,
    ) {
        match pooled.conn.send(request) {
            Ok(()) => round.flights.push(Flight {
                a,
                pooled,
                sent: Instant::now(),
            }),
            Err(err) => {
                let result = self.settle(a, pooled, request, Err(ExchangeError::Transport(err)));
                round.answers.push((a.index, result));
            }
        }
    }

    /// Reads an answer that has arrived; a good one's latency goes into the hedge wait.
    fn read_answer(
        &self,
        mut flight: Flight<'_>,
        request: &Request,
        good: &impl Fn(u8, &Response) -> bool,
        round: &mut Round<'_>,
    ) {
        let index = flight.a.index;
        let result = flight
            .pooled
            .conn
            .receive()
            .map_err(ExchangeError::Transport);
        let latency = flight.sent.elapsed();
        let result = self.settle(flight.a, flight.pooled, request, result);
        if result.as_ref().is_ok_and(|r| good(index, r)) {
            lock(&self.latencies).record(latency);
        }
        round.count(index, result, good);
    }

    /// The requests go out one after the other from this thread (a write of a few hundred
    /// bytes each), then the answers are read in the same order: the appliances work at
    /// once, with no thread started and none needed. Every answer is read by the deadline
    /// its request set, so the whole takes at most one `io` timeout.
    fn pipelined(
        &self,
        ready: Vec<(&ApplianceState, Pooled)>,
        make: &impl Fn(u8) -> Request,
    ) -> Vec<(u8, std::result::Result<Response, ExchangeError>)> {
        let sent: Vec<_> = ready
            .into_iter()
            .map(|(a, mut pooled)| {
                let request = make(a.index);
                let sent = pooled.conn.send(&request);
                (a, pooled, request, sent)
            })
            .collect();
        sent.into_iter()
            .map(|(a, mut pooled, request, sent)| {
                let result = sent
                    .and_then(|()| pooled.conn.receive())
                    .map_err(ExchangeError::Transport);
                (a.index, self.settle(a, pooled, &request, result))
            })
            .collect()
    }

    /// A fresh connection of its own to `index` whose exchanges may take `io` (a key
    /// generation runs for minutes), logged in like the pooled ones; never pooled, so the
    /// long timeout stays with it, and closed when dropped. A failure to connect puts the
    /// appliance in back-off; a slow answer later does not.
    fn connect_alone(
        &self,
        index: u8,
        io: Duration,
    ) -> std::result::Result<Connection, ExchangeError> {
        let a = self.state(index).ok_or(ExchangeError::BackedOff)?;
        let entry = ittc_wire::cluster::ApplianceEntry {
            index: a.index,
            address: a.address.clone(),
        };
        let timeouts = Timeouts {
            connect: self.timeouts.connect,
            io,
        };
        let conn = entry.resolve().and_then(|addr| {
            Connection::connect(
                addr,
                a.index,
                Arc::clone(&self.tls),
                timeouts,
                &self.client_name,
            )
        });
        let conn = match conn {
            Ok(conn) => conn,
            Err(err) => {
                self.mark_down(a, &err);
                return Err(err.into());
            }
        };
        let mut pooled = Pooled { conn, login: None };
        self.sync_login(&mut pooled)?;
        Ok(pooled.conn)
    }

    /// Closes every idle pooled connection: after a long wait (a key generation) the
    /// appliances may have closed them for idling, and a request on one would put its
    /// appliance in back-off for nothing.
    pub fn drop_idle(&self) {
        for a in &self.appliances {
            lock(&a.idle).clear();
        }
    }

    /// The same long request to each of `indices` on a connection of its own
    /// (`connect_alone`), all in flight at once and all on the calling thread:
    /// each appliance is connected to (and logged in) and sent the request in turn, then
    /// the answers are read in the same order, each by `io` after its request went out.
    /// No thread is needed, so this works when the application forbids them
    /// (`CKF_LIBRARY_CANT_CREATE_OS_THREADS`, as NSS does).
    pub fn fan_out_alone(
        &self,
        indices: &[u8],
        request: &Request,
        io: Duration,
    ) -> Vec<(u8, std::result::Result<Response, ExchangeError>)> {
        let sent: Vec<_> = indices
            .iter()
            .map(|&index| {
                let conn = self.connect_alone(index, io).and_then(|mut conn| {
                    conn.send(request)?;
                    Ok(conn)
                });
                (index, conn)
            })
            .collect();
        sent.into_iter()
            .map(|(index, conn)| {
                let answer = conn.and_then(|mut conn| Ok(conn.receive()?));
                (index, answer)
            })
            .collect()
    }

    /// Asks the available appliances one after the other until one answers with
    /// something other than a transport failure.
    pub fn ask_any(&self, request: &Request) -> Result<(u8, Response)> {
        for index in self.available() {
            match self.exchange(index, request) {
                Ok(response) => return Ok((index, response)),
                Err(err) => tracing::debug!(appliance = index, %err, "no answer"),
            }
        }
        Err(Error::Device("no appliance answered".into()))
    }
}

/// Answers of several appliances, each with its index.
pub type Answers = Vec<(u8, std::result::Result<Response, ExchangeError>)>;

/// The state of one [`ApplianceClient::gather`].
struct Round<'a> {
    answers: Answers,
    asked: Vec<u8>,
    /// Good answers among `answers`.
    good: usize,
    flights: Vec<Flight<'a>>,
}

impl Round<'_> {
    fn count(
        &mut self,
        index: u8,
        result: std::result::Result<Response, ExchangeError>,
        good: &impl Fn(u8, &Response) -> bool,
    ) {
        if result.as_ref().is_ok_and(|r| good(index, r)) {
            self.good += 1;
        }
        self.answers.push((index, result));
    }
}

/// The module error for an appliance's refusal.
pub fn wire_error(err: &WireError) -> Error {
    match err.code {
        ErrorCode::NotLoggedIn => Error::UserNotLoggedIn,
        ErrorCode::PinIncorrect => Error::PinIncorrect,
        ErrorCode::PinLocked => Error::PinLocked,
        ErrorCode::PinInvalid => Error::PinLenRange,
        ErrorCode::Forbidden => Error::UserNotLoggedIn,
        ErrorCode::NotFound => Error::ObjectHandleInvalid,
        ErrorCode::UnknownKey | ErrorCode::WrongEpoch => Error::KeyHandleInvalid,
        ErrorCode::UnsupportedVersion
        | ErrorCode::BadRequest
        | ErrorCode::FrameTooLarge
        | ErrorCode::AlreadyExists
        | ErrorCode::Busy
        | ErrorCode::Internal
        | ErrorCode::Superseded => Error::Device(err.to_string()),
    }
}

/// Notes that a partial of `a` was given up on at `now`.
fn mark_late(a: &ApplianceState, now: Instant) {
    let mut late = lock(&a.late_since);
    match late.as_mut() {
        Some((_, last)) => *last = now,
        None => *late = Some((now, now)),
    }
}

/// Runs `f` for each index on its own scoped thread; all are joined before this returns,
/// so no thread outlives the call.
fn in_parallel(
    indices: &[u8],
    f: impl Fn(u8) -> std::result::Result<Response, ExchangeError> + Sync,
) -> Vec<(u8, std::result::Result<Response, ExchangeError>)> {
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = indices
            .iter()
            .map(|&i| (i, scope.spawn(move || f(i))))
            .collect();
        handles
            .into_iter()
            .map(|(i, h)| {
                let result = h.join().unwrap_or_else(|_| {
                    Err(ExchangeError::Transport(ittc_wire::Error::Protocol(
                        "request thread panicked".into(),
                    )))
                });
                (i, result)
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hedge_wait_is_three_times_the_p99_within_its_bounds() {
        let ms = Duration::from_millis;
        let (floor, ceiling) = (ms(20), ms(300));
        let mut latencies = Latencies::default();
        // Too few samples: the ceiling.
        for _ in 0..MIN_LATENCY_SAMPLES - 1 {
            latencies.record(ms(4));
        }
        assert_eq!(latencies.hedge_after(floor, ceiling), ceiling);
        // 4 ms everywhere: 12 ms, raised to the floor.
        latencies.record(ms(4));
        assert_eq!(latencies.hedge_after(floor, ceiling), floor);
        // 99 at 5 ms and one at 40 ms: the p99 is 5 ms. One more at 40 ms makes it 40 ms,
        // and the wait three times that, 120 ms.
        let mut latencies = Latencies::default();
        for i in 0..100 {
            latencies.record(if i == 50 { ms(40) } else { ms(5) });
        }
        assert_eq!(latencies.hedge_after(floor, ceiling), floor);
        latencies.record(ms(40));
        assert_eq!(latencies.hedge_after(floor, ceiling), ms(120));
        // A slow spell: the ceiling bounds it; the window forgets after 256 samples.
        for _ in 0..10 {
            latencies.record(ms(500));
        }
        assert_eq!(latencies.hedge_after(floor, ceiling), ceiling);
        for _ in 0..LATENCY_SAMPLES {
            latencies.record(ms(5));
        }
        assert_eq!(latencies.hedge_after(floor, ceiling), floor);
    }
}
