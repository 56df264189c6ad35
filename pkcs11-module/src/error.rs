//! The module's one error type, and the one place where it becomes a `CK_RV`.
//!
//! The rich cause (which appliance, which wire error) goes to the log where the error is
//! made; the application only ever sees the closed code from [`Error::rv`]. Every padding
//! and decryption failure is the single [`Error::EncryptedDataInvalid`] (or
//! [`Error::SignatureInvalid`] for verification), so no detail leaks as an oracle.

use cryptoki_sys as ck;
use cryptoki_sys::CK_RV;

/// Why a PKCS#11 call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A pointer, length or value from the caller is unusable.
    #[error("arguments bad")]
    ArgumentsBad,
    /// The module is not initialised (or this is a forked child that has not initialised).
    #[error("not initialised")]
    NotInitialized,
    /// C_Initialize called twice.
    #[error("already initialised")]
    AlreadyInitialized,
    /// The application forbids threads and the module needs them.
    #[error("the module needs to create threads")]
    NeedToCreateThreads,
    /// Mutex callbacks given without `CKF_OS_LOCKING_OK`: the module only uses OS locks.
    #[error("cannot use the application's locking callbacks")]
    CantLock,
    /// The function is not implemented.
    #[error("function not supported")]
    FunctionNotSupported,
    /// `C_GetFunctionStatus` and `C_CancelFunction`: no function runs in parallel with
    /// the application (the legacy answer the specification asks for).
    #[error("function not parallel")]
    FunctionNotParallel,
    /// `C_WaitForSlotEvent` with `CKF_DONT_BLOCK`: no slot event has happened.
    #[error("no slot event")]
    NoEvent,
    /// No such slot.
    #[error("slot id invalid")]
    SlotIdInvalid,
    /// No such session.
    #[error("session handle invalid")]
    SessionHandleInvalid,
    /// `CKF_SERIAL_SESSION` missing from C_OpenSession.
    #[error("parallel sessions not supported")]
    SessionParallelNotSupported,
    /// A read-write operation in a read-only session.
    #[error("session is read-only")]
    SessionReadOnly,
    /// An SO login would coexist with a read-only session.
    #[error("a read-only session exists")]
    SessionReadOnlyExists,
    /// No such object (or not visible in this login state).
    #[error("object handle invalid")]
    ObjectHandleInvalid,
    /// No such key, or not a key usable here.
    #[error("key handle invalid")]
    KeyHandleInvalid,
    /// The key cannot do this operation (e.g. signing with a public key).
    #[error("key function not permitted")]
    KeyFunctionNotPermitted,
    /// The key's type does not fit the mechanism.
    #[error("key type inconsistent")]
    KeyTypeInconsistent,
    /// Unknown mechanism.
    #[error("mechanism invalid")]
    MechanismInvalid,
    /// Bad mechanism parameters.
    #[error("mechanism parameter invalid")]
    MechanismParamInvalid,
    /// An operation of this kind is active already.
    #[error("operation active")]
    OperationActive,
    /// No operation of this kind was initialised.
    #[error("operation not initialized")]
    OperationNotInitialized,
    /// The output buffer is too small; its length was set.
    #[error("buffer too small")]
    BufferTooSmall,
    /// The input has the wrong length for the mechanism.
    #[error("data length out of range")]
    DataLenRange,
    /// The input is not valid for the mechanism (e.g. not below the modulus).
    #[error("data invalid")]
    DataInvalid,
    /// Decryption failed (any padding or range failure: one code, no detail).
    #[error("encrypted data invalid")]
    EncryptedDataInvalid,
    /// The ciphertext has the wrong length.
    #[error("encrypted data length out of range")]
    EncryptedDataLenRange,
    /// A signature does not verify.
    #[error("signature invalid")]
    SignatureInvalid,
    /// A signature has the wrong length.
    #[error("signature length out of range")]
    SignatureLenRange,
    /// The operation needs a logged-in user.
    #[error("user not logged in")]
    UserNotLoggedIn,
    /// C_Login while already logged in.
    #[error("user already logged in")]
    UserAlreadyLoggedIn,
    /// C_Login as another user while logged in.
    #[error("another user already logged in")]
    UserAnotherAlreadyLoggedIn,
    /// Unknown `CKU_*`.
    #[error("user type invalid")]
    UserTypeInvalid,
    /// The user PIN has never been set.
    #[error("user PIN not initialised")]
    UserPinNotInitialized,
    /// Wrong PIN.
    #[error("PIN incorrect")]
    PinIncorrect,
    /// Too many wrong PINs.
    #[error("PIN locked")]
    PinLocked,
    /// The new PIN breaks the PIN policy.
    #[error("PIN length out of range")]
    PinLenRange,
    /// A template names an attribute type the object does not have (or cannot have).
    #[error("attribute type invalid")]
    AttributeTypeInvalid,
    /// A template value is malformed.
    #[error("attribute value invalid")]
    AttributeValueInvalid,
    /// The attribute cannot be read (private key material).
    #[error("attribute sensitive")]
    AttributeSensitive,
    /// The attribute cannot be changed.
    #[error("attribute read-only")]
    AttributeReadOnly,
    /// A template lacks a required attribute or contradicts itself.
    #[error("template incomplete")]
    TemplateIncomplete,
    /// A template contradicts itself or the object class.
    #[error("template inconsistent")]
    TemplateInconsistent,
    /// The action is not allowed on this object.
    #[error("action prohibited")]
    ActionProhibited,
    /// A key size the token cannot generate.
    #[error("key size out of range")]
    KeySizeRange,
    /// The function could not be carried out here (the log says why).
    #[error("function failed: {0}")]
    FunctionFailed(String),
    /// Random number generation: seeding is not supported.
    #[error("random seed not supported")]
    RandomSeedNotSupported,
    /// Fewer than k appliances answered, or they answered nonsense.
    #[error("device error: {0}")]
    Device(String),
    /// The appliances no longer answer the key's epoch that this module knows: the key
    /// was refreshed. The module reads the key again and retries once; if this escapes,
    /// it is a device error.
    #[error("the key was refreshed since it was read")]
    StaleEpoch,
    /// Out of memory (a length that cannot be allocated).
    #[error("host memory")]
    HostMemory,
    /// A bug or an unexpected state in the module; the log says what.
    #[error("general error: {0}")]
    General(String),
}

