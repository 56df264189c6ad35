//! The accept loop and the connection loop: TLS handshake, identity, frames in and out,
//! every step under a timeout, a cap on connections and on partial operations, and a
//! graceful stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ittc_wire::frame::{HEADER_LEN, body_len};
use ittc_wire::identity::{Identity, Role, identity_from_cert};
use ittc_wire::revocation::certificate_serial;
use ittc_wire::{ErrorCode, Request, Response, WireError, codec, write_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info, info_span, warn};
use zeroize::Zeroizing;

use crate::error::ApplianceError;
use crate::handlers::dispatch;
use crate::metrics::Outcome;
use crate::refusals::{Refusal, Refusals};
use crate::state::{Session, State};

/// Numbers the requests this process serves, for its logs.
static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// The connections in their TLS handshake, oldest first, each with the signal that closes
/// it. At most `max_handshakes`: a new one closes the oldest.
struct Handshakes {
    next: u64,
    waiting: BTreeMap<u64, Arc<Notify>>,
    max: usize,
}

impl Handshakes {
    /// Registers a new connection; signals the oldest to close if that makes one too
    /// many.
    fn enter(registry: &Arc<Mutex<Self>>) -> InHandshake {
        let signal = Arc::new(Notify::new());
        let mut this = registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = this.next;
        this.next += 1;
        this.waiting.insert(id, Arc::clone(&signal));
        if this.waiting.len() > this.max
            && let Some((_, oldest)) = this.waiting.pop_first()
        {
            // Stored if the oldest is not waiting on it yet: it closes when it does.
            oldest.notify_one();
        }
        InHandshake {
            id,
            signal,
            registry: Arc::clone(registry),
        }
    }
}

/// A connection's place among the handshakes; leaves when dropped.
struct InHandshake {
    id: u64,
    signal: Arc<Notify>,
    registry: Arc<Mutex<Handshakes>>,
}

impl Drop for InHandshake {
    fn drop(&mut self) {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .waiting
            .remove(&self.id);
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets each connection finish the
/// request it is handling (within the configured grace period), flushes the store and
/// returns.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = state.config.limits.clone();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Mutex::new(Handshakes {
        next: 0,
        waiting: BTreeMap::new(),
        max: limits.max_handshakes,
    }));
    let refusals = Arc::clone(&state.refusals);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    refusals.note(Refusal::AcceptFailed, &e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set does not grow without end.
        while tasks.try_join_next().is_some() {}
        let handshake = Handshakes::enter(&handshakes);
        let (state, acceptor, stop) = (state.clone(), acceptor.clone(), stop_rx.clone());
        let (refusals, connections) = (Arc::clone(&refusals), Arc::clone(&connections));
        let span = info_span!("conn", %peer);
        tasks.spawn(
            async move {
                let peer = Peer {
                    address: peer,
                    refusals: &refusals,
                };
                connection(state, acceptor, tcp, peer, handshake, connections, stop).await;
            }
            .instrument(span),
        );
    }
    while tasks.try_join_next().is_some() {}
    info!(
        connections = tasks.len(),
        "shutting down: finishing in-flight requests"
    );
    let _ = stop_tx.send(true);
    if timeout(limits.shutdown_grace(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!("grace period over: closing the remaining connections");
        tasks.shutdown().await;
    }
    if let Err(e) = state.storage.flush() {
        warn!(error = %e, "final flush failed");
    }
    info!("stopped");
}

/// The peer of a connection, and where its refusals are noted.
struct Peer<'a> {
    address: SocketAddr,
    refusals: &'a Refusals,
}

impl Peer<'_> {
    fn refuse(&self, kind: Refusal, why: impl std::fmt::Display) {
        self.refusals
            .note(kind, &format_args!("{why} (peer {})", self.address));
    }
}

