//! Roles in certificates: which member of the cluster a certificate names.
//!
//! Every certificate the cluster CA issues carries its holder's role as one DNS
//! subjectAltName under the `ittc` domain: `appliance-3.ittc`, `client.ittc` or
//! `admin.ittc` ([`role_dns_name`]). A client dials appliance `i` with the TLS server
//! name `appliance-i.ittc`, so ordinary webpki name checking proves "this is appliance
//! `i` of this cluster" whatever its IP address; an appliance reads the role of a client
//! with [`identity_from_cert`] (or [`peer_identity`]) and checks each request against it.

use core::fmt;

use x509_parser::extensions::GeneralName;

use crate::Error;

/// Largest appliance index (appliances are numbered `1..=16`), the same as the largest
/// number of parties the threshold scheme supports.
pub const MAX_APPLIANCES: u8 = 16;

/// The DNS domain under which certificates name roles.
pub const ROLE_DOMAIN: &str = "ittc";

/// What a certificate holder is in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Share appliance `i`, `1..=`[`MAX_APPLIANCES`]. Its certificate serves both as a
    /// server certificate (clients and other appliances connect to it) and as a client
    /// certificate (it connects to other appliances).
    Appliance(u8),
    /// A host running the PKCS#11 module.
    Client,
    /// The operator CLI (`ittc`).
    Admin,
}

impl Role {
    /// Whether the role can appear in a certificate: an appliance index in
    /// `1..=`[`MAX_APPLIANCES`], or any other role.
    pub fn is_valid(self) -> bool {
        match self {
            Role::Appliance(index) => (1..=MAX_APPLIANCES).contains(&index),
            Role::Client | Role::Admin => true,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Appliance(index) => write!(f, "appliance {index}"),
            Role::Client => f.write_str("client"),
            Role::Admin => f.write_str("admin"),
        }
    }
}

/// Who holds a certificate: its role, and its subject common name for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The role named by the certificate's subjectAltName.
    pub role: Role,
    /// The subject common name (empty if there is none or it is not a string). Chosen by
    /// whoever issued the certificate, for logs only: it carries no authority.
    pub name: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.role, self.name)
    }
}

/// The DNS name that carries `role` in a certificate and, for an appliance, the TLS server
/// name clients dial it by: `appliance-3.ittc`, `client.ittc`, `admin.ittc`.
///
/// An invalid role ([`Role::is_valid`]) gives a name in the same form that
/// [`identity_from_cert`] refuses, such as `appliance-0.ittc`.
pub fn role_dns_name(role: Role) -> String {
    match role {
        Role::Appliance(index) => format!("appliance-{index}.{ROLE_DOMAIN}"),
        Role::Client => format!("client.{ROLE_DOMAIN}"),
        Role::Admin => format!("admin.{ROLE_DOMAIN}"),
    }
}

/// Reads the holder's [`Identity`] from a DER certificate.
///
/// The role is the one DNS subjectAltName under `ittc` ([`role_dns_name`]); names are
/// compared without regard to ASCII case, as TLS does. DNS names outside `ittc` are
/// ignored. This function does not verify the certificate (signature, issuer, validity):
/// TLS does that before anyone should trust what it names.
///
/// # Errors
///
/// [`Error::Certificate`] if the bytes are not exactly one X.509 certificate, if it has no
/// role name or several, or if a name under `ittc` is not a role name (`appliance-17.ittc`,
/// `*.ittc`, `appliance-03.ittc`). Never panics, whatever the bytes.
pub fn identity_from_cert(der: &[u8]) -> Result<Identity, Error> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| Error::Certificate(format!("not an X.509 certificate: {err}")))?;
    if !rest.is_empty() {
        return Err(Error::Certificate(format!(
            "{} bytes after the certificate",
            rest.len()
        )));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|err| Error::Certificate(format!("bad subjectAltName: {err}")))?
        .ok_or_else(|| Error::Certificate("no subjectAltName, so no role".into()))?;

    let mut role = None;
    for name in &san.value.general_names {
        let GeneralName::DNSName(dns) = name else {
            continue;
        };
        match classify(dns) {
            Name::Other => {}
            Name::NotARole => {
                return Err(Error::Certificate(format!(
                    "subjectAltName {dns:?} is under {ROLE_DOMAIN} but names no role"
                )));
            }
            Name::Role(found) => {
                if let Some(first) = role.replace(found) {
                    return Err(Error::Certificate(format!(
                        "certificate names more than one role ({first}, {found})"
                    )));
                }
            }
        }
    }
    let role = role.ok_or_else(|| {
        Error::Certificate(format!(
            "no role name (such as client.{ROLE_DOMAIN}) in subjectAltName"
        ))
    })?;

    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok(Identity { role, name })
}

/// The [`Identity`] of the peer of a TLS connection (client or server side), read from
/// the end-entity certificate it presented.
///
/// Call it after the handshake: rustls has then verified the certificate against the
/// cluster CA (with the configurations of [`crate::TlsIdentity`]).
///
/// # Errors
///
/// [`Error::Certificate`] if the peer presented no certificate (or the handshake is not
/// done), else as [`identity_from_cert`].
pub fn peer_identity(conn: &rustls::CommonState) -> Result<Identity, Error> {
    let cert = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| Error::Certificate("the peer presented no certificate".into()))?;
    identity_from_cert(cert)
}

