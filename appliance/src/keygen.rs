//! Dealerless key generation with the peers (`GenerateKey`).
//!
//! The coordinator (the `ittc` CLI, or the PKCS#11 module for a logged-in user) sends the
//! same [`KeygenSpec`] to every participant at once. Each appliance runs its own
//! [`Party`] of the Boneh–Franklin protocol (`ittc_threshold::keygen`) in the request's
//! handler thread, and carries the round messages itself: it connects to each other
//! participant as `appliance-<i>` (its own certificate is a client certificate too) and
//! sends [`Request::KeygenRound`]; the receiving appliance queues the message in the
//! session's inbox ([`Keygens`]) and answers `Ok`. A message for a session the recipient has
//! not registered yet (its `GenerateKey` is still on the way) is answered `NotFound` and
//! sent again shortly, until the deadline.
//!
//! Failure: any error (a bad message, an unreachable peer, a peer that stops answering a
//! liveness probe, the deadline) ends the run. The appliance tells the others
//! ([`Request::KeygenAbort`], best effort), drops its party (which zeroizes its secrets),
//! removes the session and answers the coordinator with the reason. Nothing is stored
//! before the protocol has finished; then only the final share is stored, as the key's
//! pending epoch, exactly like an imported share. The coordinator checks the shares with a
//! trial operation and commits, or deletes the key everywhere.
//!
//! Progress: each session keeps its party's public counters (`Party::stats`, updated after
//! every step) and its start time; [`Keygens::progress`] answers
//! [`Request::KeygenProgress`] from those under a short lock of their own, never waiting
//! for the protocol.
//!
//! Nothing secret is logged: traces name rounds, phases, peers and counts only. Round
//! messages travel and wait in [`SecretBytes`] (zeroized on drop).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ittc_threshold::keygen::{
    KeygenOutput, KeygenParams, KeygenStats, Message, Party, Recipient, Step,
};
use ittc_wire::client::{Connection, Timeouts};
use ittc_wire::limits::MAX_KEYGEN_MESSAGE_LEN;
use ittc_wire::{ErrorCode, KeyId, KeygenProgress, KeygenSpec, Request, Response, SecretBytes};
use tracing::{debug, info, warn};

use crate::error::ApplianceError;
use crate::state::State;

/// How often a waiting party checks that the peers it waits for are still there.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long before a message for a session the peer does not know yet is sent again.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// Time limits of a peer connection (each round message is queued, not processed, by the
/// recipient before it answers).
const PEER_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    io: Duration::from_secs(30),
};
/// Room in a frame for everything around the encoded message.
const FRAME_MARGIN: usize = 64 * 1024;

/// The key generations in progress on this appliance, by session id.
#[derive(Default)]
pub struct Keygens {
    sessions: Mutex<HashMap<[u8; 16], Arc<Session>>>,
    /// Sessions a peer aborted before this appliance registered them (newest last, at
    /// most [`MAX_TOMBSTONES`]): registering one fails at once.
    aborted: Mutex<Vec<[u8; 16]>>,
    /// Keys generated here whose pending epoch is not committed or deleted yet: the
    /// coordinator, even a logged-in user, may run the trial on, commit or delete these.
    /// In memory only: after a restart only the admin can finish or delete such a key.
    generated: Mutex<HashSet<KeyId>>,
}

/// Aborted-before-registered sessions remembered.
const MAX_TOMBSTONES: usize = 64;
/// Longest a round message is offered to a peer that does not know the session.
const UNKNOWN_SESSION_PATIENCE: Duration = Duration::from_secs(30);

/// One generation's inbox: the round messages received from the peers, at most two
/// rounds' worth (the one being waited for and the next); and its progress.
pub struct Session {
    me: u8,
    parties: u8,
    inbox: Mutex<Inbox>,
    ready: Condvar,
    /// When the session was registered.
    started: Instant,
    /// The party's counters after its last step (public). A lock of its own, held only to
    /// copy them, so that a progress request never waits behind the inbox.
    stats: Mutex<KeygenStats>,
}

