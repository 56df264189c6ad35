//! Dealerless key generation across real appliances: `ittc key generate` on three
//! `ittc-appliance` processes (made by `ittc init`, so each knows its peers), the key used
//! through the PKCS#11 module (`ittc sign`) and the signature verified by OpenSSL; the
//! counters a generation reports while it runs (`KeygenProgress`, and the CLI's poller);
//! and an appliance killed in the middle of a generation: a clear error, nothing left
//! anywhere, and the next attempt works.
//!
//! Build first: `cargo build -p ittc-appliance -p ittc-provisioning -p ittc-pkcs11`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ittc_provisioning::cluster::Cluster as CliCluster;
use ittc_provisioning::generate::{GenerateSpec, Progress, generate_with_progress};
use ittc_tests::cli::{InitCluster, ittc, ok};
use ittc_wire::client::{Connection, Timeouts};
use ittc_wire::{
    ErrorCode, KeyId, KeygenProgress, KeygenResult, KeygenSpec, ObjectId, Request, Response,
    SecretBytes, UserKind,
};

/// Appliance config that allows the 1024-bit generations these tests run.
const SMALL_KEYS: &str = "[keygen]\nmin_bits = 1024\ntimeout_ms = 600000\n";

/// `ittc key generate` of a 1024-bit key with id `id`.
fn generate(cluster: &InitCluster, id: &str) -> Command {
    let mut command = ittc(&[
        "--cluster",
        &cluster.arg(),
        "key",
        "generate",
        "--bits",
        "1024",
        "--label",
        "generated",
        "--id",
        id,
    ]);
    command.stdin(Stdio::null());
    command
}

/// Every appliance's keys: (appliance, key id hex, active epoch, pending epoch).
fn keys_of(cluster: &InitCluster) -> Vec<(u8, String, Option<u64>, Option<u64>)> {
    let cli = CliCluster::open(&cluster.dir).unwrap();
    let mut out = Vec::new();
    for index in cli.indices() {
        let Ok(mut c) = cli.connect(index) else {
            continue;
        };
        if let Ok(Response::Status(s)) = c.request(&Request::Status) {
            for k in s.keys {
                out.push((
                    index,
                    hex::encode(k.key_id.as_bytes()),
                    k.active_epoch,
                    k.pending_epoch,
                ));
            }
        }
    }
    out
}