async fn connection(
    state: Arc<State>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: Peer<'_>,
    handshake: InHandshake,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = &state.config.limits;
    let accepted = tokio::select! {
        accepted = timeout(limits.handshake_timeout(), acceptor.accept(tcp)) => accepted,
        () = handshake.signal.notified() => {
            peer.refuse(Refusal::HandshakeEvicted, "newer handshakes waiting");
            return;
        }
    };
    drop(handshake);
    let mut tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            peer.refuse(Refusal::HandshakeFailed, e);
            return;
        }
        Err(_) => {
            peer.refuse(Refusal::HandshakeTimeout, "no certificate in time");
            return;
        }
    };
    // Authenticated: one of `max_connections`, held until the connection closes.
    let Ok(_permit) = connections.try_acquire_owned() else {
        peer.refuse(Refusal::TooManyConnections, "all connections in use");
        return;
    };
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    let identity = match certificate.as_deref().map(identity_from_cert) {
        Some(Ok(identity)) => identity,
        Some(Err(e)) => {
            peer.refuse(Refusal::NoRole, e);
            return;
        }
        None => {
            peer.refuse(Refusal::NoRole, "no client certificate");
            return;
        }
    };
    // The deny-list: a revoked certificate's first request is answered with the refusal
    // (so that the peer reads why), within the read timeout, and the connection closes.
    let Some(Ok(serial)) = certificate.as_deref().map(certificate_serial) else {
        peer.refuse(Refusal::NoRole, "no readable serial in the certificate");
        return;
    };
    // The role and index as fields of their own, for JSON logs (`log.format`).
    let (role, index) = match identity.role {
        Role::Appliance(i) => ("appliance", Some(i)),
        Role::Client => ("client", None),
        Role::Admin => ("admin", None),
    };
    let span = info_span!("peer", who = %identity, role, index);
    if state.deny_list.check(&serial) {
        async {
            let refusal = refuse_revoked(&state, &identity, &serial).await;
            if let Ok(Ok(Some(_))) =
                timeout(limits.read_timeout(), read_request(&mut tls, &state, &peer)).await
            {
                let _ = timeout(limits.write_timeout(), write_frame(&mut tls, &refusal)).await;
            }
            let _ = timeout(Duration::from_secs(1), tls.shutdown()).await;
        }
        .instrument(span)
        .await;
        return;
    }
    let mut session = Session::new(identity, peer.address);
    let _counted = state.metrics.connected(role);
    async {
        info!("connected");
        loop {
            let request = tokio::select! {
                biased;
                _ = stop.changed() => break,
                r = read_request(&mut tls, &state, &peer) => r,
            };
            let (response, close) = match request {
                Ok(None) => break,
                // Revoked while connected: refused from the next request on.
                Ok(Some(_)) if state.deny_list.check(&serial) => (
                    refuse_revoked(&state, &session.identity, &serial).await,
                    true,
                ),
                Ok(Some(Ok(request))) => {
                    let kind = request.kind();
                    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
                    let (response, returned, close) = handle(&state, session, request)
                        .instrument(info_span!("request", id, kind))
                        .await;
                    session = returned;
                    (response, close)
                }
                Ok(Some(Err(error))) => (Response::Error(error), false),
                Err(ReadFailure::Refuse(error)) => (Response::Error(error), true),
                Err(ReadFailure::Drop(reason)) => {
                    debug!(reason, "connection closed");
                    break;
                }
            };
            match timeout(limits.write_timeout(), write_frame(&mut tls, &response)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!(error = %e, "write failed");
                    break;
                }
                Err(_) => {
                    warn!("write timed out");
                    break;
                }
            }
            if close || *stop.borrow() {
                break;
            }
        }
        let _ = timeout(Duration::from_secs(1), tls.shutdown()).await;
        info!("disconnected");
    }
    .instrument(span)
    .await;
}

/// Logs and audits the refusal of a revoked certificate (on the blocking pool: the audit
/// entry is flushed) and returns the answer the peer gets.
async fn refuse_revoked(state: &Arc<State>, identity: &Identity, serial: &[u8]) -> Response {
    let (state, who, serial) = (state.clone(), identity.to_string(), serial.to_vec());
    let _ = tokio::task::spawn_blocking(move || state.deny_list.refused(&who, &serial, "connect"))
        .await;
    Response::Error(WireError::new(
        ErrorCode::Forbidden,
        "certificate revoked: this appliance refuses the certificate presented",
    ))
}

enum ReadFailure {
    /// Answer with this error, then close: the stream cannot be trusted to stay in frame.
    Refuse(WireError),
    /// Close without answering (timeout, reset, end of stream mid-frame).
    Drop(&'static str),
}

/// Reads one request: `Ok(None)` at a clean end of stream, `Ok(Some(Err))` for a frame that
/// does not decode (answered, and the connection goes on), `Err` when the connection must
/// close.
async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    state: &State,
    peer: &Peer<'_>,
) -> Result<Option<Result<Request, WireError>>, ReadFailure> {
    let limits = &state.config.limits;
    let mut header = [0u8; HEADER_LEN];
    // Idle: waiting for the next request to start.
    match timeout(limits.idle_timeout(), stream.read(&mut header[..1])).await {
        Err(_) => return Err(ReadFailure::Drop("idle timeout")),
        Ok(Ok(0)) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err(ReadFailure::Drop("read error")),
    }
    // Reading: the rest of the frame must follow promptly.
    let deadline = tokio::time::Instant::now() + limits.read_timeout();
    let read_rest = tokio::time::timeout_at(deadline, stream.read_exact(&mut header[1..])).await;
    if !matches!(read_rest, Ok(Ok(_))) {
        return Err(ReadFailure::Drop("incomplete frame header"));
    }
    let len = match body_len(header) {
        Ok(len) if len <= limits.max_frame => len,
        Ok(len) => {
            peer.refuse(
                Refusal::FrameTooLarge,
                format_args!("{len} bytes, the limit is {}", limits.max_frame),
            );
            return Err(ReadFailure::Refuse(too_large(len, limits.max_frame)));
        }
        Err(e) => {
            peer.refuse(Refusal::BadFrameHeader, &e);
            return Err(ReadFailure::Refuse(WireError::new(
                ErrorCode::FrameTooLarge,
                e.to_string(),
            )));
        }
    };
    let mut body = Zeroizing::new(vec![0u8; len]);
    match tokio::time::timeout_at(deadline, stream.read_exact(&mut body)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err(ReadFailure::Drop("end of stream inside a frame")),
        Err(_) => return Err(ReadFailure::Drop("read timeout inside a frame")),
    }
    Ok(Some(codec::decode::<Request>(&body).map_err(|e| {
        peer.refuse(Refusal::Undecodable, &e);
        WireError::new(ErrorCode::BadRequest, format!("undecodable request: {e}"))
    })))
}

