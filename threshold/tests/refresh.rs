//! Proactive refresh in one process: ten thousand refreshes of RSA-2048 keys with shares
//! that never grow and signatures that stay byte for byte those of the Wycheproof vectors,
//! epochs that do not mix, keys of older releases converted on their first refresh,
//! generated keys refreshed, and holders that send bad values named.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;

use ittc_threshold::padding::{HashAlg, pkcs1v15_sign};
use ittc_threshold::refresh::legacy::Conversion;
use ittc_threshold::{
    Backend, Bounds, Error, HolderShare, KeyShare, Partial, RefreshParty, RsaPrivateKey, SecretInt,
    SharingParams, combine, combine_robust, refresh_all, split_key,
};
use num_bigint::BigUint;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The 2048-bit Wycheproof signing key and three of its valid (message, signature) cases.
struct Vectors {
    key: RsaPrivateKey,
    hash: HashAlg,
    cases: Vec<(Vec<u8>, Vec<u8>)>,
}

fn vectors() -> &'static Vectors {
    static V: OnceLock<Vectors> = OnceLock::new();
    V.get_or_init(|| {
        let file = common::load("rsa_pkcs1_2048_sig_gen_test.json");
        let group = &file.test_groups[0];
        let cases = group
            .tests
            .iter()
            .filter(|t| t.result == common::Expected::Valid)
            .take(3)
            .map(|t| (t.hex("msg"), t.hex("sig")))
            .collect();
        Vectors {
            key: RsaPrivateKey::from_der(&group.hex("privateKeyPkcs8"), None).unwrap(),
            hash: group.hash("sha"),
            cases,
        }
    })
}

/// Signs every case with the k holders at the end of `holders` (so that the absorber,
/// holder 1, is not always involved) and checks the signatures byte for byte.
fn signs_the_vectors(params: &SharingParams, holders: &[HolderShare], what: &str) {
    let v = vectors();
    let public = v.key.public_key();
    let backend = Backend::default().get();
    let k = params.threshold();
    for (msg, sig) in &v.cases {
        let em = pkcs1v15_sign(v.hash, &v.hash.digest(msg), public.size()).unwrap();
        let input = BigUint::from_bytes_be(&em);
        let parts: Vec<Partial> = holders
            .iter()
            .skip(holders.len() - k)
            .map(|h| Partial {
                index: h.index(),
                value: backend.partial(public, h.share(), &input).unwrap(),
            })
            .collect();
        let y = combine(public, params, &input, &parts).unwrap();
        assert_eq!(&public.integer_to_be(&y), sig, "{what}");
    }
}

/// The largest bit length of any share and of any additive share's magnitude.
fn largest_bits(holders: &[HolderShare], bounds: &Bounds) -> (u64, u64) {
    let share = holders
        .iter()
        .map(|h| BigUint::from_bytes_be(h.share().value().as_be_bytes()).bits())
        .max()
        .unwrap();
    let additive = holders
        .iter()
        .map(|h| {
            let bytes = h.additive().unwrap().as_be_bytes();
            let value = BigUint::from_bytes_be(bytes);
            // Two's complement of precision bits: negative values are above 2^(P−1).
            let wrap = BigUint::from(1u8) << bounds.precision();
            if value.bit(u64::from(bounds.precision()) - 1) {
                (wrap - value).bits()
            } else {
                value.bits()
            }
        })
        .max()
        .unwrap();
    (share, additive)
}

