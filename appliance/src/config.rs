//! The appliance's configuration: one TOML file.
//!
//! Relative paths in the file are relative to the file's own folder, so a cluster folder
//! made by `ittc init` can be moved as a whole. Unknown fields are refused (a typo must not
//! silently leave a default in force), and every error names the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, e.g. `0.0.0.0:7301` (port 0: any free port, printed at start).
    pub listen: SocketAddr,
    /// This appliance's index in the cluster, 1..=16.
    pub index: u8,
    /// The cluster's id, 32 hex digits; reported in the handshake and status.
    pub cluster_id: String,
    /// Folder of the share database (created if absent).
    pub data_dir: PathBuf,
    /// Certificates and key.
    pub tls: TlsConfig,
    /// The sealing key that encrypts shares at rest.
    pub sealing: SealingConfig,
    /// The other appliances (used by key generation and refresh).
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: Limits,
    /// PIN policy.
    #[serde(default)]
    pub pin: PinPolicy,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Key generation with the peers.
    #[serde(default)]
    pub keygen: KeygenConfig,
    /// Proactive refresh of every key with the peers.
    #[serde(default)]
    pub refresh: RefreshConfig,
    /// Which exponentiation backend runs the partial operation: `openssl`,
    /// `crypto-bigint` or `gmp` (each where this build has it). Default: OpenSSL where
    /// this build has it, else crypto-bigint; GMP only when named.
    #[serde(default)]
    pub backend: Option<String>,
    /// Serial numbers (hex) of certificates to refuse from the start: put on the
    /// deny-list when the appliance starts. `ittc appliance replace` writes the cluster's
    /// revoked serials here in a new appliance's configuration, so that it refuses a
    /// revoked peer before it has taken its peers' deny-list.
    #[serde(default)]
    pub revoked: Vec<String>,
    /// How the process protects itself.
    #[serde(default)]
    pub process: ProcessConfig,
    /// The audit log's retention and export.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The Prometheus metrics listener (off unless `metrics.listen` is set).
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// The Prometheus metrics listener (docs/appliance.md, "Metrics"): plain HTTP with no
/// authentication, so on a loopback address unless `allow_remote` says otherwise.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics`, e.g. `127.0.0.1:9464`; none (the default): off.
    pub listen: Option<SocketAddr>,
    /// Allow an address other than loopback. The metrics hold no secret, but they say
    /// which keys exist and how busy the appliance is, to anyone who can connect.
    pub allow_remote: bool,
}

/// How much of the audit log the database keeps, and where the rest goes (docs/appliance.md,
/// "Audit log"). An entry leaves the database once it is past the newest `keep_entries`
/// or older than `keep_days`, whichever comes first.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The folder of the export files (JSON lines). Default: `audit-export` in
    /// `data_dir`.
    pub export_dir: Option<PathBuf>,
    /// The newest entries the database keeps; 0: no limit by count.
    pub keep_entries: u64,
    /// Entries older than this many days leave the database; 0: no limit by age.
    pub keep_days: u64,
    /// How often the appliance moves entries out, in seconds; 0: never (the database then
    /// keeps every entry).
    pub export_interval_s: u64,
    /// The most entries in one export file.
    pub file_entries: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            export_dir: None,
            keep_entries: 100_000,
            keep_days: 0,
            export_interval_s: 60,
            file_entries: 1_000_000,
        }
    }
}

impl AuditConfig {
    /// The longest `keep_days` accepted (about 100 years).
    pub const MAX_KEEP_DAYS: u64 = 36_500;

    /// How often entries are moved out; zero when never.
    pub fn export_interval(&self) -> Duration {
        Duration::from_secs(self.export_interval_s)
    }

    /// The retention as the store applies it.
    pub fn policy(&self) -> crate::storage::ExportPolicy {
        crate::storage::ExportPolicy {
            keep_entries: self.keep_entries,
            keep_ms: self.keep_days.saturating_mul(86_400_000),
            file_entries: self.file_entries,
        }
    }
}

