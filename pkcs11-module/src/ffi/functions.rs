//! The implemented entry points. Each turns its pointers into checked values, calls the
//! core and writes the results back.

use std::ffi::c_void;

use cryptoki_sys::*;

use super::convert::{
    bytes, list, mechanism, mechanism_type, out, output, padded, slice_mut, template,
};
use super::{install, module, uninstall};
use crate::error::Error;
use crate::module::{InitOptions, Module, PIN_LEN};
use crate::objects::Lookup;

const VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

entry! {
    /// Initialises the library: NULL arguments, `CKF_OS_LOCKING_OK`, or all four mutex
    /// callbacks together with `CKF_OS_LOCKING_OK` (the module uses OS locks).
    fn C_Initialize(init_args: *mut c_void) {
        let mut threads = true;
        // SAFETY: NULL or a CK_C_INITIALIZE_ARGS, as the specification requires.
        if let Some(args) = unsafe { init_args.cast::<CK_C_INITIALIZE_ARGS>().as_ref() } {
            if !args.pReserved.is_null() {
                return Err(Error::ArgumentsBad);
            }
            let callbacks = [
                args.CreateMutex.is_some(),
                args.DestroyMutex.is_some(),
                args.LockMutex.is_some(),
                args.UnlockMutex.is_some(),
            ];
            let given = callbacks.iter().filter(|c| **c).count();
            if given != 0 && given != 4 {
                return Err(Error::ArgumentsBad);
            }
            if given == 4 && args.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Error::CantLock);
            }
            threads = args.flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS == 0;
        }
        let options = InitOptions { threads };
        install(|parent| match parent {
            Some(parent) => Ok(parent.fresh_after_fork(options)),
            None => Module::from_environment(options),
        })
    }
}

entry! {
    /// Ends the library's use by the application; no thread is left running.
    fn C_Finalize(reserved: *mut c_void) {
        if !reserved.is_null() {
            return Err(Error::ArgumentsBad);
        }
        uninstall()
    }
}

entry! {
    /// The library's description.
    fn C_GetInfo(info: *mut CK_INFO) {
        module()?;
        // SAFETY: NULL or valid, as the specification requires.
        let info = unsafe { out(info) }?;
        *info = CK_INFO {
            cryptokiVersion: CK_VERSION { major: 3, minor: 0 },
            manufacturerID: padded("ittc"),
            flags: 0,
            libraryDescription: padded("ittc threshold RSA token"),
            libraryVersion: VERSION,
        };
        Ok(())
    }
}

entry! {
    /// The one slot.
    fn C_GetSlotList(_token_present: CK_BBOOL, slots: *mut CK_SLOT_ID, count: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `*count` slots.
        unsafe { list(slots, count, &m.slot_list()) }
    }
}

entry! {
    /// The slot's description.
    fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) {
        let m = module()?;
        m.check_slot(slot)?;
        // SAFETY: NULL or valid.
        let info = unsafe { out(info) }?;
        *info = CK_SLOT_INFO {
            slotDescription: padded("ittc cluster"),
            manufacturerID: padded("ittc"),
            flags: CKF_TOKEN_PRESENT | CKF_HW_SLOT,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
        };
        Ok(())
    }
}

entry! {
    /// The token's description.
    fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) {
        let m = module()?;
        let t = m.token_info(slot)?;
        // SAFETY: NULL or valid.
        let info = unsafe { out(info) }?;
        *info = CK_TOKEN_INFO {
            label: padded(&t.label),
            manufacturerID: padded("ittc"),
            model: padded("threshold RSA"),
            serialNumber: padded(&t.serial),
            flags: CKF_RNG | CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: t.sessions,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: t.rw_sessions,
            ulMaxPinLen: PIN_LEN.1,
            ulMinPinLen: PIN_LEN.0,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
            utcTime: [b' '; 16],
        };
        Ok(())
    }
}

entry! {
    /// The mechanisms.
    fn C_GetMechanismList(slot: CK_SLOT_ID, mechanisms: *mut CK_MECHANISM_TYPE, count: *mut CK_ULONG) {
        let m = module()?;
        let all = m.mechanism_list(slot)?;
        // SAFETY: NULL or valid for `*count` values.
        unsafe { list(mechanisms, count, &all) }
    }
}

entry! {
    /// One mechanism's key sizes (in bits) and flags.
    fn C_GetMechanismInfo(slot: CK_SLOT_ID, kind: CK_MECHANISM_TYPE, info: *mut CK_MECHANISM_INFO) {
        let m = module()?;
        let (min, max, flags) = m.mechanism_info(slot, kind)?;
        // SAFETY: NULL or valid.
        let info = unsafe { out(info) }?;
        *info = CK_MECHANISM_INFO {
            ulMinKeySize: min,
            ulMaxKeySize: max,
            flags,
        };
        Ok(())
    }
}

