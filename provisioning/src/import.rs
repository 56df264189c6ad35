//! `ittc key import`: the dealer. Splits an existing key, hands each appliance its share,
//! checks the shares with a trial operation through the appliances, stores the public key
//! (and certificate) objects, and commits — or, if anything fails, removes what it stored.
//! No share is written to the operator's disk; the shares and the key are zeroized when
//! this returns.

use ittc_threshold::{Backend, Combiner, Partial, RsaPrivateKey, SharingParams, split_key};
use ittc_wire::client::Connection;
use ittc_wire::{KeyId, ObjectId, Request, Response, SecretBytes, ShareRecord, TokenObject};

use crate::cluster::{Cluster, expect_ok, on_all};
use crate::error::CliError;

/// The epoch of a freshly imported key.
pub const FIRST_EPOCH: u64 = 1;

/// What was imported.
#[derive(Debug)]
pub struct Imported {
    /// The key id (`CKA_ID`).
    pub id: Vec<u8>,
    /// Modulus bits.
    pub bits: usize,
    /// k of n.
    pub threshold: usize,
    /// n.
    pub parties: usize,
}

/// Imports `key` as `id`/`label` into every appliance of `cluster`, with an optional
/// certificate (DER). `progress` is told each step.
pub fn import(
    cluster: &Cluster,
    key: &RsaPrivateKey,
    id: &[u8],
    label: &str,
    certificate: Option<&[u8]>,
    progress: &dyn Fn(&str),
) -> Result<Imported, CliError> {
    let key_id = KeyId::new(id.to_vec()).map_err(|e| CliError::Usage(format!("--id: {e}")))?;
    let n = cluster.parties();
    let indices = cluster.indices();
    if indices != (1..=n as u8).collect::<Vec<_>>() {
        return Err(CliError::Cluster(format!(
            "appliance indices must be 1..={n}, not {indices:?}"
        )));
    }
    let params = SharingParams::new(usize::from(cluster.config.threshold), n)?;
    let public = key.public_key().clone();
    params.check_public_exponent(&public)?;
    let cert_object = certificate
        .map(|der| crate::cert::certificate_object(der, id, Some(label)))
        .transpose()?;

    progress("connecting to every appliance");
    let mut connections = connect_for_new_key(cluster, &key_id)?;

    progress("splitting the key");
    let shares = split_key(key, params, Backend::default().get(), &mut rand::rng())?;

    let stored = std::sync::Mutex::new(Vec::new());
    let mut store = || {
        progress("sending each appliance its share");
        on_all(&mut connections, |index, c| {
            let holder = shares
                .iter()
                .find(|s| s.index() == usize::from(index))
                .ok_or_else(|| CliError::appliance(index, "no share for this index"))?;
            let record = ShareRecord {
                key_id: key_id.clone(),
                label: label.to_owned(),
                epoch: FIRST_EPOCH,
                index,
                threshold: params.threshold() as u8,
                parties: n as u8,
                modulus: public.n_be(),
                public_exponent: public.e_be(),
                share: SecretBytes::new(holder.share().value().as_be_bytes().to_vec()),
                additive: SecretBytes::new(
                    holder
                        .additive()
                        .map(|a| a.as_be_bytes().to_vec())
                        .unwrap_or_default(),
                ),
            };
            expect_ok(index, c, &Request::StoreShare(record))?;
            if let Ok(mut s) = stored.lock() {
                s.push(index);
            }
            Ok(())
        })
        .map_err(|details| CliError::Several {
            summary: "storing the shares failed".into(),
            details,
        })
    };
    let outcome = store();
    let new_key = NewKey {
        key_id: &key_id,
        id,
        label,
        public: &public,
        params: &params,
        certificate: cert_object.as_ref(),
    };
    let stored: Vec<u8> = stored.into_inner().unwrap_or_default();
    finish(
        cluster,
        &mut connections,
        &new_key,
        outcome,
        &stored,
        "import",
        progress,
    )?;
    Ok(Imported {
        id: id.to_vec(),
        bits: public.bits(),
        threshold: params.threshold(),
        parties: n,
    })
}

