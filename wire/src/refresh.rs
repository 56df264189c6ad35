//! The types of proactive refresh: what the coordinator asks each holder, what holders send
//! each other, and what status and progress report.
//!
//! A refresh of one key moves every holder from epoch `e` to `e + 1` in named steps
//! ([`RefreshStage`]): each holder runs its part on a [`crate::Request::RefreshRun`]
//! (two rounds of [`crate::Request::RefreshRound`] with the others, then it stores the new
//! epoch as pending and answers with a trial partial); the coordinator combines the trials,
//! then sends [`crate::Request::RefreshStep`]s: ready, commit, erase (or discard, to roll
//! back). docs/security.md describes the protocol and why each step is safe.

use bincode::{Decode, Encode};

use crate::limits::{MAX_ERROR_MESSAGE_LEN, MAX_INTEGER_LEN, check_len};
use crate::request::check_participants;
use crate::{Error, KeyId, Participant};

/// Longest [`crate::Request::RefreshRound`] message: the values for one recipient, each a
/// two's-complement integer a little longer than a share.
pub const MAX_REFRESH_MESSAGE_LEN: usize = MAX_INTEGER_LEN;

/// What a coordinator asks each holder of a key for: take part in refreshing it from
/// `from_epoch` to `from_epoch + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RefreshSpec {
    /// A random session id, the same in the request to every holder.
    pub session: [u8; 16],
    /// The key.
    pub key_id: KeyId,
    /// The epoch every holder must have active (and nothing pending or retiring).
    pub from_epoch: u64,
    /// The coordinator's index: it alone may send this run's steps.
    pub coordinator: u8,
    /// The holder that absorbs the remainders of the re-split.
    pub absorber: u8,
    /// Every holder (this one included), indices exactly `1..=n`, in order, with the
    /// address the others reach it at (an appliance prefers its own `peers` entry).
    pub participants: Vec<Participant>,
}

impl RefreshSpec {
    /// The epoch the refresh makes.
    pub fn to_epoch(&self) -> u64 {
        self.from_epoch.saturating_add(1)
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let n = usize::from(check_participants(&self.participants)?);
        for index in [self.coordinator, self.absorber] {
            if index == 0 || usize::from(index) > n {
                return Err(Error::Invalid(
                    "coordinator and absorber must be participants",
                ));
            }
        }
        if self.from_epoch == u64::MAX {
            return Err(Error::Invalid("no epoch after the last one"));
        }
        Ok(())
    }
}

/// One step a coordinator asks a holder to take, after every holder has stored the new
/// epoch ([`crate::Request::RefreshStep`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum RefreshStepKind {
    /// The trial verified: the pending epoch may answer clients too.
    Ready,
    /// Make the pending epoch active; keep the old one as retiring.
    Commit,
    /// Every holder has committed: erase the retiring epoch for good.
    Erase,
    /// Roll back: delete the pending epoch (the refresh failed before any commit).
    Discard,
}

impl RefreshStepKind {
    /// A short fixed name, e.g. `"commit"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshStepKind::Ready => "ready",
            RefreshStepKind::Commit => "commit",
            RefreshStepKind::Erase => "erase",
            RefreshStepKind::Discard => "discard",
        }
    }
}

/// A holder's answer to [`crate::Request::RefreshRun`]: it stored its new secrets as the
/// pending epoch, and raised the session's public trial input to its new share.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RefreshStored {
    /// The holder's index.
    pub index: u8,
    /// The pending epoch stored.
    pub epoch: u64,
    /// The trial partial, big-endian, at most [`MAX_INTEGER_LEN`] bytes.
    pub trial: Vec<u8>,
}

/// The named steps of a refresh, in order, as progress and status report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum RefreshStage {
    /// The coordinator asks every holder to take part.
    Begin,
    /// Holders send each other the pieces of their additive shares.
    Split,
    /// Holders send each other their dealings.
    Deal,
    /// Holders store the new epoch as pending.
    Store,
    /// The coordinator combines every holder's trial partial.
    Trial,
    /// Holders mark the pending epoch verified.
    Ready,
    /// Holders make the new epoch active.
    Commit,
    /// Holders erase the old epoch.
    Erase,
    /// Finished.
    Done,
}

