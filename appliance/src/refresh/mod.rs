//! Proactive refresh with the peers: every key gets a new sharing of the same private key,
//! on a schedule, and an interrupted refresh finishes or rolls back by itself.
//!
//! The steps (docs/security.md has the protocol and why each is safe):
//!
//! | stage | who | what |
//! |---|---|---|
//! | begin | coordinator | claims the key, asks every holder to take part ([`Request::RefreshRun`]) |
//! | split, deal | each holder | two rounds of [`Request::RefreshRound`] with the others ([`holder`]) |
//! | store | each holder | stores its new secrets as the pending epoch, answers with a trial partial |
//! | trial | coordinator | all `n` trial partials must combine with none wrong, else every holder discards |
//! | ready | each holder | marks the pending epoch verified: it answers clients too |
//! | commit | coordinator first, then each holder | the new epoch is active; the old one retires (still answers) |
//! | erase | each holder, once all committed | the old epoch's share and epoch key are destroyed |
//!
//! [`coordinator`] runs a refresh (for `ittc key refresh`, or the schedule in
//! [`schedule`]); [`recovery`] finishes what a crash interrupted: a pending epoch whose
//! coordinator committed is committed, one whose coordinator did not and runs nothing is
//! discarded, and a retiring epoch is erased once every holder has the new one.
//!
//! One refresh per key at a time: the appliance with index 1 (the leader) starts the
//! scheduled ones, and every holder takes part in at most one refresh of a key at a time
//! ([`Refreshes::claim`]) and refuses one while the key has a pending or retiring epoch,
//! so that two coordinators cannot both get every holder to store.
//!
//! [`Request::RefreshRun`]: ittc_wire::Request::RefreshRun
//! [`Request::RefreshRound`]: ittc_wire::Request::RefreshRound

pub mod coordinator;
pub mod holder;
pub mod rebuild;
pub mod recovery;
pub mod schedule;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use ittc_threshold::{RsaPublicKey, SharingParams};
use ittc_wire::{KeyId, RefreshStage};

use crate::error::ApplianceError;
use crate::peers::PeerSessions;
use crate::storage::KeyInfo;

/// The refreshes on this appliance: the holder sessions with their inboxes, the runs it
/// coordinates, which key each works on, and the schedule.
#[derive(Default)]
pub struct Refreshes {
    /// Holder sessions: the inboxes of the round messages, and the holder's stage.
    sessions: PeerSessions<RefreshStage>,
    /// The key each session works on, with how many claims (the coordinator's run and its
    /// own holder part share one session).
    claims: Mutex<HashMap<KeyId, ([u8; 16], usize)>>,
    /// Runs this appliance coordinates: their stage and start, for progress.
    runs: Mutex<HashMap<[u8; 16], (RefreshStage, Instant)>>,
    /// The schedule of the runs this appliance starts.
    pub schedule: schedule::Schedule,
    /// Rebuilds of this appliance's shares that failed: when each may be tried again, and
    /// the failures in a row.
    rebuilds: Mutex<HashMap<KeyId, (Instant, u32)>>,
    /// When recovery last asked the peers, and which answered.
    peer_check: Mutex<Option<(Instant, Vec<u8>)>>,
}

/// A claim on a key for one session; dropping it releases the key.
pub struct Claim<'a> {
    refreshes: &'a Refreshes,
    key_id: KeyId,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut claims) = self.refreshes.claims.lock()
            && let Some((_, count)) = claims.get_mut(&self.key_id)
        {
            *count -= 1;
            if *count == 0 {
                claims.remove(&self.key_id);
            }
        }
    }
}

/// A coordinator's run, registered for progress; dropping it ends it.
pub struct Run<'a> {
    refreshes: &'a Refreshes,
    session: [u8; 16],
}

impl Run<'_> {
    /// Records the stage the run has reached.
    pub fn stage(&self, stage: RefreshStage) {
        if let Ok(mut runs) = self.refreshes.runs.lock()
            && let Some(entry) = runs.get_mut(&self.session)
        {
            entry.0 = stage;
        }
        tracing::debug!(stage = stage.as_str(), "refresh stage");
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.refreshes.runs.lock() {
            runs.remove(&self.session);
        }
    }
}

fn poisoned<T>(_: T) -> ApplianceError {
    ApplianceError::Internal("refresh state lock poisoned".into())
}

