//! The storage error type, and the conversions from sled's errors (which stay private to
//! this module: no sled type appears in the public API).

use std::io;
use std::path::PathBuf;

use ittc_wire::KeyId;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// Why a storage operation failed.
///
/// Messages name keys, epochs, indices and fields, never a secret value (no share, PIN,
/// PIN hash or sealing key byte).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The key already has a share for this epoch (active or pending).
    #[error("key {key_id} already has a share for epoch {epoch}")]
    AlreadyExists {
        /// The key.
        key_id: KeyId,
        /// The epoch offered.
        epoch: u64,
    },

    /// The epoch does not fit the key: a share offered for an epoch older than the active
    /// one, or a commit of an epoch that is not the pending one.
    #[error(
        "epoch {epoch} does not fit key {key_id} (active epoch {}, pending epoch {})",
        show_epoch(*.active),
        show_epoch(*.pending)
    )]
    WrongEpoch {
        /// The key.
        key_id: KeyId,
        /// The epoch offered.
        epoch: u64,
        /// The key's active epoch, if it has one.
        active: Option<u64>,
        /// The key's pending epoch, if it has one.
        pending: Option<u64>,
    },

    /// No share of that key is stored here.
    #[error("no key {key_id}")]
    UnknownKey {
        /// The key.
        key_id: KeyId,
    },

    /// Another epoch of the key is already pending; it must be committed or discarded
    /// before a share of a further epoch is stored.
    #[error("key {key_id} already has epoch {pending} pending")]
    PendingEpoch {
        /// The key.
        key_id: KeyId,
        /// The epoch that is pending.
        pending: u64,
    },

    /// The previous refresh of the key has not erased its old epoch yet: no new refresh may
    /// start until it has.
    #[error("key {key_id}: the previous refresh has not erased its old epoch yet")]
    RefreshUnfinished {
        /// The key.
        key_id: KeyId,
    },

    /// A refresh step names another refresh session than the one the key's pending or
    /// retiring epoch comes from.
    #[error("key {key_id}: the step belongs to another refresh")]
    OtherSession {
        /// The key.
        key_id: KeyId,
    },

    /// A newer version of the object is stored (or another record with the same version).
    #[error("object {}: a newer version is stored", .handle.0)]
    Superseded {
        /// The object.
        handle: ittc_wire::ObjectId,
    },

    /// The share is for another appliance.
    #[error("share for appliance {got} offered to appliance {expected}")]
    WrongIndex {
        /// This appliance's index.
        expected: u8,
        /// The index in the share record.
        got: u8,
    },

    /// The key exists with different public parameters.
    #[error("key {key_id} exists with a different {field}")]
    Conflict {
        /// The key.
        key_id: KeyId,
        /// Which field differs: `"label"`, `"modulus"`, `"public exponent"`,
        /// `"threshold"` or `"parties"`.
        field: &'static str,
    },

    /// A sealed value failed to unseal: it was modified, or moved to another key, epoch or
    /// appliance. Deliberately without detail.
    #[error("a sealed value failed to unseal")]
    Unseal,

    /// The sealing key does not open this database.
    #[error("the sealing key does not open this database")]
    WrongSealingKey,

    /// The database belongs to another appliance index.
    #[error("the database belongs to appliance {stored}, not {given}")]
    WrongAppliance {
        /// The index recorded when the database was created.
        stored: u8,
        /// The index given to [`super::Storage::open`].
        given: u8,
    },

    /// The database was written with another schema version.
    #[error("database schema version {found}, this build expects {expected}")]
    Schema {
        /// The version in the database.
        found: u32,
        /// The version this build writes.
        expected: u32,
    },

    /// The sealing key file is not 64 hexadecimal characters (and an optional newline).
    #[error("sealing key file {}: {reason}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its contents).
        reason: &'static str,
    },

    /// An argument breaks a documented limit (an empty share, a label too long, an
    /// appliance index of 0, Argon2 parameters out of range, …).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),

    /// A stored value is missing or does not decode.
    #[error("corrupt database: {0}")]
    Corrupt(String),

    /// The database engine failed.
    #[error("database error: {0}")]
    Db(String),

    /// Reading a file or the database's files failed (including the database being locked
    /// by another process).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// An epoch in a message: its number, or `none`.
fn show_epoch(epoch: Option<u64>) -> String {
    epoch.map_or_else(|| "none".to_owned(), |e| e.to_string())
}

/// Converts sled's error into ours.
pub(super) fn from_sled(err: sled::Error) -> StorageError {
    match err {
        sled::Error::Io(io) => StorageError::Io(io),
        other => StorageError::Db(other.to_string()),
    }
}

/// `.db()` on sled results: turns sled's errors into [`StorageError`].
pub(super) trait SledResultExt<T> {
    /// Converts the error.
    fn db(self) -> Result<T, StorageError>;
}

impl<T> SledResultExt<T> for Result<T, sled::Error> {
    fn db(self) -> Result<T, StorageError> {
        self.map_err(from_sled)
    }
}

impl<T> SledResultExt<T> for Result<T, TransactionError<StorageError>> {
    fn db(self) -> Result<T, StorageError> {
        self.map_err(|err| match err {
            TransactionError::Abort(err) => err,
            TransactionError::Storage(err) => from_sled(err),
        })
    }
}

/// The error type of a transaction closure.
pub(super) type TxError = ConflictableTransactionError<StorageError>;

/// Aborts a transaction with `err`.
pub(super) fn abort(err: StorageError) -> TxError {
    ConflictableTransactionError::Abort(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_errors_unwrap_to_the_cause() {
        let aborted: Result<(), TransactionError<StorageError>> =
            Err(TransactionError::Abort(StorageError::Unseal));
        assert!(matches!(aborted.db(), Err(StorageError::Unseal)));
        let storage: Result<(), TransactionError<StorageError>> = Err(TransactionError::Storage(
            sled::Error::Unsupported("x".into()),
        ));
        assert!(matches!(storage.db(), Err(StorageError::Db(_))));
        let io: Result<(), sled::Error> = Err(sled::Error::Io(io::Error::other("locked")));
        assert!(matches!(io.db(), Err(StorageError::Io(_))));
    }
}
