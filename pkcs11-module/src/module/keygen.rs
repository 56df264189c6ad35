//! `C_GenerateKeyPair` (`CKM_RSA_PKCS_KEY_PAIR_GEN`): the appliances generate the key
//! together, with no dealer, and the module finishes it exactly as `ittc key generate`
//! does (provisioning's `generate` and `import::finish`).
//!
//! 1. `GenerateKey` to every appliance at once, each on a connection of its own with the
//!    long `timeouts.keygen_ms` (the appliances run the protocol among themselves and each
//!    stores its share as the key's pending epoch): sent to each in turn, then the answers
//!    read in turn, all on the calling thread, so that an application that forbids
//!    threads (NSS) generates too;
//! 2. a trial partial operation on that pending epoch from every appliance, combined: it
//!    must verify with no appliance named faulty;
//! 3. the public-key object (and, if the private key's label differs, a private-key stub)
//!    on every appliance;
//! 4. `CommitEpoch` everywhere.
//!
//! If any step fails the objects and the key are deleted everywhere (a logged-in client
//! may delete a key it generated and has not committed) and the call fails with
//! `CKR_DEVICE_ERROR`; the log says why and names anything left behind. The module never
//! sees any part of the private key.

use std::time::Instant;

use cryptoki_sys as ck;
use cryptoki_sys::{CK_MECHANISM_TYPE, CK_OBJECT_HANDLE, CK_SESSION_HANDLE};
use ittc_threshold::key::is_prime_vartime;
use ittc_threshold::padding::HashAlg;
use ittc_threshold::{Combiner, Partial, RsaPublicKey, SharingParams};
use ittc_wire::limits::MAX_LABEL_LEN;
use ittc_wire::{
    ErrorCode, KEYGEN_EPOCH, KeyId, KeygenResult, KeygenSpec, ObjectClass, ObjectId, ObjectVersion,
    Request, Response, TokenObject,
};
use num_bigint::BigUint;

use super::Module;
use crate::attributes::{Attr, CKA_ITTC_KEY_ID, find, read_bool, read_ulong, to_stored};
use crate::client::ExchangeError;
use crate::error::{Error, Result};
use crate::mechanisms::GENERATE_BITS;
use crate::objects::key_handle;

/// The label of a generated key when neither template names one.
pub const DEFAULT_LABEL: &str = "ittc key";

/// The public exponent when the template names none.
pub const DEFAULT_PUBLIC_EXPONENT: u64 = 65_537;

/// Length of the random key id of a key generated without `CKA_ID`.
const RANDOM_KEY_ID_LEN: usize = 16;

/// What the two templates of `C_GenerateKeyPair` ask for, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPairTemplate {
    /// `CKA_MODULUS_BITS`.
    pub bits: u16,
    /// `CKA_PUBLIC_EXPONENT` (65537 by default).
    pub public_exponent: u64,
    /// `CKA_ID` from either template; `None`: derived from the modulus.
    pub id: Option<Vec<u8>>,
    /// The public key's `CKA_LABEL`.
    pub public_label: String,
    /// The private key's `CKA_LABEL` (and the key's label on the appliances).
    pub private_label: String,
    /// The public key's `CKA_PRIVATE` (false by default).
    pub public_private: bool,
}

/// Attributes the caller may not set on a key being generated: the token computes them.
const COMPUTED: [ck::CK_ATTRIBUTE_TYPE; 9] = [
    ck::CKA_MODULUS,
    ck::CKA_PRIVATE_EXPONENT,
    ck::CKA_PRIME_1,
    ck::CKA_PRIME_2,
    ck::CKA_EXPONENT_1,
    ck::CKA_EXPONENT_2,
    ck::CKA_COEFFICIENT,
    ck::CKA_VALUE,
    ck::CKA_PUBLIC_KEY_INFO,
];

/// A boolean of `template`, if present (a malformed value is an error).
fn flag(template: &[Attr], kind: ck::CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
    find(template, kind).map(read_bool).transpose()
}