impl Refreshes {
    /// Claims `key_id` for `session`: refused while another session works on it.
    ///
    /// # Errors
    ///
    /// `Refresh` naming the other session's state.
    pub fn claim(&self, key_id: &KeyId, session: [u8; 16]) -> Result<Claim<'_>, ApplianceError> {
        let mut claims = self.claims.lock().map_err(poisoned)?;
        match claims.get_mut(key_id) {
            Some((owner, count)) if *owner == session => *count += 1,
            Some(_) => {
                return Err(ApplianceError::Refresh(format!(
                    "another refresh of key {key_id} is under way here"
                )));
            }
            None => {
                claims.insert(key_id.clone(), (session, 1));
            }
        }
        Ok(Claim {
            refreshes: self,
            key_id: key_id.clone(),
        })
    }

    /// The session working on `key_id` here, if any.
    pub fn running(&self, key_id: &KeyId) -> Option<[u8; 16]> {
        self.claims
            .lock()
            .ok()
            .and_then(|c| c.get(key_id).map(|(s, _)| *s))
    }

    /// Registers a coordinator run for progress.
    ///
    /// # Errors
    ///
    /// `BadRequest` for a session id in use.
    pub fn start_run(&self, session: [u8; 16]) -> Result<Run<'_>, ApplianceError> {
        let mut runs = self.runs.lock().map_err(poisoned)?;
        if runs.contains_key(&session) {
            return Err(ApplianceError::BadRequest(
                "a refresh with this session id is under way".into(),
            ));
        }
        runs.insert(session, (RefreshStage::Begin, Instant::now()));
        Ok(Run {
            refreshes: self,
            session,
        })
    }

    /// How far the run `session` coordinated here has got.
    ///
    /// # Errors
    ///
    /// `NoSession` if none runs.
    pub fn progress(
        &self,
        session: &[u8; 16],
    ) -> Result<ittc_wire::RefreshProgress, ApplianceError> {
        let runs = self.runs.lock().map_err(poisoned)?;
        let (stage, started) = runs.get(session).ok_or(ApplianceError::NoSession)?;
        Ok(ittc_wire::RefreshProgress {
            stage: *stage,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The holder sessions (round messages, aborts).
    pub fn sessions(&self) -> &PeerSessions<RefreshStage> {
        &self.sessions
    }

    /// The peers that answered recovery's last status round, if it was less than
    /// `within` ago.
    pub fn recent_peer_check(&self, within: std::time::Duration) -> Option<Vec<u8>> {
        let check = self.peer_check.lock().ok()?;
        check
            .as_ref()
            .filter(|(at, _)| at.elapsed() < within)
            .map(|(_, answered)| answered.clone())
    }

    /// Records a status round of recovery: `answered` are the peers that answered.
    pub fn peers_checked(&self, answered: Vec<u8>) {
        if let Ok(mut check) = self.peer_check.lock() {
            *check = Some((Instant::now(), answered));
        }
    }

    /// Whether a rebuild of `key_id` may be tried now (none failed lately).
    pub fn rebuild_due(&self, key_id: &KeyId) -> bool {
        self.rebuilds.lock().map_or(true, |r| {
            r.get(key_id).is_none_or(|(at, _)| *at <= Instant::now())
        })
    }

    /// Records the outcome of a rebuild of `key_id`: after a failure the next try waits
    /// 2 s, 4 s, 8 s, … up to [`MAX_REBUILD_WAIT`].
    pub fn rebuild_done(&self, key_id: &KeyId, ok: bool) {
        if let Ok(mut rebuilds) = self.rebuilds.lock() {
            if ok {
                rebuilds.remove(key_id);
            } else {
                let failures = rebuilds.get(key_id).map_or(0, |r| r.1) + 1;
                let wait =
                    std::time::Duration::from_secs(1 << failures.min(6)).min(MAX_REBUILD_WAIT);
                rebuilds.insert(key_id.clone(), (Instant::now() + wait, failures));
            }
        }
    }
}

/// The longest wait between two rebuilds of a share that keep failing.
pub const MAX_REBUILD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The public key of a stored key, and the sharing of its `epoch`.
///
/// # Errors
///
/// The threshold crate's, for a record that does not describe a usable key.
pub fn key_params(
    key: &KeyInfo,
    epoch: u64,
) -> Result<(RsaPublicKey, SharingParams), ApplianceError> {
    let public = RsaPublicKey::from_be_bytes(&key.modulus, &key.public_exponent)?;
    let sharing = key.sharing(epoch);
    let params = SharingParams::new(usize::from(sharing.threshold), usize::from(sharing.parties))?;
    Ok((public, params))
}

/// The trial input's context: session, key and new epoch.
pub fn trial_context(session: &[u8; 16], key_id: &KeyId, epoch: u64) -> Vec<u8> {
    let mut context = session.to_vec();
    context.extend_from_slice(&epoch.to_be_bytes());
    context.extend_from_slice(key_id.as_bytes());
    context
}

/// Test hooks, in debug builds only: `ITTC_TEST_REFRESH_PAUSE=<role>:<stage>` (role
/// `holder` or `coordinator` of a refresh, `helper` or `target` of a rebuild: stages
/// `helper:masks`, `target:parts`, `target:install`) makes the appliance stop for good
/// right after that step
/// (it prints `refresh paused at <role>:<stage>` on standard error first, so that a test
/// can kill it there); `ITTC_TEST_REFRESH_CORRUPT` makes a holder send one bad value
/// ([`test_hooks::corrupt`]). Release builds read neither.
pub mod test_hooks {
    /// Stops here for good if the test environment asks for it.
    pub fn pause(role: &str, stage: &str) {
        #[cfg(debug_assertions)]
        if std::env::var("ITTC_TEST_REFRESH_PAUSE").is_ok_and(|v| v == format!("{role}:{stage}")) {
            eprintln!("refresh paused at {role}:{stage}");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        let _ = (role, stage);
    }

    /// How this holder should misbehave, if the test environment asks
    /// (`ITTC_TEST_REFRESH_CORRUPT`): `1` a dealt value that is in range but wrong (the
    /// trial catches it), `short` a piece one byte short, `range` a piece out of range
    /// (the recipient refuses both and names the sender).
    pub fn corrupt() -> Option<Corruption> {
        #[cfg(debug_assertions)]
        {
            match std::env::var("ITTC_TEST_REFRESH_CORRUPT").ok()?.as_str() {
                "1" => Some(Corruption::WrongValue),
                "short" => Some(Corruption::ShortPiece),
                "range" => Some(Corruption::PieceOutOfRange),
                _ => None,
            }
        }
        #[cfg(not(debug_assertions))]
        {
            None
        }
    }

    /// The misbehaviours of [`corrupt`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Corruption {
        /// A dealt value with its last bit flipped.
        WrongValue,
        /// A piece one byte short.
        ShortPiece,
        /// A piece of all ones (−1, outside `[0, R)`).
        PieceOutOfRange,
    }
}
