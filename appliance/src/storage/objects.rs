//! Token objects (certificates, public keys, private-key stubs, data objects), stored as
//! the wire encodes them and keyed by their [`ObjectId`].

use ittc_wire::limits::{MAX_ATTRIBUTE_VALUE_LEN, MAX_ATTRIBUTES, MAX_OBJECTS};
use ittc_wire::{ObjectId, ObjectSummary, TokenObject};

use super::error::SledResultExt;
use super::{Storage, StorageError, codec};

/// The key of an object in the `objects` tree.
fn object_key(handle: ObjectId) -> [u8; 8] {
    handle.0.to_be_bytes()
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

impl Storage {
    /// Stores a token object, replacing any object with the same handle.
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] if the object breaks the wire's limits (more than
    /// [`MAX_ATTRIBUTES`] attributes, a value over [`MAX_ATTRIBUTE_VALUE_LEN`] bytes);
    /// [`StorageError::Db`].
    pub fn put_object(&self, obj: &TokenObject) -> Result<(), StorageError> {
        check_object(obj)?;
        let bytes = codec::encode(obj)?;
        self.inner
            .objects
            .insert(object_key(obj.handle), bytes)
            .db()?;
        self.flush()
    }

    /// The object with `handle`, if any.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] if the stored object does not decode or carries another
    /// handle; [`StorageError::Db`].
    pub fn object(&self, handle: ObjectId) -> Result<Option<TokenObject>, StorageError> {
        let Some(bytes) = self.inner.objects.get(object_key(handle)).db()? else {
            return Ok(None);
        };
        let obj: TokenObject = codec::decode(&bytes, "token object")?;
        if obj.handle != handle {
            return Err(StorageError::Corrupt(format!(
                "object {} is stored under handle {}",
                obj.handle.0, handle.0
            )));
        }
        Ok(Some(obj))
    }

    /// The handle and class of every object, ordered by handle.
    ///
    /// Decodes only the start of each record: a [`TokenObject`] encodes its handle and
    /// class first, exactly as an [`ObjectSummary`] does (a test checks it).
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn objects(&self) -> Result<Vec<ObjectSummary>, StorageError> {
        self.inner
            .objects
            .iter()
            .values()
            .map(|bytes| {
                let (summary, _) = codec::decode_prefix(&bytes.db()?, "token object")?;
                Ok(summary)
            })
            .collect()
    }

    /// The objects with handles from `from` on, in handle order, as many as fit in
    /// `budget` bytes of their encoding (but the first always if `at_least_one`), and the
    /// handle the next page starts at (`None` after the last object).
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub(super) fn objects_page(
        &self,
        from: ObjectId,
        budget: usize,
        at_least_one: bool,
    ) -> Result<(Vec<TokenObject>, Option<ObjectId>), StorageError> {
        let mut objects = Vec::new();
        let mut used = 0usize;
        for item in self.inner.objects.range(object_key(from)..) {
            let (_, bytes) = item.db()?;
            let fits =
                used.saturating_add(bytes.len()) <= budget || (at_least_one && objects.is_empty());
            let object: TokenObject = codec::decode(&bytes, "token object")?;
            if !fits || objects.len() >= MAX_OBJECTS {
                return Ok((objects, Some(object.handle)));
            }
            used = used.saturating_add(bytes.len());
            objects.push(object);
        }
        Ok((objects, None))
    }

    /// Stores an object a peer holds unless one with its handle is here already (stored
    /// here since, which is newer); returns whether it was stored. Not flushed: the caller
    /// flushes (see `public_state.rs`).
    ///
    /// # Errors
    ///
    /// As [`Storage::put_object`].
    pub(super) fn adopt_object(&self, obj: &TokenObject) -> Result<bool, StorageError> {
        check_object(obj)?;
        let bytes = codec::encode(obj)?;
        let adopted = self
            .inner
            .objects
            .compare_and_swap(object_key(obj.handle), None::<&[u8]>, Some(bytes))
            .db()?;
        Ok(adopted.is_ok())
    }

    /// Whether any object is stored.
    ///
    /// # Errors
    ///
    /// [`StorageError::Db`].
    pub(super) fn has_objects(&self) -> Result<bool, StorageError> {
        Ok(!self.inner.objects.is_empty())
    }

    /// Deletes the object with `handle`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`StorageError::Db`].
    pub fn delete_object(&self, handle: ObjectId) -> Result<bool, StorageError> {
        let existed = self
            .inner
            .objects
            .remove(object_key(handle))
            .db()?
            .is_some();
        if existed {
            self.flush()?;
        }
        Ok(existed)
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

    #[test]
    fn objects_round_trip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let cert = object(300, ObjectClass::Certificate, &[0x30; 1000]);
        let data = object(7, ObjectClass::Data, b"");
        storage.put_object(&cert).unwrap();
        storage.put_object(&data).unwrap();
        assert_eq!(storage.object(ObjectId(300)).unwrap(), Some(cert.clone()));
        assert_eq!(storage.object(ObjectId(8)).unwrap(), None);
        drop(storage);

        let storage = open(dir.path(), 1);
        assert_eq!(storage.object(ObjectId(300)).unwrap(), Some(cert));
        assert_eq!(storage.object(ObjectId(7)).unwrap(), Some(data));
        assert_eq!(
            storage.objects().unwrap(),
            vec![
                ObjectSummary {
                    handle: ObjectId(7),
                    class: ObjectClass::Data
                },
                ObjectSummary {
                    handle: ObjectId(300),
                    class: ObjectClass::Certificate
                },
            ]
        );
    }

    #[test]
    fn put_replaces_and_delete_removes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage
            .put_object(&object(1, ObjectClass::PublicKey, b"old"))
            .unwrap();
        let new = object(1, ObjectClass::PrivateKey, b"new");
        storage.put_object(&new).unwrap();
        assert_eq!(storage.object(ObjectId(1)).unwrap(), Some(new));
        assert_eq!(storage.objects().unwrap().len(), 1);
        assert!(storage.delete_object(ObjectId(1)).unwrap());
        assert!(!storage.delete_object(ObjectId(1)).unwrap());
        drop(storage);
        let storage = open(dir.path(), 1);
        assert_eq!(storage.object(ObjectId(1)).unwrap(), None);
        assert_eq!(storage.objects().unwrap(), vec![]);
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
            let (summary, read): (ObjectSummary, usize) =
                codec::decode_prefix(&bytes, "object").unwrap();
            assert_eq!(
                summary,
                ObjectSummary {
                    handle: obj.handle,
                    class
                }
            );
            assert_eq!(read, codec::encode(&summary).unwrap().len());
        }
    }

    #[test]
    fn oversized_objects_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        let long = object(1, ObjectClass::Data, &vec![0; MAX_ATTRIBUTE_VALUE_LEN + 1]);
        assert!(matches!(
            storage.put_object(&long),
            Err(StorageError::Invalid(_))
        ));
        let many = TokenObject {
            attributes: vec![long.attributes[0].clone(); MAX_ATTRIBUTES + 1],
            ..long
        };
        assert!(matches!(
            storage.put_object(&many),
            Err(StorageError::Invalid(_))
        ));
    }

    #[test]
    fn an_object_under_the_wrong_handle_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), 1);
        storage
            .put_object(&object(1, ObjectClass::Data, b"x"))
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
