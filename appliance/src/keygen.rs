//! Dealerless key generation with the peers (`GenerateKey`).
//!
//! The coordinator (the `ittc` CLI, or the PKCS#11 module for a logged-in user) sends the
//! same [`KeygenSpec`] to every participant at once. Each appliance runs its own
//! [`Party`] of the Boneh–Franklin protocol (`ittc_threshold::keygen`) in the request's
//! handler thread, and carries the round messages itself as [`Request::KeygenRound`]
//! ([`crate::peers`]: connections to the peers, the session inbox, probes); a message for a
//! session the recipient has not registered yet (its `GenerateKey` is still on the way) is
//! answered `NotFound` and sent again shortly, until the deadline.
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

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ittc_threshold::keygen::{
    KeygenOutput, KeygenParams, KeygenStats, Message, Party, Recipient, Step,
};
use ittc_wire::limits::MAX_KEYGEN_MESSAGE_LEN;
use ittc_wire::{KeyId, KeygenProgress, KeygenSpec, Request, SecretBytes};
use tracing::{debug, info, warn};

use crate::error::ApplianceError;
use crate::peers::{Peer, PeerSessions, Registration, Session, abort_peers, exchange_round};
use crate::state::State;

/// Room in a frame for everything around the encoded message.
const FRAME_MARGIN: usize = 64 * 1024;

/// The key generations in progress on this appliance, by session id.
#[derive(Default)]
pub struct Keygens {
    sessions: PeerSessions<KeygenStats>,
    /// Keys generated here whose pending epoch is not committed or deleted yet: the
    /// coordinator, even a logged-in user, may run the trial on, commit or delete these.
    /// In memory only: after a restart only the admin can finish or delete such a key.
    generated: Mutex<HashSet<KeyId>>,
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

    /// Registers a new session for appliance `me` among `participants` (ascending); at
    /// most `max` at once.
    ///
    /// # Errors
    ///
    /// As [`PeerSessions::register_among`].
    pub fn register(
        &self,
        id: [u8; 16],
        me: u8,
        participants: Vec<u8>,
        max: usize,
    ) -> Result<Registration<'_, KeygenStats>, ApplianceError> {
        self.sessions.register_among(id, me, participants, max)
    }

    /// Queues peer `from`'s message of `round` (`KeygenRound`).
    ///
    /// # Errors
    ///
    /// As [`PeerSessions::deliver`].
    pub fn deliver(
        &self,
        id: &[u8; 16],
        from: u8,
        round: u32,
        message: SecretBytes,
    ) -> Result<(), ApplianceError> {
        self.sessions.deliver(id, from, round, message)
    }

    /// The counters of session `id` so far (`KeygenProgress`): public, and read without
    /// waiting for the protocol.
    ///
    /// # Errors
    ///
    /// `NoSession` (`NotFound` on the wire) for a session not running here: not registered
    /// yet, or over (finished or failed).
    pub fn progress(&self, id: &[u8; 16]) -> Result<KeygenProgress, ApplianceError> {
        let (stats, started) = self.sessions.progress(id)?;
        Ok(KeygenProgress {
            batches: stats.batches,
            candidates: stats.candidates,
            biprimality_tests: stats.biprimality_tests,
            rounds: stats.rounds,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Peer `from` gave up (`KeygenAbort`): the waiting party stops with `reason`.
    ///
    /// # Errors
    ///
    /// `NoSession` for an unknown (or already finished) session.
    pub fn abort(&self, id: &[u8; 16], from: u8, reason: &str) -> Result<(), ApplianceError> {
        self.sessions.abort(id, from, reason)
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
    let holders: Vec<usize> = spec
        .participants
        .iter()
        .map(|p| usize::from(p.index))
        .collect();
    if !holders.contains(&usize::from(me)) {
        return Err(ApplianceError::BadRequest(format!(
            "appliance {me} is not among the participants {holders:?}"
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
        holders.len(),
        usize::from(spec.threshold),
    )
    .and_then(|p| p.with_holders(holders, usize::from(spec.parties)))
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
    let config = state.peer_config()?;
    let me = state.config.index;
    let indices: Vec<u8> = spec.participants.iter().map(|p| p.index).collect();
    let mut peers = state.peers_of(&spec.participants);
    let registration = state.keygen.register(
        spec.session,
        me,
        indices.clone(),
        state.config.keygen.max_sessions,
    )?;
    info!(
        bits = spec.bits,
        participants = ?indices,
        parties = spec.parties,
        threshold = spec.threshold,
        batch = params.batch,
        "key generation started"
    );
    let outcome = run(
        &params,
        &indices,
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
            abort_peers(&mut peers, &config, &reason, |reason| {
                Request::KeygenAbort {
                    session: spec.session,
                    from: me,
                    reason,
                }
            });
            drop(registration);
            Err(ApplianceError::Keygen(reason))
        }
    }
}

/// The protocol loop: step, send, wait for the next round. Every error is a reason
/// string that names no secret.
///
/// The protocol numbers its parties `1..=m`; party `p` is the appliance `indices[p − 1]`.
#[allow(clippy::too_many_arguments)]
fn run(
    params: &KeygenParams,
    indices: &[u8],
    me: u8,
    session_id: [u8; 16],
    session: &Session<KeygenStats>,
    peers: &mut [Peer],
    config: &Arc<rustls::ClientConfig>,
    until: Instant,
) -> Result<KeygenOutput, String> {
    let appliance = |party: usize| -> Result<u8, String> {
        party
            .checked_sub(1)
            .and_then(|p| indices.get(p))
            .copied()
            .ok_or_else(|| format!("no appliance for party {party}"))
    };
    let party_of = |index: u8| -> Result<usize, String> {
        indices
            .iter()
            .position(|&i| i == index)
            .map(|p| p + 1)
            .ok_or_else(|| format!("appliance {index} is not a participant"))
    };
    let mut party = Party::new(party_of(me)?, params).map_err(|e| e.to_string())?;
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
                    payloads.insert(appliance(j)?, bytes);
                }
            }
        }
        let received = exchange_round(
            peers,
            config,
            session,
            round,
            payloads,
            &session.others(),
            |message| Request::KeygenRound {
                session: session_id,
                from: me,
                round,
                message,
            },
            until,
        )?;
        for (from, bytes) in received {
            let (message, used): (Message, usize) = bincode::decode_from_slice(
                bytes.expose_secret(),
                bincode::config::standard().with_limit::<{ 2 * ittc_wire::MAX_FRAME }>(),
            )
            .map_err(|e| format!("undecodable round message from appliance {from}: {e}"))?;
            if used != bytes.len() {
                return Err(format!("trailing bytes in a message from appliance {from}"));
            }
            incoming.push((party_of(from)?, message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ittc_wire::ErrorCode;

    #[test]
    fn progress_follows_the_recorded_counters_until_the_session_ends() {
        let keygens = Keygens::default();
        let id = [3; 16];
        assert!(matches!(
            keygens.progress(&id),
            Err(ApplianceError::NoSession)
        ));
        let registration = keygens.register(id, 1, vec![1, 2, 3], 2).unwrap();
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
}
