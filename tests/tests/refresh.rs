//! Proactive refresh across real appliance processes on 127.0.0.1: a refresh by hand and
//! on the schedule, a k-set that mixes epochs, erasure of the old epoch, a holder whose
//! values do not fit, refused messages, and a SIGKILL at every named step of a refresh,
//! of a holder and (separately) of the coordinator, after which the cluster signs and
//! agrees on one epoch by itself; the same for a rebuild, and for a reshare (a holder
//! that joins, one that leaves, and the coordinator).

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use ittc_tests::{Cluster, Options, appliance_binary, logged_forms};
use ittc_threshold::{Combiner, Partial, RsaPrivateKey, RsaPublicKey, SharingParams};
use ittc_wire::client::Timeouts;
use ittc_wire::{
    ErrorCode, KeyId, KeyStatus, Participant, RefreshOutcome, RefreshSource, RefreshSpec,
    RefreshStepKind, Request, Response, SecretBytes, WireError,
};
use num_bigint::BigUint;
use openssl::rsa::Rsa;

const KEY: &[u8] = b"\x0a";
const PIN: &[u8] = b"135790";

fn key_id() -> KeyId {
    KeyId::new(KEY.to_vec()).unwrap()
}

/// A running n-appliance cluster with one imported RSA-2048 key, k of n.
fn cluster(n: u8, k: usize, options: Options) -> (Cluster, RsaPrivateKey) {
    let mut cluster = Cluster::new(n, &options);
    cluster.start_all();
    let rsa = Rsa::generate(2048).unwrap();
    let key = RsaPrivateKey::from_bytes(&rsa.private_key_to_pem().unwrap(), None).unwrap();
    cluster.import_key(&key, k, KEY, "refreshed");
    cluster.set_user_pin(PIN);
    (cluster, key)
}

/// `RefreshKey` sent to appliance `coordinator` as the admin.
fn refresh(cluster: &Cluster, coordinator: u8) -> Result<RefreshOutcome, WireError> {
    let mut admin = ittc_wire::Connection::connect(
        cluster.address(coordinator),
        coordinator,
        cluster.identity("admin").client_config().unwrap(),
        Timeouts {
            connect: Duration::from_secs(3),
            io: Duration::from_secs(120),
        },
        "refresh test",
    )
    .unwrap();
    match admin.request(&Request::RefreshKey {
        key_id: key_id(),
        session: rand::random(),
    }) {
        Ok(Response::Refreshed(outcome)) => Ok(outcome),
        Ok(Response::Error(e)) => Err(e),
        other => panic!("refresh answered {other:?}"),
    }
}

/// The key as appliance `index` reports it, if it answers.
fn status(cluster: &Cluster, index: u8) -> Option<KeyStatus> {
    let mut c = cluster.connect_as(index, "admin").ok()?;
    match c.request(&Request::Status).ok()? {
        Response::Status(s) => s.keys.into_iter().find(|k| k.key_id == key_id()),
        _ => None,
    }
}

/// Signs a random input with the appliances `set` on `epoch` (their partials, combined
/// and checked with `e`); the error names what went wrong.
fn sign_with(
    cluster: &Cluster,
    public: &RsaPublicKey,
    params: &SharingParams,
    set: &[u8],
    epoch: u64,
) -> Result<(), String> {
    let input = public.random_residue(&mut rand::rng());
    let mut partials = Vec::new();
    for &index in set {
        let mut c = cluster.user_session(index, PIN);
        match c
            .request(&Request::Partial {
                key_id: key_id(),
                epoch,
                input: public.integer_to_be(&input),
            })
            .unwrap()
        {
            Response::PartialResult(p) => partials.push(Partial {
                index: usize::from(index),
                value: BigUint::from_bytes_be(&p.value),
            }),
            other => return Err(format!("appliance {index}: {other:?}")),
        }
    }
    let y = Combiner::new(public, params)
        .unwrap()
        .combine(&input, &partials)
        .map_err(|e| format!("{set:?} on epoch {epoch}: {e}"))?;
    assert_eq!(public.raw_public_vartime(&y).unwrap(), input);
    Ok(())
}

/// Every k-subset of the n appliances signs on `epoch`.
fn every_k_set_signs(cluster: &Cluster, key: &RsaPrivateKey, k: usize, n: u8, epoch: u64) {
    let params = SharingParams::new(k, usize::from(n)).unwrap();
    let indices: Vec<u8> = (1..=n).collect();
    let mut chosen: Vec<usize> = (0..k).collect();
    loop {
        let set: Vec<u8> = chosen.iter().map(|&i| indices[i]).collect();
        sign_with(cluster, key.public_key(), &params, &set, epoch).unwrap();
        // Next k-combination.
        let Some(i) = (0..k).rev().find(|&i| chosen[i] < indices.len() - k + i) else {
            break;
        };
        chosen[i] += 1;
        for j in i + 1..k {
            chosen[j] = chosen[j - 1] + 1;
        }
    }
}