/// How the process protects itself (docs/appliance.md, "Process hygiene").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Run even as root (user id 0); `--allow-root` says the same. Default: no, an
    /// appliance runs as a user of its own.
    pub allow_root: bool,
    /// Keep the process's memory, where shares and keys pass, out of swap (`mlockall`,
    /// each page as it is first touched). Best effort: without `CAP_IPC_LOCK` it is done
    /// only when `RLIMIT_MEMLOCK` is unlimited, and what happened is logged at start.
    pub lock_memory: bool,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            allow_root: false,
            lock_memory: true,
        }
    }
}

/// Certificate files, PEM.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate: the only CA whose certificates are accepted.
    pub ca: PathBuf,
    /// This appliance's certificate (role `appliance-<index>`).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Where the sealing key is. It is never stored in the database.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealingConfig {
    /// File holding the 256-bit sealing key as 64 hex digits.
    pub key_file: PathBuf,
}

/// Another appliance.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its index.
    pub index: u8,
    /// Its address.
    pub address: String,
}

/// Limits and timeouts. Every one has a default.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frame accepted, in bytes (at most the protocol's 1 MiB).
    pub max_frame: usize,
    /// Concurrent authenticated connections (past the TLS handshake); more are closed at
    /// once.
    pub max_connections: usize,
    /// Connections still in their TLS handshake; a new one closes the one that has waited
    /// longest.
    pub max_handshakes: usize,
    /// Partial operations admitted at once (running or waiting for a core); more get
    /// `Busy`.
    pub max_inflight_partials: usize,
    /// Partial operations that run at once, each on a runtime worker thread (the runtime
    /// has one more); 0: one per core.
    pub partial_workers: usize,
    /// Time for the TLS handshake, ms.
    pub handshake_timeout_ms: u64,
    /// Time to receive a frame once its first byte arrived, ms.
    pub read_timeout_ms: u64,
    /// Time to send a response, ms.
    pub write_timeout_ms: u64,
    /// Time a connection may wait between requests, ms.
    pub idle_timeout_ms: u64,
    /// Time in-flight requests get to finish at shutdown, ms.
    pub shutdown_grace_ms: u64,
    /// The most the share database keeps cached in memory, MiB.
    pub store_cache_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: ittc_wire::MAX_FRAME,
            max_connections: 256,
            max_handshakes: 1024,
            max_inflight_partials: 64,
            partial_workers: 0,
            handshake_timeout_ms: 5_000,
            read_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            shutdown_grace_ms: 10_000,
            store_cache_mb: 64,
        }
    }
}

impl Limits {
    /// Handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// Read timeout.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
    /// Write timeout.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
    /// Idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// Shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
    /// How many partial operations may run at once.
    pub fn workers(&self) -> usize {
        if self.partial_workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.partial_workers
        }
    }
}

/// PIN policy and the cost of the PIN hash.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PinPolicy {
    /// Wrong PINs in a row before the PIN locks.
    pub max_failures: u32,
    /// Shortest PIN accepted when one is set.
    pub min_length: usize,
    /// Argon2id memory, KiB.
    pub argon2_m_cost_kib: u32,
    /// Argon2id passes.
    pub argon2_t_cost: u32,
    /// Argon2id lanes.
    pub argon2_p_cost: u32,
    /// Seconds a login's PIN, once proven by the hash, is accepted again without it; 0
    /// never (storage's `pin.rs`).
    pub remember_s: u64,
}

impl Default for PinPolicy {
    fn default() -> Self {
        Self {
            max_failures: 10,
            min_length: 4,
            argon2_m_cost_kib: 19 * 1024,
            argon2_t_cost: 2,
            argon2_p_cost: 1,
            remember_s: 300,
        }
    }
}

