//! One file per request family; [`dispatch`] checks order and role, calls the handler and
//! appends the audit entry.
//!
//! Handlers are plain blocking functions `fn handle_x(&State, &mut Session, ..) ->
//! Result<Response, ApplianceError>`. The server runs a partial operation on the runtime
//! worker that read it (an exponentiation, with a worker to spare for the network) and
//! every other request on tokio's blocking pool (PIN hashes, key generation, flushes).

mod admin;
mod audit;
mod hello;
mod keygen;
mod login;
mod objects;
mod partial;
mod public_state;
mod refresh;
mod revocation;

pub use partial::KeyMathCache;

use std::time::{Duration, Instant};

use ittc_wire::identity::Role;
use ittc_wire::{Request, Response, UserKind};

use crate::error::ApplianceError;
use crate::state::{Session, State};
use crate::storage::AuditEntry;

/// Handles one request: order, role, the handler, the audit entry. Never panics; every
/// failure is an `Err` that the server turns into a wire error.
///
/// An audited request's entry is flushed before the response leaves. A partial operation
/// writes its entry once its checks have passed and applies its share while the entry goes
/// to disk (`apply_audited`).
pub fn dispatch(
    state: &State,
    session: &mut Session,
    request: Request,
) -> Result<Response, ApplianceError> {
    let kind = request.kind();
    let audit_key = audited(&request);
    let started = Instant::now();
    let result = match route(state, session, request) {
        Ok(Routed::Partial(prepared)) => {
            return apply_audited(state, session, kind, audit_key.flatten(), prepared, started);
        }
        Ok(Routed::Response(response)) => Ok(response),
        Err(err) => Err(err),
    };
    let handled = started.elapsed();
    if let Some(key) = audit_key {
        // An operation whose audit entry cannot be written is not acknowledged.
        state
            .storage
            .audit_append(&audit_entry(session, kind, key, outcome(&result)))?;
    }
    log_timing(started, handled);
    result
}

/// Where a request's time went (performance work: `log.level = "debug"`): the handler,
/// then the wait for its audit entry.
fn log_timing(started: Instant, handled: Duration) {
    tracing::debug!(
        handler_ms = handled.as_secs_f64() * 1e3,
        audit_ms = (started.elapsed() - handled).as_secs_f64() * 1e3,
        "handled"
    );
}

/// Applies the share of a checked partial operation while its audit entry goes to disk:
/// the entry ("ok": the share is applied to this client's input) is written first, its
/// flush runs on the store's I/O threads during the exponentiation, and the result leaves
/// only once the entry is durable. Should applying the share fail, a second entry records
/// the failure.
fn apply_audited(
    state: &State,
    session: &Session,
    kind: &'static str,
    key: Option<String>,
    prepared: partial::Prepared,
    started: Instant,
) -> Result<Response, ApplianceError> {
    let entry = audit_entry(session, kind, key.clone(), "ok".to_owned());
    let (_, flush) = state.storage.audit_append_start(&entry)?;
    let result = prepared.compute(state);
    let computed = started.elapsed();
    flush.wait()?;
    if let Err(err) = &result {
        state
            .storage
            .audit_append(&audit_entry(session, kind, key, error_code(err)))?;
    }
    log_timing(started, computed);
    result
}

fn audit_entry(
    session: &Session,
    kind: &'static str,
    key_id: Option<String>,
    result: String,
) -> AuditEntry {
    AuditEntry {
        time_unix_ms: ittc_wire::now_unix_ms(),
        client: session.identity.to_string(),
        request: kind.to_owned(),
        key_id,
        result,
    }
}

/// Appends an audit entry for something this appliance does on its own (a refresh it
/// coordinates or recovers, a step inside a refresh): `client` says who acted.
///
/// # Errors
///
/// The store's, if the entry cannot be written (the caller must not go on as if it was).
pub fn audit_event(
    state: &State,
    client: &str,
    request: &str,
    key_id: &ittc_wire::KeyId,
    result: &str,
) -> Result<(), ApplianceError> {
    state.storage.audit_append(&AuditEntry {
        time_unix_ms: ittc_wire::now_unix_ms(),
        client: client.to_owned(),
        request: request.to_owned(),
        key_id: Some(key_id.to_string()),
        result: result.to_owned(),
    })?;
    Ok(())
}

/// `ok`, or the wire error code, as the audit log records an outcome.
fn outcome(result: &Result<Response, ApplianceError>) -> String {
    result.as_ref().map_or_else(error_code, |_| "ok".to_owned())
}

fn error_code(err: &ApplianceError) -> String {
    err.to_wire().code.as_str().to_owned()
}