#[derive(Default)]
struct Inbox {
    /// The round the party waits for (or will wait for next).
    round: u32,
    /// `(round, sender)` → encoded message.
    messages: BTreeMap<(u32, u8), SecretBytes>,
    /// Why a peer gave up, if one did.
    aborted: Option<String>,
}

/// A registered session; dropping it removes the session (and drops what its inbox holds).
pub struct Registration<'a> {
    keygens: &'a Keygens,
    id: [u8; 16],
    session: Arc<Session>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.keygens.sessions.lock() {
            sessions.remove(&self.id);
        }
    }
}

fn poisoned<T>(_: T) -> ApplianceError {
    ApplianceError::Internal("key-generation state lock poisoned".into())
}

impl Keygens {
    /// Remembers that `key_id`'s pending epoch was generated here.
    pub fn mark_generated(&self, key_id: &KeyId) {
        if let Ok(mut g) = self.generated.lock() {
            g.insert(key_id.clone());
        }
    }

    /// Whether `key_id` was generated here and is not committed or deleted yet.
    pub fn is_generated(&self, key_id: &KeyId) -> bool {
        self.generated.lock().is_ok_and(|g| g.contains(key_id))
    }

    /// Forgets `key_id` (committed or deleted).
    pub fn forget(&self, key_id: &KeyId) {
        if let Ok(mut g) = self.generated.lock() {
            g.remove(key_id);
        }
    }