/// Log output.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `ittc_appliance=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Key generation without a dealer (`GenerateKey`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeygenConfig {
    /// Smallest modulus accepted, bits: 2048 (1024 is for tests only).
    pub min_bits: u16,
    /// Longest a generation may take at this appliance, ms; then it gives up, tells the
    /// others and erases everything.
    pub timeout_ms: u64,
    /// Generations running at once; more get `Busy`.
    pub max_sessions: usize,
}

impl Default for KeygenConfig {
    fn default() -> Self {
        Self {
            min_bits: 2048,
            timeout_ms: 600_000,
            max_sessions: 2,
        }
    }
}

impl KeygenConfig {
    /// The generation timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Proactive refresh: how often, and how long one may take.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    /// How often every key gets a new sharing, e.g. `"1h"`, `"15m"`, `"30s"` (or a
    /// number of seconds); `"0"` turns scheduled refresh off. The appliance with index 1
    /// starts them; the others take part.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Longest one refresh may take at this appliance, ms.
    pub timeout_ms: u64,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            timeout_ms: 60_000,
        }
    }
}

impl RefreshConfig {
    /// The deadline of one refresh.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Whether scheduled refresh is on.
    pub fn scheduled(&self) -> bool {
        !self.interval.is_zero()
    }
}

/// A duration written as `"1h"`, `"90s"`, `"2h 30m"` or a number of seconds.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Seconds(u64),
        Text(String),
    }
    match Written::deserialize(d)? {
        Written::Seconds(s) => Ok(Duration::from_secs(s)),
        Written::Text(t) if t.trim() == "0" => Ok(Duration::ZERO),
        Written::Text(t) => humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!(
                "{t:?} is not a duration like \"1h\" or \"30s\": {e}"
            ))
        }),
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

