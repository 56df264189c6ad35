//! What can go wrong while generating a key without a dealer.
//!
//! A separate enum from [`crate::Error`] because it describes a conversation between
//! parties, not arithmetic on one key; it wraps the crate error where that arithmetic fails.

/// Everything that can go wrong in [`Party::step`](super::Party::step).
///
/// Messages name the sender and what was wrong; they never contain secret values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeygenError {
    /// The parameters cannot be used (see [`KeygenParams`](super::KeygenParams)).
    #[error("key-generation parameters rejected: {0}")]
    Params(&'static str),
    /// A message names a sender outside `1..=n`, this party itself, or one that already sent
    /// in this round.
    #[error("message from unknown or repeated party {from} (parties are 1..={n})")]
    UnknownParty {
        /// The sender the message claims.
        from: usize,
        /// Number of parties.
        n: usize,
    },
    /// A round's input does not hold exactly one message from every other party.
    #[error("round {round}: expected one message from each of {expected} parties, got {got}")]
    MissingMessages {
        /// The round that was being completed.
        round: u32,
        /// How many messages were expected.
        expected: usize,
        /// How many arrived.
        got: usize,
    },
    /// A message belongs to another round or phase than the one being completed.
    #[error("message from party {from} does not belong to round {round}: {reason}")]
    UnexpectedMessage {
        /// The sender.
        from: usize,
        /// The round that was being completed.
        round: u32,
        /// What did not match.
        reason: &'static str,
    },
    /// A message of the right kind whose contents are malformed: wrong length, a value out
    /// of range.
    #[error("malformed message from party {from}: {reason}")]
    BadMessage {
        /// The sender.
        from: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// The parties' values do not fit together: with semi-honest parties this cannot happen,
    /// so some party deviated from the protocol (or a message was corrupted in transit).
    #[error("the parties' values are inconsistent: {0}")]
    Inconsistent(&'static str),
    /// `step` was called after the protocol finished or failed.
    #[error("the key generation has already finished or failed")]
    Finished,
    /// No modulus was found within the configured number of batches.
    #[error("no RSA modulus found in {batches} batches")]
    GaveUp {
        /// Batches tried.
        batches: u32,
    },
    /// An error from the threshold arithmetic (building the public key or the share).
    #[error(transparent)]
    Threshold(#[from] crate::Error),
}
