//! Audit export: entries past the retention leave the database for append-only files.
//!
//! # The files
//!
//! Entries leave the database oldest first, into JSON-lines files in the export folder,
//! each named after the sequence number of its first entry, zero-padded to 20 digits
//! (`audit-00000000000000100000.jsonl`), so that the names sort in chain order. A file's
//! first line is a header that links it to the entry before its first one:
//!
//! ```text
//! {"ittc_audit_export":1,"first_seq":100000,"prev_hash":"<64 hex digits>"}
//! ```
//!
//! (`prev_hash` is 32 zero bytes for the file that starts the chain). Then one line per
//! entry, in sequence:
//!
//! ```text
//! {"seq":100000,"time_unix_ms":…,"client":"…","request":"partial","key_id":"01","result":"ok","hash":"<hex>"}
//! ```
//!
//! `hash` is the entry's chain hash exactly as `audit.rs` defines it, so every line
//! recomputes from the previous one's hash and its own fields. A file takes at most
//! [`ExportPolicy::file_entries`] entries; a line is never rewritten.
//!
//! # Moving entries, and crashes
//!
//! The database records its *base*: how many entries have left it and the hash of the last
//! one (meta `audit_base`; the genesis head while nothing has). One step of an export
//! moves at most [`CHUNK`] entries that are due: it reads them from the database (they
//! must link to the base), appends their lines to the last file (or a new one) and
//! `fsync`s it (and the folder, for a new file), and only then removes the entries and
//! moves the base past them in one transaction, flushed. A crash in between leaves the
//! entries in both places: the next export step, or a verification, first compares the
//! file's entries past the base with the database's and, if they agree, finishes the
//! removal. A line that a crash cut short (no newline) is cut off, and a file whose
//! header a crash cut short is removed: neither was ever followed by a removal.
//!
//! Export steps and verifications are serialized by a lock of their own; appends never
//! wait for it, and the export holds no lock of the chain while it writes files.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::audit::{AuditEntry, AuditHead, StoredEntry, chain_hash};
use super::error::{SledResultExt, TxError};
use super::{Storage, StorageError, codec};

/// The meta record of the database's base: the [`AuditHead`] after the last exported
/// entry.
pub(super) const META_AUDIT_BASE: &[u8] = b"audit_base";

/// The most entries one export step moves: one `fsync` of the file and one database
/// transaction each.
pub const CHUNK: u64 = 2_000;

/// The longest line an export file may have, in bytes: the header, or an entry whose
/// four strings are at their longest and every character escaped.
pub const MAX_LINE: usize = 128 * 1024;

/// The header's format tag and version.
const FORMAT_VERSION: u32 = 1;

/// What to move out of the database, and into which files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportPolicy {
    /// The newest entries that stay in the database; 0: no limit by count.
    pub keep_entries: u64,
    /// Entries older than this many milliseconds before `now` leave the database; 0: no
    /// limit by age.
    pub keep_ms: u64,
    /// The most entries in one export file (at least 1).
    pub file_entries: u64,
}

/// What one call of [`Storage::audit_export`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Entries moved to export files by this call (those an interrupted earlier export had
    /// written and this one removed included).
    pub moved: u64,
    /// The database's base afterwards: entries before `base.seq` are in export files.
    pub base: AuditHead,
}

/// The export folder and the lock that serializes exports and verifications.
pub(super) struct ExportDir {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl ExportDir {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            lock: Mutex::new(()),
        }
    }

    /// The folder.
    pub(super) fn path(&self) -> &Path {
        &self.dir
    }

    /// Takes the export lock. Nothing it guards is left half-updated by a panic (files
    /// and database are reconciled at every step), so a poisoned lock is reused.
    pub(super) fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|poisoned| {
            self.lock.clear_poison();
            poisoned.into_inner()
        })
    }
}

/// A file's first line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    ittc_audit_export: u32,
    first_seq: u64,
    prev_hash: String,
}

/// One entry's line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    seq: u64,
    time_unix_ms: u64,
    client: String,
    request: String,
    key_id: Option<String>,
    result: String,
    hash: String,
}

impl Line {
    fn new(seq: u64, entry: &AuditEntry, hash: &[u8; 32]) -> Self {
        Self {
            seq,
            time_unix_ms: entry.time_unix_ms,
            client: entry.client.clone(),
            request: entry.request.clone(),
            key_id: entry.key_id.clone(),
            result: entry.result.clone(),
            hash: hex::encode(hash),
        }
    }

    fn entry(&self) -> AuditEntry {
        AuditEntry {
            time_unix_ms: self.time_unix_ms,
            client: self.client.clone(),
            request: self.request.clone(),
            key_id: self.key_id.clone(),
            result: self.result.clone(),
        }
    }
}

