//! Protocols run among the appliances themselves (key generation, refresh, recovery): the
//! sessions
//! that hold the round messages peers send, and the connections that carry this
//! appliance's messages to its peers.
//!
//! Each protocol run has a session id. An appliance that takes part registers it
//! ([`PeerSessions::register`]), sends its messages of a round to the participants it has
//! one for as `appliance-<i>` (its own certificate is a client certificate too) and waits
//! until it has one message of the round from each participant that sends it one
//! ([`exchange_round`]). A
//! receiving appliance queues a message in the session's inbox ([`PeerSessions::deliver`])
//! and answers at once; a message for a session it has not registered yet (its own request
//! to take part is still on the way) is answered `NotFound` and sent again shortly.
//! While waiting, an appliance probes the peers it waits for (`Status` on the open
//! connection), so that a killed peer ends the run in seconds. A participant that gives
//! up tells the others ([`abort_peers`]); their waits end with its reason.
//!
//! Round messages travel and wait in [`SecretBytes`] (zeroized on drop). Nothing secret is
//! logged.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ittc_wire::client::{Connection, Timeouts};
use ittc_wire::{
    ErrorCode, KeyId, KeyStatus, Participant, Request, Response, SecretBytes, StatusInfo,
};

use crate::error::ApplianceError;
use crate::state::State;

/// How often a waiting party checks that the peers it waits for are still there.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long before a message for a session the peer does not know yet is sent again.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// Time limits of a peer connection (each round message is queued, not processed, by the
/// recipient before it answers).
pub const PEER_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    io: Duration::from_secs(30),
};
/// Aborted-before-registered sessions remembered.
const MAX_TOMBSTONES: usize = 64;
/// Longest a round message is offered to a peer that does not know the session.
const UNKNOWN_SESSION_PATIENCE: Duration = Duration::from_secs(30);

fn poisoned<T>(_: T) -> ApplianceError {
    ApplianceError::Internal("peer session state lock poisoned".into())
}

/// The sessions of one protocol in progress on this appliance, by session id. `P` is what
/// a session reports about its progress (public counters or a stage).
pub struct PeerSessions<P> {
    sessions: Mutex<HashMap<[u8; 16], Arc<Session<P>>>>,
    /// Sessions a peer aborted before this appliance registered them (newest last, at
    /// most [`MAX_TOMBSTONES`]): registering one fails at once.
    aborted: Mutex<Vec<[u8; 16]>>,
}

impl<P> Default for PeerSessions<P> {
    fn default() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            aborted: Mutex::new(Vec::new()),
        }
    }
}

/// One run's inbox: the round messages received from the peers, at most two rounds'
/// worth (the one being waited for and the next); and its progress.
pub struct Session<P> {
    me: u8,
    /// Every participant's index, this one's included, ascending.
    participants: Vec<u8>,
    inbox: Mutex<Inbox>,
    ready: Condvar,
    /// When the session was registered.
    pub started: Instant,
    /// The run's progress. A lock of its own, held only to copy or set it, so that a
    /// progress request never waits behind the inbox.
    progress: Mutex<P>,
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
pub struct Registration<'a, P> {
    sessions: &'a PeerSessions<P>,
    id: [u8; 16],
    /// The session.
    pub session: Arc<Session<P>>,
}

impl<P> Drop for Registration<'_, P> {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.sessions.sessions.lock() {
            sessions.remove(&self.id);
        }
    }
}

