//! Hostile network peers against a real appliance on 127.0.0.1 (docs/appliance.md,
//! "Limits"): 5,000 idle connections, slowloris handshakes (a byte a second), oversized
//! length prefixes and garbage after the handshake, and client certificates of another
//! cluster's CA, all at once. A well-behaved client (a new connection and a request, and
//! a partial on a connection it keeps) is measured before and during the attack: it must
//! stay served within twice its latency without the attack, and the appliance must log
//! each kind of refusal once per period, not once per connection.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ittc_tests::{Cluster, Options};
use ittc_threshold::RsaPrivateKey;
use ittc_wire::{KeyId, Request, Response};

/// Idle connections the attacker keeps open.
const IDLE: usize = 5000;
/// At most how long the idle connections opened may take to reach [`IDLE`] in a window.
const RAMP: Duration = Duration::from_secs(20);
/// Windows without and with the attack.
const WINDOWS: usize = 4;
/// The client's rounds in each window.
const ROUNDS: usize = 10;

/// Raises this process's open-file limit to what the idle connections need (children
/// inherit it).
fn raise_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let want = (IDLE as u64) + 1024;
    if limit.current.is_some_and(|c| c < want) {
        limit.current = Some(limit.maximum.map_or(want, |m| m.min(want)));
        setrlimit(Resource::Nofile, limit).unwrap();
    }
}

/// One round of the well-behaved client: a new connection with its handshake and a status
/// request, then a partial on the connection it keeps. Returns the time both took.
fn client_round(
    cluster: &Cluster,
    kept: &mut ittc_wire::Connection,
    partial: &Request,
) -> Duration {
    let start = Instant::now();
    let mut fresh = cluster
        .connect_as(1, "client")
        .unwrap_or_else(|e| panic!("the client's new connection failed: {e}"));
    assert!(matches!(
        fresh.request(&Request::Status).unwrap(),
        Response::Status(_)
    ));
    if std::env::var_os("HOSTILE_DEBUG").is_some() {
        eprintln!("fresh {:?}", start.elapsed());
    }
    assert!(matches!(
        kept.request(partial).unwrap(),
        Response::PartialResult(_)
    ));
    start.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// A TLS stream as `config`, past the handshake (or the handshake's error).
fn tls_stream(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(2)))?;
    let name = rustls::pki_types::ServerName::try_from("appliance-1.ittc").unwrap();
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Opens TCP connections that never send a byte, keeping up to [`IDLE`] open and opening
/// new ones (at most 10,000 a second) as the appliance closes them; counts them in
/// `opened`.
fn idle_attacker(addr: SocketAddr, stop: &AtomicBool, opened: &AtomicUsize) {
    let mut open: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        // Drop the ones the appliance closed.
        open.retain(|mut s| {
            let mut byte = [0u8; 1];
            matches!(s.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
        });
        let mut budget = 1000;
        while open.len() < IDLE && budget > 0 && !stop.load(Ordering::Relaxed) {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                s.set_nonblocking(true).unwrap();
                open.push(s);
                opened.fetch_add(1, Ordering::Relaxed);
            }
            budget -= 1;
        }
        std::thread::sleep(Duration::from_millis(100).saturating_sub(round.elapsed()));
    }
}

/// Slowloris: connections that send the start of a TLS ClientHello, one byte a second.
fn slowloris(addr: SocketAddr, stop: &AtomicBool) {
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut conns: Vec<(TcpStream, usize)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        while conns.len() < 20 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(s) => conns.push((s, 0)),
                Err(_) => break,
            }
        }
        conns.retain_mut(|(s, sent)| {
            let byte = hello[*sent % hello.len()];
            *sent += 1;
            s.write_all(&[byte]).is_ok()
        });
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Authenticated, then hostile: a length prefix of 4 GiB, or random bytes; again and
/// again, 20 times a second.
fn garbage_after_handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    stop: &AtomicBool,
) -> usize {
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut stream) = tls_stream(addr, Arc::clone(&config)) {
            let bytes: Vec<u8> = if sent % 2 == 0 {
                vec![0xff, 0xff, 0xff, 0xff, 0x00]
            } else {
                (0..4096).map(|_| rand::random::<u8>()).collect()
            };
            let _ = stream.write_all(&bytes);
            let _ = stream.flush();
            let mut answer = [0u8; 256];
            let _ = stream.read(&mut answer);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sent
}