/// Connects to every appliance and checks that none holds a key `key_id` already: the
/// start of an import or a generation, before anything is changed.
pub(crate) fn connect_for_new_key(
    cluster: &Cluster,
    key_id: &KeyId,
) -> Result<Vec<(u8, Connection)>, CliError> {
    let mut connections = cluster.connect_all()?;
    check_new_key(&mut connections, key_id)?;
    Ok(connections)
}

/// Fails if an appliance of `connections` holds a key `key_id` already.
pub(crate) fn check_new_key(
    connections: &mut [(u8, Connection)],
    key_id: &KeyId,
) -> Result<(), CliError> {
    for (index, connection) in connections.iter_mut() {
        if holds_key(*index, connection, key_id)? {
            return Err(CliError::appliance(
                *index,
                format!(
                    "already holds a key with id {}: nothing was changed",
                    hex::encode(key_id.as_bytes())
                ),
            ));
        }
    }
    Ok(())
}

fn holds_key(index: u8, connection: &mut Connection, key_id: &KeyId) -> Result<bool, CliError> {
    match connection.request(&Request::Status) {
        Ok(Response::Status(status)) => Ok(status.keys.iter().any(|k| &k.key_id == key_id)),
        Ok(other) => Err(CliError::appliance(
            index,
            format!("status: unexpected answer {other:?}"),
        )),
        Err(e) => Err(CliError::appliance(index, e)),
    }
}

/// A key whose shares are stored as the pending epoch [`FIRST_EPOCH`] (by an import or a
/// generation), waiting for [`finish`].
pub(crate) struct NewKey<'a> {
    pub key_id: &'a KeyId,
    pub id: &'a [u8],
    pub label: &'a str,
    pub public: &'a ittc_threshold::RsaPublicKey,
    pub params: &'a SharingParams,
    pub certificate: Option<&'a TokenObject>,
}

/// The second phase of an import or a generation, after the shares were stored (or
/// `stored` failed): a trial operation through every appliance, the public-key (and
/// certificate) objects on every appliance, then the commit everywhere. If anything fails,
/// the key and its objects are deleted everywhere and the error says whether that worked.
/// `stored` lists the appliances that acknowledged a share; `what` names the operation.
pub(crate) fn finish(
    cluster: &Cluster,
    connections: &mut [(u8, Connection)],
    key: &NewKey<'_>,
    stored: Result<(), CliError>,
    stored_on: &[u8],
    what: &str,
    progress: &dyn Fn(&str),
) -> Result<(), CliError> {
    let outcome = stored.and_then(|()| {
        progress("trial operation through the appliances");
        trial(connections, key.key_id, key.public, key.params)?;

        progress("storing the public key and certificate objects");
        let mut objects = vec![TokenObject::rsa_public_key(
            ObjectId::derived("public-key", key.id),
            key.id,
            key.label,
            &key.public.n_be(),
            &key.public.e_be(),
        )];
        objects.extend(key.certificate.cloned());
        let version = crate::cert::object_version();
        for object in &objects {
            let request = Request::PutObject {
                object: object.clone(),
                version,
            };
            on_all(connections, |i, c| expect_ok(i, c, &request)).map_err(|details| {
                CliError::Several {
                    summary: "storing the objects failed".into(),
                    details,
                }
            })?;
        }

        progress("committing");
        let commit = Request::CommitEpoch {
            key_id: key.key_id.clone(),
            epoch: FIRST_EPOCH,
        };
        on_all(connections, |i, c| expect_ok(i, c, &commit)).map_err(|details| CliError::Several {
            summary: "committing failed".into(),
            details,
        })
    });

    if let Err(error) = outcome {
        progress("rolling back");
        return Err(rolled_back(
            cluster,
            key.key_id,
            key.id,
            stored_on,
            key.certificate,
            what,
            error,
        ));
    }
    Ok(())
}