entry! {
    /// The security officer sets the user PIN.
    fn C_InitPIN(session: CK_SESSION_HANDLE, pin: *mut CK_UTF8CHAR, len: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let pin = unsafe { bytes(pin, len) }?;
        m.init_pin(session, pin)
    }
}

entry! {
    /// Changes the PIN.
    fn C_SetPIN(session: CK_SESSION_HANDLE, old: *mut CK_UTF8CHAR, old_len: CK_ULONG, new: *mut CK_UTF8CHAR, new_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for their lengths.
        let (old, new) = unsafe { (bytes(old, old_len)?, bytes(new, new_len)?) };
        m.set_pin(session, old, new)
    }
}

entry! {
    /// Opens a session.
    fn C_OpenSession(slot: CK_SLOT_ID, flags: CK_FLAGS, _app: *mut c_void, _notify: CK_NOTIFY, session: *mut CK_SESSION_HANDLE) {
        let m = module()?;
        // SAFETY: NULL or valid.
        let session = unsafe { out(session) }?;
        *session = m.open_session(slot, flags)?;
        Ok(())
    }
}

entry! {
    /// Closes a session.
    fn C_CloseSession(session: CK_SESSION_HANDLE) {
        module()?.close_session(session)
    }
}

entry! {
    /// Closes every session.
    fn C_CloseAllSessions(slot: CK_SLOT_ID) {
        module()?.close_all_sessions(slot)
    }
}

entry! {
    /// A session's state.
    fn C_GetSessionInfo(session: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO) {
        let m = module()?;
        let s = m.session_info(session)?;
        // SAFETY: NULL or valid.
        let info = unsafe { out(info) }?;
        *info = CK_SESSION_INFO {
            slotID: crate::module::SLOT_ID,
            state: s.state,
            flags: s.flags,
            ulDeviceError: 0,
        };
        Ok(())
    }
}

entry! {
    /// Logs in: the appliances check the PIN.
    fn C_Login(session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: *mut CK_UTF8CHAR, len: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let pin = unsafe { bytes(pin, len) }?;
        m.login(session, user, pin)
    }
}

entry! {
    /// Logs out.
    fn C_Logout(session: CK_SESSION_HANDLE) {
        module()?.logout(session)
    }
}

entry! {
    /// Creates a certificate, public key or data object: on the appliances, or as a
    /// session object.
    fn C_CreateObject(session: CK_SESSION_HANDLE, attrs: *mut CK_ATTRIBUTE, count: CK_ULONG, object: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: NULL or valid for `count` attributes.
        let template = unsafe { template(attrs, count) }?;
        // SAFETY: NULL or valid.
        let object = unsafe { out(object) }?;
        *object = m.create_object(session, &template)?;
        Ok(())
    }
}

entry! {
    /// Copies an object (a cluster key's private key: as a session object).
    fn C_CopyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, attrs: *mut CK_ATTRIBUTE, count: CK_ULONG, new_object: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: NULL or valid for `count` attributes.
        let template = unsafe { template(attrs, count) }?;
        // SAFETY: NULL or valid.
        let new_object = unsafe { out(new_object) }?;
        *new_object = m.copy_object(session, object, &template)?;
        Ok(())
    }
}

entry! {
    /// Generates an RSA key pair on the appliances together (`CKM_RSA_PKCS_KEY_PAIR_GEN`):
    /// blocks until they are done, then returns both handles.
    fn C_GenerateKeyPair(session: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM, public_attrs: *mut CK_ATTRIBUTE, public_count: CK_ULONG, private_attrs: *mut CK_ATTRIBUTE, private_count: CK_ULONG, public_key: *mut CK_OBJECT_HANDLE, private_key: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: NULL or a valid mechanism.
        let kind = unsafe { mechanism_type(mech) }?;
        // SAFETY: NULL or valid for `public_count` attributes.
        let public_template = unsafe { template(public_attrs, public_count) }?;
        // SAFETY: NULL or valid for `private_count` attributes.
        let private_template = unsafe { template(private_attrs, private_count) }?;
        // SAFETY: NULL or valid.
        let public_key = unsafe { out(public_key) }?;
        // SAFETY: NULL or valid.
        let private_key = unsafe { out(private_key) }?;
        let (public, private) =
            m.generate_key_pair(session, kind, &public_template, &private_template)?;
        *public_key = public;
        *private_key = private;
        Ok(())
    }
}

entry! {
    /// Destroys an object.
    fn C_DestroyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) {
        module()?.destroy_object(session, object)
    }
}