    /// Registers a new session for appliance `me` of `parties`; at most `max` at once.
    ///
    /// # Errors
    ///
    /// `Busy` when `max` sessions run; `BadRequest` for a session id in use.
    pub fn register(
        &self,
        id: [u8; 16],
        me: u8,
        parties: u8,
        max: usize,
    ) -> Result<Registration<'_>, ApplianceError> {
        if self.aborted.lock().map_err(poisoned)?.contains(&id) {
            return Err(ApplianceError::Keygen(
                "another participant gave up on this key generation already".into(),
            ));
        }
        let mut sessions = self.sessions.lock().map_err(poisoned)?;
        if sessions.contains_key(&id) {
            return Err(ApplianceError::BadRequest(
                "a key generation with this session id is running".into(),
            ));
        }
        if sessions.len() >= max {
            return Err(ApplianceError::Keygen(format!(
                "busy: {max} key generations are running"
            )));
        }
        let session = Arc::new(Session {
            me,
            parties,
            inbox: Mutex::new(Inbox::default()),
            ready: Condvar::new(),
            started: Instant::now(),
            stats: Mutex::new(KeygenStats::default()),
        });
        sessions.insert(id, session.clone());
        Ok(Registration {
            keygens: self,
            id,
            session,
        })
    }

    fn find(&self, id: &[u8; 16]) -> Result<Arc<Session>, ApplianceError> {
        self.sessions
            .lock()
            .map_err(poisoned)?
            .get(id)
            .cloned()
            .ok_or(ApplianceError::NoSession)
    }

    /// Queues peer `from`'s message of `round` (`KeygenRound`).
    ///
    /// # Errors
    ///
    /// `NoSession` (`NotFound` on the wire: the sender tries again) for an unknown session;
    /// `Forbidden`-like `BadRequest` for a sender that is not a participant, a round that is
    /// neither the awaited one nor the next, or a second message for the same round.
    pub fn deliver(
        &self,
        id: &[u8; 16],
        from: u8,
        round: u32,
        message: SecretBytes,
    ) -> Result<(), ApplianceError> {
        let session = self.find(id)?;
        if from == 0 || from > session.parties || from == session.me {
            return Err(ApplianceError::BadRequest(format!(
                "appliance {from} is not another participant of this key generation"
            )));
        }
        let mut inbox = session.inbox.lock().map_err(poisoned)?;
        if inbox.aborted.is_some() {
            return Ok(());
        }
        if round < inbox.round || round > inbox.round.saturating_add(1) {
            return Err(ApplianceError::BadRequest(format!(
                "round {round} message while waiting for round {}",
                inbox.round
            )));
        }
        if inbox.messages.contains_key(&(round, from)) {
            return Err(ApplianceError::BadRequest(format!(
                "a second round {round} message from appliance {from}"
            )));
        }
        inbox.messages.insert((round, from), message);
        drop(inbox);
        session.ready.notify_all();
        Ok(())
    }

    /// The counters of session `id` so far (`KeygenProgress`): public, and read without
    /// waiting for the protocol.
    ///
    /// # Errors
    ///
    /// `NoSession` (`NotFound` on the wire) for a session not running here: not registered
    /// yet, or over (finished or failed).
    pub fn progress(&self, id: &[u8; 16]) -> Result<KeygenProgress, ApplianceError> {
        let session = self.find(id)?;
        let stats = *session.stats.lock().map_err(poisoned)?;
        Ok(KeygenProgress {
            batches: stats.batches,
            candidates: stats.candidates,
            biprimality_tests: stats.biprimality_tests,
            rounds: stats.rounds,
            elapsed_ms: u64::try_from(session.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Peer `from` gave up (`KeygenAbort`): the waiting party stops with `reason`.
    ///
    /// # Errors
    ///
    /// `NoSession` for an unknown (or already finished) session.
    pub fn abort(&self, id: &[u8; 16], from: u8, reason: &str) -> Result<(), ApplianceError> {
        let session = match self.find(id) {
            Ok(session) => session,
            Err(e) => {
                let mut aborted = self.aborted.lock().map_err(poisoned)?;
                if aborted.len() >= MAX_TOMBSTONES {
                    aborted.remove(0);
                }
                aborted.push(*id);
                return Err(e);
            }
        };
        if from == 0 || from > session.parties || from == session.me {
            return Err(ApplianceError::BadRequest(format!(
                "appliance {from} is not another participant of this key generation"
            )));
        }
        let mut inbox = session.inbox.lock().map_err(poisoned)?;
        inbox.messages.clear();
        inbox
            .aborted
            .get_or_insert_with(|| format!("appliance {from} gave up: {reason}"));
        drop(inbox);
        session.ready.notify_all();
        Ok(())
    }
}

/// What [`Session::take`] found.
enum Taken {
    /// One message of the round from every other party.
    All(Vec<(u8, SecretBytes)>),
    /// Still missing these senders when the wait ended.
    Missing(Vec<u8>),
}

impl Session {
    fn lock(&self) -> Result<MutexGuard<'_, Inbox>, String> {
        self.inbox
            .lock()
            .map_err(|_| "key-generation state lock poisoned".to_owned())
    }

    fn aborted(&self) -> Option<String> {
        self.lock().ok().and_then(|inbox| inbox.aborted.clone())
    }

    /// Records the party's counters after a step, for [`Keygens::progress`].
    fn record(&self, stats: KeygenStats) {
        if let Ok(mut s) = self.stats.lock() {
            *s = stats;
        }
    }

    /// Waits until `until` for every other party's message of `round`.
    fn take(&self, round: u32, until: Instant) -> Result<Taken, String> {
        let mut inbox = self.lock()?;
        inbox.round = inbox.round.max(round);
        loop {
            if let Some(reason) = &inbox.aborted {
                return Err(reason.clone());
            }
            let have: Vec<u8> = inbox
                .messages
                .range((round, 0)..=(round, u8::MAX))
                .map(|((_, from), _)| *from)
                .collect();
            if have.len() + 1 == usize::from(self.parties) {
                let mut taken = Vec::with_capacity(have.len());
                for from in have {
                    if let Some(m) = inbox.messages.remove(&(round, from)) {
                        taken.push((from, m));
                    }
                }
                inbox.round = round.saturating_add(1);
                return Ok(Taken::All(taken));
            }
            let now = Instant::now();
            if now >= until {
                let missing = (1..=self.parties)
                    .filter(|j| *j != self.me && !have.contains(j))
                    .collect();
                return Ok(Taken::Missing(missing));
            }
            inbox = self
                .ready
                .wait_timeout(inbox, until - now)
                .map_err(|_| "key-generation state lock poisoned".to_owned())?
                .0;
        }
    }
}

/// The largest candidate batch whose biggest message (three field elements per candidate,
/// to one peer) fits a frame of `max_frame` bytes.
fn batch_for(params: &KeygenParams, max_frame: usize) -> usize {
    let field_len = params.field_modulus().bits().div_ceil(8) as usize;
    let room = max_frame
        .min(MAX_KEYGEN_MESSAGE_LEN)
        .saturating_sub(FRAME_MARGIN);
    (room / (3 * field_len + 16)).min(params.batch)
}

/// Checks `spec` against this appliance and its configuration; returns the protocol
/// parameters.
fn params_for(state: &State, spec: &KeygenSpec) -> Result<KeygenParams, ApplianceError> {
    let me = state.config.index;
    let n = spec.participants.len();
    if usize::from(me) > n {
        return Err(ApplianceError::BadRequest(format!(
            "appliance {me} is not among the participants 1..={n}"
        )));
    }
    let min = state.config.keygen.min_bits;
    if !spec.bits.is_multiple_of(1024) || spec.bits < min || spec.bits > 4096 {
        return Err(ApplianceError::BadRequest(format!(
            "modulus size {} not offered (multiples of 1024 bits from {min} to 4096)",
            spec.bits
        )));
    }
    let mut params = KeygenParams::new(
        usize::from(spec.bits),
        spec.public_exponent,
        n,
        usize::from(spec.threshold),
    )
    .map_err(|e| ApplianceError::BadRequest(e.to_string()))?;
    params.batch = batch_for(&params, state.config.limits.max_frame);
    if params.batch == 0 {
        return Err(ApplianceError::BadRequest(
            "limits.max_frame is too small for key generation at this size".into(),
        ));
    }
    if state.storage.key(&spec.key_id)?.is_some() {
        return Err(ApplianceError::Keygen(format!(
            "a key with id {} exists already",
            spec.key_id
        )));
    }
    Ok(params)
}

/// One peer: where it is and the connection to it, opened on first use.
struct Peer {
    index: u8,
    address: String,
    connection: Option<Connection>,
}

impl Peer {
    fn connection(
        &mut self,
        config: &Arc<rustls::ClientConfig>,
    ) -> Result<&mut Connection, String> {
        if self.connection.as_ref().is_some_and(Connection::is_broken) {
            self.connection = None;
        }
        if self.connection.is_none() {
            let addr: SocketAddr = self
                .address
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    format!(
                        "appliance {}: address {:?} does not resolve",
                        self.index, self.address
                    )
                })?;
            let c = Connection::connect(
                addr,
                self.index,
                config.clone(),
                PEER_TIMEOUTS,
                "ittc-appliance keygen",
            )
            .map_err(|e| format!("appliance {} unreachable: {e}", self.index))?;
            self.connection = Some(c);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| format!("appliance {} unreachable", self.index))
    }

    /// Sends one round message, again while the peer does not know the session yet.
    fn send(
        &mut self,
        config: &Arc<rustls::ClientConfig>,
        request: &Request,
        session: &Session,
        until: Instant,
    ) -> Result<(), String> {
        let index = self.index;
        let patience = Instant::now() + UNKNOWN_SESSION_PATIENCE;
        loop {
            let answer = self
                .connection(config)?
                .request(request)
                .map_err(|e| format!("appliance {index} stopped answering: {e}"))?;
            match answer {
                Response::Ok => return Ok(()),
                Response::Error(e) if e.code == ErrorCode::NotFound => {
                    if let Some(reason) = session.aborted() {
                        return Err(reason);
                    }
                    if Instant::now() >= until.min(patience) {
                        return Err(format!(
                            "appliance {index} does not take part in this key generation"
                        ));
                    }
                    std::thread::sleep(RETRY_INTERVAL);
                }
                Response::Error(e) => return Err(format!("appliance {index} refused: {e}")),
                other => {
                    return Err(format!(
                        "appliance {index} answered a round message with {}",
                        other.kind()
                    ));
                }
            }
        }
    }

    /// Whether the peer still answers (a `Status` on the open connection).
    fn probe(&mut self, config: &Arc<rustls::ClientConfig>) -> Result<(), String> {
        let index = self.index;
        match self.connection(config)?.request(&Request::Status) {
            Ok(Response::Status(_)) => Ok(()),
            Ok(other) => Err(format!(
                "appliance {index} answered a status request with {}",
                other.kind()
            )),
            Err(e) => Err(format!("appliance {index} stopped answering: {e}")),
        }
    }
}

