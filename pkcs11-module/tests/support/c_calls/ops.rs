//! The calls ([`Op`]) with their arguments as a careless application passes them, what a
//! sequence knows of its handles ([`Model`]), and one call made and checked ([`run`]).

use std::ffi::c_void;
use std::ptr;

use cryptoki_sys::*;

use super::{Failure, Keys, Module, PLAINTEXT, SLOT, check};
use crate::support::{KEY_ID, PIN};

/// A session handle as an application might pass one.
#[derive(Clone, Debug)]
pub enum Handle {
    /// The i-th (mod count) session this sequence has open.
    Open(usize),
    /// The i-th (mod count) session this sequence has closed.
    Stale(usize),
    /// Any number.
    Random(CK_ULONG),
}

/// An object handle as an application might pass one.
#[derive(Clone, Debug)]
pub enum Object {
    /// The imported private key.
    Private,
    /// Its public key.
    Public,
    /// The i-th (mod count) handle a search returned.
    Found(usize),
    /// Any number.
    Random(CK_ULONG),
}

/// An output buffer as an application might pass one.
#[derive(Clone, Debug)]
pub enum Out {
    /// NULL: a length query.
    Null,
    /// Fewer bytes than any result of the call needs.
    Short(usize),
    /// Enough.
    Large,
}

/// A search template.
#[derive(Clone, Debug)]
pub enum Template {
    /// No attributes: everything.
    Empty,
    /// NULL with a nonzero count.
    NullWithCount(CK_ULONG),
    /// `CKA_CLASS` of some value.
    Class(CK_ULONG),
    /// `CKA_ID` of the imported key.
    KeyId,
    /// An attribute whose value is NULL with a nonzero length.
    NullValue(CK_ATTRIBUTE_TYPE),
}

/// A PIN as an application might pass one.
#[derive(Clone, Debug)]
pub enum Pin {
    Right,
    Wrong,
    /// NULL with a nonzero length.
    NullWithLen,
}

/// One C call.
#[derive(Clone, Debug)]
pub enum Op {
    OpenSession {
        flags: CK_FLAGS,
        null_out: bool,
    },
    CloseSession(Handle),
    CloseAllSessions(CK_SLOT_ID),
    GetSessionInfo {
        session: Handle,
        null: bool,
    },
    GetSlotInfo {
        slot: CK_SLOT_ID,
        null: bool,
    },
    GetTokenInfo {
        slot: CK_SLOT_ID,
        null: bool,
    },
    Login {
        session: Handle,
        user: CK_USER_TYPE,
        pin: Pin,
    },
    Logout(Handle),
    FindObjectsInit {
        session: Handle,
        template: Template,
    },
    FindObjects {
        session: Handle,
        max: CK_ULONG,
        null_out: bool,
        null_count: bool,
    },
    FindObjectsFinal(Handle),
    GetAttributeValue {
        session: Handle,
        object: Object,
        kind: CK_ATTRIBUTE_TYPE,
        out: Out,
    },
    SignInit {
        session: Handle,
        mechanism: CK_MECHANISM_TYPE,
        null_params: bool,
        key: Object,
    },
    Sign {
        session: Handle,
        len: usize,
        out: Out,
    },
    DecryptInit {
        session: Handle,
        mechanism: CK_MECHANISM_TYPE,
        null_params: bool,
        key: Object,
    },
    Decrypt {
        session: Handle,
        len: usize,
        out: Out,
    },
    GenerateRandom {
        session: Handle,
        len: CK_ULONG,
        null: bool,
    },
    /// `C_SignInit` (SHA256-RSA-PKCS, the private key), then `C_Sign` once per buffer.
    SignWith {
        session: Handle,
        outs: Vec<Out>,
    },
    /// `C_DecryptInit` (RSA-PKCS, the private key), then `C_Decrypt` of a real
    /// ciphertext once per buffer.
    DecryptWith {
        session: Handle,
        outs: Vec<Out>,
    },
}

/// What a sequence knows about the handles it made.
pub struct Model {
    pub open: Vec<CK_SESSION_HANDLE>,
    closed: Vec<CK_SESSION_HANDLE>,
    found: Vec<CK_OBJECT_HANDLE>,
    private: CK_OBJECT_HANDLE,
    public: CK_OBJECT_HANDLE,
    ciphertext: Vec<u8>,
    /// One thread only: a handle the model knows to be closed must be refused.
    strict: bool,
}

