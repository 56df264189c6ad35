//! Refused connections and frames, logged once per kind and period: a hostile peer that
//! opens thousands of connections, or sends garbage in a loop, costs the log a line every
//! [`PERIOD`] per kind, not one per connection or frame. Every refusal is counted for the
//! metrics, logged or not.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

/// How long further refusals of a kind are only counted after one was logged.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Why a connection or frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `accept` failed (out of file descriptors, …).
    AcceptFailed,
    /// `max_connections` reached.
    TooManyConnections,
    /// A newer connection took the handshake slot (`max_handshakes` reached).
    HandshakeEvicted,
    /// The handshake did not finish within `handshake_timeout_ms`.
    HandshakeTimeout,
    /// The TLS handshake failed (no or a foreign certificate, not TLS at all, …).
    HandshakeFailed,
    /// The certificate names no ittc role, or has no readable serial.
    NoRole,
    /// A frame longer than `max_frame`.
    FrameTooLarge,
    /// A frame header that is not one.
    BadFrameHeader,
    /// A frame body that does not decode as a request.
    Undecodable,
}

impl Refusal {
    /// Every kind.
    pub const ALL: [Refusal; 9] = [
        Refusal::AcceptFailed,
        Refusal::TooManyConnections,
        Refusal::HandshakeEvicted,
        Refusal::HandshakeTimeout,
        Refusal::HandshakeFailed,
        Refusal::NoRole,
        Refusal::FrameTooLarge,
        Refusal::BadFrameHeader,
        Refusal::Undecodable,
    ];

    /// What the log says.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::AcceptFailed => "accept failed",
            Refusal::TooManyConnections => "connection refused: too many connections",
            Refusal::HandshakeEvicted => "connection closed in its handshake for a newer one",
            Refusal::HandshakeTimeout => "TLS handshake timed out",
            Refusal::HandshakeFailed => "TLS handshake refused",
            Refusal::NoRole => "certificate names no ittc role: refused",
            Refusal::FrameTooLarge => "frame over the configured limit",
            Refusal::BadFrameHeader => "bad frame header",
            Refusal::Undecodable => "undecodable request",
        }
    }

    /// Its name in the metrics (`reason` of `ittc_connections_refused_total`).
    pub fn label(self) -> &'static str {
        match self {
            Refusal::AcceptFailed => "accept_failed",
            Refusal::TooManyConnections => "too_many_connections",
            Refusal::HandshakeEvicted => "handshake_evicted",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::NoRole => "no_role",
            Refusal::FrameTooLarge => "frame_too_large",
            Refusal::BadFrameHeader => "bad_frame_header",
            Refusal::Undecodable => "undecodable",
        }
    }

    fn slot(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Per kind: when one was last logged, and how many were only counted since; and how many
/// there were since the start.
#[derive(Default)]
pub struct Refusals {
    kinds: Mutex<[Option<(Instant, u64)>; Refusal::ALL.len()]>,
    totals: [AtomicU64; Refusal::ALL.len()],
}

impl Refusals {
    /// Notes a refusal: logs it (with `detail`, which names the peer and never holds a
    /// secret) unless one of its kind was logged less than [`PERIOD`] ago; then it is only
    /// counted, and the count goes into the next line logged for that kind.
    pub fn note(&self, kind: Refusal, detail: &dyn std::fmt::Display) {
        self.note_at(kind, detail, Instant::now());
    }

    /// [`Refusals::note`] at `now`: `None` if only counted, else how many were counted
    /// since the last line of this kind.
    fn note_at(&self, kind: Refusal, detail: &dyn std::fmt::Display, now: Instant) -> Option<u64> {
        self.totals[kind.slot()].fetch_add(1, Ordering::Relaxed);
        let suppressed = {
            let mut kinds = self
                .kinds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = &mut kinds[kind.slot()];
            match entry {
                Some((logged, count)) if now.duration_since(*logged) < PERIOD => {
                    *count += 1;
                    return None;
                }
                _ => {
                    let suppressed = entry.map_or(0, |(_, count)| count);
                    *entry = Some((now, 0));
                    suppressed
                }
            }
        };
        if suppressed > 0 {
            warn!(
                refusals = suppressed,
                kind = kind.as_str(),
                "refusals since the last one logged"
            );
        }
        warn!("{}: {detail}", kind.as_str());
        Some(suppressed)
    }
}

impl Refusals {
    /// How many refusals of `kind` there were since the start.
    pub fn total(&self, kind: Refusal) -> u64 {
        self.totals[kind.slot()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_and_period() {
        let refusals = Refusals::default();
        let start = Instant::now();
        let peer = "127.0.0.1:9";
        assert_eq!(
            refusals.note_at(Refusal::HandshakeTimeout, &peer, start),
            Some(0)
        );
        for i in 0..1000 {
            let at = start + Duration::from_millis(i);
            assert_eq!(refusals.note_at(Refusal::HandshakeTimeout, &peer, at), None);
        }
        // Another kind has its own period.
        assert_eq!(
            refusals.note_at(Refusal::Undecodable, &peer, start),
            Some(0)
        );
        // After the period: logged again, with the count of those in between.
        let later = start + PERIOD;
        assert_eq!(
            refusals.note_at(Refusal::HandshakeTimeout, &peer, later),
            Some(1000)
        );
        assert_eq!(
            refusals.note_at(Refusal::HandshakeTimeout, &peer, later),
            None
        );
        // Every one is counted, logged or not.
        assert_eq!(refusals.total(Refusal::HandshakeTimeout), 1003);
        assert_eq!(refusals.total(Refusal::Undecodable), 1);
        assert_eq!(refusals.total(Refusal::NoRole), 0);
    }

    #[test]
    fn every_kind_has_its_own_slot() {
        let slots: std::collections::HashSet<usize> =
            Refusal::ALL.iter().map(|r| r.slot()).collect();
        assert_eq!(slots.len(), Refusal::ALL.len());
    }
}
