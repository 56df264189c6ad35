//! Session objects (`CKA_TOKEN`=false) and `C_CopyObject`.
//!
//! Session objects live in the module, not on the appliances. As PKCS#11 says, every
//! session of the application sees them (private ones only while the user is logged in),
//! and they are destroyed when the session that created them closes, at
//! `C_CloseAllSessions`, at `C_Finalize`, and — the private ones — at `C_Logout`.
//!
//! A copy of a cluster key's private key is always a session object: it carries the
//! cluster key id ([`CKA_ITTC_KEY_ID`]) and signs and decrypts through the same shares.
//! Copies of stored objects may be token objects (stored on every appliance) or session
//! objects.

use cryptoki_sys as ck;
use cryptoki_sys::{CK_ATTRIBUTE_TYPE, CK_OBJECT_HANDLE, CK_SESSION_HANDLE};
use ittc_wire::{ObjectClass, ObjectId, TokenObject, UserKind};

use super::{Module, TokenView};
use crate::attributes::{Attr, CKA_ITTC_KEY_ID, bool_value, read_bool, to_stored};
use crate::client::lock;
use crate::error::{Error, Result};
use crate::objects::{self, Lookup, Object};

/// Session object handles have the top bit set, so they never collide with a stored
/// object's id (below 2^62) or a cluster key's handle (2^62 to 2^63).
const SESSION_HANDLE_BIT: u64 = 1 << 63;

/// One session object and the session that created it.
#[derive(Clone, Debug)]
struct SessionObject {
    owner: CK_SESSION_HANDLE,
    object: Object,
}

/// The application's session objects.
#[derive(Debug, Default)]
pub(super) struct Store {
    objects: Vec<SessionObject>,
    next: u64,
}

impl Store {
    fn insert(&mut self, owner: CK_SESSION_HANDLE, mut object: Object) -> Result<CK_OBJECT_HANDLE> {
        self.next = self.next.wrapping_add(1) & !SESSION_HANDLE_BIT;
        let handle = CK_OBJECT_HANDLE::try_from(SESSION_HANDLE_BIT | self.next)
            .map_err(|_| Error::HostMemory)?;
        object.handle = handle;
        self.objects.push(SessionObject { owner, object });
        Ok(handle)
    }

    /// The objects visible with `login`.
    pub(super) fn visible(&self, login: Option<UserKind>) -> impl Iterator<Item = &Object> {
        self.objects
            .iter()
            .map(|s| &s.object)
            .filter(move |o| !o.private || login == Some(UserKind::User))
    }

    fn get_mut(&mut self, handle: CK_OBJECT_HANDLE) -> Option<&mut Object> {
        self.objects
            .iter_mut()
            .map(|s| &mut s.object)
            .find(|o| o.handle == handle)
    }

    fn remove(&mut self, handle: CK_OBJECT_HANDLE) {
        self.objects.retain(|s| s.object.handle != handle);
    }

    /// Destroys the objects `session` created (it is closing).
    pub(super) fn close(&mut self, session: CK_SESSION_HANDLE) {
        self.objects.retain(|s| s.owner != session);
    }

    /// Destroys every session object.
    pub(super) fn clear(&mut self) {
        self.objects.clear();
    }

    /// Destroys the private session objects (the user logged out).
    pub(super) fn drop_private(&mut self) {
        self.objects.retain(|s| !s.object.private);
    }
}

/// Whether `handle` can only name a session object.
pub(super) fn is_session_handle(handle: CK_OBJECT_HANDLE) -> bool {
    u64::from(handle) & SESSION_HANDLE_BIT != 0
}

/// A session object as the application sees it now: a private-key copy points at its
/// cluster key's position in the current view (none if the key is gone).
pub(super) fn resolve(view: &TokenView, mut object: Object) -> Object {
    if object.class == ObjectClass::PrivateKey {
        let key_id = object.get(CKA_ITTC_KEY_ID);
        object.key = view
            .keys
            .iter()
            .position(|k| Lookup::Value(k.key_id.as_bytes().to_vec()) == key_id);
    }
    object
}

fn set(attrs: &mut Vec<Attr>, kind: CK_ATTRIBUTE_TYPE, value: Vec<u8>) {
    match attrs.iter_mut().find(|a| a.kind == kind) {
        Some(a) => a.value = value,
        None => attrs.push(Attr { kind, value }),
    }
}

fn is_private(attrs: &[Attr]) -> bool {
    attrs
        .iter()
        .find(|a| a.kind == ck::CKA_PRIVATE)
        .is_some_and(|a| a.value.first().is_some_and(|b| *b != 0))
}

/// The attributes an application may change on an object (by `C_SetAttributeValue`, or in
/// a copy): `CKA_ID` and `CKA_LABEL`, and the value attributes of data objects.
pub(super) fn modifiable(class: ObjectClass, kind: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(kind, ck::CKA_ID | ck::CKA_LABEL)
        || (class == ObjectClass::Data
            && matches!(
                kind,
                ck::CKA_VALUE | ck::CKA_APPLICATION | ck::CKA_OBJECT_ID
            ))
}

