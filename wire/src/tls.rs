//! A cluster member's TLS identity and the rustls configurations built from it.
//!
//! Both ends of every connection in the cluster use the same rules, built here once: TLS
//! 1.3 only, the cluster CA as the only trust anchor, a certificate on both sides, and no
//! session resumption, so that every connection verifies both certificates (and their
//! expiry) afresh. Connections are long-lived and pooled, so a full handshake each time
//! costs little.
//!
//! The crypto provider is `ring` unless the identity is built with another one
//! ([`TlsCrypto`], [`TlsIdentity::from_pem_files_with`]): an appliance build may use
//! aws-lc-rs instead, so that appliances do not all run the same TLS crypto
//! (docs/diversity.md). The PKCS#11 module and the CLI use `ring`.

use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use zeroize::Zeroizing;

use crate::revocation::{RevocationCheckingVerifier, Revocations};
use crate::{Error, Identity, identity_from_cert};

/// The TLS protocol versions the cluster speaks: 1.3 only.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Loads a private key into a provider's signing key, borrowing the DER (so that the
/// caller's copy is the only one, and is zeroized): ring's `any_supported_type` (in
/// `rustls::crypto::ring::sign`) and its aws-lc-rs twin.
pub type KeyLoader = fn(&PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>, rustls::Error>;

/// The TLS crypto of a cluster member: a rustls crypto provider and its key loader.
#[derive(Clone)]
pub struct TlsCrypto {
    provider: Arc<CryptoProvider>,
    load_key: KeyLoader,
}

impl TlsCrypto {
    /// A provider and the function that loads a private key for it (the provider's own
    /// `sign::any_supported_type`).
    pub fn new(provider: CryptoProvider, load_key: KeyLoader) -> Self {
        Self {
            provider: Arc::new(provider),
            load_key,
        }
    }

    /// `ring`, the default of [`TlsIdentity::from_pem`] and its siblings, whatever default
    /// the process installed.
    pub fn ring() -> Self {
        Self::new(
            rustls::crypto::ring::default_provider(),
            rustls::crypto::ring::sign::any_supported_type,
        )
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }
}

impl fmt::Debug for TlsCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCrypto")
            .field("cipher_suites", &self.provider.cipher_suites.len())
            .field("kx_groups", &self.provider.kx_groups.len())
            .finish_non_exhaustive()
    }
}

/// A cluster member's TLS identity: the cluster CA certificates it trusts, and its own
/// certificate chain with the private key.
///
/// The private key is parsed once, when the identity is built, into the signing key that
/// rustls uses (shared by every configuration built from this identity); the PEM text and
/// DER bytes it came from are zeroized right after. The parsed key lives in the crypto
/// provider's key object, which this crate cannot zeroize. `Debug` prints the role and
/// the number of certificates, never the key.
pub struct TlsIdentity {
    roots: Arc<RootCertStore>,
    certified: Arc<CertifiedKey>,
    identity: Identity,
    provider: Arc<CryptoProvider>,
}

