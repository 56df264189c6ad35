//! The mTLS client connection against a small test appliance on 127.0.0.1: what connects,
//! what is refused and why, and that a silent appliance gives a timeout, not a hang.
//!
//! Certificates come from rcgen directly (the wire crate must not depend on the
//! provisioning crate that owns the real cluster CA).

// clippy.toml allows these in #[test] functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ittc_wire::{
    Connection, Error, ErrorCode, HelloInfo, Identity, PROTOCOL_VERSION, Request, Response, Role,
    StatusInfo, Timeouts, TlsIdentity, WireError, peer_identity, read_frame_blocking,
    role_dns_name, write_frame_blocking,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

const CLUSTER_ID: [u8; 16] = [7; 16];

/// A test CA made with rcgen.
struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate and key for `role`, as the cluster CA issues them.
    fn issue(&self, role: Role) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![role_dns_name(role)]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("test {role}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Appliance(_) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Client | Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS identity for `role` trusting this CA.
    fn identity(&self, role: Role) -> TlsIdentity {
        let (cert, key) = self.issue(role);
        TlsIdentity::from_pem(self.cert_pem.as_bytes(), cert.as_bytes(), key.as_bytes()).unwrap()
    }
}

/// How the test appliance behaves once the handshake is done.
#[derive(Clone, Copy)]
enum Mode {
    /// Answers `Hello` as appliance `hello_index`, `Status` with a status, anything else
    /// with an error, until the client closes.
    Answer { hello_index: u8 },
    /// Answers `Hello`, then reads one request and never answers it.
    SilentAfterHello,
}

/// What the test appliance saw: the client's identity, or the handshake error.
type Outcome = Result<Identity, io::Error>;

/// Starts a test appliance that serves one connection on an ephemeral port.
fn serve_one(config: Arc<ServerConfig>, mode: Mode) -> (SocketAddr, JoinHandle<Outcome>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
        while stream.conn.is_handshaking() {
            if let Err(err) = stream.conn.complete_io(&mut stream.sock) {
                // Keep the socket open until the client gives up, so that it reads our
                // alert rather than a reset.
                drain(&mut stream.sock);
                return Err(err);
            }
        }
        let client = peer_identity(&stream.conn).unwrap();
        let hello_index = match mode {
            Mode::Answer { hello_index } => hello_index,
            Mode::SilentAfterHello => 1,
        };
        loop {
            let req: Request = match read_frame_blocking(&mut stream) {
                Ok(req) => req,
                Err(Error::Closed) => return Ok(client),
                Err(err) => panic!("test appliance: {err}"),
            };
            let resp = match (req, mode) {
                (Request::Hello { .. }, _) => Response::HelloInfo(HelloInfo {
                    protocol_version: PROTOCOL_VERSION,
                    appliance_index: hello_index,
                    build_variant: "test".into(),
                    cluster_id: CLUSTER_ID,
                }),
                (_, Mode::SilentAfterHello) => {
                    drain(&mut stream.sock);
                    return Ok(client);
                }
                (Request::Status, Mode::Answer { .. }) => Response::Status(StatusInfo {
                    protocol_version: PROTOCOL_VERSION,
                    software_version: "0".into(),
                    build_variant: "test".into(),
                    appliance_index: hello_index,
                    cluster_id: CLUSTER_ID,
                    keys: Vec::new(),
                    audit_head: [0; 32],
                    uptime_secs: 1,
                    revoked_certificates: 0,
                    clock_unix_ms: 0,
                }),
                (other, Mode::Answer { .. }) => {
                    Response::Error(WireError::new(ErrorCode::BadRequest, other.kind()))
                }
            };
            write_frame_blocking(&mut stream, &resp).unwrap();
        }
    });
    (addr, handle)
}

/// Reads and discards until the peer closes (or the read timeout passes).
fn drain(tcp: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(3),
        io: Duration::from_secs(5),
    }
}

/// The rustls error inside an I/O error from a handshake.
fn rustls_error(err: &io::Error) -> &rustls::Error {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {err}"))
}

