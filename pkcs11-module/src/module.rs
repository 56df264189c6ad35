//! The token core: one [`Module`] value per initialisation, with every PKCS#11 function as
//! a safe method. The shell (`ffi`) holds one in a static slot; tests can build many.
//!
//! Lock order: `state` (sessions and login), then `view` (the object cache); each is held
//! only to read or update memory, never across a request to an appliance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cryptoki_sys as ck;
use cryptoki_sys::{CK_FLAGS, CK_OBJECT_HANDLE, CK_SESSION_HANDLE, CK_SLOT_ID, CK_ULONG};
use ittc_wire::cluster::ClusterConfig;
use ittc_wire::{
    ErrorCode, ObjectClass, ObjectId, ObjectVersion, Request, Response, SecretBytes, TokenObject,
    UserKind,
};
use num_bigint::BigUint;
use zeroize::Zeroizing;

use crate::attributes::{Attr, CKA_ITTC_KEY_ID, find, read_bool, read_ulong, to_stored};
use crate::client::{ApplianceClient, lock, wire_error};
use crate::error::{Error, Result};
use crate::mechanisms::{self, Mechanism};
use crate::objects::{self, KeyEntry, Lookup, Object};
use crate::operations::{self, Input};
use crate::private_op::raw_private;
use crate::session::{CryptOp, Session, SignOp};

mod keygen;
mod session_objects;

/// The token's one slot.
pub const SLOT_ID: CK_SLOT_ID = 1;

/// Shortest and longest PIN the token reports (the appliances enforce their own policy).
pub const PIN_LEN: (CK_ULONG, CK_ULONG) = (4, 255);

/// How the module was initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// Whether the module may create threads (fan-out in parallel).
    pub threads: bool,
}

/// The objects, as last read from the appliances.
struct TokenView {
    stored: Vec<TokenObject>,
    /// The version read of every object, deleted ones included.
    versions: HashMap<ObjectId, ObjectVersion>,
    /// Whether an appliance read holds an older version of an object that was not
    /// repaired because no user was logged in (a user's login reads again).
    unrepaired: bool,
    keys: Vec<KeyEntry>,
    view: Vec<Object>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<CK_SESSION_HANDLE, Session>,
    next_session: CK_SESSION_HANDLE,
    login: Option<UserKind>,
    session_objects: session_objects::Store,
}

/// What `C_GetTokenInfo` reports that is not constant.
#[derive(Clone, Debug)]
pub struct TokenInfo {
    /// `label`, at most 32 bytes.
    pub label: String,
    /// `serialNumber`: the cluster id's first 16 hex digits.
    pub serial: String,
    /// Open sessions.
    pub sessions: CK_ULONG,
    /// Open read-write sessions.
    pub rw_sessions: CK_ULONG,
}

/// What `C_GetSessionInfo` reports.
#[derive(Clone, Copy, Debug)]
pub struct SessionInfo {
    /// `CKS_*`.
    pub state: CK_ULONG,
    /// `CKF_SERIAL_SESSION` and maybe `CKF_RW_SESSION`.
    pub flags: CK_FLAGS,
}

/// The token: configuration, appliance client, sessions, login and the object cache.
pub struct Module {
    config: ClusterConfig,
    client: ApplianceClient,
    state: Mutex<State>,
    view: Mutex<Option<Arc<TokenView>>>,
}

impl Module {
    /// A module for the cluster in `config`. Connects to nothing until needed.
    ///
    /// # Errors
    ///
    /// [`Error::General`] if the TLS files are unusable.
    pub fn new(config: ClusterConfig, options: InitOptions) -> Result<Self> {
        let client = ApplianceClient::new(&config, options.threads)?;
        Ok(Self::with_client(config, client))
    }

    fn with_client(config: ClusterConfig, client: ApplianceClient) -> Self {
        Self {
            config,
            client,
            state: Mutex::new(State {
                next_session: 1,
                ..State::default()
            }),
            view: Mutex::new(None),
        }
    }

    /// A new module, as `C_Initialize` makes it, for a forked child of the process that
    /// runs this one: the same configuration and TLS identity (which the child may no
    /// longer be allowed to read, as nginx workers may not), no session, no login.
    pub fn fresh_after_fork(&self, options: InitOptions) -> Self {
        let client = self.client.fresh(&self.config, options.threads);
        Self::with_client(self.config.clone(), client)
    }

    /// A module for the configuration found the usual way (`$ITTC_PKCS11_CONFIG`, …).
    ///
    /// # Errors
    ///
    /// [`Error::General`] if no usable configuration exists.
    pub fn from_environment(options: InitOptions) -> Result<Self> {
        Self::new(crate::config::load()?, options)
    }

    // ----- slots and tokens -----

    /// The slot list (one slot, always with its token).
    pub fn slot_list(&self) -> Vec<CK_SLOT_ID> {
        vec![SLOT_ID]
    }

    /// Checks a slot id.
    pub fn check_slot(&self, slot: CK_SLOT_ID) -> Result<()> {
        if slot == SLOT_ID {
            Ok(())
        } else {
            Err(Error::SlotIdInvalid)
        }
    }

    /// `C_GetTokenInfo`.
    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<TokenInfo> {
        self.check_slot(slot)?;
        let state = lock(&self.state);
        let rw = state.sessions.values().filter(|s| s.rw).count();
        Ok(TokenInfo {
            label: self.config.token.label.clone(),
            serial: self.config.cluster_id.chars().take(16).collect(),
            sessions: count(state.sessions.len()),
            rw_sessions: count(rw),
        })
    }

    /// `C_GetMechanismList`.
    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<ck::CK_MECHANISM_TYPE>> {
        self.check_slot(slot)?;
        Ok(mechanisms::list())
    }