/// Deletes the key and its objects everywhere after `error`; the error to report says
/// whether anything is left.
pub(crate) fn rolled_back(
    cluster: &Cluster,
    key_id: &KeyId,
    id: &[u8],
    stored_on: &[u8],
    certificate: Option<&TokenObject>,
    what: &str,
    error: CliError,
) -> CliError {
    let leftovers = roll_back(cluster, key_id, id, stored_on, certificate);
    if leftovers.is_empty() {
        return CliError::Several {
            summary: format!("{what} failed, and nothing is left on any appliance: {error}"),
            details: vec![],
        };
    }
    CliError::Several {
        summary: format!(
            "{what} failed: {error}\nand these appliances could not be cleaned up (their \
             uncommitted share is unusable; delete it when they are back)"
        ),
        details: leftovers,
    }
}

/// Every appliance raises one random input to its pending share; all n partials must
/// combine into a verifying result with none named wrong.
fn trial(
    connections: &mut [(u8, Connection)],
    key_id: &KeyId,
    public: &ittc_threshold::RsaPublicKey,
    params: &SharingParams,
) -> Result<(), CliError> {
    let input = public.random_residue(&mut rand::rng());
    let request = Request::Partial {
        key_id: key_id.clone(),
        epoch: FIRST_EPOCH,
        input: public.integer_to_be(&input),
    };
    let mut partials = Vec::new();
    for (index, c) in connections.iter_mut() {
        match c.request(&request) {
            Ok(Response::PartialResult(p)) if p.index == *index => partials.push(Partial {
                index: usize::from(*index),
                value: num_bigint::BigUint::from_bytes_be(&p.value),
            }),
            Ok(other) => {
                return Err(CliError::appliance(
                    *index,
                    format!("trial operation: {other:?}"),
                ));
            }
            Err(e) => return Err(CliError::appliance(*index, e)),
        }
    }
    let outcome = Combiner::new(public, params)?.combine_robust(&input, &partials)?;
    if let Some(bad) = outcome.faulty.first() {
        return Err(CliError::appliance(
            *bad as u8,
            "its trial partial is wrong: the share did not arrive intact",
        ));
    }
    Ok(())
}

/// Deletes the key and its objects wherever they may be; returns one line per appliance
/// that could not be cleaned.
fn roll_back(
    cluster: &Cluster,
    key_id: &KeyId,
    id: &[u8],
    stored: &[u8],
    certificate: Option<&TokenObject>,
) -> Vec<String> {
    let mut handles = vec![ObjectId::derived("public-key", id)];
    handles.extend(certificate.map(|c| c.handle));
    cluster
        .in_parallel(cluster.indices(), |index| -> Result<(), CliError> {
            let mut c = match cluster.connect(index) {
                Ok(c) => c,
                // Nothing was stored on an appliance that never acknowledged a share.
                Err(_) if !stored.contains(&index) => return Ok(()),
                Err(e) => return Err(e),
            };
            for handle in &handles {
                // Absent objects are fine: they may never have been stored. The version
                // is newer than the one this process wrote them with.
                let _ = c.request(&Request::DeleteObject {
                    handle: *handle,
                    version: crate::cert::object_version(),
                });
            }
            match c.request(&Request::DeleteKey {
                key_id: key_id.clone(),
            }) {
                Ok(Response::Ok) => Ok(()),
                Ok(Response::Error(e))
                    if !stored.contains(&index) || e.code == ittc_wire::ErrorCode::UnknownKey =>
                {
                    Ok(())
                }
                Ok(other) => Err(CliError::appliance(index, format!("delete key: {other:?}"))),
                Err(e) => Err(CliError::appliance(index, e)),
            }
        })
        .into_iter()
        .filter_map(|(_, r)| r.err().map(|e| e.to_string()))
        .collect()
}