/// A client connection to a test appliance `index` that answers (see [`serve_one`]).
fn connected(index: u8) -> (Connection, JoinHandle<Outcome>) {
    let ca = TestCa::new("cluster");
    let appliance = ca.identity(Role::Appliance(index));
    let client = ca.identity(Role::Client);
    let (addr, server) = serve_one(
        appliance.server_config().unwrap(),
        Mode::Answer { hello_index: index },
    );
    let conn = Connection::connect(
        addr,
        index,
        client.client_config().unwrap(),
        timeouts(),
        "client test",
    )
    .unwrap();
    (conn, server)
}

#[test]
fn client_connects_and_gets_answers() {
    let (mut conn, server) = connected(3);
    assert_eq!(conn.hello().appliance_index, 3);
    assert_eq!(conn.hello().protocol_version, PROTOCOL_VERSION);
    assert_eq!(conn.hello().cluster_id, CLUSTER_ID);
    assert_eq!(conn.peer().role, Role::Appliance(3));
    assert_eq!(conn.peer().name, "test appliance 3");

    let Response::Status(status) = conn.request(&Request::Status).unwrap() else {
        panic!("not a status");
    };
    assert_eq!(status.appliance_index, 3);
    // An error answer is a successful exchange: the caller decides.
    let resp = conn.request(&Request::Logout).unwrap();
    assert!(matches!(
        resp,
        Response::Error(WireError {
            code: ErrorCode::BadRequest,
            ..
        })
    ));
    assert!(!conn.is_broken());
    drop(conn);

    // The appliance read the client's role from its certificate, and saw a clean close.
    let seen = server.join().unwrap().unwrap();
    assert_eq!(seen.role, Role::Client);
    assert_eq!(seen.name, "test client");
}

#[test]
fn a_request_can_be_sent_now_and_its_answer_read_later() {
    let (mut conn, server) = connected(2);

    // Nothing sent: nothing to read, and the connection stays usable.
    assert!(matches!(conn.receive(), Err(Error::Broken)));
    assert!(!conn.is_broken());

    conn.send(&Request::Status).unwrap();
    // Out of step until the answer is read: not for a pool, and no second request.
    assert!(conn.is_broken());
    assert!(matches!(conn.send(&Request::Status), Err(Error::Broken)));
    let Response::Status(status) = conn.receive().unwrap() else {
        panic!("not a status");
    };
    assert_eq!(status.appliance_index, 2);
    assert!(!conn.is_broken());
    // And in step again: a whole request works.
    assert!(matches!(
        conn.request(&Request::Status).unwrap(),
        Response::Status(_)
    ));
    drop(conn);
    server.join().unwrap().unwrap();
}

#[test]
fn appliance_certificates_are_client_certificates_too() {
    let ca = TestCa::new("cluster");
    let (addr, server) = serve_one(
        ca.identity(Role::Appliance(1)).server_config().unwrap(),
        Mode::Answer { hello_index: 1 },
    );
    let peer = ca.identity(Role::Appliance(2));
    let conn =
        Connection::connect(addr, 1, peer.client_config().unwrap(), timeouts(), "peer").unwrap();
    drop(conn);
    assert_eq!(server.join().unwrap().unwrap().role, Role::Appliance(2));
}

