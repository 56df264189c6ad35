//! `ittc key refresh`: a new sharing of a key now, rather than at its scheduled time. The
//! CLI only asks: one appliance coordinates the refresh with the others (as its own
//! schedule does) and answers when it is over; no share reaches this host.
//!
//! For each key, [`refresh`] asks every appliance for its status, picks the
//! lowest-indexed reachable appliance that has the key's current epoch active as the
//! coordinator ([`plan`]), and sends it `RefreshKey` with a random session. While that
//! request waits for its answer, it asks the same appliance `RefreshProgress` on a
//! connection of its own every [`POLL_INTERVAL`] and hands the stage to
//! [`Progress::stage`]; the `ittc` spinner shows it. One key failing does not stop the
//! others.

use std::sync::mpsc;
use std::time::Duration;

use ittc_wire::client::Timeouts;
use ittc_wire::{KeyId, RefreshOutcome, RefreshProgress, Request, Response};
use rand::RngExt;

use crate::cluster::{Cluster, Poller};
use crate::error::CliError;
use crate::status::StatusReport;

/// How often the coordinator is asked for the stage while it refreshes a key.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long to wait for each key's refresh by default (an appliance gives up after its own
/// `refresh.timeout_ms`, 60 s by default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Which keys to refresh.
#[derive(Clone, Copy, Debug)]
pub enum Which<'a> {
    /// The key with this id (`CKA_ID`).
    Key(&'a [u8]),
    /// Every key that some reachable appliance has an active epoch of, in id order.
    All,
}

/// One key to refresh, and the appliance to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// The key id, hex.
    pub id: String,
    /// The coordinator, or why no appliance can be asked.
    pub coordinator: Result<u8, String>,
}

/// How the refresh of one key went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRefresh {
    /// The key id, hex.
    pub id: String,
    /// The outcome, or how it failed.
    pub result: Result<RefreshOutcome, Failure>,
}

/// Why a key was not refreshed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Nothing was asked: no appliance can coordinate, or the one chosen is unreachable.
    NotStarted(String),
    /// The coordinator answered with an error: the key keeps its epoch.
    Failed {
        /// The coordinator.
        appliance: u8,
        /// Its reason.
        reason: String,
    },
    /// The request went out but no answer came (a timeout, a lost connection): the
    /// refresh may have completed or not.
    NoAnswer {
        /// The coordinator.
        appliance: u8,
        /// What happened to the connection.
        reason: String,
    },
}

impl KeyRefresh {
    /// The line for the operator: `key 0102 refreshed: epoch 3 -> 4 in 0.4 s`, or why not.
    pub fn line(&self) -> String {
        self.line_as("refresh", "refreshed")
    }

    /// [`KeyRefresh::line`] for another kind of run (`reshare`, `reshared`).
    pub fn line_as(&self, noun: &str, done: &str) -> String {
        let id = &self.id;
        match &self.result {
            Ok(o) => {
                let mut line = format!(
                    "key {id} {done}: epoch {} -> {} in {:.1} s",
                    o.from_epoch,
                    o.to_epoch,
                    Duration::from_millis(o.elapsed_ms).as_secs_f64()
                );
                if !o.erased {
                    line += &format!(
                        "; some appliances will erase epoch {} themselves",
                        o.from_epoch
                    );
                }
                line
            }
            Err(Failure::NotStarted(reason)) => format!("key {id} not {done}: {reason}"),
            Err(Failure::Failed { appliance, reason }) => format!(
                "key {id} not {done}: appliance {appliance}: {reason} (the key keeps its epoch)"
            ),
            Err(Failure::NoAnswer { appliance, reason }) => format!(
                "key {id}: no answer from appliance {appliance} ({reason}); the {noun} may \
                 still complete: see `ittc status`"
            ),
        }
    }
}

/// Where [`refresh`] reports how it goes. Any `Fn(&KeyRefresh)` takes the results and
/// ignores the rest.
pub trait Progress {
    /// Appliance `coordinator` is asked to refresh key `id` (hex).
    fn started(&self, id: &str, coordinator: u8) {
        let _ = (id, coordinator);
    }