/// Handshakes with a client certificate of another cluster's CA, 20 times a second.
fn foreign_certificates(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    stop: &AtomicBool,
) -> usize {
    let mut refused = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut stream) = tls_stream(addr, Arc::clone(&config)) {
            // TLS 1.3: the client's certificate is judged after the client's handshake
            // ends; the refusal arrives on the first read.
            let _ = stream.write_all(&[0, 0, 0, 1, 0]);
            let mut answer = [0u8; 64];
            if stream.read(&mut answer).is_err() {
                refused += 1;
            }
        } else {
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    refused
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn hostile_peers_leave_a_well_behaved_client_served() {
    raise_file_limit();
    let mut cluster = Cluster::new(2, &Options::default());
    cluster.start_all();
    let openssl = openssl::rsa::Rsa::generate(2048).unwrap();
    let key = RsaPrivateKey::from_bytes(&openssl.private_key_to_pem().unwrap(), None).unwrap();
    cluster.import_key(&key, 2, b"hostile", "test key");
    let pin = b"246810";
    cluster.set_user_pin(pin);
    let addr = cluster.address(1);
    let partial = Request::Partial {
        key_id: KeyId::new(b"hostile".to_vec()).unwrap(),
        epoch: 1,
        input: vec![0x42; 200],
    };
    let mut kept = cluster.user_session(1, pin);
    // A client certificate of another cluster.
    let stranger = Cluster::new(1, &Options::default());
    let foreign = ittc_tests::client_config(&stranger.identity("client"));
    let own = ittc_tests::client_config(&cluster.identity("client"));
    for _ in 0..5 {
        client_round(&cluster, &mut kept, &partial);
    }
    let log_before = cluster.log(1).lines().count();

    // Windows without and with the attack take turns, so that whatever else loads the
    // machine weighs on both alike.
    let (mut quiet, mut attacked) = (Vec::new(), Vec::new());
    let began = Instant::now();
    let (mut garbage_sent, mut foreign_refused) = (0, 0);
    for _ in 0..WINDOWS {
        for _ in 0..ROUNDS {
            quiet.push(client_round(&cluster, &mut kept, &partial));
            std::thread::sleep(Duration::from_millis(20));
        }
        let stop = AtomicBool::new(false);
        let opened = AtomicUsize::new(0);
        let counts = std::thread::scope(|scope| {
            // The attackers stop also when the client's side panics.
            let _stop = StopOnDrop(&stop);
            let idle = scope.spawn(|| idle_attacker(addr, &stop, &opened));
            let slow = scope.spawn(|| slowloris(addr, &stop));
            let garbage = scope.spawn(|| garbage_after_handshake(addr, own.clone(), &stop));
            let strangers = scope.spawn(|| foreign_certificates(addr, foreign.clone(), &stop));
            // The idle connections pile up first.
            let ramp = Instant::now();
            while opened.load(Ordering::Relaxed) < IDLE {
                assert!(
                    ramp.elapsed() < RAMP,
                    "{opened:?} idle connections after {RAMP:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            for _ in 0..ROUNDS {
                attacked.push(client_round(&cluster, &mut kept, &partial));
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
            slow.join().unwrap();
            idle.join().unwrap();
            (garbage.join().unwrap(), strangers.join().unwrap())
        });
        garbage_sent += counts.0;
        foreign_refused += counts.1;
    }
    let (quiet, under_attack) = (median(quiet), median(attacked));
    let periods = began.elapsed().as_secs() / 10 + 1;
    assert!(garbage_sent > 40, "{garbage_sent} garbage connections");
    assert!(
        foreign_refused > 40,
        "{foreign_refused} foreign certificates refused"
    );
    assert!(
        under_attack <= quiet * 2,
        "the client's median round took {under_attack:?} under attack, {quiet:?} without"
    );

    // The appliance still serves, and logged each kind of refusal a few times, not once
    // per connection: per kind and 10 s, one line and one with the count of the others.
    assert!(matches!(
        cluster
            .connect_as(1, "client")
            .unwrap()
            .request(&Request::Status)
            .unwrap(),
        Response::Status(_)
    ));
    let log = cluster.log(1);
    let attack_log: Vec<&str> = log.lines().skip(log_before).collect();
    for kind in [
        "connection closed in its handshake for a newer one",
        "TLS handshake refused",
        "bad frame header",
    ] {
        let lines = attack_log.iter().filter(|l| l.contains(kind)).count();
        assert!(
            (1..=2 * periods as usize).contains(&lines),
            "{lines} lines of {kind:?} in the log in {periods} periods of 10 s"
        );
    }
    // Authenticated connections log when they open and close; the thousands of refused
    // ones do not add a line each.
    let idle_opened = IDLE * WINDOWS;
    assert!(
        attack_log.len() < idle_opened / 4,
        "{} log lines for over {idle_opened} idle connections",
        attack_log.len()
    );
    println!(
        "client round: median {quiet:?} alone, {under_attack:?} under attack; \
         over {idle_opened} idle connections, {garbage_sent} garbage, {foreign_refused} foreign \
         certificates; {} log lines",
        attack_log.len()
    );
}