/// Runs `epochs` refreshes of a fresh k-of-n sharing of the 2048-bit key, checking the
/// size bounds after every one and the Wycheproof signatures at 1, 10, 100, 1000 and 10000.
fn many_refreshes(k: usize, n: usize, epochs: u32, share_bits: u32) {
    let key = &vectors().key;
    let public = key.public_key();
    let params = SharingParams::new(k, n).unwrap();
    let bounds = Bounds::new(public, &params, 0).unwrap();
    // The bound the issue asks the test to state: the share length of a freshly dealt key,
    // which is also what the partial operation pays.
    assert_eq!(bounds.share_bits(), share_bits);
    let additive_bits = bounds.additive_bound().bits();
    let mut rng = StdRng::seed_from_u64(0x5eed + (k * 16 + n) as u64);
    let mut holders = split_key(key, params, Backend::default().get(), &mut rng).unwrap();
    signs_the_vectors(&params, &holders, "epoch 0");
    let mut largest = (0, 0);
    for epoch in 1..=epochs {
        holders = refresh_all(public, &params, &holders, 1, &mut rng).unwrap();
        let (share, additive) = largest_bits(&holders, &bounds);
        assert!(
            share <= u64::from(share_bits),
            "epoch {epoch}: share of {share} bits"
        );
        assert!(
            additive <= additive_bits,
            "epoch {epoch}: additive of {additive} bits"
        );
        largest = (largest.0.max(share), largest.1.max(additive));
        if matches!(epoch, 1 | 10 | 100 | 1000 | 10_000) {
            signs_the_vectors(&params, &holders, &format!("{k}-of-{n} epoch {epoch}"));
        }
    }
    eprintln!(
        "{k}-of-{n}: after {epochs} refreshes the largest share had {} bits (bound {share_bits}), \
         the largest additive share {} bits (bound {additive_bits})",
        largest.0, largest.1
    );
}

#[test]
fn ten_thousand_refreshes_of_2_of_3_keep_shares_at_2183_bits_and_signatures_exact() {
    many_refreshes(2, 3, 10_000, 2183);
}

#[test]
fn ten_thousand_refreshes_of_3_of_5_keep_shares_bounded_and_signatures_exact() {
    many_refreshes(3, 5, 10_000, 2195);
}

#[test]
fn a_k_set_mixing_two_epochs_does_not_verify() {
    let key = &vectors().key;
    let public = key.public_key();
    let backend = Backend::default().get();
    let input = BigUint::from(0x1234_5678_9abc_def1u64);
    for (k, n) in [(2, 3), (3, 5)] {
        let params = SharingParams::new(k, n).unwrap();
        let mut rng = StdRng::seed_from_u64(k as u64);
        let old = split_key(key, params, backend, &mut rng).unwrap();
        let new = refresh_all(public, &params, &old, 1, &mut rng).unwrap();
        let partial = |h: &HolderShare| Partial {
            index: h.index(),
            value: backend.partial(public, h.share(), &input).unwrap(),
        };
        let old_k: Vec<Partial> = old.iter().take(k).map(partial).collect();
        let new_k: Vec<Partial> = new.iter().take(k).map(partial).collect();
        let expected = combine(public, &params, &input, &old_k).unwrap();
        assert_eq!(combine(public, &params, &input, &new_k).unwrap(), expected);
        // Every mix of the two epochs among the same k indices fails the check.
        for swap in 0..k {
            let mut mixed = old_k.clone();
            mixed[swap] = new_k[swap].clone();
            assert!(
                matches!(
                    combine(public, &params, &input, &mixed),
                    Err(Error::Verification)
                ),
                "{k}-of-{n}, index {} from the new epoch",
                swap + 1
            );
        }
        // The shares did change.
        for (a, b) in old.iter().zip(&new) {
            assert_ne!(a.share(), b.share());
            assert_ne!(a.additive(), b.additive());
        }
    }
}

#[test]
fn a_key_of_the_older_form_is_converted_by_its_first_refresh() {
    // A key split before refresh existed has shares of Δ·d and no additive layer: the
    // same shares as today's dealer makes, without the additive shares.
    let key = &vectors().key;
    let public = key.public_key();
    for (k, n) in [(2, 3), (3, 5), (4, 7)] {
        let params = SharingParams::new(k, n).unwrap();
        let mut rng = StdRng::seed_from_u64(100 + k as u64);
        let legacy: Vec<HolderShare> = split_key(key, params, Backend::default().get(), &mut rng)
            .unwrap()
            .into_iter()
            .map(|h| HolderShare::legacy(h.share().clone()))
            .collect();
        assert!(legacy.iter().all(HolderShare::is_legacy));
        signs_the_vectors(&params, &legacy, "legacy");
        let conversion = Conversion::new(public, &params).unwrap();
        let converted = refresh_all(public, &params, &legacy, 1, &mut rng).unwrap();
        let bounds = Bounds::new(public, &params, conversion.extra_bits).unwrap();
        for h in &converted {
            assert!(!h.is_legacy());
            assert_eq!(h.extra_bits(), conversion.extra_bits);
            assert_eq!(h.share().value().len(), bounds.share_len());
        }
        signs_the_vectors(&params, &converted, &format!("{k}-of-{n} converted"));
        // From then on it refreshes like any key, within the converted form's bounds.
        let mut holders = converted;
        for _ in 0..50 {
            holders = refresh_all(public, &params, &holders, 1, &mut rng).unwrap();
            let (share, additive) = largest_bits(&holders, &bounds);
            assert!(share <= u64::from(bounds.share_bits()));
            assert!(additive <= bounds.additive_bound().bits());
        }
        signs_the_vectors(&params, &holders, &format!("{k}-of-{n} converted, then 50"));
        // About 17 + 2·log2(Δ) bits more than a key dealt in the new form.
        let native = Bounds::new(public, &params, 0).unwrap().share_bits();
        assert!(bounds.share_bits() > native && bounds.share_bits() < native + 60);
    }
}