impl Config {
    /// Reads, parses and checks a configuration file; relative paths become relative to
    /// its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, format!("cannot read: {e}")))?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| ConfigError::new(path, toml_error(&text, &e)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        if config.audit.export_dir.is_none() {
            config.audit.export_dir = Some(config.data_dir.join("audit-export"));
        }
        config
            .check()
            .map_err(|(field, msg)| ConfigError::new(path, format!("{field}: {msg}")))?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.data_dir,
            &mut self.tls.ca,
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.sealing.key_file,
        ]
        .into_iter()
        .chain(self.audit.export_dir.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The serials of `revoked`, as the deny-list holds them (checked by `load`).
    pub fn revoked_serials(&self) -> Vec<Vec<u8>> {
        self.revoked
            .iter()
            .filter_map(|text| parse_serial(text))
            .collect()
    }

    /// The folder of the audit export files (`audit.export_dir`, by default in
    /// `data_dir`).
    pub fn audit_export_dir(&self) -> PathBuf {
        self.audit
            .export_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit-export"))
    }

    /// The cluster id as bytes.
    pub fn cluster_id_bytes(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        // check() has verified the format.
        let _ = hex::decode_to_slice(&self.cluster_id, &mut id);
        id
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=16).contains(&self.index) {
            return Err(("index", format!("{} is not in 1..=16", self.index)));
        }
        let mut id = [0u8; 16];
        if hex::decode_to_slice(&self.cluster_id, &mut id).is_err() {
            return Err(("cluster_id", "must be 32 hex digits".into()));
        }
        for (field, file) in [
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("sealing.key_file", &self.sealing.key_file),
        ] {
            if !file.is_file() {
                return Err((field, format!("{} is not a readable file", file.display())));
            }
        }
        for peer in &self.peers {
            if !(1..=16).contains(&peer.index) || peer.index == self.index {
                return Err((
                    "peers.index",
                    format!("{} is not another index in 1..=16", peer.index),
                ));
            }
        }
        let l = &self.limits;
        if l.max_frame < 1024 || l.max_frame > ittc_wire::MAX_FRAME {
            return Err((
                "limits.max_frame",
                format!("must be in 1024..={}", ittc_wire::MAX_FRAME),
            ));
        }
        for (field, value) in [
            ("limits.max_connections", l.max_connections as u64),
            ("limits.max_handshakes", l.max_handshakes as u64),
            (
                "limits.max_inflight_partials",
                l.max_inflight_partials as u64,
            ),
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms),
            ("limits.read_timeout_ms", l.read_timeout_ms),
            ("limits.write_timeout_ms", l.write_timeout_ms),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
            ("limits.store_cache_mb", l.store_cache_mb),
            ("pin.max_failures", u64::from(self.pin.max_failures)),
            ("keygen.timeout_ms", self.keygen.timeout_ms),
            ("keygen.max_sessions", self.keygen.max_sessions as u64),
            ("refresh.timeout_ms", self.refresh.timeout_ms),
            ("pin.argon2_t_cost", u64::from(self.pin.argon2_t_cost)),
            ("pin.argon2_p_cost", u64::from(self.pin.argon2_p_cost)),
        ] {
            if value == 0 {
                return Err((field, "must be at least 1".into()));
            }
        }
        if let Some(address) = self.metrics.listen
            && !address.ip().is_loopback()
            && !self.metrics.allow_remote
        {
            return Err((
                "metrics.listen",
                format!(
                    "{address} is not a loopback address: the metrics listener has no TLS \
                     and no authentication (set metrics.allow_remote = true to serve it there \
                     anyway)"
                ),
            ));
        }
        if self.refresh.scheduled() && self.refresh.interval < Duration::from_secs(1) {
            return Err(("refresh.interval", "must be 0 (off) or at least 1s".into()));
        }
        if ![1024, 2048, 3072, 4096].contains(&self.keygen.min_bits) {
            return Err(("keygen.min_bits", "must be 1024, 2048, 3072 or 4096".into()));
        }
        if self.pin.argon2_m_cost_kib < 8 * self.pin.argon2_p_cost {
            return Err((
                "pin.argon2_m_cost_kib",
                "must be at least 8 × argon2_p_cost".into(),
            ));
        }
        if let Some(name) = &self.backend
            && ittc_threshold::Backend::from_name(name).is_none()
        {
            let have: Vec<&str> = ittc_threshold::Backend::available()
                .iter()
                .map(|b| b.get().name())
                .collect();
            return Err((
                "backend",
                format!("{name:?} is not in this build (have: {})", have.join(", ")),
            ));
        }
        if self.revoked.len() > ittc_wire::limits::MAX_REVOKED {
            return Err((
                "revoked",
                format!("more than {} serials", ittc_wire::limits::MAX_REVOKED),
            ));
        }
        if let Some(bad) = self.revoked.iter().find(|t| parse_serial(t).is_none()) {
            return Err((
                "revoked",
                format!("{bad:?} is not a certificate serial in hex"),
            ));
        }
        let audit = &self.audit;
        if audit.file_entries == 0 {
            return Err(("audit.file_entries", "must be at least 1".into()));
        }
        if audit.keep_days > AuditConfig::MAX_KEEP_DAYS {
            return Err((
                "audit.keep_days",
                format!("must be at most {}", AuditConfig::MAX_KEEP_DAYS),
            ));
        }
        if audit.export_interval_s > 0 && audit.keep_entries == 0 && audit.keep_days == 0 {
            return Err((
                "audit.keep_entries",
                "keep_entries and keep_days are both 0 (no retention): set one, or \
                 export_interval_s = 0 to keep every entry in the database"
                    .into(),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err((
                "log.level",
                format!("{:?} is not a valid filter", self.log.level),
            ));
        }
        Ok(())
    }
}

/// A serial in hex (leading zero bytes allowed) as the deny-list holds it, if it is one.
fn parse_serial(text: &str) -> Option<Vec<u8>> {
    let bytes = hex::decode(text).ok()?;
    let serial = ittc_wire::revocation::normalize_serial(&bytes);
    ittc_wire::revocation::check_serial(&serial).ok()?;
    Some(serial)
}

