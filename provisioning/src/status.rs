//! `ittc status`: which appliances answer, what they run, and for each key whether it is
//! usable now, how many more appliance failures it survives, and how its refreshes go
//! (when it was last refreshed, when the next is due, the last failure, epochs pending or
//! still to erase, appliances behind).
//!
//! [`ask`] asks the appliances; [`report`] puts their answers together without I/O;
//! [`watch`] asks again and again (`ittc status --watch`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use ittc_wire::{KeyStatus, RefreshFailure, Request, Response, StatusInfo};
use serde::Serialize;
use time::OffsetDateTime;

use crate::cluster::Cluster;

/// One appliance.
#[derive(Debug, Serialize)]
pub struct ApplianceReport {
    /// Index.
    pub index: u8,
    /// Address from the configuration.
    pub address: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Why not, if it did not.
    pub error: Option<String>,
    /// Software version.
    pub version: Option<String>,
    /// Build variant (exponentiation backend and TLS provider).
    pub build_variant: Option<String>,
    /// Seconds since it started.
    pub uptime_secs: Option<u64>,
    /// Head of its audit chain, hex.
    pub audit_head: Option<String>,
    /// How many certificates are on its deny-list.
    pub revoked_certificates: Option<u32>,
}

/// One key across the cluster.
#[derive(Debug, Serialize)]
pub struct KeyReport {
    /// Key id (`CKA_ID`), hex.
    pub id: String,
    /// Label.
    pub label: String,
    /// k of the current epoch.
    pub threshold: u8,
    /// n of the current epoch: its highest holder's index.
    pub parties: u8,
    /// The appliances the current epoch is shared among (`1..=parties` unless a reshare
    /// left an index out).
    pub members: Vec<u8>,
    /// The key's current epoch: the newest any reachable appliance has active (once one
    /// has made a refresh's new epoch active, the others follow by themselves).
    pub epoch: Option<u64>,
    /// Reachable appliances that have that epoch active.
    pub holders: Vec<u8>,
    /// Reachable appliances of [`KeyReport::members`] that do not have it active.
    pub behind: Vec<BehindReport>,
    /// Whether k reachable appliances answer for that epoch (theirs active, retiring, or
    /// pending and verified by a refresh's trial).
    pub usable: bool,
    /// How many more appliances may fail with the key still usable.
    pub tolerates: usize,
    /// Epochs stored but not committed (an import, a generation or a refresh under way or
    /// interrupted), with the appliances that hold them.
    pub pending_epochs: Vec<PendingReport>,
    /// Old epochs a refresh replaced that are not erased yet, with the appliances that
    /// still hold them.
    pub retiring_epochs: Vec<EpochReport>,
    /// When the key was last refreshed (the latest time any reachable appliance made a new
    /// epoch active), Unix milliseconds.
    pub last_refresh_unix_ms: Option<u64>,
    /// When the next scheduled refresh is due, Unix milliseconds: appliance 1 schedules
    /// refreshes, so `None` while it does not answer or when refresh is off.
    pub next_due_unix_ms: Option<u64>,
    /// The most recent refresh failure any reachable appliance reports.
    pub last_failure: Option<FailureReport>,
    /// Whether `last_failure` is more recent than `last_refresh_unix_ms`: the key's last
    /// refresh failed and none has succeeded since (`ittc status` exits 3).
    pub refresh_failed: bool,
    /// Whether a refresh of the key runs now on some reachable appliance.
    pub refreshing: bool,
    /// Whether a holder is behind (other than committing) or does not answer: the key
    /// signs, but with fewer holders of its current epoch than it has (`ittc status` exits
    /// 4).
    pub degraded: bool,
}

/// A holder of the key (one of `1..=parties`) that does not have the key's current epoch
/// active, or does not answer.
#[derive(Debug, Serialize)]
pub struct BehindReport {
    /// Its index.
    pub index: u8,
    /// Whether it answered.
    pub reachable: bool,
    /// The epoch it has active, if any.
    pub active_epoch: Option<u64>,
    /// The epoch it has pending, if any (it commits a refreshed epoch by itself).
    pub pending_epoch: Option<u64>,
    /// Whether it reports the key at all.
    pub has_key: bool,
    /// Whether it is only about to commit the current epoch (mid-refresh: normal).
    pub committing: bool,
    /// Why it is behind, as far as the answers tell: it does not answer (and the error),
    /// it is committing, its last failure, or that it is catching up by itself.
    pub reason: String,
}

/// A pending epoch and the reachable appliances that hold it.
#[derive(Debug, Serialize)]
pub struct PendingReport {
    /// The epoch.
    pub epoch: u64,
    /// The appliances that hold it pending.
    pub appliances: Vec<u8>,
    /// Those of them on which it passed a refresh's trial (it answers clients there).
    pub ready: Vec<u8>,
}