/// Whether a request is audited, and the key id (hex) or object handle it names.
fn audited(request: &Request) -> Option<Option<String>> {
    match request {
        Request::Hello { .. } | Request::Status | Request::ListObjects => None,
        Request::Partial { key_id, .. }
        | Request::DeleteKey { key_id }
        | Request::CommitEpoch { key_id, .. } => Some(Some(key_id.to_string())),
        Request::StoreShare(rec) => Some(Some(rec.key_id.to_string())),
        Request::GenerateKey(spec) => Some(Some(spec.key_id.to_string())),
        // Each generation has one audited GenerateKey; its many round messages and progress
        // requests are not. A refresh's steps are (its rounds' entries are written by the
        // holder as each round completes).
        Request::KeygenRound { .. }
        | Request::KeygenAbort { .. }
        | Request::KeygenProgress { .. }
        | Request::RefreshRound { .. }
        | Request::RefreshAbort { .. }
        | Request::RefreshProgress { .. } => None,
        Request::RefreshKey { key_id, .. }
        | Request::RefreshStep { key_id, .. }
        | Request::ReshareKey { key_id, .. } => Some(Some(key_id.to_string())),
        Request::RefreshRun(spec) => Some(Some(spec.key_id.to_string())),
        Request::RecoverRun(spec) => Some(Some(spec.key_id.to_string())),
        Request::GetObject { handle } | Request::DeleteObject { handle, .. } => {
            Some(Some(format!("object {}", handle.0)))
        }
        Request::PutObject { object, .. } => Some(Some(format!("object {}", object.handle.0))),
        Request::Login { .. }
        | Request::Logout
        | Request::SetPin { .. }
        | Request::ChangePin { .. } => Some(None),
        Request::RevokeCertificate { serial, .. } => {
            Some(Some(format!("certificate {}", hex::encode(serial))))
        }
        // PIN verifiers leave the appliance: every page is recorded.
        Request::PublicState { .. } | Request::AuditVerify => Some(None),
    }
}

/// What [`route`] made of a request: a response, or a partial operation that has passed
/// its checks and still has its share to apply.
enum Routed {
    Response(Response),
    Partial(partial::Prepared),
}

fn route(state: &State, session: &mut Session, request: Request) -> Result<Routed, ApplianceError> {
    let kind = request.kind();
    if !session.hello && !matches!(request, Request::Hello { .. }) {
        return Err(ApplianceError::BadRequest(format!("{kind} before hello")));
    }
    match request {
        Request::Partial {
            key_id,
            epoch,
            input,
        } => {
            let caller = match session.identity.role {
                Role::Client => {
                    require_login(session, UserKind::User)?;
                    partial::Caller::User
                }
                // The dealer's trial operation on a pending epoch, before the commit.
                Role::Admin => partial::Caller::Admin,
                role => {
                    return Err(ApplianceError::Forbidden {
                        role: role.to_string(),
                        request: kind,
                    });
                }
            };
            partial::prepare(state, caller, &key_id, epoch, &input).map(Routed::Partial)
        }
        request => respond(state, session, request).map(Routed::Response),
    }
}

