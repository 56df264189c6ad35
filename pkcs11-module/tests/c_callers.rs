//! The built `libittc_pkcs11.so` called the way a careless C application calls it: random
//! sequences of `C_` calls with random arguments (NULL pointers, short buffers, stale and
//! foreign handles, calls in the wrong session state), from one thread and from several at
//! once, and across a `fork`, against a real 2-of-3 cluster. Nothing may crash or hang,
//! and every return code must be one that PKCS#11 v2.40 lists for the function that
//! returned it ([`c_calls::codes::allowed`]).
//!
//! The calls, the model and the checks are in `support/c_calls/`, which the fuzz target
//! `fuzz/fuzz_targets/c_calls.rs` shares; here proptest generates the sequences, and the
//! fuzz target's corpus (`fuzz/corpus/c_calls/`) replays. Calling C functions is `unsafe`;
//! these files are the one place outside the module's `ffi` shell that does it, and each
//! block says why its pointers are valid (or deliberately NULL).

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Calling the module's C functions through its function list cannot be done safely.
#![allow(unsafe_code)]

#[path = "support/c_calls/mod.rs"]
mod c_calls;
mod support;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use c_calls::ops::init;
use c_calls::{
    CHILD_LIMIT, Case, Failure, Handle, Keys, Model, Module, Object, Op, Out, Pin, SLOT, Template,
    check, decode, fork, play, play_case, reset, run, setup,
};
use cryptoki::object::ObjectClass;
use cryptoki_sys::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::{Fixture, find_one, isolated, module_path};

impl From<Failure> for TestCaseError {
    fn from(failure: Failure) -> Self {
        TestCaseError::fail(failure.0)
    }
}

/// How long each property may keep generating cases; a case under way finishes.
const BUDGET: Duration = Duration::from_secs(60);

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

/// A sequence of up to `max` calls, and whether it starts logged in.
fn sequence(max: usize) -> impl Strategy<Value = (bool, Vec<Op>)> {
    (any::<bool>(), prop::collection::vec(op(), 1..max))
}

/// Mostly none; sometimes after some of the calls.
fn fork_at() -> impl Strategy<Value = Option<usize>> {
    prop::option::weighted(0.1, 0..32usize)
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
    let m = Module::load(&module_path());
    let keys = Keys::find(&m, &fx.public()).unwrap();
    let start = Instant::now();
    let mut runner = TestRunner::new(config(256));
    let ran = std::cell::Cell::new(0usize);
    runner
        .run(&(sequence(32), fork_at()), |((login, ops), fork)| {
            if start.elapsed() > BUDGET {
                return Ok(());
            }
            ran.set(ran.get() + 1);
            let case = Case {
                threads: vec![(login, ops)],
                fork,
            };
            Ok(play_case(&m, &keys, &case)?)
        })
        .unwrap();
    assert!(
        ran.get() >= 16,
        "only {} sequences within {BUDGET:?}",
        ran.get()
    );
    // The token still works after all that.
    reset(&m).unwrap();
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
    let m = Module::load(&module_path());
    let keys = Keys::find(&m, &fx.public()).unwrap();
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
            let case = Case {
                threads,
                fork: None,
            };
            Ok(play_case(&m, &keys, &case)?)
        })
        .unwrap();
    assert!(ran.get() >= 8, "only {} cases within {BUDGET:?}", ran.get());
    reset(&m).unwrap();
    let session = fx.user_session();
    find_one(&session, ObjectClass::PRIVATE_KEY);
}

/// The fuzz target's corpus.
fn corpus_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/c_calls"
    ))
}

/// How long one corpus case may take: a forked child's limit and the parent's calls.
const CASE_LIMIT: Duration = Duration::from_secs(CHILD_LIMIT.as_secs() + 30);

#[test]
fn the_fuzz_corpus_replays_with_only_allowed_codes() {
    isolated(
        "the_fuzz_corpus_replays_with_only_allowed_codes",
        the_fuzz_corpus_replays_with_only_allowed_codes_body,
    );
}

