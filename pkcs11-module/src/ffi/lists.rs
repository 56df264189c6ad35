//! `C_GetFunctionList` (2.40) and the 3.0 interfaces: static tables whose every entry is
//! a real function.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::Mutex;

use cryptoki_sys::*;

use super::functions::*;
use super::unsupported::*;
use crate::error::Error;

macro_rules! function_list {
    ($ty:ident, $major:expr, $minor:expr, { $($extra:ident),* }) => {
        $ty {
            version: CK_VERSION { major: $major, minor: $minor },
            C_Initialize: Some(C_Initialize),
            C_Finalize: Some(C_Finalize),
            C_GetInfo: Some(C_GetInfo),
            C_GetFunctionList: Some(C_GetFunctionList),
            C_GetSlotList: Some(C_GetSlotList),
            C_GetSlotInfo: Some(C_GetSlotInfo),
            C_GetTokenInfo: Some(C_GetTokenInfo),
            C_GetMechanismList: Some(C_GetMechanismList),
            C_GetMechanismInfo: Some(C_GetMechanismInfo),
            C_InitToken: Some(C_InitToken),
            C_InitPIN: Some(C_InitPIN),
            C_SetPIN: Some(C_SetPIN),
            C_OpenSession: Some(C_OpenSession),
            C_CloseSession: Some(C_CloseSession),
            C_CloseAllSessions: Some(C_CloseAllSessions),
            C_GetSessionInfo: Some(C_GetSessionInfo),
            C_GetOperationState: Some(C_GetOperationState),
            C_SetOperationState: Some(C_SetOperationState),
            C_Login: Some(C_Login),
            C_Logout: Some(C_Logout),
            C_CreateObject: Some(C_CreateObject),
            C_CopyObject: Some(C_CopyObject),
            C_DestroyObject: Some(C_DestroyObject),
            C_GetObjectSize: Some(C_GetObjectSize),
            C_GetAttributeValue: Some(C_GetAttributeValue),
            C_SetAttributeValue: Some(C_SetAttributeValue),
            C_FindObjectsInit: Some(C_FindObjectsInit),
            C_FindObjects: Some(C_FindObjects),
            C_FindObjectsFinal: Some(C_FindObjectsFinal),
            C_EncryptInit: Some(C_EncryptInit),
            C_Encrypt: Some(C_Encrypt),
            C_EncryptUpdate: Some(C_EncryptUpdate),
            C_EncryptFinal: Some(C_EncryptFinal),
            C_DecryptInit: Some(C_DecryptInit),
            C_Decrypt: Some(C_Decrypt),
            C_DecryptUpdate: Some(C_DecryptUpdate),
            C_DecryptFinal: Some(C_DecryptFinal),
            C_DigestInit: Some(C_DigestInit),
            C_Digest: Some(C_Digest),
            C_DigestUpdate: Some(C_DigestUpdate),
            C_DigestKey: Some(C_DigestKey),
            C_DigestFinal: Some(C_DigestFinal),
            C_SignInit: Some(C_SignInit),
            C_Sign: Some(C_Sign),
            C_SignUpdate: Some(C_SignUpdate),
            C_SignFinal: Some(C_SignFinal),
            C_SignRecoverInit: Some(C_SignRecoverInit),
            C_SignRecover: Some(C_SignRecover),
            C_VerifyInit: Some(C_VerifyInit),
            C_Verify: Some(C_Verify),
            C_VerifyUpdate: Some(C_VerifyUpdate),
            C_VerifyFinal: Some(C_VerifyFinal),
            C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
            C_VerifyRecover: Some(C_VerifyRecover),
            C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
            C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
            C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
            C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
            C_GenerateKey: Some(C_GenerateKey),
            C_GenerateKeyPair: Some(C_GenerateKeyPair),
            C_WrapKey: Some(C_WrapKey),
            C_UnwrapKey: Some(C_UnwrapKey),
            C_DeriveKey: Some(C_DeriveKey),
            C_SeedRandom: Some(C_SeedRandom),
            C_GenerateRandom: Some(C_GenerateRandom),
            C_GetFunctionStatus: Some(C_GetFunctionStatus),
            C_CancelFunction: Some(C_CancelFunction),
            C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
            $($extra: Some($extra),)*
        }
    };
}

static FUNCTIONS_2_40: CK_FUNCTION_LIST = function_list!(CK_FUNCTION_LIST, 2, 40, {});

static FUNCTIONS_3_0: CK_FUNCTION_LIST_3_0 = function_list!(CK_FUNCTION_LIST_3_0, 3, 0, {
    C_GetInterfaceList, C_GetInterface, C_LoginUser, C_SessionCancel,
    C_MessageEncryptInit, C_EncryptMessage, C_EncryptMessageBegin, C_EncryptMessageNext,
    C_MessageEncryptFinal, C_MessageDecryptInit, C_DecryptMessage, C_DecryptMessageBegin,
    C_DecryptMessageNext, C_MessageDecryptFinal, C_MessageSignInit, C_SignMessage,
    C_SignMessageBegin, C_SignMessageNext, C_MessageSignFinal, C_MessageVerifyInit,
    C_VerifyMessage, C_VerifyMessageBegin, C_VerifyMessageNext, C_MessageVerifyFinal
});

