//! `ittc sign`: a signature through the PKCS#11 module, as any application makes one. The
//! demo uses it to show the token working; operators can use it to check a host's setup.
//!
//! The module finds its cluster the usual way (`$ITTC_PKCS11_CONFIG`, then
//! `/etc/ittc/pkcs11.toml`, then the user's config folder): this command sets nothing.

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

use crate::error::CliError;

/// The module's file name.
pub const MODULE_FILE: &str = "libittc_pkcs11.so";

/// `libittc_pkcs11.so` next to this program, else the installed one (in the multiarch
/// PKCS#11 folder), if either is there.
pub fn default_module() -> Option<PathBuf> {
    crate::installed::beside(MODULE_FILE).or_else(|| crate::installed::module(MODULE_FILE))
}

fn token_error(what: &str) -> impl Fn(cryptoki::error::Error) -> CliError + '_ {
    move |e| CliError::Usage(format!("PKCS#11 {what}: {e}"))
}

/// Signs `message` with SHA-256 PKCS#1 v1.5 (`CKM_SHA256_RSA_PKCS`) by the private key with
/// `CKA_ID` = `id` on the first token of `module`, logged in with `pin`.
pub fn sign_sha256(
    module: &Path,
    id: &[u8],
    pin: &str,
    message: &[u8],
) -> Result<Vec<u8>, CliError> {
    let pkcs11 = Pkcs11::new(module).map_err(token_error("loading the module"))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(token_error("C_Initialize"))?;
    let signature = (|| {
        let slot = *pkcs11
            .get_slots_with_token()
            .map_err(token_error("C_GetSlotList"))?
            .first()
            .ok_or_else(|| CliError::Usage("the module shows no token".into()))?;
        let session = pkcs11
            .open_ro_session(slot)
            .map_err(token_error("C_OpenSession"))?;
        session
            .login(UserType::User, Some(&AuthPin::from(pin.to_owned())))
            .map_err(token_error("C_Login"))?;
        let key = *session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(id.to_vec()),
            ])
            .map_err(token_error("C_FindObjects"))?
            .first()
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "no private key with id {} on the token",
                    hex::encode(id)
                ))
            })?;
        session
            .sign(&Mechanism::Sha256RsaPkcs, key, message)
            .map_err(token_error("C_Sign"))
    })();
    pkcs11.finalize().map_err(token_error("C_Finalize"))?;
    signature
}