/// Each file of `fuzz/corpus/c_calls/`, decoded as the fuzz target decodes it, played on
/// a worker thread that must finish it within [`CASE_LIMIT`].
fn the_fuzz_corpus_replays_with_only_allowed_codes_body() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} corpus files", files.len());
    let cases: Vec<Case> = files
        .iter()
        .map(|path| decode(&std::fs::read(path).unwrap()))
        .collect();
    let fx = Fixture::new(&setup());
    let m = Module::load(&module_path());
    let keys = Keys::find(&m, &fx.public()).unwrap();
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        for case in &cases {
            if tx.send(play_case(&m, &keys, case)).is_err() {
                break;
            }
        }
        m
    });
    for path in &files {
        let name = path.display();
        match rx.recv_timeout(CASE_LIMIT) {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => panic!(
                "{name}: {failure}\n{:?}",
                decode(&std::fs::read(path).unwrap())
            ),
            Err(_) => panic!("{name} hung (no result within {CASE_LIMIT:?})"),
        }
    }
    let m = worker.join().unwrap();
    reset(&m).unwrap();
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
    prop_assert_eq!(m.initialize(), CKR_OK, "C_Initialize in the child");
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
    let m = Module::load(&module_path());
    let keys = Keys::find(&m, &fx.public()).unwrap();
    reset(&m).unwrap();
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

    fork(|| after_fork(&m, &keys, h), || Ok(())).unwrap();

    // The parent's operation survived the child.
    assert_eq!(
        sign_once(&m, h),
        (CKR_OK, 256),
        "the parent's C_Sign after the fork"
    );
    reset(&m).unwrap();
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

/// A zero or NULL of any argument type of the C functions: what a call with nothing to
/// say passes.
trait Nothing {
    fn nothing() -> Self;
}

impl Nothing for CK_ULONG {
    fn nothing() -> Self {
        0
    }
}

impl Nothing for CK_BBOOL {
    fn nothing() -> Self {
        0
    }
}

impl<T> Nothing for *mut T {
    fn nothing() -> Self {
        std::ptr::null_mut()
    }
}

impl<T> Nothing for Option<T> {
    fn nothing() -> Self {
        None
    }
}

/// One argument of [`every_function`]'s calls.
macro_rules! nothing {
    (_) => {
        Nothing::nothing()
    };
}

/// Calls each named function, with zero and NULL arguments (one `_` each), through both
/// lists (the 2.40 functions) or the 3.0 list only; returns each call's name and code.
macro_rules! call_each {
    ($old:expr, $new:expr, [$($b:ident($($ba:tt),*)),* $(,)?], [$($v:ident($($va:tt),*)),* $(,)?]) => {{
        let (old, new): (&CK_FUNCTION_LIST, &CK_FUNCTION_LIST_3_0) = ($old, $new);
        let mut codes: Vec<(String, CK_RV)> = Vec::new();
        $(
            // SAFETY: before C_Initialize (or after C_Finalize) the module answers without
            // reading any argument; NULL pointers are also what it checks first.
            codes.push((format!("2.40 {}", stringify!($b)), unsafe { old.$b.unwrap()($(nothing!($ba)),*) }));
            // SAFETY: as above.
            codes.push((format!("3.0 {}", stringify!($b)), unsafe { new.$b.unwrap()($(nothing!($ba)),*) }));
        )*
        $(
            // SAFETY: as above.
            codes.push((format!("3.0 {}", stringify!($v)), unsafe { new.$v.unwrap()($(nothing!($va)),*) }));
        )*
        codes
    }};
}