/// Runs this appliance's party of the generation `spec` to the end. On success the caller
/// stores the share; on failure the peers have been told and every secret is dropped.
///
/// # Errors
///
/// `BadRequest` for a spec this appliance refuses; `Keygen` with the reason when the run
/// fails (a peer's error, an unreachable or silent peer, the deadline, a bad message).
pub fn generate(
    state: &State,
    spec: &KeygenSpec,
) -> Result<(KeygenOutput, Duration), ApplianceError> {
    let started = Instant::now();
    let until = started + state.config.keygen.timeout();
    let params = params_for(state, spec)?;
    let config = state
        .peer_client
        .clone()
        .ok_or_else(|| ApplianceError::Internal("no peer TLS configuration".into()))?;
    let me = state.config.index;
    let n = u8::try_from(params.parties)
        .map_err(|_| ApplianceError::BadRequest("too many participants".into()))?;
    let mut peers: Vec<Peer> = spec
        .participants
        .iter()
        .filter(|p| p.index != me)
        .map(|p| Peer {
            index: p.index,
            address: state
                .config
                .peers
                .iter()
                .find(|c| c.index == p.index)
                .map_or_else(|| p.address.clone(), |c| c.address.clone()),
            connection: None,
        })
        .collect();
    let registration =
        state
            .keygen
            .register(spec.session, me, n, state.config.keygen.max_sessions)?;
    info!(
        bits = spec.bits,
        parties = n,
        threshold = spec.threshold,
        batch = params.batch,
        "key generation started"
    );
    let outcome = run(
        &params,
        me,
        spec.session,
        &registration.session,
        &mut peers,
        &config,
        until,
    );
    match outcome {
        Ok(output) => {
            info!(
                batches = output.stats.batches,
                candidates = output.stats.candidates,
                biprimality_tests = output.stats.biprimality_tests,
                rounds = output.stats.rounds,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "key generation finished"
            );
            Ok((output, started.elapsed()))
        }
        Err(reason) => {
            warn!(reason = %reason, "key generation failed: telling the other participants");
            abort_peers(&mut peers, &config, spec.session, me, &reason);
            drop(registration);
            Err(ApplianceError::Keygen(reason))
        }
    }
}