/// Waits (bounded) until every appliance reports the key with no pending or retiring
/// epoch and the same active epoch; returns it.
fn settled(cluster: &Cluster, n: u8, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let seen: Vec<Option<KeyStatus>> = (1..=n).map(|i| status(cluster, i)).collect();
        let epochs: Vec<Option<u64>> = seen
            .iter()
            .map(|s| {
                s.as_ref()
                    .filter(|s| s.pending_epoch.is_none() && s.retiring_epoch.is_none())
                    .and_then(|s| s.active_epoch)
            })
            .collect();
        if let Some(Some(first)) = epochs.first()
            && epochs.iter().all(|e| *e == Some(*first))
        {
            return *first;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle within {limit:?}: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `ittc-appliance audit show` of a stopped appliance: the `(request, result)` of every
/// entry about the test key.
fn audit(cluster: &Cluster, index: u8) -> Vec<(String, String)> {
    let out = Command::new(appliance_binary())
        .args(["audit", "show", "--config"])
        .arg(&cluster.appliances[usize::from(index) - 1].config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields.get(4) == Some(&hex::encode(KEY).as_str()))
                .then(|| (fields[3].to_owned(), fields[5].to_owned()))
        })
        .collect()
}

/// The epoch key files an appliance keeps.
fn epoch_key_files(cluster: &Cluster, index: u8) -> Vec<String> {
    let dir = cluster.appliances[usize::from(index) - 1]
        .data_dir
        .join("epoch-keys");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The epoch key files of appliance `index` once there are `count` of them, or as they are
/// after 10 s. A key's record changes first and its files follow after the flush, so a
/// status that shows the change can come a moment before the files do.
fn epoch_key_files_settled(cluster: &Cluster, index: u8, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = epoch_key_files(cluster, index);
        if names.len() == count || Instant::now() >= deadline {
            return names;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_refresh_gives_a_new_epoch_that_signs_and_erases_the_old_one() {
    let (mut cluster, key) = cluster(3, 2, Options::default());
    let public = key.public_key().clone();
    let params = SharingParams::new(2, 3).unwrap();
    every_k_set_signs(&cluster, &key, 2, 3, 1);
    // A partial of epoch 1 from appliance 1, kept as a thief would keep a stolen share's.
    let input = public.random_residue(&mut rand::rng());
    let partial = |index: u8, epoch: u64| {
        let mut c = cluster.user_session(index, PIN);
        let Response::PartialResult(p) = c
            .request(&Request::Partial {
                key_id: key_id(),
                epoch,
                input: public.integer_to_be(&input),
            })
            .unwrap()
        else {
            panic!("no partial from {index} on epoch {epoch}");
        };
        Partial {
            index: usize::from(index),
            value: BigUint::from_bytes_be(&p.value),
        }
    };
    let stolen = partial(1, 1);

    for round in 1..=3u64 {
        let outcome = refresh(&cluster, 1).unwrap();
        assert_eq!((outcome.from_epoch, outcome.to_epoch), (round, round + 1));
        assert!(outcome.erased, "{outcome:?}");
        assert_eq!(settled(&cluster, 3, Duration::from_secs(10)), round + 1);
    }
    every_k_set_signs(&cluster, &key, 2, 3, 4);
    for index in 1..=3 {
        let s = status(&cluster, index).unwrap();
        assert!(s.refresh.last_refresh_unix_ms.is_some());
        assert_eq!(s.refresh.last_failure, None);
        // Only the current epoch's key file is left.
        assert_eq!(
            epoch_key_files_settled(&cluster, index, 1).len(),
            1,
            "appliance {index}"
        );
        // The old epoch is gone: a client asking for it is told so.
        let mut c = cluster.user_session(index, PIN);
        let Response::Error(e) = c
            .request(&Request::Partial {
                key_id: key_id(),
                epoch: 1,
                input: public.integer_to_be(&input),
            })
            .unwrap()
        else {
            panic!("epoch 1 still answers on appliance {index}");
        };
        assert_eq!(e.code, ErrorCode::WrongEpoch);
    }
    // The stolen epoch-1 partial does not combine with a partial of the new epoch.
    let combiner = Combiner::new(&public, &params).unwrap();
    assert!(combiner.combine(&input, &[stolen, partial(2, 4)]).is_err());
    assert!(
        combiner
            .combine(&input, &[partial(1, 4), partial(2, 4)])
            .is_ok()
    );

    // Every step is in every appliance's audit log.
    for index in 1..=3 {
        cluster.stop(index);
        let entries = audit(&cluster, index);
        let count = |request: &str| {
            entries
                .iter()
                .filter(|(r, result)| r == request && result == "ok")
                .count()
        };
        for step in [
            "refresh_begin",
            "refresh_split",
            "refresh_deal",
            "refresh_run",
            "refresh_ready",
            "refresh_commit",
            "refresh_erase",
        ] {
            assert_eq!(count(step), 3, "appliance {index}: {step} in {entries:?}");
        }
        if index == 1 {
            assert_eq!(count("refresh_trial"), 3, "{entries:?}");
            assert_eq!(count("refresh"), 3, "{entries:?}");
        }
    }
}

#[test]
fn a_3_of_5_key_refreshes_and_every_3_set_signs() {
    let (cluster, key) = cluster(5, 3, Options::default());
    for _ in 0..2 {
        refresh(&cluster, 1).unwrap();
    }
    assert_eq!(settled(&cluster, 5, Duration::from_secs(10)), 3);
    every_k_set_signs(&cluster, &key, 3, 5, 3);
}

#[test]
fn a_holder_with_values_that_do_not_fit_fails_the_trial_and_nothing_changes() {
    let (mut cluster, key) = cluster(3, 2, Options::default());
    cluster.stop(3);
    cluster.restart_with_env(3, &[("ITTC_TEST_REFRESH_CORRUPT", "1")]);
    let err = refresh(&cluster, 1).unwrap_err();
    assert!(err.message.contains("trial"), "{err}");
    assert!(err.message.contains("rolled back everywhere"), "{err}");
    assert_eq!(settled(&cluster, 3, Duration::from_secs(10)), 1);
    every_k_set_signs(&cluster, &key, 2, 3, 1);
    let failure = status(&cluster, 1).unwrap().refresh.last_failure.unwrap();
    assert!(failure.reason.contains("trial"), "{failure:?}");
    for index in 1..=3 {
        assert_eq!(
            epoch_key_files_settled(&cluster, index, 1).len(),
            1,
            "appliance {index}"
        );
    }
    cluster.stop(1);
    let entries = audit(&cluster, 1);
    assert!(
        entries
            .iter()
            .any(|(r, result)| r == "refresh_trial" && result.starts_with("failed")),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|(r, result)| r == "refresh" && result.starts_with("aborted")),
        "{entries:?}"
    );
}

#[test]
fn a_piece_of_the_wrong_length_or_out_of_range_is_refused_naming_its_sender() {
    let (mut cluster, key) = cluster(3, 2, Options::default());
    for (mode, expected) in [
        (
            "short",
            "appliance 3 sent a bad value (value of the wrong length)",
        ),
        ("range", "appliance 3 sent a bad value (piece out of range)"),
    ] {
        cluster.stop(3);
        cluster.restart_with_env(3, &[("ITTC_TEST_REFRESH_CORRUPT", mode)]);
        let err = refresh(&cluster, 1).unwrap_err();
        assert!(err.message.contains(expected), "{mode}: {err}");
        assert!(err.message.contains("rolled back everywhere"), "{err}");
        assert_eq!(settled(&cluster, 3, Duration::from_secs(10)), 1);
        every_k_set_signs(&cluster, &key, 2, 3, 1);
    }
}

/// A connection to appliance `index` as `name`.
fn ask(cluster: &Cluster, index: u8, name: &str, request: &Request) -> Response {
    cluster
        .connect_as(index, name)
        .unwrap()
        .request(request)
        .unwrap()
}

fn code(response: Response) -> ErrorCode {
    match response {
        Response::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A refresh logged at `trace` level for every crate logs none of the shares it replaces,
/// nor the PIN; the new epoch signs with every 2 of the 3.
#[test]
fn a_refresh_logged_at_trace_level_holds_no_share_and_no_pin() {
    let options = Options {
        log_level: "trace",
        ..Options::default()
    };
    let mut cluster = Cluster::new(3, &options);
    cluster.start_all();
    let rsa = Rsa::generate(2048).unwrap();
    let key = RsaPrivateKey::from_bytes(&rsa.private_key_to_pem().unwrap(), None).unwrap();
    let (_, shares) = cluster.import_key_with_shares(&key, 2, KEY, "quiet");
    cluster.set_user_pin(PIN);
    let outcome = refresh(&cluster, 1).unwrap();
    assert_eq!((outcome.from_epoch, outcome.to_epoch), (1, 2));
    assert_eq!(settled(&cluster, 3, Duration::from_secs(10)), 2);
    every_k_set_signs(&cluster, &key, 2, 3, 2);
    let mut secrets = logged_forms(PIN);
    for share in &shares {
        secrets.extend(logged_forms(share.value().as_be_bytes()));
    }
    cluster.assert_logs_hold_none_of(&secrets);
}

#[test]
fn refresh_messages_from_the_wrong_sender_or_out_of_place_are_refused() {
    let (cluster, key) = cluster(3, 2, Options::default());
    let spec = |from_epoch: u64, coordinator: u8, parties: u8| RefreshSpec {
        session: [7; 16],
        key_id: key_id(),
        from_epoch,
        coordinator,
        absorber: 1,
        participants: (1..=parties)
            .map(|index| Participant {
                index,
                address: format!("127.0.0.1:{}", 7300 + u16::from(index)),
            })
            .collect(),
        source: RefreshSource::Additive {
            holders: (1..=parties).collect(),
        },
        reshare: None,
    };
    // Only the coordinator's own certificate may ask a holder to take part.
    for name in ["client", "admin", "appliance-2"] {
        let r = ask(&cluster, 3, name, &Request::RefreshRun(spec(1, 1, 3)));
        assert_eq!(code(r), ErrorCode::Forbidden, "{name}");
    }
    // The coordinator, with an epoch or holders that do not fit the key.
    let r = ask(
        &cluster,
        3,
        "appliance-1",
        &Request::RefreshRun(spec(7, 1, 3)),
    );
    assert_eq!(code(r), ErrorCode::WrongEpoch);
    // A refresh without this holder, or with holders the key does not have.
    for parties in [2, 4] {
        let r = ask(
            &cluster,
            3,
            "appliance-1",
            &Request::RefreshRun(spec(1, 1, parties)),
        );
        assert_eq!(code(r), ErrorCode::BadRequest, "holders 1..={parties}");
    }
    // Round messages: only from their sender, for a session that runs, rounds 1 to 4.
    let round = |from: u8, round: u8| Request::RefreshRound {
        session: [8; 16],
        from,
        round,
        message: SecretBytes::new(vec![1; 280]),
    };
    assert_eq!(
        code(ask(&cluster, 3, "appliance-2", &round(1, 1))),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(ask(&cluster, 3, "client", &round(2, 1))),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(ask(&cluster, 3, "appliance-2", &round(2, 1))),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(ask(&cluster, 3, "appliance-2", &round(2, 5))),
        ErrorCode::BadRequest
    );
    // Steps: appliances only, and only for a refresh this holder stored.
    let step = |step| Request::RefreshStep {
        key_id: key_id(),
        session: [7; 16],
        epoch: 2,
        step,
    };
    for name in ["client", "admin"] {
        let r = ask(&cluster, 2, name, &step(RefreshStepKind::Commit));
        assert_eq!(code(r), ErrorCode::Forbidden, "{name}");
    }
    let r = ask(&cluster, 2, "appliance-1", &step(RefreshStepKind::Commit));
    assert_eq!(code(r), ErrorCode::WrongEpoch);
    let r = ask(&cluster, 2, "appliance-1", &step(RefreshStepKind::Ready));
    assert_eq!(code(r), ErrorCode::WrongEpoch);
    // Only the admin starts a refresh or watches one.
    let start = Request::RefreshKey {
        key_id: key_id(),
        session: [9; 16],
    };
    assert_eq!(
        code(ask(&cluster, 1, "client", &start)),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(ask(&cluster, 1, "appliance-2", &start)),
        ErrorCode::Forbidden
    );
    let progress = Request::RefreshProgress { session: [9; 16] };
    assert_eq!(
        code(ask(&cluster, 1, "admin", &progress)),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(ask(&cluster, 1, "client", &progress)),
        ErrorCode::Forbidden
    );
    // A refresh of a key nobody has.
    let unknown = Request::RefreshKey {
        key_id: KeyId::new(b"nope".to_vec()).unwrap(),
        session: [9; 16],
    };
    assert_eq!(
        code(ask(&cluster, 1, "admin", &unknown)),
        ErrorCode::UnknownKey
    );
    // None of it changed anything.
    assert_eq!(settled(&cluster, 3, Duration::from_secs(5)), 1);
    every_k_set_signs(&cluster, &key, 2, 3, 1);
}

#[test]
fn scheduled_refresh_runs_by_itself_waits_for_a_quorum_and_resumes() {
    let options = Options {
        refresh_interval: "2s",
        ..Options::default()
    };
    let (mut cluster, key) = cluster(3, 2, options);
    let epoch_at_least = |cluster: &Cluster, epoch: u64, limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = status(cluster, 1)
                && s.active_epoch >= Some(epoch)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "epoch {epoch} not reached in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let s = epoch_at_least(&cluster, 3, Duration::from_secs(30));
    assert!(s.refresh.next_due_unix_ms.is_some(), "{s:?}");
    let epoch = settled(&cluster, 3, Duration::from_secs(10));
    every_k_set_signs(&cluster, &key, 2, 3, epoch);

    // One holder away: the refreshes go on with the other two.
    cluster.stop(3);
    let away_from = status(&cluster, 1).unwrap().active_epoch.unwrap();
    epoch_at_least(&cluster, away_from + 2, Duration::from_secs(30));

    // Two away: fewer than a quorum; the refresh is skipped and the reason shown.
    cluster.stop(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    let failure = loop {
        if let Some(f) = status(&cluster, 1).and_then(|s| s.refresh.last_failure) {
            break f;
        }
        assert!(Instant::now() < deadline, "no failure reported");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        failure
            .reason
            .contains("1 of 3 holders can take part and a refresh needs 2"),
        "{failure:?}"
    );
    assert!(failure.reason.contains("appliance 2"), "{failure:?}");

    // Back: refreshes resume, the failure is cleared, and appliance 3 caught up.
    cluster.restart(2);
    cluster.restart(3);
    let stuck = status(&cluster, 1).unwrap().active_epoch.unwrap();
    let s = epoch_at_least(&cluster, stuck + 2, Duration::from_secs(60));
    assert_eq!(s.refresh.last_failure, None);
    let epoch = settled(&cluster, 3, Duration::from_secs(30));
    every_k_set_signs(&cluster, &key, 2, 3, epoch);
}

#[test]
fn a_holder_away_during_refreshes_catches_up_by_itself_when_it_returns() {
    let (mut cluster, key) = cluster(3, 2, Options::default());
    cluster.stop(3);
    for epoch in 2..=4 {
        let outcome = refresh(&cluster, 1).unwrap();
        assert_eq!(outcome.to_epoch, epoch);
        assert!(outcome.erased, "{outcome:?}");
    }
    let params = SharingParams::new(2, 3).unwrap();
    sign_with(&cluster, key.public_key(), &params, &[1, 2], 4).unwrap();
    for index in 1..=2 {
        let s = status(&cluster, index).unwrap();
        assert_eq!(s.active_epoch, Some(4));
        // Appliance 3 has no additive share of epoch 4: the next refresh starts from
        // shares unless all of 1 and 2 take part.
        assert_eq!(s.refresh.additive_holders, vec![1, 2]);
    }
    assert_eq!(epoch_key_files(&cluster, 3).len(), 1);

    // Started again, it rebuilds its share of epoch 4 from 1 and 2 within 30 s and erases
    // epoch 1, with no operator.
    let started = Instant::now();
    cluster.restart(3);
    let deadline = started + Duration::from_secs(30);
    loop {
        if status(&cluster, 3).is_some_and(|s| s.active_epoch == Some(4)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "appliance 3 did not catch up in 30 s:\n{}",
            cluster.log(3)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("appliance 3 caught up in {:?}", started.elapsed());
    let s = status(&cluster, 3).unwrap();
    assert_eq!((s.pending_epoch, s.retiring_epoch), (None, None));
    assert!(!s.refresh.has_additive);
    assert_eq!(s.refresh.additive_holders, vec![1, 2]);
    let files = epoch_key_files_settled(&cluster, 3, 1);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].contains("-4-"), "{files:?}");
    every_k_set_signs(&cluster, &key, 2, 3, 4);

    // The next refresh, with everyone: 3 lacks an additive share, so it starts from
    // shares, and gives every holder an additive share again.
    assert_eq!(refresh(&cluster, 2).unwrap().to_epoch, 5);
    assert_eq!(settled(&cluster, 3, Duration::from_secs(10)), 5);
    every_k_set_signs(&cluster, &key, 2, 3, 5);
    for index in 1..=3 {
        let s = status(&cluster, index).unwrap();
        assert!(s.refresh.has_additive, "appliance {index}");
        assert_eq!(s.refresh.additive_holders, vec![1, 2, 3]);
    }
    assert_eq!(refresh(&cluster, 3).unwrap().to_epoch, 6);
    every_k_set_signs(&cluster, &key, 2, 3, 6);

    // Audited: the rebuild on 3, the help on 1 and 2.
    for (index, what) in [(3, "recover"), (1, "recover_run"), (2, "recover_run")] {
        cluster.stop(index);
        let entries = audit(&cluster, index);
        assert!(
            entries
                .iter()
                .any(|(w, outcome)| w == what && outcome == "ok"),
            "appliance {index}: {entries:?}"
        );
    }
}

#[test]
fn a_key_stored_by_the_previous_release_is_converted_by_its_first_refresh() {
    use ittc_appliance::storage::{SchemaTwoKey, SealingKey, write_schema_2};
    use ittc_threshold::{Backend, split_key};
    // Shares of Δ·d and nothing else, in databases of the schema older releases wrote.
    let mut cluster = Cluster::new(3, &Options::default());
    let rsa = Rsa::generate(2048).unwrap();
    let key = RsaPrivateKey::from_bytes(&rsa.private_key_to_pem().unwrap(), None).unwrap();
    let params = SharingParams::new(2, 3).unwrap();
    let holders = split_key(&key, params, Backend::default().get(), &mut rand::rng()).unwrap();
    let public = key.public_key();
    for holder in &holders {
        let index = u8::try_from(holder.index()).unwrap();
        let sealing = cluster.dir().join(format!("appliance-{index}.sealing"));
        write_schema_2(
            &cluster.appliances[usize::from(index) - 1].data_dir,
            SealingKey::from_file(&sealing).unwrap(),
            index,
            &SchemaTwoKey {
                key_id: &key_id(),
                label: "from an older release",
                modulus: &public.n_be(),
                public_exponent: &public.e_be(),
                threshold: 2,
                parties: 3,
                epoch: 1,
                share: holder.share().value().as_be_bytes(),
            },
        )
        .unwrap();
    }
    cluster.start_all();
    cluster.put_public_key_object(public, KEY, "from an older release");
    cluster.set_user_pin(PIN);
    every_k_set_signs(&cluster, &key, 2, 3, 1);
    // The first refresh converts it, the next ones refresh it as any key.
    for epoch in 2..=4 {
        assert_eq!(refresh(&cluster, 1).unwrap().to_epoch, epoch);
        assert_eq!(settled(&cluster, 3, Duration::from_secs(10)), epoch);
        every_k_set_signs(&cluster, &key, 2, 3, epoch);
    }
}

/// `RefreshKey` to appliance `coordinator`, in a thread of its own (it may wait for an
/// appliance the test is about to kill).
fn spawn_refresh(
    cluster: &Cluster,
    coordinator: u8,
) -> std::thread::JoinHandle<Result<RefreshOutcome, String>> {
    let address = cluster.address(coordinator);
    let config = cluster.identity("admin").client_config().unwrap();
    std::thread::spawn(move || {
        let mut admin = ittc_wire::Connection::connect(
            address,
            coordinator,
            config,
            Timeouts {
                connect: Duration::from_secs(3),
                io: Duration::from_secs(120),
            },
            "refresh test",
        )
        .map_err(|e| e.to_string())?;
        match admin.request(&Request::RefreshKey {
            key_id: key_id(),
            session: rand::random(),
        }) {
            Ok(Response::Refreshed(outcome)) => Ok(outcome),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
}

/// Waits (bounded) for `line` in appliance `index`'s log.
fn wait_for_log(cluster: &Cluster, index: u8, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.log(index).contains(line) {
        assert!(
            Instant::now() < deadline,
            "appliance {index} never logged {line:?}:\n{}",
            cluster.log(index)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A crash at one step: `victim` runs with the pause hook at `role:stage`, a refresh
/// starts on appliance 1, and the victim is SIGKILLed where it stopped, then started
/// again without the hook. The cluster must settle by itself on `expected` (the old
/// epoch 1, or the new epoch 2, by the rule of the step), and every k-set must sign.
fn crash_at(role: &str, stage: &str, victim: u8, expected: u64) {
    let (mut cluster, key) = cluster(3, 2, Options::default());
    cluster.stop(victim);
    let hook = format!("{role}:{stage}");
    cluster.restart_with_env(victim, &[("ITTC_TEST_REFRESH_PAUSE", &hook)]);
    let run = spawn_refresh(&cluster, 1);
    wait_for_log(&cluster, victim, &format!("refresh paused at {hook}"));
    cluster.kill(victim);
    // The coordinator's answer, whatever it is, comes once the victim is gone.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !run.is_finished() {
        assert!(Instant::now() < deadline, "the refresh request never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = run.join().unwrap();
    cluster.restart(victim);
    let epoch = settled(&cluster, 3, Duration::from_secs(60));
    assert_eq!(
        epoch, expected,
        "{hook} on appliance {victim}: the refresh answered {answer:?}"
    );
    every_k_set_signs(&cluster, &key, 2, 3, epoch);
    for index in 1..=3 {
        assert_eq!(
            epoch_key_files_settled(&cluster, index, 1).len(),
            1,
            "appliance {index} keeps a key file of an epoch it no longer has"
        );
    }
}

#[test]
fn a_holder_killed_after_its_first_round_rolls_back() {
    crash_at("holder", "split", 2, 1);
}

#[test]
fn a_holder_killed_after_its_second_round_rolls_back() {
    crash_at("holder", "deal", 2, 1);
}

#[test]
fn a_holder_killed_after_storing_the_new_epoch_rolls_back() {
    crash_at("holder", "store", 2, 1);
}

#[test]
fn a_holder_killed_after_marking_the_new_epoch_ready_rolls_back() {
    crash_at("holder", "ready", 2, 1);
}

#[test]
fn a_holder_killed_after_committing_goes_forward() {
    crash_at("holder", "commit", 2, 2);
}

#[test]
fn a_holder_killed_after_erasing_goes_forward() {
    crash_at("holder", "erase", 2, 2);
}

#[test]
fn the_coordinator_killed_before_any_holder_stored_rolls_back() {
    crash_at("coordinator", "begin", 1, 1);
}

#[test]
fn the_coordinator_killed_after_the_trial_rolls_back() {
    crash_at("coordinator", "trial", 1, 1);
}

#[test]
fn the_coordinator_killed_after_every_holder_is_ready_rolls_back() {
    crash_at("coordinator", "ready", 1, 1);
}

#[test]
fn the_coordinator_killed_after_its_own_commit_goes_forward() {
    crash_at("coordinator", "commit", 1, 2);
}

#[test]
fn the_coordinator_killed_before_its_own_erase_goes_forward() {
    crash_at("coordinator", "erase", 1, 2);
}

/// A rebuild interrupted at one step: appliance 3 misses two refreshes; then `victim` runs
/// with the pause hook at `role:stage` while 3 rebuilds its share, is SIGKILLed there and
/// started again. Appliance 3 must end at the current epoch by itself, with its old epoch
/// erased and no key file left over, and every k-set must sign.
fn rebuild_crash_at(role: &str, stage: &str, victim: u8) {
    let (mut cluster, key) = cluster(3, 2, Options::default());
    cluster.stop(3);
    for epoch in 2..=3 {
        assert_eq!(refresh(&cluster, 1).unwrap().to_epoch, epoch);
    }
    let hook = format!("{role}:{stage}");
    if victim != 3 {
        cluster.stop(victim);
        cluster.restart_with_env(victim, &[("ITTC_TEST_REFRESH_PAUSE", &hook)]);
        cluster.restart(3);
    } else {
        cluster.restart_with_env(3, &[("ITTC_TEST_REFRESH_PAUSE", &hook)]);
    }
    wait_for_log(&cluster, victim, &format!("refresh paused at {hook}"));
    cluster.kill(victim);
    cluster.restart(victim);
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&cluster, 3).and_then(|s| s.active_epoch) != Some(3) {
        assert!(
            Instant::now() < deadline,
            "{hook}: appliance 3 never caught up:\n{}",
            cluster.log(3)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(settled(&cluster, 3, Duration::from_secs(30)), 3);
    every_k_set_signs(&cluster, &key, 2, 3, 3);
    for index in 1..=3 {
        let files = epoch_key_files_settled(&cluster, index, 1);
        assert_eq!(files.len(), 1, "{hook}: appliance {index} keeps {files:?}");
    }
}

#[test]
fn a_helper_killed_during_a_rebuild_leaves_the_target_to_try_again() {
    rebuild_crash_at("helper", "masks", 1);
}

#[test]
fn a_target_killed_before_installing_its_rebuilt_share_rebuilds_it_again() {
    rebuild_crash_at("target", "parts", 3);
}

#[test]
fn a_target_killed_after_installing_keeps_its_rebuilt_share() {
    rebuild_crash_at("target", "install", 3);
}

/// Four appliances, with a 2-of-3 key on the first three only; the fourth runs, empty.
fn reshare_cluster() -> (Cluster, RsaPrivateKey) {
    let mut cluster = Cluster::new(4, &Options::default());
    for index in 1..=3 {
        cluster.start(index);
    }
    let rsa = Rsa::generate(2048).unwrap();
    let key = RsaPrivateKey::from_bytes(&rsa.private_key_to_pem().unwrap(), None).unwrap();
    cluster.import_key_among(&key, SharingParams::new(2, 3).unwrap(), KEY, "reshared");
    cluster.start(4);
    cluster.set_user_pin(PIN);
    (cluster, key)
}

/// `ReshareKey` to appliance 1 for 2-of-3 on {1, 3, 4}, in a thread of its own.
fn spawn_reshare(cluster: &Cluster) -> std::thread::JoinHandle<Result<RefreshOutcome, String>> {
    let holders: Vec<Participant> = [1u8, 3, 4]
        .into_iter()
        .map(|index| Participant {
            index,
            address: cluster.address(index).to_string(),
        })
        .collect();
    let address = cluster.address(1);
    let config = cluster.identity("admin").client_config().unwrap();
    std::thread::spawn(move || {
        let mut admin = ittc_wire::Connection::connect(
            address,
            1,
            config,
            Timeouts {
                connect: Duration::from_secs(3),
                io: Duration::from_secs(120),
            },
            "reshare test",
        )
        .map_err(|e| e.to_string())?;
        match admin.request(&Request::ReshareKey {
            key_id: key_id(),
            session: rand::random(),
            threshold: 2,
            holders,
        }) {
            Ok(Response::Refreshed(outcome)) => Ok(outcome),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
}

#[test]
fn a_holder_left_out_while_away_erases_the_key_when_it_returns() {
    let (mut cluster, key) = reshare_cluster();
    cluster.stop(2);
    let outcome = spawn_reshare(&cluster).join().unwrap().unwrap();
    assert_eq!((outcome.from_epoch, outcome.to_epoch), (1, 2));
    let params = SharingParams::new(2, 4).unwrap();
    sign_with(&cluster, key.public_key(), &params, &[3, 4], 2).unwrap();
    cluster.restart(2);
    // The key record goes first (status then no longer shows it), its epoch key files
    // after the flush, and then the log line.
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&cluster, 2).is_some()
        || !cluster.log(2).contains("a reshare left this appliance out")
    {
        assert!(
            Instant::now() < deadline,
            "appliance 2 still holds the key:\n{}",
            cluster.log(2)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        epoch_key_files_settled(&cluster, 2, 0),
        Vec::<String>::new()
    );
}

/// A reshare interrupted at one step: a 2-of-3 key on appliances {1, 2, 3} is reshared by
/// appliance 1 to 2-of-3 on {1, 3, 4} (appliance 2 leaves, appliance 4 joins), with
/// `victim` paused at `role:stage`, SIGKILLed there and started again. The cluster must
/// settle by itself on the new sharing (`forward`) or the old one, with the appliance that
/// is out of it holding no key, every holder one key file, and every 2-set signing.
fn reshare_crash_at(role: &str, stage: &str, victim: u8, forward: bool) {
    let (mut cluster, key) = reshare_cluster();
    let hook = format!("{role}:{stage}");
    cluster.stop(victim);
    cluster.restart_with_env(victim, &[("ITTC_TEST_REFRESH_PAUSE", &hook)]);
    let run = spawn_reshare(&cluster);
    wait_for_log(&cluster, victim, &format!("refresh paused at {hook}"));
    cluster.kill(victim);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !run.is_finished() {
        assert!(Instant::now() < deadline, "the reshare request never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = run.join().unwrap();
    cluster.restart(victim);
    let (epoch, holding, out, params) = if forward {
        (2, [1u8, 3, 4], 2u8, SharingParams::new(2, 4).unwrap())
    } else {
        (1, [1u8, 2, 3], 4u8, SharingParams::new(2, 3).unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: Vec<Option<KeyStatus>> = (1..=4).map(|i| status(&cluster, i)).collect();
        let done = holding.iter().all(|&i| {
            seen[usize::from(i) - 1].as_ref().is_some_and(|s| {
                s.active_epoch == Some(epoch)
                    && s.pending_epoch.is_none()
                    && s.retiring_epoch.is_none()
            })
        }) && seen[usize::from(out) - 1].is_none();
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{hook} on appliance {victim} (the reshare answered {answer:?}): never settled on \
             epoch {epoch} at {holding:?} without appliance {out}: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for (i, a) in holding.iter().enumerate() {
        for b in &holding[i + 1..] {
            sign_with(&cluster, key.public_key(), &params, &[*a, *b], epoch)
                .unwrap_or_else(|e| panic!("{hook}: {e}"));
        }
    }
    for index in holding {
        assert_eq!(
            epoch_key_files_settled(&cluster, index, 1).len(),
            1,
            "{hook}: appliance {index}"
        );
    }
    assert!(
        epoch_key_files_settled(&cluster, out, 0).is_empty(),
        "{hook}: appliance {out} keeps a key file"
    );
}

#[test]
fn a_joining_holder_killed_after_its_first_round_rolls_back() {
    reshare_crash_at("holder", "split", 4, false);
}

#[test]
fn a_joining_holder_killed_after_storing_rolls_back() {
    reshare_crash_at("holder", "store", 4, false);
}

#[test]
fn a_joining_holder_killed_after_committing_goes_forward() {
    reshare_crash_at("holder", "commit", 4, true);
}

#[test]
fn a_leaving_holder_killed_after_recording_that_it_leaves_rolls_back() {
    reshare_crash_at("holder", "store", 2, false);
}

#[test]
fn a_leaving_holder_killed_after_the_commit_erases_the_key_when_back() {
    reshare_crash_at("holder", "commit", 2, true);
}

#[test]
fn a_leaving_holder_killed_after_erasing_stays_without_the_key() {
    reshare_crash_at("holder", "erase", 2, true);
}

#[test]
fn the_reshare_coordinator_killed_after_the_trial_rolls_back() {
    reshare_crash_at("coordinator", "trial", 1, false);
}

#[test]
fn the_reshare_coordinator_killed_after_its_own_commit_goes_forward() {
    reshare_crash_at("coordinator", "commit", 1, true);
}

#[test]
fn one_refresh_per_key_at_a_time() {
    let (mut cluster, key) = cluster(3, 2, Options::default());
    cluster.stop(1);
    cluster.restart_with_env(1, &[("ITTC_TEST_REFRESH_PAUSE", "coordinator:ready")]);
    let run = spawn_refresh(&cluster, 1);
    wait_for_log(&cluster, 1, "refresh paused at coordinator:ready");
    // Another coordinator cannot start one: the holders have the first one's epoch.
    let second = refresh(&cluster, 2).unwrap_err();
    assert!(
        second.message.contains("not finished")
            || second.message.contains("under way")
            || second.message.contains("has epoch 2 pending"),
        "{second}"
    );
    cluster.kill(1);
    let _ = run.join();
    cluster.restart(1);
    assert_eq!(settled(&cluster, 3, Duration::from_secs(60)), 1);
    // Once it is rolled back, another appliance may coordinate one.
    let outcome = refresh(&cluster, 2).unwrap();
    assert_eq!(outcome.to_epoch, 2);
    assert_eq!(settled(&cluster, 3, Duration::from_secs(10)), 2);
    every_k_set_signs(&cluster, &key, 2, 3, 2);
}
