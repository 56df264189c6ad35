//! The types of proactive refresh: what the coordinator asks each holder, what holders send
//! each other, and what status and progress report.
//!
//! A refresh of one key moves the holders that take part from epoch `e` to `e + 1` in
//! named steps ([`RefreshStage`]): each runs its part on a [`crate::Request::RefreshRun`]
//! (rounds of [`crate::Request::RefreshRound`] with the others, then it stores the new
//! epoch as pending and answers with a trial partial); the coordinator combines the trials,
//! then sends [`crate::Request::RefreshStep`]s: ready, commit, erase (or discard, to roll
//! back). A holder that was away catches up later by recovery: on a
//! [`crate::Request::RecoverRun`] from it, `k` holders of the current epoch rebuild its
//! share ([`RecoverSpec`]). docs/security.md describes the protocols and why each step is
//! safe.

use bincode::{Decode, Encode};

use crate::limits::{MAX_ERROR_MESSAGE_LEN, MAX_INTEGER_LEN, MAX_LABEL_LEN, check_len};
use crate::request::check_participant_set;
use crate::{Error, KeyId, MAX_APPLIANCES, Participant, SecretBytes};

/// Longest [`crate::Request::RefreshRound`] message: the values for one recipient, each a
/// two's-complement integer a little longer than a share.
pub const MAX_REFRESH_MESSAGE_LEN: usize = MAX_INTEGER_LEN;

/// Where the values a refresh re-splits come from ([`RefreshSpec::source`]).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum RefreshSource {
    /// The additive shares of these holders, which sum to the key's secret.
    Additive {
        /// The holders, ascending.
        holders: Vec<u8>,
    },
    /// The shares of these `k` holders (when a holder of an additive share is away, or
    /// has none): two more rounds, masks and residues.
    Shares {
        /// The holders, ascending.
        set: Vec<u8>,
    },
}

impl RefreshSource {
    /// The holders whose values are re-split.
    pub fn senders(&self) -> &[u8] {
        match self {
            RefreshSource::Additive { holders } => holders,
            RefreshSource::Shares { set } => set,
        }
    }
}

/// What a coordinator asks each holder that takes part for: refresh the key from
/// `from_epoch` to `from_epoch + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RefreshSpec {
    /// A random session id, the same in the request to every holder.
    pub session: [u8; 16],
    /// The key.
    pub key_id: KeyId,
    /// The epoch every participant must have active (and nothing pending or retiring).
    pub from_epoch: u64,
    /// The coordinator's index: it alone may send this run's steps.
    pub coordinator: u8,
    /// The holder that absorbs the remainders of the re-split.
    pub absorber: u8,
    /// The holders that take part (this one included), ascending, with the address the
    /// others reach each at (an appliance prefers its own `peers` entry). Each receives a
    /// share of the new epoch; a holder not named here is away and catches up by recovery.
    pub participants: Vec<Participant>,
    /// Where the re-split values come from; its holders are participants.
    pub source: RefreshSource,
    /// For a reshare, the new sharing; `None` for a refresh, which keeps the sharing.
    pub reshare: Option<Resharing>,
}

/// The new sharing of a reshare ([`RefreshSpec::reshare`]): the epoch it makes has its own
/// threshold and holders. A participant that is not one of the new holders *leaves*: it
/// sends what it is asked to and erases its share once the reshare is committed. A new
/// holder that does not hold the key yet takes its public facts from here.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Resharing {
    /// `k` of the epoch being left (every holder of it checks this against its own).
    pub old_threshold: u8,
    /// `n` of the epoch being left: its highest index.
    pub old_parties: u8,
    /// `k` of the new epoch, at least 2 and at most the number of its holders.
    pub threshold: u8,
    /// Every holder of the new epoch, ascending; its `n` is the highest of them.
    pub holders: Vec<u8>,
    /// The key's label, at most [`MAX_LABEL_LEN`] bytes.
    pub label: String,
    /// The modulus, big-endian, at most [`MAX_INTEGER_LEN`] bytes.
    pub modulus: Vec<u8>,
    /// The public exponent, big-endian, at most [`MAX_INTEGER_LEN`] bytes.
    pub public_exponent: Vec<u8>,
}

impl Resharing {
    /// `n` of the new epoch: its highest holder's index.
    pub fn parties(&self) -> u8 {
        self.holders.last().copied().unwrap_or(0)
    }

