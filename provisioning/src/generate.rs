//! `ittc key generate`: a new key without a dealer. Every appliance runs its party of the
//! Boneh–Franklin protocol with the others over their peer connections and stores its
//! share as the key's pending epoch; then, exactly as for an import
//! ([`crate::import`]), a trial operation through the appliances, the public-key objects,
//! and the commit everywhere, or the deletion everywhere. No part of the private key ever
//! reaches this host.
//!
//! While the appliances search, [`generate_with_progress`] asks the first one how far it has got
//! (`KeygenProgress`, on a connection of its own, every [`POLL_INTERVAL`]) and hands the
//! counters to [`Progress::counts`]; the `ittc` spinner shows them.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ittc_threshold::{RsaPublicKey, SharingParams};
use ittc_wire::client::Timeouts;
use ittc_wire::{KeyId, KeygenProgress, KeygenResult, KeygenSpec, Request, Response};
use rand::RngExt;

use crate::cluster::{Cluster, Poller};
use crate::error::CliError;
use crate::import::{NewKey, finish, rolled_back};

/// The modulus sizes offered (an appliance may allow 1024 bits for tests).
pub const OFFERED_BITS: [u16; 3] = [2048, 3072, 4096];

/// How often the first appliance is asked for the counters while the key is generated.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Where [`generate_with_progress`] reports how it goes. Any `Fn(&str)` takes the steps
/// and ignores the counters.
pub trait Progress {
    /// A new step ("connecting to every appliance", "committing", …).
    fn step(&self, step: &str);

    /// The counters so far, from the first appliance, about every [`POLL_INTERVAL`] while
    /// the appliances search for the key. None may come (a quick run, an appliance that
    /// does not answer in time); the final counts are in [`Generated::stats`].
    fn counts(&self, counts: &KeygenProgress) {
        let _ = counts;
    }
}

impl<F: Fn(&str)> Progress for F {
    fn step(&self, step: &str) {
        self(step);
    }
}

/// The counters in a line: `candidates 12 345 · biprimality tests 7 · 4.2 s`.
pub fn describe(counts: &KeygenProgress) -> String {
    format!(
        "candidates {} · biprimality tests {} · {:.1} s",
        grouped(counts.candidates),
        grouped(counts.biprimality_tests),
        Duration::from_millis(counts.elapsed_ms).as_secs_f64()
    )
}

/// `12345` as `12 345`.
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateSpec<'a> {
    /// Modulus bits.
    pub bits: u16,
    /// Public exponent (65537).
    pub public_exponent: u64,
    /// Key id (`CKA_ID`).
    pub id: &'a [u8],
    /// Label (`CKA_LABEL`).
    pub label: &'a str,
    /// How long to wait for the appliances' answers (they give up after their own
    /// `keygen.timeout_ms`).
    pub timeout: Duration,
}

/// What was generated.
#[derive(Debug)]
pub struct Generated {
    /// The public key.
    pub public: RsaPublicKey,
    /// k of n.
    pub threshold: usize,
    /// n.
    pub parties: usize,
    /// Appliance 1's account of the run (the counters are the same everywhere).
    pub stats: KeygenResult,
    /// Wall time, from the request to the commit.
    pub elapsed: Duration,
}

/// Generates `spec` on every appliance of `cluster`, checks and commits it (or leaves
/// nothing). `progress` is told each step; [`generate_with_progress`] also hands on the
/// counters while the appliances search.
pub fn generate(
    cluster: &Cluster,
    spec: &GenerateSpec<'_>,
    progress: &dyn Fn(&str),
) -> Result<Generated, CliError> {
    generate_with_progress(cluster, spec, &progress)
}

