//! The client side's description of a cluster: `pkcs11.toml`.
//!
//! One file, written by `ittc init`, read by the PKCS#11 module (found through
//! `$ITTC_PKCS11_CONFIG`, `/etc/ittc/pkcs11.toml` or the user's config folder) and by the
//! `ittc` CLI (in its cluster folder). It names the appliances, the threshold, the TLS files
//! and the timeouts; docs/config.md documents every field. Relative paths are relative to
//! the file's folder; unknown fields are refused.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::client::{Timeouts, TlsIdentity};
use crate::identity::MAX_APPLIANCES;
use crate::limits::{MAX_REVOKED, MAX_SERIAL_LEN};
use crate::revocation::{RevokedSerials, check_serial, normalize_serial};

/// The file name `ittc init` writes in a cluster folder.
pub const FILE_NAME: &str = "pkcs11.toml";

/// A cluster as its clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster id, 32 hex digits; every appliance must report it.
    pub cluster_id: String,
    /// How many appliances make a result (k).
    pub threshold: u8,
    /// Serial numbers (hex, as [`crate::revocation::normalize_serial`] gives them) of
    /// certificates revoked in this cluster: a client refuses an appliance that presents
    /// one ([`ClusterConfig::client_config_for`]). `ittc appliance replace` adds a
    /// replaced appliance's old certificate here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
    /// The client's TLS files.
    pub tls: TlsFiles,
    /// Every appliance, k or more of them.
    pub appliances: Vec<ApplianceEntry>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// What the PKCS#11 token shows.
    #[serde(default)]
    pub token: TokenConfig,
}

/// CA, certificate and key, PEM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This host's certificate (role `client`).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// One appliance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceEntry {
    /// Its index, 1..=16.
    pub index: u8,
    /// `host:port`; a host name is resolved at each connection.
    pub address: String,
}

impl ApplianceEntry {
    /// Resolves the address (first result).
    pub fn resolve(&self) -> Result<SocketAddr, Error> {
        self.address
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("appliance {}: {}: {e}", self.index, self.address)))?
            .next()
            .ok_or_else(|| {
                Error::Config(format!(
                    "appliance {}: {} resolves to nothing",
                    self.index, self.address
                ))
            })
    }
}

/// Timeouts, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// TCP connect.
    pub connect_ms: u64,
    /// A whole exchange: handshake, or one request and its response.
    pub request_ms: u64,
    /// After an appliance failed, how long to leave it alone before trying it again.
    pub retry_after_ms: u64,
    /// How long the PKCS#11 module waits for the appliances' answers to a key generation
    /// (`C_GenerateKeyPair`); longer than the appliances' own `keygen.timeout_ms`
    /// (600 s by default), after which they give up by themselves.
    pub keygen_ms: u64,
    /// A partial that has not come back within three times the recent 99th percentile of
    /// partial latency is also asked of another appliance (a hedge); this is the least
    /// that wait may be.
    pub hedge_floor_ms: u64,
    /// The most that wait may be, also before enough latencies are known.
    pub hedge_ceiling_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect_ms: 2_000,
            request_ms: 10_000,
            retry_after_ms: 5_000,
            keygen_ms: 660_000,
            hedge_floor_ms: 20,
            hedge_ceiling_ms: 300,
        }
    }
}

impl TimeoutConfig {
    /// As the client connection's timeouts.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.connect_ms),
            io: Duration::from_millis(self.request_ms),
        }
    }

    /// The back-off after a failure.
    pub fn retry_after(&self) -> Duration {
        Duration::from_millis(self.retry_after_ms)
    }

    /// The bounds of the wait before a hedge: `(floor, ceiling)`.
    pub fn hedge_bounds(&self) -> (Duration, Duration) {
        let floor = Duration::from_millis(self.hedge_floor_ms);
        (
            floor,
            Duration::from_millis(self.hedge_ceiling_ms).max(floor),
        )
    }

    /// How long to wait for a key generation's answers.
    pub fn keygen(&self) -> Duration {
        Duration::from_millis(self.keygen_ms)
    }
}

/// The token's face.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// `CK_TOKEN_INFO.label`, at most 32 bytes.
    pub label: String,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            label: "ittc".into(),
        }
    }
}

impl ClusterConfig {
    /// Every appliance as a participant of a key generation ([`crate::KeygenSpec`]).
    pub fn participants(&self) -> Vec<crate::Participant> {
        self.appliances
            .iter()
            .map(|a| crate::Participant {
                index: a.index,
                address: a.address.clone(),
            })
            .collect()
    }

