//! The cluster PKI: the cluster's own certificate authority and the certificates it
//! issues to appliances, client hosts and the operator.
//!
//! Every member of a cluster trusts this CA and nothing else, and every certificate names
//! its holder's [`Role`] as a DNS subjectAltName (see [`ittc_wire::role_dns_name`]), which
//! is how an appliance knows who is asking and a client knows which appliance answers.
//!
//! * The CA: an ECDSA P-256 key, a self-signed certificate valid for 10 years, CA:TRUE
//!   with path length 0, key usage keyCertSign.
//! * Appliance `i`: an ECDSA P-256 key, a certificate valid for 2 years with the one
//!   subjectAltName `appliance-i.ittc`, extended key usage serverAuth and clientAuth
//!   (appliances also connect to each other), key usage digitalSignature.
//! * A client host or the operator: the same with `client.ittc` or `admin.ittc` and
//!   clientAuth only.
//!
//! Validity starts an hour before issue, so that a member whose clock is a little behind
//! accepts a fresh certificate.
//!
//! Private keys leave this module as PKCS#8 PEM in [`Zeroizing`] strings. The key objects
//! of `rcgen` and `ring` that held them are not zeroized when dropped (neither crate
//! offers it); the CA key lives in one for as long as the [`ClusterCa`] does.

use core::fmt;

use ittc_wire::{Role, role_dns_name};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// How long the CA certificate is valid: 10 years.
pub const CA_VALIDITY: Duration = Duration::days(3650);

/// How long a member certificate is valid: 2 years.
pub const CERT_VALIDITY: Duration = Duration::days(730);

/// How long before issue a certificate becomes valid, for clocks that are behind.
pub const BACKDATE: Duration = Duration::hours(1);

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not generate a key or sign a certificate, or could not parse a key.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),

    /// The role cannot appear in a certificate (an appliance index outside `1..=16`).
    #[error("{0} cannot be certified: appliance indices are 1..=16")]
    InvalidRole(Role),

    /// The validity period is empty or out of range.
    #[error("invalid validity period: {0}")]
    Validity(&'static str),

    /// The CA certificate or key given to [`ClusterCa::from_pem`] is unusable.
    #[error("CA certificate: {0}")]
    Ca(String),
}

/// An issued certificate with its private key, both PEM.
pub struct CertifiedKey {
    /// The certificate, PEM (`CERTIFICATE`).
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM (`PRIVATE KEY`), zeroized on drop.
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// The cluster's certificate authority: its certificate and signing key.
pub struct ClusterCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl ClusterCa {
    /// Generates a new CA for the cluster `cluster_name`: an ECDSA P-256 key and a
    /// self-signed certificate (subject `CN=<cluster_name> cluster CA, O=ittc`), CA:TRUE
    /// with path length 0 (it signs member certificates only), key usage keyCertSign,
    /// valid for [`CA_VALIDITY`].
    ///
    /// # Errors
    ///
    /// [`PkiError::Rcgen`] if key generation or signing fails.
    pub fn generate(cluster_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let (not_before, not_after) = validity_from_now(CA_VALIDITY)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{cluster_name} cluster CA"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "ittc");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA saved with [`ClusterCa::cert_pem`] and [`ClusterCa::key_pem`].
    ///
    /// # Errors
    ///
    /// [`PkiError::Ca`] if `cert_pem` is not exactly one certificate, is not a CA
    /// certificate, or is not the certificate of `key_pem`; [`PkiError::Rcgen`] if the
    /// key is not a PKCS#8 PEM key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        check_ca_cert(cert_pem, &key)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM: what every member trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM. Keep it offline: whoever holds it can join the
    /// cluster in any role.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.issuer.key().serialize_pem())
    }

    /// Issues a certificate and a fresh ECDSA P-256 key for `role`, valid from
    /// [`BACKDATE`] ago for [`CERT_VALIDITY`]; see [`ClusterCa::issue_with_validity`].
    ///
    /// # Errors
    ///
    /// As [`ClusterCa::issue_with_validity`].
    pub fn issue(&self, role: Role, common_name: &str) -> Result<CertifiedKey, PkiError> {
        let (not_before, not_after) = validity_from_now(CERT_VALIDITY)?;
        self.issue_with_validity(role, common_name, not_before, not_after)
    }

