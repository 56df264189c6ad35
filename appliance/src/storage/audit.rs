//! The audit log: append-only and hash-chained.
//!
//! Entry `i` is stored under its sequence number `i` (0, 1, 2, …) with the previous hash
//! and its own:
//!
//! ```text
//! hash_i = SHA-256(hash_(i-1) || encode(i, entry_i))      hash_(-1) = 32 zero bytes
//! ```
//!
//! where `encode` is bincode 2 with fixed-size little-endian integers: `i` as 8 bytes, then
//! the entry's fields in order (`time_unix_ms` as 8 bytes, each string as an 8-byte length
//! and its UTF-8 bytes, the optional key id as a 0 or 1 byte and, if 1, the string). Every
//! value has exactly one encoding, so the hash is a function of the entry.
//!
//! The head (the next sequence number and the last hash) is stored after each entry, so a
//! missing last entry is detected too; an entry whose head a crash kept from being stored
//! is adopted at the next start if it links. Appends are serialized by a mutex around the
//! cached head and read nothing from the chain.

use std::path::Path;
use std::sync::MutexGuard;

use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};

use super::audit_export::{ExportDir, FileReader, list_files, load_base};
use super::error::SledResultExt;
use super::{PendingFlush, Storage, StorageError, codec};

const META_AUDIT_HEAD: &[u8] = b"audit_head";

/// Longest string field of an [`AuditEntry`], in bytes.
pub const MAX_AUDIT_FIELD_LEN: usize = 4096;

/// One audited request. Holds no secret: the daemon writes the request's kind, never its
/// data.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AuditEntry {
    /// When the request was handled, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// Who sent it (the peer certificate's name), at most [`MAX_AUDIT_FIELD_LEN`] bytes.
    pub client: String,
    /// What it asked for (e.g. `Request::kind`), at most [`MAX_AUDIT_FIELD_LEN`] bytes.
    pub request: String,
    /// The key it concerned, if any (printed as hex), at most [`MAX_AUDIT_FIELD_LEN`]
    /// bytes.
    pub key_id: Option<String>,
    /// The outcome (`"ok"` or an error code), at most [`MAX_AUDIT_FIELD_LEN`] bytes.
    pub result: String,
}

/// The head of the audit chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AuditHead {
    /// The next sequence number, which is the number of entries.
    pub seq: u64,
    /// The hash of the last entry; 32 zero bytes before the first.
    pub hash: [u8; 32],
}

impl AuditHead {
    /// The head of an empty log.
    pub const GENESIS: Self = Self {
        seq: 0,
        hash: [0; 32],
    };
}