/// An epoch and the reachable appliances that hold it.
#[derive(Debug, Serialize)]
pub struct EpochReport {
    /// The epoch.
    pub epoch: u64,
    /// The appliances.
    pub appliances: Vec<u8>,
}

/// A refresh failure as one appliance recorded it.
#[derive(Debug, Serialize)]
pub struct FailureReport {
    /// When, Unix milliseconds.
    pub time_unix_ms: u64,
    /// Why, as the appliance put it.
    pub reason: String,
    /// The appliance that recorded it.
    pub appliance: u8,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Cluster id.
    pub cluster_id: String,
    /// k.
    pub threshold: u8,
    /// Appliances.
    pub appliances: Vec<ApplianceReport>,
    /// Keys.
    pub keys: Vec<KeyReport>,
    /// How many different build variants answer (diversity).
    pub distinct_variants: usize,
    /// Build variants that more than one answering appliance runs, with those appliances:
    /// one exploit of such a variant opens all of them (docs/diversity.md). Empty when
    /// every answering appliance runs a variant of its own.
    pub same_variant: Vec<SharedVariant>,
}

/// A build variant that several appliances run.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SharedVariant {
    /// The variant, as the appliances report it.
    pub variant: String,
    /// The appliances that run it, in index order (at least two).
    pub appliances: Vec<u8>,
}

impl SharedVariant {
    /// `warning: appliances 1 and 3 run the same build variant X: one exploit of it opens
    /// both; …`
    fn warning(&self) -> String {
        let (last, rest) = self.appliances.split_last().unwrap_or((&0, &[]));
        let listed: Vec<String> = rest.iter().map(u8::to_string).collect();
        let all = if self.appliances.len() == 2 {
            "both"
        } else {
            "all of them"
        };
        format!(
            "warning: appliances {} and {last} run the same build variant {}: one exploit of \
             it opens {all}; install a different variant on each (docs/operations.md)",
            listed.join(", "),
            printable(&self.variant)
        )
    }
}

/// The variants among `running` (index, variant) that more than one appliance runs.
fn shared_variants(running: &[(u8, String)]) -> Vec<SharedVariant> {
    let mut by_variant: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (index, variant) in running {
        by_variant.entry(variant).or_default().push(*index);
    }
    let mut shared: Vec<SharedVariant> = by_variant
        .into_iter()
        .filter(|(_, appliances)| appliances.len() > 1)
        .map(|(variant, mut appliances)| {
            appliances.sort_unstable();
            SharedVariant {
                variant: variant.to_owned(),
                appliances,
            }
        })
        .collect();
    shared.sort_by_key(|s| s.appliances.first().copied());
    shared
}

/// `ittc status` exits with this when a key is unusable or no appliance answers.
pub const EXIT_UNHEALTHY: u8 = 1;
/// `ittc status` exits with this when every key is usable but a key's last refresh failed
/// and none has succeeded since.
pub const EXIT_REFRESH_FAILED: u8 = 3;
/// `ittc status` exits with this when every key is usable and refreshes succeed, but a
/// holder of a key is behind or does not answer.
pub const EXIT_DEGRADED: u8 = 4;

impl StatusReport {
    /// Whether every key is usable (and there is at least one appliance answering).
    pub fn healthy(&self) -> bool {
        self.appliances.iter().any(|a| a.reachable) && self.keys.iter().all(|k| k.usable)
    }

