//! Every function of the 2.40 list and the 3.0 interface that the token does not implement:
//! each is the stub the specification asks for, which returns `CKR_FUNCTION_NOT_SUPPORTED`
//! (PKCS#11 v2.40 §5, "even an unsupported function must have a stub"), after
//! `CKR_CRYPTOKI_NOT_INITIALIZED` before `C_Initialize`, like every other function.
//! (Generated from cryptoki-sys's prototypes.) The legacy `C_GetFunctionStatus` and
//! `C_CancelFunction` answer `CKR_FUNCTION_NOT_PARALLEL`, as the specification says they
//! should (v2.40 §5.20), and `C_WaitForSlotEvent` `CKR_NO_EVENT` when it may not block.

use std::ffi::c_void;

use cryptoki_sys::*;

use super::module;
use crate::error::Error;

entry! {
    /// Legacy: no function runs in parallel with the application.
    fn C_GetFunctionStatus(session: CK_SESSION_HANDLE) {
        module()?.session_info(session)?;
        Err(Error::FunctionNotParallel)
    }
}

entry! {
    /// Legacy: no function runs in parallel with the application.
    fn C_CancelFunction(session: CK_SESSION_HANDLE) {
        module()?.session_info(session)?;
        Err(Error::FunctionNotParallel)
    }
}

entry! {
    /// The one slot always holds its token, so no slot event ever happens: with
    /// `CKF_DONT_BLOCK` the answer is `CKR_NO_EVENT`; waiting would block until
    /// `C_Finalize`, which is not supported (applications then poll, as NSS does).
    fn C_WaitForSlotEvent(flags: CK_FLAGS, _slot: *mut CK_SLOT_ID, reserved: *mut c_void) {
        module()?;
        if !reserved.is_null() {
            return Err(Error::ArgumentsBad);
        }
        if flags & CKF_DONT_BLOCK != 0 {
            return Err(Error::NoEvent);
        }
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_InitToken(_arg1: CK_SLOT_ID, _arg2: *mut CK_UTF8CHAR, _arg3: CK_ULONG, _arg4: *mut CK_UTF8CHAR) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_GetOperationState(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SetOperationState(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: CK_OBJECT_HANDLE, _arg5: CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DigestKey(_arg1: CK_SESSION_HANDLE, _arg2: CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignRecoverInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignRecover(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_VerifyRecoverInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_VerifyRecover(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DigestEncryptUpdate(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptDigestUpdate(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignEncryptUpdate(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptVerifyUpdate(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_GenerateKey(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: *mut CK_ATTRIBUTE, _arg4: CK_ULONG, _arg5: *mut CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_WrapKey(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE, _arg4: CK_OBJECT_HANDLE, _arg5: *mut CK_BYTE, _arg6: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_UnwrapKey(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_ATTRIBUTE, _arg7: CK_ULONG, _arg8: *mut CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DeriveKey(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE, _arg4: *mut CK_ATTRIBUTE, _arg5: CK_ULONG, _arg6: *mut CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_LoginUser(_arg1: CK_SESSION_HANDLE, _arg2: CK_USER_TYPE, _arg3: *mut CK_UTF8CHAR, _arg4: CK_ULONG, _arg5: *mut CK_UTF8CHAR, _arg6: CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SessionCancel(_arg1: CK_SESSION_HANDLE, _arg2: CK_FLAGS) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageEncryptInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_EncryptMessage(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: CK_ULONG, _arg8: *mut CK_BYTE, _arg9: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_EncryptMessageBegin(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_EncryptMessageNext(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: *mut CK_ULONG, _arg8: CK_FLAGS) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageEncryptFinal(_arg1: CK_SESSION_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageDecryptInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptMessage(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: CK_ULONG, _arg8: *mut CK_BYTE, _arg9: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptMessageBegin(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptMessageNext(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: *mut CK_ULONG, _arg8: CK_FLAGS) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageDecryptFinal(_arg1: CK_SESSION_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageSignInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignMessage(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignMessageBegin(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignMessageNext(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: *mut CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageSignFinal(_arg1: CK_SESSION_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageVerifyInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_VerifyMessage(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_VerifyMessageBegin(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_VerifyMessageNext(_arg1: CK_SESSION_HANDLE, _arg2: *mut c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: CK_ULONG) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageVerifyFinal(_arg1: CK_SESSION_HANDLE) {
        module()?;
        Err(Error::FunctionNotSupported)
    }
}