#[test]
fn the_absorber_may_change_from_one_refresh_to_the_next() {
    let key = &vectors().key;
    let public = key.public_key();
    let params = SharingParams::new(3, 4).unwrap();
    let mut rng = StdRng::seed_from_u64(44);
    let mut holders = split_key(key, params, Backend::default().get(), &mut rng).unwrap();
    for epoch in 0..40 {
        holders = refresh_all(public, &params, &holders, 1 + epoch % 4, &mut rng).unwrap();
    }
    signs_the_vectors(&params, &holders, "absorbers 1, 2, 3, 4, …");
}

/// Runs one refresh by hand, letting `tamper` change the messages in flight; returns each
/// holder's outcome.
fn refresh_with(
    params: &SharingParams,
    holders: &[HolderShare],
    tamper: impl Fn(u8, usize, usize, &mut Vec<u8>),
) -> Vec<Result<HolderShare, Error>> {
    let public = vectors().key.public_key();
    let mut rng = StdRng::seed_from_u64(7);
    let mut parties: Vec<RefreshParty> = holders
        .iter()
        .map(|h| RefreshParty::new(public, params, h, 1).unwrap())
        .collect();
    let edit = |round: u8, from: usize, to: usize, value: &SecretInt| {
        let mut bytes = value.as_be_bytes().to_vec();
        tamper(round, from, to, &mut bytes);
        SecretInt::from_be_bytes(bytes)
    };
    let pieces: Vec<Vec<SecretInt>> = parties
        .iter_mut()
        .map(|p| p.split(&mut rng).unwrap())
        .collect();
    let mut dealt = Vec::new();
    for (l, party) in parties.iter_mut().enumerate() {
        let received: Vec<SecretInt> = pieces
            .iter()
            .enumerate()
            .map(|(j, p)| edit(1, j + 1, l + 1, &p[l]))
            .collect();
        dealt.push(party.deal(&received, &mut rng));
    }
    let sent: Vec<Option<Vec<SecretInt>>> =
        dealt.iter().map(|d| d.as_ref().ok().cloned()).collect();
    parties
        .iter_mut()
        .zip(dealt)
        .enumerate()
        .map(|(i, (party, own))| {
            own?;
            let received: Vec<SecretInt> = sent
                .iter()
                .enumerate()
                .filter_map(|(l, d)| d.as_ref().map(|d| edit(2, l + 1, i + 1, &d[i])))
                .collect();
            party.finish(&received)
        })
        .collect()
}