    /// `C_GetMechanismInfo`: `(min bits, max bits, flags)`.
    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mechanism: ck::CK_MECHANISM_TYPE,
    ) -> Result<(CK_ULONG, CK_ULONG, CK_FLAGS)> {
        self.check_slot(slot)?;
        mechanisms::info(mechanism)
    }

    // ----- sessions -----

    /// `C_OpenSession`.
    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        self.check_slot(slot)?;
        if flags & ck::CKF_SERIAL_SESSION == 0 {
            return Err(Error::SessionParallelNotSupported);
        }
        let rw = flags & ck::CKF_RW_SESSION != 0;
        let mut state = lock(&self.state);
        if !rw && state.login == Some(UserKind::SecurityOfficer) {
            return Err(Error::SessionReadOnlyExists);
        }
        let handle = state.next_session;
        state.next_session = handle.wrapping_add(1).max(1);
        state.sessions.insert(handle, Session::new(rw));
        Ok(handle)
    }

    /// `C_CloseSession`. Closing the last session logs out.
    pub fn close_session(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        let mut state = lock(&self.state);
        state
            .sessions
            .remove(&session)
            .ok_or(Error::SessionHandleInvalid)?;
        state.session_objects.close(session);
        if state.sessions.is_empty() {
            self.forget_login(&mut state);
        }
        Ok(())
    }

    /// `C_CloseAllSessions`.
    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        self.check_slot(slot)?;
        let mut state = lock(&self.state);
        state.sessions.clear();
        state.session_objects.clear();
        self.forget_login(&mut state);
        Ok(())
    }

    fn forget_login(&self, state: &mut State) {
        state.session_objects.drop_private();
        if state.login.take().is_some() {
            self.client.set_credentials(None);
        }
    }

    /// `C_GetSessionInfo`.
    pub fn session_info(&self, session: CK_SESSION_HANDLE) -> Result<SessionInfo> {
        let state = lock(&self.state);
        let s = state
            .sessions
            .get(&session)
            .ok_or(Error::SessionHandleInvalid)?;
        let cks = match (state.login, s.rw) {
            (Some(UserKind::SecurityOfficer), _) => ck::CKS_RW_SO_FUNCTIONS,
            (Some(UserKind::User), true) => ck::CKS_RW_USER_FUNCTIONS,
            (Some(UserKind::User), false) => ck::CKS_RO_USER_FUNCTIONS,
            (None, true) => ck::CKS_RW_PUBLIC_SESSION,
            (None, false) => ck::CKS_RO_PUBLIC_SESSION,
        };
        let mut flags = ck::CKF_SERIAL_SESSION;
        if s.rw {
            flags |= ck::CKF_RW_SESSION;
        }
        Ok(SessionInfo { state: cks, flags })
    }

    fn with_session<T>(
        &self,
        session: CK_SESSION_HANDLE,
        f: impl FnOnce(&mut Session, Option<UserKind>) -> Result<T>,
    ) -> Result<T> {
        let mut state = lock(&self.state);
        let login = state.login;
        let s = state
            .sessions
            .get_mut(&session)
            .ok_or(Error::SessionHandleInvalid)?;
        f(s, login)
    }

    // ----- login and PINs -----

    /// `C_Login`: the PIN is checked by the appliances; at least k must accept it.
    pub fn login(&self, session: CK_SESSION_HANDLE, user: CK_ULONG, pin: &[u8]) -> Result<()> {
        let user = match user {
            ck::CKU_USER => UserKind::User,
            ck::CKU_SO => UserKind::SecurityOfficer,
            _ => return Err(Error::UserTypeInvalid),
        };
        {
            let state = lock(&self.state);
            if !state.sessions.contains_key(&session) {
                return Err(Error::SessionHandleInvalid);
            }
            match state.login {
                Some(current) if current == user => return Err(Error::UserAlreadyLoggedIn),
                Some(_) => return Err(Error::UserAnotherAlreadyLoggedIn),
                None => {}
            }
            if user == UserKind::SecurityOfficer && state.sessions.values().any(|s| !s.rw) {
                return Err(Error::SessionReadOnlyExists);
            }
        }
        let request = Request::Login {
            user,
            pin: SecretBytes::new(pin.to_vec()),
        };
        let answers = self.client.fan_out(&self.client.available(), &request);
        let mut accepted = 0;
        let mut refusal = None;
        for (index, answer) in answers {
            match answer {
                Ok(Response::Ok) => accepted += 1,
                Ok(Response::Error(err)) => {
                    tracing::warn!(appliance = index, code = err.code.as_str(), "login refused");
                    let mapped = match err.code {
                        ittc_wire::ErrorCode::PinInvalid => Error::UserPinNotInitialized,
                        _ => wire_error(&err),
                    };
                    // A lock outranks a wrong PIN, which outranks anything else.
                    refusal = Some(match (refusal, mapped) {
                        (Some(Error::PinLocked), _) | (_, Error::PinLocked) => Error::PinLocked,
                        (Some(Error::PinIncorrect), _) | (_, Error::PinIncorrect) => {
                            Error::PinIncorrect
                        }
                        (_, other) => other,
                    });
                }
                Ok(other) => tracing::error!(appliance = index, kind = other.kind(), "odd answer"),
                Err(err) => tracing::warn!(appliance = index, %err, "login not delivered"),
            }
        }
        if let Some(err) = refusal {
            return Err(err);
        }
        if accepted < self.client.threshold() {
            return Err(Error::Device(format!(
                "{accepted} appliances accepted the login, {} needed",
                self.client.threshold()
            )));
        }
        let mut state = lock(&self.state);
        state.login = Some(user);
        self.client
            .set_credentials(Some((user, Zeroizing::new(pin.to_vec()))));
        drop(state);
        tracing::info!(?user, "logged in");
        // Objects that appliances hold in older versions are repaired now that a user may
        // write: read again.
        if user == UserKind::User && lock(&self.view).as_ref().is_some_and(|v| v.unrepaired) {
            self.invalidate_view();
        }
        Ok(())
    }

    /// `C_Logout`.
    pub fn logout(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        let mut state = lock(&self.state);
        if !state.sessions.contains_key(&session) {
            return Err(Error::SessionHandleInvalid);
        }
        if state.login.is_none() {
            return Err(Error::UserNotLoggedIn);
        }
        self.forget_login(&mut state);
        Ok(())
    }

    /// Sends a PIN change to every available appliance; at least k must accept and none
    /// may refuse.
    fn pin_request(&self, request: &Request) -> Result<()> {
        let answers = self.client.fan_out(&self.client.available(), request);
        let mut accepted = 0;
        for (index, answer) in answers {
            match answer {
                Ok(Response::Ok) => accepted += 1,
                Ok(Response::Error(err)) => {
                    tracing::warn!(
                        appliance = index,
                        code = err.code.as_str(),
                        "PIN change refused"
                    );
                    return Err(wire_error(&err));
                }
                Ok(other) => tracing::error!(appliance = index, kind = other.kind(), "odd answer"),
                Err(err) => tracing::warn!(appliance = index, %err, "PIN change not delivered"),
            }
        }
        if accepted < self.client.threshold() {
            return Err(Error::Device("too few appliances changed the PIN".into()));
        }
        Ok(())
    }

    /// `C_InitPIN`: the security officer sets the user PIN.
    pub fn init_pin(&self, session: CK_SESSION_HANDLE, pin: &[u8]) -> Result<()> {
        self.with_session(session, |s, login| {
            if login != Some(UserKind::SecurityOfficer) {
                return Err(Error::UserNotLoggedIn);
            }
            if !s.rw {
                return Err(Error::SessionReadOnly);
            }
            Ok(())
        })?;
        self.pin_request(&Request::SetPin {
            user: UserKind::User,
            pin: SecretBytes::new(pin.to_vec()),
        })
    }

    /// `C_SetPIN`: changes the PIN of whoever is logged in (the user if nobody is).
    pub fn set_pin(&self, session: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Result<()> {
        let login = self.with_session(session, |s, login| {
            if !s.rw {
                return Err(Error::SessionReadOnly);
            }
            Ok(login)
        })?;
        let user = login.unwrap_or(UserKind::User);
        self.pin_request(&Request::ChangePin {
            user,
            old: SecretBytes::new(old.to_vec()),
            new: SecretBytes::new(new.to_vec()),
        })?;
        if login.is_some() {
            self.client
                .set_credentials(Some((user, Zeroizing::new(new.to_vec()))));
        }
        Ok(())
    }

    // ----- objects -----

    /// The object cache, read from an appliance the first time and after writes.
    fn view(&self) -> Result<Arc<TokenView>> {
        if let Some(view) = lock(&self.view).as_ref() {
            return Ok(Arc::clone(view));
        }
        let view = Arc::new(self.load_view()?);
        *lock(&self.view) = Some(Arc::clone(&view));
        Ok(view)
    }

    fn invalidate_view(&self) {
        *lock(&self.view) = None;
    }

    fn load_view(&self) -> Result<TokenView> {
        let (index, status) = self.client.ask_any(&Request::Status)?;
        let Response::Status(status) = status else {
            return Err(Error::Device(format!(
                "appliance {index} answered status oddly"
            )));
        };
        // Every available appliance lists its objects with their versions; the newest
        // version of each wins, and the appliances behind are repaired.
        let mut readers = vec![index];
        readers.extend(self.client.available().into_iter().filter(|i| *i != index));
        let mut listings = Vec::new();
        let mut last_error = None;
        for (reader, answer) in self.client.fan_out(&readers, &Request::ListObjects) {
            match answer {
                Ok(Response::Objects(list)) => listings.push((reader, list)),
                Ok(other) => {
                    tracing::warn!(
                        appliance = reader,
                        kind = other.kind(),
                        "objects not listed"
                    );
                    last_error = Some(Error::Device(format!(
                        "appliance {reader} did not list objects"
                    )));
                }
                Err(err) => {
                    tracing::warn!(appliance = reader, %err, "objects not listed");
                    last_error = Some(Error::Device(format!("appliance {reader}: {err}")));
                }
            }
        }
        if listings.is_empty() {
            return Err(last_error.unwrap_or_else(|| Error::Device("no appliance to read".into())));
        }
        // Every acknowledged write reached k appliances: n - k + 1 readers meet them all.
        let meets_every_write =
            (self.client.indices().len() + 1).saturating_sub(self.client.threshold());
        if listings.len() < meets_every_write {
            tracing::warn!(
                read = listings.len(),
                needed = meets_every_write,
                "objects read from too few appliances to be sure of the latest changes"
            );
        }
        let readings = objects::newest(&listings);
        let mut stored = Vec::new();
        let mut versions = HashMap::new();
        for reading in &readings {
            if reading.class.is_none() {
                versions.insert(reading.handle, reading.version);
                continue;
            }
            match self.fetch_object(reading) {
                Some((object, version)) => {
                    versions.insert(reading.handle, version);
                    stored.push((object, version));
                }
                None => {
                    tracing::warn!(object = reading.handle.0, holders = ?reading.holders, "object not readable")
                }
            }
        }
        let unrepaired = self.repair(&readings, &stored);
        let stored: Vec<TokenObject> = stored.into_iter().map(|(o, _)| o).collect();
        let keys = objects::build_keys(&status.keys, &stored);
        let view = objects::build_view(&keys, &stored);
        Ok(TokenView {
            stored,
            versions,
            unrepaired,
            keys,
            view,
        })
    }

    /// The newest version of an object, from the first of its holders that gives it.
    fn fetch_object(&self, reading: &objects::Reading) -> Option<(TokenObject, ObjectVersion)> {
        let request = Request::GetObject {
            handle: reading.handle,
        };
        for holder in &reading.holders {
            match self.client.exchange(*holder, &request) {
                // A version newer than listed: written since; newer is better.
                Ok(Response::Object { object, version })
                    if object.handle == reading.handle && version >= reading.version =>
                {
                    return Some((object, version));
                }
                Ok(other) => tracing::warn!(
                    appliance = holder,
                    kind = other.kind(),
                    object = reading.handle.0,
                    "object not as listed"
                ),
                Err(err) => {
                    tracing::warn!(appliance = holder, %err, object = reading.handle.0, "object not read")
                }
            }
        }
        None
    }

    /// Writes the newest version of each object to the appliances that hold an older one
    /// (or none). Writing takes a logged-in user: without one, nothing is written and this
    /// returns `true` (the view is read again after a user's login).
    fn repair(
        &self,
        readings: &[objects::Reading],
        stored: &[(TokenObject, ObjectVersion)],
    ) -> bool {
        let behind: Vec<&objects::Reading> =
            readings.iter().filter(|r| !r.stale.is_empty()).collect();
        if behind.is_empty() {
            return false;
        }
        if lock(&self.state).login != Some(UserKind::User) {
            tracing::info!(
                objects = behind.len(),
                "appliances hold older versions of objects; they are repaired once a user logs in"
            );
            return true;
        }
        for reading in behind {
            let request = match reading.class {
                None => Request::DeleteObject {
                    handle: reading.handle,
                    version: reading.version,
                },
                Some(_) => match stored.iter().find(|(o, _)| o.handle == reading.handle) {
                    Some((object, version)) => Request::PutObject {
                        object: object.clone(),
                        version: *version,
                    },
                    None => continue,
                },
            };
            for (index, answer) in self.client.fan_out(&reading.stale, &request) {
                match answer {
                    Ok(Response::Ok) => tracing::info!(
                        appliance = index,
                        object = reading.handle.0,
                        deleted = reading.class.is_none(),
                        "object repaired"
                    ),
                    // Written there since by someone else: newer still.
                    Ok(Response::Error(err)) if err.code == ErrorCode::Superseded => {}
                    Ok(Response::Error(err)) => {
                        tracing::warn!(appliance = index, %err, object = reading.handle.0, "object not repaired")
                    }
                    Ok(other) => {
                        tracing::warn!(appliance = index, kind = other.kind(), "odd answer")
                    }
                    Err(err) => {
                        tracing::warn!(appliance = index, %err, object = reading.handle.0, "object not repaired")
                    }
                }
            }
        }
        false
    }

    fn visible(view: &TokenView, login: Option<UserKind>) -> impl Iterator<Item = &Object> {
        view.view
            .iter()
            .filter(move |o| !o.private || login == Some(UserKind::User))
    }

    fn object(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
    ) -> Result<(Arc<TokenView>, Object)> {
        let login = self.with_session(session, |_, login| Ok(login))?;
        let view = self.view()?;
        let object = Self::visible(&view, login)
            .find(|o| o.handle == handle)
            .cloned()
            .or_else(|| self.session_object(&view, login, handle))
            .ok_or(Error::ObjectHandleInvalid)?;
        Ok((view, object))
    }

    /// `C_FindObjectsInit`.
    pub fn find_init(&self, session: CK_SESSION_HANDLE, template: &[Attr]) -> Result<()> {
        let login = self.with_session(session, |s, login| {
            if s.find.is_some() {
                return Err(Error::OperationActive);
            }
            Ok(login)
        })?;
        let view = self.view()?;
        let mut found: Vec<CK_OBJECT_HANDLE> = Self::visible(&view, login)
            .filter(|o| o.matches(template))
            .map(|o| o.handle)
            .collect();
        found.extend(
            lock(&self.state)
                .session_objects
                .visible(login)
                .filter(|o| o.matches(template))
                .map(|o| o.handle),
        );
        found.reverse(); // popped from the end, so results come in view order
        self.with_session(session, |s, _| {
            s.find = Some(found);
            Ok(())
        })
    }

    /// `C_FindObjects`.
    pub fn find(&self, session: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        self.with_session(session, |s, _| {
            let found = s.find.as_mut().ok_or(Error::OperationNotInitialized)?;
            let take = max.min(found.len());
            let mut out = found.split_off(found.len() - take);
            out.reverse();
            Ok(out)
        })
    }

    /// `C_FindObjectsFinal`.
    pub fn find_final(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        self.with_session(session, |s, _| {
            s.find.take().ok_or(Error::OperationNotInitialized)?;
            Ok(())
        })
    }

    /// `C_GetAttributeValue`: one lookup per requested type.
    pub fn get_attributes(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        kinds: &[ck::CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<Lookup>> {
        let (_, object) = self.object(session, handle)?;
        Ok(kinds.iter().map(|k| object.get(*k)).collect())
    }

    /// `C_GetObjectSize`: the bytes of the attribute values the object shows, an
    /// approximation (the specification allows one) that reveals nothing the attributes
    /// do not.
    pub fn object_size(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
    ) -> Result<usize> {
        let (_, object) = self.object(session, handle)?;
        Ok(object.attrs.iter().map(|a| a.value.len()).sum())
    }

    fn require_rw_user(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        self.with_session(session, |s, login| {
            if !s.rw {
                return Err(Error::SessionReadOnly);
            }
            if login != Some(UserKind::User) {
                return Err(Error::UserNotLoggedIn);
            }
            Ok(())
        })
    }

    /// Stores a new version of `object` (a change, or a new object).
    fn put_everywhere(&self, object: TokenObject) -> Result<()> {
        self.write_object(object.handle, Some(object))
    }

    /// Writes a new version of object `handle` (`object`, or its deletion) to every
    /// available appliance, newer than the version read. At least k must store it;
    /// otherwise it is undone: the version read (or a deletion, for a new object) is
    /// written again, as a newer version still, to the same appliances.
    fn write_object(&self, handle: ObjectId, object: Option<TokenObject>) -> Result<()> {
        let view = self.view()?;
        let seen = view.versions.get(&handle).copied();
        let previous = view.stored.iter().find(|o| o.handle == handle).cloned();
        drop(view);
        let k = self.client.threshold();
        let indices = self.client.available();
        if indices.len() < k {
            return Err(Error::Device(format!(
                "{} appliances reachable; a change to an object needs {k}",
                indices.len()
            )));
        }
        let version = new_version(seen)?;
        let request = object_request(handle, object, version);
        let answers = self.client.fan_out(&indices, &request);
        self.invalidate_view();
        let (accepted, refusal) = tally(answers, request.kind());
        if accepted >= k {
            return Ok(());
        }
        let undo = object_request(handle, previous, new_version(Some(version))?);
        let (undone, _) = tally(self.client.fan_out(&indices, &undo), "undo");
        tracing::warn!(
            object = handle.0,
            accepted,
            needed = k,
            undone,
            "a change stored on too few appliances was undone"
        );
        Err(refusal.unwrap_or_else(|| {
            Error::Device(format!(
                "{accepted} appliances stored the change, {k} needed; it was undone"
            ))
        }))
    }

    /// `C_SetAttributeValue`: `CKA_ID` and `CKA_LABEL` of any object, and the value
    /// attributes of data objects.
    pub fn set_attributes(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) -> Result<()> {
        let (view, object) = self.object(session, handle)?;
        if self.set_session_attributes(&object, template)? {
            return Ok(());
        }
        self.require_rw_user(session)?;
        let mut stored = match (object.stored, object.key) {
            (Some(id), _) => view
                .stored
                .iter()
                .find(|o| o.handle == id)
                .cloned()
                .ok_or(Error::ObjectHandleInvalid)?,
            (None, Some(pos)) => {
                let key = view.keys.get(pos).ok_or(Error::ObjectHandleInvalid)?;
                let mut stub = TokenObject {
                    handle: ObjectId(u64::from(key.handle)),
                    class: ObjectClass::PrivateKey,
                    attributes: Vec::new(),
                };
                stub.set_attribute(u64::from(CKA_ITTC_KEY_ID), key.key_id.as_bytes().to_vec());
                for kind in [ck::CKA_ID, ck::CKA_LABEL] {
                    if let Lookup::Value(v) = object.get(kind) {
                        stub.set_attribute(u64::from(kind), v);
                    }
                }
                stub
            }
            (None, None) => return Err(Error::ObjectHandleInvalid),
        };
        for attr in template {
            if !session_objects::modifiable(object.class, attr.kind) {
                return Err(match object.get(attr.kind) {
                    Lookup::Invalid => Error::AttributeTypeInvalid,
                    _ => Error::AttributeReadOnly,
                });
            }
            stored.set_attribute(u64::from(attr.kind), to_stored(attr.kind, &attr.value)?);
        }
        // A public key linked to its cluster key by CKA_ID keeps the link when CKA_ID
        // changes.
        if object.class == ObjectClass::PublicKey
            && stored.attribute(u64::from(CKA_ITTC_KEY_ID)).is_none()
            && let Some(key) = view.keys.iter().find(|k| {
                objects::public_key_of(&view.stored, &k.key_id).map(|o| o.handle) == object.stored
            })
        {
            stored.set_attribute(u64::from(CKA_ITTC_KEY_ID), key.key_id.as_bytes().to_vec());
        }
        self.put_everywhere(stored)
    }

    /// `C_CreateObject`: certificates, RSA public keys and data objects, stored on the
    /// appliances, or kept in the module as session objects (`CKA_TOKEN`=false).
    pub fn create_object(
        &self,
        session: CK_SESSION_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        let token = find(template, ck::CKA_TOKEN)
            .map(read_bool)
            .transpose()?
            .unwrap_or(false);
        if token {
            self.require_rw_user(session)?;
        } else {
            self.with_session(session, |_, _| Ok(()))?;
        }
        let class = read_ulong(find(template, ck::CKA_CLASS).ok_or(Error::TemplateIncomplete)?)?;
        let class = match class {
            ck::CKO_CERTIFICATE => ObjectClass::Certificate,
            ck::CKO_PUBLIC_KEY => ObjectClass::PublicKey,
            ck::CKO_DATA => ObjectClass::Data,
            _ => return Err(Error::TemplateInconsistent),
        };
        match class {
            ObjectClass::Certificate => {
                let kind = find(template, ck::CKA_CERTIFICATE_TYPE)
                    .map(read_ulong)
                    .transpose()?;
                if kind.is_some_and(|k| k != ck::CKC_X_509) {
                    return Err(Error::TemplateInconsistent);
                }
                if find(template, ck::CKA_VALUE).is_none() {
                    return Err(Error::TemplateIncomplete);
                }
            }
            ObjectClass::PublicKey => {
                let kind = find(template, ck::CKA_KEY_TYPE)
                    .map(read_ulong)
                    .transpose()?;
                if kind.is_some_and(|k| k != ck::CKK_RSA) {
                    return Err(Error::TemplateInconsistent);
                }
                if find(template, ck::CKA_MODULUS).is_none()
                    || find(template, ck::CKA_PUBLIC_EXPONENT).is_none()
                {
                    return Err(Error::TemplateIncomplete);
                }
            }
            ObjectClass::Data | ObjectClass::PrivateKey => {}
        }
        let id = new_object_id()?;
        let mut object = TokenObject {
            handle: ObjectId(id),
            class,
            attributes: Vec::new(),
        };
        for attr in template {
            if attr.kind == CKA_ITTC_KEY_ID {
                return Err(Error::AttributeTypeInvalid);
            }
            object.set_attribute(u64::from(attr.kind), to_stored(attr.kind, &attr.value)?);
        }
        if class == ObjectClass::PublicKey {
            object.set_attribute(
                u64::from(ck::CKA_KEY_TYPE),
                ittc_wire::attributes::ulong(u64::from(ck::CKK_RSA)),
            );
            if let Some(m) = find(template, ck::CKA_MODULUS) {
                let bits = BigUint::from_bytes_be(m).bits();
                object.set_attribute(
                    u64::from(ck::CKA_MODULUS_BITS),
                    ittc_wire::attributes::ulong(bits),
                );
            }
        }
        if !token {
            return self.add_session_object(session, object);
        }
        object.set_attribute(u64::from(ck::CKA_TOKEN), vec![1]);
        let handle = CK_OBJECT_HANDLE::try_from(id).map_err(|_| Error::HostMemory)?;
        self.put_everywhere(object)?;
        Ok(handle)
    }

    /// `C_DestroyObject`: stored and session objects; cluster keys are deleted by the
    /// admin.
    pub fn destroy_object(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let (_, object) = self.object(session, handle)?;
        if self.destroy_session_object(&object) {
            return Ok(());
        }
        self.require_rw_user(session)?;
        if object.class == ObjectClass::PrivateKey {
            return Err(Error::ActionProhibited);
        }
        let id = object.stored.ok_or(Error::ObjectHandleInvalid)?;
        self.write_object(id, None)
    }

    // ----- keys for operations -----

    fn key_for(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        private: bool,
    ) -> Result<KeyEntry> {
        let (view, object) = self.object(session, handle).map_err(|err| match err {
            Error::ObjectHandleInvalid => Error::KeyHandleInvalid,
            other => other,
        })?;
        match (object.class, private) {
            (ObjectClass::PrivateKey, true) => object
                .key
                .and_then(|pos| view.keys.get(pos))
                .cloned()
                .ok_or(Error::KeyHandleInvalid),
            (ObjectClass::PublicKey, false) => {
                let n = object.get(ck::CKA_MODULUS);
                let e = object.get(ck::CKA_PUBLIC_EXPONENT);
                if let Some(key) = view.keys.iter().find(|k| {
                    Lookup::Value(k.public.n_be()) == n && Lookup::Value(k.public.e_be()) == e
                }) {
                    return Ok(key.clone());
                }
                Err(Error::KeyHandleInvalid)
            }
            (ObjectClass::PrivateKey | ObjectClass::PublicKey, _) => {
                Err(Error::KeyFunctionNotPermitted)
            }
            _ => Err(Error::KeyHandleInvalid),
        }
    }

    fn private_em(&self, key: &KeyEntry, em: &[u8]) -> Result<Vec<u8>> {
        if lock(&self.state).login != Some(UserKind::User) {
            return Err(Error::UserNotLoggedIn);
        }
        let m = BigUint::from_bytes_be(em);
        if &m >= key.public.n() {
            return Err(Error::DataInvalid);
        }
        let y = match raw_private(&self.client, key, &m) {
            // The cluster refreshed the key since the view was read: read it again and
            // retry once on the epoch the appliances answer now.
            Err(Error::StaleEpoch) => {
                self.invalidate_view();
                let view = self.view()?;
                let fresh = view
                    .keys
                    .iter()
                    .find(|k| k.key_id == key.key_id && k.public == key.public)
                    .ok_or(Error::KeyHandleInvalid)?;
                raw_private(&self.client, fresh, &m).map_err(|err| match err {
                    Error::StaleEpoch => {
                        Error::Device("the key's epoch changed twice during one operation".into())
                    }
                    other => other,
                })?
            }
            other => other?,
        };
        Ok(key.public.integer_to_be(&y))
    }

    // ----- sign, verify, encrypt, decrypt -----

    /// Starts an operation in the session slot `slot` with key `key`: a private-key
    /// operation needs the user logged in and the private key; a public one takes the
    /// public key, or the private key's public part.
    fn begin<T>(
        &self,
        session: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        use_: KeyUse,
        slot: fn(&mut Session) -> &mut Option<T>,
        make: impl FnOnce(KeyEntry) -> T,
    ) -> Result<()> {
        self.with_session(session, |s, login| {
            if slot(s).is_some() {
                return Err(Error::OperationActive);
            }
            if use_ == KeyUse::Private && login != Some(UserKind::User) {
                return Err(Error::UserNotLoggedIn);
            }
            Ok(())
        })?;
        let key = match use_ {
            KeyUse::Private => self.key_for(session, key, true)?,
            KeyUse::Public => self
                .key_for(session, key, false)
                .or_else(|_| self.key_for(session, key, true))?,
        };
        self.with_session(session, |s, _| {
            *slot(s) = Some(make(key));
            Ok(())
        })
    }

    /// Ends the operation in `slot` and returns it.
    fn take<T>(
        &self,
        session: CK_SESSION_HANDLE,
        slot: fn(&mut Session) -> &mut Option<T>,
    ) -> Result<T> {
        self.with_session(session, |s, _| {
            slot(s).take().ok_or(Error::OperationNotInitialized)
        })
    }

    /// Ends the encryption or decryption in `slot` for its single-part call, which may not
    /// finish a multi-part one (`CKR_OPERATION_ACTIVE`, which ends it too).
    fn take_single(
        &self,
        session: CK_SESSION_HANDLE,
        slot: fn(&mut Session) -> &mut Option<CryptOp>,
    ) -> Result<CryptOp> {
        let op = self.take(session, slot)?;
        if !op.input.is_empty() {
            return Err(Error::OperationActive);
        }
        Ok(op)
    }

    /// What a buffering `C_EncryptUpdate` or `C_DecryptUpdate` returns: no bytes, if the
    /// operation in `slot` is active.
    fn part_len(
        &self,
        session: CK_SESSION_HANDLE,
        slot: fn(&mut Session) -> &mut Option<CryptOp>,
    ) -> Result<usize> {
        self.output_len(session, slot).map(|_| 0)
    }

    /// Adds `data` to the input of the operation in `slot` (one RSA block at most: more
    /// is `too_long`, which ends the operation); returns the output of the part, none.
    fn buffer_part(
        &self,
        session: CK_SESSION_HANDLE,
        slot: fn(&mut Session) -> &mut Option<CryptOp>,
        data: &[u8],
        too_long: Error,
    ) -> Result<Vec<u8>> {
        self.with_session(session, |s, _| {
            let op = slot(s).as_mut().ok_or(Error::OperationNotInitialized)?;
            if op.input.len().saturating_add(data.len()) > op.key.public.size() {
                *slot(s) = None;
                return Err(too_long);
            }
            op.input.extend_from_slice(data);
            Ok(Vec::new())
        })
    }

    /// The output length of the operation in `slot`: the modulus length (no network).
    fn output_len<T: Keyed>(
        &self,
        session: CK_SESSION_HANDLE,
        slot: fn(&mut Session) -> &mut Option<T>,
    ) -> Result<usize> {
        self.with_session(session, |s, _| {
            slot(s)
                .as_ref()
                .map(|op| op.key().public.size())
                .ok_or(Error::OperationNotInitialized)
        })
    }

    /// Feeds data to the multi-part operation in `slot`; a failure ends the operation.
    fn update(
        &self,
        session: CK_SESSION_HANDLE,
        slot: fn(&mut Session) -> &mut Option<SignOp>,
        data: &[u8],
    ) -> Result<()> {
        self.with_session(session, |s, _| {
            let op = slot(s).as_mut().ok_or(Error::OperationNotInitialized)?;
            let result = op.input.update(data);
            if result.is_err() {
                *slot(s) = None;
            }
            result
        })
    }

    /// `C_SignInit`.
    pub fn sign_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        self.begin_sign_op(session, mechanism, key, KeyUse::Private, |s| &mut s.sign)
    }

    /// A signing or verifying operation (they read their input alike).
    fn begin_sign_op(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: Mechanism,
        key: CK_OBJECT_HANDLE,
        use_: KeyUse,
        slot: fn(&mut Session) -> &mut Option<SignOp>,
    ) -> Result<()> {
        if !mechanism.can_sign() {
            return Err(Error::MechanismInvalid);
        }
        self.begin(session, key, use_, slot, |key| SignOp {
            input: Input::for_mechanism(&mechanism),
            mechanism,
            key,
        })
    }

    /// The signature length of the active signing operation (no network).
    pub fn sign_len(&self, session: CK_SESSION_HANDLE) -> Result<usize> {
        self.output_len(session, |s| &mut s.sign)
    }

    /// `C_Sign`: ends the operation.
    pub fn sign(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<Vec<u8>> {
        let mut op = self.take(session, |s| &mut s.sign)?;
        op.input.update(data)?;
        self.finish_sign(op)
    }

    /// `C_SignUpdate`.
    pub fn sign_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        self.update(session, |s| &mut s.sign, data)
    }

    /// `C_SignFinal`.
    pub fn sign_final(&self, session: CK_SESSION_HANDLE) -> Result<Vec<u8>> {
        let op = self.take(session, |s| &mut s.sign)?;
        self.finish_sign(op)
    }

    fn finish_sign(&self, op: SignOp) -> Result<Vec<u8>> {
        let input = op.input.finish();
        let em = operations::sign_encode(&op.mechanism, &op.key.public, &input)?;
        self.private_em(&op.key, &em)
    }

    /// `C_VerifyInit`: with the public key or the private key (its public part).
    pub fn verify_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        self.begin_sign_op(session, mechanism, key, KeyUse::Public, |s| &mut s.verify)
    }

    /// `C_Verify`.
    pub fn verify(&self, session: CK_SESSION_HANDLE, data: &[u8], signature: &[u8]) -> Result<()> {
        let mut op = self.take(session, |s| &mut s.verify)?;
        op.input.update(data)?;
        operations::verify(&op.mechanism, &op.key.public, &op.input.finish(), signature)
    }

    /// `C_VerifyUpdate`.
    pub fn verify_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        self.update(session, |s| &mut s.verify, data)
    }

    /// `C_VerifyFinal`.
    pub fn verify_final(&self, session: CK_SESSION_HANDLE, signature: &[u8]) -> Result<()> {
        let op = self.take(session, |s| &mut s.verify)?;
        operations::verify(&op.mechanism, &op.key.public, &op.input.finish(), signature)
    }

    /// `C_EncryptInit`: with the public key (or the private key's public part).
    pub fn encrypt_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        if !mechanism.can_encrypt() {
            return Err(Error::MechanismInvalid);
        }
        self.begin(
            session,
            key,
            KeyUse::Public,
            |s| &mut s.encrypt,
            |key| CryptOp::new(mechanism, key),
        )
    }

    /// The ciphertext length of the active encryption.
    pub fn encrypt_len(&self, session: CK_SESSION_HANDLE) -> Result<usize> {
        self.output_len(session, |s| &mut s.encrypt)
    }

    /// `C_Encrypt` (not after `C_EncryptUpdate`: `CKR_OPERATION_ACTIVE`).
    pub fn encrypt(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<Vec<u8>> {
        let op = self.take_single(session, |s| &mut s.encrypt)?;
        operations::encrypt(&op.mechanism, &op.key.public, data)
    }

    /// What `C_EncryptUpdate` returns: nothing (the input is buffered).
    pub fn encrypt_update_len(&self, session: CK_SESSION_HANDLE) -> Result<usize> {
        self.part_len(session, |s| &mut s.encrypt)
    }

    /// `C_EncryptUpdate`: buffers the plaintext; more than the modulus length in all is
    /// `CKR_DATA_LEN_RANGE` and ends the operation.
    pub fn encrypt_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<Vec<u8>> {
        self.buffer_part(session, |s| &mut s.encrypt, data, Error::DataLenRange)
    }

    /// `C_EncryptFinal`: encrypts the buffered plaintext.
    pub fn encrypt_final(&self, session: CK_SESSION_HANDLE) -> Result<Vec<u8>> {
        let op = self.take(session, |s| &mut s.encrypt)?;
        operations::encrypt(&op.mechanism, &op.key.public, &op.input)
    }

    /// `C_DecryptInit`.
    pub fn decrypt_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        if !mechanism.can_encrypt() {
            return Err(Error::MechanismInvalid);
        }
        self.begin(
            session,
            key,
            KeyUse::Private,
            |s| &mut s.decrypt,
            |key| CryptOp::new(mechanism, key),
        )
    }

    /// The largest plaintext of the active decryption (the modulus length).
    pub fn decrypt_len(&self, session: CK_SESSION_HANDLE) -> Result<usize> {
        self.output_len(session, |s| &mut s.decrypt)
    }

    /// `C_Decrypt` (not after `C_DecryptUpdate`: `CKR_OPERATION_ACTIVE`).
    pub fn decrypt(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let op = self.take_single(session, |s| &mut s.decrypt)?;
        self.finish_decrypt(&op, data)
    }

    /// What `C_DecryptUpdate` returns: nothing (the ciphertext is buffered).
    pub fn decrypt_update_len(&self, session: CK_SESSION_HANDLE) -> Result<usize> {
        self.part_len(session, |s| &mut s.decrypt)
    }

    /// `C_DecryptUpdate`: buffers the ciphertext; more than the modulus length in all is
    /// `CKR_ENCRYPTED_DATA_LEN_RANGE` and ends the operation.
    pub fn decrypt_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<Vec<u8>> {
        self.buffer_part(
            session,
            |s| &mut s.decrypt,
            data,
            Error::EncryptedDataLenRange,
        )
    }

    /// `C_DecryptFinal`: the private operation on the buffered ciphertext.
    pub fn decrypt_final(&self, session: CK_SESSION_HANDLE) -> Result<Zeroizing<Vec<u8>>> {
        let op = self.take(session, |s| &mut s.decrypt)?;
        self.finish_decrypt(&op, &op.input)
    }

    fn finish_decrypt(&self, op: &CryptOp, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let c = operations::ciphertext(&op.key.public, data)?;
        let em = self
            .private_em(&op.key, &op.key.public.integer_to_be(&c))
            .map_err(|err| match err {
                Error::DataInvalid => Error::EncryptedDataInvalid,
                other => other,
            })?;
        let em = Zeroizing::new(em);
        operations::decrypt_decode(&op.mechanism, &op.key.public, &em)
    }

    // ----- digest and random -----

    /// `C_DigestInit`.
    pub fn digest_init(&self, session: CK_SESSION_HANDLE, mechanism: Mechanism) -> Result<()> {
        let Mechanism::Digest(hash) = mechanism else {
            return Err(Error::MechanismInvalid);
        };
        self.with_session(session, |s, _| {
            if s.digest.is_some() {
                return Err(Error::OperationActive);
            }
            s.digest = Some(hash.hasher());
            Ok(())
        })
    }

    /// The digest length of the active digest.
    pub fn digest_len(&self, session: CK_SESSION_HANDLE) -> Result<usize> {
        self.with_session(session, |s, _| {
            s.digest
                .as_ref()
                .map(|h| operations::digest_len(h.alg()))
                .ok_or(Error::OperationNotInitialized)
        })
    }

    /// `C_Digest`.
    pub fn digest(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<Vec<u8>> {
        self.with_session(session, |s, _| {
            let mut h = s.digest.take().ok_or(Error::OperationNotInitialized)?;
            h.update(data);
            Ok(h.finalize())
        })
    }

    /// `C_DigestUpdate`.
    pub fn digest_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        self.with_session(session, |s, _| {
            s.digest
                .as_mut()
                .ok_or(Error::OperationNotInitialized)?
                .update(data);
            Ok(())
        })
    }

    /// `C_DigestFinal`.
    pub fn digest_final(&self, session: CK_SESSION_HANDLE) -> Result<Vec<u8>> {
        self.with_session(session, |s, _| {
            let h = s.digest.take().ok_or(Error::OperationNotInitialized)?;
            Ok(h.finalize())
        })
    }

    /// `C_GenerateRandom`: from the operating system.
    pub fn generate_random(&self, session: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<()> {
        self.with_session(session, |_, _| Ok(()))?;
        let mut rng = crate::rng()?;
        rand::Rng::fill_bytes(&mut rng, out);
        Ok(())
    }

    /// `C_SeedRandom`.
    pub fn seed_random(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        self.with_session(session, |_, _| Ok(()))?;
        Err(Error::RandomSeedNotSupported)
    }
}

