//! Token objects (certificates, public keys, private-key stubs, data objects), stored as
//! the wire encodes them and keyed by their [`ObjectId`], with their versions.
//!
//! The `objects` tree holds the live objects; the `object_versions` tree the version of
//! every object written since objects had versions, deleted ones included: a handle with
//! a version and no object is a tombstone. An object with no version (stored by an older
//! build) has [`ObjectVersion::ORIGINAL`]. A write of either kind is one transaction over
//! both trees, and is refused when a newer version is stored
//! ([`StorageError::Superseded`]). At most [`MAX_TOMBSTONES`] tombstones are kept (the
//! oldest go first) and at most [`MAX_LIVE_OBJECTS`] objects, so that a listing always
//! fits its limit.

use std::cmp::Ordering;
use std::iter::Peekable;

use ittc_wire::limits::{
    MAX_ATTRIBUTE_VALUE_LEN, MAX_ATTRIBUTES, MAX_LIVE_OBJECTS, MAX_OBJECTS, MAX_TOMBSTONES,
};
use ittc_wire::{ObjectId, ObjectRecord, ObjectSummary, ObjectVersion, TokenObject};
use sled::Transactional;

use super::error::{SledResultExt, TxError, abort};
use super::{Storage, StorageError, codec};

/// The key of an object in the `objects` and `object_versions` trees.
fn object_key(handle: ObjectId) -> [u8; 8] {
    handle.0.to_be_bytes()
}

/// The handle a tree key stands for.
fn handle_of(key: &[u8]) -> Result<ObjectId, StorageError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StorageError::Corrupt("an object key is not 8 bytes".into()))?;
    Ok(ObjectId(u64::from_be_bytes(bytes)))
}

/// Checks the wire's limits on an object.
fn check_object(obj: &TokenObject) -> Result<(), StorageError> {
    if obj.attributes.len() > MAX_ATTRIBUTES {
        return Err(StorageError::Invalid(
            "too many attributes in a token object",
        ));
    }
    if obj
        .attributes
        .iter()
        .any(|a| a.value.len() > MAX_ATTRIBUTE_VALUE_LEN)
    {
        return Err(StorageError::Invalid("attribute value too long"));
    }
    Ok(())
}

/// What a versioned write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The version was stored.
    Stored,
    /// Exactly this version was stored already.
    Unchanged,
}

impl Storage {
    /// Stores `obj` as `version`, replacing any older version of it (a tombstone
    /// included).
    ///
    /// # Errors
    ///
    /// [`StorageError::Superseded`] if a newer version is stored, or another record with
    /// this very version; [`StorageError::Invalid`] if the object breaks the wire's limits
    /// (more than [`MAX_ATTRIBUTES`] attributes, a value over [`MAX_ATTRIBUTE_VALUE_LEN`]
    /// bytes) or would be one object more than [`MAX_LIVE_OBJECTS`];
    /// [`StorageError::Db`].
    pub fn put_object(
        &self,
        obj: &TokenObject,
        version: ObjectVersion,
    ) -> Result<Written, StorageError> {
        let written = self.write_record(&ObjectRecord {
            handle: obj.handle,
            version,
            object: Some(obj.clone()),
        })?;
        self.flush()?;
        Ok(written)
    }

    /// Deletes the object with `handle` as `version`: a tombstone replaces any older
    /// version of it, and is stored also if this appliance never had the object.
    ///
    /// # Errors
    ///
    /// [`StorageError::Superseded`] if a newer version is stored, or another record with
    /// this very version; [`StorageError::Db`].
    pub fn delete_object(
        &self,
        handle: ObjectId,
        version: ObjectVersion,
    ) -> Result<Written, StorageError> {
        let written = self.write_record(&ObjectRecord {
            handle,
            version,
            object: None,
        })?;
        self.flush()?;
        Ok(written)
    }