    /// `ittc status`'s exit code: 0 when healthy, no key's last refresh failed and no
    /// holder is behind; [`EXIT_UNHEALTHY`] when not healthy, else [`EXIT_REFRESH_FAILED`]
    /// when a key's last refresh failed, else [`EXIT_DEGRADED`] when a key is degraded.
    pub fn exit_code(&self) -> u8 {
        if !self.healthy() {
            EXIT_UNHEALTHY
        } else if self.keys.iter().any(|k| k.refresh_failed) {
            EXIT_REFRESH_FAILED
        } else if self.keys.iter().any(|k| k.degraded) {
            EXIT_DEGRADED
        } else {
            0
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = format!(
            "cluster {} ({}-of-{})\n\nappliances:\n",
            self.cluster_id,
            self.threshold,
            self.appliances.len()
        );
        for a in &self.appliances {
            if a.reachable {
                let revoked = match a.revoked_certificates {
                    Some(0) | None => String::new(),
                    Some(1) => ", 1 certificate revoked".to_owned(),
                    Some(n) => format!(", {n} certificates revoked"),
                };
                out += &format!(
                    "  {:>2}  {:<22} up     {} {} (up {}s){revoked}\n",
                    a.index,
                    a.address,
                    a.version.as_deref().unwrap_or("?"),
                    a.build_variant.as_deref().unwrap_or("?"),
                    a.uptime_secs.unwrap_or(0)
                );
            } else {
                out += &format!(
                    "  {:>2}  {:<22} DOWN   {}\n",
                    a.index,
                    a.address,
                    a.error.as_deref().unwrap_or("")
                );
            }
        }
        out += &format!("  build variants answering: {}\n", self.distinct_variants);
        for shared in &self.same_variant {
            out += &format!("  {}\n", shared.warning());
        }
        out += "\nkeys:\n";
        if self.keys.is_empty() {
            out += "  (none)\n";
        }
        for k in &self.keys {
            let state = if k.usable {
                format!(
                    "usable, tolerates {} more appliance failure(s)",
                    k.tolerates
                )
            } else if k.epoch.is_none() {
                "NOT USABLE: never committed".to_owned()
            } else {
                format!(
                    "NOT USABLE: {} of {} needed holders answer",
                    k.holders.len(),
                    k.threshold
                )
            };
            let among = if k.members.iter().copied().eq(1..=k.parties) {
                String::new()
            } else {
                format!(" on {:?}", k.members)
            };
            out += &format!(
                "  id {} \"{}\" {}-of-{}{among} epoch {}: holders {:?}: {state}\n",
                k.id,
                k.label,
                k.threshold,
                k.members.len(),
                k.epoch.map_or("-".to_owned(), |e| e.to_string()),
                k.holders
            );
            for line in k.refresh_lines() {
                out += &format!("    {line}\n");
            }
        }
        out
    }
}

impl KeyReport {
    /// The lines under the key's line in the human report: refresh times, the last
    /// failure, pending and retiring epochs, appliances behind. Times are UTC; a time on
    /// the same day as the one before it shows without the date.
    pub fn refresh_lines(&self) -> Vec<String> {
        let mut clock = Clock::default();
        let mut lines = Vec::new();
        let mut refresh = Vec::new();
        match self.last_refresh_unix_ms {
            Some(t) => refresh.push(format!("refreshed {}", clock.show(t))),
            None if self.next_due_unix_ms.is_some() => refresh.push("never refreshed".into()),
            None => {}
        }
        if let Some(t) = self.next_due_unix_ms {
            refresh.push(format!("next due {}", clock.show(t)));
        }
        if self.refreshing {
            refresh.push("refreshing now".into());
        }
        if !refresh.is_empty() {
            lines.push(refresh.join(", "));
        }
        if let Some(f) = &self.last_failure {
            lines.push(format!(
                "last refresh failure {} on appliance {}: {}{}",
                clock.show(f.time_unix_ms),
                f.appliance,
                printable(&f.reason),
                if self.refresh_failed {
                    ""
                } else {
                    " (refreshed since)"
                }
            ));
        }
        for p in &self.pending_epochs {
            let ready = if p.ready.is_empty() {
                String::new()
            } else if p.ready == p.appliances {
                " (ready)".into()
            } else {
                format!(" (ready on {:?})", p.ready)
            };
            lines.push(format!(
                "epoch {} pending on {:?}{ready}",
                p.epoch, p.appliances
            ));
        }
        for r in &self.retiring_epochs {
            lines.push(format!(
                "epoch {} still to erase on {:?}",
                r.epoch, r.appliances
            ));
        }
        if !self.behind.is_empty() {
            let behind: Vec<String> = self.behind.iter().map(BehindReport::describe).collect();
            lines.push(format!("behind: {}", behind.join(", ")));
        }
        lines
    }
}

impl BehindReport {
    /// `appliance 2 on epoch 3 (4 pending)`, `appliance 3 without the key (catching up by
    /// itself)`, `appliance 4 does not answer (connection refused)`.
    fn describe(&self) -> String {
        if !self.reachable {
            return format!("appliance {} {}", self.index, printable(&self.reason));
        }
        let state = match (self.has_key, self.active_epoch, self.pending_epoch) {
            (false, _, _) => "without the key".to_owned(),
            (true, Some(a), Some(p)) => format!("on epoch {a} ({p} pending)"),
            (true, Some(a), None) => format!("on epoch {a}"),
            (true, None, Some(p)) => format!("with epoch {p} pending only"),
            (true, None, None) => "with no epoch".to_owned(),
        };
        if self.committing {
            format!("appliance {} {state}", self.index)
        } else {
            format!(
                "appliance {} {state} ({})",
                self.index,
                printable(&self.reason)
            )
        }
    }
}

/// An appliance's free text with control characters (newlines, escapes) made spaces.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `ittc status --watch`: the report every `every` (the time to ask included), until
/// interrupted or, with `count`, after that many reports; returns the last report's exit
/// code ([`StatusReport::exit_code`]). In a terminal the screen is cleared and redrawn;
/// otherwise (a pipe, a file) each report follows the last after a line with the time, or,
/// with `json`, one compact JSON document per line. Stops quietly when standard output is
/// closed (`| head`).
pub fn watch(cluster: &Cluster, every: Duration, count: Option<u32>, json: bool) -> u8 {
    let terminal = std::io::stdout().is_terminal();
    let mut shown = 0u32;
    loop {
        let started = Instant::now();
        let report = status(cluster);
        let now_ms = ittc_wire::now_unix_ms();
        let text = if json {
            let mut line = serde_json::to_string(&report).unwrap_or_default();
            line.push('\n');
            line
        } else {
            // Home and clear in a terminal, so the report does not scroll.
            let clear = if terminal { "\x1b[H\x1b[2J" } else { "" };
            let gap = if terminal || shown == 0 { "" } else { "\n" };
            format!(
                "{clear}{gap}{} (every {} s; Ctrl-C to stop)\n\n{}",
                utc(now_ms),
                every.as_secs(),
                report.render()
            )
        };
        let mut out = std::io::stdout().lock();
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return report.exit_code();
        }
        drop(out);
        shown = shown.saturating_add(1);
        if count.is_some_and(|c| shown >= c) {
            return report.exit_code();
        }
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
}

/// Unix milliseconds as `2026-12-06 20:31:05 UTC`.
pub fn utc(unix_ms: u64) -> String {
    match datetime(unix_ms) {
        Some(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None => format!("{unix_ms} ms after 1970"),
    }
}

fn datetime(unix_ms: u64) -> Option<OffsetDateTime> {
    let secs = i64::try_from(unix_ms / 1000).ok()?;
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

/// Shows times in full, or as `21:31:05 UTC` when on the same UTC day as the time shown
/// before.
#[derive(Default)]
struct Clock {
    day: Option<time::Date>,
}

impl Clock {
    fn show(&mut self, unix_ms: u64) -> String {
        let Some(t) = datetime(unix_ms) else {
            return utc(unix_ms);
        };
        let same_day = self.day == Some(t.date());
        self.day = Some(t.date());
        if same_day {
            format!("{:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second())
        } else {
            utc(unix_ms)
        }
    }
}

/// One appliance's answer to `Status`, or why there is none.
#[derive(Debug)]
pub struct Answer {
    /// The appliance.
    pub index: u8,
    /// Its address from the configuration.
    pub address: String,
    /// Its status, or why it did not answer.
    pub status: Result<StatusInfo, String>,
}

/// Asks every appliance (in parallel) for its status; the answers are in index order.
pub fn ask(cluster: &Cluster) -> Vec<Answer> {
    cluster
        .in_parallel(cluster.indices(), |index| -> Result<StatusInfo, String> {
            let mut c = cluster.connect(index).map_err(|e| match e {
                crate::CliError::Appliance { message, .. } => message,
                other => other.to_string(),
            })?;
            match c.request(&Request::Status) {
                Ok(Response::Status(s)) => Ok(s),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .into_iter()
        .map(|(index, status)| Answer {
            index,
            address: cluster
                .config
                .appliance(index)
                .map(|a| a.address.clone())
                .unwrap_or_default(),
            status,
        })
        .collect()
}

/// Asks every appliance (in parallel) and puts the answers together.
pub fn status(cluster: &Cluster) -> StatusReport {
    report(
        cluster.config.cluster_id.clone(),
        cluster.config.threshold,
        ask(cluster),
    )
}

/// Puts the appliances' answers together (`answers` in index order).
pub fn report(cluster_id: String, threshold: u8, answers: Vec<Answer>) -> StatusReport {
    let answering: Vec<u8> = answers
        .iter()
        .filter(|a| a.status.is_ok())
        .map(|a| a.index)
        .collect();
    let silent: Vec<(u8, String)> = answers
        .iter()
        .filter_map(|a| a.status.as_ref().err().map(|e| (a.index, e.clone())))
        .collect();
    let mut appliances = Vec::new();
    // Per key id, each answering appliance's view of the key, in index order.
    let mut sightings: BTreeMap<Vec<u8>, Vec<(u8, KeyStatus)>> = BTreeMap::new();
    let mut variants = BTreeSet::new();
    let mut running: Vec<(u8, String)> = Vec::new();
    for Answer {
        index,
        address,
        status,
    } in answers
    {
        match status {
            Ok(s) => {
                variants.insert(s.build_variant.clone());
                running.push((index, s.build_variant.clone()));
                for k in s.keys {
                    sightings
                        .entry(k.key_id.as_bytes().to_vec())
                        .or_default()
                        .push((index, k));
                }
                appliances.push(ApplianceReport {
                    index,
                    address,
                    reachable: true,
                    error: None,
                    version: Some(s.software_version),
                    build_variant: Some(s.build_variant),
                    uptime_secs: Some(s.uptime_secs),
                    audit_head: Some(hex::encode(s.audit_head)),
                    revoked_certificates: Some(s.revoked_certificates),
                });
            }
            Err(e) => appliances.push(ApplianceReport {
                index,
                address,
                reachable: false,
                error: Some(e),
                version: None,
                build_variant: None,
                uptime_secs: None,
                audit_head: None,
                revoked_certificates: None,
            }),
        }
    }
    let keys = sightings
        .into_iter()
        .filter_map(|(id, seen)| key_report(&id, &seen, &answering, &silent))
        .collect();
    StatusReport {
        cluster_id,
        threshold,
        appliances,
        keys,
        distinct_variants: variants.len(),
        same_variant: shared_variants(&running),
    }
}

/// One key from the answering appliances' views of it (`seen`, in index order, never
/// empty); `answering` are the appliances that answered at all, `silent` those that did
/// not, with the error.
fn key_report(
    id: &[u8],
    seen: &[(u8, KeyStatus)],
    answering: &[u8],
    silent: &[(u8, String)],
) -> Option<KeyReport> {
    let (_, first) = seen.first()?;
    let epoch = seen.iter().filter_map(|(_, k)| k.active_epoch).max();
    // The sharing of the current epoch, as a holder of it describes it (a reshare changes
    // it; an appliance behind may still describe the old one).
    let first = seen
        .iter()
        .find(|(_, k)| epoch.is_some() && k.active_epoch == epoch)
        .map_or(first, |(_, k)| k);
    let members: Vec<u8> = if first.holders.is_empty() {
        (1..=first.parties).collect()
    } else {
        first.holders.clone()
    };
    let holders: Vec<u8> = seen
        .iter()
        .filter(|(_, k)| epoch.is_some() && k.active_epoch == epoch)
        .map(|(i, _)| *i)
        .collect();
    let serving = epoch.map_or(0, |e| {
        seen.iter()
            .filter(|(_, k)| k.serving_epochs().any(|s| s == e))
            .count()
    });
    let behind: Vec<BehindReport> = match epoch {
        None => Vec::new(),
        Some(current) => {
            let reachable = answering
                .iter()
                .filter(|i| members.contains(*i) && !holders.contains(*i))
                .map(|&index| {
                    let k = seen.iter().find(|(i, _)| *i == index).map(|(_, k)| k);
                    let committing = k.is_some_and(|k| k.pending_epoch == Some(current));
                    let reason = match k.and_then(|k| k.refresh.last_failure.as_ref()) {
                        _ if committing => "committing the current epoch".to_owned(),
                        Some(f) => format!("last failure: {}", f.reason),
                        None => "catching up by itself".to_owned(),
                    };
                    BehindReport {
                        index,
                        reachable: true,
                        active_epoch: k.and_then(|k| k.active_epoch),
                        pending_epoch: k.and_then(|k| k.pending_epoch),
                        has_key: k.is_some(),
                        committing,
                        reason,
                    }
                });
            let unreachable =
                silent
                    .iter()
                    .filter(|(i, _)| members.contains(i))
                    .map(|(index, error)| BehindReport {
                        index: *index,
                        reachable: false,
                        active_epoch: None,
                        pending_epoch: None,
                        has_key: false,
                        committing: false,
                        reason: format!("does not answer ({error})"),
                    });
            let mut all: Vec<BehindReport> = reachable.chain(unreachable).collect();
            all.sort_by_key(|b| b.index);
            all
        }
    };
    let degraded = behind.iter().any(|b| !b.committing);
    let mut pending: BTreeMap<u64, PendingReport> = BTreeMap::new();
    let mut retiring: BTreeMap<u64, EpochReport> = BTreeMap::new();
    for (index, k) in seen {
        if let Some(epoch) = k.pending_epoch {
            let p = pending.entry(epoch).or_insert_with(|| PendingReport {
                epoch,
                appliances: Vec::new(),
                ready: Vec::new(),
            });
            p.appliances.push(*index);
            if k.pending_ready {
                p.ready.push(*index);
            }
        }
        if let Some(epoch) = k.retiring_epoch {
            retiring
                .entry(epoch)
                .or_insert_with(|| EpochReport {
                    epoch,
                    appliances: Vec::new(),
                })
                .appliances
                .push(*index);
        }
    }
    let last_refresh_unix_ms = seen
        .iter()
        .filter_map(|(_, k)| k.refresh.last_refresh_unix_ms)
        .max();
    let next_due_unix_ms = seen
        .iter()
        .filter_map(|(_, k)| k.refresh.next_due_unix_ms)
        .min();
    // The most recent; on a tie, the lowest index.
    let last_failure = seen
        .iter()
        .filter_map(|(i, k)| k.refresh.last_failure.as_ref().map(|f| (*i, f)))
        .fold(None::<(u8, &RefreshFailure)>, |best, (i, f)| match best {
            Some((_, b)) if b.time_unix_ms >= f.time_unix_ms => best,
            _ => Some((i, f)),
        })
        .map(|(appliance, f)| FailureReport {
            time_unix_ms: f.time_unix_ms,
            reason: f.reason.clone(),
            appliance,
        });
    let refresh_failed = last_failure
        .as_ref()
        .is_some_and(|f| last_refresh_unix_ms.is_none_or(|refreshed| f.time_unix_ms > refreshed));
    Some(KeyReport {
        id: hex::encode(id),
        label: first.label.clone(),
        threshold: first.threshold,
        parties: first.parties,
        members,
        epoch,
        usable: epoch.is_some() && serving >= usize::from(first.threshold),
        tolerates: serving.saturating_sub(usize::from(first.threshold)),
        holders,
        behind,
        pending_epochs: pending.into_values().collect(),
        retiring_epochs: retiring.into_values().collect(),
        last_refresh_unix_ms,
        next_due_unix_ms,
        last_failure,
        refresh_failed,
        refreshing: seen.iter().any(|(_, k)| k.refresh.running.is_some()),
        degraded,
    })
}

/// Status answers made up for the tests of this crate.
#[cfg(test)]
pub(crate) mod fixtures {
    use ittc_wire::{KeyId, KeyStatus, RefreshStatus, StatusInfo};

    use super::Answer;

    /// Key `id`, 2-of-3, with `active` as its active epoch and nothing else.
    pub(crate) fn key_status(id: &[u8], active: Option<u64>) -> KeyStatus {
        KeyStatus {
            key_id: KeyId::new(id.to_vec()).unwrap(),
            label: "www".into(),
            active_epoch: active,
            pending_epoch: None,
            pending_ready: false,
            retiring_epoch: None,
            threshold: 2,
            parties: 3,
            holders: vec![1, 2, 3],
            refresh: RefreshStatus::default(),
        }
    }

    /// Appliance `index` answering with `keys`.
    pub(crate) fn up(index: u8, keys: Vec<KeyStatus>) -> Answer {
        Answer {
            index,
            address: format!("127.0.0.1:{}", 7400 + u16::from(index)),
            status: Ok(StatusInfo {
                protocol_version: 1,
                software_version: "0.1.0".into(),
                build_variant: "v".into(),
                appliance_index: index,
                cluster_id: [0; 16],
                keys,
                audit_head: [0; 32],
                uptime_secs: 1,
                revoked_certificates: 0,
                clock_unix_ms: 0,
            }),
        }
    }

    /// Appliance `index` not answering.
    pub(crate) fn down(index: u8) -> Answer {
        Answer {
            index,
            address: format!("127.0.0.1:{}", 7400 + u16::from(index)),
            status: Err("connection refused".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{down, key_status, up};
    use super::*;

    /// 2026-12-06 20:31:05 UTC.
    const T: u64 = 1_796_589_065_000;
    const HOUR: u64 = 3_600_000;

    fn key(active: Option<u64>) -> KeyStatus {
        key_status(&[1, 2], active)
    }

    /// The report of answers about one key.
    fn one_key(answers: Vec<Answer>) -> StatusReport {
        let report = report("c".into(), 2, answers);
        assert_eq!(report.keys.len(), 1);
        report
    }

    #[test]
    fn times_are_utc_and_the_same_day_shows_only_the_time() {
        assert_eq!(utc(T), "2026-12-06 20:31:05 UTC");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(u64::MAX), "18446744073709551615 ms after 1970");
        let mut clock = Clock::default();
        assert_eq!(clock.show(T), "2026-12-06 20:31:05 UTC");
        assert_eq!(clock.show(T + HOUR), "21:31:05 UTC");
        assert_eq!(clock.show(T + 4 * HOUR), "2026-12-07 00:31:05 UTC");
    }

    #[test]
    fn a_settled_key_reads_as_before_plus_its_refresh_times() {
        let refreshed = |index: u8, last: u64| {
            let mut k = key(Some(4));
            k.refresh.last_refresh_unix_ms = Some(last);
            if index == 1 {
                k.refresh.next_due_unix_ms = Some(T + HOUR);
            }
            up(index, vec![k])
        };
        let report = one_key(vec![
            refreshed(1, T - 20),
            refreshed(2, T),
            refreshed(3, T - 10),
        ]);
        let k = &report.keys[0];
        assert_eq!(k.epoch, Some(4));
        assert_eq!(k.holders, [1, 2, 3]);
        assert!(k.behind.is_empty() && k.pending_epochs.is_empty());
        assert!(k.usable && k.tolerates == 1);
        assert_eq!(
            k.last_refresh_unix_ms,
            Some(T),
            "the latest any holder reports"
        );
        assert_eq!(k.next_due_unix_ms, Some(T + HOUR));
        assert!(!k.refresh_failed && !k.refreshing);
        assert_eq!(report.exit_code(), 0);
        let text = report.render();
        assert!(
            text.contains(
                "  id 0102 \"www\" 2-of-3 epoch 4: holders [1, 2, 3]: usable, tolerates 1 more \
                 appliance failure(s)\n    refreshed 2026-12-06 20:31:05 UTC, next due \
                 21:31:05 UTC\n"
            ),
            "{text}"
        );
        // Never refreshed and no schedule (refresh off): no extra line at all.
        let report = one_key(vec![up(1, vec![key(Some(1))]), up(2, vec![key(Some(1))])]);
        let k = &report.keys[0];
        assert!(k.refresh_lines().is_empty());
    }

    #[test]
    fn mid_refresh_the_newest_active_epoch_is_current_and_the_rest_are_behind() {
        // Appliance 1 coordinated and committed epoch 5; 2 has it pending and ready; 3 has
        // not stored it; 4 answers but is none of the key's 3 parties.
        let mut coordinator = key(Some(5));
        coordinator.retiring_epoch = Some(4);
        coordinator.refresh.running = Some([7; 16]);
        coordinator.refresh.coordinator = Some(1);
        let mut ready = key(Some(4));
        ready.pending_epoch = Some(5);
        ready.pending_ready = true;
        let report = one_key(vec![
            up(1, vec![coordinator]),
            up(2, vec![ready]),
            up(3, vec![key(Some(4))]),
            up(4, Vec::new()),
        ]);
        let k = &report.keys[0];
        assert_eq!(k.epoch, Some(5));
        assert_eq!(k.holders, [1]);
        let behind: Vec<_> = k
            .behind
            .iter()
            .map(|b| (b.index, b.active_epoch, b.pending_epoch, b.has_key))
            .collect();
        assert_eq!(
            behind,
            [(2, Some(4), Some(5), true), (3, Some(4), None, true)]
        );
        // Epoch 5 answers on 1 (active) and 2 (pending, ready): usable, tolerates 0.
        assert!(k.usable);
        assert_eq!(k.tolerates, 0);
        assert_eq!(k.pending_epochs.len(), 1);
        assert_eq!(
            (k.pending_epochs[0].epoch, &k.pending_epochs[0].appliances),
            (5, &vec![2])
        );
        assert_eq!(k.pending_epochs[0].ready, [2]);
        assert_eq!(k.retiring_epochs.len(), 1);
        assert_eq!(
            (k.retiring_epochs[0].epoch, &k.retiring_epochs[0].appliances),
            (4, &vec![1])
        );
        assert!(k.refreshing);
        assert_eq!(
            k.refresh_lines(),
            [
                "refreshing now",
                "epoch 5 pending on [2] (ready)",
                "epoch 4 still to erase on [1]",
                "behind: appliance 2 on epoch 4 (5 pending), appliance 3 on epoch 4 (catching \
                 up by itself)",
            ]
        );
        // Appliance 2 only has to commit; appliance 3 was left out of the refresh.
        assert!(k.degraded);
        assert_eq!(report.exit_code(), EXIT_DEGRADED);
        let json = serde_json::to_value(k).unwrap();
        assert_eq!(
            json["behind"][0],
            serde_json::json!({
                "index": 2, "reachable": true, "active_epoch": 4, "pending_epoch": 5,
                "has_key": true, "committing": true, "reason": "committing the current epoch"
            })
        );
        assert_eq!(json["behind"][1]["committing"], false);
        assert_eq!(json["degraded"], true);
        assert_eq!(
            json["pending_epochs"],
            serde_json::json!([{"epoch": 5, "appliances": [2], "ready": [2]}])
        );
        assert_eq!(
            json["retiring_epochs"],
            serde_json::json!([{"epoch": 4, "appliances": [1]}])
        );
        assert_eq!(json["refreshing"], true);
    }

    #[test]
    fn an_appliance_without_the_key_is_behind_and_a_partly_ready_epoch_says_where() {
        let mut pending = key(Some(2));
        pending.pending_epoch = Some(3);
        let mut ready = pending.clone();
        ready.pending_ready = true;
        let report = one_key(vec![
            up(1, vec![ready]),
            up(2, vec![pending]),
            up(3, Vec::new()),
        ]);
        let k = &report.keys[0];
        assert_eq!(k.holders, [1, 2]);
        assert_eq!(
            k.refresh_lines(),
            [
                "epoch 3 pending on [1, 2] (ready on [1])",
                "behind: appliance 3 without the key (catching up by itself)",
            ]
        );
        // An import not committed yet: nothing is current, so nothing is behind.
        let mut imported = key(None);
        imported.pending_epoch = Some(1);
        let report = one_key(vec![up(1, vec![imported.clone()]), up(2, vec![imported])]);
        let k = &report.keys[0];
        assert_eq!(k.epoch, None);
        assert!(k.behind.is_empty() && !k.usable);
        assert_eq!(k.refresh_lines(), ["epoch 1 pending on [1, 2]"]);
        assert_eq!(report.exit_code(), EXIT_UNHEALTHY);
    }

    #[test]
    fn a_failure_newer_than_the_last_refresh_fails_status_with_3() {
        let with = |last: Option<u64>, failure: Option<(u64, &str)>| {
            let mut k = key(Some(4));
            k.refresh.last_refresh_unix_ms = last;
            k.refresh.last_failure = failure.map(|(t, r)| RefreshFailure {
                time_unix_ms: t,
                reason: r.into(),
            });
            k
        };
        // Appliance 2's failure is the most recent.
        let report = one_key(vec![
            up(1, vec![with(Some(T - HOUR), Some((T - 60_000, "old")))]),
            up(
                2,
                vec![with(Some(T - HOUR), Some((T, "appliance 3\nunreachable")))],
            ),
            down(3),
        ]);
        let k = &report.keys[0];
        let failure = k.last_failure.as_ref().unwrap();
        assert_eq!((failure.appliance, failure.time_unix_ms), (2, T));
        assert!(k.refresh_failed);
        assert!(k.usable, "a failed refresh leaves the key usable");
        assert_eq!(report.exit_code(), EXIT_REFRESH_FAILED);
        assert_eq!(
            k.refresh_lines(),
            [
                "refreshed 2026-12-06 19:31:05 UTC",
                "last refresh failure 20:31:05 UTC on appliance 2: appliance 3 unreachable",
                "behind: appliance 3 does not answer (connection refused)",
            ]
        );
        // A failure before any refresh counts too.
        let report = one_key(vec![
            up(1, vec![with(None, Some((T, "x")))]),
            up(2, vec![with(None, None)]),
        ]);
        let k = &report.keys[0];
        assert!(k.refresh_failed);
        assert_eq!(report.exit_code(), EXIT_REFRESH_FAILED);
        // Refreshed since: reported, but not a failure.
        let report = one_key(vec![
            up(1, vec![with(Some(T), None)]),
            up(2, vec![with(Some(T - 5), Some((T - 10, "x")))]),
        ]);
        let k = &report.keys[0];
        assert!(!k.refresh_failed);
        assert_eq!(report.exit_code(), 0);
        assert!(k.refresh_lines()[1].ends_with(": x (refreshed since)"));
        // An unusable key wins over a failed refresh.
        let report = one_key(vec![
            up(1, vec![with(None, Some((T, "x")))]),
            down(2),
            down(3),
        ]);
        assert_eq!(report.exit_code(), EXIT_UNHEALTHY);
        // No appliance answers: unhealthy.
        let report = report_of(vec![down(1), down(2)]);
        assert_eq!(report.exit_code(), EXIT_UNHEALTHY);
    }

    fn report_of(answers: Vec<Answer>) -> StatusReport {
        report("c".into(), 2, answers)
    }

    /// Appliance `index` answering, running `variant`.
    fn running(index: u8, variant: &str) -> Answer {
        let mut answer = up(index, Vec::new());
        if let Ok(s) = &mut answer.status {
            s.build_variant = variant.into();
        }
        answer
    }

    #[test]
    fn appliances_that_run_the_same_variant_are_named_in_a_warning() {
        // Three appliances, three variants: no warning.
        let report = report_of(vec![
            running(1, "openssl+aws-lc-rs+jemalloc"),
            running(2, "crypto-bigint+ring+mimalloc"),
            running(3, "gmp+ring+system"),
        ]);
        assert_eq!(report.distinct_variants, 3);
        assert!(report.same_variant.is_empty());
        let text = report.render();
        assert!(
            text.contains("  build variants answering: 3\n\nkeys:\n"),
            "{text}"
        );
        assert!(!text.contains("warning"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["same_variant"], serde_json::json!([]));

        // 1 and 4 share one variant, 2, 3 and 5 another; 6 is down and not counted.
        let report = report_of(vec![
            running(1, "openssl+ring+system"),
            running(2, "crypto-bigint+ring+mimalloc"),
            running(3, "crypto-bigint+ring+mimalloc"),
            running(4, "openssl+ring+system"),
            running(5, "crypto-bigint+ring+mimalloc"),
            down(6),
        ]);
        assert_eq!(report.distinct_variants, 2);
        assert_eq!(
            report.same_variant,
            [
                SharedVariant {
                    variant: "openssl+ring+system".into(),
                    appliances: vec![1, 4],
                },
                SharedVariant {
                    variant: "crypto-bigint+ring+mimalloc".into(),
                    appliances: vec![2, 3, 5],
                },
            ]
        );
        let text = report.render();
        assert!(
            text.contains(
                "  build variants answering: 2\n  warning: appliances 1 and 4 run the same \
                 build variant openssl+ring+system: one exploit of it opens both; install a \
                 different variant on each (docs/operations.md)\n  warning: appliances 2, 3 \
                 and 5 run the same build variant crypto-bigint+ring+mimalloc: one exploit of \
                 it opens all of them;"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["same_variant"],
            serde_json::json!([
                {"variant": "openssl+ring+system", "appliances": [1, 4]},
                {"variant": "crypto-bigint+ring+mimalloc", "appliances": [2, 3, 5]},
            ])
        );
        // A warning does not change the exit code: diversity is the operator's choice.
        assert_eq!(report.exit_code(), 0);
    }
}