/// Checks the parts every template shares: class, key type, token, computed values,
/// well-formed values.
fn check_common(template: &[Attr], class: ck::CK_OBJECT_CLASS) -> Result<()> {
    for attr in template {
        if attr.kind == CKA_ITTC_KEY_ID {
            return Err(Error::AttributeTypeInvalid);
        }
        if COMPUTED.contains(&attr.kind) {
            return Err(Error::TemplateInconsistent);
        }
        // Booleans and CK_ULONGs must have their size.
        to_stored(attr.kind, &attr.value)?;
    }
    if find(template, ck::CKA_CLASS)
        .map(read_ulong)
        .transpose()?
        .is_some_and(|c| c != class)
    {
        return Err(Error::TemplateInconsistent);
    }
    if find(template, ck::CKA_KEY_TYPE)
        .map(read_ulong)
        .transpose()?
        .is_some_and(|k| k != ck::CKK_RSA)
    {
        return Err(Error::TemplateInconsistent);
    }
    // Every key of the token is a token key, kept on the appliances.
    if flag(template, ck::CKA_TOKEN)? == Some(false) {
        return Err(Error::TemplateInconsistent);
    }
    Ok(())
}

fn label(template: &[Attr]) -> Result<Option<String>> {
    find(template, ck::CKA_LABEL)
        .map(|v| {
            let s = std::str::from_utf8(v).map_err(|_| Error::AttributeValueInvalid)?;
            if s.len() > MAX_LABEL_LEN {
                return Err(Error::AttributeValueInvalid);
            }
            Ok(s.to_owned())
        })
        .transpose()
}

fn public_exponent(value: &[u8], parties: usize) -> Result<u64> {
    let trimmed: Vec<u8> = value.iter().copied().skip_while(|b| *b == 0).collect();
    if trimmed.is_empty() || trimmed.len() > 8 {
        return Err(Error::AttributeValueInvalid);
    }
    let mut bytes = [0u8; 8];
    bytes[8 - trimmed.len()..].copy_from_slice(&trimmed);
    let e = u64::from_be_bytes(bytes);
    // As the sharing needs: prime and larger than the number of appliances.
    if e <= parties as u64 || !is_prime_vartime(&BigUint::from(e)) {
        return Err(Error::AttributeValueInvalid);
    }
    Ok(e)
}

impl KeyPairTemplate {
    /// Checks the public and private templates of `C_GenerateKeyPair` for a cluster of
    /// `parties` appliances.
    ///
    /// # Errors
    ///
    /// `CKR_TEMPLATE_INCOMPLETE` without `CKA_MODULUS_BITS`; `CKR_KEY_SIZE_RANGE` for a
    /// size other than 1024, 2048, 3072 or 4096; `CKR_ATTRIBUTE_VALUE_INVALID` for a
    /// public exponent that is not a prime above `parties` (or above 64 bits), a `CKA_ID`
    /// longer than 64 bytes or empty, a label that is not UTF-8; and
    /// `CKR_TEMPLATE_INCONSISTENT` for what the token cannot make: `CKA_TOKEN`=false,
    /// `CKA_PRIVATE`=false, `CKA_SENSITIVE`=false or `CKA_EXTRACTABLE`=true for the
    /// private key, another class or key type, two different `CKA_ID`s, a value the token
    /// computes (`CKA_MODULUS`, …).
    pub fn parse(public: &[Attr], private: &[Attr], parties: usize) -> Result<Self> {
        check_common(public, ck::CKO_PUBLIC_KEY)?;
        check_common(private, ck::CKO_PRIVATE_KEY)?;
        if flag(private, ck::CKA_PRIVATE)? == Some(false)
            || flag(private, ck::CKA_SENSITIVE)? == Some(false)
            || flag(private, ck::CKA_EXTRACTABLE)? == Some(true)
            || find(private, ck::CKA_PUBLIC_EXPONENT).is_some()
        {
            return Err(Error::TemplateInconsistent);
        }
        let bits =
            read_ulong(find(public, ck::CKA_MODULUS_BITS).ok_or(Error::TemplateIncomplete)?)?;
        if find(private, ck::CKA_MODULUS_BITS)
            .map(read_ulong)
            .transpose()?
            .is_some_and(|b| b != bits)
        {
            return Err(Error::TemplateInconsistent);
        }
        if bits % 1024 != 0 || bits < GENERATE_BITS.0 || bits > GENERATE_BITS.1 {
            return Err(Error::KeySizeRange);
        }
        let bits = u16::try_from(bits).map_err(|_| Error::KeySizeRange)?;
        let public_exponent = match find(public, ck::CKA_PUBLIC_EXPONENT) {
            Some(v) => public_exponent(v, parties)?,
            None => DEFAULT_PUBLIC_EXPONENT,
        };
        let id = match (find(public, ck::CKA_ID), find(private, ck::CKA_ID)) {
            (Some(a), Some(b)) if a != b => return Err(Error::TemplateInconsistent),
            (Some(id), _) | (None, Some(id)) => {
                KeyId::new(id.to_vec()).map_err(|_| Error::AttributeValueInvalid)?;
                Some(id.to_vec())
            }
            (None, None) => None,
        };
        let (public_label, private_label) = (label(public)?, label(private)?);
        let public_label = public_label
            .clone()
            .or_else(|| private_label.clone())
            .unwrap_or_else(|| DEFAULT_LABEL.to_owned());
        let private_label = private_label.unwrap_or_else(|| public_label.clone());
        Ok(Self {
            bits,
            public_exponent,
            id,
            public_label,
            private_label,
            public_private: flag(public, ck::CKA_PRIVATE)?.unwrap_or(false),
        })
    }
}

