//! Audit retention: every `audit.export_interval_s`, the entries past the retention move
//! from the store to the export files ([`crate::storage::Storage::audit_export`]).
//!
//! The task runs on the runtime and hands each export to tokio's blocking pool: an export
//! writes and syncs files, and holds no lock that requests wait for (appends go on while
//! it runs). The first export runs at start, so that one a crash interrupted is finished
//! at once. A failure is logged when it first occurs or changes, and when it clears;
//! entries then stay in the store until the next export succeeds.

use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

/// Starts the export task, unless `audit.export_interval_s` is 0.
pub fn start(state: Arc<State>) {
    let interval = state.config.audit.export_interval();
    if interval.is_zero() {
        tracing::info!("audit export off (audit.export_interval_s = 0)");
        return;
    }
    tokio::spawn(run(state, interval));
}

async fn run(state: Arc<State>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let policy = state.config.audit.policy();
    let mut last_error: Option<String> = None;
    loop {
        ticker.tick().await;
        let storage = state.storage.clone();
        let now = ittc_wire::now_unix_ms();
        let result = tokio::task::spawn_blocking(move || storage.audit_export(&policy, now))
            .await
            .map_err(|e| e.to_string())
            .and_then(|exported| exported.map_err(|e| e.to_string()));
        match result {
            Ok(outcome) => {
                if last_error.take().is_some() {
                    tracing::info!("audit export works again");
                }
                if outcome.moved > 0 {
                    tracing::debug!(
                        moved = outcome.moved,
                        database_starts_at = outcome.base.seq,
                        "audit entries exported"
                    );
                }
            }
            Err(error) => {
                if last_error.as_deref() != Some(error.as_str()) {
                    tracing::error!(%error, "audit export failed: the entries stay in the store");
                    last_error = Some(error);
                }
            }
        }
    }
}
