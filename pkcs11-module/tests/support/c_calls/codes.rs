//! The return codes PKCS#11 v2.40 allows for each function the C-caller test calls.

use cryptoki_sys::*;

use super::Failure;

/// The codes every function may return (PKCS#11 v2.40 §5.1.1, "universal").
pub const UNIVERSAL: &[CK_RV] = &[
    CKR_OK,
    CKR_GENERAL_ERROR,
    CKR_HOST_MEMORY,
    CKR_FUNCTION_FAILED,
    CKR_CRYPTOKI_NOT_INITIALIZED,
];
/// The codes every function that takes a session may return (§5.1.2, §5.1.3).
pub const SESSION: &[CK_RV] = &[
    CKR_SESSION_HANDLE_INVALID,
    CKR_SESSION_CLOSED,
    CKR_DEVICE_ERROR,
    CKR_DEVICE_MEMORY,
    CKR_DEVICE_REMOVED,
];

/// The codes PKCS#11 v2.40 lists under "Return values" for `function` (§5),
/// without those of [`UNIVERSAL`] and, for functions that take a session, [`SESSION`].
pub fn allowed(function: &str) -> (bool, &'static [CK_RV]) {
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
pub fn check(function: &str, rv: CK_RV) -> Result<(), Failure> {
    let (session, listed) = allowed(function);
    let ok = UNIVERSAL.contains(&rv) || listed.contains(&rv) || (session && SESSION.contains(&rv));
    ensure!(
        ok,
        "{function} returned {rv:#x}, which PKCS#11 does not allow"
    );
    Ok(())
}