/// An entry read from an export file, with where it was found.
pub(super) struct FileEntry {
    pub(super) seq: u64,
    pub(super) entry: AuditEntry,
    /// The hash the line states (not recomputed).
    pub(super) hash: [u8; 32],
}

/// The name of the file whose first entry is `first_seq`.
pub(super) fn file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// The first sequence number a file name states, if it is an export file's name.
fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The export files in `dir`, in chain order, with the first sequence number each name
/// states; none if the folder does not exist.
pub(super) fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_file_name) {
            files.push((seq, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).ok()?;
    Some(hash)
}

/// Parses a header line.
fn parse_header(line: &[u8]) -> Result<(u64, [u8; 32]), String> {
    let header: Header =
        serde_json::from_slice(line).map_err(|e| format!("the header does not parse: {e}"))?;
    if header.ittc_audit_export != FORMAT_VERSION {
        return Err(format!(
            "format version {} (this build reads {FORMAT_VERSION})",
            header.ittc_audit_export
        ));
    }
    let prev =
        parse_hash(&header.prev_hash).ok_or("the header's prev_hash is not 64 hex digits")?;
    Ok((header.first_seq, prev))
}

/// Parses an entry line.
fn parse_line(line: &[u8]) -> Result<FileEntry, String> {
    let parsed: Line =
        serde_json::from_slice(line).map_err(|e| format!("the line does not parse: {e}"))?;
    let hash = parse_hash(&parsed.hash).ok_or("the line's hash is not 64 hex digits")?;
    Ok(FileEntry {
        seq: parsed.seq,
        entry: parsed.entry(),
        hash,
    })
}

fn line_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    let mut bytes = serde_json::to_vec(value)
        .map_err(|e| StorageError::Corrupt(format!("an audit line does not encode: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Reads an export file line by line, each at most [`MAX_LINE`] bytes.
pub(super) struct FileReader {
    reader: BufReader<File>,
    /// The number of the line last read, from 1.
    pub(super) line: u64,
    buf: Vec<u8>,
}

/// What [`FileReader::next_line`] found.
pub(super) enum LineRead<'a> {
    /// A whole line, without its newline.
    Line(&'a [u8]),
    /// The end of the file.
    End,
    /// A last line without a newline (cut short by a crash, or changed).
    Partial,
    /// A line longer than [`MAX_LINE`].
    TooLong,
}

impl FileReader {
    pub(super) fn open(path: &Path) -> Result<Self, StorageError> {
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, File::open(path)?),
            line: 0,
            buf: Vec::new(),
        })
    }

    pub(super) fn next_line(&mut self) -> Result<LineRead<'_>, StorageError> {
        self.buf.clear();
        let limit = u64::try_from(MAX_LINE)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)?;
        if read == 0 {
            return Ok(LineRead::End);
        }
        self.line = self.line.saturating_add(1);
        match self.buf.last() {
            Some(b'\n') => {
                self.buf.pop();
                Ok(LineRead::Line(&self.buf))
            }
            _ if self.buf.len() > MAX_LINE => Ok(LineRead::TooLong),
            _ => Ok(LineRead::Partial),
        }
    }

    /// The header: the first sequence number and the hash before it.
    pub(super) fn header(&mut self) -> Result<Result<(u64, [u8; 32]), String>, StorageError> {
        Ok(match self.next_line()? {
            LineRead::Line(line) => parse_header(line),
            LineRead::End => Err("the file is empty".into()),
            LineRead::Partial => Err("the header has no end of line".into()),
            LineRead::TooLong => Err("the header is too long".into()),
        })
    }

    /// The next entry, `None` at the end of the file, `Some(Err(reason))` for a line that
    /// is not one.
    pub(super) fn entry(&mut self) -> Result<Option<Result<FileEntry, String>>, StorageError> {
        Ok(match self.next_line()? {
            LineRead::Line(line) => Some(parse_line(line)),
            LineRead::End => None,
            LineRead::Partial => Some(Err("the line has no end of line".into())),
            LineRead::TooLong => Some(Err("the line is too long".into())),
        })
    }
}

/// The last export file, as an export step finds it.
#[derive(Clone, Debug)]
pub(super) struct LastFile {
    path: PathBuf,
    first_seq: u64,
    /// The head after its last entry (or its header, if it has no entry yet).
    end: AuditHead,
}

impl LastFile {
    fn entries(&self) -> u64 {
        self.end.seq.saturating_sub(self.first_seq)
    }
}