#[test]
fn an_appliance_presenting_a_revoked_certificate_is_refused() {
    use ittc_wire::revocation::{RevokedSerials, certificate_serial};
    let ca = TestCa::new("cluster");
    let (cert, key) = ca.issue(Role::Appliance(3));
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let serial = certificate_serial(&der).unwrap();
    let appliance =
        TlsIdentity::from_pem(ca.cert_pem.as_bytes(), cert.as_bytes(), key.as_bytes()).unwrap();
    let client = ca.identity(Role::Client);

    // Another appliance's serial on the list: this one is accepted.
    let (addr, server) = serve_one(
        appliance.server_config().unwrap(),
        Mode::Answer { hello_index: 3 },
    );
    let other = certificate_serial(
        &CertificateDer::from_pem_slice(ca.issue(Role::Appliance(3)).0.as_bytes()).unwrap(),
    )
    .unwrap();
    let config = client
        .client_config_with(Arc::new(RevokedSerials::new([other.as_slice()])))
        .unwrap();
    drop(Connection::connect(addr, 3, config, timeouts(), "x").unwrap());
    server.join().unwrap().unwrap();

    // Its own serial on the list: refused in the handshake.
    let (addr, server) = serve_one(
        appliance.server_config().unwrap(),
        Mode::Answer { hello_index: 3 },
    );
    let config = client
        .client_config_with(Arc::new(RevokedSerials::new([serial.as_slice()])))
        .unwrap();
    let err = Connection::connect(addr, 3, config, timeouts(), "x").unwrap_err();
    assert!(
        matches!(err, Error::Certificate(ref msg) if msg.contains("certificate revoked")),
        "{err}"
    );
    // The client aborted the handshake.
    assert!(server.join().unwrap().is_err());
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new("cluster");
    let rogue = TestCa::new("rogue");
    let (addr, server) = serve_one(
        ca.identity(Role::Appliance(1)).server_config().unwrap(),
        Mode::Answer { hello_index: 1 },
    );
    // Trusts the cluster CA (so it accepts the appliance), but its own certificate comes
    // from the rogue CA.
    let (cert, key) = rogue.issue(Role::Admin);
    let client =
        TlsIdentity::from_pem(ca.cert_pem.as_bytes(), cert.as_bytes(), key.as_bytes()).unwrap();

    let err =
        Connection::connect(addr, 1, client.client_config().unwrap(), timeouts(), "x").unwrap_err();
    assert!(
        matches!(err, Error::Tls(ref msg) if msg.contains("alert")),
        "{err}"
    );

    let server_err = server.join().unwrap().unwrap_err();
    assert!(
        matches!(
            rustls_error(&server_err),
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{server_err}"
    );
}

#[test]
fn client_without_certificate_is_refused() {
    let ca = TestCa::new("cluster");
    let (addr, server) = serve_one(
        ca.identity(Role::Appliance(1)).server_config().unwrap(),
        Mode::Answer { hello_index: 1 },
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();

    let err = Connection::connect(addr, 1, Arc::new(anonymous), timeouts(), "x").unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");
    let server_err = server.join().unwrap().unwrap_err();
    assert!(
        matches!(
            rustls_error(&server_err),
            rustls::Error::NoCertificatesPresented
        ),
        "{server_err}"
    );
}

#[test]
fn appliance_with_another_index_fails_on_the_name() {
    let ca = TestCa::new("cluster");
    let (addr, server) = serve_one(
        ca.identity(Role::Appliance(1)).server_config().unwrap(),
        Mode::Answer { hello_index: 1 },
    );
    let client = ca.identity(Role::Client);
    let err =
        Connection::connect(addr, 2, client.client_config().unwrap(), timeouts(), "x").unwrap_err();
    assert!(
        matches!(err, Error::Certificate(ref msg) if msg.contains("appliance-2.ittc")),
        "{err}"
    );
    // The client aborted the handshake.
    assert!(server.join().unwrap().is_err());
}

#[test]
fn hello_from_another_index_is_a_protocol_error() {
    let ca = TestCa::new("cluster");
    let (addr, server) = serve_one(
        ca.identity(Role::Appliance(1)).server_config().unwrap(),
        Mode::Answer { hello_index: 4 },
    );
    let client = ca.identity(Role::Client);
    let err =
        Connection::connect(addr, 1, client.client_config().unwrap(), timeouts(), "x").unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    server.join().unwrap().unwrap();
}

#[test]
fn silent_appliance_times_out_during_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        drain(&mut tcp);
    });
    let ca = TestCa::new("cluster");
    let client = ca.identity(Role::Client);
    let io = Duration::from_millis(400);
    let start = Instant::now();
    let err = Connection::connect(
        addr,
        1,
        client.client_config().unwrap(),
        Timeouts {
            connect: Duration::from_secs(3),
            io,
        },
        "x",
    )
    .unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, Error::Timeout), "{err}");
    assert!(elapsed >= io, "{elapsed:?}");
    assert!(elapsed < io + Duration::from_secs(2), "{elapsed:?}");
    server.join().unwrap();
}

