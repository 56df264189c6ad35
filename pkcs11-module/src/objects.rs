//! The token's objects: what the appliances store (public keys, certificates, data
//! objects, private-key stubs) and the private key synthesised for each cluster key.
//!
//! Object handles are stable across restarts of the application: a stored object's handle
//! is its [`ObjectId`]; a cluster key's private key has a handle derived from its key id
//! (and its stub, once `CKA_ID` or `CKA_LABEL` is changed, is stored under that same id).

use cryptoki_sys as ck;
use cryptoki_sys::{CK_ATTRIBUTE_TYPE, CK_OBJECT_HANDLE};
use ittc_threshold::{Combiner, RsaPublicKey, SharingParams};
use ittc_wire::{
    KeyId, KeyStatus, ObjectClass, ObjectId, ObjectSummary, ObjectVersion, TokenObject,
};

use crate::attributes::{Attr, CKA_ITTC_KEY_ID, bool_value, rsa_spki, to_native, ulong};

/// What reading one attribute of an object gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The value, native layout.
    Value(Vec<u8>),
    /// Private key material: never readable.
    Sensitive,
    /// The object has no such attribute.
    Invalid,
}

/// A cluster key the module can use.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// The key id on the appliances.
    pub key_id: KeyId,
    /// The share epoch to ask for.
    pub epoch: u64,
    /// k of n.
    pub params: SharingParams,
    /// The appliances that hold a share of `epoch`, ascending.
    pub holders: Vec<u8>,
    /// The public key.
    pub public: RsaPublicKey,
    /// Combining set-up.
    pub combiner: Combiner,
    /// The private key object's handle.
    pub handle: CK_OBJECT_HANDLE,
}

/// One object as the application sees it.
#[derive(Clone, Debug)]
pub struct Object {
    /// Its handle.
    pub handle: CK_OBJECT_HANDLE,
    /// Its class.
    pub class: ObjectClass,
    /// Visible only to a logged-in user.
    pub private: bool,
    /// Attributes, native layout.
    pub attrs: Vec<Attr>,
    /// For a private key: the cluster key.
    pub key: Option<usize>,
    /// The stored object this view came from (none for a private key without a stub).
    pub stored: Option<ObjectId>,
}

const SENSITIVE: [CK_ATTRIBUTE_TYPE; 6] = [
    ck::CKA_PRIVATE_EXPONENT,
    ck::CKA_PRIME_1,
    ck::CKA_PRIME_2,
    ck::CKA_EXPONENT_1,
    ck::CKA_EXPONENT_2,
    ck::CKA_COEFFICIENT,
];

impl Object {
    /// Reads one attribute.
    pub fn get(&self, kind: CK_ATTRIBUTE_TYPE) -> Lookup {
        if self.class == ObjectClass::PrivateKey && SENSITIVE.contains(&kind) {
            return Lookup::Sensitive;
        }
        match self.attrs.iter().find(|a| a.kind == kind) {
            Some(a) => Lookup::Value(a.value.clone()),
            None => Lookup::Invalid,
        }
    }

    /// Whether every attribute of `template` has exactly this value here.
    pub fn matches(&self, template: &[Attr]) -> bool {
        template
            .iter()
            .all(|t| matches!(self.get(t.kind), Lookup::Value(v) if v == t.value))
    }
}

/// The handle of a cluster key's private key: a hash of its key id, in the upper half of
/// the handle space so that it never collides with a random object id (lower half).
pub fn key_handle(key_id: &KeyId) -> CK_OBJECT_HANDLE {
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let h = (h >> 2) | (1 << 62);
    CK_OBJECT_HANDLE::try_from(h).unwrap_or(CK_OBJECT_HANDLE::MAX >> 1)
}

fn stored_handle(id: ObjectId) -> CK_OBJECT_HANDLE {
    CK_OBJECT_HANDLE::try_from(id.0).unwrap_or(0)
}

fn links_to(object: &TokenObject, key_id: &KeyId) -> bool {
    object
        .attribute(u64::from(CKA_ITTC_KEY_ID))
        .is_some_and(|v| v == key_id.as_bytes())
}

/// The public key object of a cluster key: the one linked by the module's attribute,
/// else the one whose `CKA_ID` is the key id.
pub fn public_key_of<'a>(objects: &'a [TokenObject], key_id: &KeyId) -> Option<&'a TokenObject> {
    let public = || objects.iter().filter(|o| o.class == ObjectClass::PublicKey);
    public().find(|o| links_to(o, key_id)).or_else(|| {
        public().find(|o| {
            o.attribute(u64::from(ck::CKA_ID)) == Some(key_id.as_bytes())
                && o.attribute(u64::from(CKA_ITTC_KEY_ID)).is_none()
        })
    })
}