/// Syncs a folder, so that a file created in it stays after a crash.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Finds the last export file and where it ends, after cutting off a last line that a
/// crash cut short, and removing a last file whose header a crash cut short.
fn repair_last_file(dir: &Path) -> Result<Option<LastFile>, StorageError> {
    loop {
        let Some((named_seq, path)) = list_files(dir)?.pop() else {
            return Ok(None);
        };
        match repair_file(&path, named_seq)? {
            Some(last) => return Ok(Some(last)),
            None => {
                // Not even a whole header: a crash cut the file's creation short, before
                // any entry in it could have left the database.
                fs::remove_file(&path)?;
                sync_dir(dir)?;
            }
        }
    }
}

/// [`repair_last_file`] for one file; `None` if it has no whole line.
fn repair_file(path: &Path, named_seq: u64) -> Result<Option<LastFile>, StorageError> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let tail_len = len.min(u64::try_from(2 * MAX_LINE).unwrap_or(u64::MAX));
    let tail_start = len - tail_len;
    file.seek(SeekFrom::Start(tail_start))?;
    let mut tail = Vec::new();
    (&mut file).take(tail_len).read_to_end(&mut tail)?;
    let Some(last_newline) = tail.iter().rposition(|&b| b == b'\n') else {
        if tail_start == 0 {
            return Ok(None);
        }
        return Err(corrupt_file(path, "its last line is too long"));
    };
    let complete = tail_start + u64::try_from(last_newline).unwrap_or(u64::MAX) + 1;
    if complete < len {
        file.set_len(complete)?;
        file.sync_all()?;
    }
    drop(file);
    let mut reader = FileReader::open(path)?;
    let (first_seq, prev) = reader.header()?.map_err(|why| corrupt_file(path, &why))?;
    if first_seq != named_seq {
        return Err(corrupt_file(path, "its header names another first entry"));
    }
    // The last whole line: the header (the file's first line), or its last entry.
    let before = tail.get(..last_newline).unwrap_or_default();
    let end = match before.iter().rposition(|&b| b == b'\n') {
        None if tail_start == 0 => AuditHead {
            seq: first_seq,
            hash: prev,
        },
        None => return Err(corrupt_file(path, "its last line is too long")),
        Some(newline) => {
            let line = before.get(newline + 1..).unwrap_or_default();
            let last = parse_line(line).map_err(|why| corrupt_file(path, &why))?;
            if last.seq < first_seq {
                return Err(corrupt_file(path, "its last entry precedes its header"));
            }
            AuditHead {
                seq: last.seq.saturating_add(1),
                hash: last.hash,
            }
        }
    };
    Ok(Some(LastFile {
        path: path.to_path_buf(),
        first_seq,
        end,
    }))
}

fn corrupt_file(path: &Path, why: &str) -> StorageError {
    StorageError::Corrupt(format!("audit export file {}: {why}", path.display()))
}

/// The database's base: the head after the last exported entry.
pub(super) fn load_base(meta: &sled::Tree) -> Result<AuditHead, StorageError> {
    match meta.get(META_AUDIT_BASE).db()? {
        Some(bytes) => codec::decode(&bytes, "audit base"),
        None => Ok(AuditHead::GENESIS),
    }
}