impl Model {
    pub fn new(keys: &Keys, strict: bool) -> Self {
        Self {
            open: Vec::new(),
            closed: Vec::new(),
            found: Vec::new(),
            private: keys.private,
            public: keys.public,
            ciphertext: keys.ciphertext.clone(),
            strict,
        }
    }

    /// The handle, and whether it is certainly not an open session.
    fn session(&self, h: &Handle) -> (CK_SESSION_HANDLE, bool) {
        let pick = |v: &[CK_ULONG], i: usize| (!v.is_empty()).then(|| v[i % v.len()]);
        let h = match h {
            Handle::Open(i) => pick(&self.open, *i).unwrap_or(0),
            Handle::Stale(i) => pick(&self.closed, *i).unwrap_or(0),
            Handle::Random(r) => *r,
        };
        // Another thread's session may have any number; only one thread knows them all.
        (h, h == 0 || (self.strict && !self.open.contains(&h)))
    }

    fn object(&self, o: &Object) -> CK_OBJECT_HANDLE {
        match o {
            Object::Private => self.private,
            Object::Public => self.public,
            Object::Found(i) if !self.found.is_empty() => self.found[i % self.found.len()],
            Object::Found(_) => 0,
            Object::Random(r) => *r,
        }
    }

    fn close(&mut self, h: CK_SESSION_HANDLE) {
        self.open.retain(|s| *s != h);
        self.closed.push(h);
    }
}

/// A buffer for `out`, and the pointer and length to pass for it.
pub fn buffer(out: &Out) -> (Vec<u8>, bool, CK_ULONG) {
    match out {
        Out::Null => (Vec::new(), true, 0),
        Out::Short(n) => (vec![0; *n], false, *n as CK_ULONG),
        Out::Large => (vec![0; 1024], false, 1024),
    }
}

pub fn ptr_of(buf: &mut [u8], null: bool) -> *mut u8 {
    if null {
        ptr::null_mut()
    } else {
        buf.as_mut_ptr()
    }
}