/// A fresh random object id, below 2^62 (above are key and session-object handles).
/// A version newer than `seen`, for a write now.
fn new_version(seen: Option<ObjectVersion>) -> Result<ObjectVersion> {
    let writer = rand::Rng::next_u64(&mut crate::rng()?);
    Ok(ObjectVersion::next(seen, writer))
}

/// The request that writes `object` as object `handle`'s `version`, or deletes it.
fn object_request(
    handle: ObjectId,
    object: Option<TokenObject>,
    version: ObjectVersion,
) -> Request {
    match object {
        Some(object) => Request::PutObject { object, version },
        None => Request::DeleteObject { handle, version },
    }
}

/// How many appliances stored a write, and the refusal to report if too few did
/// (`Superseded`: a newer version is there, written by someone else meanwhile).
fn tally(
    answers: Vec<(
        u8,
        std::result::Result<Response, crate::client::ExchangeError>,
    )>,
    kind: &str,
) -> (usize, Option<Error>) {
    let mut accepted = 0;
    let mut refusal = None;
    for (index, answer) in answers {
        match answer {
            Ok(Response::Ok) => accepted += 1,
            Ok(Response::Error(err)) => {
                tracing::warn!(appliance = index, %err, kind, "write refused");
                refusal = Some(match err.code {
                    ErrorCode::Superseded => Error::Device(
                        "the object was changed elsewhere meanwhile; read it again".into(),
                    ),
                    _ => wire_error(&err),
                });
            }
            Ok(other) => tracing::error!(appliance = index, kind = other.kind(), "odd answer"),
            Err(err) => {
                tracing::warn!(appliance = index, %err, kind, "write not delivered; that appliance is now stale")
            }
        }
    }
    (accepted, refusal)
}

fn new_object_id() -> Result<u64> {
    let mut rng = crate::rng()?;
    loop {
        let id = rand::Rng::next_u64(&mut rng) >> 2;
        if id != 0 {
            return Ok(id);
        }
    }
}

fn count(n: usize) -> CK_ULONG {
    CK_ULONG::try_from(n).unwrap_or(CK_ULONG::MAX)
}

/// Which key an operation uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyUse {
    /// The private key: a private operation through the appliances, user logged in.
    Private,
    /// The public key, or the private key's public part: local verification, encryption.
    Public,
}

/// An operation bound to a key.
trait Keyed {
    fn key(&self) -> &KeyEntry;
}

impl Keyed for SignOp {
    fn key(&self) -> &KeyEntry {
        &self.key
    }
}

impl Keyed for CryptOp {
    fn key(&self) -> &KeyEntry {
        &self.key
    }
}