impl TlsIdentity {
    /// Builds an identity from PEM text: `ca_pem` holds the cluster CA certificate(s),
    /// `cert_pem` the member's certificate first, then any intermediates, `key_pem` its
    /// private key (PKCS#8, SEC1 or PKCS#1).
    ///
    /// # Errors
    ///
    /// [`Error::Certificate`] if a PEM holds no certificate or key or cannot be parsed, if
    /// the CA certificate is not a usable trust anchor, if the key does not match the
    /// certificate, or if the certificate names no role (see [`identity_from_cert`]).
    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let ca = parse_certs(ca_pem, "CA certificate")?;
        let chain = parse_certs(cert_pem, "certificate")?;
        let key = parse_key(key_pem)?;
        Self::from_der(ca, chain, &key)
    }

    /// Reads the three PEM files of [`TlsIdentity::from_pem`].
    ///
    /// # Errors
    ///
    /// [`Error::File`] if a file cannot be read; the errors of [`TlsIdentity::from_pem`],
    /// with the file named in the message, if one holds the wrong thing.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, Error> {
        Self::from_pem_files_with(ca, cert, key, TlsCrypto::ring())
    }

    /// [`TlsIdentity::from_pem_files`] with other TLS crypto: every configuration built
    /// from this identity uses its provider, and the private key is loaded by it.
    ///
    /// # Errors
    ///
    /// As [`TlsIdentity::from_pem_files`].
    pub fn from_pem_files_with(
        ca: &Path,
        cert: &Path,
        key: &Path,
        crypto: TlsCrypto,
    ) -> Result<Self, Error> {
        let ca_certs = parse_certs(&read(ca)?, "CA certificate").map_err(|e| in_file(ca, e))?;
        let chain = parse_certs(&read(cert)?, "certificate").map_err(|e| in_file(cert, e))?;
        let key_der = parse_key(&read(key)?).map_err(|e| in_file(key, e))?;
        Self::from_der_with(ca_certs, chain, &key_der, crypto).map_err(|e| in_file(cert, e))
    }

    /// Builds an identity from DER: see [`TlsIdentity::from_pem`]. The key is borrowed
    /// and parsed, not kept: zeroize it when done (`PrivateKeyDer` implements `Zeroize`).
    ///
    /// # Errors
    ///
    /// As [`TlsIdentity::from_pem`].
    pub fn from_der(
        ca_certs: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKeyDer<'_>,
    ) -> Result<Self, Error> {
        Self::from_der_with(ca_certs, chain, key, TlsCrypto::ring())
    }

    /// [`TlsIdentity::from_der`] with other TLS crypto (see
    /// [`TlsIdentity::from_pem_files_with`]).
    ///
    /// # Errors
    ///
    /// As [`TlsIdentity::from_pem`].
    pub fn from_der_with(
        ca_certs: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKeyDer<'_>,
        crypto: TlsCrypto,
    ) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for ca in ca_certs {
            roots
                .add(ca)
                .map_err(|err| Error::Certificate(format!("unusable CA certificate: {err}")))?;
        }
        let end_entity = chain
            .first()
            .ok_or_else(|| Error::Certificate("no certificate".into()))?;
        let identity = identity_from_cert(end_entity)?;
        let signing_key = (crypto.load_key)(key)
            .map_err(|err| Error::Certificate(format!("private key: {err}")))?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified.keys_match().map_err(|err| {
            Error::Certificate(format!(
                "the private key does not belong to the certificate ({err})"
            ))
        })?;
        Ok(Self {
            roots: Arc::new(roots),
            certified: Arc::new(certified),
            identity,
            provider: crypto.provider,
        })
    }

    /// The role and name of this member, read from its certificate.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The crypto provider of every configuration built from this identity.
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The configuration for connecting to appliances: TLS 1.3 only, this identity's
    /// provider, the cluster CA as the only root, this member's certificate for client
    /// authentication, no session resumption. Dial appliance `i` with the server name
    /// [`crate::role_dns_name`]`(Role::Appliance(i))`; [`crate::Connection::connect`] does.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] if rustls refuses the configuration (it does not with ring or
    /// aws-lc-rs).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(VERSIONS)
            .map_err(tls_error)?
            .with_root_certificates(Arc::clone(&self.roots))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(
                &self.certified,
            ))));
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }

    /// [`TlsIdentity::client_config`] that also refuses an appliance whose certificate
    /// `revocations` names: after the cluster CA's checks, the certificate's serial is
    /// looked up, and a revoked one ends the handshake with
    /// `rustls::CertificateError::Revoked` (the appliance receives the
    /// `certificate_revoked` alert; [`crate::Connection::connect`] fails with
    /// [`Error::Certificate`] saying so). An empty list is the same as
    /// [`TlsIdentity::client_config`].
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] if rustls refuses the configuration.
    pub fn client_config_with(
        &self,
        revocations: Arc<dyn Revocations>,
    ) -> Result<Arc<ClientConfig>, Error> {
        let provider = Arc::clone(&self.provider);
        let webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::clone(&self.roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|err| Error::Tls(format!("server verifier: {err}")))?;
        let verifier = RevocationCheckingVerifier {
            inner: webpki,
            revocations,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(
                &self.certified,
            ))));
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }

    /// The configuration for an appliance's listener: TLS 1.3 only, this identity's
    /// provider, this member's certificate chain, a client certificate **required** and verified
    /// against the cluster CA, no session resumption (no cache, no tickets). After the
    /// handshake, read the client's role with [`crate::peer_identity`]; this configuration
    /// works as it is with `tokio-rustls`.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] if rustls refuses the configuration.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let provider = Arc::clone(&self.provider);
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&self.roots), provider.clone())
                .build()
                .map_err(|err| Error::Tls(format!("client verifier: {err}")))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(tls_error)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(
                &self.certified,
            ))));
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("identity", &self.identity)
            .field("roots", &self.roots.len())
            .field("chain", &self.certified.cert.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

fn tls_error(err: rustls::Error) -> Error {
    Error::Tls(err.to_string())
}

/// The certificates in a PEM text; at least one.
fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| Error::Certificate(format!("{what} PEM: {err}")))?;
    if certs.is_empty() {
        return Err(Error::Certificate(format!("no {what} in the PEM text")));
    }
    Ok(certs)
}

/// The first private key in a PEM text, zeroized when dropped.
fn parse_key(pem: &[u8]) -> Result<Zeroizing<PrivateKeyDer<'static>>, Error> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(Zeroizing::new)
        .map_err(|err| Error::Certificate(format!("private key PEM: {err}")))
}

/// A file's bytes, zeroized when dropped (it may be a key).
fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| Error::File {
            path: path.to_owned(),
            source,
        })
}

/// Names the file in a certificate error.
fn in_file(path: &Path, err: Error) -> Error {
    match err {
        Error::Certificate(msg) => Error::Certificate(format!("{}: {msg}", path.display())),
        other => other,
    }
}
