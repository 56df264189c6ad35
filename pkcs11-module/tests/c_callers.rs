//! The built `libittc_pkcs11.so` called the way a careless C application calls it: random
//! sequences of `C_` calls with random arguments (NULL pointers, short buffers, stale and
//! foreign handles, calls in the wrong session state), from one thread and from several at
//! once, and across a `fork`, against a real 2-of-3 cluster. Nothing may crash or hang,
//! and every return code must be one that PKCS#11 v2.40 lists for the function that
//! returned it ([`allowed`]).
//!
//! The calls go through the module's own `CK_FUNCTION_LIST`, not the `cryptoki` crate,
//! whose safe API cannot pass a NULL pointer or a short buffer. Calling C functions is
//! `unsafe`; this test file is the one place outside the module's `ffi` shell that does it,
//! and each block says why its pointers are valid (or deliberately NULL).

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Calling the module's C functions through its function list cannot be done safely.
#![allow(unsafe_code)]

mod support;

use std::ffi::c_void;
use std::ptr;
use std::time::{Duration, Instant};

use cryptoki::object::ObjectClass;
use cryptoki_sys::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::{Fixture, KEY_ID, PIN, Setup, find_one, isolated, module_path};

/// The module's slot.
const SLOT: CK_SLOT_ID = 1;
/// How long each property may keep generating cases; a case under way finishes.
const BUDGET: Duration = Duration::from_secs(60);

/// The codes every function may return (PKCS#11 v2.40 §5.1.1, "universal").
const UNIVERSAL: &[CK_RV] = &[
    CKR_OK,
    CKR_GENERAL_ERROR,
    CKR_HOST_MEMORY,
    CKR_FUNCTION_FAILED,
    CKR_CRYPTOKI_NOT_INITIALIZED,
];
/// The codes every function that takes a session may return (§5.1.2, §5.1.3).
const SESSION: &[CK_RV] = &[
    CKR_SESSION_HANDLE_INVALID,
    CKR_SESSION_CLOSED,
    CKR_DEVICE_ERROR,
    CKR_DEVICE_MEMORY,
    CKR_DEVICE_REMOVED,
];