    /// Stores a record (an object or a tombstone) unless a newer version is stored; not
    /// flushed.
    fn write_record(&self, record: &ObjectRecord) -> Result<Written, StorageError> {
        let key = object_key(record.handle);
        let bytes = match &record.object {
            Some(obj) => {
                check_object(obj)?;
                if obj.handle != record.handle {
                    return Err(StorageError::Invalid("object record under another handle"));
                }
                Some(codec::encode(obj)?)
            }
            None => None,
        };
        let version = codec::encode(&record.version)?;
        let full = record.object.is_some() && self.inner.objects.len() >= MAX_LIVE_OBJECTS;
        let inner = &*self.inner;
        let written = (&inner.objects, &inner.object_versions)
            .transaction(|(objects, versions)| {
                let live = objects.get(key)?;
                let stored = match versions.get(key)? {
                    Some(v) => {
                        Some(codec::decode::<ObjectVersion>(&v, "object version").map_err(abort)?)
                    }
                    None => live.as_ref().map(|_| ObjectVersion::ORIGINAL),
                };
                match stored.map(|v| v.cmp(&record.version)) {
                    Some(Ordering::Greater) => {
                        return Err(abort(StorageError::Superseded {
                            handle: record.handle,
                        }));
                    }
                    Some(Ordering::Equal) if live.as_deref() == bytes.as_deref() => {
                        return Ok(Written::Unchanged);
                    }
                    Some(Ordering::Equal) => {
                        return Err(abort(StorageError::Superseded {
                            handle: record.handle,
                        }));
                    }
                    Some(Ordering::Less) | None => {}
                }
                match &bytes {
                    Some(bytes) => {
                        if live.is_none() && full {
                            return Err(abort(StorageError::Invalid(
                                "the token holds as many objects as it can",
                            )));
                        }
                        objects.insert(&key, bytes.as_slice())?;
                    }
                    None => {
                        objects.remove(&key)?;
                    }
                }
                versions.insert(&key, version.as_slice())?;
                Ok::<_, TxError>(Written::Stored)
            })
            .db()?;
        if written == Written::Stored && record.object.is_none() {
            self.prune_tombstones()?;
        }
        Ok(written)
    }

    /// Removes the oldest tombstones past [`MAX_TOMBSTONES`]. An object deleted that long
    /// ago may come back from an appliance that missed its deletion and every deletion
    /// since (docs/pkcs11.md).
    fn prune_tombstones(&self) -> Result<(), StorageError> {
        let versions = &self.inner.object_versions;
        if versions.len() <= MAX_TOMBSTONES {
            return Ok(());
        }
        let mut tombstones = Vec::new();
        for item in versions.iter() {
            let (key, value) = item.db()?;
            if !self.inner.objects.contains_key(&key).db()? {
                let version: ObjectVersion = codec::decode(&value, "object version")?;
                tombstones.push((version, key, value));
            }
        }
        if tombstones.len() <= MAX_TOMBSTONES {
            return Ok(());
        }
        tombstones.sort_by_key(|(version, _, _)| *version);
        let excess = tombstones.len() - MAX_TOMBSTONES;
        for (_, key, value) in tombstones.into_iter().take(excess) {
            // Only if it is still that tombstone: a write since wins.
            let _ = versions
                .compare_and_swap(&key, Some(value), None::<&[u8]>)
                .db()?;
        }
        Ok(())
    }

    /// The object with `handle` and its version, unless there is none or it was deleted.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] if the stored object does not decode or carries another
    /// handle; [`StorageError::Db`].
    pub fn object(
        &self,
        handle: ObjectId,
    ) -> Result<Option<(TokenObject, ObjectVersion)>, StorageError> {
        let key = object_key(handle);
        let Some(bytes) = self.inner.objects.get(key).db()? else {
            return Ok(None);
        };
        let obj: TokenObject = codec::decode(&bytes, "token object")?;
        if obj.handle != handle {
            return Err(StorageError::Corrupt(format!(
                "object {} is stored under handle {}",
                obj.handle.0, handle.0
            )));
        }
        let version = match self.inner.object_versions.get(key).db()? {
            Some(v) => codec::decode(&v, "object version")?,
            None => ObjectVersion::ORIGINAL,
        };
        Ok(Some((obj, version)))
    }