    /// Issues a certificate and a fresh ECDSA P-256 key for `role`, valid from
    /// `not_before` to `not_after`: subject `CN=<common_name>`, the one subjectAltName
    /// [`role_dns_name`]`(role)`, CA:FALSE, key usage digitalSignature, extended key
    /// usage serverAuth and clientAuth for an appliance (appliances also connect to each
    /// other), clientAuth alone for a client or admin. The common name is for logs only.
    ///
    /// # Errors
    ///
    /// [`PkiError::InvalidRole`] for an appliance index outside `1..=16`,
    /// [`PkiError::Validity`] if `not_before` is not before `not_after`,
    /// [`PkiError::Rcgen`] if key generation or signing fails.
    pub fn issue_with_validity(
        &self,
        role: Role,
        common_name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<CertifiedKey, PkiError> {
        if !role.is_valid() {
            return Err(PkiError::InvalidRole(role));
        }
        if not_before >= not_after {
            return Err(PkiError::Validity("not_before is not before not_after"));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::DnsName(role_dns_name(role).try_into()?)];
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Appliance(_) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Client | Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// From [`BACKDATE`] ago to `validity` from now.
fn validity_from_now(validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    let now = OffsetDateTime::now_utc();
    let not_before = now
        .checked_sub(BACKDATE)
        .ok_or(PkiError::Validity("clock out of range"))?;
    let not_after = now
        .checked_add(validity)
        .ok_or(PkiError::Validity("clock out of range"))?;
    Ok((not_before, not_after))
}

/// Checks that `pem` holds exactly one certificate, a CA certificate for `key`.
fn check_ca_cert(pem: &str, key: &KeyPair) -> Result<(), PkiError> {
    let (rest, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|err| PkiError::Ca(format!("not a PEM certificate: {err}")))?;
    if block.label != "CERTIFICATE" {
        return Err(PkiError::Ca(format!("PEM block is {:?}", block.label)));
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(PkiError::Ca("more than one PEM block".into()));
    }
    let cert = block
        .parse_x509()
        .map_err(|err| PkiError::Ca(format!("not an X.509 certificate: {err}")))?;
    let is_ca = cert
        .basic_constraints()
        .map_err(|err| PkiError::Ca(format!("bad basicConstraints: {err}")))?
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(PkiError::Ca("not a CA certificate (no CA:TRUE)".into()));
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::Ca("the key is not the certificate's".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_keys() {
        let ca = ClusterCa::generate("t").unwrap();
        let issued = ca.issue(Role::Client, "c").unwrap();
        for debug in [format!("{ca:?}"), format!("{issued:?}")] {
            assert!(debug.contains("[redacted]"), "{debug}");
            assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        }
    }

    #[test]
    fn invalid_roles_and_periods_are_refused() {
        let ca = ClusterCa::generate("t").unwrap();
        for index in [0, 17] {
            assert!(matches!(
                ca.issue(Role::Appliance(index), "x"),
                Err(PkiError::InvalidRole(_))
            ));
        }
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            ca.issue_with_validity(Role::Admin, "x", now, now),
            Err(PkiError::Validity(_))
        ));
    }

    #[test]
    fn from_pem_refuses_a_foreign_key_and_non_ca_certificates() {
        let ca = ClusterCa::generate("t").unwrap();
        let other = ClusterCa::generate("u").unwrap();
        assert!(matches!(
            ClusterCa::from_pem(ca.cert_pem(), &other.key_pem()),
            Err(PkiError::Ca(_))
        ));
        let leaf = ca.issue(Role::Appliance(1), "a").unwrap();
        assert!(matches!(
            ClusterCa::from_pem(&leaf.cert_pem, &leaf.key_pem),
            Err(PkiError::Ca(_))
        ));
        let two = format!("{}{}", ca.cert_pem(), other.cert_pem());
        assert!(matches!(
            ClusterCa::from_pem(&two, &ca.key_pem()),
            Err(PkiError::Ca(_))
        ));
        assert!(ClusterCa::from_pem(ca.cert_pem(), "garbage").is_err());
    }
}