/// The private-key stub of a cluster key, if `CKA_ID` or `CKA_LABEL` was ever changed.
pub fn stub_of<'a>(objects: &'a [TokenObject], key_id: &KeyId) -> Option<&'a TokenObject> {
    objects
        .iter()
        .find(|o| o.class == ObjectClass::PrivateKey && links_to(o, key_id))
}

/// One object across the appliances read: its newest version, who holds that, and who
/// holds an older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// The object.
    pub handle: ObjectId,
    /// The newest version any appliance listed.
    pub version: ObjectVersion,
    /// That version's class, or `None` if it deleted the object.
    pub class: Option<ObjectClass>,
    /// The appliances that listed exactly that version.
    pub holders: Vec<u8>,
    /// The appliances to repair: those with an older version of the object, and, if the
    /// newest version is an object, those with none (an appliance without any record of
    /// a deleted object shows it deleted already).
    pub stale: Vec<u8>,
}

/// The newest version of every object that several appliances listed, in handle order.
/// Two records with the same version and different classes cannot both come from an
/// honest writer; the first appliance's wins.
pub fn newest(listings: &[(u8, Vec<ObjectSummary>)]) -> Vec<Reading> {
    let mut newest: std::collections::BTreeMap<ObjectId, (ObjectVersion, Option<ObjectClass>)> =
        std::collections::BTreeMap::new();
    for (_, list) in listings {
        for summary in list {
            let entry = newest
                .entry(summary.handle)
                .or_insert((summary.version, summary.class));
            if summary.version > entry.0 {
                *entry = (summary.version, summary.class);
            }
        }
    }
    newest
        .into_iter()
        .map(|(handle, (version, class))| {
            let mut holders = Vec::new();
            let mut stale = Vec::new();
            for (index, list) in listings {
                match list.iter().find(|s| s.handle == handle) {
                    Some(s) if s.version == version && s.class == class => holders.push(*index),
                    Some(_) => stale.push(*index),
                    None if class.is_some() => stale.push(*index),
                    None => {}
                }
            }
            Reading {
                handle,
                version,
                class,
                holders,
                stale,
            }
        })
        .collect()
}

/// The usable keys: every key in the status that has a public key object.
pub fn build_keys(statuses: &[KeyStatus], objects: &[TokenObject]) -> Vec<KeyEntry> {
    let mut keys = Vec::new();
    for status in statuses {
        let Some(epoch) = status.active_epoch else {
            tracing::debug!(key = %status.key_id, "cluster key not committed yet; not shown");
            continue;
        };
        let Some(public_object) = public_key_of(objects, &status.key_id) else {
            tracing::warn!(key = %status.key_id, "cluster key has no public key object; not shown");
            continue;
        };
        let modulus = public_object.attribute(u64::from(ck::CKA_MODULUS));
        let exponent = public_object.attribute(u64::from(ck::CKA_PUBLIC_EXPONENT));
        let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
            tracing::warn!(key = %status.key_id, "public key object lacks modulus or exponent");
            continue;
        };
        let built = RsaPublicKey::from_be_bytes(modulus, exponent).and_then(|public| {
            let params =
                SharingParams::new(usize::from(status.threshold), usize::from(status.parties))?;
            let combiner = Combiner::new(&public, &params)?;
            Ok((public, params, combiner))
        });
        match built {
            Ok((public, params, combiner)) => keys.push(KeyEntry {
                key_id: status.key_id.clone(),
                epoch,
                params,
                holders: status.holders.clone(),
                public,
                combiner,
                handle: key_handle(&status.key_id),
            }),
            Err(err) => tracing::warn!(key = %status.key_id, %err, "unusable cluster key"),
        }
    }
    keys
}

