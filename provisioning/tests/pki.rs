//! The cluster PKI: what the CA issues reads back as the right role through the wire
//! crate, carries the specified extensions, and is judged by rustls the way the cluster's
//! TLS configurations will judge it.

// clippy.toml allows these in #[test] functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use ittc_provisioning::pki::{CA_VALIDITY, CERT_VALIDITY, ClusterCa};
use ittc_wire::{Identity, Role, TlsIdentity, identity_from_cert, peer_identity, role_dns_name};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, ClientConnection, RootCertStore, ServerConnection};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

const ROLES: [Role; 4] = [
    Role::Appliance(1),
    Role::Appliance(16),
    Role::Client,
    Role::Admin,
];

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    cert
}

/// A client-certificate verifier trusting `ca` only, as an appliance's is.
fn verifier(ca: &ClusterCa) -> Arc<dyn ClientCertVerifier> {
    let mut roots = RootCertStore::empty();
    roots.add(der(ca.cert_pem())).unwrap();
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap()
}

/// Seconds between two times, to compare validity periods.
fn seconds(from: OffsetDateTime, to: OffsetDateTime) -> i64 {
    (to - from).whole_seconds()
}

#[test]
fn each_role_reads_back_with_its_common_name() {
    let ca = ClusterCa::generate("demo").unwrap();
    for role in ROLES {
        let name = format!("{role} of demo");
        let issued = ca.issue(role, &name).unwrap();
        let identity = identity_from_cert(&der(&issued.cert_pem)).unwrap();
        assert_eq!(identity, Identity { role, name });
    }
}

#[test]
fn member_certificates_carry_the_specified_extensions() {
    let ca = ClusterCa::generate("demo").unwrap();
    let ca_der = der(ca.cert_pem());
    let ca_cert = parse(&ca_der);
    for role in ROLES {
        let issued = ca.issue(role, "member").unwrap();
        let cert_der = der(&issued.cert_pem);
        let cert = parse(&cert_der);

        let san = cert.subject_alternative_name().unwrap().unwrap();
        let expected = role_dns_name(role);
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::DNSName(&expected)]
        );

        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        let appliance = matches!(role, Role::Appliance(_));
        assert_eq!(eku.server_auth, appliance, "{role}");
        assert!(eku.client_auth, "{role}");
        assert!(!eku.any && eku.other.is_empty(), "{role}");

        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign(), "{role}");
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca, "{role}");

        assert_eq!(cert.issuer(), ca_cert.subject());
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        let validity = cert.validity();
        let period = seconds(
            validity.not_before.to_datetime(),
            validity.not_after.to_datetime(),
        );
        let expected = (CERT_VALIDITY + Duration::hours(1)).whole_seconds();
        assert!((period - expected).abs() < 60, "{period} s");
        assert!(validity.is_valid());
    }
}

#[test]
fn ca_certificate_is_a_p256_ca_with_path_length_zero() {
    let ca = ClusterCa::generate("demo").unwrap();
    let ca_der = der(ca.cert_pem());
    let cert = parse(&ca_der);
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign());
    assert_eq!(cert.subject(), cert.issuer());
    let spki = cert.public_key();
    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve, OID_EC_P256);
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "demo cluster CA");
    let validity = cert.validity();
    let period = seconds(
        validity.not_before.to_datetime(),
        validity.not_after.to_datetime(),
    );
    let expected = (CA_VALIDITY + Duration::hours(1)).whole_seconds();
    assert!((period - expected).abs() < 60, "{period} s");
}