impl Error {
    /// The `CK_RV` the application sees.
    pub fn rv(&self) -> CK_RV {
        match self {
            Error::ArgumentsBad => ck::CKR_ARGUMENTS_BAD,
            Error::NotInitialized => ck::CKR_CRYPTOKI_NOT_INITIALIZED,
            Error::AlreadyInitialized => ck::CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Error::NeedToCreateThreads => ck::CKR_NEED_TO_CREATE_THREADS,
            Error::CantLock => ck::CKR_CANT_LOCK,
            Error::FunctionNotSupported => ck::CKR_FUNCTION_NOT_SUPPORTED,
            Error::FunctionNotParallel => ck::CKR_FUNCTION_NOT_PARALLEL,
            Error::NoEvent => ck::CKR_NO_EVENT,
            Error::SlotIdInvalid => ck::CKR_SLOT_ID_INVALID,
            Error::SessionHandleInvalid => ck::CKR_SESSION_HANDLE_INVALID,
            Error::SessionParallelNotSupported => ck::CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            Error::SessionReadOnly => ck::CKR_SESSION_READ_ONLY,
            Error::SessionReadOnlyExists => ck::CKR_SESSION_READ_ONLY_EXISTS,
            Error::ObjectHandleInvalid => ck::CKR_OBJECT_HANDLE_INVALID,
            Error::KeyHandleInvalid => ck::CKR_KEY_HANDLE_INVALID,
            Error::KeyFunctionNotPermitted => ck::CKR_KEY_FUNCTION_NOT_PERMITTED,
            Error::KeyTypeInconsistent => ck::CKR_KEY_TYPE_INCONSISTENT,
            Error::MechanismInvalid => ck::CKR_MECHANISM_INVALID,
            Error::MechanismParamInvalid => ck::CKR_MECHANISM_PARAM_INVALID,
            Error::OperationActive => ck::CKR_OPERATION_ACTIVE,
            Error::OperationNotInitialized => ck::CKR_OPERATION_NOT_INITIALIZED,
            Error::BufferTooSmall => ck::CKR_BUFFER_TOO_SMALL,
            Error::DataLenRange => ck::CKR_DATA_LEN_RANGE,
            Error::DataInvalid => ck::CKR_DATA_INVALID,
            Error::EncryptedDataInvalid => ck::CKR_ENCRYPTED_DATA_INVALID,
            Error::EncryptedDataLenRange => ck::CKR_ENCRYPTED_DATA_LEN_RANGE,
            Error::SignatureInvalid => ck::CKR_SIGNATURE_INVALID,
            Error::SignatureLenRange => ck::CKR_SIGNATURE_LEN_RANGE,
            Error::UserNotLoggedIn => ck::CKR_USER_NOT_LOGGED_IN,
            Error::UserAlreadyLoggedIn => ck::CKR_USER_ALREADY_LOGGED_IN,
            Error::UserAnotherAlreadyLoggedIn => ck::CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
            Error::UserTypeInvalid => ck::CKR_USER_TYPE_INVALID,
            Error::UserPinNotInitialized => ck::CKR_USER_PIN_NOT_INITIALIZED,
            Error::PinIncorrect => ck::CKR_PIN_INCORRECT,
            Error::PinLocked => ck::CKR_PIN_LOCKED,
            Error::PinLenRange => ck::CKR_PIN_LEN_RANGE,
            Error::AttributeTypeInvalid => ck::CKR_ATTRIBUTE_TYPE_INVALID,
            Error::AttributeValueInvalid => ck::CKR_ATTRIBUTE_VALUE_INVALID,
            Error::AttributeSensitive => ck::CKR_ATTRIBUTE_SENSITIVE,
            Error::AttributeReadOnly => ck::CKR_ATTRIBUTE_READ_ONLY,
            Error::TemplateIncomplete => ck::CKR_TEMPLATE_INCOMPLETE,
            Error::TemplateInconsistent => ck::CKR_TEMPLATE_INCONSISTENT,
            Error::ActionProhibited => ck::CKR_ACTION_PROHIBITED,
            Error::KeySizeRange => ck::CKR_KEY_SIZE_RANGE,
            Error::FunctionFailed(_) => ck::CKR_FUNCTION_FAILED,
            Error::RandomSeedNotSupported => ck::CKR_RANDOM_SEED_NOT_SUPPORTED,
            Error::Device(_) | Error::StaleEpoch => ck::CKR_DEVICE_ERROR,
            Error::HostMemory => ck::CKR_HOST_MEMORY,
            Error::General(_) => ck::CKR_GENERAL_ERROR,
        }
    }
}