entry! {
    /// An object's size: the bytes of the attribute values it shows (an approximation of
    /// what it takes, as the specification allows).
    fn C_GetObjectSize(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, size: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid.
        let size = unsafe { out(size) }?;
        *size = CK_ULONG::try_from(m.object_size(session, object)?).map_err(|_| Error::HostMemory)?;
        Ok(())
    }
}

entry! {
    /// Reads attributes: every one is processed and has its length set.
    fn C_GetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, attrs: *mut CK_ATTRIBUTE, count: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `count` attributes.
        let attrs = unsafe { slice_mut(attrs, count) }?;
        let kinds: Vec<CK_ATTRIBUTE_TYPE> = attrs.iter().map(|a| a.type_).collect();
        let lookups = m.get_attributes(session, object, &kinds)?;
        let mut result = Ok(());
        for (attr, lookup) in attrs.iter_mut().zip(lookups) {
            match lookup {
                Lookup::Sensitive => {
                    attr.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = Err(Error::AttributeSensitive);
                }
                Lookup::Invalid => {
                    attr.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = Err(Error::AttributeTypeInvalid);
                }
                Lookup::Value(value) => {
                    let len = CK_ULONG::try_from(value.len()).map_err(|_| Error::HostMemory)?;
                    if attr.pValue.is_null() {
                        attr.ulValueLen = len;
                    } else if attr.ulValueLen >= len {
                        // SAFETY: the application gave `ulValueLen >= len` writable bytes.
                        let dst = unsafe { slice_mut(attr.pValue.cast::<u8>(), len) }?;
                        dst.copy_from_slice(&value);
                        attr.ulValueLen = len;
                    } else {
                        attr.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        result = Err(Error::BufferTooSmall);
                    }
                }
            }
        }
        result
    }
}

entry! {
    /// Changes attributes (`CKA_ID`, `CKA_LABEL`, data object values) on every appliance.
    fn C_SetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, attrs: *mut CK_ATTRIBUTE, count: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `count` attributes.
        let template = unsafe { template(attrs, count) }?;
        m.set_attributes(session, object, &template)
    }
}

entry! {
    /// Starts a search.
    fn C_FindObjectsInit(session: CK_SESSION_HANDLE, attrs: *mut CK_ATTRIBUTE, count: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `count` attributes.
        let template = unsafe { template(attrs, count) }?;
        m.find_init(session, &template)
    }
}

entry! {
    /// Continues a search.
    fn C_FindObjects(session: CK_SESSION_HANDLE, objects: *mut CK_OBJECT_HANDLE, max: CK_ULONG, count: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid.
        let count = unsafe { out(count) }?;
        // SAFETY: NULL or valid for `max` handles.
        let dst = unsafe { slice_mut(objects, max) }?;
        let found = m.find(session, dst.len())?;
        for (d, s) in dst.iter_mut().zip(&found) {
            *d = *s;
        }
        *count = CK_ULONG::try_from(found.len()).map_err(|_| Error::HostMemory)?;
        Ok(())
    }
}

entry! {
    /// Ends a search.
    fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) {
        module()?.find_final(session)
    }
}

entry! {
    /// Starts encryption with the public key.
    fn C_EncryptInit(session: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: NULL or a valid mechanism.
        let mech = unsafe { mechanism(mech) }?;
        m.encrypt_init(session, mech, key)
    }
}

entry! {
    /// Encrypts (locally, with the public key).
    fn C_Encrypt(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out_buf: *mut CK_BYTE, out_len: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: NULL or valid for `*out_len` bytes.
        unsafe { output(out_buf, out_len, || m.encrypt_len(session), || m.encrypt(session, data)) }
    }
}

entry! {
    /// Adds plaintext to a multi-part encryption: buffered up to the modulus length,
    /// nothing comes out before `C_EncryptFinal`.
    fn C_EncryptUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out_buf: *mut CK_BYTE, out_len: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: NULL or valid for `*out_len` bytes.
        unsafe { output(out_buf, out_len, || m.encrypt_update_len(session), || m.encrypt_update(session, data)) }
    }
}

entry! {
    /// Encrypts what the parts gave (locally, with the public key).
    fn C_EncryptFinal(session: CK_SESSION_HANDLE, out_buf: *mut CK_BYTE, out_len: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `*out_len` bytes.
        unsafe { output(out_buf, out_len, || m.encrypt_len(session), || m.encrypt_final(session)) }
    }
}

entry! {
    /// Starts decryption with a cluster key.
    fn C_DecryptInit(session: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: NULL or a valid mechanism.
        let mech = unsafe { mechanism(mech) }?;
        m.decrypt_init(session, mech, key)
    }
}