/// Every function of the 2.40 list and the 3.0 interface but the four the specification
/// lets an application call before `C_Initialize` (`C_Initialize`, `C_GetFunctionList`,
/// `C_GetInterfaceList`, `C_GetInterface`), called once each; their codes by name.
fn every_function(old: &CK_FUNCTION_LIST, new: &CK_FUNCTION_LIST_3_0) -> Vec<(String, CK_RV)> {
    call_each!(
        old,
        new,
        [
            C_Finalize(_),
            C_GetInfo(_),
            C_GetSlotList(_, _, _),
            C_GetSlotInfo(_, _),
            C_GetTokenInfo(_, _),
            C_GetMechanismList(_, _, _),
            C_GetMechanismInfo(_, _, _),
            C_InitToken(_, _, _, _),
            C_InitPIN(_, _, _),
            C_SetPIN(_, _, _, _, _),
            C_OpenSession(_, _, _, _, _),
            C_CloseSession(_),
            C_CloseAllSessions(_),
            C_GetSessionInfo(_, _),
            C_GetOperationState(_, _, _),
            C_SetOperationState(_, _, _, _, _),
            C_Login(_, _, _, _),
            C_Logout(_),
            C_CreateObject(_, _, _, _),
            C_CopyObject(_, _, _, _, _),
            C_DestroyObject(_, _),
            C_GetObjectSize(_, _, _),
            C_GetAttributeValue(_, _, _, _),
            C_SetAttributeValue(_, _, _, _),
            C_FindObjectsInit(_, _, _),
            C_FindObjects(_, _, _, _),
            C_FindObjectsFinal(_),
            C_EncryptInit(_, _, _),
            C_Encrypt(_, _, _, _, _),
            C_EncryptUpdate(_, _, _, _, _),
            C_EncryptFinal(_, _, _),
            C_DecryptInit(_, _, _),
            C_Decrypt(_, _, _, _, _),
            C_DecryptUpdate(_, _, _, _, _),
            C_DecryptFinal(_, _, _),
            C_DigestInit(_, _),
            C_Digest(_, _, _, _, _),
            C_DigestUpdate(_, _, _),
            C_DigestKey(_, _),
            C_DigestFinal(_, _, _),
            C_SignInit(_, _, _),
            C_Sign(_, _, _, _, _),
            C_SignUpdate(_, _, _),
            C_SignFinal(_, _, _),
            C_SignRecoverInit(_, _, _),
            C_SignRecover(_, _, _, _, _),
            C_VerifyInit(_, _, _),
            C_Verify(_, _, _, _, _),
            C_VerifyUpdate(_, _, _),
            C_VerifyFinal(_, _, _),
            C_VerifyRecoverInit(_, _, _),
            C_VerifyRecover(_, _, _, _, _),
            C_DigestEncryptUpdate(_, _, _, _, _),
            C_DecryptDigestUpdate(_, _, _, _, _),
            C_SignEncryptUpdate(_, _, _, _, _),
            C_DecryptVerifyUpdate(_, _, _, _, _),
            C_GenerateKey(_, _, _, _, _),
            C_GenerateKeyPair(_, _, _, _, _, _, _, _),
            C_WrapKey(_, _, _, _, _, _),
            C_UnwrapKey(_, _, _, _, _, _, _, _),
            C_DeriveKey(_, _, _, _, _, _),
            C_SeedRandom(_, _, _),
            C_GenerateRandom(_, _, _),
            C_GetFunctionStatus(_),
            C_CancelFunction(_),
            C_WaitForSlotEvent(_, _, _),
        ],
        [
            C_LoginUser(_, _, _, _, _, _),
            C_SessionCancel(_, _),
            C_MessageEncryptInit(_, _, _),
            C_EncryptMessage(_, _, _, _, _, _, _, _, _),
            C_EncryptMessageBegin(_, _, _, _, _),
            C_EncryptMessageNext(_, _, _, _, _, _, _, _),
            C_MessageEncryptFinal(_),
            C_MessageDecryptInit(_, _, _),
            C_DecryptMessage(_, _, _, _, _, _, _, _, _),
            C_DecryptMessageBegin(_, _, _, _, _),
            C_DecryptMessageNext(_, _, _, _, _, _, _, _),
            C_MessageDecryptFinal(_),
            C_MessageSignInit(_, _, _),
            C_SignMessage(_, _, _, _, _, _, _),
            C_SignMessageBegin(_, _, _),
            C_SignMessageNext(_, _, _, _, _, _, _),
            C_MessageSignFinal(_),
            C_MessageVerifyInit(_, _, _),
            C_VerifyMessage(_, _, _, _, _, _, _),
            C_VerifyMessageBegin(_, _, _),
            C_VerifyMessageNext(_, _, _, _, _, _, _),
            C_MessageVerifyFinal(_),
        ]
    )
}