/// The codes PKCS#11 v2.40 lists under "Return values" for `function` (§5),
/// without those of [`UNIVERSAL`] and, for functions that take a session, [`SESSION`].
fn allowed(function: &str) -> (bool, &'static [CK_RV]) {
    match function {
        "C_GetSlotInfo" => (
            false,
            &[CKR_ARGUMENTS_BAD, CKR_DEVICE_ERROR, CKR_SLOT_ID_INVALID],
        ),
        "C_GetTokenInfo" => (
            false,
            &[
                CKR_ARGUMENTS_BAD,
                CKR_DEVICE_ERROR,
                CKR_DEVICE_MEMORY,
                CKR_DEVICE_REMOVED,
                CKR_SLOT_ID_INVALID,
                CKR_TOKEN_NOT_PRESENT,
                CKR_TOKEN_NOT_RECOGNIZED,
            ],
        ),
        "C_OpenSession" => (
            false,
            &[
                CKR_ARGUMENTS_BAD,
                CKR_DEVICE_ERROR,
                CKR_DEVICE_MEMORY,
                CKR_DEVICE_REMOVED,
                CKR_SESSION_COUNT,
                CKR_SESSION_PARALLEL_NOT_SUPPORTED,
                CKR_SESSION_READ_WRITE_SO_EXISTS,
                CKR_SLOT_ID_INVALID,
                CKR_TOKEN_NOT_PRESENT,
                CKR_TOKEN_NOT_RECOGNIZED,
                CKR_TOKEN_WRITE_PROTECTED,
            ],
        ),
        "C_CloseSession" => (true, &[]),
        "C_CloseAllSessions" => (
            false,
            &[
                CKR_DEVICE_REMOVED,
                CKR_SLOT_ID_INVALID,
                CKR_TOKEN_NOT_PRESENT,
            ],
        ),
        "C_GetSessionInfo" => (true, &[CKR_ARGUMENTS_BAD]),
        "C_Login" => (
            true,
            &[
                CKR_ARGUMENTS_BAD,
                CKR_FUNCTION_CANCELED,
                CKR_OPERATION_NOT_INITIALIZED,
                CKR_PIN_INCORRECT,
                CKR_PIN_LOCKED,
                CKR_SESSION_READ_ONLY_EXISTS,
                CKR_USER_ALREADY_LOGGED_IN,
                CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
                CKR_USER_PIN_NOT_INITIALIZED,
                CKR_USER_TOO_MANY_TYPES,
                CKR_USER_TYPE_INVALID,
            ],
        ),
        "C_Logout" => (true, &[CKR_USER_NOT_LOGGED_IN]),
        "C_GetAttributeValue" => (
            true,
            &[
                CKR_ARGUMENTS_BAD,
                CKR_ATTRIBUTE_SENSITIVE,
                CKR_ATTRIBUTE_TYPE_INVALID,
                CKR_BUFFER_TOO_SMALL,
                CKR_OBJECT_HANDLE_INVALID,
            ],
        ),
        "C_FindObjectsInit" => (
            true,
            &[
                CKR_ARGUMENTS_BAD,
                CKR_ATTRIBUTE_TYPE_INVALID,
                CKR_ATTRIBUTE_VALUE_INVALID,
                CKR_OPERATION_ACTIVE,
                CKR_PIN_EXPIRED,
            ],
        ),
        "C_FindObjects" => (true, &[CKR_ARGUMENTS_BAD, CKR_OPERATION_NOT_INITIALIZED]),
        "C_FindObjectsFinal" => (true, &[CKR_OPERATION_NOT_INITIALIZED]),
        "C_SignInit" | "C_DecryptInit" => (
            true,
            &[
                CKR_ARGUMENTS_BAD,
                CKR_FUNCTION_CANCELED,
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                CKR_KEY_HANDLE_INVALID,
                CKR_KEY_SIZE_RANGE,
                CKR_KEY_TYPE_INCONSISTENT,
                CKR_MECHANISM_INVALID,
                CKR_MECHANISM_PARAM_INVALID,
                CKR_OPERATION_ACTIVE,
                CKR_PIN_EXPIRED,
                CKR_USER_NOT_LOGGED_IN,
            ],
        ),
        "C_Sign" => (
            true,
            &[
                CKR_ARGUMENTS_BAD,
                CKR_BUFFER_TOO_SMALL,
                CKR_DATA_INVALID,
                CKR_DATA_LEN_RANGE,
                CKR_FUNCTION_CANCELED,
                CKR_FUNCTION_REJECTED,
                CKR_OPERATION_NOT_INITIALIZED,
                CKR_USER_NOT_LOGGED_IN,
            ],
        ),
        "C_Decrypt" => (
            true,
            &[
                CKR_ARGUMENTS_BAD,
                CKR_BUFFER_TOO_SMALL,
                CKR_ENCRYPTED_DATA_INVALID,
                CKR_ENCRYPTED_DATA_LEN_RANGE,
                CKR_FUNCTION_CANCELED,
                CKR_OPERATION_NOT_INITIALIZED,
                CKR_USER_NOT_LOGGED_IN,
            ],
        ),
        "C_GenerateRandom" => (
            true,
            &[
                CKR_ARGUMENTS_BAD,
                CKR_FUNCTION_CANCELED,
                CKR_OPERATION_ACTIVE,
                CKR_RANDOM_NO_RNG,
                CKR_USER_NOT_LOGGED_IN,
            ],
        ),
        other => panic!("no return-value table for {other}"),
    }
}