entry! {
    /// Decrypts through the cluster.
    fn C_Decrypt(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out_buf: *mut CK_BYTE, out_len: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: NULL or valid for `*out_len` bytes.
        unsafe { output(out_buf, out_len, || m.decrypt_len(session), || m.decrypt(session, data)) }
    }
}

entry! {
    /// Adds ciphertext to a multi-part decryption: buffered up to the modulus length,
    /// nothing comes out before `C_DecryptFinal`.
    fn C_DecryptUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out_buf: *mut CK_BYTE, out_len: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: NULL or valid for `*out_len` bytes.
        unsafe { output(out_buf, out_len, || m.decrypt_update_len(session), || m.decrypt_update(session, data)) }
    }
}

entry! {
    /// Decrypts what the parts gave, through the cluster.
    fn C_DecryptFinal(session: CK_SESSION_HANDLE, out_buf: *mut CK_BYTE, out_len: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `*out_len` bytes.
        unsafe { output(out_buf, out_len, || m.decrypt_len(session), || m.decrypt_final(session)) }
    }
}

entry! {
    /// Starts a digest.
    fn C_DigestInit(session: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM) {
        let m = module()?;
        // SAFETY: NULL or a valid mechanism.
        let mech = unsafe { mechanism(mech) }?;
        m.digest_init(session, mech)
    }
}

entry! {
    /// Digests in one part.
    fn C_Digest(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out_buf: *mut CK_BYTE, out_len: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: NULL or valid for `*out_len` bytes.
        unsafe { output(out_buf, out_len, || m.digest_len(session), || m.digest(session, data)) }
    }
}

entry! {
    /// Adds data to a digest.
    fn C_DigestUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let data = unsafe { bytes(data, len) }?;
        m.digest_update(session, data)
    }
}

entry! {
    /// Finishes a digest.
    fn C_DigestFinal(session: CK_SESSION_HANDLE, out_buf: *mut CK_BYTE, out_len: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `*out_len` bytes.
        unsafe { output(out_buf, out_len, || m.digest_len(session), || m.digest_final(session)) }
    }
}

entry! {
    /// Starts signing with a cluster key.
    fn C_SignInit(session: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: NULL or a valid mechanism.
        let mech = unsafe { mechanism(mech) }?;
        m.sign_init(session, mech, key)
    }
}

entry! {
    /// Signs in one part, through the cluster.
    fn C_Sign(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out_buf: *mut CK_BYTE, out_len: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: NULL or valid for `*out_len` bytes.
        unsafe { output(out_buf, out_len, || m.sign_len(session), || m.sign(session, data)) }
    }
}

entry! {
    /// Adds data to a signature.
    fn C_SignUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let data = unsafe { bytes(data, len) }?;
        m.sign_update(session, data)
    }
}

entry! {
    /// Finishes a multi-part signature.
    fn C_SignFinal(session: CK_SESSION_HANDLE, out_buf: *mut CK_BYTE, out_len: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `*out_len` bytes.
        unsafe { output(out_buf, out_len, || m.sign_len(session), || m.sign_final(session)) }
    }
}

entry! {
    /// Starts verification (local, with the public key).
    fn C_VerifyInit(session: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: NULL or a valid mechanism.
        let mech = unsafe { mechanism(mech) }?;
        m.verify_init(session, mech, key)
    }
}

entry! {
    /// Verifies in one part.
    fn C_Verify(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, sig: *mut CK_BYTE, sig_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for their lengths.
        let (data, sig) = unsafe { (bytes(data, len)?, bytes(sig, sig_len)?) };
        m.verify(session, data, sig)
    }
}

entry! {
    /// Adds data to a verification.
    fn C_VerifyUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let data = unsafe { bytes(data, len) }?;
        m.verify_update(session, data)
    }
}

entry! {
    /// Finishes a multi-part verification.
    fn C_VerifyFinal(session: CK_SESSION_HANDLE, sig: *mut CK_BYTE, sig_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `sig_len` bytes.
        let sig = unsafe { bytes(sig, sig_len) }?;
        m.verify_final(session, sig)
    }
}

entry! {
    /// Seeding is not supported: the module draws from the operating system.
    fn C_SeedRandom(session: CK_SESSION_HANDLE, _seed: *mut CK_BYTE, _len: CK_ULONG) {
        module()?.seed_random(session)
    }
}

entry! {
    /// Random bytes from the operating system.
    fn C_GenerateRandom(session: CK_SESSION_HANDLE, buf: *mut CK_BYTE, len: CK_ULONG) {
        let m = module()?;
        // SAFETY: NULL or valid for `len` bytes.
        let buf = unsafe { slice_mut(buf, len) }?;
        m.generate_random(session, buf)
    }
}