/// The public-key object of a generated key (and the private-key stub when the labels
/// differ), with the `CKA_ID` they show.
struct Objects {
    public: TokenObject,
    stub: Option<TokenObject>,
    /// Their version: the first of new objects.
    version: ObjectVersion,
}

impl Objects {
    fn new(
        key_id: &KeyId,
        template: &KeyPairTemplate,
        public: &RsaPublicKey,
        version: ObjectVersion,
    ) -> Self {
        let n = public.n_be();
        // Without CKA_ID: the SHA-1 of the modulus, as NSS and OpenSC make it.
        let id = template
            .id
            .clone()
            .unwrap_or_else(|| HashAlg::Sha1.digest(&n));
        let mut object = TokenObject::rsa_public_key(
            public_object_id(key_id),
            &id,
            &template.public_label,
            &n,
            &public.e_be(),
        );
        object.set_attribute(u64::from(CKA_ITTC_KEY_ID), key_id.as_bytes().to_vec());
        object.set_attribute(
            u64::from(ck::CKA_PRIVATE),
            ittc_wire::attributes::bool_value(template.public_private),
        );
        object.set_attribute(
            u64::from(ck::CKA_LOCAL),
            ittc_wire::attributes::bool_value(true),
        );
        object.set_attribute(
            u64::from(ck::CKA_KEY_GEN_MECHANISM),
            ittc_wire::attributes::ulong(u64::from(ck::CKM_RSA_PKCS_KEY_PAIR_GEN)),
        );
        let stub = (template.private_label != template.public_label).then(|| {
            let mut stub = TokenObject {
                handle: stub_object_id(key_id),
                class: ObjectClass::PrivateKey,
                attributes: Vec::new(),
            };
            stub.set_attribute(u64::from(CKA_ITTC_KEY_ID), key_id.as_bytes().to_vec());
            stub.set_attribute(u64::from(ck::CKA_ID), id.clone());
            stub.set_attribute(
                u64::from(ck::CKA_LABEL),
                template.private_label.as_bytes().to_vec(),
            );
            stub
        });
        Self {
            public: object,
            stub,
            version,
        }
    }
}

/// The public-key object's id, as `ittc key generate` derives it (from the key id).
fn public_object_id(key_id: &KeyId) -> ObjectId {
    ObjectId::derived("public-key", key_id.as_bytes())
}

/// Where a private-key stub is stored (as `C_SetAttributeValue` stores it).
fn stub_object_id(key_id: &KeyId) -> ObjectId {
    ObjectId(u64::from(key_handle(key_id)))
}

type Answers = Vec<(u8, std::result::Result<Response, ExchangeError>)>;

/// Why a generation failed, for the log and the caller.
struct Failure {
    error: Error,
    why: String,
}

impl Failure {
    fn device(why: impl Into<String>) -> Self {
        let why = why.into();
        Self {
            error: Error::Device(why.clone()),
            why,
        }
    }
}