#[test]
fn bad_values_are_refused_and_name_their_sender() {
    let key = &vectors().key;
    let params = SharingParams::new(2, 3).unwrap();
    let holders = split_key(key, params, Backend::default().get(), &mut rand::rng()).unwrap();

    // A piece of the wrong length, from holder 2 to holder 3.
    let outcomes = refresh_with(&params, &holders, |round, from, to, bytes| {
        if (round, from, to) == (1, 2, 3) {
            bytes.push(0);
        }
    });
    assert!(matches!(
        outcomes[2],
        Err(Error::RefreshMessage { from: 2, .. })
    ));

    // A piece out of range ([0, R) for everyone but the absorber): all ones is −1.
    let outcomes = refresh_with(&params, &holders, |round, from, to, bytes| {
        if (round, from, to) == (1, 3, 2) {
            bytes.iter_mut().for_each(|b| *b = 0xff);
        }
    });
    assert!(matches!(
        outcomes[1],
        Err(Error::RefreshMessage {
            from: 3,
            reason: "piece out of range"
        })
    ));

    // A dealt value out of range, from holder 1 to holder 2.
    let outcomes = refresh_with(&params, &holders, |round, from, to, bytes| {
        if (round, from, to) == (2, 1, 2) {
            bytes[0] = 0x3f;
        }
    });
    assert!(matches!(
        outcomes[1],
        Err(Error::RefreshMessage {
            from: 1,
            reason: "dealt value out of range"
        })
    ));

    // Values in range that do not fit together: every holder finishes, but the new shares
    // do not combine. This is what the appliances' trial operation catches.
    let outcomes = refresh_with(&params, &holders, |round, from, to, bytes| {
        if (round, from, to) == (2, 2, 3) {
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
        }
    });
    let new: Vec<HolderShare> = outcomes.into_iter().map(Result::unwrap).collect();
    let public = key.public_key();
    let backend = Backend::default().get();
    let input = BigUint::from(99u8);
    let parts: Vec<Partial> = new
        .iter()
        .map(|h| Partial {
            index: h.index(),
            value: backend.partial(public, h.share(), &input).unwrap(),
        })
        .collect();
    let outcome = combine_robust(public, &params, &input, &parts).unwrap();
    assert_eq!(outcome.faulty, vec![3], "holder 3's share is the wrong one");
}

#[test]
fn holder_shares_check_their_parts() {
    let key = &vectors().key;
    let public = key.public_key();
    let params = SharingParams::new(2, 3).unwrap();
    let holders = split_key(key, params, Backend::default().get(), &mut rand::rng()).unwrap();
    let h = &holders[1];
    let share = || h.share().value().clone();
    let additive = || h.additive().cloned();
    assert_eq!(
        &HolderShare::new(public, &params, 2, 0, additive(), share()).unwrap(),
        h
    );
    assert!(HolderShare::new(public, &params, 4, 0, additive(), share()).is_err());
    assert!(HolderShare::new(public, &params, 2, 5, additive(), share()).is_err());
    assert!(HolderShare::new(public, &params, 2, 5, None, share()).is_err());
    let long = SecretInt::from_be_bytes([&[0u8][..], h.additive().unwrap().as_be_bytes()].concat());
    assert!(HolderShare::new(public, &params, 2, 0, Some(long), share()).is_err());
    let bounds = Bounds::new(public, &params, 0).unwrap();
    let mut huge = vec![0u8; bounds.additive_len()];
    huge[0] = 0x3f;
    assert!(
        HolderShare::new(
            public,
            &params,
            2,
            0,
            Some(SecretInt::from_be_bytes(huge)),
            share()
        )
        .is_err()
    );
    let printed = format!("{h:?}");
    assert!(!printed.contains("SecretInt"), "{printed}");
    let _: &KeyShare = h.share();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// For any threshold and absorber, a few refreshes later any k holders still sign and
    /// every value stays within its bounds.
    #[test]
    fn any_sharing_refreshes_within_bounds(
        (k, n) in (2usize..=7).prop_flat_map(|n| (2..=n, Just(n))),
        absorber_seed in any::<usize>(),
        seed in any::<u64>(),
    ) {
        let key = &vectors().key;
        let public = key.public_key();
        let params = SharingParams::new(k, n).unwrap();
        let bounds = Bounds::new(public, &params, 0).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut holders = split_key(key, params, Backend::default().get(), &mut rng).unwrap();
        for round in 0..5 {
            let absorber = 1 + (absorber_seed + round) % n;
            holders = refresh_all(public, &params, &holders, absorber, &mut rng).unwrap();
            let (share, additive) = largest_bits(&holders, &bounds);
            prop_assert!(share <= u64::from(bounds.share_bits()));
            prop_assert!(additive <= bounds.additive_bound().bits());
        }
        signs_the_vectors(&params, &holders, &format!("{k}-of-{n}"));
    }
}
