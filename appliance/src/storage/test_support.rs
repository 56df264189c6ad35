//! Helpers shared by the storage tests.

use std::path::Path;

use ittc_wire::KeyId;

use super::{EpochSecret, SealingKey, ShareInput, Storage, StorageError, StorageOptions};

/// The bytes of the tests' sealing key.
pub(super) const TEST_KEY: [u8; 32] = [0x42; 32];

/// The sealing key of the tests.
pub(super) fn test_key() -> SealingKey {
    SealingKey::from_bytes(TEST_KEY)
}

/// Cheap Argon2 parameters (the minimum memory) and a limit of 3 wrong PINs.
pub(super) fn test_options() -> StorageOptions {
    StorageOptions {
        max_pin_failures: 3,
        argon2_m_cost_kib: 8,
        argon2_t_cost: 1,
        argon2_p_cost: 1,
        ..StorageOptions::default()
    }
}

/// Opens (or creates) the store in `dir` with the test key and options.
///
/// sled's background flusher keeps the file lock of a dropped database for up to its flush
/// interval, so a reopen in the same process retries for a while (a restarted appliance is
/// a new process and never waits).
pub(super) fn open(dir: &Path, appliance_index: u8) -> Storage {
    try_open(dir, TEST_KEY, appliance_index, test_options()).unwrap()
}

/// [`Storage::open`], retried while the previous handle's lock is still held.
pub(super) fn try_open(
    dir: &Path,
    key: [u8; 32],
    appliance_index: u8,
    options: StorageOptions,
) -> Result<Storage, StorageError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let attempt = SealingKey::from_bytes(key);
        match Storage::open(dir, attempt, appliance_index, options.clone()) {
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// A 2-of-3 share of key `id` for `epoch` and appliance `index`.
pub(super) fn share_input(id: &[u8], epoch: u64, index: u8) -> ShareInput {
    ShareInput {
        key_id: KeyId::new(id.to_vec()).unwrap(),
        label: "signing".into(),
        epoch,
        index,
        threshold: 2,
        parties: 3,
        modulus: vec![0xc5; 256],
        public_exponent: vec![1, 0, 1],
        secret: secret_for(epoch),
        holders: vec![1, 2, 3],
        additive_holders: vec![1, 2, 3],
        refresh: None,
        joins: false,
    }
}

/// The secrets [`share_input`] stores for `epoch`.
pub(super) fn secret_for(epoch: u64) -> EpochSecret {
    EpochSecret {
        additive: Some(vec![0x3c ^ epoch as u8; 320]),
        share: vec![0x5a ^ epoch as u8; 300],
    }
}
