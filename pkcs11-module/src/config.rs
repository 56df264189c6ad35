//! Finding `pkcs11.toml`: `$ITTC_PKCS11_CONFIG`, then `/etc/ittc/pkcs11.toml`, then the
//! user's config folder (`$XDG_CONFIG_HOME/ittc/pkcs11.toml` or `~/.config/ittc/…`).

use std::path::PathBuf;

use ittc_wire::cluster::ClusterConfig;

use crate::error::{Error, Result};

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "ITTC_PKCS11_CONFIG";

/// The system-wide configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/ittc/pkcs11.toml";

/// Where the module looks for its configuration, in order.
pub fn candidates() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os(CONFIG_ENV) {
        // An explicit choice is the only one: a typo must not silently pick another file.
        return vec![PathBuf::from(path)];
    }
    let mut out = vec![PathBuf::from(SYSTEM_CONFIG)];
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(xdg).join("ittc").join("pkcs11.toml"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        out.push(
            PathBuf::from(home)
                .join(".config")
                .join("ittc")
                .join("pkcs11.toml"),
        );
    }
    out
}

/// Loads the first configuration file that exists.
///
/// Besides the log, the cause goes to standard error when no log is configured and
/// someone meant this module to be used here: a file was found but is unusable, or
/// `ITTC_PKCS11_CONFIG` names a file that is not there. With no file anywhere and
/// nothing named, it stays silent, since p11-kit loads every registered module into
/// programs that never use this one.
///
/// # Errors
///
/// [`Error::General`] (logged with the cause) if none exists or the file is unusable.
pub fn load() -> Result<ClusterConfig> {
    for path in candidates() {
        if path.is_file() {
            return ClusterConfig::load(&path).map_err(|err| {
                tracing::error!(path = %path.display(), %err, "unusable configuration");
                tell(&err.to_string());
                Error::General(format!("configuration: {err}"))
            });
        }
    }
    tracing::error!(candidates = ?candidates(), "no configuration file found");
    if let Some(named) = std::env::var_os(CONFIG_ENV) {
        let named = PathBuf::from(named);
        let what = if named.exists() {
            "not a file"
        } else {
            "no such file"
        };
        tell(&format!("{CONFIG_ENV}={}: {what}", named.display()));
    }
    Err(Error::General("no configuration file found".into()))
}

/// One line on standard error about a configuration that stops `C_Initialize`, unless
/// `ITTC_PKCS11_LOG` is set (the log then says it). A failed write is ignored.
fn tell(cause: &str) {
    if std::env::var_os(crate::log::LOG_ENV).is_none() {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "ittc PKCS#11 module: {cause}; C_Initialize fails with CKR_GENERAL_ERROR"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_file_comes_before_the_user_file() {
        if std::env::var_os(CONFIG_ENV).is_none() {
            let c = candidates();
            assert_eq!(c.first(), Some(&PathBuf::from(SYSTEM_CONFIG)));
        }
    }
}
