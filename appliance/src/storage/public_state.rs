//! The cluster's public state as appliances pass it on: token objects, PIN records and the
//! certificate deny-list, in pages ([`PublicState`]). An appliance serves its own
//! ([`Storage::public_state_page`]); one that starts with an empty store adopts a peer's
//! ([`Storage::adopt_public_state`]) without overwriting anything set here meanwhile.
//!
//! Taking the state is crash-safe: a flag in `meta` is set (and flushed) before the first
//! page is adopted and cleared after the last, so a store left half-filled by a crash is
//! filled again at the next start ([`Storage::needs_public_state`]); adopting is
//! idempotent.

use ittc_wire::{ObjectId, PublicState};
use zeroize::Zeroizing;

use super::error::SledResultExt;
use super::{Storage, StorageError, codec};

/// `meta` key: set while the public state is being taken from a peer.
const META_TAKING: &[u8] = b"public_state_taking";

/// What one [`Storage::adopt_public_state`] stored (what was here already is not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Token objects.
    pub objects: usize,
    /// PIN records.
    pub pins: usize,
    /// Deny-list entries.
    pub revoked: usize,
}

impl Adopted {
    /// Adds another page's counts.
    pub fn add(&mut self, other: Adopted) {
        self.objects += other.objects;
        self.pins += other.pins;
        self.revoked += other.revoked;
    }
}

impl Storage {
    /// Whether this appliance should take the public state from a peer: its store holds
    /// no token object and no PIN record (a new data folder), or an earlier taking did not
    /// finish.
    ///
    /// # Errors
    ///
    /// [`StorageError::Db`].
    pub fn needs_public_state(&self) -> Result<bool, StorageError> {
        Ok(self.inner.meta.contains_key(META_TAKING).db()?
            || (!self.has_objects()? && self.inner.pins.is_empty()))
    }

    /// Records that the public state is being taken (flushed), or that it has been.
    ///
    /// # Errors
    ///
    /// [`StorageError::Db`].
    pub fn mark_taking_public_state(&self, taking: bool) -> Result<(), StorageError> {
        if taking {
            self.inner.meta.insert(META_TAKING, &[1u8][..]).db()?;
        } else {
            self.inner.meta.remove(META_TAKING).db()?;
        }
        self.flush()
    }

    /// One page of this appliance's public state: from `None`, the PIN records, the
    /// deny-list and the first objects; from `Some(handle)`, the objects from `handle` on.
    /// The objects of a page take at most `budget` bytes of encoding, less what the PIN
    /// records and the deny-list take; a later page has at least one object.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] or [`StorageError::Db`].
    pub fn public_state_page(
        &self,
        from: Option<ObjectId>,
        budget: usize,
    ) -> Result<PublicState, StorageError> {
        let (pins, revoked) = match from {
            None => (self.pin_records()?, self.revoked_certificates()?),
            Some(_) => (Vec::new(), Vec::new()),
        };
        // The verifiers are stored in clear, but a copy is a copy: zeroized.
        let used = Zeroizing::new(codec::encode(&pins)?).len() + codec::encode(&revoked)?.len();
        // A later page always carries its first object: it came in one frame, so it fits
        // in one with nothing else, and the walk through the objects moves on.
        let (objects, next) = self.objects_page(
            from.unwrap_or(ObjectId(0)),
            budget.saturating_sub(used),
            from.is_some(),
        )?;
        Ok(PublicState {
            pins,
            revoked,
            objects,
            next,
        })
    }

    /// Stores a page of a peer's public state, keeping whatever is here already (an
    /// object with the same handle, a PIN set here, a deny-list entry); flushes once.
    ///
    /// # Errors
    ///
    /// [`StorageError::Invalid`] for a record the wire or this store would refuse (the
    /// records before it are stored); [`StorageError::Db`].
    pub fn adopt_public_state(&self, page: &PublicState) -> Result<Adopted, StorageError> {
        let mut adopted = Adopted::default();
        for record in &page.pins {
            adopted.pins += usize::from(self.adopt_pin_record(record)?);
        }
        for entry in &page.revoked {
            adopted.revoked += usize::from(self.revoke_certificate(entry)?);
        }
        for object in &page.objects {
            adopted.objects += usize::from(self.adopt_object(object)?);
        }
        self.flush()?;
        Ok(adopted)
    }
}

#[cfg(test)]
mod tests {
    use ittc_wire::{Attribute, ObjectClass, RevokedCertificate, TokenObject, UserKind};

    use super::super::test_support::*;
    use super::*;