/// `source`'s attributes with `template` applied as `C_CopyObject` allows, and whether the
/// copy is a token object. `CKA_TOKEN` and `CKA_PRIVATE` may change (a private key stays
/// private and its copy is a session object); the modifiable attributes may change; any
/// other attribute may be given only with the value it has (else
/// `CKR_ATTRIBUTE_READ_ONLY`), and one the object lacks is `CKR_ATTRIBUTE_TYPE_INVALID`.
fn copy_attributes(source: &Object, template: &[Attr]) -> Result<(Vec<Attr>, bool)> {
    let key = source.class == ObjectClass::PrivateKey;
    let mut token =
        !key && matches!(source.get(ck::CKA_TOKEN), Lookup::Value(v) if v == bool_value(true));
    let mut attrs = source.attrs.clone();
    for attr in template {
        match attr.kind {
            ck::CKA_TOKEN => {
                token = read_bool(&attr.value)?;
                if key && token {
                    // A second token object for the same cluster key is not supported.
                    return Err(Error::TemplateInconsistent);
                }
            }
            ck::CKA_PRIVATE => {
                if key && !read_bool(&attr.value)? {
                    return Err(Error::TemplateInconsistent);
                }
            }
            kind if modifiable(source.class, kind) => {}
            kind => match source.get(kind) {
                Lookup::Value(v) if v == attr.value => {}
                Lookup::Invalid => return Err(Error::AttributeTypeInvalid),
                Lookup::Value(_) | Lookup::Sensitive => return Err(Error::AttributeReadOnly),
            },
        }
        set(&mut attrs, attr.kind, attr.value.clone());
    }
    set(&mut attrs, ck::CKA_TOKEN, bool_value(token));
    if key {
        // The copy belongs to the application, which may destroy it.
        set(&mut attrs, ck::CKA_DESTROYABLE, bool_value(true));
    }
    Ok((attrs, token))
}

impl Module {
    /// A session object visible to `session` (which must exist).
    pub(super) fn session_object(
        &self,
        view: &TokenView,
        login: Option<UserKind>,
        handle: CK_OBJECT_HANDLE,
    ) -> Option<Object> {
        let state = lock(&self.state);
        let object = state
            .session_objects
            .visible(login)
            .find(|o| o.handle == handle)
            .cloned();
        drop(state);
        object.map(|o| resolve(view, o))
    }

    /// Keeps `object` (built as a stored object would be) as a session object of `session`.
    pub(super) fn add_session_object(
        &self,
        session: CK_SESSION_HANDLE,
        mut object: TokenObject,
    ) -> Result<CK_OBJECT_HANDLE> {
        object.set_attribute(u64::from(ck::CKA_TOKEN), vec![0]);
        let mut view = objects::build_view(&[], &[object]);
        let mut object = view.pop().ok_or(Error::TemplateInconsistent)?;
        object.stored = None;
        self.insert_session_object(session, object)
    }

    fn insert_session_object(
        &self,
        session: CK_SESSION_HANDLE,
        object: Object,
    ) -> Result<CK_OBJECT_HANDLE> {
        let mut state = lock(&self.state);
        let login = state.login;
        if !state.sessions.contains_key(&session) {
            return Err(Error::SessionHandleInvalid);
        }
        if object.private && login != Some(UserKind::User) {
            return Err(Error::UserNotLoggedIn);
        }
        state.session_objects.insert(session, object)
    }

    /// `C_SetAttributeValue` on a session object, if `handle` names one.
    pub(super) fn set_session_attributes(
        &self,
        object: &Object,
        template: &[Attr],
    ) -> Result<bool> {
        if object.stored.is_some() || !is_session_handle(object.handle) {
            return Ok(false);
        }
        for attr in template {
            if !modifiable(object.class, attr.kind) {
                return Err(match object.get(attr.kind) {
                    Lookup::Invalid => Error::AttributeTypeInvalid,
                    _ => Error::AttributeReadOnly,
                });
            }
        }
        let mut state = lock(&self.state);
        let target = state
            .session_objects
            .get_mut(object.handle)
            .ok_or(Error::ObjectHandleInvalid)?;
        for attr in template {
            set(&mut target.attrs, attr.kind, attr.value.clone());
        }
        Ok(true)
    }

    /// `C_DestroyObject` on a session object, if `handle` names one.
    pub(super) fn destroy_session_object(&self, object: &Object) -> bool {
        if object.stored.is_some() || !is_session_handle(object.handle) {
            return false;
        }
        lock(&self.state).session_objects.remove(object.handle);
        true
    }

