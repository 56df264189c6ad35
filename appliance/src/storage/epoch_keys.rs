//! One AES-256 key per share epoch, each in a file of its own outside the database, so that
//! erasing an epoch can destroy what opens it.
//!
//! sled is log-structured: a removed record stays in a log segment until sled reuses the
//! segment, so deleting a sealed share from the database does not remove its bytes from
//! the disk. Each epoch's share is therefore sealed under its own random key, kept in
//! `<data_dir>/epoch-keys/<key id in hex>-<epoch>-<tag>`, itself sealed under the
//! appliance's sealing key (additional data: domain, appliance index, key id, epoch, tag).
//! The tag is random and recorded with the sealed share, so a new key never replaces
//! another one's file. Erasing an epoch overwrites its file with zeros, syncs it and
//! removes it: what is left of the share in sled's segments can no longer be opened with
//! anything on disk.
//!
//! Limits: overwriting in place reaches the blocks the file used on filesystems that
//! overwrite in place (ext4, xfs); a copy-on-write filesystem, a filesystem journal of
//! data, or an SSD's flash translation layer may keep older copies (docs/security.md).
//!
//! Unsealed epoch keys are cached in memory (a partial operation then reads no file); a
//! destroyed key leaves the cache first.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ittc_wire::KeyId;
use zeroize::Zeroizing;

use super::seal::{Sealed, SealingKey};
use super::{StorageError, codec};

/// Domain separation of the additional data of an epoch key.
const EPOCH_KEY_DOMAIN: &[u8] = b"ittc-epoch-key-v1\0";

/// The folder, inside the data directory.
pub(super) const DIR_NAME: &str = "epoch-keys";

/// Longest epoch key file accepted (a sealed 32-byte key is about 70 bytes).
const MAX_FILE_LEN: u64 = 1024;

/// The epoch keys of one appliance.
pub(super) struct EpochKeys {
    dir: PathBuf,
    appliance_index: u8,
    cache: Mutex<HashMap<Name, Arc<SealingKey>>>,
}

/// Which key a file holds: the key id, the epoch and the tag.
pub(super) type Name = (KeyId, u64, u64);

impl EpochKeys {
    /// The epoch keys in `data_dir` (the folder is created if absent).
    pub(super) fn open(data_dir: &Path, appliance_index: u8) -> Result<Self, StorageError> {
        let dir = data_dir.join(DIR_NAME);
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            appliance_index,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The folder of the key files.
    #[cfg(test)]
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, (key_id, epoch, tag): &Name) -> PathBuf {
        self.dir.join(format!("{key_id}-{epoch}-{tag:016x}"))
    }