/// Runs one call; checks its return code and what it wrote.
pub fn run(m: &Module, model: &mut Model, op: &Op) -> Result<(), Failure> {
    let f = m.list;
    let no_session = |name: &str, rv: CK_RV, bad: bool| -> Result<(), Failure> {
        check(name, rv)?;
        if bad {
            ensure!(
                // The specification orders no checks: a bad argument may be found first,
                // but nothing that needs the session's state.
                ![
                    CKR_OK,
                    CKR_BUFFER_TOO_SMALL,
                    CKR_OPERATION_ACTIVE,
                    CKR_OPERATION_NOT_INITIALIZED,
                    CKR_USER_ALREADY_LOGGED_IN,
                ]
                .contains(&rv),
                "{name} on a handle that is no open session returned {rv:#x}"
            );
        }
        Ok(())
    };
    // SAFETY (every block below): each pointer is NULL on purpose or points into a live
    // local buffer at least as long as the length passed with it.
    match op {
        Op::OpenSession { flags, null_out } => {
            let mut h: CK_SESSION_HANDLE = 0;
            let out = if *null_out {
                ptr::null_mut()
            } else {
                &raw mut h
            };
            let rv = unsafe { f.C_OpenSession.unwrap()(SLOT, *flags, ptr::null_mut(), None, out) };
            check("C_OpenSession", rv)?;
            if flags & CKF_SERIAL_SESSION == 0 && !*null_out {
                ensure_eq!(rv, CKR_SESSION_PARALLEL_NOT_SUPPORTED);
            }
            if *null_out {
                ensure_ne!(rv, CKR_OK, "C_OpenSession with a NULL handle pointer");
            }
            if rv == CKR_OK {
                ensure_ne!(h, 0);
                model.open.push(h);
            }
        }
        Op::CloseSession(s) => {
            let (h, bad) = model.session(s);
            let rv = unsafe { f.C_CloseSession.unwrap()(h) };
            no_session("C_CloseSession", rv, bad)?;
            if rv == CKR_OK {
                model.close(h);
            }
        }
        Op::CloseAllSessions(slot) => {
            let rv = unsafe { f.C_CloseAllSessions.unwrap()(*slot) };
            check("C_CloseAllSessions", rv)?;
            if *slot != SLOT {
                ensure_eq!(rv, CKR_SLOT_ID_INVALID);
            } else if rv == CKR_OK {
                for h in std::mem::take(&mut model.open) {
                    model.closed.push(h);
                }
            }
        }
        Op::GetSessionInfo { session, null } => {
            let (h, bad) = model.session(session);
            // SAFETY: CK_SESSION_INFO is plain data; all zeroes is a valid value.
            let mut info: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
            let p = if *null {
                ptr::null_mut()
            } else {
                &raw mut info
            };
            let rv = unsafe { f.C_GetSessionInfo.unwrap()(h, p) };
            no_session("C_GetSessionInfo", rv, bad)?;
            if *null {
                ensure_ne!(rv, CKR_OK);
            } else if rv == CKR_OK {
                ensure_eq!(info.slotID, SLOT);
                ensure!(info.flags & CKF_SERIAL_SESSION != 0);
            }
        }
        Op::GetSlotInfo { slot, null } => {
            // SAFETY: plain data.
            let mut info: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
            let p = if *null {
                ptr::null_mut()
            } else {
                &raw mut info
            };
            let rv = unsafe { f.C_GetSlotInfo.unwrap()(*slot, p) };
            check("C_GetSlotInfo", rv)?;
            if *null || *slot != SLOT {
                ensure_ne!(rv, CKR_OK);
            }
        }
        Op::GetTokenInfo { slot, null } => {
            // SAFETY: plain data.
            let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
            let p = if *null {
                ptr::null_mut()
            } else {
                &raw mut info
            };
            let rv = unsafe { f.C_GetTokenInfo.unwrap()(*slot, p) };
            check("C_GetTokenInfo", rv)?;
            if *null || *slot != SLOT {
                ensure_ne!(rv, CKR_OK);
            }
        }
        Op::Login { session, user, pin } => {
            let (h, bad) = model.session(session);
            let mut wrong = *b"654321";
            let mut right = PIN.as_bytes().to_vec();
            let (p, len) = match pin {
                Pin::Right => (right.as_mut_ptr(), right.len()),
                Pin::Wrong => (wrong.as_mut_ptr(), wrong.len()),
                Pin::NullWithLen => (ptr::null_mut(), 6),
            };
            let rv = unsafe { f.C_Login.unwrap()(h, *user, p, len as CK_ULONG) };
            no_session("C_Login", rv, bad)?;
            if matches!(pin, Pin::NullWithLen)
                || !matches!(*user, CKU_USER | CKU_SO | CKU_CONTEXT_SPECIFIC)
            {
                ensure_ne!(rv, CKR_OK);
            }
        }
        Op::Logout(s) => {
            let (h, bad) = model.session(s);
            let rv = unsafe { f.C_Logout.unwrap()(h) };
            no_session("C_Logout", rv, bad)?;
        }
        Op::FindObjectsInit { session, template } => {
            let (h, bad) = model.session(session);
            let mut class: CK_ULONG = match template {
                Template::Class(c) => *c,
                _ => 0,
            };
            let mut id = KEY_ID.to_vec();
            let mut attr = CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: ptr::null_mut(),
                ulValueLen: 0,
            };
            let (p, count): (*mut CK_ATTRIBUTE, CK_ULONG) = match template {
                Template::Empty => (ptr::null_mut(), 0),
                Template::NullWithCount(n) => (ptr::null_mut(), *n),
                Template::Class(_) => {
                    attr.pValue = (&raw mut class).cast::<c_void>();
                    attr.ulValueLen = size_of::<CK_ULONG>() as CK_ULONG;
                    (&raw mut attr, 1)
                }
                Template::KeyId => {
                    attr.type_ = CKA_ID;
                    attr.pValue = id.as_mut_ptr().cast::<c_void>();
                    attr.ulValueLen = id.len() as CK_ULONG;
                    (&raw mut attr, 1)
                }
                Template::NullValue(kind) => {
                    attr.type_ = *kind;
                    attr.ulValueLen = 8;
                    (&raw mut attr, 1)
                }
            };
            let rv = unsafe { f.C_FindObjectsInit.unwrap()(h, p, count) };
            no_session("C_FindObjectsInit", rv, bad)?;

            if matches!(
                template,
                Template::NullWithCount(_) | Template::NullValue(_)
            ) {
                ensure_ne!(rv, CKR_OK);
            }
        }
        Op::FindObjects {
            session,
            max,
            null_out,
            null_count,
        } => {
            let (h, bad) = model.session(session);
            let mut found: Vec<CK_OBJECT_HANDLE> = vec![0; *max as usize];
            let mut count: CK_ULONG = CK_ULONG::MAX;
            let p = if *null_out {
                ptr::null_mut()
            } else {
                found.as_mut_ptr()
            };
            let c = if *null_count {
                ptr::null_mut()
            } else {
                &raw mut count
            };
            let rv = unsafe { f.C_FindObjects.unwrap()(h, p, *max, c) };
            no_session("C_FindObjects", rv, bad)?;
            if *null_count || (*null_out && *max > 0) {
                ensure_ne!(rv, CKR_OK);
            }
            if rv == CKR_OK {
                ensure!(
                    count <= *max,
                    "C_FindObjects returned {count} of at most {max}"
                );
                model.found.extend_from_slice(&found[..count as usize]);
            }
        }
        Op::FindObjectsFinal(s) => {
            let (h, bad) = model.session(s);
            let rv = unsafe { f.C_FindObjectsFinal.unwrap()(h) };
            no_session("C_FindObjectsFinal", rv, bad)?;
        }
        Op::GetAttributeValue {
            session,
            object,
            kind,
            out,
        } => {
            let (h, bad) = model.session(session);
            let o = model.object(object);
            let (mut buf, null, len) = buffer(out);
            let mut attr = CK_ATTRIBUTE {
                type_: *kind,
                pValue: ptr_of(&mut buf, null).cast::<c_void>(),
                ulValueLen: len,
            };
            let rv = unsafe { f.C_GetAttributeValue.unwrap()(h, o, &raw mut attr, 1) };
            no_session("C_GetAttributeValue", rv, bad)?;
            match rv {
                // v2.40 §5.7: a value too large for pValue gets CK_UNAVAILABLE_INFORMATION.
                CKR_BUFFER_TOO_SMALL | CKR_ATTRIBUTE_SENSITIVE | CKR_ATTRIBUTE_TYPE_INVALID => {
                    ensure_eq!(attr.ulValueLen, CK_UNAVAILABLE_INFORMATION, "{:#x}", rv);
                }
                CKR_OK => {
                    ensure!(attr.ulValueLen != CK_UNAVAILABLE_INFORMATION);
                    if !null {
                        ensure!(attr.ulValueLen <= len);
                    }
                }
                _ => {}
            }
            if rv == CKR_BUFFER_TOO_SMALL {
                ensure!(!null, "a length query cannot be too small");
            }
        }
        Op::SignInit {
            session,
            mechanism,
            null_params,
            key,
        }
        | Op::DecryptInit {
            session,
            mechanism,
            null_params,
            key,
        } => {
            let (call, name) = match op {
                Op::SignInit { .. } => (f.C_SignInit, "C_SignInit"),
                _ => (f.C_DecryptInit, "C_DecryptInit"),
            };
            let (h, bad) = model.session(session);
            let rv = init(
                call.unwrap(),
                h,
                *mechanism,
                *null_params,
                model.object(key),
            );
            no_session(name, rv, bad)?;
        }
        Op::Sign { session, len, out } | Op::Decrypt { session, len, out } => {
            let (call, name) = match op {
                Op::Sign { .. } => (f.C_Sign, "C_Sign"),
                _ => (f.C_Decrypt, "C_Decrypt"),
            };
            let (h, bad) = model.session(session);
            let (rv, _) = single_part(call.unwrap(), name, h, &vec![0x5a; *len], out)?;
            no_session(name, rv, bad)?;
        }
        Op::SignWith { session, outs } => {
            let (h, bad) = model.session(session);
            let rv = init(
                f.C_SignInit.unwrap(),
                h,
                CKM_SHA256_RSA_PKCS,
                false,
                model.private,
            );
            no_session("C_SignInit", rv, bad)?;
            if rv == CKR_OK {
                let data = b"signed by a careless caller";
                active(f.C_Sign.unwrap(), "C_Sign", h, data, outs, None)?;
            }
        }
        Op::DecryptWith { session, outs } => {
            let (h, bad) = model.session(session);
            let rv = init(
                f.C_DecryptInit.unwrap(),
                h,
                CKM_RSA_PKCS,
                false,
                model.private,
            );
            no_session("C_DecryptInit", rv, bad)?;
            if rv == CKR_OK {
                let data = model.ciphertext.clone();
                active(
                    f.C_Decrypt.unwrap(),
                    "C_Decrypt",
                    h,
                    &data,
                    outs,
                    Some(PLAINTEXT),
                )?;
            }
        }
        Op::GenerateRandom { session, len, null } => {
            let (h, bad) = model.session(session);
            let mut buf = vec![0u8; *len as usize];
            let rv = unsafe { f.C_GenerateRandom.unwrap()(h, ptr_of(&mut buf, *null), *len) };
            no_session("C_GenerateRandom", rv, bad)?;
            if *null && *len > 0 {
                ensure_ne!(rv, CKR_OK);
            }
        }
    }
    Ok(())
}