/// Fails unless `rv` is one that `function` may return.
fn check(function: &str, rv: CK_RV) -> Result<(), TestCaseError> {
    let (session, listed) = allowed(function);
    let ok = UNIVERSAL.contains(&rv) || listed.contains(&rv) || (session && SESSION.contains(&rv));
    prop_assert!(
        ok,
        "{function} returned {rv:#x}, which PKCS#11 does not allow"
    );
    Ok(())
}

/// A session handle as an application might pass one.
#[derive(Clone, Debug)]
enum Handle {
    /// The i-th (mod count) session this sequence has open.
    Open(usize),
    /// The i-th (mod count) session this sequence has closed.
    Stale(usize),
    /// Any number.
    Random(CK_ULONG),
}

/// An object handle as an application might pass one.
#[derive(Clone, Debug)]
enum Object {
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
enum Out {
    /// NULL: a length query.
    Null,
    /// Fewer bytes than any result of the call needs.
    Short(usize),
    /// Enough.
    Large,
}

/// A search template.
#[derive(Clone, Debug)]
enum Template {
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
enum Pin {
    Right,
    Wrong,
    /// NULL with a nonzero length.
    NullWithLen,
}

/// One C call.
#[derive(Clone, Debug)]
enum Op {
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

fn handle() -> impl Strategy<Value = Handle> {
    prop_oneof![
        6 => any::<usize>().prop_map(Handle::Open),
        1 => any::<usize>().prop_map(Handle::Stale),
        1 => prop_oneof![Just(0), 0..64u64, any::<u64>()].prop_map(Handle::Random),
    ]
}

fn object() -> impl Strategy<Value = Object> {
    prop_oneof![
        3 => Just(Object::Private),
        2 => Just(Object::Public),
        2 => any::<usize>().prop_map(Object::Found),
        1 => prop_oneof![Just(0), 0..64u64, any::<u64>()].prop_map(Object::Random),
    ]
}

fn out() -> impl Strategy<Value = Out> {
    prop_oneof![
        1 => Just(Out::Null),
        1 => (0..8usize).prop_map(Out::Short),
        2 => Just(Out::Large),
    ]
}

fn slot() -> impl Strategy<Value = CK_SLOT_ID> {
    prop_oneof![4 => Just(SLOT), 1 => any::<u64>()]
}

fn attribute() -> impl Strategy<Value = CK_ATTRIBUTE_TYPE> {
    prop_oneof![
        Just(CKA_CLASS),
        Just(CKA_LABEL),
        Just(CKA_ID),
        Just(CKA_MODULUS),
        Just(CKA_PUBLIC_EXPONENT),
        Just(CKA_PRIVATE_EXPONENT),
        Just(CKA_SENSITIVE),
        Just(CKA_VALUE),
        any::<u64>(),
    ]
}

fn mechanism() -> impl Strategy<Value = CK_MECHANISM_TYPE> {
    prop_oneof![
        Just(CKM_RSA_PKCS),
        Just(CKM_SHA256_RSA_PKCS),
        Just(CKM_RSA_PKCS_PSS),
        Just(CKM_SHA256_RSA_PKCS_PSS),
        Just(CKM_RSA_PKCS_OAEP),
        Just(CKM_RSA_X_509),
        Just(CKM_AES_CBC),
        any::<u64>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (
            prop_oneof![
                Just(CKF_SERIAL_SESSION | CKF_RW_SESSION),
                Just(CKF_SERIAL_SESSION),
                Just(CKF_RW_SESSION),
                Just(0),
                any::<u64>(),
            ],
            prop::bool::weighted(0.1),
        )
            .prop_map(|(flags, null_out)| Op::OpenSession { flags, null_out }),
        1 => handle().prop_map(Op::CloseSession),
        1 => prop_oneof![4 => Just(SLOT + 1000), 1 => Just(SLOT)].prop_map(Op::CloseAllSessions),
        1 => (handle(), any::<bool>())
            .prop_map(|(session, null)| Op::GetSessionInfo { session, null }),
        1 => (slot(), any::<bool>()).prop_map(|(slot, null)| Op::GetSlotInfo { slot, null }),
        1 => (slot(), any::<bool>()).prop_map(|(slot, null)| Op::GetTokenInfo { slot, null }),
        2 => (
            handle(),
            prop_oneof![
                4 => Just(CKU_USER),
                1 => Just(CKU_SO),
                1 => Just(CKU_CONTEXT_SPECIFIC),
                1 => Just(7),
            ],
            prop_oneof![
                4 => Just(Pin::Right),
                1 => Just(Pin::Wrong),
                1 => Just(Pin::NullWithLen),
            ],
        )
            .prop_map(|(session, user, pin)| Op::Login { session, user, pin }),
        1 => handle().prop_map(Op::Logout),
        2 => (
            handle(),
            prop_oneof![
                Just(Template::Empty),
                (1..4u64).prop_map(Template::NullWithCount),
                prop_oneof![Just(CKO_PRIVATE_KEY), Just(CKO_PUBLIC_KEY), any::<u64>()]
                    .prop_map(Template::Class),
                Just(Template::KeyId),
                attribute().prop_map(Template::NullValue),
            ],
        )
            .prop_map(|(session, template)| Op::FindObjectsInit { session, template }),
        2 => (handle(), 0..4u64, prop::bool::weighted(0.2), prop::bool::weighted(0.2)).prop_map(
            |(session, max, null_out, null_count)| Op::FindObjects {
                session,
                max,
                null_out,
                null_count,
            }
        ),
        1 => handle().prop_map(Op::FindObjectsFinal),
        3 => (handle(), object(), attribute(), out())
            .prop_map(|(session, object, kind, out)| Op::GetAttributeValue {
                session,
                object,
                kind,
                out,
            }),
        2 => (handle(), mechanism(), prop::bool::weighted(0.3), object()).prop_map(
            |(session, mechanism, null_params, key)| Op::SignInit {
                session,
                mechanism,
                null_params,
                key,
            }
        ),
        2 => (handle(), prop_oneof![Just(0usize), Just(32), 0..300usize], out())
            .prop_map(|(session, len, out)| Op::Sign { session, len, out }),
        1 => (handle(), mechanism(), prop::bool::weighted(0.3), object()).prop_map(
            |(session, mechanism, null_params, key)| Op::DecryptInit {
                session,
                mechanism,
                null_params,
                key,
            }
        ),
        1 => (handle(), prop_oneof![Just(256usize), 0..300usize], out())
            .prop_map(|(session, len, out)| Op::Decrypt { session, len, out }),
        3 => (handle(), prop::collection::vec(out(), 1..4))
            .prop_map(|(session, outs)| Op::SignWith { session, outs }),
        2 => (handle(), prop::collection::vec(out(), 1..4))
            .prop_map(|(session, outs)| Op::DecryptWith { session, outs }),
        1 => (handle(), 0..64u64, prop::bool::weighted(0.2))
            .prop_map(|(session, len, null)| Op::GenerateRandom { session, len, null }),
    ]
}

/// The module, loaded a second time (the fixture's `cryptoki` context holds the first
/// load, which initialised it): the same library, so the same token.
struct Module {
    _library: libloading::Library,
    list: &'static CK_FUNCTION_LIST,
}

impl Module {
    fn load() -> Self {
        // SAFETY: loading the module runs no initialiser that needs anything from us.
        let library = unsafe { libloading::Library::new(module_path()) }.unwrap();
        let mut list: CK_FUNCTION_LIST_PTR = ptr::null_mut();
        // SAFETY: the symbol has the C_GetFunctionList signature; `list` is writable.
        let rv = unsafe {
            let get: libloading::Symbol<
                '_,
                unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV,
            > = library.get(b"C_GetFunctionList\0").unwrap();
            get(&mut list)
        };
        assert_eq!(rv, CKR_OK);
        // SAFETY: the module's function list is a static table; the library stays loaded
        // for as long as `Module` lives (and the fixture keeps it loaded besides).
        let list = unsafe { &*list };
        Self {
            _library: library,
            list,
        }
    }
}

/// What every sequence may use.
#[derive(Clone)]
struct Keys {
    private: CK_OBJECT_HANDLE,
    public: CK_OBJECT_HANDLE,
    /// [`PLAINTEXT`] encrypted to the key with PKCS#1 v1.5 padding.
    ciphertext: Vec<u8>,
}

/// What [`Keys::ciphertext`] decrypts to.
const PLAINTEXT: &[u8] = b"a secret for the threshold to open";

/// What a sequence knows about the handles it made.
struct Model {
    open: Vec<CK_SESSION_HANDLE>,
    closed: Vec<CK_SESSION_HANDLE>,
    found: Vec<CK_OBJECT_HANDLE>,
    private: CK_OBJECT_HANDLE,
    public: CK_OBJECT_HANDLE,
    ciphertext: Vec<u8>,
    /// One thread only: a handle the model knows to be closed must be refused.
    strict: bool,
}

impl Model {
    fn new(keys: &Keys, strict: bool) -> Self {
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
fn buffer(out: &Out) -> (Vec<u8>, bool, CK_ULONG) {
    match out {
        Out::Null => (Vec::new(), true, 0),
        Out::Short(n) => (vec![0; *n], false, *n as CK_ULONG),
        Out::Large => (vec![0; 1024], false, 1024),
    }
}

fn ptr_of(buf: &mut [u8], null: bool) -> *mut u8 {
    if null {
        ptr::null_mut()
    } else {
        buf.as_mut_ptr()
    }
}

/// Runs one call; checks its return code and what it wrote.
fn run(m: &Module, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let f = m.list;
    let no_session = |name: &str, rv: CK_RV, bad: bool| -> Result<(), TestCaseError> {
        check(name, rv)?;
        if bad {
            prop_assert!(
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
                prop_assert_eq!(rv, CKR_SESSION_PARALLEL_NOT_SUPPORTED);
            }
            if *null_out {
                prop_assert_ne!(rv, CKR_OK, "C_OpenSession with a NULL handle pointer");
            }
            if rv == CKR_OK {
                prop_assert_ne!(h, 0);
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
                prop_assert_eq!(rv, CKR_SLOT_ID_INVALID);
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
                prop_assert_ne!(rv, CKR_OK);
            } else if rv == CKR_OK {
                prop_assert_eq!(info.slotID, SLOT);
                prop_assert!(info.flags & CKF_SERIAL_SESSION != 0);
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
                prop_assert_ne!(rv, CKR_OK);
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
                prop_assert_ne!(rv, CKR_OK);
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
                prop_assert_ne!(rv, CKR_OK);
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
                prop_assert_ne!(rv, CKR_OK);
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
                prop_assert_ne!(rv, CKR_OK);
            }
            if rv == CKR_OK {
                prop_assert!(
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
                    prop_assert_eq!(attr.ulValueLen, CK_UNAVAILABLE_INFORMATION, "{:#x}", rv);
                }
                CKR_OK => {
                    prop_assert!(attr.ulValueLen != CK_UNAVAILABLE_INFORMATION);
                    if !null {
                        prop_assert!(attr.ulValueLen <= len);
                    }
                }
                _ => {}
            }
            if rv == CKR_BUFFER_TOO_SMALL {
                prop_assert!(!null, "a length query cannot be too small");
            }
        }
        Op::SignInit {
            session,
            mechanism,
            null_params,
            key,
        } => {
            let (h, bad) = model.session(session);
            let rv = init(
                f.C_SignInit.unwrap(),
                h,
                *mechanism,
                *null_params,
                model.object(key),
            );
            no_session("C_SignInit", rv, bad)?;
        }
        Op::DecryptInit {
            session,
            mechanism,
            null_params,
            key,
        } => {
            let (h, bad) = model.session(session);
            let rv = init(
                f.C_DecryptInit.unwrap(),
                h,
                *mechanism,
                *null_params,
                model.object(key),
            );
            no_session("C_DecryptInit", rv, bad)?;
        }
        Op::Sign { session, len, out } => {
            let (h, bad) = model.session(session);
            let (rv, _) = single_part(f.C_Sign.unwrap(), "C_Sign", h, &vec![0x5a; *len], out)?;
            no_session("C_Sign", rv, bad)?;
        }
        Op::Decrypt { session, len, out } => {
            let (h, bad) = model.session(session);
            let (rv, _) =
                single_part(f.C_Decrypt.unwrap(), "C_Decrypt", h, &vec![0x5a; *len], out)?;
            no_session("C_Decrypt", rv, bad)?;
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
                prop_assert_ne!(rv, CKR_OK);
            }
        }
    }
    Ok(())
}

type InitFn = unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE) -> CK_RV;
type PartFn =
    unsafe extern "C" fn(CK_SESSION_HANDLE, *mut u8, CK_ULONG, *mut u8, *mut CK_ULONG) -> CK_RV;

/// `C_SignInit` or `C_DecryptInit`, with a NULL mechanism parameter (and a nonzero length)
/// if asked.
fn init(
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
fn single_part(
    f: PartFn,
    name: &str,
    h: CK_SESSION_HANDLE,
    data: &[u8],
    out: &Out,
) -> Result<(CK_RV, Vec<u8>), TestCaseError> {
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
        prop_assert!(!null, "{name}: a length query cannot be too small");
        prop_assert!(
            out_len > given,
            "{name}: too small, yet {out_len} ≤ {given}"
        );
    }
    if rv == CKR_OK {
        prop_assert!(out_len <= 1024 && (null || out_len <= given));
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
fn active(
    f: PartFn,
    name: &str,
    h: CK_SESSION_HANDLE,
    data: &[u8],
    outs: &[Out],
    expect: Option<&[u8]>,
) -> Result<(), TestCaseError> {
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
            prop_assert_ne!(rv, CKR_OK, "{} after the operation ended", name);
            continue;
        }
        if let (Some(len), Out::Short(n)) = (known, out)
            && *n < len
        {
            prop_assert!(
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
                    prop_assert_eq!(&result[..], expect);
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

/// The key handles, found through `cryptoki` in a session of its own, and a PKCS#1 v1.5
/// ciphertext of [`PLAINTEXT`] made by OpenSSL.
fn keys(fx: &Fixture) -> Keys {
    let session = fx.user_session();
    let private = find_one(&session, ObjectClass::PRIVATE_KEY).handle();
    let public = find_one(&session, ObjectClass::PUBLIC_KEY).handle();
    let public_key = fx.public();
    let mut enc = openssl::encrypt::Encrypter::new(&public_key).unwrap();
    enc.set_rsa_padding(openssl::rsa::Padding::PKCS1).unwrap();
    let mut ciphertext = vec![0; enc.encrypt_len(PLAINTEXT).unwrap()];
    let n = enc.encrypt(PLAINTEXT, &mut ciphertext).unwrap();
    ciphertext.truncate(n);
    Keys {
        private,
        public,
        ciphertext,
    }
}

/// A sequence of up to `max` calls, and whether it starts logged in.
fn sequence(max: usize) -> impl Strategy<Value = (bool, Vec<Op>)> {
    (any::<bool>(), prop::collection::vec(op(), 1..max))
}

/// Opens a read-write session (and logs the user in, if `login`), then makes the calls.
fn play(m: &Module, model: &mut Model, login: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let open = Op::OpenSession {
        flags: CKF_SERIAL_SESSION | CKF_RW_SESSION,
        null_out: false,
    };
    run(m, model, &open)?;
    if login {
        let login = Op::Login {
            session: Handle::Open(0),
            user: CKU_USER,
            pin: Pin::Right,
        };
        run(m, model, &login)?;
    }
    for op in ops {
        run(m, model, op)?;
    }
    Ok(())
}

/// 2-of-3, and so many wrong PINs allowed that the random ones never lock the token: a
/// locked PIN would leave the later sequences little to do.
fn setup() -> Setup {
    let mut setup = Setup::new(2, 3);
    setup.options.max_pin_failures = 1_000_000;
    setup
}

/// Starts each case from no sessions (and so nobody logged in).
fn reset(m: &Module) {
    // SAFETY: no pointers.
    let rv = unsafe { m.list.C_CloseAllSessions.unwrap()(SLOT) };
    assert_eq!(rv, CKR_OK);
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Shrinking re-runs sequences against the cluster; a failing case is shown whole.
        max_shrink_iters: 32,
        failure_persistence: None,
        ..Config::default()
    }
}

#[test]
fn random_c_call_sequences_get_only_allowed_codes() {
    isolated(
        "random_c_call_sequences_get_only_allowed_codes",
        random_c_call_sequences_get_only_allowed_codes_body,
    );
}

fn random_c_call_sequences_get_only_allowed_codes_body() {
    let fx = Fixture::new(&setup());
    let keys = keys(&fx);
    let m = Module::load();
    let start = Instant::now();
    let mut runner = TestRunner::new(config(256));
    let ran = std::cell::Cell::new(0usize);
    runner
        .run(&sequence(32), |(login, ops)| {
            if start.elapsed() > BUDGET {
                return Ok(());
            }
            ran.set(ran.get() + 1);
            reset(&m);
            let mut model = Model::new(&keys, true);
            play(&m, &mut model, login, &ops)
        })
        .unwrap();
    assert!(
        ran.get() >= 16,
        "only {} sequences within {BUDGET:?}",
        ran.get()
    );
    // The token still works after all that.
    reset(&m);
    let session = fx.user_session();
    find_one(&session, ObjectClass::PRIVATE_KEY);
}

#[test]
fn random_c_call_sequences_from_four_threads_get_only_allowed_codes() {
    isolated(
        "random_c_call_sequences_from_four_threads_get_only_allowed_codes",
        random_c_call_sequences_from_four_threads_get_only_allowed_codes_body,
    );
}

fn random_c_call_sequences_from_four_threads_get_only_allowed_codes_body() {
    let fx = Fixture::new(&setup());
    let keys = keys(&fx);
    let m = Module::load();
    let start = Instant::now();
    let mut runner = TestRunner::new(config(64));
    let ran = std::cell::Cell::new(0usize);
    let sequences = prop::collection::vec(sequence(24), 4);
    runner
        .run(&sequences, |threads| {
            if start.elapsed() > BUDGET {
                return Ok(());
            }
            ran.set(ran.get() + 1);
            reset(&m);
            std::thread::scope(|scope| {
                let running: Vec<_> = threads
                    .iter()
                    .map(|(login, ops)| {
                        let (m, keys) = (&m, &keys);
                        scope.spawn(move || {
                            let mut model = Model::new(keys, false);
                            play(m, &mut model, *login, ops)
                        })
                    })
                    .collect();
                running.into_iter().try_for_each(|t| t.join().unwrap())
            })
        })
        .unwrap();
    assert!(ran.get() >= 8, "only {} cases within {BUDGET:?}", ran.get());
    reset(&m);
    let session = fx.user_session();
    find_one(&session, ObjectClass::PRIVATE_KEY);
}

#[test]
fn a_forked_child_initializes_again_and_the_parent_carries_on() {
    isolated(
        "a_forked_child_initializes_again_and_the_parent_carries_on",
        a_forked_child_initializes_again_and_the_parent_carries_on_body,
    );
}

/// What the child of the fork does: its inherited session is not its own, calls before
/// `C_Initialize` get allowed codes, and after it the token works.
fn after_fork(m: &Module, keys: &Keys, inherited: CK_SESSION_HANDLE) -> Result<(), TestCaseError> {
    let f = m.list;
    // SAFETY: plain data.
    let mut info: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a live local.
    let rv = unsafe { f.C_GetSessionInfo.unwrap()(inherited, &raw mut info) };
    check("C_GetSessionInfo", rv)?;
    let mut model = Model::new(keys, true);
    model.open.push(inherited);
    run(
        m,
        &mut model,
        &Op::SignWith {
            session: Handle::Open(0),
            outs: vec![Out::Large],
        },
    )?;
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: ptr::null_mut(),
    };
    // SAFETY: `args` is a live CK_C_INITIALIZE_ARGS.
    let rv = unsafe { f.C_Initialize.unwrap()((&raw mut args).cast::<c_void>()) };
    prop_assert_eq!(rv, CKR_OK, "C_Initialize in the child");
    let mut model = Model::new(keys, true);
    let ops = [
        Op::SignWith {
            session: Handle::Open(0),
            outs: vec![Out::Null, Out::Short(3), Out::Large],
        },
        Op::DecryptWith {
            session: Handle::Open(0),
            outs: vec![Out::Large],
        },
    ];
    play(m, &mut model, true, &ops)?;
    // And without the randomness: the child's own session signs.
    prop_assert!(!model.open.is_empty(), "no session in the child");
    let h = model.open[0];
    let rv = init(
        f.C_SignInit.unwrap(),
        h,
        CKM_SHA256_RSA_PKCS,
        false,
        keys.private,
    );
    prop_assert_eq!(rv, CKR_OK, "C_SignInit in the child");
    prop_assert_eq!(sign_once(m, h), (CKR_OK, 256), "C_Sign in the child");
    Ok(())
}

fn a_forked_child_initializes_again_and_the_parent_carries_on_body() {
    let fx = Fixture::new(&setup());
    let keys = keys(&fx);
    let m = Module::load();
    reset(&m);
    let mut model = Model::new(&keys, true);
    // The parent has a session, is logged in, and has a signing operation under way.
    play(&m, &mut model, true, &[]).unwrap();
    let h = model.open[0];
    let f = m.list;
    assert_eq!(
        init(
            f.C_SignInit.unwrap(),
            h,
            CKM_SHA256_RSA_PKCS,
            false,
            keys.private
        ),
        CKR_OK
    );

    // SAFETY: the child calls the module (whose C_Initialize is made for a forked
    // child) and leaves with _exit, running no destructor of the parent's state.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // A panic must not unwind into a second copy of the test harness.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| after_fork(&m, &keys, h)));
        let code = match result {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!("the forked child: {e}");
                1
            }
            Err(_) => 2,
        };
        // SAFETY: ends the child without unwinding into the parent's test harness.
        unsafe { libc::_exit(code) };
    }
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live local; `pid` is our child.
        let done = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
        if done == pid {
            break;
        }
        if start.elapsed() > BUDGET {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child failed (status {status:#x})"
    );

    // The parent's operation survived the child.

    assert_eq!(
        sign_once(&m, h),
        (CKR_OK, 256),
        "the parent's C_Sign after the fork"
    );
    reset(&m);
}

/// One `C_Sign` into a large buffer: its code and the signature's length.
fn sign_once(m: &Module, h: CK_SESSION_HANDLE) -> (CK_RV, CK_ULONG) {
    let mut out = vec![0u8; 1024];
    let mut out_len = out.len() as CK_ULONG;
    let mut data = b"signed around a fork".to_vec();
    // SAFETY: live local buffers with their lengths.
    let rv = unsafe {
        m.list.C_Sign.unwrap()(
            h,
            data.as_mut_ptr(),
            data.len() as CK_ULONG,
            out.as_mut_ptr(),
            &raw mut out_len,
        )
    };
    (rv, out_len)
}