/// [`generate`], telling `progress` each step and, about every [`POLL_INTERVAL`] while the
/// appliances search, the counters so far.
pub fn generate_with_progress(
    cluster: &Cluster,
    spec: &GenerateSpec<'_>,
    progress: &dyn Progress,
) -> Result<Generated, CliError> {
    let started = Instant::now();
    let key_id = KeyId::new(spec.id.to_vec()).map_err(|e| CliError::Usage(format!("--id: {e}")))?;
    let n = cluster.parties();
    let all = cluster.indices();
    // The key's `n` is its highest holder's index (an index a reshare retired stays out).
    let parties = match all.last() {
        Some(&last) if n >= 3 => last,
        _ => {
            return Err(CliError::Cluster(format!(
                "key generation needs at least 3 appliances, not {all:?}"
            )));
        }
    };
    let threshold = cluster.config.threshold;
    let params = SharingParams::new(usize::from(threshold), usize::from(parties))?;

    progress.step("connecting to the appliances");
    // Only the check: the generation itself runs on connections with a long timeout.
    let indices = participants(cluster, &key_id, threshold)?;
    if indices.len() < n {
        let away: Vec<u8> = all
            .iter()
            .copied()
            .filter(|i| !indices.contains(i))
            .collect();
        progress.step(&format!(
            "generating without appliances {away:?}: they rebuild their shares when they are back"
        ));
    }

    let session: [u8; 16] = rand::rng().random();
    let request = Request::GenerateKey(KeygenSpec {
        session,
        key_id: key_id.clone(),
        label: spec.label.to_owned(),
        bits: spec.bits,
        public_exponent: spec.public_exponent,
        threshold,
        participants: cluster
            .config
            .participants()
            .into_iter()
            .filter(|p| indices.contains(&p.index))
            .collect(),
        parties,
        holders: all.clone(),
    });
    progress.step("generating: the appliances search for a modulus together");
    let base = cluster.config.timeouts.timeouts();
    let timeouts = Timeouts {
        connect: base.connect,
        io: spec.timeout,
    };
    // The requests run on a scoped thread (one more each inside `in_parallel`); this thread
    // polls the first appliance until they return, and the callback runs here, so it need
    // not be `Sync`. The sender is dropped when the requests return: that ends the wait at
    // once rather than at the next tick.
    let (done, finished) = mpsc::channel::<()>();
    let answers = std::thread::scope(|scope| {
        let requests = scope.spawn(|| {
            let _done = done;
            cluster.in_parallel(indices.clone(), |index| {
                let mut c = cluster.connect_with(index, timeouts)?;
                match c.request(&request) {
                    Ok(Response::KeyGenerated(result)) => Ok(result),
                    Ok(Response::Error(e)) => Err(CliError::appliance(index, e.message)),
                    Ok(other) => Err(CliError::appliance(
                        index,
                        format!("unexpected answer {}", other.kind()),
                    )),
                    Err(e) => Err(CliError::appliance(index, e)),
                }
            })
        });
        let first = indices.first().copied().unwrap_or(1);
        let mut poller = Poller::new(cluster, first, Request::KeygenProgress { session });
        while finished.recv_timeout(POLL_INTERVAL) == Err(mpsc::RecvTimeoutError::Timeout) {
            let counts = poller.poll(|answer| match answer {
                Response::KeygenProgress(counts) => Some(counts),
                _ => None,
            });
            if let Some(counts) = counts {
                progress.counts(&counts);
            }
        }
        requests.join()
    })
    .map_err(|_| CliError::Cluster("the thread sending the requests failed".into()))?;
    let stored_on: Vec<u8> = answers
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (_, answer) in answers {
        match answer {
            Ok(result) => results.push(result),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let public = match agreed_key(&results, indices.len(), failures) {
        Ok(public) => public,
        Err(error) => {
            progress.step("rolling back");
            return Err(rolled_back(
                cluster,
                &key_id,
                spec.id,
                &stored_on,
                None,
                "generation",
                error,
            ));
        }
    };
    let stats = results.swap_remove(0);

    let new_key = NewKey {
        key_id: &key_id,
        id: spec.id,
        label: spec.label,
        public: &public,
        params: &params,
        certificate: None,
    };
    let (mut connections, reconnected) = match cluster.connect_to(indices.clone()) {
        Ok(c) => (c, Ok(())),
        Err(e) => (Vec::new(), Err(e)),
    };
    finish(
        cluster,
        &mut connections,
        &new_key,
        reconnected,
        &stored_on,
        "generation",
        &|step: &str| progress.step(step),
    )?;
    Ok(Generated {
        public,
        threshold: params.threshold(),
        parties: n,
        stats,
        elapsed: started.elapsed(),
    })
}

/// The appliances that take part: every one that answers and does not hold a key
/// `key_id`, if they are at least a quorum ([`KeygenSpec::quorum`]); else an error naming
/// the missing ones.
fn participants(cluster: &Cluster, key_id: &KeyId, threshold: u8) -> Result<Vec<u8>, CliError> {
    let n = cluster.parties();
    let mut connections = Vec::new();
    let mut away = Vec::new();
    for (index, result) in cluster.in_parallel(cluster.indices(), |i| cluster.connect(i)) {
        match result {
            Ok(c) => connections.push((index, c)),
            Err(e) => away.push(e.to_string()),
        }
    }
    crate::import::check_new_key(&mut connections, key_id)?;
    let needed = KeygenSpec::quorum(threshold, n);
    if connections.len() < needed {
        return Err(CliError::Several {
            summary: format!(
                "key generation needs {needed} of the {n} appliances and {} answer; nothing \
                 was changed",
                connections.len()
            ),
            details: away,
        });
    }
    Ok(connections.into_iter().map(|(i, _)| i).collect())
}

/// The public key every participant reported, if all `n` of them answered and agree.
fn agreed_key(
    results: &[KeygenResult],
    n: usize,
    failures: Vec<String>,
) -> Result<RsaPublicKey, CliError> {
    if !failures.is_empty() {
        return Err(CliError::Several {
            summary: "the appliances could not generate the key".into(),
            details: failures,
        });
    }
    let first = results
        .first()
        .filter(|_| results.len() == n)
        .ok_or_else(|| CliError::Cluster("not every appliance answered".into()))?;
    if results
        .iter()
        .any(|r| r.modulus != first.modulus || r.public_exponent != first.public_exponent)
    {
        return Err(CliError::Cluster(
            "the appliances report different public keys".into(),
        ));
    }
    Ok(RsaPublicKey::from_be_bytes(
        &first.modulus,
        &first.public_exponent,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_one_line_with_grouped_digits() {
        let counts = KeygenProgress {
            batches: 7,
            candidates: 12_345,
            biprimality_tests: 7,
            rounds: 30,
            elapsed_ms: 4_240,
        };
        assert_eq!(
            describe(&counts),
            "candidates 12 345 · biprimality tests 7 · 4.2 s"
        );
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1 000");
        assert_eq!(grouped(1_234_567), "1 234 567");
        assert_eq!(grouped(u64::MAX), "18 446 744 073 709 551 615");
    }

    #[test]
    fn a_closure_takes_the_steps_and_ignores_the_counts() {
        let seen = std::cell::RefCell::new(Vec::new());
        let closure = |step: &str| seen.borrow_mut().push(step.to_owned());
        let progress: &dyn Progress = &closure;
        progress.step("committing");
        progress.counts(&KeygenProgress::default());
        assert_eq!(*seen.borrow(), ["committing"]);
    }
}
