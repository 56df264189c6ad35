//! `C_GetFunctionList` (2.40) and the 3.0 interfaces: static tables whose every entry is
//! a real function.

use std::ffi::c_void;

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

static INTERFACE_NAME: &[u8] = b"PKCS 11\0";

/// The interfaces offered, the 3.0 one first (the default).
struct Interfaces([CK_INTERFACE; 2]);

// SAFETY: the pointers in the table point to immutable statics; nothing ever writes
// through them (the application must not either), so sharing the table is sound.
unsafe impl Sync for Interfaces {}

static INTERFACES: Interfaces = Interfaces([
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr().cast_mut(),
        pFunctionList: (&raw const FUNCTIONS_3_0).cast_mut().cast::<c_void>(),
        flags: CKF_INTERFACE_FORK_SAFE,
    },
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr().cast_mut(),
        pFunctionList: (&raw const FUNCTIONS_2_40).cast_mut().cast::<c_void>(),
        flags: CKF_INTERFACE_FORK_SAFE,
    },
]);

fn interface_version(i: &CK_INTERFACE) -> CK_VERSION {
    if std::ptr::eq(
        i.pFunctionList.cast_const(),
        (&raw const FUNCTIONS_3_0).cast(),
    ) {
        FUNCTIONS_3_0.version
    } else {
        FUNCTIONS_2_40.version
    }
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
    /// The interfaces: "PKCS 11" 3.0 and 2.40.
    fn C_GetInterfaceList(list: *mut CK_INTERFACE, count: *mut CK_ULONG) {
        // SAFETY: NULL or valid for `*count` interfaces.
        unsafe { super::convert::list(list, count, &INTERFACES.0) }
    }
}

entry! {
    /// One interface by name and version (NULL: the default, 3.0).
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
        let found = INTERFACES.0.iter().find(|i| {
            wanted_name.is_none_or(|n| n == b"PKCS 11")
                && wanted_version.is_none_or(|v| {
                    let have = interface_version(i);
                    have.major == v.major && have.minor == v.minor
                })
                && i.flags & flags == flags
        });
        let found = found.ok_or(Error::ArgumentsBad)?;
        *interface = std::ptr::from_ref(found).cast_mut();
        Ok(())
    }
}