    fn object(handle: u64, len: usize) -> TokenObject {
        TokenObject {
            handle: ObjectId(handle),
            class: ObjectClass::Data,
            attributes: vec![Attribute {
                kind: 0x11,
                value: vec![handle as u8; len],
            }],
        }
    }

    fn version(counter: u64) -> ittc_wire::ObjectVersion {
        ittc_wire::ObjectVersion { counter, writer: 1 }
    }

    /// Every page from `from`, as a peer asks for them.
    fn all_pages(storage: &Storage, budget: usize) -> Vec<PublicState> {
        let mut pages = Vec::new();
        let mut from = None;
        loop {
            let page = storage.public_state_page(from, budget).unwrap();
            let next = page.next;
            pages.push(page);
            match next {
                None => return pages,
                Some(n) => from = Some(n),
            }
            assert!(pages.len() < 100, "no progress");
        }
    }

    #[test]
    fn a_new_store_takes_a_peers_state_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let peer = open(&dir.path().join("peer"), 1);
        peer.set_pin(UserKind::User, b"1234").unwrap();
        peer.revoke_certificate(&RevokedCertificate {
            serial: vec![0x3c; 20],
            label: "appliance 3".into(),
            revoked_unix_ms: 9,
        })
        .unwrap();
        for handle in [5, 1, u64::MAX, 300] {
            peer.put_object(&object(handle, 1000), version(handle))
                .unwrap();
        }
        // A deleted object passes on as its tombstone.
        peer.delete_object(ObjectId(40), version(40)).unwrap();
        // About two objects a page.
        let pages = all_pages(&peer, 2500);
        assert!(pages.len() >= 2, "{}", pages.len());
        assert_eq!(pages[0].pins.len(), 1);
        assert_eq!(pages[0].revoked.len(), 1);
        assert!(
            pages[1..]
                .iter()
                .all(|p| p.pins.is_empty() && p.revoked.is_empty())
        );
        let handles: Vec<u64> = pages
            .iter()
            .flat_map(|p| p.objects.iter().map(|o| o.handle.0))
            .collect();
        assert_eq!(handles, vec![1, 5, 40, 300, u64::MAX]);

        let new = open(&dir.path().join("new"), 3);
        assert!(new.needs_public_state().unwrap());
        new.mark_taking_public_state(true).unwrap();
        let mut total = Adopted::default();
        for page in &pages {
            total.add(new.adopt_public_state(page).unwrap());
        }
        // Half done is still to do; done is done.
        assert!(new.needs_public_state().unwrap());
        new.mark_taking_public_state(false).unwrap();
        assert!(!new.needs_public_state().unwrap());
        assert_eq!(
            total,
            Adopted {
                objects: 5,
                pins: 1,
                revoked: 1
            }
        );
        assert_eq!(
            new.object(ObjectId(300)).unwrap(),
            Some((object(300, 1000), version(300)))
        );
        assert_eq!(new.objects().unwrap(), peer.objects().unwrap());
        assert!(new.is_revoked(&[0x3c; 20]).unwrap());
        assert_eq!(
            new.check_pin(UserKind::User, b"1234").unwrap(),
            crate::storage::PinCheck::Correct
        );
        // Adopting again changes nothing.
        for page in &pages {
            assert_eq!(new.adopt_public_state(page).unwrap(), Adopted::default());
        }
    }

    #[test]
    fn an_object_larger_than_the_budget_still_moves() {
        let dir = tempfile::tempdir().unwrap();
        let peer = open(&dir.path().join("peer"), 1);
        peer.put_object(&object(7, 5000), version(1)).unwrap();
        peer.put_object(&object(8, 10), version(1)).unwrap();
        let pages = all_pages(&peer, 1000);
        let handles: Vec<u64> = pages
            .iter()
            .flat_map(|p| p.objects.iter().map(|o| o.handle.0))
            .collect();
        assert_eq!(handles, vec![7, 8]);
        // The first page had no room for object 7.
        assert!(pages[0].objects.is_empty());
    }

    #[test]
    fn a_store_with_objects_or_pins_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir.path().join("a"), 1);
        assert!(storage.needs_public_state().unwrap());
        storage.put_object(&object(1, 1), version(1)).unwrap();
        assert!(!storage.needs_public_state().unwrap());
        let other = open(&dir.path().join("b"), 1);
        other.set_pin(UserKind::SecurityOfficer, b"1234").unwrap();
        assert!(!other.needs_public_state().unwrap());
        // An empty peer's state is an empty page.
        let page = other.public_state_page(Some(ObjectId(0)), 1000).unwrap();
        assert!(page.objects.is_empty() && page.next.is_none());
    }
}