/// The module's default interface, "PKCS 11" 3.0, which `C_GetInterface` gives before
/// `C_Initialize`.
fn interface_3_0() -> &'static CK_FUNCTION_LIST_3_0 {
    // SAFETY: the module is loaded already (`Module::load`); loading it again runs nothing.
    let library = unsafe { libloading::Library::new(module_path()) }.unwrap();
    let mut interface: *mut CK_INTERFACE = std::ptr::null_mut();
    // SAFETY: the symbol has C_GetInterface's signature; NULL name and version ask for
    // the default interface, written to `interface`.
    let rv = unsafe {
        let get: libloading::Symbol<
            '_,
            unsafe extern "C" fn(
                *mut CK_UTF8CHAR,
                *mut CK_VERSION,
                *mut *mut CK_INTERFACE,
                CK_FLAGS,
            ) -> CK_RV,
        > = library.get(b"C_GetInterface\0").unwrap();
        get(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &raw mut interface,
            0,
        )
    };
    assert_eq!(rv, CKR_OK);
    // The tables are static: keep the library loaded for the rest of the process.
    std::mem::forget(library);
    // SAFETY: C_GetInterface returned a valid interface whose list is a static 3.0 table.
    let list = unsafe { &*(*interface).pFunctionList.cast::<CK_FUNCTION_LIST_3_0>() };
    assert_eq!((list.version.major, list.version.minor), (3, 0));
    list
}

/// Before `C_Initialize`, and again after `C_Finalize`, every function of the 2.40 list
/// and of the 3.0 interface answers `CKR_CRYPTOKI_NOT_INITIALIZED`, those the token does
/// not support too: the specification lets only `C_Initialize` and `C_GetFunctionList`
/// (2.40), and `C_GetInterfaceList` and `C_GetInterface` (3.0), be called first.
#[test]
fn every_function_before_initialize_and_after_finalize_is_not_initialized() {
    isolated(
        "every_function_before_initialize_and_after_finalize_is_not_initialized",
        || {
            let _fx = Fixture::prepare(&setup(), &support::config_path());
            let m = Module::load(&module_path());
            let new = interface_3_0();
            let all_refused = |when: &str| {
                let codes = every_function(m.list, new);
                // 65 functions of 2.40 through both lists, 24 of 3.0 only.
                assert_eq!(codes.len(), 2 * 65 + 24);
                let wrong: Vec<_> = codes
                    .into_iter()
                    .filter(|(_, rv)| *rv != CKR_CRYPTOKI_NOT_INITIALIZED)
                    .map(|(name, rv)| format!("{name}: {rv:#x}"))
                    .collect();
                assert!(wrong.is_empty(), "{when}: {wrong:#?}");
            };
            all_refused("before C_Initialize");
            assert_eq!(m.initialize(), CKR_OK);
            // SAFETY: C_Finalize takes NULL.
            let rv = unsafe { m.list.C_Finalize.unwrap()(std::ptr::null_mut()) };
            assert_eq!(rv, CKR_OK);
            all_refused("after C_Finalize");
        },
    );
}

/// `C_DecryptUpdate` with a NULL buffer only asks for its output length (none), and
/// buffers nothing.
fn decrypt_part(m: &Module, h: CK_SESSION_HANDLE, part: &mut [u8]) {
    let f = m.list;
    let mut len: CK_ULONG = 99;
    // SAFETY: `part` has the length passed; NULL output with a live length.
    let rv = unsafe {
        f.C_DecryptUpdate.unwrap()(
            h,
            part.as_mut_ptr(),
            part.len() as CK_ULONG,
            std::ptr::null_mut(),
            &raw mut len,
        )
    };
    assert_eq!((rv, len), (CKR_OK, 0), "length query");
    let mut out = [0u8; 4];
    let mut len = out.len() as CK_ULONG;
    // SAFETY: live local buffers with their lengths.
    let rv = unsafe {
        f.C_DecryptUpdate.unwrap()(
            h,
            part.as_mut_ptr(),
            part.len() as CK_ULONG,
            out.as_mut_ptr(),
            &raw mut len,
        )
    };
    assert_eq!((rv, len), (CKR_OK, 0), "part");
}