static INTERFACE_NAME: &std::ffi::CStr = c"PKCS 11";

/// The interfaces offered, the 3.0 one first (the default), as (version, function list).
/// `flags` is 0: in a forked child the module must be initialised again, which is not the
/// fork-tolerant behaviour `CKF_INTERFACE_FORK_SAFE` promises (sessions, login state and
/// handles carried into the child).
fn interfaces() -> [(CK_VERSION, CK_INTERFACE); 2] {
    let entry = |list: *const c_void| CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr().cast_mut().cast(),
        pFunctionList: list.cast_mut(),
        flags: 0,
    };
    [
        (
            FUNCTIONS_3_0.version,
            entry((&raw const FUNCTIONS_3_0).cast()),
        ),
        (
            FUNCTIONS_2_40.version,
            entry((&raw const FUNCTIONS_2_40).cast()),
        ),
    ]
}

/// The `CK_INTERFACE` structures `C_GetInterface` hands out. They live in writable memory
/// because some callers write into them: OpenSC's `pkcs11-spy` (0.23) replaces the
/// returned interface's `pFunctionList` with its own table, which crashed on a table in
/// read-only memory. Each call restores the entry it returns (see [`C_GetInterface`]).
struct Handed(UnsafeCell<[CK_INTERFACE; 2]>);

// SAFETY: the module writes the cells only while holding `HANDED_LOCK`, and only when a
// caller changed them; otherwise they are only read.
unsafe impl Sync for Handed {}

static HANDED: Handed = Handed(UnsafeCell::new(
    [CK_INTERFACE {
        pInterfaceName: std::ptr::null_mut(),
        pFunctionList: std::ptr::null_mut(),
        flags: 0,
    }; 2],
));

static HANDED_LOCK: Mutex<()> = Mutex::new(());

fn same(a: &CK_INTERFACE, b: &CK_INTERFACE) -> bool {
    a.pInterfaceName == b.pInterfaceName && a.pFunctionList == b.pFunctionList && a.flags == b.flags
}

entry! {
    /// The 2.40 function list.
    fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) {
        // SAFETY: NULL or valid, as the specification requires.
        let list = unsafe { super::convert::out(list) }?;
        *list = (&raw const FUNCTIONS_2_40).cast_mut();
        Ok(())
    }
}

entry! {
    /// The interfaces: "PKCS 11" 3.0 and 2.40, copied into the caller's array.
    fn C_GetInterfaceList(list: *mut CK_INTERFACE, count: *mut CK_ULONG) {
        let all = interfaces().map(|(_, i)| i);
        // SAFETY: NULL or valid for `*count` interfaces.
        unsafe { super::convert::list(list, count, &all) }
    }
}