    /// `C_CopyObject`: a copy of `handle` with `template` applied, as a token object
    /// (stored on every appliance; read-write session and user login required) or a
    /// session object. A cluster key's private key is copied as a session object that
    /// uses the same cluster key.
    pub fn copy_object(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        let (_, source) = self.object(session, handle)?;
        if matches!(source.get(ck::CKA_COPYABLE), Lookup::Value(v) if v == bool_value(false)) {
            return Err(Error::ActionProhibited);
        }
        let (attrs, token) = copy_attributes(&source, template)?;
        let private = is_private(&attrs);
        if !token {
            let copy = Object {
                handle: 0,
                class: source.class,
                private,
                attrs,
                key: None,
                stored: None,
            };
            return self.insert_session_object(session, copy);
        }
        self.require_rw_user(session)?;
        let id = super::new_object_id()?;
        let mut object = TokenObject {
            handle: ObjectId(id),
            class: source.class,
            attributes: Vec::new(),
        };
        for attr in attrs {
            if attr.kind != CKA_ITTC_KEY_ID {
                object.set_attribute(u64::from(attr.kind), to_stored(attr.kind, &attr.value)?);
            }
        }
        // The copy of a cluster key's public key object must never be taken for it: an
        // empty link matches no key and excludes the copy from the match by `CKA_ID`.
        object.set_attribute(u64::from(CKA_ITTC_KEY_ID), Vec::new());
        let handle = CK_OBJECT_HANDLE::try_from(id).map_err(|_| Error::HostMemory)?;
        self.put_everywhere(object)?;
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::ulong;

    fn object(class: ObjectClass, attrs: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Object {
        Object {
            handle: 5,
            class,
            private: false,
            attrs: attrs
                .iter()
                .map(|(kind, value)| Attr {
                    kind: *kind,
                    value: value.clone(),
                })
                .collect(),
            key: None,
            stored: None,
        }
    }

    fn attr(kind: CK_ATTRIBUTE_TYPE, value: Vec<u8>) -> Attr {
        Attr { kind, value }
    }

    #[test]
    fn a_copy_may_change_label_token_and_private_only() {
        let public = object(
            ObjectClass::PublicKey,
            &[
                (ck::CKA_CLASS, ulong(ck::CKO_PUBLIC_KEY)),
                (ck::CKA_TOKEN, bool_value(true)),
                (ck::CKA_LABEL, b"a".to_vec()),
                (ck::CKA_MODULUS, vec![0xc5; 4]),
            ],
        );
        let (attrs, token) = copy_attributes(
            &public,
            &[
                attr(ck::CKA_LABEL, b"b".to_vec()),
                attr(ck::CKA_TOKEN, bool_value(false)),
                attr(ck::CKA_MODULUS, vec![0xc5; 4]),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!token);
        assert!(attrs.contains(&attr(ck::CKA_LABEL, b"b".to_vec())));
        let (_, token) = copy_attributes(&public, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(token, "a token object's copy is a token object by default");
        let refused = |template: &[Attr]| copy_attributes(&public, template).err();
        assert_eq!(
            refused(&[attr(ck::CKA_CLASS, ulong(ck::CKO_DATA))]),
            Some(Error::AttributeReadOnly)
        );
        assert_eq!(
            refused(&[attr(ck::CKA_MODULUS, vec![1; 4])]),
            Some(Error::AttributeReadOnly)
        );
        assert_eq!(
            refused(&[attr(ck::CKA_VALUE_LEN, ulong(3))]),
            Some(Error::AttributeTypeInvalid)
        );
    }

    #[test]
    fn a_private_key_copy_is_a_private_session_object() {
        let key = object(
            ObjectClass::PrivateKey,
            &[
                (ck::CKA_TOKEN, bool_value(true)),
                (ck::CKA_PRIVATE, bool_value(true)),
                (ck::CKA_DESTROYABLE, bool_value(false)),
                (ck::CKA_KEY_TYPE, ulong(ck::CKK_RSA)),
            ],
        );
        let (attrs, token) = copy_attributes(&key, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!token);
        assert!(attrs.contains(&attr(ck::CKA_DESTROYABLE, bool_value(true))));
        let refused = |template: &[Attr]| copy_attributes(&key, template).err();
        assert_eq!(
            refused(&[attr(ck::CKA_TOKEN, bool_value(true))]),
            Some(Error::TemplateInconsistent)
        );
        assert_eq!(
            refused(&[attr(ck::CKA_PRIVATE, bool_value(false))]),
            Some(Error::TemplateInconsistent)
        );
        assert_eq!(
            refused(&[attr(ck::CKA_KEY_TYPE, ulong(ck::CKK_EC))]),
            Some(Error::AttributeReadOnly)
        );
    }

    #[test]
    fn session_handles_never_meet_stored_or_key_handles() {
        let mut store = Store::default();
        let o = object(ObjectClass::Data, &[]);
        let h = store.insert(1, o.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert!(is_session_handle(h));
        assert!(!is_session_handle(u64::MAX >> 2));
        assert!(!is_session_handle((1 << 62) | 7));
        let h2 = store.insert(2, o).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(h, h2);
        store.close(1);
        assert_eq!(
            store.visible(None).map(|o| o.handle).collect::<Vec<_>>(),
            [h2]
        );
    }
}