#[test]
fn silent_appliance_times_out_on_a_request_and_the_connection_breaks() {
    let ca = TestCa::new("cluster");
    let (addr, server) = serve_one(
        ca.identity(Role::Appliance(1)).server_config().unwrap(),
        Mode::SilentAfterHello,
    );
    let client = ca.identity(Role::Client);
    let io = Duration::from_millis(400);
    let mut conn = Connection::connect(
        addr,
        1,
        client.client_config().unwrap(),
        Timeouts {
            connect: Duration::from_secs(3),
            io,
        },
        "x",
    )
    .unwrap();

    let start = Instant::now();
    let err = conn.request(&Request::Status).unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, Error::Timeout), "{err}");
    assert!(elapsed >= io, "{elapsed:?}");
    assert!(elapsed < io + Duration::from_secs(2), "{elapsed:?}");

    assert!(conn.is_broken());
    assert!(matches!(conn.request(&Request::Status), Err(Error::Broken)));
    drop(conn);
    server.join().unwrap().unwrap();
}

#[test]
fn tls12_only_client_is_refused() {
    let ca = TestCa::new("cluster");
    let (addr, server) = serve_one(
        ca.identity(Role::Appliance(1)).server_config().unwrap(),
        Mode::Answer { hello_index: 1 },
    );
    let (cert, key) = ca.issue(Role::Client);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();

    let err = Connection::connect(addr, 1, Arc::new(tls12), timeouts(), "x").unwrap_err();
    assert!(
        matches!(err, Error::Tls(ref msg) if msg.contains("alert")),
        "{err}"
    );
    let server_err = server.join().unwrap().unwrap_err();
    assert!(
        matches!(
            rustls_error(&server_err),
            rustls::Error::PeerIncompatible(_)
        ),
        "{server_err}"
    );
}

#[test]
fn connection_refused_is_an_io_error() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = TestCa::new("cluster").identity(Role::Client);
    let err =
        Connection::connect(addr, 1, client.client_config().unwrap(), timeouts(), "x").unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err}");
}

#[test]
fn bad_index_is_refused_before_connecting() {
    let client = TestCa::new("cluster").identity(Role::Client);
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for index in [0, 17] {
        let err = Connection::connect(addr, index, client.client_config().unwrap(), timeouts(), "")
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
}

#[test]
fn identity_reads_pem_and_redacts_the_key() {
    let ca = TestCa::new("cluster");
    let (cert, key) = ca.issue(Role::Admin);
    let id =
        TlsIdentity::from_pem(ca.cert_pem.as_bytes(), cert.as_bytes(), key.as_bytes()).unwrap();
    assert_eq!(id.identity().role, Role::Admin);
    let debug = format!("{id:?}");
    assert!(debug.contains("[redacted]"), "{debug}");
    let key_body: String = key.lines().nth(1).unwrap().chars().take(16).collect();
    assert!(!debug.contains(&key_body), "{debug}");

    // A key that is not the certificate's.
    let (_, other_key) = ca.issue(Role::Admin);
    let err = TlsIdentity::from_pem(
        ca.cert_pem.as_bytes(),
        cert.as_bytes(),
        other_key.as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Certificate(_)), "{err}");
    // No certificate at all.
    let err = TlsIdentity::from_pem(ca.cert_pem.as_bytes(), b"", key.as_bytes()).unwrap_err();
    assert!(matches!(err, Error::Certificate(_)), "{err}");
}

#[test]
fn identity_file_errors_name_the_file() {
    let ca = TestCa::new("cluster");
    let (cert, key) = ca.issue(Role::Client);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca_path = dir.join("ca.pem");
    let cert_path = dir.join("client.pem");
    let key_path = dir.join("client.key");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();

    let id = TlsIdentity::from_pem_files(&ca_path, &cert_path, &key_path).unwrap();
    assert_eq!(id.identity().role, Role::Client);

    let missing = dir.join("missing.pem");
    let err = TlsIdentity::from_pem_files(&ca_path, &missing, &key_path).unwrap_err();
    assert!(
        matches!(err, Error::File { ref path, .. } if *path == missing),
        "{err}"
    );
    assert!(err.to_string().contains("missing.pem"), "{err}");

    // The certificate where the key should be.
    let err = TlsIdentity::from_pem_files(&ca_path, &cert_path, &cert_path).unwrap_err();
    assert!(matches!(err, Error::Certificate(_)), "{err}");
    assert!(err.to_string().contains("client.pem"), "{err}");
}

#[test]
fn connection_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Connection>();
    assert_send::<TlsIdentity>();
}
