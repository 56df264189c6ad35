//! Group commit for the audit entries of partial operations: one thread of the store's
//! own flushes the database for every entry asked for, and the entries written while a
//! flush runs share the next one.
//!
//! sled's `flush_async` hands the flush to sled's I/O threads, and the flush hands the
//! write of the log buffer to them again; each hand-off wakes every idle I/O thread in
//! turn. From this thread, `flush` costs one hand-off, and one flush covers every entry
//! written before it started.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use super::StorageError;
use super::error::SledResultExt;

/// The thread and what it shares with the callers. Stopped and joined when dropped.
pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// The thread waits here for a request.
    asked: Condvar,
    /// Callers wait here for their flush.
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// Tickets handed out: the n-th request to flush gets ticket n.
    asked: u64,
    /// Every ticket up to this one is covered by a finished flush.
    flushed: u64,
    /// A failed flush: sled keeps failing after an I/O error, so every caller still
    /// waiting, and every later one, gets it.
    failed: Option<sled::Error>,
    stop: bool,
    /// Flushes run so far, for the tests of the grouping.
    #[cfg(test)]
    flushes: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Flusher {
    /// Starts the thread, which flushes `db`.
    pub(super) fn start(db: sled::Db) -> Result<Self, StorageError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            asked: Condvar::new(),
            done: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ittc-audit-flush".into())
            .spawn(move || run(&db, &theirs))
            .map_err(StorageError::Io)?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a flush of everything written so far; [`Ticket::wait`] returns once one
    /// has finished.
    pub(super) fn ask(&self) -> Ticket {
        let mut state = self.shared.lock();
        state.asked += 1;
        let number = state.asked;
        drop(state);
        self.shared.asked.notify_one();
        Ticket {
            shared: Arc::clone(&self.shared),
            number,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.asked.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: takes every ticket asked so far, flushes once for all of them, repeats.
/// Finishes the tickets asked before it is stopped.
fn run(db: &sled::Db, shared: &Shared) {
    let mut state = shared.lock();
    loop {
        while state.asked == state.flushed && !state.stop {
            state = shared
                .asked
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.asked == state.flushed {
            return;
        }
        // Every entry of a ticket up to `through` was written before its ticket was
        // asked, so before this flush starts.
        let through = state.asked;
        drop(state);
        // A panic in sled must not leave the callers waiting for good.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.flush()));
        state = shared.lock();
        state.flushed = through;
        #[cfg(test)]
        {
            state.flushes += 1;
        }
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                state.failed.get_or_insert(e);
            }
            Err(_) => {
                state
                    .failed
                    .get_or_insert_with(|| sled::Error::ReportableBug("the flush panicked".into()));
            }
        }
        shared.done.notify_all();
    }
}

/// One caller's flush, asked with [`Flusher::ask`].
pub(super) struct Ticket {
    shared: Arc<Shared>,
    number: u64,
}

impl Ticket {
    /// Blocks until a flush that started after this ticket was asked has finished.
    pub(super) fn wait(self) -> Result<(), StorageError> {
        let mut state = self.shared.lock();
        while state.flushed < self.number && state.failed.is_none() {
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match &state.failed {
            Some(e) => Err(e.clone()).db(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    #[test]
    fn tickets_asked_while_a_flush_runs_share_the_next_one() {
        let db = db();
        let flusher = Flusher::start(db.clone()).unwrap();
        let tickets: Vec<Ticket> = (0..200_u32)
            .map(|i| {
                db.insert(i.to_be_bytes(), vec![1_u8; 64]).unwrap();
                flusher.ask()
            })
            .collect();
        for ticket in tickets {
            ticket.wait().unwrap();
        }
        let state = flusher.shared.lock();
        assert_eq!(state.flushed, 200);
        // Asking takes microseconds and a flush syncs a file: most tickets wait together.
        assert!(
            state.flushes < 100,
            "{} flushes for 200 tickets",
            state.flushes
        );
    }

    #[test]
    fn every_waiter_of_many_threads_returns() {
        let flusher = Flusher::start(db()).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        flusher.ask().wait().unwrap();
                    }
                });
            }
        });
        assert_eq!(flusher.shared.lock().flushed, 400);
    }

    #[test]
    fn a_ticket_asked_before_the_stop_is_flushed() {
        let flusher = Flusher::start(db()).unwrap();
        let ticket = flusher.ask();
        drop(flusher);
        ticket.wait().unwrap();
    }
}