fn too_large(len: usize, max: usize) -> WireError {
    WireError::new(
        ErrorCode::FrameTooLarge,
        format!("frame of {len} bytes, the limit is {max}"),
    )
}

/// Runs a request ([`run`]), then logs and counts how it ended: in the span of its id, kind
/// and peer, successes at debug level (one line per partial would cost the throughput),
/// refusals at info, failures at warn. The third value says whether to close the
/// connection.
async fn handle(
    state: &Arc<State>,
    session: Session,
    request: Request,
) -> (Response, Session, bool) {
    let kind = request.kind();
    let started = Instant::now();
    let handling = state.metrics.handling();
    let (result, session, close) = run(state, session, request).await;
    drop(handling);
    match result {
        Ok(response) => {
            debug!(outcome = "ok", "done");
            let elapsed = started.elapsed();
            state.metrics.request(kind, Outcome::Ok, elapsed, false);
            (response, session, close)
        }
        Err(err) => {
            let wire = err.to_wire();
            let code = wire.code;
            let outcome = Outcome::of(code);
            if outcome == Outcome::Failed {
                warn!(outcome = "failed", ?code, error = %err, "failed");
            } else {
                info!(outcome = "refused", ?code, error = %err, "refused");
            }
            let locked = matches!(err, ApplianceError::PinIncorrect { remaining: 0 });
            state
                .metrics
                .request(kind, outcome, started.elapsed(), locked);
            (Response::Error(wire), session, close)
        }
    }
}

/// Runs a request: a partial operation on this runtime worker, anything else on the
/// blocking pool. A partial is admitted first: at most `max_inflight_partials` at once,
/// else `Busy`, and at most `partial_workers` running; the runtime has one worker more than
/// that, so handshakes, reads, writes and timers always have a thread (see `lib::run`).
/// The third value says whether to close the connection (after a handler's panic).
async fn run(
    state: &Arc<State>,
    session: Session,
    request: Request,
) -> (Result<Response, ApplianceError>, Session, bool) {
    let fallback = session.clone();
    let outcome = if matches!(request, Request::Partial { .. }) {
        let _admitted = match state.inflight.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let busy = ApplianceError::Busy(state.config.limits.max_inflight_partials);
                return (Err(busy), session, false);
            }
        };
        let Ok(_worker) = state.workers.acquire().await else {
            let err = ApplianceError::Internal("worker pool closed".into());
            return (Err(err), session, true);
        };
        // The exponentiation runs on the thread the request woke. Handing it to the
        // blocking pool costs two more thread wake-ups per partial, and on a busy machine
        // each may wait behind another exponentiation while a core idles (measured in
        // docs/performance.md). It blocks this worker for one exponentiation, which the
        // extra worker covers.
        run_handler(state, session, request)
    } else {
        let state = state.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _in_request = span.enter();
            run_handler(&state, session, request)
        })
        .await
        .unwrap_or_else(|join| Err(join.to_string()))
    };
    match outcome {
        Ok((result, session)) => (result, session, false),
        Err(panic) => {
            // A handler panicked (a bug): answer, then close the connection. The panic's
            // message goes to the log only (the wire hides an internal error's text).
            let err = ApplianceError::Internal(format!("handler panicked: {panic}"));
            (Err(err), fallback, true)
        }
    }
}

/// [`dispatch`] with the session it may change, or what a panic in it said.
type HandlerOutcome = Result<(Result<Response, ApplianceError>, Session), String>;

fn run_handler(state: &State, mut session: Session, request: Request) -> HandlerOutcome {
    std::panic::catch_unwind(AssertUnwindSafe(move || {
        let result = dispatch(state, &mut session, request);
        (result, session)
    }))
    .map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a handler panicked".to_owned())
    })
}
