//! Certificates the cluster no longer accepts: their serial numbers, the deny-list entries
//! appliances keep ([`RevokedCertificate`]), and the TLS check that refuses them when a
//! member dials an appliance ([`Revocations`], [`crate::TlsIdentity::client_config_with`]).
//!
//! A certificate is named by its serial number. The cluster CA is the only trust anchor of
//! every member and gives each certificate a serial of its own (a hash of the holder's
//! fresh public key), so within a cluster the serial identifies one certificate, and its
//! key. Serials are compared as big-endian magnitudes without leading zero bytes
//! ([`normalize_serial`]), whatever padding the DER encoding used.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use bincode::{Decode, Encode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::Error;
use crate::limits::{MAX_NAME_LEN, MAX_SERIAL_LEN, check_len};

/// One entry of an appliance's deny-list: a certificate it refuses although the cluster
/// CA signed it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RevokedCertificate {
    /// The serial number, big-endian, without leading zero bytes ([`normalize_serial`]),
    /// 1 to [`MAX_SERIAL_LEN`] bytes.
    pub serial: Vec<u8>,
    /// Whose certificate it was, for logs (`appliance 3`), at most [`MAX_NAME_LEN`]
    /// bytes, no control characters.
    pub label: String,
    /// When the appliance first put it on its list, milliseconds since the Unix epoch.
    pub revoked_unix_ms: u64,
}

impl RevokedCertificate {
    /// Checks the serial and the label ([`check_serial`], [`check_label`]).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_serial(&self.serial)?;
        check_label(&self.label)
    }
}

/// Checks that `serial` is a serial as deny-lists hold it: 1 to [`MAX_SERIAL_LEN`] bytes,
/// no leading zero byte (a serial of zero is the one byte 0).
///
/// # Errors
///
/// [`Error::Invalid`] otherwise.
pub fn check_serial(serial: &[u8]) -> Result<(), Error> {
    if serial.is_empty() {
        return Err(Error::Invalid("empty certificate serial"));
    }
    check_len(serial.len(), MAX_SERIAL_LEN, "certificate serial too long")?;
    if serial.len() > 1 && serial[0] == 0 {
        return Err(Error::Invalid(
            "certificate serial with a leading zero byte",
        ));
    }
    Ok(())
}

/// Checks a deny-list label: at most [`MAX_NAME_LEN`] bytes and no control character (it
/// goes into logs and the audit log, one line per entry).
///
/// # Errors
///
/// [`Error::Invalid`] otherwise.
pub fn check_label(label: &str) -> Result<(), Error> {
    check_len(label.len(), MAX_NAME_LEN, "revocation label too long")?;
    if label.chars().any(char::is_control) {
        return Err(Error::Invalid("control character in a revocation label"));
    }
    Ok(())
}

/// A serial number's content bytes as a big-endian magnitude without leading zero bytes
/// (at least one byte). DER pads a serial whose first bit is set with a zero byte; this
/// form does not depend on that.
pub fn normalize_serial(content: &[u8]) -> Vec<u8> {
    let start = content
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(content.len().saturating_sub(1));
    content.get(start..).unwrap_or_default().to_vec()
}

/// The serial number of a DER certificate, normalized ([`normalize_serial`]).
///
/// # Errors
///
/// [`Error::Certificate`] if the bytes are not one X.509 certificate. Never panics.
pub fn certificate_serial(der: &[u8]) -> Result<Vec<u8>, Error> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| Error::Certificate(format!("not an X.509 certificate: {err}")))?;
    if !rest.is_empty() {
        return Err(Error::Certificate(format!(
            "{} bytes after the certificate",
            rest.len()
        )));
    }
    Ok(normalize_serial(cert.tbs_certificate.raw_serial()))
}

/// What a member refuses beyond the cluster CA's own rules: certificates whose serial is
/// on a deny-list. An appliance implements it over its store (the list every appliance
/// keeps); [`RevokedSerials`] is a fixed list (the `revoked` field of `pkcs11.toml`).
pub trait Revocations: Send + Sync + fmt::Debug {
    /// Whether the certificate with this serial ([`normalize_serial`] form) is revoked.
    /// `holder` names the role its certificate claims, for the caller's logs.
    fn is_revoked(&self, serial: &[u8], holder: &str) -> bool;
}

/// A fixed set of revoked serials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevokedSerials(BTreeSet<Vec<u8>>);

impl RevokedSerials {
    /// The set of these serials, each normalized.
    pub fn new<'a>(serials: impl IntoIterator<Item = &'a [u8]>) -> Self {
        Self(serials.into_iter().map(normalize_serial).collect())
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The serials, in order.
    pub fn serials(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(Vec::as_slice)
    }
}

impl Revocations for RevokedSerials {
    fn is_revoked(&self, serial: &[u8], _holder: &str) -> bool {
        self.0.contains(serial)
    }
}

/// The server-certificate check of a member that keeps a deny-list: the cluster CA's
/// verifier first (chain, validity, name), then the serial against the list. A revoked
/// certificate fails with [`CertificateError::Revoked`], so rustls sends the peer the
/// `certificate_revoked` alert.
#[derive(Debug)]
pub(crate) struct RevocationCheckingVerifier {
    pub(crate) inner: Arc<dyn ServerCertVerifier>,
    pub(crate) revocations: Arc<dyn Revocations>,
}

impl ServerCertVerifier for RevocationCheckingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let serial = certificate_serial(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let holder = server_name.to_str();
        if self.revocations.is_revoked(&serial, &holder) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalized_and_checked() {
        assert_eq!(normalize_serial(&[0, 0, 0x80, 1]), vec![0x80, 1]);
        assert_eq!(normalize_serial(&[0x7f]), vec![0x7f]);
        assert_eq!(normalize_serial(&[0, 0]), vec![0]);
        assert_eq!(normalize_serial(&[]), Vec::<u8>::new());
        assert!(check_serial(&[0]).is_ok());
        assert!(check_serial(&[0x80; MAX_SERIAL_LEN]).is_ok());
        assert!(check_serial(&[]).is_err());
        assert!(check_serial(&[0, 1]).is_err());
        assert!(check_serial(&[1; MAX_SERIAL_LEN + 1]).is_err());
    }

    #[test]
    fn labels_are_one_printable_line() {
        assert!(check_label("appliance 3 (replaced)").is_ok());
        assert!(check_label("").is_ok());
        assert!(check_label("a\tb").is_err());
        assert!(check_label("a\nb").is_err());
        assert!(check_label(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn a_fixed_set_compares_normalized_serials() {
        let set = RevokedSerials::new([[0u8, 0x81, 2].as_slice(), &[5]]);
        assert!(set.is_revoked(&[0x81, 2], "appliance-1.ittc"));
        assert!(set.is_revoked(&[5], "x"));
        assert!(!set.is_revoked(&[0x81], "x"));
        assert!(!set.is_empty());
        assert!(RevokedSerials::default().is_empty());
    }

    #[test]
    fn garbage_has_no_serial() {
        assert!(certificate_serial(&[0x30, 0x03, 1, 2, 3]).is_err());
        assert!(certificate_serial(&[]).is_err());
    }
}