    /// The coordinator's stage, about every [`POLL_INTERVAL`] while it refreshes key `id`.
    /// None may come (a quick refresh, an appliance that does not answer in time).
    fn stage(&self, id: &str, coordinator: u8, progress: &RefreshProgress) {
        let _ = (id, coordinator, progress);
    }

    /// Key `id` is done, refreshed or not.
    fn finished(&self, result: &KeyRefresh);
}

impl<F: Fn(&KeyRefresh)> Progress for F {
    fn finished(&self, result: &KeyRefresh) {
        self(result);
    }
}

/// The spinner's line while key `id` is refreshed: `key 0102 on appliance 1: trial (0.3 s)`.
pub fn describe(id: &str, coordinator: u8, progress: Option<&RefreshProgress>) -> String {
    match progress {
        Some(p) => format!(
            "key {id} on appliance {coordinator}: {} ({:.1} s)",
            p.stage.as_str(),
            Duration::from_millis(p.elapsed_ms).as_secs_f64()
        ),
        None => format!("key {id}: asking appliance {coordinator} to refresh it"),
    }
}

/// The keys to refresh and each one's coordinator, from the cluster's status: the
/// lowest-indexed reachable appliance that has the key's current epoch active. With
/// [`Which::All`], every key with a current epoch, in id order; with [`Which::Key`], that
/// key, with the reason when no appliance can be asked.
pub fn plan(report: &StatusReport, which: Which<'_>) -> Vec<Planned> {
    match which {
        Which::All => report
            .keys
            .iter()
            .filter(|k| k.epoch.is_some())
            .map(|k| Planned {
                id: k.id.clone(),
                coordinator: k
                    .holders
                    .iter()
                    .min()
                    .copied()
                    .ok_or_else(|| "no reachable appliance has its current epoch".to_owned()),
            })
            .collect(),
        Which::Key(id) => {
            let id = hex::encode(id);
            let coordinator = match report.keys.iter().find(|k| k.id == id) {
                None => Err("no reachable appliance holds it".to_owned()),
                Some(k) if k.epoch.is_none() => {
                    Err("it is not committed yet (an import or a generation is unfinished)".into())
                }
                Some(k) => k
                    .holders
                    .iter()
                    .min()
                    .copied()
                    .ok_or_else(|| "no reachable appliance has its current epoch".to_owned()),
            };
            let coordinator = coordinator.map_err(|reason| {
                let down: Vec<u8> = report
                    .appliances
                    .iter()
                    .filter(|a| !a.reachable)
                    .map(|a| a.index)
                    .collect();
                if down.is_empty() {
                    reason
                } else {
                    format!("{reason} (appliances {down:?} do not answer)")
                }
            });
            vec![Planned { id, coordinator }]
        }
    }
}

/// Refreshes the keys `which` names, one after the other, telling `progress` about each;
/// waits up to `timeout` for each key's answer. The results are in the order the keys
/// were refreshed; a key that failed does not stop the others.
///
/// # Errors
///
/// [`CliError::Several`] when no appliance answers at all.
pub fn refresh(
    cluster: &Cluster,
    which: Which<'_>,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<Vec<KeyRefresh>, CliError> {
    let report = answering_status(cluster)?;
    let mut results = Vec::new();
    for planned in plan(&report, which) {
        let result = match planned.coordinator {
            Err(reason) => Err(Failure::NotStarted(reason)),
            Ok(coordinator) => {
                progress.started(&planned.id, coordinator);
                refresh_one(
                    cluster,
                    &planned.id,
                    coordinator,
                    timeout,
                    progress,
                    |key_id, session| Request::RefreshKey { key_id, session },
                )
            }
        };
        let done = KeyRefresh {
            id: planned.id,
            result,
        };
        progress.finished(&done);
        results.push(done);
    }
    Ok(results)
}