/// Every answer must be `Ok`; otherwise one line per appliance that did not say so.
fn all_ok(answers: Answers) -> std::result::Result<(), String> {
    let failures: Vec<String> = answers
        .into_iter()
        .filter_map(|(index, answer)| match answer {
            Ok(Response::Ok) => None,
            Ok(Response::Error(err)) => Some(format!("appliance {index}: {err}")),
            Ok(other) => Some(format!("appliance {index}: answered {}", other.kind())),
            Err(err) => Some(format!("appliance {index}: {err}")),
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

impl Module {
    /// `C_GenerateKeyPair`: a read-write session with the user logged in; the mechanism
    /// must be `CKM_RSA_PKCS_KEY_PAIR_GEN`. Blocks until the appliances that answer (a
    /// quorum of them; the others rebuild their shares later) have taken part (up to
    /// `timeouts.keygen_ms`); returns `(public key, private key)` handles, both usable at
    /// once.
    ///
    /// # Errors
    ///
    /// `CKR_MECHANISM_INVALID`; the template errors of `KeyPairTemplate::parse` (a
    /// session key pair, `CKA_TOKEN`=false, is `CKR_TEMPLATE_INCONSISTENT` in any
    /// session); then `CKR_SESSION_READ_ONLY`; `CKR_USER_NOT_LOGGED_IN`;
    /// `CKR_FUNCTION_FAILED` where the token cannot generate (a cluster of fewer than 3
    /// appliances); `CKR_DEVICE_ERROR` when the appliances fail (nothing is left on them
    /// then, or the log names what is). Needs no thread: the appliances are asked on the
    /// calling thread (`ApplianceClient::fan_out_alone`), also when the application
    /// forbids threads.
    pub fn generate_key_pair(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        public: &[Attr],
        private: &[Attr],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        self.with_session(session, |_, _| Ok(()))?;
        if mechanism != ck::CKM_RSA_PKCS_KEY_PAIR_GEN {
            return Err(Error::MechanismInvalid);
        }
        let indices = self.client.indices();
        // The key's `n` is its highest holder's index (an index a reshare retired stays
        // out of the holders).
        let n = usize::from(indices.iter().copied().max().unwrap_or(0));
        // The templates first, as the session state allows only what they ask for: a
        // session key pair, which the token cannot make, is refused as such in a
        // read-only session too; what it makes (token objects, a private private key)
        // needs a read-write session and the user.
        let template = KeyPairTemplate::parse(public, private, n)?;
        self.require_rw_user(session)?;
        if indices.len() < 3 {
            tracing::error!(
                ?indices,
                "key generation needs at least 3 appliances in the configuration"
            );
            return Err(Error::FunctionFailed(
                "key generation needs at least 3 appliances".into(),
            ));
        }
        let params = SharingParams::new(usize::from(self.config.threshold), n)
            .map_err(|err| Error::FunctionFailed(format!("sharing parameters: {err}")))?;
        let key_id = match &template.id {
            Some(id) => KeyId::new(id.clone()).map_err(|_| Error::AttributeValueInvalid)?,
            None => {
                let mut random = [0u8; RANDOM_KEY_ID_LEN];
                rand::Rng::fill_bytes(&mut crate::rng()?, &mut random);
                KeyId::new(random.to_vec())
                    .map_err(|err| Error::General(format!("key id: {err}")))?
            }
        };
        let all = indices;
        let indices = self.participants(&all, &key_id)?;

        let started = Instant::now();
        tracing::info!(bits = template.bits, key = %key_id, parties = n,
            participants = ?indices, threshold = params.threshold(),
            "generating a key pair on the appliances");
        let (public_key, stats) = match self.run_generation(&indices, &key_id, &template) {
            Ok(generated) => generated,
            Err((failure, stored_on)) => {
                return Err(self.roll_back(&key_id, &stored_on, None, failure));
            }
        };
        let version = super::new_version(None)?;
        let objects = Objects::new(&key_id, &template, &public_key, version);
        if let Err(failure) =
            self.finish_generation(&indices, &key_id, &public_key, &params, &objects)
        {
            return Err(self.roll_back(&key_id, &indices, Some(version), failure));
        }
        self.invalidate_view();
        tracing::info!(
            key = %key_id,
            bits = public_key.bits(),
            candidates = stats.candidates,
            rounds = stats.rounds,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "key pair generated and committed on the participating appliances"
        );
        let private_handle = key_handle(&key_id);
        let public_handle = CK_OBJECT_HANDLE::try_from(objects.public.handle.0)
            .map_err(|_| Error::General("public key handle out of range".into()))?;
        // Read the new objects now, so the handles work at once.
        match self.view() {
            Ok(view) if view.keys.iter().any(|k| k.handle == private_handle) => {}
            Ok(_) => {
                tracing::warn!(key = %key_id, "the new key is not in the appliances' status yet")
            }
            Err(err) => tracing::warn!(%err, "objects not read after the generation"),
        }
        Ok((public_handle, private_handle))
    }

    /// The appliances that generate: every one that answers, if they are a quorum
    /// ([`KeygenSpec::quorum`]; the others rebuild their shares when they are back).
    /// Refuses a key id any appliance holds already (a generation would be refused, and
    /// the clean-up must never touch someone else's key).
    fn participants(&self, indices: &[u8], key_id: &KeyId) -> Result<Vec<u8>> {
        let mut answering = Vec::new();
        let mut away = Vec::new();
        for (index, answer) in self.client.fan_out(indices, &Request::Status) {
            match answer {
                Ok(Response::Status(status)) => {
                    if status.keys.iter().any(|k| &k.key_id == key_id) {
                        tracing::warn!(appliance = index, key = %key_id,
                            "C_GenerateKeyPair: a key with this CKA_ID exists already");
                        return Err(Error::AttributeValueInvalid);
                    }
                    answering.push(index);
                }
                Ok(other) => {
                    tracing::error!(appliance = index, kind = other.kind(), "odd status answer");
                    return Err(Error::Device(format!(
                        "appliance {index}: odd status answer"
                    )));
                }
                Err(err) => {
                    tracing::warn!(appliance = index, %err,
                        "this appliance does not answer: it will rebuild its share later");
                    away.push(format!("appliance {index}: {err}"));
                }
            }
        }
        let needed = KeygenSpec::quorum(self.config.threshold, indices.len());
        if answering.len() < needed {
            tracing::error!(needed, answering = ?answering, away = ?away,
                "key generation needs a quorum of the appliances");
            return Err(Error::Device(format!(
                "key generation needs {needed} of the {} appliances and {} answer: {}",
                indices.len(),
                answering.len(),
                away.join("; ")
            )));
        }
        Ok(answering)
    }

    /// Step 1: `GenerateKey` everywhere at once. A failure comes with the appliances that
    /// acknowledged a pending share.
    fn run_generation(
        &self,
        indices: &[u8],
        key_id: &KeyId,
        template: &KeyPairTemplate,
    ) -> std::result::Result<(RsaPublicKey, KeygenResult), (Failure, Vec<u8>)> {
        let mut session = [0u8; 16];
        match crate::rng() {
            Ok(mut rng) => rand::Rng::fill_bytes(&mut rng, &mut session),
            Err(error) => {
                let why = error.to_string();
                return Err((Failure { error, why }, Vec::new()));
            }
        }
        let mut holders = self.client.indices();
        holders.sort_unstable();
        let request = Request::GenerateKey(KeygenSpec {
            session,
            key_id: key_id.clone(),
            label: template.private_label.clone(),
            bits: template.bits,
            public_exponent: template.public_exponent,
            threshold: self.config.threshold,
            participants: self
                .config
                .participants()
                .into_iter()
                .filter(|p| indices.contains(&p.index))
                .collect(),
            parties: holders.last().copied().unwrap_or(0),
            holders,
        });
        let answers = self
            .client
            .fan_out_alone(indices, &request, self.config.timeouts.keygen());
        self.client.drop_idle();
        let mut results = Vec::new();
        let mut stored_on = Vec::new();
        let mut failures = Vec::new();
        let mut size_refused = false;
        let mut login_refused = false;
        for (index, answer) in answers {
            match answer {
                Ok(Response::KeyGenerated(result)) => {
                    stored_on.push(index);
                    results.push(result);
                }
                Ok(Response::Error(err)) => {
                    // The appliance's own words for a size below its keygen.min_bits.
                    size_refused |=
                        err.code == ErrorCode::BadRequest && err.message.contains("modulus size");
                    login_refused |=
                        matches!(err.code, ErrorCode::NotLoggedIn | ErrorCode::Forbidden);
                    failures.push(format!("appliance {index}: {err}"));
                }
                Ok(other) => failures.push(format!("appliance {index}: answered {}", other.kind())),
                Err(err) => failures.push(format!("appliance {index}: {err}")),
            }
        }
        // Any appliance might hold a share if its answer was lost: clean up everywhere,
        // but only those that acknowledged one must succeed.
        if !failures.is_empty() {
            let why = format!(
                "the appliances could not generate the key: {}",
                failures.join("; ")
            );
            let error = if size_refused {
                Error::KeySizeRange
            } else if login_refused {
                Error::UserNotLoggedIn
            } else {
                Error::Device(why.clone())
            };
            return Err((Failure { error, why }, stored_on));
        }
        let agreed = results.first().filter(|first| {
            results.len() == indices.len()
                && results.iter().all(|r| {
                    r.modulus == first.modulus && r.public_exponent == first.public_exponent
                })
        });
        let Some(first) = agreed else {
            return Err((
                Failure::device("the appliances report different public keys"),
                stored_on,
            ));
        };
        let public = match RsaPublicKey::from_be_bytes(&first.modulus, &first.public_exponent) {
            Ok(public) => public,
            Err(err) => {
                return Err((
                    Failure::device(format!("generated public key: {err}")),
                    stored_on,
                ));
            }
        };
        if public.bits() != usize::from(template.bits)
            || public.e() != &BigUint::from(template.public_exponent)
        {
            return Err((
                Failure::device("the generated key is not the one asked for"),
                stored_on,
            ));
        }
        Ok((public, first.clone()))
    }

    /// Steps 2 to 4: trial, objects, commit.
    fn finish_generation(
        &self,
        indices: &[u8],
        key_id: &KeyId,
        public: &RsaPublicKey,
        params: &SharingParams,
        objects: &Objects,
    ) -> std::result::Result<(), Failure> {
        self.trial(indices, key_id, public, params)?;
        for object in std::iter::once(&objects.public).chain(objects.stub.iter()) {
            let request = Request::PutObject {
                object: object.clone(),
                version: objects.version,
            };
            let answers = self.client.fan_out(indices, &request);
            self.invalidate_view();
            all_ok(answers).map_err(|why| {
                Failure::device(format!("storing the key's objects failed: {why}"))
            })?;
        }
        let commit = Request::CommitEpoch {
            key_id: key_id.clone(),
            epoch: KEYGEN_EPOCH,
        };
        all_ok(self.client.fan_out(indices, &commit))
            .map_err(|why| Failure::device(format!("committing failed: {why}")))
    }

    /// Every appliance raises one random input to its pending share; all n partials must
    /// combine into a verifying result with none named wrong.
    fn trial(
        &self,
        indices: &[u8],
        key_id: &KeyId,
        public: &RsaPublicKey,
        params: &SharingParams,
    ) -> std::result::Result<(), Failure> {
        let mut rng = crate::rng().map_err(|error| Failure {
            why: error.to_string(),
            error,
        })?;
        let input = public.random_residue(&mut rng);
        let request = Request::Partial {
            key_id: key_id.clone(),
            epoch: KEYGEN_EPOCH,
            input: public.integer_to_be(&input),
        };
        let mut partials = Vec::new();
        for (index, answer) in self.client.fan_out(indices, &request) {
            match answer {
                Ok(Response::PartialResult(p)) if p.index == index && p.epoch == KEYGEN_EPOCH => {
                    partials.push(Partial {
                        index: usize::from(index),
                        value: BigUint::from_bytes_be(&p.value),
                    });
                }
                Ok(Response::Error(err)) => {
                    return Err(Failure::device(format!(
                        "trial operation: appliance {index}: {err}"
                    )));
                }
                Ok(other) => {
                    return Err(Failure::device(format!(
                        "trial operation: appliance {index} answered {}",
                        other.kind()
                    )));
                }
                Err(err) => {
                    return Err(Failure::device(format!(
                        "trial operation: appliance {index}: {err}"
                    )));
                }
            }
        }
        let outcome = Combiner::new(public, params)
            .and_then(|c| c.combine_robust(&input, &partials))
            .map_err(|err| Failure::device(format!("trial operation: {err}")))?;
        if !outcome.faulty.is_empty() {
            return Err(Failure::device(format!(
                "trial operation: wrong partial from appliances {:?}: their shares are bad",
                outcome.faulty
            )));
        }
        Ok(())
    }

    /// Deletes the key and its objects (if `written`, in that version) everywhere after
    /// `failure`; logs why and what is left; returns the error for the caller.
    fn roll_back(
        &self,
        key_id: &KeyId,
        stored_on: &[u8],
        written: Option<ObjectVersion>,
        failure: Failure,
    ) -> Error {
        tracing::error!(key = %key_id, why = %failure.why, "key generation failed; rolling back");
        let indices = self.client.indices();
        if let Some(written) = written {
            for handle in [public_object_id(key_id), stub_object_id(key_id)] {
                // Absent objects are fine: they may never have been stored.
                match super::new_version(Some(written)) {
                    Ok(version) => {
                        let _ = self
                            .client
                            .fan_out(&indices, &Request::DeleteObject { handle, version });
                    }
                    Err(err) => tracing::error!(%err, "objects not deleted"),
                }
            }
        }
        self.invalidate_view();
        let delete = Request::DeleteKey {
            key_id: key_id.clone(),
        };
        let mut leftovers = Vec::new();
        for (index, answer) in self.client.fan_out(&indices, &delete) {
            let must = stored_on.contains(&index);
            match answer {
                Ok(Response::Ok) => {}
                Ok(Response::Error(err)) if !must || err.code == ErrorCode::UnknownKey => {}
                Ok(Response::Error(err)) => leftovers.push(format!("appliance {index}: {err}")),
                Ok(other) => {
                    leftovers.push(format!("appliance {index}: answered {}", other.kind()))
                }
                Err(_) if !must => {}
                Err(err) => leftovers.push(format!("appliance {index}: {err}")),
            }
        }
        if leftovers.is_empty() {
            tracing::info!(key = %key_id, "rolled back: nothing is left on any appliance");
        } else {
            tracing::error!(key = %key_id, leftovers = %leftovers.join("; "),
                "rolled back, but these appliances still hold the key (delete it with \
                 `ittc key delete` when they are back)");
        }
        failure.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{bool_value, ulong};

    fn attr(kind: ck::CK_ATTRIBUTE_TYPE, value: Vec<u8>) -> Attr {
        Attr { kind, value }
    }

    fn bits(b: ck::CK_ULONG) -> Attr {
        attr(ck::CKA_MODULUS_BITS, ulong(b))
    }

    #[test]
    fn defaults_and_values_are_taken_from_either_template() {
        let t = KeyPairTemplate::parse(&[bits(2048)], &[], 3).unwrap();
        assert_eq!(
            t,
            KeyPairTemplate {
                bits: 2048,
                public_exponent: 65_537,
                id: None,
                public_label: DEFAULT_LABEL.into(),
                private_label: DEFAULT_LABEL.into(),
                public_private: false,
            }
        );
        let public = [
            bits(3072),
            attr(ck::CKA_PUBLIC_EXPONENT, vec![0, 0, 3]),
            attr(ck::CKA_TOKEN, bool_value(true)),
            attr(ck::CKA_VERIFY, bool_value(true)),
        ];
        let private = [
            attr(ck::CKA_ID, vec![7, 8]),
            attr(ck::CKA_LABEL, b"mine".to_vec()),
            attr(ck::CKA_SENSITIVE, bool_value(true)),
            attr(ck::CKA_EXTRACTABLE, bool_value(false)),
            attr(ck::CKA_SIGN, bool_value(true)),
            attr(ck::CKA_CLASS, ulong(ck::CKO_PRIVATE_KEY)),
        ];
        let t = KeyPairTemplate::parse(&public, &private, 2).unwrap();
        assert_eq!((t.bits, t.public_exponent), (3072, 3));
        assert_eq!(t.id, Some(vec![7, 8]));
        assert_eq!(
            (t.public_label.as_str(), t.private_label.as_str()),
            ("mine", "mine")
        );
    }

    #[test]
    fn what_the_token_cannot_make_is_refused() {
        let p = |extra: Vec<Attr>| {
            let mut v = vec![bits(2048)];
            v.extend(extra);
            v
        };
        let cases: Vec<(Vec<Attr>, Vec<Attr>, Error)> = vec![
            (vec![], vec![], Error::TemplateIncomplete),
            (vec![bits(1000)], vec![], Error::KeySizeRange),
            (vec![bits(8192)], vec![], Error::KeySizeRange),
            (
                p(vec![attr(ck::CKA_TOKEN, bool_value(false))]),
                vec![],
                Error::TemplateInconsistent,
            ),
            (
                p(vec![]),
                vec![attr(ck::CKA_TOKEN, bool_value(false))],
                Error::TemplateInconsistent,
            ),
            (
                p(vec![]),
                vec![attr(ck::CKA_EXTRACTABLE, bool_value(true))],
                Error::TemplateInconsistent,
            ),
            (
                p(vec![]),
                vec![attr(ck::CKA_SENSITIVE, bool_value(false))],
                Error::TemplateInconsistent,
            ),
            (
                p(vec![]),
                vec![attr(ck::CKA_PRIVATE, bool_value(false))],
                Error::TemplateInconsistent,
            ),
            (
                p(vec![attr(ck::CKA_PUBLIC_EXPONENT, vec![1, 0, 0])]),
                vec![],
                Error::AttributeValueInvalid,
            ),
            (
                p(vec![attr(ck::CKA_PUBLIC_EXPONENT, vec![3])]),
                vec![],
                Error::AttributeValueInvalid,
            ),
            (
                p(vec![attr(ck::CKA_PUBLIC_EXPONENT, vec![])]),
                vec![],
                Error::AttributeValueInvalid,
            ),
            (
                p(vec![attr(ck::CKA_PUBLIC_EXPONENT, vec![1; 9])]),
                vec![],
                Error::AttributeValueInvalid,
            ),
            (
                p(vec![attr(ck::CKA_ID, vec![1])]),
                vec![attr(ck::CKA_ID, vec![2])],
                Error::TemplateInconsistent,
            ),
            (
                p(vec![attr(ck::CKA_ID, vec![1; 65])]),
                vec![],
                Error::AttributeValueInvalid,
            ),
            (
                p(vec![attr(ck::CKA_MODULUS, vec![1; 256])]),
                vec![],
                Error::TemplateInconsistent,
            ),
            (
                p(vec![attr(ck::CKA_CLASS, ulong(ck::CKO_PRIVATE_KEY))]),
                vec![],
                Error::TemplateInconsistent,
            ),
            (
                p(vec![attr(ck::CKA_KEY_TYPE, ulong(ck::CKK_EC))]),
                vec![],
                Error::TemplateInconsistent,
            ),
            (
                p(vec![attr(ck::CKA_TOKEN, vec![1, 1])]),
                vec![],
                Error::AttributeValueInvalid,
            ),
            (
                p(vec![attr(CKA_ITTC_KEY_ID, vec![1])]),
                vec![],
                Error::AttributeTypeInvalid,
            ),
        ];
        for (public, private, expected) in cases {
            assert_eq!(
                KeyPairTemplate::parse(&public, &private, 3),
                Err(expected.clone()),
                "{public:?} {private:?}"
            );
        }
        // 3 is prime but not larger than 3 appliances; fine with 2.
        let e3 = p(vec![attr(ck::CKA_PUBLIC_EXPONENT, vec![3])]);
        assert!(KeyPairTemplate::parse(&e3, &[], 2).is_ok());
    }

    #[test]
    fn objects_carry_the_id_the_labels_and_the_link() {
        let key_id = KeyId::new(vec![9; 16]).unwrap();
        let rsa_n = {
            let mut n = vec![0xc5u8; 128];
            n[127] |= 1;
            n
        };
        let public = RsaPublicKey::from_be_bytes(&rsa_n, &[1, 0, 1]).unwrap();
        let mut template = KeyPairTemplate::parse(&[bits(1024)], &[], 3).unwrap();
        let o = Objects::new(&key_id, &template, &public, ObjectVersion::ORIGINAL);
        assert_eq!(
            o.public.attribute(u64::from(ck::CKA_ID)),
            Some(HashAlg::Sha1.digest(&rsa_n).as_slice())
        );
        assert_eq!(
            o.public.attribute(u64::from(CKA_ITTC_KEY_ID)),
            Some(key_id.as_bytes())
        );
        assert!(o.stub.is_none());
        template.private_label = "private".into();
        let o = Objects::new(&key_id, &template, &public, ObjectVersion::ORIGINAL);
        let stub = o.stub.unwrap();
        assert_eq!(stub.handle, stub_object_id(&key_id));
        assert_eq!(
            stub.attribute(u64::from(ck::CKA_LABEL)),
            Some(&b"private"[..])
        );
    }
}
