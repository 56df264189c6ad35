//! `ittc cluster reshare`: moves every key to a new threshold and set of appliances (grow
//! 2-of-3 to 3-of-5, retire an appliance). As for a refresh, the CLI only asks: for each
//! key, one appliance of the new set that holds the key's current epoch coordinates the
//! reshare with the others and answers when it is over; no share reaches this host.
//!
//! A reshare has the steps of a refresh (docs/security.md, "Resharing"): the old holders
//! re-split the key among the new ones, who store the new epoch as pending; the trial,
//! ready, commit and erase follow. An appliance left out erases its share once the new
//! epoch is committed everywhere. When every key is on the new sharing, `pkcs11.toml`
//! takes the new threshold and drops the appliances left out, so that neither the PKCS#11
//! module nor this CLI asks them any more; once such an appliance has erased its shares
//! (or does not answer), its certificate goes on the `revoked` list of `pkcs11.toml` and on
//! every remaining appliance's deny-list, as for a replaced appliance.

use std::path::Path;
use std::time::{Duration, Instant};

use ittc_wire::cluster::FILE_NAME;
use ittc_wire::{Participant, Request, Response};

use crate::cluster::{Cluster, expect_ok};
use crate::error::CliError;
use crate::folder::{ClusterFile, pem_serial};
use crate::refresh::{Failure, KeyRefresh, Progress, answering_status, refresh_one};
use crate::status::StatusReport;

/// The sharing `ittc cluster reshare` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `k`.
    pub threshold: u8,
    /// The appliances, ascending.
    pub appliances: Vec<u8>,
}