impl<P: Clone + Default> PeerSessions<P> {
    /// Registers a new session for appliance `me` of `1..=parties`; at most `max` at once.
    ///
    /// # Errors
    ///
    /// As [`PeerSessions::register_among`].
    pub fn register(
        &self,
        id: [u8; 16],
        me: u8,
        parties: u8,
        max: usize,
    ) -> Result<Registration<'_, P>, ApplianceError> {
        self.register_among(id, me, (1..=parties).collect(), max)
    }

    /// Registers a new session for appliance `me` among `participants` (ascending, `me`
    /// included); at most `max` at once.
    ///
    /// # Errors
    ///
    /// `Busy`-like errors when `max` sessions run; `BadRequest` for a session id in use;
    /// an error when a peer already gave up on this session.
    pub fn register_among(
        &self,
        id: [u8; 16],
        me: u8,
        participants: Vec<u8>,
        max: usize,
    ) -> Result<Registration<'_, P>, ApplianceError> {
        if self.aborted.lock().map_err(poisoned)?.contains(&id) {
            return Err(ApplianceError::Peers(
                "another participant gave up on this run already".into(),
            ));
        }
        let mut sessions = self.sessions.lock().map_err(poisoned)?;
        if sessions.contains_key(&id) {
            return Err(ApplianceError::BadRequest(
                "a run with this session id is under way".into(),
            ));
        }
        if sessions.len() >= max {
            return Err(ApplianceError::Peers(format!(
                "busy: {max} runs are under way"
            )));
        }
        let session = Arc::new(Session {
            me,
            participants,
            inbox: Mutex::new(Inbox::default()),
            ready: Condvar::new(),
            started: Instant::now(),
            progress: Mutex::new(P::default()),
        });
        sessions.insert(id, session.clone());
        Ok(Registration {
            sessions: self,
            id,
            session,
        })
    }

    fn find(&self, id: &[u8; 16]) -> Result<Arc<Session<P>>, ApplianceError> {
        self.sessions
            .lock()
            .map_err(poisoned)?
            .get(id)
            .cloned()
            .ok_or(ApplianceError::NoSession)
    }

    /// Whether session `id` runs here.
    pub fn is_running(&self, id: &[u8; 16]) -> bool {
        self.sessions.lock().is_ok_and(|s| s.contains_key(id))
    }

    /// Queues peer `from`'s message of `round`.
    ///
    /// # Errors
    ///
    /// `NoSession` (`NotFound` on the wire: the sender tries again) for an unknown session;
    /// `BadRequest` for a sender that is not a participant, a round that is neither the
    /// awaited one nor the next, or a second message for the same round.
    pub fn deliver(
        &self,
        id: &[u8; 16],
        from: u8,
        round: u32,
        message: SecretBytes,
    ) -> Result<(), ApplianceError> {
        let session = self.find(id)?;
        if !session.is_other(from) {
            return Err(ApplianceError::BadRequest(format!(
                "appliance {from} is not another participant of this run"
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

    /// Session `id`'s progress and start time, read without waiting for the protocol.
    ///
    /// # Errors
    ///
    /// `NoSession` (`NotFound` on the wire) for a session not running here.
    pub fn progress(&self, id: &[u8; 16]) -> Result<(P, Instant), ApplianceError> {
        let session = self.find(id)?;
        let progress = session.progress.lock().map_err(poisoned)?.clone();
        Ok((progress, session.started))
    }

    /// Peer `from` gave up: the waiting party stops with `reason`.
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
        if !session.is_other(from) {
            return Err(ApplianceError::BadRequest(format!(
                "appliance {from} is not another participant of this run"
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

impl<P: Clone + Default> PeerSessions<P> {
    /// Ends session `id`'s waits with `reason` (this appliance's own decision to stop, as
    /// a coordinator that gave up on its run). Nothing if it does not run here.
    pub fn cancel(&self, id: &[u8; 16], reason: &str) {
        if let Ok(session) = self.find(id)
            && let Ok(mut inbox) = session.inbox.lock()
        {
            inbox.messages.clear();
            inbox.aborted.get_or_insert_with(|| reason.to_owned());
            drop(inbox);
            session.ready.notify_all();
        }
    }
}

/// What [`Session::take`] found.
pub enum Taken {
    /// One message of the round from every other party.
    All(Vec<(u8, SecretBytes)>),
    /// Still missing these senders when the wait ended.
    Missing(Vec<u8>),
}

impl<P> Session<P> {
    fn lock(&self) -> Result<MutexGuard<'_, Inbox>, String> {
        self.inbox
            .lock()
            .map_err(|_| "peer session state lock poisoned".to_owned())
    }

    /// Why a peer gave up, if one did.
    pub fn aborted(&self) -> Option<String> {
        self.lock().ok().and_then(|inbox| inbox.aborted.clone())
    }

    /// Whether `index` is a participant other than this appliance.
    fn is_other(&self, index: u8) -> bool {
        index != self.me && self.participants.contains(&index)
    }

    /// Every participant but this appliance.
    pub fn others(&self) -> Vec<u8> {
        self.participants
            .iter()
            .copied()
            .filter(|&i| i != self.me)
            .collect()
    }

    /// Records the run's progress.
    pub fn record(&self, progress: P) {
        if let Ok(mut p) = self.progress.lock() {
            *p = progress;
        }
    }

    /// Waits until `until` for the message of `round` from each of `senders` (other
    /// participants; none at all ends the round at once).
    pub fn take(&self, round: u32, senders: &[u8], until: Instant) -> Result<Taken, String> {
        let mut inbox = self.lock()?;
        inbox.round = inbox.round.max(round);
        loop {
            if let Some(reason) = &inbox.aborted {
                return Err(reason.clone());
            }
            let missing: Vec<u8> = senders
                .iter()
                .copied()
                .filter(|&from| !inbox.messages.contains_key(&(round, from)))
                .collect();
            if missing.is_empty() {
                let mut taken = Vec::with_capacity(senders.len());
                for &from in senders {
                    if let Some(m) = inbox.messages.remove(&(round, from)) {
                        taken.push((from, m));
                    }
                }
                inbox.round = round.saturating_add(1);
                return Ok(Taken::All(taken));
            }
            let now = Instant::now();
            if now >= until {
                return Ok(Taken::Missing(missing));
            }
            inbox = self
                .ready
                .wait_timeout(inbox, until - now)
                .map_err(|_| "peer session state lock poisoned".to_owned())?
                .0;
        }
    }
}

/// One peer: where it is and the connection to it, opened on first use.
pub struct Peer {
    /// Its index.
    pub index: u8,
    /// Its address, `host:port`.
    pub address: String,
    timeouts: Timeouts,
    connection: Option<Connection>,
}

impl Peer {
    /// A peer not connected yet, with the round messages' time limits.
    pub fn new(index: u8, address: String) -> Self {
        Self::with_timeouts(index, address, PEER_TIMEOUTS)
    }

    /// A peer not connected yet, with other time limits (requests that take long).
    pub fn with_timeouts(index: u8, address: String, timeouts: Timeouts) -> Self {
        Self {
            index,
            address,
            timeouts,
            connection: None,
        }
    }

    /// Changes the time limits of the connections opened from now on.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// The open connection, or a new one.
    ///
    /// # Errors
    ///
    /// Why the peer cannot be reached.
    pub fn connection(
        &mut self,
        config: &Arc<rustls::ClientConfig>,
        client_name: &str,
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
            let c =
                Connection::connect(addr, self.index, config.clone(), self.timeouts, client_name)
                    .map_err(|e| format!("appliance {} unreachable: {e}", self.index))?;
            self.connection = Some(c);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| format!("appliance {} unreachable", self.index))
    }

    /// Sends one round message, again while the peer does not know the session yet (or
    /// until `session` learns that a peer gave up, or `until`).
    fn send<P>(
        &mut self,
        config: &Arc<rustls::ClientConfig>,
        request: &Request,
        session: &Session<P>,
        until: Instant,
    ) -> Result<(), String> {
        let index = self.index;
        let patience = Instant::now() + UNKNOWN_SESSION_PATIENCE;
        loop {
            let answer = self
                .connection(config, "ittc-appliance peer")?
                .request(request)
                .map_err(|e| format!("appliance {index} stopped answering: {e}"))?;
            match answer {
                Response::Ok => return Ok(()),
                Response::Error(e) if e.code == ErrorCode::NotFound => {
                    if let Some(reason) = session.aborted() {
                        return Err(reason);
                    }
                    if Instant::now() >= until.min(patience) {
                        return Err(format!("appliance {index} does not take part in this run"));
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
    ///
    /// # Errors
    ///
    /// Why it does not.
    pub fn probe(&mut self, config: &Arc<rustls::ClientConfig>) -> Result<(), String> {
        let index = self.index;
        match self
            .connection(config, "ittc-appliance peer")?
            .request(&Request::Status)
        {
            Ok(Response::Status(_)) => Ok(()),
            Ok(other) => Err(format!(
                "appliance {index} answered a status request with {}",
                other.kind()
            )),
            Err(e) => Err(format!("appliance {index} stopped answering: {e}")),
        }
    }

    /// Sends `request` and returns the answer.
    ///
    /// # Errors
    ///
    /// Why the peer could not be asked.
    pub fn ask(
        &mut self,
        config: &Arc<rustls::ClientConfig>,
        request: &Request,
    ) -> Result<Response, String> {
        let index = self.index;
        self.connection(config, "ittc-appliance peer")?
            .request(request)
            .map_err(|e| format!("appliance {index} stopped answering: {e}"))
    }
}

/// One round: sends each peer that has one its message (`payloads` by peer index, built
/// into a request by `request`), in parallel, then waits for one message of `round` from
/// each of `senders`, probing the missing ones every [`PROBE_INTERVAL`].
///
/// # Errors
///
/// Why the round failed: a peer refused or is unreachable, a peer gave up, the deadline.
#[allow(clippy::too_many_arguments)]
pub fn exchange_round<P>(
    peers: &mut [Peer],
    config: &Arc<rustls::ClientConfig>,
    session: &Session<P>,
    round: u32,
    mut payloads: BTreeMap<u8, SecretBytes>,
    senders: &[u8],
    request: impl Fn(SecretBytes) -> Request + Sync,
    until: Instant,
) -> Result<Vec<(u8, SecretBytes)>, String>
where
    P: Send + Sync,
{
    if let Some(to) = payloads
        .keys()
        .find(|to| !peers.iter().any(|p| p.index == **to))
    {
        return Err(format!(
            "a round {round} message for appliance {to}, not a peer of the run"
        ));
    }
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = peers
            .iter_mut()
            .filter_map(|peer| payloads.remove(&peer.index).map(|m| (peer, m)))
            .map(|(peer, message)| {
                let request = &request;
                scope.spawn(move || peer.send(config, &request(message), session, until))
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
    loop {
        let wait_until = (Instant::now() + PROBE_INTERVAL).min(until);
        match session.take(round, senders, wait_until)? {
            Taken::All(received) => return Ok(received),
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
    }
}

/// Time limits of a status request to a peer: short, since an appliance that does not
/// answer at once is treated as away.
const STATUS_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    io: Duration::from_secs(5),
};

/// What each of `appliances` other than this one reports about `key_id` (`None`: it does
/// not hold the key), or why it could not be asked; asked in parallel, in index order.
pub fn key_statuses(
    state: &State,
    appliances: &[Participant],
    key_id: &KeyId,
) -> Vec<(u8, Result<Option<KeyStatus>, String>)> {
    statuses(state, appliances)
        .into_iter()
        .map(|(index, status)| {
            (
                index,
                status.map(|s| s.keys.into_iter().find(|k| &k.key_id == key_id)),
            )
        })
        .collect()
}

/// The status of each of `appliances` other than this one, or why it could not be asked;
/// asked in parallel (briefly: an appliance that does not answer at once is away), in
/// index order.
pub fn statuses(
    state: &State,
    appliances: &[Participant],
) -> Vec<(u8, Result<StatusInfo, String>)> {
    let Ok(config) = state.peer_config() else {
        return Vec::new();
    };
    let mut peers = state.peers_of(appliances);
    std::thread::scope(|scope| {
        let handles: Vec<_> = peers
            .iter_mut()
            .map(|peer| {
                let config = &config;
                scope.spawn(move || {
                    peer.set_timeouts(STATUS_TIMEOUTS);
                    let index = peer.index;
                    let answer = match peer.ask(config, &Request::Status) {
                        Ok(Response::Status(status)) if status.appliance_index == index => {
                            Ok(status)
                        }
                        Ok(Response::Status(status)) => Err(format!(
                            "appliance {index}'s address answers as appliance {}",
                            status.appliance_index
                        )),
                        Ok(other) => Err(format!(
                            "appliance {index} answered a status request with {}",
                            other.kind()
                        )),
                        Err(e) => Err(e),
                    };
                    (index, answer)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// Tells every peer that this appliance gave up (best effort, in parallel, briefly):
/// `request` builds the abort message from the reason, cut to fit.
pub fn abort_peers(
    peers: &mut [Peer],
    config: &Arc<rustls::ClientConfig>,
    reason: &str,
    request: impl Fn(String) -> Request,
) {
    let mut cut = reason
        .len()
        .min(ittc_wire::limits::MAX_ERROR_MESSAGE_LEN / 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let request = request(reason[..cut].to_owned());
    std::thread::scope(|scope| {
        for peer in peers.iter_mut() {
            let request = &request;
            scope.spawn(move || {
                if let Ok(c) = peer.connection(config, "ittc-appliance peer") {
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
    fn progress_is_read_without_waiting_for_a_party_blocked_on_its_inbox() {
        let sessions: PeerSessions<u32> = PeerSessions::default();
        let id = [5; 16];
        let registration = sessions.register(id, 2, 3, 2).unwrap();
        registration.session.record(7);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                registration
                    .session
                    .take(0, &[1, 3], Instant::now() + Duration::from_millis(300))
            });
            std::thread::sleep(Duration::from_millis(20));
            let asked = Instant::now();
            assert_eq!(sessions.progress(&id).unwrap().0, 7);
            assert!(asked.elapsed() < Duration::from_millis(100));
            assert!(matches!(waiter.join().unwrap(), Ok(Taken::Missing(_))));
        });
        drop(registration);
        assert!(!sessions.is_running(&id));
        assert!(matches!(
            sessions.progress(&id),
            Err(ApplianceError::NoSession)
        ));
    }

    #[test]
    fn messages_are_checked_and_an_abort_ends_the_wait() {
        let sessions: PeerSessions<()> = PeerSessions::default();
        let id = [6; 16];
        assert!(matches!(
            sessions.deliver(&id, 1, 0, SecretBytes::new(vec![1])),
            Err(ApplianceError::NoSession)
        ));
        let registration = sessions.register(id, 1, 3, 2).unwrap();
        assert!(sessions.register(id, 1, 3, 2).is_err());
        for (from, round) in [(1, 0), (4, 0), (2, 2)] {
            assert!(
                sessions
                    .deliver(&id, from, round, SecretBytes::new(vec![1]))
                    .is_err(),
                "from {from} round {round}"
            );
        }
        sessions
            .deliver(&id, 2, 0, SecretBytes::new(vec![1]))
            .unwrap();
        assert!(
            sessions
                .deliver(&id, 2, 0, SecretBytes::new(vec![1]))
                .is_err()
        );
        sessions.abort(&id, 3, "broken").unwrap();
        let taken = registration
            .session
            .take(0, &[2, 3], Instant::now() + Duration::from_secs(5));
        assert!(matches!(taken, Err(reason) if reason.contains("appliance 3 gave up")));
        // An abort for a session not registered yet makes its registration fail.
        assert!(sessions.abort(&[7; 16], 2, "early").is_err());
        assert!(sessions.register([7; 16], 1, 3, 2).is_err());
    }

    #[test]
    fn a_session_among_some_appliances_takes_only_their_messages() {
        let sessions: PeerSessions<()> = PeerSessions::default();
        let id = [8; 16];
        let registration = sessions.register_among(id, 3, vec![1, 3, 4], 2).unwrap();
        assert_eq!(registration.session.others(), vec![1, 4]);
        // Appliance 2 is not in the run.
        assert!(
            sessions
                .deliver(&id, 2, 0, SecretBytes::new(vec![1]))
                .is_err()
        );
        // A round with no senders ends at once; the next waits for its sender only.
        let soon = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            registration.session.take(0, &[], soon),
            Ok(Taken::All(m)) if m.is_empty()
        ));
        sessions
            .deliver(&id, 4, 1, SecretBytes::new(vec![9]))
            .unwrap();
        match registration.session.take(1, &[4], soon) {
            Ok(Taken::All(m)) => {
                assert_eq!(m.len(), 1);
                assert_eq!(m[0].0, 4);
                assert_eq!(m[0].1.expose_secret(), &[9]);
            }
            _ => panic!("round 1 should hold appliance 4's message"),
        }
        let later = Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            registration.session.take(2, &[1], later),
            Ok(Taken::Missing(m)) if m == vec![1]
        ));
    }
}