#[test]
fn issued_certificates_verify_and_expired_ones_do_not() {
    let ca = ClusterCa::generate("demo").unwrap();
    let verifier = verifier(&ca);

    let fresh = ca.issue(Role::Client, "fresh").unwrap();
    verifier
        .verify_client_cert(&der(&fresh.cert_pem), &[], UnixTime::now())
        .unwrap();

    let now = OffsetDateTime::now_utc();
    let expired = ca
        .issue_with_validity(
            Role::Client,
            "expired",
            now - Duration::days(30),
            now - Duration::days(1),
        )
        .unwrap();
    let err = verifier
        .verify_client_cert(&der(&expired.cert_pem), &[], UnixTime::now())
        .unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{err:?}"
    );

    let future = ca
        .issue_with_validity(
            Role::Client,
            "future",
            now + Duration::days(1),
            now + Duration::days(30),
        )
        .unwrap();
    let err = verifier
        .verify_client_cert(&der(&future.cert_pem), &[], UnixTime::now())
        .unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            )
        ),
        "{err:?}"
    );
}

#[test]
fn another_clusters_certificates_do_not_verify() {
    let ca = ClusterCa::generate("demo").unwrap();
    let verifier = verifier(&ca);
    // Another cluster's CA: webpki finds no issuer of that name (UnknownIssuer); under
    // the same cluster name the subject matches, and the signature does not.
    for (name, expected) in [
        ("other", CertificateError::UnknownIssuer),
        ("demo", CertificateError::BadSignature),
    ] {
        let other = ClusterCa::generate(name).unwrap();
        let issued = other.issue(Role::Admin, "admin").unwrap();
        let err = verifier
            .verify_client_cert(&der(&issued.cert_pem), &[], UnixTime::now())
            .unwrap_err();
        assert_eq!(err, rustls::Error::InvalidCertificate(expected), "{name}");
    }
}

#[test]
fn a_saved_ca_reloads_and_keeps_issuing_for_the_same_trust() {
    let ca = ClusterCa::generate("demo").unwrap();
    let reloaded = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(reloaded.cert_pem(), ca.cert_pem());
    assert_eq!(*reloaded.key_pem(), *ca.key_pem());

    // A certificate from the reloaded CA verifies against the original CA certificate
    // (same issuer name, authority key identifier and key).
    let issued = reloaded.issue(Role::Appliance(2), "appliance 2").unwrap();
    verifier(&ca)
        .verify_client_cert(&der(&issued.cert_pem), &[], UnixTime::now())
        .unwrap();
    let cert_der = der(&issued.cert_pem);
    let ca_der = der(ca.cert_pem());
    let aki = parse(&cert_der)
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    let ski = parse(&ca_der)
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(ski) => {
                Some(ski.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(aki, ski);
}

/// Runs a TLS handshake between the two configurations in memory, then returns the
/// identities each side reads from the other's certificate.
fn handshake(
    client: &TlsIdentity,
    server: &TlsIdentity,
    dial: u8,
) -> Result<(Identity, Identity), rustls::Error> {
    let name = ServerName::try_from(role_dns_name(Role::Appliance(dial))).unwrap();
    let mut c = ClientConnection::new(client.client_config().unwrap(), name)?;
    let mut s = ServerConnection::new(server.server_config().unwrap())?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets()?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((peer_identity(&c).unwrap(), peer_identity(&s).unwrap()));
        }
    }
    panic!("handshake did not finish");
}

fn tls_identity(ca: &ClusterCa, role: Role) -> TlsIdentity {
    let issued = ca.issue(role, &role.to_string()).unwrap();
    TlsIdentity::from_pem(
        ca.cert_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .unwrap()
}

#[test]
fn issued_certificates_work_with_the_wire_tls_configurations() {
    let ca = ClusterCa::generate("demo").unwrap();
    let appliance = tls_identity(&ca, Role::Appliance(2));
    for role in [Role::Client, Role::Admin, Role::Appliance(5)] {
        let (server_seen, client_seen) =
            handshake(&tls_identity(&ca, role), &appliance, 2).unwrap();
        assert_eq!(server_seen.role, Role::Appliance(2));
        assert_eq!(client_seen.role, role);
    }
    // Dialled as another appliance: the name check fails.
    let err = handshake(&tls_identity(&ca, Role::Client), &appliance, 3).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err:?}"
    );
}