    /// The handle, version and class of every object, deleted ones included, ordered by
    /// handle.
    ///
    /// Decodes only the start of each object: a [`TokenObject`] encodes its handle and
    /// class first (a test checks it).
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn objects(&self) -> Result<Vec<ObjectSummary>, StorageError> {
        let mut list = Vec::new();
        for entry in self.entries(ObjectId(0)) {
            let entry = entry?;
            let class = match &entry.object {
                Some(bytes) => {
                    let ((_, class), _): ((ObjectId, ittc_wire::ObjectClass), usize) =
                        codec::decode_prefix(bytes, "token object")?;
                    Some(class)
                }
                None => None,
            };
            list.push(ObjectSummary {
                handle: entry.handle,
                version: entry.version,
                class,
            });
        }
        Ok(list)
    }

    /// The records (objects and tombstones) with handles from `from` on, in handle order,
    /// as many as fit in `budget` bytes of their encoding (but the first always if
    /// `at_least_one`), and the handle the next page starts at (`None` after the last).
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub(super) fn objects_page(
        &self,
        from: ObjectId,
        budget: usize,
        at_least_one: bool,
    ) -> Result<(Vec<ObjectRecord>, Option<ObjectId>), StorageError> {
        let mut records = Vec::new();
        let mut used = 0usize;
        for entry in self.entries(from) {
            let entry = entry?;
            // The object's encoding, and 16 bytes of version and a few of framing.
            let size = entry.object.as_ref().map_or(0, |b| b.len()) + 32;
            let fits = used.saturating_add(size) <= budget || (at_least_one && records.is_empty());
            if !fits || records.len() >= MAX_OBJECTS {
                return Ok((records, Some(entry.handle)));
            }
            used = used.saturating_add(size);
            let object = match &entry.object {
                Some(bytes) => Some(codec::decode::<TokenObject>(bytes, "token object")?),
                None => None,
            };
            records.push(ObjectRecord {
                handle: entry.handle,
                version: entry.version,
                object,
            });
        }
        Ok((records, None))
    }

    /// Every record from `from` on, in handle order: the two trees walked side by side.
    fn entries(&self, from: ObjectId) -> Entries {
        let key = object_key(from);
        Entries {
            objects: self.inner.objects.range(key..).peekable(),
            versions: self.inner.object_versions.range(key..).peekable(),
        }
    }