impl From<ittc_threshold::padding::PaddingError> for Error {
    /// Padding errors of encodings are caller errors about lengths; decoding failures
    /// are one code.
    fn from(err: ittc_threshold::padding::PaddingError) -> Self {
        use ittc_threshold::padding::PaddingError as P;
        match err {
            P::MessageTooLong { .. } | P::WrongDigestLength { .. } | P::InvalidLength { .. } => {
                Error::DataLenRange
            }
            P::SaltTooLong { .. } => Error::MechanismParamInvalid,
            P::ModulusTooSmall => Error::KeyTypeInconsistent,
            P::RandomFailure => Error::General("random number generator".into()),
            P::BadSignature => Error::SignatureInvalid,
            P::Decryption => Error::EncryptedDataInvalid,
        }
    }
}

/// What the core functions return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_code() {
        let table: &[(Error, CK_RV)] = &[
            (Error::ArgumentsBad, 0x07),
            (Error::NotInitialized, 0x190),
            (Error::AlreadyInitialized, 0x191),
            (Error::NeedToCreateThreads, 0x09),
            (Error::CantLock, 0x0a),
            (Error::FunctionNotSupported, 0x54),
            (Error::FunctionNotParallel, 0x51),
            (Error::NoEvent, 0x08),
            (Error::SlotIdInvalid, 0x03),
            (Error::SessionHandleInvalid, 0xb3),
            (Error::SessionParallelNotSupported, 0xb4),
            (Error::SessionReadOnly, 0xb5),
            (Error::SessionReadOnlyExists, 0xb7),
            (Error::ObjectHandleInvalid, 0x82),
            (Error::KeyHandleInvalid, 0x60),
            (Error::KeyFunctionNotPermitted, 0x68),
            (Error::KeyTypeInconsistent, 0x63),
            (Error::MechanismInvalid, 0x70),
            (Error::MechanismParamInvalid, 0x71),
            (Error::OperationActive, 0x90),
            (Error::OperationNotInitialized, 0x91),
            (Error::BufferTooSmall, 0x150),
            (Error::DataLenRange, 0x21),
            (Error::DataInvalid, 0x20),
            (Error::EncryptedDataInvalid, 0x40),
            (Error::EncryptedDataLenRange, 0x41),
            (Error::SignatureInvalid, 0xc0),
            (Error::SignatureLenRange, 0xc1),
            (Error::UserNotLoggedIn, 0x101),
            (Error::UserAlreadyLoggedIn, 0x100),
            (Error::UserAnotherAlreadyLoggedIn, 0x104),
            (Error::UserTypeInvalid, 0x103),
            (Error::UserPinNotInitialized, 0x102),
            (Error::PinIncorrect, 0xa0),
            (Error::PinLocked, 0xa4),
            (Error::PinLenRange, 0xa2),
            (Error::AttributeTypeInvalid, 0x12),
            (Error::AttributeValueInvalid, 0x13),
            (Error::AttributeSensitive, 0x11),
            (Error::AttributeReadOnly, 0x10),
            (Error::TemplateIncomplete, 0xd0),
            (Error::TemplateInconsistent, 0xd1),
            (Error::ActionProhibited, 0x1b),
            (Error::KeySizeRange, 0x62),
            (Error::FunctionFailed("x".into()), 0x06),
            (Error::RandomSeedNotSupported, 0x120),
            (Error::Device("x".into()), 0x30),
            (Error::StaleEpoch, 0x30),
            (Error::HostMemory, 0x02),
            (Error::General("x".into()), 0x05),
        ];
        for (err, rv) in table {
            assert_eq!(err.rv(), *rv, "{err:?}");
        }
    }

    #[test]
    fn decryption_failures_are_one_code() {
        use ittc_threshold::padding::PaddingError;
        assert_eq!(
            Error::from(PaddingError::Decryption),
            Error::EncryptedDataInvalid
        );
        assert_eq!(
            Error::from(PaddingError::BadSignature),
            Error::SignatureInvalid
        );
    }
}