/// The cluster's status, if at least one appliance answers.
///
/// # Errors
///
/// [`CliError::Several`] naming each appliance and why it does not answer.
pub(crate) fn answering_status(cluster: &Cluster) -> Result<StatusReport, CliError> {
    let report = crate::status::status(cluster);
    if !report.appliances.iter().any(|a| a.reachable) {
        return Err(CliError::Several {
            summary: "no appliance answers".into(),
            details: report
                .appliances
                .iter()
                .map(|a| {
                    format!(
                        "appliance {}: {}",
                        a.index,
                        a.error.as_deref().unwrap_or("no answer")
                    )
                })
                .collect(),
        });
    }
    Ok(report)
}

/// Asks `coordinator` to refresh key `id` (hex) with the request `make` builds from the key
/// and a new session (`RefreshKey`, or `ReshareKey`), and polls it for the stage until it
/// answers.
pub(crate) fn refresh_one(
    cluster: &Cluster,
    id: &str,
    coordinator: u8,
    timeout: Duration,
    progress: &dyn Progress,
    make: impl FnOnce(KeyId, [u8; 16]) -> Request,
) -> Result<RefreshOutcome, Failure> {
    let key_id = hex::decode(id)
        .ok()
        .and_then(|bytes| KeyId::new(bytes).ok())
        .ok_or_else(|| Failure::NotStarted(format!("{id:?} is not a key id")))?;
    let session: [u8; 16] = rand::rng().random();
    let request = make(key_id, session);
    let base = cluster.config.timeouts.timeouts();
    let timeouts = Timeouts {
        connect: base.connect,
        io: timeout,
    };
    // As for a generation: the request runs on a scoped thread, this thread polls the
    // coordinator until it returns (so the callback need not be `Sync`), and the dropped
    // sender ends the wait at once.
    let (done, finished) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let answer = scope.spawn(|| {
            let _done = done;
            let mut c = cluster
                .connect_with(coordinator, timeouts)
                .map_err(|e| Failure::NotStarted(e.to_string()))?;
            match c.request(&request) {
                Ok(Response::Refreshed(outcome)) => Ok(outcome),
                Ok(Response::Error(e)) => Err(Failure::Failed {
                    appliance: coordinator,
                    reason: e.message,
                }),
                Ok(other) => Err(Failure::NoAnswer {
                    appliance: coordinator,
                    reason: format!("unexpected answer {}", other.kind()),
                }),
                Err(e) => Err(Failure::NoAnswer {
                    appliance: coordinator,
                    reason: e.to_string(),
                }),
            }
        });
        let mut poller = Poller::new(cluster, coordinator, Request::RefreshProgress { session });
        while finished.recv_timeout(POLL_INTERVAL) == Err(mpsc::RecvTimeoutError::Timeout) {
            let stage = poller.poll(|answer| match answer {
                Response::RefreshProgress(p) => Some(p),
                _ => None,
            });
            if let Some(p) = stage {
                progress.stage(id, coordinator, &p);
            }
        }
        answer.join()
    })
    .unwrap_or_else(|_| {
        Err(Failure::NoAnswer {
            appliance: coordinator,
            reason: "the thread sending the request failed".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use ittc_wire::{KeyStatus, RefreshStage};

    use super::*;
    use crate::status::fixtures::{down, key_status, up};
    use crate::status::report;

    fn key(id: &[u8], active: Option<u64>) -> KeyStatus {
        key_status(id, active)
    }

    fn planned(id: &str, coordinator: Result<u8, &str>) -> Planned {
        Planned {
            id: id.into(),
            coordinator: coordinator.map_err(str::to_owned),
        }
    }

    #[test]
    fn the_lowest_reachable_holder_of_the_current_epoch_coordinates() {
        // Appliance 1 is down; 2 is still on epoch 3 while 3 has committed epoch 4.
        let status = report(
            "c".into(),
            2,
            vec![
                down(1),
                up(2, vec![key(b"\x02", Some(3)), key(b"\x01", Some(1))]),
                up(3, vec![key(b"\x01", Some(1)), key(b"\x02", Some(4))]),
            ],
        );
        assert_eq!(
            plan(&status, Which::All),
            [planned("01", Ok(2)), planned("02", Ok(3))]
        );
        assert_eq!(plan(&status, Which::Key(b"\x02")), [planned("02", Ok(3))]);
    }

    #[test]
    fn all_skips_uncommitted_keys_and_one_key_says_why_it_cannot_start() {
        let status = report(
            "c".into(),
            2,
            vec![
                up(1, vec![key(b"\x01", Some(2)), key(b"\x09", None)]),
                up(2, vec![key(b"\x01", Some(2)), key(b"\x09", None)]),
                down(3),
            ],
        );
        assert_eq!(plan(&status, Which::All), [planned("01", Ok(1))]);
        assert_eq!(
            plan(&status, Which::Key(b"\x09")),
            [planned(
                "09",
                Err(
                    "it is not committed yet (an import or a generation is unfinished) \
                     (appliances [3] do not answer)"
                )
            )]
        );
        assert_eq!(
            plan(&status, Which::Key(b"\x07")),
            [planned(
                "07",
                Err("no reachable appliance holds it (appliances [3] do not answer)")
            )]
        );
        let empty = report("c".into(), 2, vec![up(1, Vec::new())]);
        assert!(plan(&empty, Which::All).is_empty());
        assert_eq!(
            plan(&empty, Which::Key(b"\x01")),
            [planned("01", Err("no reachable appliance holds it"))]
        );
    }

    fn outcome(erased: bool) -> RefreshOutcome {
        RefreshOutcome {
            from_epoch: 3,
            to_epoch: 4,
            erased,
            elapsed_ms: 420,
        }
    }

    #[test]
    fn results_read_as_one_line() {
        let line = |result| {
            KeyRefresh {
                id: "0102".into(),
                result,
            }
            .line()
        };
        assert_eq!(
            line(Ok(outcome(true))),
            "key 0102 refreshed: epoch 3 -> 4 in 0.4 s"
        );
        assert_eq!(
            line(Ok(outcome(false))),
            "key 0102 refreshed: epoch 3 -> 4 in 0.4 s; some appliances will erase epoch 3 \
             themselves"
        );
        assert_eq!(
            line(Err(Failure::Failed {
                appliance: 1,
                reason: "refresh failed: appliance 3 unreachable".into()
            })),
            "key 0102 not refreshed: appliance 1: refresh failed: appliance 3 unreachable \
             (the key keeps its epoch)"
        );
        assert_eq!(
            line(Err(Failure::NotStarted(
                "no reachable appliance holds it".into()
            ))),
            "key 0102 not refreshed: no reachable appliance holds it"
        );
        assert_eq!(
            line(Err(Failure::NoAnswer {
                appliance: 2,
                reason: "timed out".into()
            })),
            "key 0102: no answer from appliance 2 (timed out); the refresh may still \
             complete: see `ittc status`"
        );
    }

    #[test]
    fn the_spinner_shows_the_stage_and_time() {
        assert_eq!(
            describe("0102", 1, None),
            "key 0102: asking appliance 1 to refresh it"
        );
        let p = RefreshProgress {
            stage: RefreshStage::Trial,
            elapsed_ms: 310,
        };
        assert_eq!(
            describe("0102", 1, Some(&p)),
            "key 0102 on appliance 1: trial (0.3 s)"
        );
    }

    #[test]
    fn a_closure_takes_the_results_and_ignores_the_rest() {
        let seen = std::cell::RefCell::new(Vec::new());
        let closure = |r: &KeyRefresh| seen.borrow_mut().push(r.line());
        let progress: &dyn Progress = &closure;
        progress.started("01", 1);
        progress.stage(
            "01",
            1,
            &RefreshProgress {
                stage: RefreshStage::Split,
                elapsed_ms: 5,
            },
        );
        progress.finished(&KeyRefresh {
            id: "01".into(),
            result: Ok(outcome(true)),
        });
        assert_eq!(*seen.borrow(), ["key 01 refreshed: epoch 3 -> 4 in 0.4 s"]);
    }
}