/// Every request but a partial operation (see [`route`]), after the hello.
fn respond(
    state: &State,
    session: &mut Session,
    request: Request,
) -> Result<Response, ApplianceError> {
    let kind = request.kind();
    let role = session.identity.role;
    let forbidden = || ApplianceError::Forbidden {
        role: role.to_string(),
        request: kind,
    };
    let client = matches!(role, Role::Client);
    let admin = matches!(role, Role::Admin);
    match request {
        Request::Hello {
            protocol_version,
            client_name,
        } => hello::handle_hello(state, session, protocol_version, &client_name),
        Request::Status => hello::handle_status(state),
        Request::Login { user, pin } if client => {
            login::handle_login(state, session, user, pin.expose_secret())
        }
        Request::Logout if client => login::handle_logout(session),
        Request::ListObjects if client || admin => objects::handle_list(state),
        Request::GetObject { handle } if client || admin => objects::handle_get(state, handle),
        Request::PutObject { object, version } if client || admin => {
            if client {
                require_login(session, UserKind::User)?;
            }
            objects::handle_put(state, &object, version)
        }
        Request::DeleteObject { handle, version } if client || admin => {
            if client {
                require_login(session, UserKind::User)?;
            }
            objects::handle_delete(state, handle, version)
        }
        Request::StoreShare(record) if admin => admin::handle_store_share(state, record),
        Request::DeleteKey { key_id } if admin => admin::handle_delete_key(state, &key_id),
        Request::CommitEpoch { key_id, epoch } if admin => {
            admin::handle_commit_epoch(state, &key_id, epoch)
        }
        // A logged-in user generates keys on its token (C_GenerateKeyPair) and so finishes
        // them: commit, or delete, a key that has never been committed.
        Request::DeleteKey { key_id } if client && state.keygen.is_generated(&key_id) => {
            require_login(session, UserKind::User)?;
            require_uncommitted(state, &key_id, role)?;
            admin::handle_delete_key(state, &key_id)
        }
        Request::CommitEpoch { key_id, epoch } if client && state.keygen.is_generated(&key_id) => {
            require_login(session, UserKind::User)?;
            require_uncommitted(state, &key_id, role)?;
            admin::handle_commit_epoch(state, &key_id, epoch)
        }
        Request::GenerateKey(spec) if admin || client => {
            if client {
                require_login(session, UserKind::User)?;
            }
            keygen::handle_generate(state, &spec)
        }
        // Whoever may coordinate a generation may watch one (counts only).
        Request::KeygenProgress { session: id } if admin || client => {
            if client {
                require_login(session, UserKind::User)?;
            }
            keygen::handle_progress(state, &id)
        }
        // Only appliance `from` itself carries its round messages.
        Request::KeygenRound {
            session: id,
            from,
            round,
            message,
        } if role == Role::Appliance(from) => {
            keygen::handle_round(state, &id, from, round, message)
        }
        Request::KeygenAbort {
            session: id,
            from,
            reason,
        } if role == Role::Appliance(from) => keygen::handle_abort(state, &id, from, &reason),
        Request::RefreshKey { key_id, session } if admin => {
            refresh::handle_refresh_key(state, &key_id, session)
        }
        Request::ReshareKey {
            key_id,
            session,
            threshold,
            holders,
        } if admin => refresh::handle_reshare_key(
            state,
            &key_id,
            session,
            &crate::refresh::coordinator::NewSharing { threshold, holders },
        ),
        Request::RefreshProgress { session: id } if admin => refresh::handle_progress(state, &id),
        // A refresh's coordinator (an appliance) runs it on every holder and sends its steps;
        // only appliance `from` carries its own round messages.
        Request::RefreshRun(spec) if role == Role::Appliance(spec.coordinator) => {
            refresh::handle_run(state, &spec)
        }
        // Only the appliance whose share is rebuilt asks for it.
        Request::RecoverRun(spec) if role == Role::Appliance(spec.target) => {
            refresh::handle_recover(state, &spec)
        }
        Request::RefreshStep {
            key_id,
            session: id,
            epoch,
            step,
        } if matches!(role, Role::Appliance(_)) => {
            let Role::Appliance(caller) = role else {
                return Err(forbidden());
            };
            refresh::handle_step(state, caller, &key_id, &id, epoch, step)
        }
        Request::RefreshRound {
            session: id,
            from,
            round,
            message,
        } if role == Role::Appliance(from) => {
            refresh::handle_round(state, &id, from, round, message)
        }
        Request::RefreshAbort {
            session: id,
            from,
            reason,
        } if role == Role::Appliance(from) => refresh::handle_abort(state, &id, from, &reason),
        Request::SetPin { user, pin } if admin || client => {
            // A client sets the user PIN as the logged-in security officer (C_InitPIN).
            if client
                && (user != UserKind::User || session.login != Some(UserKind::SecurityOfficer))
            {
                return Err(ApplianceError::NotLoggedIn("security officer"));
            }
            admin::handle_set_pin(state, user, pin.expose_secret())
        }
        Request::ChangePin { user, old, new } if admin || client => {
            admin::handle_change_pin(state, user, old.expose_secret(), new.expose_secret())
        }
        Request::RevokeCertificate { serial, label } if admin => {
            revocation::handle_revoke(state, serial, label)
        }
        Request::PublicState { from } if matches!(role, Role::Appliance(_)) => {
            public_state::handle_public_state(state, from)
        }
        // The admin, or this appliance's own certificate: `ittc-appliance audit verify` on
        // the appliance's host, which holds its key and configuration.
        Request::AuditVerify if admin || role == Role::Appliance(state.config.index) => {
            audit::handle_verify(state)
        }
        _ => Err(forbidden()),
    }
}

/// A client may commit or delete only a key generated here and never committed (one it
/// has just generated); every other key is the admin's.
fn require_uncommitted(
    state: &State,
    key_id: &ittc_wire::KeyId,
    role: Role,
) -> Result<(), ApplianceError> {
    match state.storage.key(key_id)? {
        None => Err(ApplianceError::UnknownKey(key_id.to_string())),
        Some(key) if key.active_epoch.is_none() && state.keygen.is_generated(key_id) => Ok(()),
        Some(_) => Err(ApplianceError::Forbidden {
            role: role.to_string(),
            request: "commit or delete of a key it did not just generate",
        }),
    }
}

fn require_login(session: &Session, user: UserKind) -> Result<(), ApplianceError> {
    if session.login == Some(user) {
        Ok(())
    } else {
        Err(ApplianceError::NotLoggedIn(match user {
            UserKind::User => "user",
            UserKind::SecurityOfficer => "security officer",
        }))
    }
}