    fn aad(&self, (key_id, epoch, tag): &Name) -> Vec<u8> {
        let id = key_id.as_bytes();
        let mut aad = EPOCH_KEY_DOMAIN.to_vec();
        aad.push(self.appliance_index);
        aad.extend_from_slice(&u64::try_from(id.len()).unwrap_or(u64::MAX).to_be_bytes());
        aad.extend_from_slice(id);
        aad.extend_from_slice(&epoch.to_be_bytes());
        aad.extend_from_slice(&tag.to_be_bytes());
        aad
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Name, Arc<SealingKey>>> {
        // A poisoned cache only lost entries that are on disk anyway.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes a new random key for `(key_id, epoch)` under a new random tag and writes it
    /// durably (a file written in full and synced, then renamed into place, then the
    /// folder synced). Returns the tag, which names the key from now on.
    pub(super) fn create(
        &self,
        master: &SealingKey,
        key_id: &KeyId,
        epoch: u64,
    ) -> Result<(u64, Arc<SealingKey>), StorageError> {
        let name = (key_id.clone(), epoch, rand::random::<u64>());
        let key = SealingKey::generate();
        let sealed = master.seal(key.as_bytes(), &self.aad(&name))?;
        let bytes = codec::encode(&sealed)?;
        let path = self.path(&name);
        let tmp = path.with_extension("tmp");
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        let key = Arc::new(key);
        let tag = name.2;
        self.cache().insert(name, key.clone());
        Ok((tag, key))
    }

    /// The key `name`, or `None` if there is none on disk.
    pub(super) fn get(
        &self,
        master: &SealingKey,
        name: &Name,
    ) -> Result<Option<Arc<SealingKey>>, StorageError> {
        if let Some(key) = self.cache().get(name) {
            return Ok(Some(key.clone()));
        }
        let mut bytes = Vec::new();
        match File::open(self.path(name)) {
            Ok(file) => {
                file.take(MAX_FILE_LEN).read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let sealed: Sealed = codec::decode(&bytes, "epoch key")?;
        let plain = master.unseal(&sealed, &self.aad(name))?;
        let raw: Zeroizing<[u8; 32]> = Zeroizing::new(
            plain
                .as_slice()
                .try_into()
                .map_err(|_| StorageError::Corrupt("an epoch key of the wrong length".into()))?,
        );
        let key = Arc::new(SealingKey::from_bytes(*raw));
        self.cache().insert(name.clone(), key.clone());
        Ok(Some(key))
    }

    /// Destroys the key `name`: out of the cache, the file overwritten with zeros and
    /// synced, then removed and the folder synced. Nothing to do if it is gone.
    pub(super) fn destroy(&self, name: &Name) -> Result<(), StorageError> {
        self.cache().remove(name);
        destroy_file(&self.path(name))?;
        sync_dir(&self.dir)
    }

    /// Every key that has a file, and removes leftover temporary files (of a crash in the
    /// middle of [`EpochKeys::create`]).
    pub(super) fn list(&self) -> Result<Vec<Name>, StorageError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                destroy_file(&path)?;
                continue;
            }
            if let Some(parsed) = parse_name(name) {
                found.push(parsed);
            }
        }
        Ok(found)
    }
}

/// The name of a file `<hex>-<epoch>-<tag>`.
fn parse_name(name: &str) -> Option<Name> {
    let (rest, tag) = name.rsplit_once('-')?;
    let (hex, epoch) = rest.rsplit_once('-')?;
    let epoch = epoch.parse().ok()?;
    if tag.len() != 16 {
        return None;
    }
    let tag = u64::from_str_radix(tag, 16).ok()?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((KeyId::new(bytes).ok()?, epoch, tag))
}

/// Overwrites a file with zeros, syncs it and removes it; nothing if it does not exist.
fn destroy_file(path: &Path) -> Result<(), StorageError> {
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let len = usize::try_from(file.metadata()?.len().min(MAX_FILE_LEN)).unwrap_or(0);
    file.write_all(&vec![0u8; len])?;
    file.sync_all()?;
    drop(file);
    fs::remove_file(path)?;
    Ok(())
}

/// Syncs a folder, so that a rename or removal in it is durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(bytes: &[u8]) -> KeyId {
        KeyId::new(bytes.to_vec()).unwrap()
    }

    #[test]
    fn keys_survive_a_reopen_and_destroyed_keys_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let master = SealingKey::from_bytes([3; 32]);
        let keys = EpochKeys::open(dir.path(), 2).unwrap();
        let (tag, made) = keys.create(&master, &id(b"k"), 7).unwrap();
        let name = (id(b"k"), 7, tag);
        // A second key of the same epoch does not replace the first.
        let (other_tag, _) = keys.create(&master, &id(b"k"), 7).unwrap();
        assert_ne!(tag, other_tag);
        let again = EpochKeys::open(dir.path(), 2).unwrap();
        let read = again.get(&master, &name).unwrap().unwrap();
        assert_eq!(made.as_bytes(), read.as_bytes());
        let mut listed = again.list().unwrap();
        listed.sort_by_key(|n| n.2);
        let mut expected = vec![name.clone(), (id(b"k"), 7, other_tag)];
        expected.sort_by_key(|n| n.2);
        assert_eq!(listed, expected);
        assert!(again.get(&master, &(id(b"k"), 8, tag)).unwrap().is_none());
        // Another appliance's index, or another master key, does not open it.
        let other = EpochKeys::open(dir.path(), 3).unwrap();
        assert!(matches!(
            other.get(&master, &name),
            Err(StorageError::Unseal)
        ));
        let wrong = SealingKey::from_bytes([4; 32]);
        assert!(matches!(
            EpochKeys::open(dir.path(), 2).unwrap().get(&wrong, &name),
            Err(StorageError::Unseal)
        ));
        again.destroy(&name).unwrap();
        assert!(again.get(&master, &name).unwrap().is_none());
        assert_eq!(keys.list().unwrap().len(), 1);
        // Destroying what is gone is fine.
        again.destroy(&name).unwrap();
    }

    #[test]
    fn leftover_temporary_files_are_removed_and_names_parse() {
        let dir = tempfile::tempdir().unwrap();
        let keys = EpochKeys::open(dir.path(), 1).unwrap();
        let folder = dir.path().join(DIR_NAME);
        fs::write(folder.join("6b-3-0000000000000001.tmp"), b"junk").unwrap();
        fs::write(folder.join("not a key"), b"junk").unwrap();
        assert!(keys.list().unwrap().is_empty());
        assert!(!folder.join("6b-3-0000000000000001.tmp").exists());
        assert_eq!(
            parse_name("6b-3-00000000000000ff"),
            Some((id(b"k"), 3, 255))
        );
        assert_eq!(
            parse_name("6b6b-18446744073709551615-ffffffffffffffff"),
            Some((id(b"kk"), u64::MAX, u64::MAX))
        );
        for bad in [
            "6b-3",
            "6-3-0000000000000001",
            "zz-3-0000000000000001",
            "6b-x-0000000000000001",
            "6b-3-1",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