/// The protocol loop: step, send, wait for the next round. Every error is a reason
/// string that names no secret.
fn run(
    params: &KeygenParams,
    me: u8,
    session_id: [u8; 16],
    session: &Session,
    peers: &mut [Peer],
    config: &Arc<rustls::ClientConfig>,
    until: Instant,
) -> Result<KeygenOutput, String> {
    let mut party = Party::new(usize::from(me), params).map_err(|e| e.to_string())?;
    let mut rng = rand::rng();
    let mut incoming: Vec<(usize, Message)> = Vec::new();
    loop {
        let step = party
            .step(&incoming, &mut rng)
            .map_err(|e| format!("appliance {me}: {e}"))?;
        session.record(party.stats());
        incoming.clear();
        let list = match step {
            Step::Done(output) => return Ok(*output),
            Step::Send(list) => list,
        };
        let round = list
            .first()
            .map(|o| o.message.round)
            .ok_or("the protocol produced no message")?;
        debug!(round, party = ?party, "sending round");
        let mut payloads: BTreeMap<u8, SecretBytes> = BTreeMap::new();
        for out in list {
            let bytes = SecretBytes::new(
                bincode::encode_to_vec(&out.message, bincode::config::standard())
                    .map_err(|e| format!("encoding a round message: {e}"))?,
            );
            match out.to {
                Recipient::All => {
                    for p in peers.iter() {
                        payloads.insert(p.index, bytes.clone());
                    }
                }
                Recipient::One(j) => {
                    let j = u8::try_from(j).map_err(|_| "recipient out of range")?;
                    payloads.insert(j, bytes);
                }
            }
        }
        let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = peers
                .iter_mut()
                .map(|peer| {
                    let message = payloads.remove(&peer.index);
                    scope.spawn(move || {
                        let message = message.ok_or_else(|| {
                            format!("no round {round} message for appliance {}", peer.index)
                        })?;
                        let request = Request::KeygenRound {
                            session: session_id,
                            from: me,
                            round,
                            message,
                        };
                        peer.send(config, &request, session, until)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a sending thread failed".into()))
                })
                .collect()
        });
        for r in results {
            r?;
        }
        let received = loop {
            let wait_until = (Instant::now() + PROBE_INTERVAL).min(until);
            match session.take(round, wait_until)? {
                Taken::All(received) => break received,
                Taken::Missing(missing) => {
                    if Instant::now() >= until {
                        return Err(format!(
                            "timed out waiting for round {round} from appliances {missing:?}"
                        ));
                    }
                    for peer in peers.iter_mut().filter(|p| missing.contains(&p.index)) {
                        peer.probe(config)?;
                    }
                }
            }
        };
        for (from, bytes) in received {
            let (message, used): (Message, usize) = bincode::decode_from_slice(
                bytes.expose_secret(),
                bincode::config::standard().with_limit::<{ 2 * ittc_wire::MAX_FRAME }>(),
            )
            .map_err(|e| format!("undecodable round message from appliance {from}: {e}"))?;
            if used != bytes.len() {
                return Err(format!("trailing bytes in a message from appliance {from}"));
            }
            incoming.push((usize::from(from), message));
        }
    }
}