pub type InitFn =
    unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE) -> CK_RV;
pub type PartFn =
    unsafe extern "C" fn(CK_SESSION_HANDLE, *mut u8, CK_ULONG, *mut u8, *mut CK_ULONG) -> CK_RV;

/// `C_SignInit` or `C_DecryptInit`, with a NULL mechanism parameter (and a nonzero length)
/// if asked.
pub fn init(
    f: InitFn,
    h: CK_SESSION_HANDLE,
    kind: CK_MECHANISM_TYPE,
    null_params: bool,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    let mut mech = CK_MECHANISM {
        mechanism: kind,
        pParameter: ptr::null_mut(),
        ulParameterLen: if null_params { 40 } else { 0 },
    };
    // SAFETY: the mechanism is a live local; its parameter is NULL (with a length, on
    // purpose, when `null_params`).
    unsafe { f(h, &raw mut mech, key) }
}

/// `C_Sign` or `C_Decrypt` of `len` bytes into `out`; checks the length rule: a NULL
/// buffer gets the length, a short one CKR_BUFFER_TOO_SMALL and the length needed.
pub fn single_part(
    f: PartFn,
    name: &str,
    h: CK_SESSION_HANDLE,
    data: &[u8],
    out: &Out,
) -> Result<(CK_RV, Vec<u8>), Failure> {
    let mut data = data.to_vec();
    let len = data.len();
    let (mut buf, null, given) = buffer(out);
    let mut out_len = given;
    // SAFETY: `data` has `len` bytes, `buf` has `given` (or is passed as NULL).
    let rv = unsafe {
        f(
            h,
            data.as_mut_ptr(),
            len as CK_ULONG,
            ptr_of(&mut buf, null),
            &raw mut out_len,
        )
    };
    check(name, rv)?;
    if rv == CKR_BUFFER_TOO_SMALL {
        ensure!(!null, "{name}: a length query cannot be too small");
        ensure!(
            out_len > given,
            "{name}: too small, yet {out_len} ≤ {given}"
        );
    }
    if rv == CKR_OK {
        ensure!(out_len <= 1024 && (null || out_len <= given));
        buf.truncate(out_len as usize);
        if null {
            buf = vec![0; out_len as usize];
        }
    }
    Ok((rv, buf))
}