/// Test hook, in debug builds only: `ITTC_TEST_AUDIT_EXPORT_PAUSE=written` makes the
/// appliance stop for good after an export step has written and synced its lines and
/// before it removes them from the database (it prints `audit export paused` on standard
/// error first, so that a test can kill it there). Release builds read nothing.
fn test_pause() {
    #[cfg(debug_assertions)]
    if std::env::var("ITTC_TEST_AUDIT_EXPORT_PAUSE").is_ok_and(|v| v == "written") {
        eprintln!("audit export paused");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

impl Storage {
    /// Moves every entry that `policy` says is due (past the newest `keep_entries`, or
    /// older than `keep_ms` before `now_unix_ms`) from the database to the export files,
    /// 2,000 at a time (see the module docs); first finishes an export that a crash
    /// interrupted.
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] if the store has no export folder or
    /// `policy.file_entries` is 0; [`StorageError::Corrupt`] if the export files and the
    /// database disagree (nothing is moved then), or an entry due does not link (the
    /// entries before it are moved, it and those after it stay: a verification names
    /// the break); [`StorageError::Io`] or [`StorageError::Db`].
    pub fn audit_export(
        &self,
        policy: &ExportPolicy,
        now_unix_ms: u64,
    ) -> Result<ExportOutcome, StorageError> {
        let export = self
            .inner
            .audit_export
            .as_ref()
            .ok_or(StorageError::Invalid("no audit export folder"))?;
        if policy.file_entries == 0 {
            return Err(StorageError::Invalid("file_entries must be at least 1"));
        }
        let _export = export.lock();
        let (mut last, mut moved) = self.reconcile(export.path())?;
        // Every entry below this head is on disk: none that a crash could still take from
        // the database goes to a file.
        let head = *self.audit_lock();
        self.flush()?;
        let by_count = match policy.keep_entries {
            0 => 0,
            keep => head.seq.saturating_sub(keep),
        };
        let cutoff = (policy.keep_ms > 0).then(|| now_unix_ms.saturating_sub(policy.keep_ms));
        let mut base = load_base(&self.inner.meta)?;
        loop {
            let room = match &last {
                Some(file) if file.entries() < policy.file_entries => {
                    policy.file_entries - file.entries()
                }
                _ => policy.file_entries,
            };
            let end = base.seq.saturating_add(room.min(CHUNK)).min(head.seq);
            let due = self.due_entries(base, end, by_count, cutoff)?;
            let Some((_, newest)) = due.last() else {
                break;
            };
            let next = AuditHead {
                seq: newest.seq.saturating_add(1),
                hash: newest.hash,
            };
            last = Some(write_lines(export.path(), last, base, &due, policy)?);
            test_pause();
            self.remove_exported(base, next)?;
            moved = moved.saturating_add(next.seq - base.seq);
            base = next;
        }
        Ok(ExportOutcome { moved, base })
    }

    /// The entries from `base` on, before `end`, that are due: below `by_count`, or older
    /// than `cutoff`; stops at the first that is not. Each must link to the one before.
    fn due_entries(
        &self,
        base: AuditHead,
        end: u64,
        by_count: u64,
        cutoff: Option<u64>,
    ) -> Result<Vec<(u64, StoredEntry)>, StorageError> {
        let mut due = Vec::new();
        let mut prev = base;
        if base.seq >= end {
            return Ok(due);
        }
        for item in self
            .inner
            .audit
            .range(base.seq.to_be_bytes()..end.to_be_bytes())
        {
            let (_, value) = item.db()?;
            let stored: StoredEntry = codec::decode(&value, "audit entry")?;
            let seq = prev.seq;
            let old = cutoff.is_some_and(|cutoff| stored.entry.time_unix_ms < cutoff);
            if seq >= by_count && !old {
                break;
            }
            if stored.seq != seq
                || stored.prev != prev.hash
                || chain_hash(&prev.hash, seq, &stored.entry)? != stored.hash
            {
                return Err(StorageError::Corrupt(format!(
                    "audit entry {seq} is missing or does not link: nothing past it is \
                     exported (audit verify names the break)"
                )));
            }
            prev = AuditHead {
                seq: seq.saturating_add(1),
                hash: stored.hash,
            };
            due.push((seq, stored));
        }
        Ok(due)
    }

    /// Removes the entries from `base` to `next` (exclusive) from the database and records
    /// `next` as its base, in one transaction, flushed.
    fn remove_exported(&self, base: AuditHead, next: AuditHead) -> Result<(), StorageError> {
        let next_bytes = codec::encode(&next)?;
        (&self.inner.audit, &self.inner.meta)
            .transaction(|(audit, meta)| {
                for seq in base.seq..next.seq {
                    audit.remove(&seq.to_be_bytes())?;
                }
                meta.insert(META_AUDIT_BASE, next_bytes.as_slice())?;
                Ok::<_, TxError>(())
            })
            .db()?;
        self.flush()
    }

    /// Brings the export files and the database into agreement after a crash: cuts off
    /// what a crash cut short in the last file and, if that file holds entries past the
    /// database's base (a crash between writing them and removing them), checks them
    /// against the database and finishes their removal. Returns the last file and how
    /// many entries it removed.
    pub(super) fn reconcile(&self, dir: &Path) -> Result<(Option<LastFile>, u64), StorageError> {
        let base = load_base(&self.inner.meta)?;
        let Some(last) = repair_last_file(dir)? else {
            if base.seq == 0 {
                return Ok((None, 0));
            }
            return Err(StorageError::Corrupt(format!(
                "entries 0 to {} were exported, and no export file is left",
                base.seq - 1
            )));
        };
        if last.end == base {
            return Ok((Some(last), 0));
        }
        let head = *self.audit_lock();
        if last.end.seq <= base.seq || last.first_seq > base.seq || last.end.seq > head.seq {
            return Err(StorageError::Corrupt(format!(
                "the export files end before entry {}, and the database starts at entry {} \
                 (audit verify names the break)",
                last.end.seq, base.seq
            )));
        }
        // Entries base.seq.. are in the last file and (still) in the database.
        let mut reader = FileReader::open(&last.path)?;
        reader
            .header()?
            .map_err(|why| corrupt_file(&last.path, &why))?;
        let mut prev = base.hash;
        let mut seq = base.seq;
        while let Some(line) = reader.entry()? {
            let line = line.map_err(|why| corrupt_file(&last.path, &why))?;
            if line.seq < base.seq {
                continue;
            }
            let stored = self
                .inner
                .audit
                .get(line.seq.to_be_bytes())
                .db()?
                .map(|bytes| codec::decode::<StoredEntry>(&bytes, "audit entry"))
                .transpose()?;
            let agrees = stored.is_some_and(|s| {
                line.seq == seq && s.prev == prev && s.hash == line.hash && s.entry == line.entry
            });
            if !agrees {
                return Err(StorageError::Corrupt(format!(
                    "entry {} is in an export file and in the database, and they differ",
                    line.seq
                )));
            }
            prev = line.hash;
            seq = seq.saturating_add(1);
        }
        if seq != last.end.seq {
            return Err(corrupt_file(&last.path, "it ends before its last entry"));
        }
        let removed = last.end.seq - base.seq;
        self.remove_exported(base, last.end)?;
        Ok((Some(last), removed))
    }
}

/// Appends the lines of `due` (which follow `base`) to the last file, or to a new one if
/// there is none or it is full, and syncs them; returns the last file after them.
fn write_lines(
    dir: &Path,
    last: Option<LastFile>,
    base: AuditHead,
    due: &[(u64, StoredEntry)],
    policy: &ExportPolicy,
) -> Result<LastFile, StorageError> {
    let mut bytes = Vec::with_capacity(due.len().saturating_mul(256));
    let reuse = last.filter(|file| file.end == base && file.entries() < policy.file_entries);
    let new_file = reuse.is_none();
    let (path, first_seq) = match reuse {
        Some(file) => (file.path, file.first_seq),
        None => {
            bytes.extend(line_bytes(&Header {
                ittc_audit_export: FORMAT_VERSION,
                first_seq: base.seq,
                prev_hash: hex::encode(base.hash),
            })?);
            (dir.join(file_name(base.seq)), base.seq)
        }
    };
    let mut end = base;
    for (seq, stored) in due {
        bytes.extend(line_bytes(&Line::new(*seq, &stored.entry, &stored.hash))?);
        end = AuditHead {
            seq: seq.saturating_add(1),
            hash: stored.hash,
        };
    }
    let mut file = if new_file {
        if !dir.is_dir() {
            fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?
    } else {
        OpenOptions::new().append(true).open(&path)?
    };
    file.write_all(&bytes)?;
    file.sync_all()?;
    if new_file {
        sync_dir(dir)?;
    }
    Ok(LastFile {
        path,
        first_seq,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::super::AuditReport;
    use super::super::test_support::*;
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            time_unix_ms: T0 + i * 1000,
            client: format!("client-{}", i % 3),
            request: "partial".into(),
            key_id: i.is_multiple_of(2).then(|| "6b6579".into()),
            result: if i == 3 {
                "a \"quoted\"\nline\u{7}".into()
            } else {
                "ok".into()
            },
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        data: PathBuf,
        export: PathBuf,
        storage: Storage,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let export = dir.path().join("export");
            let storage = Self::open_at(&data, &export);
            Self {
                _dir: dir,
                data,
                export,
                storage,
            }
        }

        fn open_at(data: &Path, export: &Path) -> Storage {
            let options = super::super::StorageOptions {
                audit_export_dir: Some(export.to_path_buf()),
                ..test_options()
            };
            try_open(data, TEST_KEY, 1, options).unwrap()
        }

        /// Closes and opens the store again, as a restarted appliance does.
        fn reopen(&mut self) {
            let storage = std::mem::replace(&mut self.storage, open_scratch());
            drop(storage);
            self.storage = Self::open_at(&self.data, &self.export);
        }

        fn append(&self, range: core::ops::Range<u64>) {
            for i in range {
                assert_eq!(self.storage.audit_append(&entry(i)).unwrap().seq, i + 1);
            }
        }

        fn try_export(&self, keep: u64, file_entries: u64) -> Result<ExportOutcome, StorageError> {
            let policy = ExportPolicy {
                keep_entries: keep,
                keep_ms: 0,
                file_entries,
            };
            self.storage.audit_export(&policy, T0)
        }

        fn export(&self, keep: u64, file_entries: u64) -> ExportOutcome {
            self.try_export(keep, file_entries).unwrap()
        }

        fn file(&self, first_seq: u64) -> PathBuf {
            self.export.join(file_name(first_seq))
        }

        fn files(&self) -> Vec<u64> {
            list_files(&self.export)
                .unwrap()
                .into_iter()
                .map(|(seq, _)| seq)
                .collect()
        }

        /// The sequence numbers still in the database.
        fn in_database(&self) -> Vec<u64> {
            self.storage
                .audit_entries(0, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|(seq, _)| seq)
                .collect()
        }

        fn verify(&self) -> AuditReport {
            self.storage.audit_verify().unwrap()
        }

        fn broken(&self) -> (u64, String) {
            match self.verify() {
                AuditReport::Broken { seq, reason } => (seq, reason),
                intact => panic!("not broken: {intact:?}"),
            }
        }

        /// Rewrites line `line` (from 1) of the file starting at `first_seq`.
        fn edit_line(&self, first_seq: u64, line: usize, edit: impl Fn(&str) -> String) {
            let path = self.file(first_seq);
            let text = fs::read_to_string(&path).unwrap();
            let lines: Vec<String> = text
                .lines()
                .enumerate()
                .map(|(i, l)| if i + 1 == line { edit(l) } else { l.to_owned() })
                .collect();
            fs::write(&path, lines.join("\n") + "\n").unwrap();
        }
    }

    /// A store in a folder of its own, to stand in while a fixture's is reopened.
    fn open_scratch() -> Storage {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        std::mem::forget(dir);
        storage
    }

    fn intact(entries: u64, exported: u64, files: u64) -> impl Fn(&AuditReport) -> bool {
        move |report| {
            matches!(report, AuditReport::Intact { entries: e, exported: x, files: f, head }
                if *e == entries && *x == exported && *f == files && head.seq == entries)
        }
    }

    #[test]
    fn export_moves_due_entries_into_files_and_the_chain_verifies() {
        let f = Fixture::new();
        f.append(0..25);
        let head = f.storage.audit_head().unwrap();
        let outcome = f.export(5, 8);
        assert_eq!(outcome.moved, 20);
        assert_eq!(outcome.base.seq, 20);
        assert_eq!(f.files(), vec![0, 8, 16]);
        assert_eq!(f.in_database(), (20..25).collect::<Vec<_>>());
        let report = f.verify();
        assert!(intact(25, 20, 3)(&report), "{report:?}");
        assert!(matches!(report, AuditReport::Intact { head: h, .. } if h == head));

        // The first file: a header at the genesis, then lines that parse back exactly.
        let text = fs::read_to_string(f.file(0)).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!(
                "{{\"ittc_audit_export\":1,\"first_seq\":0,\"prev_hash\":\"{}\"}}",
                "0".repeat(64)
            )
        );
        assert_eq!(lines.count(), 8);

        // Nothing more is due; later entries continue the last file, then a new one.
        assert_eq!(f.export(5, 8).moved, 0);
        f.append(25..31);
        assert_eq!(f.export(5, 8).moved, 6);
        assert_eq!(f.files(), vec![0, 8, 16, 24]);
        assert!(intact(31, 26, 4)(&f.verify()));
        let mut seen = Vec::new();
        f.storage
            .audit_visit(|seq, e| seen.push((seq, e.clone())))
            .unwrap();
        assert_eq!(seen, (0..31).map(|i| (i, entry(i))).collect::<Vec<_>>());
    }

    #[test]
    fn entries_older_than_the_age_leave() {
        let f = Fixture::new();
        f.append(0..10);
        let policy = ExportPolicy {
            keep_entries: 0,
            keep_ms: 4_500,
            file_entries: 100,
        };
        // Entry i is T0 + i s old; at T0 + 10 s, those before T0 + 5.5 s are due.
        let outcome = f.storage.audit_export(&policy, T0 + 10_000).unwrap();
        assert_eq!(outcome.base.seq, 6);
        assert_eq!(f.in_database(), (6..10).collect::<Vec<_>>());
        // Every entry may go: the database then holds none, and appends go on.
        let outcome = f.storage.audit_export(&policy, T0 + 100_000).unwrap();
        assert_eq!(outcome.base.seq, 10);
        assert!(f.in_database().is_empty());
        f.append(10..12);
        assert!(intact(12, 10, 1)(&f.verify()));
    }

    #[test]
    fn the_chain_continues_across_reopen() {
        let mut f = Fixture::new();
        f.append(0..12);
        f.export(2, 4);
        f.reopen();
        f.append(12..20);
        f.export(2, 4);
        f.reopen();
        assert!(intact(20, 18, 5)(&f.verify()));
    }

    #[test]
    fn a_changed_line_is_named_with_its_file_and_line() {
        let f = Fixture::new();
        f.append(0..20);
        f.export(4, 8);
        // Entry 10 is line 4 of the second file (after the header, entries 8 and 9).
        f.edit_line(8, 4, |l| {
            l.replace("\"result\":\"ok\"", "\"result\":\"denied\"")
        });
        let (seq, reason) = f.broken();
        assert_eq!(seq, 10);
        assert!(
            reason.contains(&file_name(8)) && reason.contains("line 4"),
            "{reason}"
        );
        assert!(reason.contains("hash"), "{reason}");
    }

    #[test]
    fn a_changed_line_with_its_hash_rewritten_breaks_the_next_link() {
        let f = Fixture::new();
        f.append(0..20);
        f.export(4, 8);
        let mut changed = entry(10);
        changed.result = "denied".into();
        let prev = match parse_line(
            fs::read_to_string(f.file(8))
                .unwrap()
                .lines()
                .nth(2)
                .unwrap()
                .as_bytes(),
        ) {
            Ok(line) => line.hash,
            Err(e) => panic!("{e}"),
        };
        let forged = chain_hash(&prev, 10, &changed).unwrap();
        let line =
            String::from_utf8(line_bytes(&Line::new(10, &changed, &forged)).unwrap()).unwrap();
        f.edit_line(8, 4, |_| line.trim_end().to_owned());
        assert_eq!(f.broken().0, 11);
    }

    #[test]
    fn garbage_and_missing_files_are_named() {
        // Files 0 (entries 0..8), 8 (8..16) and 16 (16, 17); the database holds 18, 19.
        let exported = || {
            let f = Fixture::new();
            f.append(0..20);
            f.export(2, 8);
            assert_eq!(f.files(), vec![0, 8, 16]);
            f
        };
        let f = exported();
        f.edit_line(0, 5, |_| "not json".into());
        let (seq, reason) = f.broken();
        assert_eq!(seq, 3);
        assert!(
            reason.contains(&file_name(0)) && reason.contains("line 5"),
            "{reason}"
        );

        let f = exported();
        fs::remove_file(f.file(8)).unwrap();
        let (seq, reason) = f.broken();
        assert_eq!(seq, 8);
        assert!(
            reason.contains("missing") && reason.contains(&file_name(16)),
            "{reason}"
        );

        let f = exported();
        fs::remove_file(f.file(0)).unwrap();
        assert_eq!(f.broken().0, 0, "the first file");

        let f = exported();
        fs::remove_file(f.file(16)).unwrap();
        let (seq, reason) = f.broken();
        assert_eq!(seq, 16, "the last file");
        assert!(reason.contains("no export file"), "{reason}");
        // And the export refuses to go on from there.
        f.append(20..30);
        assert!(matches!(f.try_export(4, 8), Err(StorageError::Corrupt(_))));

        let f = exported();
        f.edit_line(8, 1, |_| {
            format!(
                "{{\"ittc_audit_export\":1,\"first_seq\":8,\"prev_hash\":\"{}\"}}",
                "ab".repeat(32)
            )
        });
        let (seq, reason) = f.broken();
        assert_eq!(seq, 8, "a header that does not link");
        assert!(
            reason.contains(&file_name(8)) && reason.contains("line 1"),
            "{reason}"
        );

        let f = exported();
        fs::rename(f.file(8), f.file(9)).unwrap();
        let (seq, reason) = f.broken();
        assert_eq!(seq, 8, "a renamed file");
        assert!(reason.contains(&file_name(9)), "{reason}");
    }

    #[test]
    fn a_changed_entry_in_the_database_is_named_after_an_export() {
        let f = Fixture::new();
        f.append(0..20);
        f.export(6, 8);
        let key = 16u64.to_be_bytes();
        let bytes = f.storage.inner.audit.get(key).unwrap().unwrap();
        let mut stored: StoredEntry = codec::decode(&bytes, "entry").unwrap();
        stored.entry.result = "denied".into();
        f.storage
            .inner
            .audit
            .insert(key, codec::encode(&stored).unwrap())
            .unwrap();
        assert_eq!(f.broken().0, 16);
        // A broken entry is not exported.
        f.append(20..30);
        assert!(matches!(f.try_export(2, 8), Err(StorageError::Corrupt(_))));
        // The entries before the break left; the broken one and those after it stay.
        assert_eq!(
            f.in_database().first(),
            Some(&16),
            "nothing moved past the break"
        );
    }

    /// Writes the lines of the entries due as an export step does, and stops before it
    /// removes them from the database: the state a crash there leaves.
    fn export_without_removal(f: &Fixture, keep: u64, file_entries: u64) -> u64 {
        let export = f.storage.inner.audit_export.as_ref().unwrap();
        fs::create_dir_all(export.path()).unwrap();
        let (last, _) = f.storage.reconcile(export.path()).unwrap();
        let head = f.storage.audit_head().unwrap();
        let base = load_base(&f.storage.inner.meta).unwrap();
        let room = match &last {
            Some(l) if l.entries() < file_entries => file_entries - l.entries(),
            _ => file_entries,
        };
        let end = base.seq.saturating_add(room.min(CHUNK)).min(head.seq);
        let due = f
            .storage
            .due_entries(base, end, head.seq - keep, None)
            .unwrap();
        let policy = ExportPolicy {
            keep_entries: keep,
            keep_ms: 0,
            file_entries,
        };
        write_lines(export.path(), last, base, &due, &policy).unwrap();
        due.len() as u64
    }

    #[test]
    fn a_crash_between_the_files_and_the_removal_loses_and_repeats_nothing() {
        for new_file in [false, true] {
            let mut f = Fixture::new();
            f.append(0..10);
            f.export(6, 8);
            f.append(10..20);
            // From base 4: into the first file (room for 4) or, when it is full, a new one.
            if new_file {
                f.append(20..24);
                f.export(20, 4);
                assert_eq!(f.files(), vec![0]);
            }
            let written = export_without_removal(&f, 5, if new_file { 4 } else { 8 });
            assert!(written > 0);
            let files_then = f.files();
            f.reopen();
            // Entries are in both places: verification finishes the removal, then passes.
            let total = if new_file { 24 } else { 20 };
            let report = f.verify();
            assert!(
                matches!(report, AuditReport::Intact { entries, .. } if entries == total),
                "{report:?}"
            );
            let AuditReport::Intact { exported, .. } = report else {
                unreachable!()
            };
            assert_eq!(f.in_database().first(), Some(&exported));
            assert_eq!(f.files(), files_then);
            // The next export goes on from there, and every entry is there once.
            f.export(5, 8);
            let mut seqs = Vec::new();
            f.storage.audit_visit(|seq, _| seqs.push(seq)).unwrap();
            assert_eq!(seqs, (0..total).collect::<Vec<_>>());
            assert!(matches!(f.verify(), AuditReport::Intact { .. }));
        }
    }

    #[test]
    fn an_export_finishes_what_a_crash_interrupted() {
        let f = Fixture::new();
        f.append(0..20);
        export_without_removal(&f, 5, 100);
        assert_eq!(f.in_database().len(), 20);
        let outcome = f.export(5, 100);
        assert_eq!(outcome.moved, 15, "removed, not written again");
        assert_eq!(f.in_database(), (15..20).collect::<Vec<_>>());
        let lines = fs::read_to_string(f.file(0)).unwrap().lines().count();
        assert_eq!(lines, 1 + 15);
    }

    #[test]
    fn files_that_disagree_with_the_database_stop_the_export() {
        let f = Fixture::new();
        f.append(0..20);
        export_without_removal(&f, 5, 100);
        f.edit_line(0, 12, |l| l.replace("client-1", "client-9"));
        assert!(matches!(
            f.try_export(5, 100),
            Err(StorageError::Corrupt(_))
        ));
        assert_eq!(f.in_database().len(), 20, "nothing removed");
        let (seq, reason) = f.broken();
        assert_eq!(seq, 10);
        assert!(reason.contains("line 12"), "{reason}");
    }

    #[test]
    fn a_line_or_header_cut_short_by_a_crash_is_cut_off() {
        let f = Fixture::new();
        f.append(0..20);
        f.export(10, 100);
        let path = f.file(0);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":10,\"time_unix").unwrap();
        drop(file);
        // A verification cuts it off (as the next export would), and passes.
        assert!(intact(20, 10, 1)(&f.verify()));
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 11);
        f.export(5, 100);
        assert!(intact(20, 15, 1)(&f.verify()));
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 16);

        // A new file whose header a crash cut short.
        let cut = f.file(15);
        fs::write(&cut, b"{\"ittc_audit_ex").unwrap();
        f.append(20..22);
        f.export(5, 15);
        assert!(intact(22, 17, 2)(&f.verify()));
        assert!(
            fs::read_to_string(&cut)
                .unwrap()
                .starts_with("{\"ittc_audit_export\":1,\"first_seq\":15,")
        );
    }

    #[test]
    fn large_exports_go_in_chunks_and_files() {
        let f = Fixture::new();
        let n = CHUNK * 2 + 10;
        f.append(0..n);
        let outcome = f.export(10, CHUNK + 1);
        assert_eq!(outcome.moved, n - 10);
        assert_eq!(f.files(), vec![0, CHUNK + 1]);
        assert!(intact(n, n - 10, 2)(&f.verify()));
    }

    #[test]
    fn without_an_export_folder_nothing_is_exported() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let policy = ExportPolicy {
            keep_entries: 1,
            keep_ms: 0,
            file_entries: 1,
        };
        assert!(matches!(
            storage.audit_export(&policy, T0),
            Err(StorageError::Invalid(_))
        ));
    }

    #[test]
    fn file_names_sort_in_chain_order() {
        assert_eq!(file_name(42), "audit-00000000000000000042.jsonl");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("audit-42.jsonl"), None);
        assert_eq!(parse_file_name("audit-0000000000000000004x.jsonl"), None);
        assert!(file_name(9) < file_name(10));
    }
}