    /// Reads and checks a file; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            path: path.to_owned(),
            source,
        })?;
        let mut config: ClusterConfig = toml::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{}: {}",
                path.display(),
                e.message().replace('\n', " ")
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config
            .check()
            .map_err(|m| Error::Config(format!("{}: {m}", path.display())))?;
        Ok(config)
    }

    /// The file's text (what `ittc init` writes).
    pub fn to_toml(&self) -> Result<String, Error> {
        toml::to_string_pretty(self).map_err(|e| Error::Encode(e.to_string()))
    }

    /// The cluster id as bytes.
    pub fn cluster_id_bytes(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = self
                .cluster_id
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
        id
    }

    /// Loads the TLS identity the file names.
    pub fn identity(&self) -> Result<TlsIdentity, Error> {
        TlsIdentity::from_pem_files(&self.tls.ca, &self.tls.cert, &self.tls.key)
    }

    /// The serials of [`ClusterConfig::revoked`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an entry that is not a serial in hex.
    pub fn revoked_serials(&self) -> Result<RevokedSerials, Error> {
        let serials = self
            .revoked
            .iter()
            .map(|text| parse_serial(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Config)?;
        Ok(RevokedSerials::new(serials.iter().map(Vec::as_slice)))
    }

    /// The configuration for connecting to the appliances with `identity` (the client's
    /// own, or the admin's): [`TlsIdentity::client_config`], refusing the certificates of
    /// [`ClusterConfig::revoked`].
    ///
    /// # Errors
    ///
    /// As [`ClusterConfig::revoked_serials`] and [`TlsIdentity::client_config_with`].
    pub fn client_config_for(&self, identity: &TlsIdentity) -> Result<Arc<ClientConfig>, Error> {
        let revoked = self.revoked_serials()?;
        if revoked.is_empty() {
            identity.client_config()
        } else {
            identity.client_config_with(Arc::new(revoked))
        }
    }

    /// The appliance with this index.
    pub fn appliance(&self, index: u8) -> Option<&ApplianceEntry> {
        self.appliances.iter().find(|a| a.index == index)
    }

    fn check(&self) -> Result<(), String> {
        if self.cluster_id.len() != 32 || !self.cluster_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("cluster_id: must be 32 hex digits".into());
        }
        let n = self.appliances.len();
        if self.threshold < 2 || usize::from(self.threshold) > n {
            return Err(format!(
                "threshold: {} is not in 2..={n} (the number of appliances)",
                self.threshold
            ));
        }
        for (pos, a) in self.appliances.iter().enumerate() {
            if a.index == 0 || a.index > MAX_APPLIANCES {
                return Err(format!(
                    "appliances.index: {} is not in 1..={MAX_APPLIANCES}",
                    a.index
                ));
            }
            if self.appliances.iter().take(pos).any(|b| b.index == a.index) {
                return Err(format!("appliances.index: {} appears twice", a.index));
            }
            if a.address.is_empty() {
                return Err(format!(
                    "appliances.address: empty for appliance {}",
                    a.index
                ));
            }
        }
        if self.timeouts.connect_ms == 0 || self.timeouts.request_ms == 0 {
            return Err("timeouts: connect_ms and request_ms must be at least 1".into());
        }
        if self.timeouts.keygen_ms == 0 {
            return Err("timeouts: keygen_ms must be at least 1".into());
        }
        if self.token.label.is_empty() || self.token.label.len() > 32 {
            return Err("token.label: 1 to 32 bytes".into());
        }
        if self.revoked.len() > MAX_REVOKED {
            return Err(format!("revoked: more than {MAX_REVOKED} serials"));
        }
        for text in &self.revoked {
            parse_serial(text)?;
        }
        Ok(())
    }
}

/// A serial written in hex (leading zero bytes allowed), as bytes without them.
fn parse_serial(text: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("revoked: {text:?} is not a certificate serial in hex");
    if text.is_empty() || !text.len().is_multiple_of(2) || text.len() > 2 * (MAX_SERIAL_LEN + 1) {
        return Err(bad());
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let serial = normalize_serial(&bytes);
    check_serial(&serial).map_err(|_| bad())?;
    Ok(serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterConfig {
        ClusterConfig {
            cluster_id: "00112233445566778899aabbccddeeff".into(),
            threshold: 2,
            revoked: Vec::new(),
            tls: TlsFiles {
                ca: "ca.pem".into(),
                cert: "client.pem".into(),
                key: "client.key".into(),
            },
            appliances: (1..=3)
                .map(|i| ApplianceEntry {
                    index: i,
                    address: format!("127.0.0.1:{}", 7300 + u16::from(i)),
                })
                .collect(),
            timeouts: TimeoutConfig::default(),
            token: TokenConfig::default(),
        }
    }

    #[test]
    fn round_trips_through_a_file_and_resolves_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, sample().to_toml().unwrap()).unwrap();
        let loaded = ClusterConfig::load(&path).unwrap();
        assert_eq!(loaded.tls.ca, dir.path().join("ca.pem"));
        assert_eq!(loaded.appliances, sample().appliances);
        assert_eq!(loaded.cluster_id_bytes()[15], 0xff);
        assert_eq!(loaded.appliance(2).unwrap().resolve().unwrap().port(), 7302);
    }

    #[test]
    fn revoked_serials_round_trip_and_are_normalized() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let config = ClusterConfig {
            revoked: vec!["00ff01".into(), "7f".into()],
            ..sample()
        };
        let text = config.to_toml().unwrap();
        assert!(text.contains("revoked"), "{text}");
        std::fs::write(&path, text).unwrap();
        let loaded = ClusterConfig::load(&path).unwrap();
        assert_eq!(loaded.revoked, config.revoked);
        use crate::revocation::Revocations as _;
        let serials = loaded.revoked_serials().unwrap();
        assert!(serials.is_revoked(&[0xff, 1], "x"));
        assert!(serials.is_revoked(&[0x7f], "x"));
        // An empty list is not written at all.
        assert!(!sample().to_toml().unwrap().contains("revoked"));
    }

    #[test]
    fn bad_files_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = sample().to_toml().unwrap();
        for (text, field) in [
            (good.replace("threshold = 2", "threshold = 4"), "threshold"),
            (
                good.replace("threshold = 2", "threshold = 2\nbogus = 1"),
                "bogus",
            ),
            (good.replace("00112233", "zz112233"), "cluster_id"),
            (good.replace("index = 3", "index = 2"), "appears twice"),
            (
                good.replace("threshold = 2", "threshold = 2\nrevoked = [\"0g\"]"),
                "revoked",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = ClusterConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        assert!(matches!(
            ClusterConfig::load(&dir.path().join("none.toml")),
            Err(Error::File { .. })
        ));
    }
}