/// Single-part calls on an operation that `C_SignInit` or `C_DecryptInit` just started:
/// a length query or a short buffer keeps it, and once one call has told the length, a
/// short buffer must get CKR_BUFFER_TOO_SMALL and a large one the result (`expect`, if
/// given), which ends the operation.
pub fn active(
    f: PartFn,
    name: &str,
    h: CK_SESSION_HANDLE,
    data: &[u8],
    outs: &[Out],
    expect: Option<&[u8]>,
) -> Result<(), Failure> {
    // What another thread may do meanwhile: log out, close the session.
    let interfered = [
        CKR_USER_NOT_LOGGED_IN,
        CKR_SESSION_HANDLE_INVALID,
        CKR_SESSION_CLOSED,
        CKR_OPERATION_NOT_INITIALIZED,
    ];
    let mut known: Option<usize> = None;
    let mut done = false;
    for out in outs {
        let (rv, result) = single_part(f, name, h, data, out)?;
        if done {
            ensure_ne!(rv, CKR_OK, "{} after the operation ended", name);
            continue;
        }
        if let (Some(len), Out::Short(n)) = (known, out)
            && *n < len
        {
            ensure!(
                rv == CKR_BUFFER_TOO_SMALL || interfered.contains(&rv),
                "{} into {} of {} bytes returned {:#x}",
                name,
                n,
                len,
                rv
            );
        }
        if rv == CKR_OK {
            if matches!(out, Out::Null) {
                known = Some(result.len());
            } else {
                if let Some(expect) = expect {
                    ensure_eq!(&result[..], expect);
                }
                done = true;
            }
        } else if rv != CKR_BUFFER_TOO_SMALL {
            // A failure ends the operation.
            done = true;
        }
    }
    if !done {
        // End the operation the way an application would: with a buffer large enough.
        single_part(f, name, h, data, &Out::Large)?;
    }
    Ok(())
}