/// toml's errors span several lines (with a source excerpt); an operator gets one, with
/// the line number.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |t| t.matches('\n').count())
                + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration file whose TLS and sealing files exist (empty), with `extra` after
    /// the top-level keys.
    fn load_with(extra: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        for file in ["ca.pem", "a.pem", "a.key", "a.sealing"] {
            std::fs::write(dir.path().join(file), b"").unwrap();
        }
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\nindex = 1\ncluster_id = \"{}\"\ndata_dir = \"d\"\n{extra}\n\
                 [tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n\n\
                 [sealing]\nkey_file = \"a.sealing\"\n",
                "ab".repeat(16)
            ),
        )
        .unwrap();
        Config::load(&path)
    }

    #[test]
    fn backend_names_are_those_this_build_has() {
        for (name, built) in [
            ("crypto-bigint", true),
            ("openssl", cfg!(feature = "openssl-backend")),
            ("gmp", cfg!(feature = "gmp-backend")),
            ("GMP", false),
            ("num-bigint", false),
        ] {
            let loaded = load_with(&format!("backend = \"{name}\""));
            assert_eq!(loaded.is_ok(), built, "{name}");
            if let Err(err) = loaded {
                let err = err.to_string();
                assert!(
                    err.contains("backend") && err.contains("crypto-bigint"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn the_audit_retention_is_read_and_checked() {
        let config = load_with("").unwrap();
        assert_eq!(config.audit.keep_entries, 100_000);
        assert_eq!(config.audit.export_interval_s, 60);
        assert!(config.audit_export_dir().ends_with("d/audit-export"));
        let config = load_with(
            "[audit]\nexport_dir = \"exports\"\nkeep_entries = 0\nkeep_days = 30\n\
             export_interval_s = 5\nfile_entries = 10",
        )
        .unwrap();
        assert!(config.audit_export_dir().ends_with("exports"));
        assert!(config.audit_export_dir().is_absolute());
        assert_eq!(config.audit.policy().keep_ms, 30 * 86_400_000);
        for (bad, field) in [
            ("[audit]\nfile_entries = 0", "audit.file_entries"),
            ("[audit]\nkeep_entries = 0", "audit.keep_entries"),
            ("[audit]\nkeep_days = 40000", "audit.keep_days"),
            ("[audit]\nkeep = 5", "keep"),
        ] {
            let err = load_with(bad).unwrap_err().to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
        // No retention is fine when nothing is exported.
        assert!(load_with("[audit]\nkeep_entries = 0\nexport_interval_s = 0").is_ok());
    }

    #[test]
    fn revoked_serials_are_read_and_checked() {
        let config = load_with("revoked = [\"00ff01\", \"3C\"]").unwrap();
        assert_eq!(config.revoked_serials(), vec![vec![0xff, 1], vec![0x3c]]);
        assert!(load_with("").unwrap().revoked_serials().is_empty());
        for bad in [
            "revoked = [\"xyz\"]",
            "revoked = [\"\"]",
            "revoked = [\"0\"]",
        ] {
            let err = load_with(bad).unwrap_err().to_string();
            assert!(err.contains("revoked"), "{bad}: {err}");
        }
    }

    #[test]
    fn metrics_are_off_by_default_and_on_loopback_unless_allowed() {
        assert!(load_with("").unwrap().metrics.listen.is_none());
        let on = load_with("[metrics]\nlisten = \"127.0.0.1:9464\"").unwrap();
        assert_eq!(on.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(load_with("[metrics]\nlisten = \"[::1]:9464\"").is_ok());
        let err = load_with("[metrics]\nlisten = \"0.0.0.0:9464\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics.listen") && err.contains("allow_remote"),
            "{err}"
        );
        let remote = load_with("[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true");
        assert!(remote.is_ok());
    }
}