/// Every object as the application sees it.
pub fn build_view(keys: &[KeyEntry], objects: &[TokenObject]) -> Vec<Object> {
    let mut view = Vec::new();
    for (pos, key) in keys.iter().enumerate() {
        let public_object = public_key_of(objects, &key.key_id);
        let stub = stub_of(objects, &key.key_id);
        let pick = |kind: CK_ATTRIBUTE_TYPE| {
            stub.and_then(|s| s.attribute(u64::from(kind)))
                .or_else(|| public_object.and_then(|p| p.attribute(u64::from(kind))))
                .map(<[u8]>::to_vec)
        };
        let id = pick(ck::CKA_ID).unwrap_or_else(|| key.key_id.as_bytes().to_vec());
        let label = pick(ck::CKA_LABEL).unwrap_or_default();
        view.push(Object {
            handle: key.handle,
            class: ObjectClass::PrivateKey,
            private: true,
            attrs: private_key_attrs(key, id, label),
            key: Some(pos),
            stored: stub.map(|s| s.handle),
        });
    }
    for object in objects {
        if object.class == ObjectClass::PrivateKey {
            continue; // stubs only decorate the synthesised private keys
        }
        let mut attrs: Vec<Attr> = object
            .attributes
            .iter()
            .filter_map(|a| {
                let kind = ck::CK_ATTRIBUTE_TYPE::try_from(a.kind).ok()?;
                Some(Attr {
                    kind,
                    value: to_native(kind, &a.value),
                })
            })
            .collect();
        let has = |attrs: &[Attr], kind| attrs.iter().any(|a| a.kind == kind);
        let mut default = |kind, value: Vec<u8>| {
            if !has(&attrs, kind) {
                attrs.push(Attr { kind, value });
            }
        };
        default(
            ck::CKA_CLASS,
            ulong(ck::CK_ULONG::from(object.class.cko() as u8)),
        );
        default(ck::CKA_TOKEN, bool_value(true));
        default(ck::CKA_MODIFIABLE, bool_value(true));
        default(ck::CKA_COPYABLE, bool_value(true));
        default(ck::CKA_DESTROYABLE, bool_value(true));
        default(ck::CKA_LABEL, Vec::new());
        match object.class {
            ObjectClass::PublicKey => {
                default(ck::CKA_PRIVATE, bool_value(false));
                default(ck::CKA_ID, Vec::new());
                default(ck::CKA_DERIVE, bool_value(false));
                default(ck::CKA_LOCAL, bool_value(false));
                default(ck::CKA_WRAP, bool_value(false));
                default(ck::CKA_VERIFY_RECOVER, bool_value(false));
                default(ck::CKA_TRUSTED, bool_value(false));
                default(ck::CKA_SUBJECT, Vec::new());
                default(ck::CKA_START_DATE, Vec::new());
                default(ck::CKA_END_DATE, Vec::new());
                default(
                    ck::CKA_KEY_GEN_MECHANISM,
                    ulong(ck::CK_UNAVAILABLE_INFORMATION),
                );
                let m = object.attribute(u64::from(ck::CKA_MODULUS));
                let e = object.attribute(u64::from(ck::CKA_PUBLIC_EXPONENT));
                if let (Some(m), Some(e)) = (m, e) {
                    default(ck::CKA_PUBLIC_KEY_INFO, rsa_spki(m, e));
                }
            }
            ObjectClass::Certificate => {
                default(ck::CKA_PRIVATE, bool_value(false));
                default(ck::CKA_ID, Vec::new());
                default(ck::CKA_TRUSTED, bool_value(false));
                default(ck::CKA_CERTIFICATE_CATEGORY, ulong(0));
                default(ck::CKA_START_DATE, Vec::new());
                default(ck::CKA_END_DATE, Vec::new());
            }
            ObjectClass::Data | ObjectClass::PrivateKey => {
                default(ck::CKA_PRIVATE, bool_value(true));
                default(ck::CKA_APPLICATION, Vec::new());
                default(ck::CKA_OBJECT_ID, Vec::new());
                default(ck::CKA_VALUE, Vec::new());
            }
        }
        let private = attrs
            .iter()
            .find(|a| a.kind == ck::CKA_PRIVATE)
            .is_some_and(|a| a.value.first().is_some_and(|b| *b != 0));
        view.push(Object {
            handle: stored_handle(object.handle),
            class: object.class,
            private,
            attrs,
            key: None,
            stored: Some(object.handle),
        });
    }
    view
}