entry! {
    /// One interface by name, version and flags (NULL name and version: the default, 3.0).
    fn C_GetInterface(name: *mut CK_UTF8CHAR, version: *mut CK_VERSION, interface: *mut *mut CK_INTERFACE, flags: CK_FLAGS) {
        // SAFETY: NULL or valid.
        let interface = unsafe { super::convert::out(interface) }?;
        let wanted_name = if name.is_null() {
            None
        } else {
            // SAFETY: a NUL-terminated string, as the specification requires.
            Some(unsafe { std::ffi::CStr::from_ptr(name.cast_const().cast()) }.to_bytes())
        };
        // SAFETY: NULL or valid.
        let wanted_version = unsafe { version.as_ref() }.copied();
        let all = interfaces();
        let (index, (_, canonical)) = all
            .iter()
            .enumerate()
            .find(|(_, (have, i))| {
                wanted_name.is_none_or(|n| n == INTERFACE_NAME.to_bytes())
                    && wanted_version
                        .is_none_or(|v| have.major == v.major && have.minor == v.minor)
                    && i.flags & flags == flags
            })
            .ok_or(Error::ArgumentsBad)?;
        let _guard = crate::client::lock(&HANDED_LOCK);
        // SAFETY: `index` < 2, so the pointer is inside the static array.
        let cell = unsafe { HANDED.0.get().cast::<CK_INTERFACE>().add(index) };
        // SAFETY: the cell is valid and aligned; module writes are serialised by the lock,
        // and a read racing a caller's own write to the structure it was given is that
        // caller's doing (the bytes read are then replaced below).
        if !same(unsafe { &*cell }, canonical) {
            // SAFETY: as above; the write happens only on first use or after a caller
            // changed the structure.
            unsafe { cell.write(*canonical) };
        }
        *interface = cell;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_interface_is_3_0_and_callers_may_write_to_it() {
        let mut got: *mut CK_INTERFACE = std::ptr::null_mut();
        // SAFETY: NULL name and version, a valid output pointer.
        let rv = unsafe { C_GetInterface(std::ptr::null_mut(), std::ptr::null_mut(), &mut got, 0) };
        assert_eq!(rv, CKR_OK);
        // SAFETY: the module returned a valid pointer.
        let i = unsafe { &mut *got };
        // SAFETY: the list starts with a CK_VERSION.
        let v = unsafe { *i.pFunctionList.cast::<CK_VERSION>() };
        assert_eq!((v.major, v.minor), (3, 0));
        // SAFETY: NUL-terminated name.
        let name = unsafe { std::ffi::CStr::from_ptr(i.pInterfaceName.cast()) };
        assert_eq!(name.to_bytes(), b"PKCS 11");
        assert_eq!(i.flags, 0);
        // What pkcs11-spy does: it must not crash, and the next caller gets the real list.
        i.pFunctionList = std::ptr::null_mut();
        let mut again: *mut CK_INTERFACE = std::ptr::null_mut();
        let mut want = CK_VERSION { major: 3, minor: 0 };
        let name = c"PKCS 11".as_ptr().cast_mut().cast();
        // SAFETY: valid name, version and output pointer.
        let rv = unsafe { C_GetInterface(name, &mut want, &mut again, 0) };
        assert_eq!(rv, CKR_OK);
        // SAFETY: as above.
        let v = unsafe { *(*again).pFunctionList.cast::<CK_VERSION>() };
        assert_eq!((v.major, v.minor), (3, 0));
    }

    #[test]
    fn versions_flags_and_the_list_follow_the_specification() {
        let mut got: *mut CK_INTERFACE = std::ptr::null_mut();
        let mut want = CK_VERSION {
            major: 2,
            minor: 40,
        };
        // SAFETY: valid version and output pointer.
        let rv = unsafe { C_GetInterface(std::ptr::null_mut(), &mut want, &mut got, 0) };
        assert_eq!(rv, CKR_OK);
        // SAFETY: the module returned a valid pointer to a list starting with CK_VERSION.
        let v = unsafe { *(*got).pFunctionList.cast::<CK_VERSION>() };
        assert_eq!((v.major, v.minor), (2, 40));
        // Not fork-tolerant, so a request for CKF_INTERFACE_FORK_SAFE finds nothing.
        // SAFETY: as above.
        let rv = unsafe {
            C_GetInterface(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut got,
                CKF_INTERFACE_FORK_SAFE,
            )
        };
        assert_eq!(rv, CKR_ARGUMENTS_BAD);
        let mut other = CK_VERSION { major: 3, minor: 1 };
        // SAFETY: as above.
        let rv = unsafe { C_GetInterface(std::ptr::null_mut(), &mut other, &mut got, 0) };
        assert_eq!(rv, CKR_ARGUMENTS_BAD);
        let mut count: CK_ULONG = 0;
        // SAFETY: NULL list, valid count: the length query.
        let rv = unsafe { C_GetInterfaceList(std::ptr::null_mut(), &mut count) };
        assert_eq!((rv, count), (CKR_OK, 2));
        let empty = CK_INTERFACE {
            pInterfaceName: std::ptr::null_mut(),
            pFunctionList: std::ptr::null_mut(),
            flags: 0,
        };
        let mut list = [empty; 2];
        count = 1;
        // SAFETY: `list` holds at least `count` entries.
        let rv = unsafe { C_GetInterfaceList(list.as_mut_ptr(), &mut count) };
        assert_eq!((rv, count), (CKR_BUFFER_TOO_SMALL, 2));
        // SAFETY: `list` holds `count` entries.
        let rv = unsafe { C_GetInterfaceList(list.as_mut_ptr(), &mut count) };
        assert_eq!((rv, count), (CKR_OK, 2));
        let versions: Vec<(u8, u8)> = list
            .iter()
            // SAFETY: each entry points to a function list starting with CK_VERSION.
            .map(|i| unsafe { *i.pFunctionList.cast::<CK_VERSION>() })
            .map(|v| (v.major, v.minor))
            .collect();
        assert_eq!(versions, [(3, 0), (2, 40)]);
        // The 3.0 table's own C_GetInterface is this function.
        // SAFETY: the first entry is the 3.0 table.
        let table = unsafe { &*list[0].pFunctionList.cast::<CK_FUNCTION_LIST_3_0>() };
        assert!(table.C_GetInterface.is_some() && table.C_MessageVerifyFinal.is_some());
        assert_eq!(
            std::mem::offset_of!(CK_FUNCTION_LIST_3_0, C_GetInterfaceList),
            std::mem::offset_of!(CK_FUNCTION_LIST, C_WaitForSlotEvent) + size_of::<usize>()
        );
    }
}
