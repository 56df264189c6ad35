//! Signing never stops while the appliances refresh the key: applications signing through
//! the module from several threads see no error across many back-to-back refreshes, and
//! every signature verifies with OpenSSL.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use ittc_wire::client::Timeouts;
use ittc_wire::{KeyId, Request, Response};
use openssl::hash::MessageDigest;
use support::{Fixture, KEY_ID, Setup, find_one, isolated, verify_pkcs1};

/// Refreshes the key on appliance 1 (the admin's request) and returns the new epoch.
fn refresh(fx: &Fixture) -> u64 {
    let mut admin = ittc_wire::Connection::connect(
        fx.cluster.address(1),
        1,
        fx.cluster.identity("admin").client_config().unwrap(),
        Timeouts {
            connect: Duration::from_secs(3),
            io: Duration::from_secs(60),
        },
        "refresh test",
    )
    .unwrap();
    match admin
        .request(&Request::RefreshKey {
            key_id: KeyId::new(KEY_ID.to_vec()).unwrap(),
            session: rand::random(),
        })
        .unwrap()
    {
        Response::Refreshed(outcome) => {
            assert!(outcome.erased, "{outcome:?}");
            outcome.to_epoch
        }
        other => panic!("refresh: {other:?}"),
    }
}

#[test]
fn four_threads_sign_through_the_module_during_50_back_to_back_refreshes() {
    isolated(
        "four_threads_sign_through_the_module_during_50_back_to_back_refreshes",
        || {
            let fx = Fixture::new(&Setup::new(2, 3));
            let public = fx.public();
            let pkcs11 = fx.pkcs11().clone();
            // One login for the application: every session of it is logged in.
            let _login = fx.user_session();
            let stop = AtomicBool::new(false);
            let (epochs, threads) = std::thread::scope(|scope| {
                let signers: Vec<_> = (0..4)
                    .map(|t| {
                        let (pkcs11, stop) = (pkcs11.clone(), &stop);
                        scope.spawn(move || {
                            let slot = pkcs11.get_slots_with_token().unwrap()[0];
                            let session = pkcs11.open_rw_session(slot).unwrap();
                            let key = find_one(&session, ObjectClass::PRIVATE_KEY);
                            let mut signed = Vec::new();
                            let mut failed = Vec::new();
                            let mut i = 0u32;
                            while !stop.load(Ordering::Relaxed) {
                                let message = format!("thread {t}, signature {i}").into_bytes();
                                match session.sign(&Mechanism::Sha256RsaPkcs, key, &message) {
                                    Ok(signature) => signed.push((message, signature)),
                                    Err(e) => failed.push(format!("signature {i}: {e}")),
                                }
                                i += 1;
                            }
                            (signed, failed)
                        })
                    })
                    .collect();
                let epochs: Vec<u64> = (0..50).map(|_| refresh(&fx)).collect();
                // A last moment of signing on the final epoch.
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::Relaxed);
                let threads: Vec<_> = signers.into_iter().map(|s| s.join().unwrap()).collect();
                (epochs, threads)
            });
            assert_eq!(epochs, (2..=51).collect::<Vec<u64>>());
            for (t, (signed, failed)) in threads.iter().enumerate() {
                assert!(failed.is_empty(), "thread {t} failed: {failed:?}");
                assert!(
                    signed.len() >= 10,
                    "thread {t} signed only {}",
                    signed.len()
                );
                for (message, signature) in signed {
                    verify_pkcs1(&public, MessageDigest::sha256(), message, signature);
                }
            }
        },
    );
}