/// Tells every peer that this appliance gave up (best effort, in parallel, briefly).
fn abort_peers(
    peers: &mut [Peer],
    config: &Arc<rustls::ClientConfig>,
    session: [u8; 16],
    me: u8,
    reason: &str,
) {
    let mut cut = reason
        .len()
        .min(ittc_wire::limits::MAX_ERROR_MESSAGE_LEN / 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = reason[..cut].to_owned();
    let request = Request::KeygenAbort {
        session,
        from: me,
        reason,
    };
    std::thread::scope(|scope| {
        for peer in peers.iter_mut() {
            let request = &request;
            scope.spawn(move || {
                if let Ok(c) = peer.connection(config) {
                    let _ = c.request(request);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_follows_the_recorded_counters_until_the_session_ends() {
        let keygens = Keygens::default();
        let id = [3; 16];
        assert!(matches!(
            keygens.progress(&id),
            Err(ApplianceError::NoSession)
        ));
        let registration = keygens.register(id, 1, 3, 2).unwrap();
        let fresh = keygens.progress(&id).unwrap();
        assert_eq!(
            fresh,
            KeygenProgress {
                elapsed_ms: fresh.elapsed_ms,
                ..KeygenProgress::default()
            },
            "no counts before the first step"
        );
        registration.session.record(KeygenStats {
            batches: 2,
            candidates: 4096,
            wrong_size: 100,
            sieved_out: 3900,
            biprimality_tests: 96,
            late_rejections: 1,
            rounds: 11,
        });
        std::thread::sleep(Duration::from_millis(5));
        let progress = keygens.progress(&id).unwrap();
        assert_eq!(
            (
                progress.batches,
                progress.candidates,
                progress.biprimality_tests,
                progress.rounds
            ),
            (2, 4096, 96, 11)
        );
        assert!(progress.elapsed_ms >= 5);
        // Another session's id is not this one.
        assert!(keygens.progress(&[4; 16]).is_err());
        drop(registration);
        let over = keygens.progress(&id).unwrap_err();
        assert_eq!(over.to_wire().code, ErrorCode::NotFound);
        assert!(over.to_wire().message.contains("over"), "{over}");
    }

    #[test]
    fn progress_does_not_wait_for_a_party_blocked_on_its_inbox() {
        let keygens = Keygens::default();
        let id = [5; 16];
        let registration = keygens.register(id, 2, 3, 2).unwrap();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                registration
                    .session
                    .take(0, Instant::now() + Duration::from_millis(300))
            });
            std::thread::sleep(Duration::from_millis(20));
            let asked = Instant::now();
            assert!(keygens.progress(&id).is_ok());
            assert!(asked.elapsed() < Duration::from_millis(100));
            assert!(matches!(waiter.join().unwrap(), Ok(Taken::Missing(_))));
        });
    }
}