/// The result of [`Storage::audit_verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditReport {
    /// Every entry up to the head is present and linked.
    Intact {
        /// How many entries there are.
        entries: u64,
        /// The verified head.
        head: AuditHead,
        /// How many of them are in export files (the first ones).
        exported: u64,
        /// How many export files hold them.
        files: u64,
    },
    /// The chain is broken; `seq` is the first entry found broken.
    Broken {
        /// The first broken (or missing) entry's sequence number.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// An entry as stored, under the key `seq` (8 bytes, big-endian).
#[derive(Encode, Decode)]
pub(super) struct StoredEntry {
    pub(super) seq: u64,
    pub(super) prev: [u8; 32],
    pub(super) hash: [u8; 32],
    pub(super) entry: AuditEntry,
}

/// `SHA-256(prev || encode(seq, entry))`.
pub(super) fn chain_hash(
    prev: &[u8; 32],
    seq: u64,
    entry: &AuditEntry,
) -> Result<[u8; 32], StorageError> {
    let body = codec::encode(&(seq, entry))?;
    Ok(Sha256::new()
        .chain_update(prev)
        .chain_update(&body)
        .finalize()
        .into())
}

fn broken(seq: u64, reason: String) -> AuditReport {
    AuditReport::Broken { seq, reason }
}

/// An export file's name, for reports.
fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Checks one export file, named as starting at `named`, from the chain's position `at`
/// on; moves `at` past its last entry. Names the first broken line.
fn verify_file(
    path: &Path,
    named: u64,
    at: &mut AuditHead,
) -> Result<Option<AuditReport>, StorageError> {
    let name = display_name(path);
    let mut reader = FileReader::open(path)?;
    let (first, prev) = match reader.header()? {
        Ok(header) => header,
        Err(why) => return Ok(Some(broken(at.seq, format!("{name} line 1: {why}")))),
    };
    if first != named {
        let reason = format!("{name} line 1: the header says the file starts at entry {first}");
        return Ok(Some(broken(at.seq, reason)));
    }
    if first > at.seq {
        let reason = format!(
            "entries {} to {} are missing: the next export file, {name}, starts at entry {first}",
            at.seq,
            first - 1
        );
        return Ok(Some(broken(at.seq, reason)));
    }
    if first < at.seq {
        let reason = format!("{name} starts at entry {first}, which an earlier file holds");
        return Ok(Some(broken(first, reason)));
    }
    if prev != at.hash {
        let reason = format!("{name} line 1: the header does not link to the entry before it");
        return Ok(Some(broken(first, reason)));
    }
    while let Some(line) = reader.entry()? {
        let seq = at.seq;
        let line = match line {
            Ok(line) => line,
            Err(why) => {
                return Ok(Some(broken(
                    seq,
                    format!("{name} line {}: {why}", reader.line),
                )));
            }
        };
        if line.seq != seq {
            let reason = format!(
                "{name} line {} is entry {}, not {seq}",
                reader.line, line.seq
            );
            return Ok(Some(broken(seq, reason)));
        }
        let hash = chain_hash(&at.hash, seq, &line.entry)?;
        if hash != line.hash {
            let reason = format!(
                "{name} line {}: the entry does not match its hash",
                reader.line
            );
            return Ok(Some(broken(seq, reason)));
        }
        *at = AuditHead {
            seq: seq.saturating_add(1),
            hash,
        };
    }
    Ok(None)
}

/// The stored head, or the genesis head for an empty log.
pub(super) fn load_head(meta: &sled::Tree) -> Result<AuditHead, StorageError> {
    match meta.get(META_AUDIT_HEAD).db()? {
        Some(bytes) => codec::decode(&bytes, "audit head"),
        None => Ok(AuditHead::GENESIS),
    }
}

/// The head at opening: the stored one, moved past the entry an append wrote just before
/// a crash if that entry links to it (see [`Storage::audit_append`]), and stored again. An
/// entry there that does not link is left alone: appends then fail as corrupt, and
/// nothing is acknowledged on a log that was changed behind the appliance's back.
pub(super) fn recover_head(
    audit: &sled::Tree,
    meta: &sled::Tree,
) -> Result<AuditHead, StorageError> {
    let head = load_head(meta)?;
    let Some(bytes) = audit.get(head.seq.to_be_bytes()).db()? else {
        return Ok(head);
    };
    let Ok(stored) = codec::decode::<StoredEntry>(&bytes, "audit entry") else {
        return Ok(head);
    };
    let links = stored.seq == head.seq
        && stored.prev == head.hash
        && chain_hash(&head.hash, head.seq, &stored.entry)? == stored.hash;
    let Some(seq) = head.seq.checked_add(1).filter(|_| links) else {
        return Ok(head);
    };
    let next = AuditHead {
        seq,
        hash: stored.hash,
    };
    meta.insert(META_AUDIT_HEAD, codec::encode(&next)?).db()?;
    Ok(next)
}

fn check_entry(entry: &AuditEntry) -> Result<(), StorageError> {
    let fields = [&entry.client, &entry.request, &entry.result]
        .into_iter()
        .chain(&entry.key_id);
    for field in fields {
        if field.len() > MAX_AUDIT_FIELD_LEN {
            return Err(StorageError::Invalid("audit entry field too long"));
        }
    }
    Ok(())
}

impl Storage {
    /// Appends an entry; returns the new head.
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] if a field is longer than [`MAX_AUDIT_FIELD_LEN`];
    /// [`StorageError::Corrupt`] if the entry's slot is already taken (the database was
    /// modified behind this process); [`StorageError::Db`].
    pub fn audit_append(&self, entry: &AuditEntry) -> Result<AuditHead, StorageError> {
        let head = self.audit_write(entry)?;
        // Outside the lock: concurrent appends share the flush.
        self.flush()?;
        Ok(head)
    }

    /// [`Storage::audit_append`] that returns once the entry is written, with its flush
    /// asked of the store's flush thread: the entry is durable once the [`PendingFlush`]
    /// is waited for, and nothing that depends on it may be acknowledged before that.
    ///
    /// # Errors
    ///
    /// As [`Storage::audit_append`], but for the flush's own failure, which
    /// [`PendingFlush::wait`] reports.
    pub fn audit_append_start(
        &self,
        entry: &AuditEntry,
    ) -> Result<(AuditHead, PendingFlush), StorageError> {
        let head = self.audit_write(entry)?;
        Ok((head, self.flush_start()))
    }

    /// Writes an entry and the head after it, without flushing; returns the new head.
    fn audit_write(&self, entry: &AuditEntry) -> Result<AuditHead, StorageError> {
        check_entry(entry)?;
        let mut head = self.audit_lock();
        let seq = head.seq;
        let hash = chain_hash(&head.hash, seq, entry)?;
        let next = AuditHead {
            seq: seq
                .checked_add(1)
                .ok_or_else(|| StorageError::Corrupt("audit sequence exhausted".into()))?,
            hash,
        };
        let record = codec::encode(&StoredEntry {
            seq,
            prev: head.hash,
            hash,
            entry: entry.clone(),
        })?;
        let head_bytes = codec::encode(&next)?;
        // Two single-key writes, not a transaction: a sled transaction (or batch)
        // writes a batch marker, which costs a second log write and sync per append
        // (140-150 us against 80 us on an idle appliance). The entry goes first and
        // the head second, and sled recovers a prefix of its log, so a crash leaves
        // both, or neither, or the entry alone, which `recover_head` adopts at the
        // next start.
        let slot = self
            .inner
            .audit
            .compare_and_swap(seq.to_be_bytes(), None::<&[u8]>, Some(record))
            .db()?;
        if slot.is_err() {
            return Err(StorageError::Corrupt(format!(
                "audit entry {seq} exists already"
            )));
        }
        // The entry is in the log from here on: the cached head follows it even if
        // the head's own write fails, so the chain goes on from the right place.
        *head = next;
        self.inner.meta.insert(META_AUDIT_HEAD, head_bytes).db()?;
        Ok(next)
    }

    /// The stored head of the audit chain.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn audit_head(&self) -> Result<AuditHead, StorageError> {
        load_head(&self.inner.meta)
    }

    /// Reads the whole chain up to the stored head, through the export files in order and
    /// then the database from its base, and checks every link; names the first broken
    /// entry (and the export file and line, for one in a file). Entries appended while it
    /// runs are not examined. It first finishes an export that a crash interrupted (see
    /// `audit_export.rs`), and no export runs while it reads.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] if the head itself does not decode, [`StorageError::Io`]
    /// if an export file cannot be read, [`StorageError::Db`]. A damaged entry, line or
    /// file is not an error but a [`AuditReport::Broken`].
    pub fn audit_verify(&self) -> Result<AuditReport, StorageError> {
        let export = self.inner.audit_export.as_ref();
        let _export = export.map(ExportDir::lock);
        if let Some(export) = export {
            // A disagreement between the files and the database is named by the walk.
            match self.reconcile(export.path()) {
                Ok(_) | Err(StorageError::Corrupt(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let head = self.audit_head()?;
        let base = load_base(&self.inner.meta)?;
        let mut at = AuditHead::GENESIS;
        let mut files = 0u64;
        if let Some(export) = export {
            for (named, path) in list_files(export.path())? {
                files = files.saturating_add(1);
                if let Some(broken) = verify_file(&path, named, &mut at)? {
                    return Ok(broken);
                }
            }
        }
        if at.seq < base.seq {
            return Ok(broken(
                at.seq,
                format!(
                    "entries {} to {} are in no export file (the database starts at entry {})",
                    at.seq,
                    base.seq - 1,
                    base.seq
                ),
            ));
        }
        if at.seq > base.seq {
            return Ok(broken(
                base.seq,
                format!(
                    "entries {} to {} are in an export file and in the database, and differ",
                    base.seq,
                    at.seq - 1
                ),
            ));
        }
        if at.hash != base.hash {
            return Ok(broken(
                base.seq.saturating_sub(1),
                "the last exported entry does not match the database's base".into(),
            ));
        }
        if let Some(broken) = self.verify_database(base, head)? {
            return Ok(broken);
        }
        Ok(AuditReport::Intact {
            entries: head.seq,
            head,
            exported: base.seq,
            files,
        })
    }

    /// Checks the entries in the database, from `base` to `head`.
    fn verify_database(
        &self,
        base: AuditHead,
        head: AuditHead,
    ) -> Result<Option<AuditReport>, StorageError> {
        let mut prev = base.hash;
        let mut expected = base.seq;
        let range = base.seq.to_be_bytes()..head.seq.to_be_bytes();
        for item in self.inner.audit.range(range) {
            let (key, value) = item.db()?;
            let Ok(key) = <[u8; 8]>::try_from(key.as_ref()) else {
                return Ok(Some(broken(
                    expected,
                    "an entry has a malformed key".into(),
                )));
            };
            let seq = u64::from_be_bytes(key);
            if seq != expected {
                return Ok(Some(broken(
                    expected,
                    format!("entry {expected} is missing"),
                )));
            }
            let Ok(stored) = codec::decode::<StoredEntry>(&value, "audit entry") else {
                return Ok(Some(broken(seq, "the entry does not decode".into())));
            };
            if stored.seq != seq {
                let reason = format!("the entry says it is number {}", stored.seq);
                return Ok(Some(broken(seq, reason)));
            }
            if stored.prev != prev {
                let reason = "the entry does not link to the previous one".into();
                return Ok(Some(broken(seq, reason)));
            }
            let hash = chain_hash(&prev, seq, &stored.entry)?;
            if hash != stored.hash {
                let reason = "the entry does not match its hash".into();
                return Ok(Some(broken(seq, reason)));
            }
            prev = hash;
            expected = seq.saturating_add(1);
        }
        if expected != head.seq {
            let reason = format!("entry {expected} is missing (the head counts {})", head.seq);
            return Ok(Some(broken(expected, reason)));
        }
        if prev != head.hash {
            let reason = "the last entry does not match the head".into();
            return Ok(Some(broken(head.seq.saturating_sub(1), reason)));
        }
        Ok(None)
    }

    /// Calls `f` on every entry, oldest first: those in the export files, then those in
    /// the database. Checks nothing but that each line is an entry ([`Storage::audit_verify`]
    /// checks the chain).
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] naming the file and line of a line that is not an
    /// entry, or for an entry in the database that does not decode; [`StorageError::Io`],
    /// [`StorageError::Db`].
    pub fn audit_visit(&self, mut f: impl FnMut(u64, &AuditEntry)) -> Result<(), StorageError> {
        let export = self.inner.audit_export.as_ref();
        let _export = export.map(ExportDir::lock);
        if let Some(export) = export {
            for (_, path) in list_files(export.path())? {
                let mut reader = FileReader::open(&path)?;
                let name = display_name(&path);
                let at = |line: u64, why: String| {
                    StorageError::Corrupt(format!("{name} line {line}: {why}"))
                };
                reader.header()?.map_err(|why| at(1, why))?;
                while let Some(line) = reader.entry()? {
                    let line = line.map_err(|why| at(reader.line, why))?;
                    f(line.seq, &line.entry);
                }
            }
        }
        let base = load_base(&self.inner.meta)?;
        for item in self.inner.audit.range(base.seq.to_be_bytes()..) {
            let (_, value) = item.db()?;
            let stored: StoredEntry = codec::decode(&value, "audit entry")?;
            f(stored.seq, &stored.entry);
        }
        Ok(())
    }

    /// Up to `max` entries from sequence number `from_seq` on, with their numbers, from
    /// the database (entries that went to export files are not there:
    /// [`Storage::audit_visit`] reads those too).
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] if an entry does not decode, [`StorageError::Db`].
    pub fn audit_entries(
        &self,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StorageError> {
        self.inner
            .audit
            .range(from_seq.to_be_bytes()..)
            .take(max)
            .map(|item| {
                let (_, value) = item.db()?;
                let stored: StoredEntry = codec::decode(&value, "audit entry")?;
                Ok((stored.seq, stored.entry))
            })
            .collect()
    }

    /// Locks the cached audit head. A panic while it was held cannot have left it
    /// half-updated (it is assigned whole after the commit), so a poisoned lock is
    /// reused.
    pub(super) fn audit_lock(&self) -> MutexGuard<'_, AuditHead> {
        self.inner.audit_head.lock().unwrap_or_else(|poisoned| {
            self.inner.audit_head.clear_poison();
            poisoned.into_inner()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            time_unix_ms: 1_700_000_000_000 + i,
            client: format!("client-{}", i % 3),
            request: "partial".into(),
            key_id: i.is_multiple_of(2).then(|| "6b6579".into()),
            result: "ok".into(),
        }
    }

    fn append(storage: &Storage, range: core::ops::Range<u64>) -> AuditHead {
        let mut head = storage.audit_head().unwrap();
        for i in range {
            head = storage.audit_append(&entry(i)).unwrap();
            assert_eq!(head.seq, i + 1);
        }
        head
    }

    fn intact(entries: u64, head: AuditHead) -> AuditReport {
        AuditReport::Intact {
            entries,
            head,
            exported: 0,
            files: 0,
        }
    }

    fn broken_at(storage: &Storage) -> u64 {
        match storage.audit_verify().unwrap() {
            AuditReport::Broken { seq, .. } => seq,
            intact => panic!("not broken: {intact:?}"),
        }
    }

    #[test]
    fn appended_entries_verify_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        assert_eq!(storage.audit_head().unwrap(), AuditHead::GENESIS);
        assert_eq!(
            storage.audit_verify().unwrap(),
            intact(0, AuditHead::GENESIS)
        );
        let head = append(&storage, 0..10);
        assert_eq!(storage.audit_head().unwrap(), head);
        assert_eq!(storage.audit_verify().unwrap(), intact(10, head));
        let entries = storage.audit_entries(3, 4).unwrap();
        assert_eq!(entries, (3..7).map(|i| (i, entry(i))).collect::<Vec<_>>());
        assert_eq!(storage.audit_entries(9, 100).unwrap().len(), 1);
        assert_eq!(storage.audit_entries(10, 100).unwrap(), vec![]);
    }

    #[test]
    fn the_hash_follows_the_documented_formula() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let first = storage.audit_append(&entry(0)).unwrap();
        let second = storage.audit_append(&entry(1)).unwrap();
        // Built by hand: zero hash, seq as 8 LE bytes, then the fields.
        let e = entry(0);
        let mut body = 0u64.to_le_bytes().to_vec();
        body.extend_from_slice(&e.time_unix_ms.to_le_bytes());
        for s in [&e.client, &e.request] {
            body.extend_from_slice(&(s.len() as u64).to_le_bytes());
            body.extend_from_slice(s.as_bytes());
        }
        body.push(1);
        let key_id = e.key_id.as_ref().unwrap();
        body.extend_from_slice(&(key_id.len() as u64).to_le_bytes());
        body.extend_from_slice(key_id.as_bytes());
        body.extend_from_slice(&(e.result.len() as u64).to_le_bytes());
        body.extend_from_slice(e.result.as_bytes());
        let expected: [u8; 32] = Sha256::new()
            .chain_update([0u8; 32])
            .chain_update(&body)
            .finalize()
            .into();
        assert_eq!(first.hash, expected);
        assert_eq!(second.hash, chain_hash(&first.hash, 1, &entry(1)).unwrap());
    }

    #[test]
    fn a_modified_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        append(&storage, 0..8);
        let key = 5u64.to_be_bytes();
        let bytes = storage.inner.audit.get(key).unwrap().unwrap();
        let mut stored: StoredEntry = codec::decode(&bytes, "entry").unwrap();
        stored.entry.result = "denied".into();
        storage
            .inner
            .audit
            .insert(key, codec::encode(&stored).unwrap())
            .unwrap();
        assert_eq!(broken_at(&storage), 5);

        // Rewriting its hash too moves the break to the next link, not further.
        stored.hash = chain_hash(&stored.prev, 5, &stored.entry).unwrap();
        storage
            .inner
            .audit
            .insert(key, codec::encode(&stored).unwrap())
            .unwrap();
        assert_eq!(broken_at(&storage), 6);
    }

    #[test]
    fn a_garbled_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        append(&storage, 0..4);
        storage
            .inner
            .audit
            .insert(2u64.to_be_bytes(), &b"garbage"[..])
            .unwrap();
        assert_eq!(broken_at(&storage), 2);
    }

    #[test]
    fn a_deleted_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        append(&storage, 0..8);
        storage.inner.audit.remove(3u64.to_be_bytes()).unwrap();
        assert_eq!(broken_at(&storage), 3);

        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        append(&storage, 0..8);
        storage.inner.audit.remove(7u64.to_be_bytes()).unwrap();
        assert_eq!(broken_at(&storage), 7, "the last entry");

        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        append(&storage, 0..8);
        storage.inner.audit.remove(0u64.to_be_bytes()).unwrap();
        assert_eq!(broken_at(&storage), 0, "the first entry");
    }

    #[test]
    fn a_replaced_head_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let head = append(&storage, 0..3);
        let forged = AuditHead {
            hash: [9; 32],
            ..head
        };
        storage
            .inner
            .meta
            .insert(META_AUDIT_HEAD, codec::encode(&forged).unwrap())
            .unwrap();
        assert_eq!(broken_at(&storage), 2);
    }

    #[test]
    fn the_chain_continues_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let head = append(&storage, 0..5);
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.audit_head().unwrap(), head);
        let later = append(&storage, 5..9);
        let bytes = storage
            .inner
            .audit
            .get(5u64.to_be_bytes())
            .unwrap()
            .unwrap();
        let stored: StoredEntry = codec::decode(&bytes, "entry").unwrap();
        assert_eq!(stored.prev, head.hash);
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.audit_verify().unwrap(), intact(9, later));
    }

    /// Writes entry `head.seq` the way an append does, without storing the head: the
    /// state a crash between the two writes leaves.
    fn write_entry_only(storage: &Storage, head: AuditHead, e: &AuditEntry, prev: [u8; 32]) {
        let hash = chain_hash(&head.hash, head.seq, e).unwrap();
        let record = StoredEntry {
            seq: head.seq,
            prev,
            hash,
            entry: e.clone(),
        };
        storage
            .inner
            .audit
            .insert(head.seq.to_be_bytes(), codec::encode(&record).unwrap())
            .unwrap();
        storage.flush().unwrap();
    }

    #[test]
    fn an_entry_whose_head_a_crash_lost_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let head = append(&storage, 0..4);
        write_entry_only(&storage, head, &entry(4), head.hash);
        drop(storage);
        let storage = open(dir.path(), 1);
        let adopted = storage.audit_head().unwrap();
        assert_eq!(adopted.seq, 5);
        assert_eq!(adopted.hash, chain_hash(&head.hash, 4, &entry(4)).unwrap());
        let later = append(&storage, 5..7);
        assert_eq!(storage.audit_verify().unwrap(), intact(7, later));
    }

    #[test]
    fn an_entry_beyond_the_head_that_does_not_link_stops_appends() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let head = append(&storage, 0..4);
        write_entry_only(&storage, head, &entry(4), [7; 32]);
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.audit_head().unwrap(), head);
        assert!(matches!(
            storage.audit_append(&entry(4)),
            Err(StorageError::Corrupt(_))
        ));
        assert_eq!(storage.audit_head().unwrap(), head, "nothing acknowledged");
    }

    #[test]
    fn concurrent_appends_form_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let storage = storage.clone();
                scope.spawn(move || {
                    for i in 0..10 {
                        storage.audit_append(&entry(t * 100 + i)).unwrap();
                    }
                });
            }
        });
        let head = storage.audit_head().unwrap();
        assert_eq!(head.seq, 40);
        assert_eq!(storage.audit_verify().unwrap(), intact(40, head));
    }

    #[test]
    fn appends_whose_flushes_overlap_form_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        append(&storage, 0..2);
        // Each thread holds its flush while the others append, as partials do while they
        // exponentiate.
        let heads: Vec<AuditHead> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    let storage = storage.clone();
                    scope.spawn(move || {
                        (0..5)
                            .map(|i| {
                                let (head, flush) =
                                    storage.audit_append_start(&entry(100 * t + i)).unwrap();
                                std::thread::yield_now();
                                flush.wait().unwrap();
                                head
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut seqs: Vec<u64> = heads.iter().map(|h| h.seq).collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (3..=22).collect::<Vec<_>>(),
            "one new head per append"
        );
        let head = storage.audit_head().unwrap();
        assert_eq!(head.seq, 22);
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.audit_verify().unwrap(), intact(22, head));
    }

    #[test]
    fn oversized_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let long = AuditEntry {
            key_id: Some("k".repeat(MAX_AUDIT_FIELD_LEN + 1)),
            ..entry(0)
        };
        assert!(matches!(
            storage.audit_append(&long),
            Err(StorageError::Invalid(_))
        ));
        assert_eq!(storage.audit_head().unwrap(), AuditHead::GENESIS);
    }
}