/// What the `cryptoki` crate does not let a test call: `C_DecryptFinal` keeps its
/// operation through a length query and a short buffer, as `C_Decrypt` does;
/// `C_GetObjectSize`; the legacy `C_GetFunctionStatus` and `C_CancelFunction`;
/// `C_WaitForSlotEvent` without blocking.
#[test]
fn decrypt_final_keeps_its_operation_and_the_small_functions_answer_as_specified() {
    isolated(
        "decrypt_final_keeps_its_operation_and_the_small_functions_answer_as_specified",
        || {
            let fx = Fixture::new(&setup());
            let m = Module::load(&module_path());
            let f = m.list;
            let mut h: CK_SESSION_HANDLE = 0;
            // SAFETY: `h` is a live local.
            let rv = unsafe {
                f.C_OpenSession.unwrap()(
                    SLOT,
                    CKF_SERIAL_SESSION,
                    std::ptr::null_mut(),
                    None,
                    &raw mut h,
                )
            };
            assert_eq!(rv, CKR_OK);
            // Logs the user in, in a session of its own; `h` keeps the login.
            let keys = Keys::find(&m, &fx.public()).unwrap();

            let mut mechanism = CK_MECHANISM {
                mechanism: CKM_RSA_PKCS,
                pParameter: std::ptr::null_mut(),
                ulParameterLen: 0,
            };
            // SAFETY: `mechanism` is a live CK_MECHANISM without parameters.
            let rv = unsafe { f.C_DecryptInit.unwrap()(h, &raw mut mechanism, keys.private) };
            assert_eq!(rv, CKR_OK);
            let mut ciphertext = keys.ciphertext.clone();
            let (first, second) = ciphertext.split_at_mut(7);
            decrypt_part(&m, h, first);
            decrypt_part(&m, h, second);
            let final_call = |out: &mut [u8], len: CK_ULONG, null: bool| {
                let mut len = len;
                let buf = if null {
                    std::ptr::null_mut()
                } else {
                    out.as_mut_ptr()
                };
                // SAFETY: `buf` is NULL or `out`, which has at least `len` bytes.
                let rv = unsafe { f.C_DecryptFinal.unwrap()(h, buf, &raw mut len) };
                (rv, len)
            };
            let mut out = vec![0u8; 300];
            assert_eq!(final_call(&mut out, 0, true), (CKR_OK, 256));
            assert_eq!(final_call(&mut out, 10, false), (CKR_BUFFER_TOO_SMALL, 256));
            let (rv, len) = final_call(&mut out, 300, false);
            assert_eq!(rv, CKR_OK);
            assert_eq!(&out[..len as usize], c_calls::PLAINTEXT);
            assert_eq!(
                final_call(&mut out, 300, false).0,
                CKR_OPERATION_NOT_INITIALIZED
            );

            // Sizes: at least the modulus each key shows.
            let size = |object: CK_OBJECT_HANDLE| {
                let mut size: CK_ULONG = 0;
                // SAFETY: `size` is a live local.
                let rv = unsafe { f.C_GetObjectSize.unwrap()(h, object, &raw mut size) };
                (rv, size)
            };
            for key in [keys.private, keys.public] {
                let (rv, bytes) = size(key);
                assert_eq!(rv, CKR_OK);
                assert!((256..65_536).contains(&bytes), "{bytes}");
            }
            assert_eq!(size(0x1234).0, CKR_OBJECT_HANDLE_INVALID);
            // SAFETY: NULL is refused before it is written through.
            let rv = unsafe { f.C_GetObjectSize.unwrap()(h, keys.private, std::ptr::null_mut()) };
            assert_eq!(rv, CKR_ARGUMENTS_BAD);

            // SAFETY: no pointers.
            let legacy = unsafe {
                [
                    f.C_GetFunctionStatus.unwrap()(h),
                    f.C_CancelFunction.unwrap()(h),
                    f.C_GetFunctionStatus.unwrap()(h.wrapping_add(1000)),
                ]
            };
            assert_eq!(
                legacy,
                [
                    CKR_FUNCTION_NOT_PARALLEL,
                    CKR_FUNCTION_NOT_PARALLEL,
                    CKR_SESSION_HANDLE_INVALID
                ]
            );
            let mut slot: CK_SLOT_ID = 0;
            // SAFETY: `slot` is a live local; the reserved pointer is NULL.
            let events = unsafe {
                [
                    f.C_WaitForSlotEvent.unwrap()(
                        CKF_DONT_BLOCK,
                        &raw mut slot,
                        std::ptr::null_mut(),
                    ),
                    f.C_WaitForSlotEvent.unwrap()(0, &raw mut slot, std::ptr::null_mut()),
                ]
            };
            assert_eq!(events, [CKR_NO_EVENT, CKR_FUNCTION_NOT_SUPPORTED]);
        },
    );
}