fn private_key_attrs(key: &KeyEntry, id: Vec<u8>, label: Vec<u8>) -> Vec<Attr> {
    let n = key.public.n_be();
    let e = key.public.e_be();
    let bits = ck::CK_ULONG::try_from(key.public.bits()).unwrap_or(0);
    let t = |v| bool_value(v);
    let list: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = vec![
        (ck::CKA_CLASS, ulong(ck::CKO_PRIVATE_KEY)),
        (ck::CKA_TOKEN, t(true)),
        (ck::CKA_PRIVATE, t(true)),
        (ck::CKA_MODIFIABLE, t(true)),
        (ck::CKA_COPYABLE, t(true)),
        (ck::CKA_DESTROYABLE, t(false)),
        (ck::CKA_LABEL, label),
        (ck::CKA_KEY_TYPE, ulong(ck::CKK_RSA)),
        (ck::CKA_ID, id),
        (ck::CKA_START_DATE, Vec::new()),
        (ck::CKA_END_DATE, Vec::new()),
        (ck::CKA_DERIVE, t(false)),
        (ck::CKA_LOCAL, t(false)),
        (
            ck::CKA_KEY_GEN_MECHANISM,
            ulong(ck::CK_UNAVAILABLE_INFORMATION),
        ),
        (ck::CKA_SUBJECT, Vec::new()),
        (ck::CKA_SENSITIVE, t(true)),
        (ck::CKA_ALWAYS_SENSITIVE, t(true)),
        (ck::CKA_EXTRACTABLE, t(false)),
        (ck::CKA_NEVER_EXTRACTABLE, t(true)),
        (ck::CKA_DECRYPT, t(true)),
        (ck::CKA_SIGN, t(true)),
        (ck::CKA_SIGN_RECOVER, t(false)),
        (ck::CKA_UNWRAP, t(false)),
        (ck::CKA_WRAP_WITH_TRUSTED, t(false)),
        (ck::CKA_ALWAYS_AUTHENTICATE, t(false)),
        (ck::CKA_MODULUS, n.clone()),
        (ck::CKA_MODULUS_BITS, ulong(bits)),
        (ck::CKA_PUBLIC_EXPONENT, e.clone()),
        (ck::CKA_PUBLIC_KEY_INFO, rsa_spki(&n, &e)),
        (CKA_ITTC_KEY_ID, key.key_id.as_bytes().to_vec()),
    ];
    list.into_iter()
        .map(|(kind, value)| Attr { kind, value })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(handle: u64, counter: u64, class: Option<ObjectClass>) -> ObjectSummary {
        ObjectSummary {
            handle: ObjectId(handle),
            version: ObjectVersion { counter, writer: 0 },
            class,
        }
    }

    #[test]
    fn the_newest_version_wins_and_the_others_are_stale() {
        let data = Some(ObjectClass::Data);
        let listings = vec![
            // Appliance 3 was down: it missed the deletion of 1, the change to 2 and the
            // creation of 4.
            (
                1,
                vec![listed(1, 2, None), listed(2, 5, data), listed(4, 1, data)],
            ),
            (
                3,
                vec![listed(1, 1, data), listed(2, 3, data), listed(3, 1, data)],
            ),
            (2, vec![listed(2, 5, data), listed(4, 1, data)]),
        ];
        let readings = newest(&listings);
        let summary: Vec<_> = readings
            .iter()
            .map(|r| {
                (
                    r.handle.0,
                    r.version.counter,
                    r.class,
                    r.holders.clone(),
                    r.stale.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                // Deleted: 3 must learn it; 2, with no record, shows it deleted already.
                (1, 2, None, vec![1], vec![3]),
                (2, 5, data, vec![1, 2], vec![3]),
                // Only 3 has it (created while 1 and 2 were away): 1 and 2 get it.
                (3, 1, data, vec![3], vec![1, 2]),
                (4, 1, data, vec![1, 2], vec![3]),
            ]
        );
        assert!(newest(&[]).is_empty());
    }

    #[test]
    fn one_version_under_two_classes_keeps_the_first_appliances() {
        let listings = vec![
            (2, vec![listed(1, 7, Some(ObjectClass::Data))]),
            (1, vec![listed(1, 7, Some(ObjectClass::Certificate))]),
        ];
        let readings = newest(&listings);
        assert_eq!(readings[0].class, Some(ObjectClass::Data));
        assert_eq!(
            (readings[0].holders.clone(), readings[0].stale.clone()),
            (vec![2], vec![1])
        );
    }

    #[test]
    fn key_handles_are_stable_and_in_the_upper_half() {
        let id = KeyId::new(b"\x01".to_vec()).unwrap();
        assert_eq!(key_handle(&id), key_handle(&id));
        assert!(key_handle(&id) >= 1 << 62);
        let other = KeyId::new(b"\x02".to_vec()).unwrap();
        assert_ne!(key_handle(&id), key_handle(&other));
    }
}