/// The number after `name: ` in the CLI's summary line.
fn count_after(out: &str, name: &str) -> u64 {
    let rest = &out[out.find(&format!("{name}: ")).unwrap() + name.len() + 2..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

#[test]
fn generated_1024_bit_key_signs_through_the_module() {
    let running = InitCluster::new(3, 2, SMALL_KEYS);
    let pin = running.set_user_pin(b"246810\n");
    let started = Instant::now();
    let out = ok(generate(&running, "0a").output().unwrap());
    eprintln!(
        "1024-bit generation: {:.1} s\n{out}",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains("generated RSA-1024 key id 0a"), "{out}");
    assert!(count_after(&out, "candidates tried") > 0, "{out}");
    assert!(count_after(&out, "biprimality tests") > 0, "{out}");
    assert!(count_after(&out, "rounds") > 0, "{out}");
    let keys = keys_of(&running);
    assert_eq!(keys.len(), 3, "{keys:?}");
    for (_, id, active, pending) in &keys {
        assert_eq!((id.as_str(), *active, *pending), ("0a", Some(1), None));
    }
    running.sign_and_verify("0a", &pin, &running.public_key(&[0x0a]));

    // The same id again is refused before anything starts.
    let again = generate(&running, "0a").output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(keys_of(&running).len(), 3);
    // No secret in any log.
    for i in 1..=3 {
        let log = running.log(i);
        assert!(log.contains("key generation finished"), "{log}");
    }
}

/// Every counter of `later` is at least that of `earlier`.
fn not_behind(earlier: &KeygenProgress, later: &KeygenProgress) -> bool {
    later.batches >= earlier.batches
        && later.candidates >= earlier.candidates
        && later.biprimality_tests >= earlier.biprimality_tests
        && later.rounds >= earlier.rounds
        && later.elapsed_ms >= earlier.elapsed_ms
}

fn as_progress(result: &KeygenResult) -> KeygenProgress {
    KeygenProgress {
        batches: result.batches,
        candidates: result.candidates,
        biprimality_tests: result.biprimality_tests,
        rounds: result.rounds,
        elapsed_ms: result.elapsed_ms,
    }
}

/// Records what `generate_with_progress` reports.
#[derive(Default)]
struct Recorder {
    steps: RefCell<Vec<String>>,
    counts: RefCell<Vec<KeygenProgress>>,
}

impl Progress for Recorder {
    fn step(&self, step: &str) {
        self.steps.borrow_mut().push(step.to_owned());
    }

    fn counts(&self, counts: &KeygenProgress) {
        self.counts.borrow_mut().push(*counts);
    }
}

#[test]
fn progress_is_reported_while_a_generation_runs_and_not_after() {
    let running = InitCluster::new(3, 2, SMALL_KEYS);
    running.set_user_pin(b"246810\n");
    let cli = CliCluster::open(&running.dir).unwrap();
    let session = [0x42; 16];
    let progress = Request::KeygenProgress { session };
    let spec = KeygenSpec {
        session,
        key_id: KeyId::new(vec![0x0d]).unwrap(),
        label: "watched".into(),
        bits: 1024,
        public_exponent: 65537,
        threshold: 2,
        participants: cli.config.participants(),
        parties: 3,
        holders: vec![1, 2, 3],
    };
    let long = Timeouts {
        connect: Duration::from_secs(5),
        io: Duration::from_secs(300),
    };
    // Before the generation: no such session.
    let mut watcher = cli.connect(1).unwrap();
    let Response::Error(before) = watcher.request(&progress).unwrap() else {
        panic!("progress of a session that has not started")
    };
    assert_eq!(before.code, ErrorCode::NotFound, "{before}");

    let (answers, polled, slowest) = std::thread::scope(|scope| {
        let generation = scope.spawn(|| {
            cli.in_parallel(cli.indices(), |index| {
                let mut c = cli.connect_with(index, long).unwrap();
                c.request(&Request::GenerateKey(spec.clone())).unwrap()
            })
        });
        // Poll on a connection of its own while the GenerateKey requests run.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut polled: Vec<KeygenProgress> = Vec::new();
        let mut slowest = Duration::ZERO;
        while !generation.is_finished() {
            assert!(Instant::now() < deadline, "the generation did not end");
            let asked = Instant::now();
            match watcher.request(&progress).unwrap() {
                Response::KeygenProgress(p) => polled.push(p),
                // Appliance 1 has not registered the session yet, or it is just over.
                Response::Error(e) if e.code == ErrorCode::NotFound => {}
                other => panic!("unexpected answer to a progress request: {other:?}"),
            }
            slowest = slowest.max(asked.elapsed());
            std::thread::sleep(Duration::from_millis(10));
        }
        (generation.join().unwrap(), polled, slowest)
    });
    eprintln!(
        "{} progress answers, slowest {slowest:?}; last {:?}",
        polled.len(),
        polled.last()
    );
    // Counts only grow, and some candidates were reported while the protocol ran.
    assert!(
        polled.windows(2).all(|w| not_behind(&w[0], &w[1])),
        "{polled:?}"
    );
    let seen = polled
        .iter()
        .find(|p| p.candidates > 0)
        .copied()
        .unwrap_or_else(|| panic!("no candidates reported while the generation ran: {polled:?}"));
    assert!(seen.batches > 0 && seen.rounds > 0, "{seen:?}");
    // The appliance answered at once, however busy its party was.
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    // The final counts are at least the polled ones.
    let results: Vec<KeygenResult> = answers
        .into_iter()
        .map(|(index, r)| match r {
            Response::KeyGenerated(result) => result,
            other => panic!("appliance {index}: {other:?}"),
        })
        .collect();
    assert_eq!(results.len(), 3);
    let last = polled.last().unwrap();
    assert!(
        not_behind(last, &as_progress(&results[0])),
        "{last:?} {:?}",
        results[0]
    );
    for result in &results {
        assert!(result.candidates >= seen.candidates, "{result:?}");
    }
    // Over: the session is gone.
    let Response::Error(after) = watcher.request(&progress).unwrap() else {
        panic!("progress of a finished session")
    };
    assert_eq!(after.code, ErrorCode::NotFound, "{after}");
    assert!(after.message.contains("no such session"), "{after}");

    // A client must be logged in as the user to ask; then it gets the same answer.
    let identity = cli.config.identity().unwrap();
    let mut client = Connection::connect(
        cli.config.appliance(1).unwrap().resolve().unwrap(),
        1,
        identity.client_config().unwrap(),
        Timeouts {
            connect: Duration::from_secs(3),
            io: Duration::from_secs(10),
        },
        "keygen test",
    )
    .unwrap();
    let Response::Error(anonymous) = client.request(&progress).unwrap() else {
        panic!("a client not logged in got an answer")
    };
    assert_eq!(anonymous.code, ErrorCode::NotLoggedIn, "{anonymous}");
    let login = Request::Login {
        user: UserKind::User,
        pin: SecretBytes::new(b"246810".to_vec()),
    };
    assert_eq!(client.request(&login).unwrap(), Response::Ok);
    let Response::Error(e) = client.request(&progress).unwrap() else {
        panic!("progress of a finished session")
    };
    assert_eq!(e.code, ErrorCode::NotFound, "{e}");

    // The CLI's poller: counts come during the search, never ahead of the final ones.
    let recorder = Recorder::default();
    let spec = GenerateSpec {
        bits: 1024,
        public_exponent: 65537,
        id: &[0x0e],
        label: "watched by the CLI",
        timeout: Duration::from_secs(300),
    };
    let generated = generate_with_progress(&cli, &spec, &recorder).unwrap();
    let counts = recorder.counts.into_inner();
    let steps = recorder.steps.into_inner();
    eprintln!(
        "CLI poller: {} reports in {:.1} s, final {:?}",
        counts.len(),
        generated.elapsed.as_secs_f64(),
        as_progress(&generated.stats)
    );
    assert!(steps.iter().any(|s| s == "committing"), "{steps:?}");
    assert!(
        counts.windows(2).all(|w| not_behind(&w[0], &w[1])),
        "{counts:?}"
    );
    if let Some(last) = counts.last() {
        assert!(not_behind(last, &as_progress(&generated.stats)), "{last:?}");
    }
    // A poll every 500 ms: a search of more than two seconds must have been reported.
    if generated.stats.elapsed_ms > 2_000 {
        assert!(
            counts.iter().any(|c| c.candidates > 0),
            "{counts:?} in {} ms",
            generated.stats.elapsed_ms
        );
    }
}

#[test]
fn an_appliance_killed_midway_leaves_nothing_and_the_next_attempt_works() {
    // A 1024-bit search can be over in a fraction of a second: a kill that comes after
    // appliance 3 has finished its part tests something else (a share left on a dead
    // appliance), so such a run is started again on a fresh cluster.
    let mut attempt = 0;
    let (mut running, pin) = loop {
        attempt += 1;
        let mut running = InitCluster::new(3, 2, SMALL_KEYS);
        let pin = running.set_user_pin(b"246810\n");
        let child = generate(&running, "0b")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until appliance 3 is in the protocol, then kill it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !running.log(3).contains("key generation started") {
            assert!(Instant::now() < deadline, "the generation never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        running.kill(3);
        let started = Instant::now();
        let output = child.wait_with_output().unwrap();
        let waited = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if running.log(3).contains("key generation finished") {
            assert!(
                attempt < 5,
                "every search was over before the kill: {stderr}"
            );
            eprintln!("attempt {attempt}: the search was over before the kill; again");
            continue;
        }
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("appliance 3"), "{stderr}");
        assert!(stderr.contains("nothing is left"), "{stderr}");
        assert!(
            waited < Duration::from_secs(30),
            "took {waited:?} to notice"
        );
        eprintln!("noticed in {waited:?}: {stderr}");
        assert!(keys_of(&running).is_empty(), "{:?}", keys_of(&running));
        for i in 1..=2 {
            assert!(running.log(i).contains("key generation failed"));
        }
        break (running, pin);
    };

    running.start(3);
    ok(generate(&running, "0b").output().unwrap());
    assert_eq!(keys_of(&running).len(), 3);
    running.sign_and_verify("0b", &pin, &running.public_key(&[0x0b]));
}

#[test]
fn a_key_generated_with_appliances_away_reaches_them_when_they_return() {
    // 3-of-5: a generation needs 3 appliances (k, a majority of 5, and Boneh–Franklin's 3).
    let mut running = InitCluster::new(5, 3, SMALL_KEYS);
    let pin = running.set_user_pin(b"246810\n");
    running.kill(4);
    running.kill(5);
    let out = ok(generate(&running, "0c").output().unwrap());
    assert!(out.contains("generated RSA-1024 key id 0c"), "{out}");
    let holders: Vec<u8> = keys_of(&running)
        .into_iter()
        .filter(|(_, id, active, _)| id == "0c" && *active == Some(1))
        .map(|(index, ..)| index)
        .collect();
    assert_eq!(holders, [1, 2, 3]);
    let public = running.public_key(&[0x0c]);
    running.sign_and_verify("0c", &pin, &public);

    // Two answering are too few: a clear error naming the missing, and nothing changes.
    running.kill(3);
    let refused = generate(&running, "0d").output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs 3 of the 5 appliances and 2 answer"),
        "{stderr}"
    );
    for missing in ["appliance 3", "appliance 4", "appliance 5"] {
        assert!(stderr.contains(missing), "{missing}: {stderr}");
    }
    assert!(keys_of(&running).iter().all(|(_, id, ..)| id != "0d"));

    // Back: 4 and 5 rebuild their shares (and take the key's objects) by themselves.
    for index in 3..=5 {
        running.start(index);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holding = keys_of(&running)
            .into_iter()
            .filter(|(_, id, active, _)| id == "0c" && *active == Some(1))
            .count();
        if holding == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "appliances 4 and 5 did not catch up: {:?}\n{}",
            keys_of(&running),
            running.log(4)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let cli = CliCluster::open(&running.dir).unwrap();
    for index in [4, 5] {
        let mut c = cli.connect(index).unwrap();
        let handle = ObjectId::derived("public-key", &[0x0c]);
        assert!(
            matches!(
                c.request(&Request::GetObject { handle }).unwrap(),
                Response::Object { .. }
            ),
            "appliance {index} lacks the key's public-key object"
        );
    }
    // The three that were away (or down) sign alone.
    running.kill(1);
    running.kill(2);
    running.sign_and_verify("0c", &pin, &public);
}

/// How long a 2048-bit generation takes on three local appliances (not run by default:
/// `cargo test -p ittc-tests --test keygen -- --ignored --nocapture`).
#[test]
#[ignore = "slow: a 2048-bit generation"]
fn timing_2048_bit_generation() {
    let running = InitCluster::new(3, 2, SMALL_KEYS);
    let started = Instant::now();
    let out = ok(ittc(&[
        "--cluster",
        &running.arg(),
        "key",
        "generate",
        "--bits",
        "2048",
        "--label",
        "big",
        "--id",
        "0c",
    ])
    .output()
    .unwrap());
    eprintln!(
        "2048-bit generation on 3 local appliances: {:.1} s\n{out}",
        started.elapsed().as_secs_f64()
    );
}