impl Target {
    /// Parses `--appliances 1,3,4,5` (any order, no repeats) for `--threshold K`.
    ///
    /// # Errors
    ///
    /// [`CliError::Usage`] for a list that is not indices in 1..=16, a repeat, or a
    /// threshold not in `2..=` the number of appliances.
    pub fn parse(threshold: u8, list: &str) -> Result<Self, CliError> {
        let mut appliances = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let index: u8 = item
                .parse()
                .ok()
                .filter(|i| (1..=ittc_wire::MAX_APPLIANCES).contains(i))
                .ok_or_else(|| {
                    CliError::Usage(format!("--appliances: {item:?} is not an index in 1..=16"))
                })?;
            if appliances.contains(&index) {
                return Err(CliError::Usage(format!(
                    "--appliances: {index} appears twice"
                )));
            }
            appliances.push(index);
        }
        appliances.sort_unstable();
        if threshold < 2 || usize::from(threshold) > appliances.len() {
            return Err(CliError::Usage(format!(
                "--threshold {threshold} must be in 2..={} (the number of --appliances)",
                appliances.len()
            )));
        }
        Ok(Self {
            threshold,
            appliances,
        })
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Reshared {
    /// The keys reshared now, or why not, in id order.
    pub results: Vec<KeyRefresh>,
    /// The keys that were on the new sharing already (hex ids).
    pub unchanged: Vec<String>,
    /// The appliances `pkcs11.toml` no longer names (left out by every key's new
    /// sharing); empty when it was not changed.
    pub dropped: Vec<u8>,
    /// Whether `pkcs11.toml` has the new threshold and appliances now (every key is on
    /// the new sharing).
    pub config_updated: bool,
    /// Appliances left out that still held a key when the wait for their erasure ended,
    /// or did not answer, one line each: their shares are not known to be erased.
    pub not_erased: Vec<String>,
    /// How many certificates `pkcs11.toml` revokes (those of appliances left out now or
    /// before, and of replaced ones).
    pub revoked: usize,
    /// The appliances that put every revoked certificate on their deny-list.
    pub revoked_on: Vec<u8>,
    /// The appliances that could not be told, one line each.
    pub not_reached: Vec<String>,
}

/// How long an appliance left out is given to erase its shares once the reshares are over
/// (it erases at the reshare's last step, or at its next recovery pass).
pub const ERASE_WAIT: Duration = Duration::from_secs(30);

impl Reshared {
    /// Whether every key is on the new sharing.
    pub fn complete(&self) -> bool {
        self.results.iter().all(|r| r.result.is_ok())
    }
}

/// The line for one key: `key 0102 reshared: epoch 3 -> 4 in 0.9 s`, or why not.
pub fn line(result: &KeyRefresh) -> String {
    result.line_as("reshare", "reshared")
}

/// For each key with a current epoch: the coordinator (the lowest-indexed reachable
/// appliance of `target` that has that epoch active), or `None` when the key is on
/// `target`'s sharing already; in id order.
pub fn plan(report: &StatusReport, target: &Target) -> Vec<(String, Option<Result<u8, String>>)> {
    report
        .keys
        .iter()
        .filter(|k| k.epoch.is_some())
        .map(|k| {
            if k.threshold == target.threshold && k.members == target.appliances {
                return (k.id.clone(), None);
            }
            let coordinator = k
                .holders
                .iter()
                .copied()
                .find(|i| target.appliances.contains(i))
                .ok_or_else(|| {
                    format!(
                        "no reachable appliance of {:?} has its current epoch (holders: {:?})",
                        target.appliances, k.holders
                    )
                });
            (k.id.clone(), Some(coordinator))
        })
        .collect()
}

/// Reshares every key of the cluster to `target`, one key after the other, telling
/// `progress` about each and waiting up to `timeout` for each; then, if every key is on
/// the new sharing, writes it to `pkcs11.toml`.
///
/// # Errors
///
/// [`CliError::Usage`] for an appliance of `target` that `pkcs11.toml` does not name (add
/// it first with `ittc appliance add`); [`CliError::Several`] when no appliance answers;
/// file errors writing `pkcs11.toml`.
pub fn reshare(
    cluster: &Cluster,
    target: &Target,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<Reshared, CliError> {
    let mut holders = Vec::new();
    for &index in &target.appliances {
        let entry = cluster.config.appliance(index).ok_or_else(|| {
            CliError::Usage(format!(
                "appliance {index} is not in {FILE_NAME}: add it with `ittc appliance add \
                 --index {index}` first"
            ))
        })?;
        holders.push(Participant {
            index,
            address: entry.address.clone(),
        });
    }
    let report = answering_status(cluster)?;
    let mut results = Vec::new();
    let mut unchanged = Vec::new();
    for (id, coordinator) in plan(&report, target) {
        let result = match coordinator {
            None => {
                unchanged.push(id);
                continue;
            }
            Some(Err(reason)) => Err(Failure::NotStarted(reason)),
            Some(Ok(coordinator)) => {
                progress.started(&id, coordinator);
                refresh_one(
                    cluster,
                    &id,
                    coordinator,
                    timeout,
                    progress,
                    |key_id, session| Request::ReshareKey {
                        key_id,
                        session,
                        threshold: target.threshold,
                        holders: holders.clone(),
                    },
                )
            }
        };
        let done = KeyRefresh { id, result };
        progress.finished(&done);
        results.push(done);
    }
    let mut done = Reshared {
        results,
        unchanged,
        dropped: Vec::new(),
        config_updated: false,
        not_erased: Vec::new(),
        revoked: 0,
        revoked_on: Vec::new(),
        not_reached: Vec::new(),
    };
    if !done.complete() {
        return Ok(done);
    }
    done.dropped = cluster
        .indices()
        .into_iter()
        .filter(|i| !target.appliances.contains(i))
        .collect();
    done.not_erased = wait_erased(cluster, &done.dropped);
    update_config(&cluster.dir, target, &done.dropped)?;
    done.config_updated = true;
    // Every revoked serial to every remaining appliance (again, for those told before: it
    // is idempotent, and finishes what an earlier run could not).
    let cluster = Cluster::open(&cluster.dir)?;
    let serials = cluster
        .config
        .revoked_serials()
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    let requests: Vec<Request> = serials
        .serials()
        .map(|serial| Request::RevokeCertificate {
            serial: serial.to_vec(),
            label: "revoked in pkcs11.toml".to_owned(),
        })
        .collect();
    done.revoked = requests.len();
    if requests.is_empty() {
        return Ok(done);
    }
    let results = cluster.in_parallel(cluster.indices(), |i| -> Result<(), CliError> {
        let mut c = cluster.connect(i)?;
        requests.iter().try_for_each(|r| expect_ok(i, &mut c, r))
    });
    for (i, result) in results {
        match result {
            Ok(()) => done.revoked_on.push(i),
            Err(e) => done.not_reached.push(e.to_string()),
        }
    }
    Ok(done)
}

/// Waits up to [`ERASE_WAIT`] until each of `dropped` answers with no key; returns a line
/// for each that still holds one, or does not answer.
fn wait_erased(cluster: &Cluster, dropped: &[u8]) -> Vec<String> {
    let deadline = Instant::now() + ERASE_WAIT;
    let held = |i: u8| -> Result<usize, CliError> {
        match cluster.connect(i)?.request(&Request::Status) {
            Ok(Response::Status(s)) => Ok(s.keys.len()),
            Ok(other) => Err(CliError::appliance(i, format!("answered {}", other.kind()))),
            Err(e) => Err(CliError::appliance(i, e)),
        }
    };
    let mut lines = Vec::new();
    for &i in dropped {
        loop {
            match held(i) {
                Ok(0) => break,
                Ok(n) if Instant::now() >= deadline => {
                    lines.push(format!("appliance {i} still holds {n} key(s)"));
                    break;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(500)),
                Err(e) => {
                    lines.push(format!("appliance {i} does not answer ({e})"));
                    break;
                }
            }
        }
    }
    lines
}

/// Writes `target`'s threshold to `pkcs11.toml` in `dir`, drops the appliances of
/// `dropped` and puts their certificates (`appliance-<i>.pem` in `dir`, where present) on
/// its `revoked` list.
fn update_config(dir: &Path, target: &Target, dropped: &[u8]) -> Result<(), CliError> {
    let mut file = ClusterFile::read(dir)?;
    let before = file.config.clone();
    let config = &mut file.config;
    config.threshold = target.threshold;
    config
        .appliances
        .retain(|a| target.appliances.contains(&a.index));
    for i in dropped {
        let pem = dir.join(format!("appliance-{i}.pem"));
        if pem.is_file() {
            let serial = hex::encode(pem_serial(&pem)?);
            if !config.revoked.contains(&serial) {
                config.revoked.push(serial);
            }
        }
    }
    if file.config != before {
        file.write()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixtures::{down, key_status, up};
    use crate::status::report;

    #[test]
    fn the_target_is_parsed_and_checked() {
        assert_eq!(
            Target::parse(3, "5,1, 3,4,2").unwrap(),
            Target {
                threshold: 3,
                appliances: vec![1, 2, 3, 4, 5]
            }
        );
        for (k, list) in [
            (3, "1,2"),
            (1, "1,2"),
            (2, "1,1,2"),
            (2, "0,1"),
            (2, "1,x"),
            (2, "17,1"),
        ] {
            assert!(
                matches!(Target::parse(k, list), Err(CliError::Usage(_))),
                "{k} {list}"
            );
        }
    }

    #[test]
    fn a_new_holder_that_has_the_epoch_coordinates_and_done_keys_are_skipped() {
        let mut on_target = key_status(b"\x02", Some(4));
        on_target.threshold = 2;
        on_target.parties = 5;
        on_target.holders = vec![1, 3, 4, 5];
        let status = report(
            "c".into(),
            2,
            vec![
                down(1),
                up(2, vec![key_status(b"\x01", Some(3))]),
                up(3, vec![key_status(b"\x01", Some(3)), on_target.clone()]),
                up(4, vec![on_target.clone()]),
            ],
        );
        let target = Target::parse(2, "1,3,4,5").unwrap();
        assert_eq!(
            plan(&status, &target),
            [("01".to_owned(), Some(Ok(3))), ("02".to_owned(), None)]
        );
        let elsewhere = Target::parse(2, "2,5").unwrap();
        let planned = plan(&status, &elsewhere);
        assert_eq!(planned[0].1, Some(Ok(2)));
        assert!(matches!(&planned[1].1, Some(Err(reason)) if reason.contains("[2, 5]")));
    }
}