impl Default for RefreshStage {
    /// [`RefreshStage::Begin`].
    fn default() -> Self {
        RefreshStage::Begin
    }
}

impl RefreshStage {
    /// Every stage, in order.
    pub const ALL: [RefreshStage; 9] = [
        RefreshStage::Begin,
        RefreshStage::Split,
        RefreshStage::Deal,
        RefreshStage::Store,
        RefreshStage::Trial,
        RefreshStage::Ready,
        RefreshStage::Commit,
        RefreshStage::Erase,
        RefreshStage::Done,
    ];

    /// A short fixed name, e.g. `"trial"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshStage::Begin => "begin",
            RefreshStage::Split => "split",
            RefreshStage::Deal => "deal",
            RefreshStage::Store => "store",
            RefreshStage::Trial => "trial",
            RefreshStage::Ready => "ready",
            RefreshStage::Commit => "commit",
            RefreshStage::Erase => "erase",
            RefreshStage::Done => "done",
        }
    }

    /// The stage named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// How far a refresh coordinated by this appliance has got
/// ([`crate::Request::RefreshProgress`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RefreshProgress {
    /// The step under way (or `Done`).
    pub stage: RefreshStage,
    /// Time since the refresh started, in milliseconds.
    pub elapsed_ms: u64,
}

/// The answer to [`crate::Request::RefreshKey`]: the refresh is over.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RefreshOutcome {
    /// The epoch the key had.
    pub from_epoch: u64,
    /// The epoch it has now, active on every holder.
    pub to_epoch: u64,
    /// Whether every holder erased the old epoch already (else their own recovery will).
    pub erased: bool,
    /// Time it took, in milliseconds.
    pub elapsed_ms: u64,
}

/// Refresh state of one key on one appliance, in [`crate::KeyStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct RefreshStatus {
    /// When this appliance last made a new epoch of the key active (Unix ms).
    pub last_refresh_unix_ms: Option<u64>,
    /// When this appliance will next start a refresh of the key, if it coordinates them
    /// (Unix ms); `None` when refresh is off or another appliance coordinates.
    pub next_due_unix_ms: Option<u64>,
    /// The last refresh of the key that failed here, if it has not succeeded since.
    pub last_failure: Option<RefreshFailure>,
    /// The session of a refresh running on this appliance for the key, if any.
    pub running: Option<[u8; 16]>,
    /// The coordinator of the pending or retiring epoch, if there is one.
    pub coordinator: Option<u8>,
}

impl RefreshStatus {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if let Some(failure) = &self.last_failure {
            check_len(
                failure.reason.len(),
                MAX_ERROR_MESSAGE_LEN,
                "refresh failure reason too long",
            )?;
        }
        Ok(())
    }
}

/// A refresh that failed: when, and why (never secret values).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RefreshFailure {
    /// When it failed (Unix ms).
    pub time_unix_ms: u64,
    /// Why, at most [`MAX_ERROR_MESSAGE_LEN`] bytes.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RefreshSpec {
        RefreshSpec {
            session: [1; 16],
            key_id: KeyId::new(b"k".to_vec()).unwrap(),
            from_epoch: 3,
            coordinator: 1,
            absorber: 1,
            participants: (1..=3)
                .map(|index| Participant {
                    index,
                    address: format!("127.0.0.1:{}", 7300 + u16::from(index)),
                })
                .collect(),
        }
    }

    #[test]
    fn specs_are_validated() {
        assert!(spec().validate().is_ok());
        assert_eq!(spec().to_epoch(), 4);
        let mut s = spec();
        s.absorber = 4;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.coordinator = 0;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.participants.swap(0, 1);
        assert!(s.validate().is_err());
        let mut s = spec();
        s.from_epoch = u64::MAX;
        assert!(s.validate().is_err());
    }

    #[test]
    fn stages_have_distinct_names_in_order() {
        for (i, stage) in RefreshStage::ALL.iter().enumerate() {
            assert_eq!(RefreshStage::from_name(stage.as_str()), Some(*stage));
            assert!(
                RefreshStage::ALL[..i]
                    .iter()
                    .all(|s| s.as_str() != stage.as_str())
            );
        }
        assert_eq!(RefreshStage::from_name("nope"), None);
    }
}