    fn validate(&self) -> Result<(), Error> {
        check_len(self.label.len(), MAX_LABEL_LEN, "key label too long")?;
        for (len, what) in [
            (self.modulus.len(), "modulus too long"),
            (self.public_exponent.len(), "public exponent too long"),
        ] {
            check_len(len, MAX_INTEGER_LEN, what)?;
        }
        let ascending = self.holders.windows(2).all(|w| w[0] < w[1])
            && self
                .holders
                .iter()
                .all(|&i| (1..=MAX_APPLIANCES).contains(&i));
        if !ascending
            || self.threshold < 2
            || usize::from(self.threshold) > self.holders.len()
            || self.old_threshold < 1
            || self.old_threshold > self.old_parties
            || self.old_parties > MAX_APPLIANCES
        {
            return Err(Error::Invalid(
                "a reshare needs ascending holders in 1..=16 and 2 <= k <= their number",
            ));
        }
        Ok(())
    }
}

impl RefreshSpec {
    /// The epoch the refresh makes.
    pub fn to_epoch(&self) -> u64 {
        self.from_epoch.saturating_add(1)
    }

    /// The participants' indices, ascending.
    pub fn indices(&self) -> Vec<u8> {
        self.participants.iter().map(|p| p.index).collect()
    }

    /// The participants that get a share of the new epoch, ascending: every participant
    /// of a refresh; those among the new holders for a reshare.
    pub fn receivers(&self) -> Vec<u8> {
        let mut all = self.indices();
        if let Some(reshare) = &self.reshare {
            all.retain(|i| reshare.holders.contains(i));
        }
        all
    }

    /// Whether `index` takes part and leaves: a participant of a reshare that is not one
    /// of its new holders.
    pub fn leaves(&self, index: u8) -> bool {
        self.reshare
            .as_ref()
            .is_some_and(|r| !r.holders.contains(&index))
            && self.participants.iter().any(|p| p.index == index)
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_participant_set(&self.participants)?;
        if let Some(reshare) = &self.reshare {
            reshare.validate()?;
        }
        let indices = self.indices();
        let receivers = self.receivers();
        // The coordinator's commit is the decision, so it must make the new epoch.
        if !receivers.contains(&self.coordinator) || !receivers.contains(&self.absorber) {
            return Err(Error::Invalid(
                "the coordinator and the absorber must be receivers",
            ));
        }
        let senders = self.source.senders();
        if senders.is_empty()
            || !senders.windows(2).all(|w| w[0] < w[1])
            || !senders.iter().all(|i| indices.contains(i))
        {
            return Err(Error::Invalid(
                "the refresh's senders must be ascending participants",
            ));
        }
        if self.from_epoch == u64::MAX {
            return Err(Error::Invalid("no epoch after the last one"));
        }
        Ok(())
    }
}

/// What a holder behind asks each of `k` helpers holding `epoch` of a key: rebuild its
/// share ([`crate::Request::RecoverRun`], sent by the target itself).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RecoverSpec {
    /// A random session id, the same in the request to every helper.
    pub session: [u8; 16],
    /// The key.
    pub key_id: KeyId,
    /// The epoch to rebuild: every helper's active one.
    pub epoch: u64,
    /// The index whose share is rebuilt (the requester).
    pub target: u8,
    /// The `k` helpers, ascending, with their addresses; the target is not one of them.
    pub helpers: Vec<Participant>,
}

impl RecoverSpec {
    /// The helpers' indices, ascending.
    pub fn indices(&self) -> Vec<u8> {
        self.helpers.iter().map(|p| p.index).collect()
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_participant_set(&self.helpers)?;
        if self.target == 0 || self.target > MAX_APPLIANCES {
            return Err(Error::Invalid("recovery target out of range"));
        }
        if self.helpers.iter().any(|h| h.index == self.target) {
            return Err(Error::Invalid("the recovery target cannot help itself"));
        }
        Ok(())
    }
}

/// A helper's answer to [`crate::Request::RecoverRun`]: its masked contribution to the
/// target's share, with the key's public facts and a trial partial to check the result.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RecoverPart {
    /// The helper's index.
    pub index: u8,
    /// The epoch (the helper's active one).
    pub epoch: u64,
    /// The key's label, at most [`MAX_LABEL_LEN`] bytes.
    pub label: String,
    /// The modulus, big-endian, at most [`MAX_INTEGER_LEN`] bytes.
    pub modulus: Vec<u8>,
    /// The public exponent, big-endian, at most [`MAX_INTEGER_LEN`] bytes.
    pub public_exponent: Vec<u8>,
    /// `k`.
    pub threshold: u8,
    /// `n`.
    pub parties: u8,
    /// The holders whose additive shares of the epoch sum to the key's secret.
    pub additive_holders: Vec<u8>,
    /// Every holder of the epoch's sharing, ascending.
    pub holders: Vec<u8>,
    /// The masked contribution, two's complement, at most [`MAX_INTEGER_LEN`] bytes: alone
    /// it is uniformly masked; the `k` of them add up to `Δ` times the target's share.
    pub contribution: SecretBytes,
    /// The helper's partial on the session's trial input, big-endian, at most
    /// [`MAX_INTEGER_LEN`] bytes.
    pub trial: Vec<u8>,
}

