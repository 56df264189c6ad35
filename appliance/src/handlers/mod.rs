//! One file per request family; [`dispatch`] checks order and role, calls the handler and
//! appends the audit entry.
//!
//! Handlers are plain blocking functions `fn handle_x(&State, &mut Session, ..) ->
//! Result<Response, ApplianceError>`. The server runs a partial operation on the runtime
//! worker that read it (one exponentiation and a flush, with a worker to spare for the
//! network) and every other request on tokio's blocking pool (PIN hashes, key generation).

mod admin;
mod hello;
mod keygen;
mod login;
mod objects;
mod partial;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ittc_wire::identity::Role;
use ittc_wire::{Request, Response, UserKind};

use crate::error::ApplianceError;
use crate::state::{Session, State};
use crate::storage::AuditEntry;

/// Handles one request: order, role, the handler, the audit entry. Never panics; every
/// failure is an `Err` that the server turns into a wire error.
pub fn dispatch(
    state: &State,
    session: &mut Session,
    request: Request,
) -> Result<Response, ApplianceError> {
    let kind = request.kind();
    let audit_key = audited(&request);
    let started = Instant::now();
    let result = route(state, session, request);
    let handled = started.elapsed();
    if let Some(key) = audit_key {
        let entry = AuditEntry {
            time_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            client: session.identity.to_string(),
            request: kind.to_owned(),
            key_id: key,
            result: match &result {
                Ok(_) => "ok".to_owned(),
                Err(e) => e.to_wire().code.as_str().to_owned(),
            },
        };
        // An operation whose audit entry cannot be written is not acknowledged.
        state.storage.audit_append(&entry)?;
    }
    // Where a request's time goes (performance work: `log.level = "debug"`).
    tracing::debug!(
        handler_ms = handled.as_secs_f64() * 1e3,
        audit_ms = (started.elapsed() - handled).as_secs_f64() * 1e3,
        "handled"
    );
    result
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
        // requests are not.
        Request::KeygenRound { .. }
        | Request::KeygenAbort { .. }
        | Request::KeygenProgress { .. } => None,
        Request::GetObject { handle } | Request::DeleteObject { handle } => {
            Some(Some(format!("object {}", handle.0)))
        }
        Request::PutObject(obj) => Some(Some(format!("object {}", obj.handle.0))),
        Request::Login { .. }
        | Request::Logout
        | Request::SetPin { .. }
        | Request::ChangePin { .. } => Some(None),
    }
}

fn route(
    state: &State,
    session: &mut Session,
    request: Request,
) -> Result<Response, ApplianceError> {
    let kind = request.kind();
    if !session.hello && !matches!(request, Request::Hello { .. }) {
        return Err(ApplianceError::BadRequest(format!("{kind} before hello")));
    }
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
        Request::Partial {
            key_id,
            epoch,
            input,
        } if client => {
            require_login(session, UserKind::User)?;
            partial::handle_partial(state, partial::Caller::User, &key_id, epoch, &input)
        }
        // The dealer's trial operation on a pending epoch, before the commit.
        Request::Partial {
            key_id,
            epoch,
            input,
        } if admin => {
            partial::handle_partial(state, partial::Caller::Admin, &key_id, epoch, &input)
        }
        Request::ListObjects if client || admin => objects::handle_list(state),
        Request::GetObject { handle } if client || admin => objects::handle_get(state, handle),
        Request::PutObject(object) if client || admin => {
            if client {
                require_login(session, UserKind::User)?;
            }
            objects::handle_put(state, &object)
        }
        Request::DeleteObject { handle } if client || admin => {
            if client {
                require_login(session, UserKind::User)?;
            }
            objects::handle_delete(state, handle)
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