/// What one DNS name in a certificate says about the role.
#[derive(Debug, PartialEq, Eq)]
enum Name {
    /// A valid role name.
    Role(Role),
    /// A name under the role domain that is not a valid role name.
    NotARole,
    /// A name outside the role domain.
    Other,
}

fn classify(dns: &str) -> Name {
    let lower = dns.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    let Some(label) = trimmed
        .strip_suffix(ROLE_DOMAIN)
        .and_then(|head| head.strip_suffix('.'))
    else {
        return if trimmed == ROLE_DOMAIN {
            Name::NotARole
        } else {
            Name::Other
        };
    };
    if trimmed.len() != lower.len() {
        // A trailing dot: not the form the CA issues.
        return Name::NotARole;
    }
    match label {
        "client" => Name::Role(Role::Client),
        "admin" => Name::Role(Role::Admin),
        _ => label
            .strip_prefix("appliance-")
            .and_then(parse_index)
            .map_or(Name::NotARole, |index| Name::Role(Role::Appliance(index))),
    }
}

/// A decimal appliance index without sign or leading zero, in `1..=MAX_APPLIANCES`.
fn parse_index(digits: &str) -> Option<u8> {
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<u8>()
        .ok()
        .filter(|index| Role::Appliance(*index).is_valid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert_with(names: &[SanType], cn: Option<&str>) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = names.to_vec();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().unwrap())
    }

    #[test]
    fn role_names_and_display() {
        assert_eq!(role_dns_name(Role::Appliance(3)), "appliance-3.ittc");
        assert_eq!(role_dns_name(Role::Client), "client.ittc");
        assert_eq!(role_dns_name(Role::Admin), "admin.ittc");
        assert_eq!(Role::Appliance(3).to_string(), "appliance 3");
        assert_eq!(Role::Client.to_string(), "client");
        assert_eq!(Role::Admin.to_string(), "admin");
        assert!(Role::Appliance(16).is_valid());
        assert!(!Role::Appliance(0).is_valid());
        assert!(!Role::Appliance(17).is_valid());
    }

    #[test]
    fn every_valid_role_name_reads_back() {
        let roles = (1..=MAX_APPLIANCES)
            .map(Role::Appliance)
            .chain([Role::Client, Role::Admin]);
        for role in roles {
            assert_eq!(classify(&role_dns_name(role)), Name::Role(role));
            assert_eq!(
                classify(&role_dns_name(role).to_ascii_uppercase()),
                Name::Role(role)
            );
        }
    }

    #[test]
    fn near_misses_are_not_roles() {
        for name in [
            "appliance-0.ittc",
            "appliance-17.ittc",
            "appliance-03.ittc",
            "appliance-+3.ittc",
            "appliance-.ittc",
            "appliance-256.ittc",
            "appliance.ittc",
            "*.ittc",
            "ittc",
            "client.ittc.",
            "x.client.ittc",
        ] {
            assert_eq!(classify(name), Name::NotARole, "{name}");
        }
        for name in ["client.example", "clientittc", "localhost", "ittc.example"] {
            assert_eq!(classify(name), Name::Other, "{name}");
        }
    }

    #[test]
    fn reads_role_and_common_name() {
        let der = cert_with(
            &[dns("localhost"), dns("appliance-7.ittc")],
            Some("appliance 7 of demo"),
        );
        let id = identity_from_cert(&der).unwrap();
        assert_eq!(id.role, Role::Appliance(7));
        assert_eq!(id.name, "appliance 7 of demo");
        assert_eq!(id.to_string(), "appliance 7 (\"appliance 7 of demo\")");

        let id = identity_from_cert(&cert_with(&[dns("admin.ittc")], None)).unwrap();
        assert_eq!(
            id,
            Identity {
                role: Role::Admin,
                name: String::new()
            }
        );
    }

    #[test]
    fn zero_or_several_roles_are_refused() {
        let cases: [&[SanType]; 5] = [
            &[],
            &[dns("localhost")],
            &[dns("client.ittc"), dns("admin.ittc")],
            &[dns("client.ittc"), dns("client.ittc")],
            &[dns("client.ittc"), dns("*.ittc")],
        ];
        for names in cases {
            let err = identity_from_cert(&cert_with(names, Some("x"))).unwrap_err();
            assert!(matches!(err, Error::Certificate(_)), "{names:?}: {err}");
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut der = cert_with(&[dns("client.ittc")], None);
        der.push(0);
        assert!(matches!(
            identity_from_cert(&der),
            Err(Error::Certificate(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(identity_from_cert(&bytes).is_err());
        }

        #[test]
        fn corrupted_certificates_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut der = valid_cert().clone();
            for (at, byte) in edits {
                let i = at.index(der.len());
                der[i] = byte;
            }
            let end = cut.index(der.len() + 1);
            // Any outcome but a panic is fine: an edit may land in the signature.
            let _ = identity_from_cert(&der[..end]);
        }
    }

    fn valid_cert() -> &'static Vec<u8> {
        static CERT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        CERT.get_or_init(|| cert_with(&[dns("appliance-2.ittc")], Some("a")))
    }
}