impl RecoverPart {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_len(self.label.len(), MAX_LABEL_LEN, "key label too long")?;
        for (len, what) in [
            (self.modulus.len(), "modulus too long"),
            (self.public_exponent.len(), "public exponent too long"),
            (self.contribution.len(), "recovery contribution too long"),
            (self.trial.len(), "trial partial too long"),
        ] {
            check_len(len, MAX_INTEGER_LEN, what)?;
        }
        check_len(
            self.additive_holders.len(),
            usize::from(MAX_APPLIANCES),
            "too many additive holders",
        )?;
        check_len(
            self.holders.len(),
            usize::from(MAX_APPLIANCES),
            "too many holders",
        )
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
    /// From shares only: the senders agree on masks and publish residues.
    Start,
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
    pub const ALL: [RefreshStage; 10] = [
        RefreshStage::Begin,
        RefreshStage::Start,
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
            RefreshStage::Start => "start",
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
    /// The holders whose additive shares of the active epoch sum to the key's secret
    /// (empty when none do: the next refresh starts from shares).
    pub additive_holders: Vec<u8>,
    /// Whether this appliance keeps an additive share of the active epoch.
    pub has_additive: bool,
}

impl RefreshStatus {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_len(
            self.additive_holders.len(),
            usize::from(MAX_APPLIANCES),
            "too many additive holders",
        )?;
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
            source: RefreshSource::Additive {
                holders: vec![1, 2, 3],
            },
            reshare: None,
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
        // Holder 2 away: a refresh by 1 and 3 from their shares.
        let mut s = spec();
        s.participants.remove(1);
        assert!(s.validate().is_err(), "2's additive share is needed");
        s.source = RefreshSource::Shares { set: vec![1, 3] };
        assert!(s.validate().is_ok());
        s.source = RefreshSource::Shares { set: vec![3, 1] };
        assert!(s.validate().is_err());
        s.absorber = 2;
        s.source = RefreshSource::Shares { set: vec![1, 3] };
        assert!(s.validate().is_err());
    }

    #[test]
    fn reshares_are_validated() {
        let resharing = |threshold: u8, holders: Vec<u8>| Resharing {
            old_threshold: 2,
            old_parties: 3,
            threshold,
            holders,
            label: "k".into(),
            modulus: vec![0xc5; 256],
            public_exponent: vec![3],
        };
        // 2-of-{1, 2, 3} to 2-of-{1, 3}: appliance 2 sends and leaves.
        let mut s = spec();
        s.reshare = Some(resharing(2, vec![1, 3]));
        assert!(s.validate().is_ok());
        assert_eq!(s.receivers(), vec![1, 3]);
        assert!(s.leaves(2) && !s.leaves(1) && !s.leaves(4));
        assert_eq!(s.reshare.as_ref().map(Resharing::parties), Some(3));
        // The coordinator and the absorber must get the new epoch.
        for (coordinator, absorber) in [(2, 1), (1, 2)] {
            let mut bad = s.clone();
            bad.coordinator = coordinator;
            bad.absorber = absorber;
            assert!(bad.validate().is_err(), "{coordinator} {absorber}");
        }
        for bad in [
            resharing(1, vec![1, 3]),
            resharing(3, vec![1, 3]),
            resharing(2, vec![3, 1]),
            resharing(2, vec![1, 17]),
        ] {
            let mut bad_spec = spec();
            bad_spec.reshare = Some(bad);
            assert!(bad_spec.validate().is_err());
        }
    }

    #[test]
    fn recovery_specs_are_validated() {
        let helpers = |indices: &[u8]| {
            indices
                .iter()
                .map(|&index| Participant {
                    index,
                    address: "127.0.0.1:7301".into(),
                })
                .collect()
        };
        let spec = RecoverSpec {
            session: [2; 16],
            key_id: KeyId::new(b"k".to_vec()).unwrap(),
            epoch: 7,
            target: 3,
            helpers: helpers(&[1, 2]),
        };
        assert!(spec.validate().is_ok());
        assert_eq!(spec.indices(), vec![1, 2]);
        for bad in [
            RecoverSpec {
                target: 2,
                ..spec.clone()
            },
            RecoverSpec {
                target: 0,
                ..spec.clone()
            },
            RecoverSpec {
                helpers: helpers(&[2, 1]),
                ..spec.clone()
            },
            RecoverSpec {
                helpers: helpers(&[1, 1]),
                ..spec.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
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
