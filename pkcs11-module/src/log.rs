//! Logging: off unless `ITTC_PKCS11_LOG` is set.
//!
//! `ITTC_PKCS11_LOG=stderr` (or `stderr:FILTER`) logs to standard error;
//! `ITTC_PKCS11_LOG=/path/file` (or `/path/file:FILTER`) appends to a file. The filter is a
//! tracing filter such as `debug` or `ittc_pkcs11=trace`; the default is `info`. The module
//! installs a global subscriber only if the application has none and the variable is set;
//! PINs, plaintexts and shares are never logged.

use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// The environment variable that turns logging on.
pub const LOG_ENV: &str = "ITTC_PKCS11_LOG";

static INIT: Once = Once::new();

/// Installs the subscriber once per process, if `ITTC_PKCS11_LOG` asks for it.
pub fn init() {
    INIT.call_once(|| {
        let Ok(spec) = std::env::var(LOG_ENV) else {
            return;
        };
        let (target, filter) = match spec.rsplit_once(':') {
            Some((t, f)) if !f.contains('/') => (t.to_owned(), f.to_owned()),
            _ => (spec.clone(), "info".to_owned()),
        };
        let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false);
        let _ = if target == "stderr" || target.is_empty() {
            builder.with_writer(std::io::stderr).try_init()
        } else {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&target)
            {
                Ok(file) => builder.with_writer(std::sync::Mutex::new(file)).try_init(),
                Err(_) => builder.with_writer(std::io::stderr).try_init(),
            }
        };
    });
}