    /// Stores a record a peer holds unless the same or a newer version is here; returns
    /// whether it was stored. Not flushed: the caller flushes (see `public_state.rs`).
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] as [`Storage::put_object`]; [`StorageError::Db`].
    pub(super) fn adopt_object(&self, record: &ObjectRecord) -> Result<bool, StorageError> {
        match self.write_record(record) {
            Ok(written) => Ok(written == Written::Stored),
            Err(StorageError::Superseded { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Whether any object is stored (a tombstone counts).
    ///
    /// # Errors
    ///
    /// [`StorageError::Db`].
    pub(super) fn has_objects(&self) -> Result<bool, StorageError> {
        Ok(!self.inner.objects.is_empty() || !self.inner.object_versions.is_empty())
    }
}

/// One handle's record as stored: the object's encoding, if live, and its version.
struct Entry {
    handle: ObjectId,
    version: ObjectVersion,
    object: Option<sled::IVec>,
}

/// The `objects` and `object_versions` trees walked side by side (see
/// [`Storage::entries`]).
struct Entries {
    objects: Peekable<sled::Iter>,
    versions: Peekable<sled::Iter>,
}

impl Entries {
    fn entry(
        key: &[u8],
        object: Option<sled::IVec>,
        version: Option<sled::IVec>,
    ) -> Result<Entry, StorageError> {
        Ok(Entry {
            handle: handle_of(key)?,
            version: match version {
                Some(v) => codec::decode(&v, "object version")?,
                None => ObjectVersion::ORIGINAL,
            },
            object,
        })
    }
}

impl Iterator for Entries {
    type Item = Result<Entry, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.objects.peek(), self.versions.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) | (Some(Ok(_)), None) => Ordering::Less,
            (_, Some(Err(_))) | (None, Some(Ok(_))) => Ordering::Greater,
            (Some(Ok((a, _))), Some(Ok((b, _)))) => a.cmp(b),
        };
        let item = match order {
            Ordering::Less => self
                .objects
                .next()?
                .db()
                .and_then(|(key, object)| Self::entry(&key, Some(object), None)),
            Ordering::Greater => self
                .versions
                .next()?
                .db()
                .and_then(|(key, version)| Self::entry(&key, None, Some(version))),
            Ordering::Equal => match (self.objects.next()?.db(), self.versions.next()?.db()) {
                (Ok((key, object)), Ok((_, version))) => {
                    Self::entry(&key, Some(object), Some(version))
                }
                (Err(err), _) | (_, Err(err)) => Err(err),
            },
        };
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use ittc_wire::{Attribute, ObjectClass};

    use super::super::test_support::*;
    use super::*;

    fn object(handle: u64, class: ObjectClass, value: &[u8]) -> TokenObject {
        TokenObject {
            handle: ObjectId(handle),
            class,
            attributes: vec![
                Attribute {
                    kind: 0x03,
                    value: b"label".to_vec(),
                },
                Attribute {
                    kind: 0x11,
                    value: value.to_vec(),
                },
            ],
        }
    }

    fn v(counter: u64) -> ObjectVersion {
        ObjectVersion { counter, writer: 7 }
    }

    #[test]
    fn objects_round_trip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let cert = object(300, ObjectClass::Certificate, &[0x30; 1000]);
        let data = object(7, ObjectClass::Data, b"");
        storage.put_object(&cert, v(1)).unwrap();
        storage.put_object(&data, v(2)).unwrap();
        assert_eq!(
            storage.object(ObjectId(300)).unwrap(),
            Some((cert.clone(), v(1)))
        );
        assert_eq!(storage.object(ObjectId(8)).unwrap(), None);
        drop(storage);

        let storage = open(dir.path(), 1);
        assert_eq!(storage.object(ObjectId(300)).unwrap(), Some((cert, v(1))));
        assert_eq!(storage.object(ObjectId(7)).unwrap(), Some((data, v(2))));
        assert_eq!(
            storage.objects().unwrap(),
            vec![
                ObjectSummary {
                    handle: ObjectId(7),
                    version: v(2),
                    class: Some(ObjectClass::Data)
                },
                ObjectSummary {
                    handle: ObjectId(300),
                    version: v(1),
                    class: Some(ObjectClass::Certificate)
                },
            ]
        );
    }

    #[test]
    fn a_newer_version_replaces_an_older_one_never_the_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let old = object(1, ObjectClass::PublicKey, b"old");
        let new = object(1, ObjectClass::PrivateKey, b"new");
        assert_eq!(storage.put_object(&old, v(1)).unwrap(), Written::Stored);
        assert_eq!(storage.put_object(&new, v(2)).unwrap(), Written::Stored);
        assert_eq!(
            storage.object(ObjectId(1)).unwrap(),
            Some((new.clone(), v(2)))
        );
        // The same version again: nothing to do. An older one, or another object under
        // the same version: refused.
        assert_eq!(storage.put_object(&new, v(2)).unwrap(), Written::Unchanged);
        assert!(matches!(
            storage.put_object(&old, v(1)),
            Err(StorageError::Superseded { .. })
        ));
        assert!(matches!(
            storage.put_object(&old, v(2)),
            Err(StorageError::Superseded { .. })
        ));
        assert!(matches!(
            storage.delete_object(ObjectId(1), v(1)),
            Err(StorageError::Superseded { .. })
        ));
        assert_eq!(storage.object(ObjectId(1)).unwrap(), Some((new, v(2))));
        assert_eq!(storage.objects().unwrap().len(), 1);
    }

    #[test]
    fn a_deletion_leaves_a_tombstone_that_older_writes_cannot_pass() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let obj = object(1, ObjectClass::Data, b"x");
        storage.put_object(&obj, v(1)).unwrap();
        assert_eq!(
            storage.delete_object(ObjectId(1), v(2)).unwrap(),
            Written::Stored
        );
        assert_eq!(
            storage.delete_object(ObjectId(1), v(2)).unwrap(),
            Written::Unchanged
        );
        // A copy of the object from before the deletion (a stale appliance's) stays out.
        assert!(matches!(
            storage.put_object(&obj, v(1)),
            Err(StorageError::Superseded { .. })
        ));
        assert!(
            !storage
                .adopt_object(&ObjectRecord {
                    handle: ObjectId(1),
                    version: v(1),
                    object: Some(obj.clone()),
                })
                .unwrap()
        );
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.object(ObjectId(1)).unwrap(), None);
        assert_eq!(
            storage.objects().unwrap(),
            vec![ObjectSummary {
                handle: ObjectId(1),
                version: v(2),
                class: None,
            }]
        );
        // A deletion of an object never seen here is a tombstone too; a newer write
        // brings an object back.
        storage.delete_object(ObjectId(9), v(5)).unwrap();
        assert_eq!(storage.objects().unwrap().len(), 2);
        storage.put_object(&obj, v(3)).unwrap();
        assert_eq!(storage.object(ObjectId(1)).unwrap(), Some((obj, v(3))));
    }

    #[test]
    fn an_object_from_before_versions_is_older_than_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let old = object(4, ObjectClass::Data, b"old");
        // As an older build stored it: no version record.
        storage
            .inner
            .objects
            .insert(object_key(old.handle), codec::encode(&old).unwrap())
            .unwrap();
        assert_eq!(
            storage.object(old.handle).unwrap(),
            Some((old.clone(), ObjectVersion::ORIGINAL))
        );
        assert_eq!(
            storage.objects().unwrap()[0].version,
            ObjectVersion::ORIGINAL
        );
        let first = ObjectVersion::after(None, 0, 0);
        storage.delete_object(old.handle, first).unwrap();
        assert_eq!(storage.object(old.handle).unwrap(), None);
    }

    #[test]
    fn tombstones_are_bounded_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let live = object(0, ObjectClass::Data, b"live");
        storage.put_object(&live, v(1)).unwrap();
        let count = MAX_TOMBSTONES as u64 + 10;
        for handle in 1..=count {
            storage.delete_object(ObjectId(handle), v(handle)).unwrap();
        }
        let list = storage.objects().unwrap();
        let tombstones: Vec<u64> = list
            .iter()
            .filter(|s| s.class.is_none())
            .map(|s| s.handle.0)
            .collect();
        assert_eq!(tombstones.len(), MAX_TOMBSTONES);
        assert_eq!(tombstones[0], 11, "the ten oldest went first");
        assert_eq!(storage.object(ObjectId(0)).unwrap(), Some((live, v(1))));
    }

    #[test]
    fn a_summary_decodes_from_the_start_of_an_object() {
        for class in [
            ObjectClass::Certificate,
            ObjectClass::PublicKey,
            ObjectClass::PrivateKey,
            ObjectClass::Data,
        ] {
            let obj = object(u64::MAX - 1, class, b"v");
            let bytes = codec::encode(&obj).unwrap();
            let ((handle, decoded), read): ((ObjectId, ObjectClass), usize) =
                codec::decode_prefix(&bytes, "object").unwrap();
            assert_eq!((handle, decoded), (obj.handle, class));
            assert_eq!(read, codec::encode(&(handle, class)).unwrap().len());
        }
    }

    #[test]
    fn oversized_objects_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let long = object(1, ObjectClass::Data, &vec![0; MAX_ATTRIBUTE_VALUE_LEN + 1]);
        assert!(matches!(
            storage.put_object(&long, v(1)),
            Err(StorageError::Invalid(_))
        ));
        let many = TokenObject {
            attributes: vec![long.attributes[0].clone(); MAX_ATTRIBUTES + 1],
            ..long
        };
        assert!(matches!(
            storage.put_object(&many, v(1)),
            Err(StorageError::Invalid(_))
        ));
    }

    #[test]
    fn an_object_under_the_wrong_handle_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage
            .put_object(&object(1, ObjectClass::Data, b"x"), v(1))
            .unwrap();
        let bytes = storage.inner.objects.get(object_key(ObjectId(1))).unwrap();
        storage
            .inner
            .objects
            .insert(object_key(ObjectId(2)), bytes.unwrap())
            .unwrap();
        assert!(matches!(
            storage.object(ObjectId(2)),
            Err(StorageError::Corrupt(_))
        ));
    }
}
