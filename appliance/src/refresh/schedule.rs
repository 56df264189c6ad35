//! The refresh schedule: the leader refreshes every committed key once per
//! `refresh.interval`, and after a failed refresh tries again with back-off; every
//! appliance, leader or not, runs its recovery ([`super::recovery`]) on the same tick. One
//! background thread does both; a refresh it starts runs on that thread, one key after the
//! other.
//!
//! The leader of a key is the holder of its active epoch with the lowest index among those
//! that answer: appliance 1 while it is up and holds the key, else the next one (an
//! appliance that a reshare left out does not hold the refreshes back). Two appliances that both believe they lead (one
//! cannot reach the other) cannot both refresh a key: a refresh needs a majority of the
//! holders ([`super::coordinator::quorum`]), and a holder takes part in one refresh of a
//! key at a time and none while an epoch is pending.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ittc_wire::KeyId;
use tracing::{debug, info, warn};

use super::{coordinator, recovery};
use crate::state::State;
use crate::storage::KeyInfo;

/// The appliance that starts scheduled refreshes while it is up.
pub const LEADER: u8 = 1;

/// How often the background thread looks at the schedule and at interrupted refreshes.
pub const TICK: Duration = Duration::from_secs(2);

/// The first retry after a failure; each further failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(10);

/// The longest back-off (or the interval, if shorter).
const MAX_RETRY: Duration = Duration::from_secs(15 * 60);

/// When each key is due next at this appliance, and its failures in a row.
#[derive(Default)]
pub struct Schedule {
    entries: Mutex<HashMap<KeyId, Entry>>,
    /// Whether this appliance leads every key: no appliance with a lower index answered
    /// the last pass.
    leading: AtomicBool,
    /// The peers that answered the last pass; `None` before the first.
    answered: Mutex<Option<Vec<u8>>>,
}

#[derive(Clone, Copy)]
struct Entry {
    due: SystemTime,
    failures: u32,
}

impl Schedule {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<KeyId, Entry>) -> T) -> T {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut entries)
    }

    /// A refresh of `key_id` succeeded: due again in `interval`.
    pub fn succeeded(&self, key_id: &KeyId, interval: Duration) {
        let due = SystemTime::now() + interval;
        self.with(|e| e.insert(key_id.clone(), Entry { due, failures: 0 }));
    }

    /// A refresh of `key_id` failed: due again after the back-off.
    pub fn failed(&self, key_id: &KeyId, interval: Duration) {
        self.with(|e| {
            let failures = e.get(key_id).map_or(0, |x| x.failures) + 1;
            let due = SystemTime::now() + back_off(failures, interval);
            e.insert(key_id.clone(), Entry { due, failures });
        });
    }

    /// Whether this appliance leads `key`: no holder of its active epoch with a lower
    /// index answered the last pass (appliance 1 leads every key it holds).
    fn leads(&self, me: u8, key: &KeyInfo) -> bool {
        let Some(active) = key.active_epoch else {
            return false;
        };
        if me == LEADER {
            return true;
        }
        let holders = key.sharing(active).holders;
        self.answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|answered| !answered.iter().any(|i| *i < me && holders.contains(i)))
    }

    /// When `key` is due here (the first time: its active epoch's age decides), or `None`
    /// if this appliance does not schedule it.
    pub fn due(&self, state: &State, key: &KeyInfo) -> Option<SystemTime> {
        let interval = state.config.refresh.interval;
        if !state.config.refresh.scheduled() || !self.leads(state.config.index, key) {
            return None;
        }
        Some(self.with(|e| {
            e.entry(key.key_id.clone())
                .or_insert_with(|| {
                    let since = key
                        .active_since_unix_ms
                        .map_or_else(SystemTime::now, |ms| UNIX_EPOCH + Duration::from_millis(ms));
                    Entry {
                        due: since + interval,
                        failures: 0,
                    }
                })
                .due
        }))
    }

    /// [`Schedule::due`] in Unix milliseconds, for status.
    pub fn due_unix_ms(&self, state: &State, key: &KeyInfo) -> Option<u64> {
        self.due(state, key).map(|t| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        })
    }
}

/// The wait after `failures` failures in a row: 10 s, 20 s, 40 s, … up to 15 min or the
/// interval, whichever is shorter.
fn back_off(failures: u32, interval: Duration) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_RETRY).min(interval)
}

/// Starts the background thread: every [`TICK`], recovery of interrupted refreshes, then
/// the refreshes that are due. It runs until the process ends.
pub fn start(state: Arc<State>) {
    let spawned = std::thread::Builder::new()
        .name("refresh".into())
        .spawn(move || {
            loop {
                tick(&state);
                std::thread::sleep(TICK);
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "the refresh thread did not start: no scheduled refresh or recovery");
    }
}

/// One pass: recovery, then every key that is due.
pub fn tick(state: &State) {
    let answered = recovery::reconcile(state);
    let me = state.config.index;
    let leading = !answered.iter().any(|&i| i < me);
    *state
        .refresh
        .schedule
        .answered
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(answered);
    let was = state
        .refresh
        .schedule
        .leading
        .swap(leading, Ordering::Relaxed);
    if leading != was && me != LEADER {
        if leading {
            warn!(
                "no appliance with a lower index answers: this appliance starts the scheduled refreshes"
            );
        } else {
            info!(
                "an appliance with a lower index answers again: it starts the scheduled refreshes"
            );
        }
    }
    let keys = match state.storage.keys() {
        Ok(keys) => keys,
        Err(e) => {
            warn!(error = %e, "refresh schedule: keys not read");
            return;
        }
    };
    let now = SystemTime::now();
    for key in keys {
        let Some(due) = state.refresh.schedule.due(state, &key) else {
            continue;
        };
        if due > now
            || key.pending_epoch.is_some()
            || key.retiring_epoch.is_some()
            || state.refresh.running(&key.key_id).is_some()
        {
            continue;
        }
        debug!(key = %key.key_id, "scheduled refresh");
        // Failures are logged, audited and recorded by the coordinator.
        let _ = coordinator::coordinate(state, &key.key_id, rand::random(), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_cap() {
        let hour = Duration::from_secs(3600);
        assert_eq!(back_off(1, hour), Duration::from_secs(10));
        assert_eq!(back_off(2, hour), Duration::from_secs(20));
        assert_eq!(back_off(4, hour), Duration::from_secs(80));
        assert_eq!(back_off(30, hour), MAX_RETRY);
        assert_eq!(back_off(3, Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn successes_and_failures_move_the_due_time() {
        let schedule = Schedule::default();
        let key = KeyId::new(b"k".to_vec()).unwrap();
        let hour = Duration::from_secs(3600);
        schedule.failed(&key, hour);
        schedule.failed(&key, hour);
        let entry = schedule.with(|e| e[&key]);
        assert_eq!(entry.failures, 2);
        let wait = entry.due.duration_since(SystemTime::now()).unwrap();
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20));
        schedule.succeeded(&key, hour);
        let entry = schedule.with(|e| e[&key]);
        assert_eq!(entry.failures, 0);
        assert!(
            entry.due.duration_since(SystemTime::now()).unwrap() > hour - Duration::from_secs(5)
        );
    }
}
