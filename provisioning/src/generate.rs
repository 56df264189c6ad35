//! `ittc key generate`: a new key without a dealer. Every appliance runs its party of the
//! Boneh–Franklin protocol with the others over their peer connections and stores its
//! share as the key's pending epoch; then, exactly as for an import
//! ([`crate::import`]), a trial operation through the appliances, the public-key objects,
//! and the commit everywhere, or the deletion everywhere. No part of the private key ever
//! reaches this host.

use std::time::{Duration, Instant};

use ittc_threshold::{RsaPublicKey, SharingParams};
use ittc_wire::client::Timeouts;
use ittc_wire::{KeyId, KeygenResult, KeygenSpec, Participant, Request, Response};
use rand::RngExt;

use crate::cluster::Cluster;
use crate::error::CliError;
use crate::import::{NewKey, finish, rolled_back};

/// The modulus sizes offered (an appliance may allow 1024 bits for tests).
pub const OFFERED_BITS: [u16; 3] = [2048, 3072, 4096];

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
/// nothing). `progress` is told each step.
pub fn generate(
    cluster: &Cluster,
    spec: &GenerateSpec<'_>,
    progress: &dyn Fn(&str),
) -> Result<Generated, CliError> {
    let started = Instant::now();
    let key_id = KeyId::new(spec.id.to_vec()).map_err(|e| CliError::Usage(format!("--id: {e}")))?;
    let n = cluster.parties();
    let indices = cluster.indices();
    if indices != (1..=n as u8).collect::<Vec<_>>() || n < 3 {
        return Err(CliError::Cluster(format!(
            "key generation needs appliances 1..=n with n ≥ 3, not {indices:?}"
        )));
    }
    let threshold = cluster.config.threshold;
    let params = SharingParams::new(usize::from(threshold), n)?;

    progress("connecting to every appliance");
    // Only the check: the generation itself runs on connections with a long timeout.
    drop(crate::import::connect_for_new_key(cluster, &key_id)?);

    let request = Request::GenerateKey(KeygenSpec {
        session: rand::rng().random(),
        key_id: key_id.clone(),
        label: spec.label.to_owned(),
        bits: spec.bits,
        public_exponent: spec.public_exponent,
        threshold,
        participants: cluster
            .config
            .appliances
            .iter()
            .map(|a| Participant {
                index: a.index,
                address: a.address.clone(),
            })
            .collect(),
    });
    progress("generating: the appliances search for a modulus together");
    let base = cluster.config.timeouts.timeouts();
    let timeouts = Timeouts {
        connect: base.connect,
        io: spec.timeout,
    };
    let answers = cluster.in_parallel(indices.clone(), |index| {
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
    });
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
    let public = match agreed_key(&results, n, failures) {
        Ok(public) => public,
        Err(error) => {
            progress("rolling back");
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
    let (mut connections, reconnected) = match cluster.connect_all() {
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
        progress,
    )?;
    Ok(Generated {
        public,
        threshold: params.threshold(),
        parties: n,
        stats,
        elapsed: started.elapsed(),
    })
}

/// The public key every appliance reported, if all n answered and agree.
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
