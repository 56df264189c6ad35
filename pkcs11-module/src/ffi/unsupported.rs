//! Every function of the 2.40 list and the 3.0 interface that the token does not implement:
//! each returns `CKR_FUNCTION_NOT_SUPPORTED`. (Generated from cryptoki-sys's prototypes.)

use cryptoki_sys::*;

entry! {
    /// Not supported.
    fn C_InitToken(_arg1: CK_SLOT_ID, _arg2: *mut CK_UTF8CHAR, _arg3: CK_ULONG, _arg4: *mut CK_UTF8CHAR) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_GetOperationState(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SetOperationState(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: CK_OBJECT_HANDLE, _arg5: CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_GetObjectSize(_arg1: CK_SESSION_HANDLE, _arg2: CK_OBJECT_HANDLE, _arg3: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_EncryptUpdate(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_EncryptFinal(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptUpdate(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptFinal(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DigestKey(_arg1: CK_SESSION_HANDLE, _arg2: CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignRecoverInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignRecover(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_VerifyRecoverInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_VerifyRecover(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DigestEncryptUpdate(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptDigestUpdate(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignEncryptUpdate(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptVerifyUpdate(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_BYTE, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_GenerateKey(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: *mut CK_ATTRIBUTE, _arg4: CK_ULONG, _arg5: *mut CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_WrapKey(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE, _arg4: CK_OBJECT_HANDLE, _arg5: *mut CK_BYTE, _arg6: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_UnwrapKey(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_ATTRIBUTE, _arg7: CK_ULONG, _arg8: *mut CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DeriveKey(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE, _arg4: *mut CK_ATTRIBUTE, _arg5: CK_ULONG, _arg6: *mut CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_GetFunctionStatus(_arg1: CK_SESSION_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_CancelFunction(_arg1: CK_SESSION_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_WaitForSlotEvent(_arg1: CK_FLAGS, _arg2: *mut CK_SLOT_ID, _arg3: *mut std::ffi::c_void) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_LoginUser(_arg1: CK_SESSION_HANDLE, _arg2: CK_USER_TYPE, _arg3: *mut CK_UTF8CHAR, _arg4: CK_ULONG, _arg5: *mut CK_UTF8CHAR, _arg6: CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SessionCancel(_arg1: CK_SESSION_HANDLE, _arg2: CK_FLAGS) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageEncryptInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_EncryptMessage(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: CK_ULONG, _arg8: *mut CK_BYTE, _arg9: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_EncryptMessageBegin(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_EncryptMessageNext(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: *mut CK_ULONG, _arg8: CK_FLAGS) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageEncryptFinal(_arg1: CK_SESSION_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageDecryptInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptMessage(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: CK_ULONG, _arg8: *mut CK_BYTE, _arg9: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptMessageBegin(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_DecryptMessageNext(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: *mut CK_ULONG, _arg8: CK_FLAGS) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageDecryptFinal(_arg1: CK_SESSION_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageSignInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignMessage(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignMessageBegin(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_SignMessageNext(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: *mut CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageSignFinal(_arg1: CK_SESSION_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageVerifyInit(_arg1: CK_SESSION_HANDLE, _arg2: *mut CK_MECHANISM, _arg3: CK_OBJECT_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_VerifyMessage(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_VerifyMessageBegin(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_VerifyMessageNext(_arg1: CK_SESSION_HANDLE, _arg2: *mut std::ffi::c_void, _arg3: CK_ULONG, _arg4: *mut CK_BYTE, _arg5: CK_ULONG, _arg6: *mut CK_BYTE, _arg7: CK_ULONG) {
        Err(crate::Error::FunctionNotSupported)
    }
}

entry! {
    /// Not supported.
    fn C_MessageVerifyFinal(_arg1: CK_SESSION_HANDLE) {
        Err(crate::Error::FunctionNotSupported)
    }
}
