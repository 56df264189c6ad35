//! The audit chain, checked by the running appliance (`AuditVerify`): the store is locked
//! while the appliance runs, so `ittc-appliance audit verify` asks it.

use ittc_wire::limits::MAX_ERROR_MESSAGE_LEN;
use ittc_wire::{AuditBreak, AuditVerification, Response};

use crate::error::ApplianceError;
use crate::state::State;
use crate::storage::AuditReport;

/// Walks the chain through the export files and the store, and reports what it found.
pub fn handle_verify(state: &State) -> Result<Response, ApplianceError> {
    let report = state.storage.audit_verify()?;
    let verification = match report {
        AuditReport::Intact {
            entries,
            head,
            exported,
            files,
        } => AuditVerification {
            entries,
            head: head.hash,
            exported,
            export_files: files,
            broken: None,
        },
        AuditReport::Broken { seq, reason } => {
            let head = state.storage.audit_head()?;
            AuditVerification {
                entries: head.seq,
                head: head.hash,
                exported: 0,
                export_files: 0,
                broken: Some(AuditBreak {
                    seq,
                    reason: truncate(reason, MAX_ERROR_MESSAGE_LEN),
                }),
            }
        }
    };
    Ok(Response::AuditVerified(verification))
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("abc".into(), 5), "abc");
        assert_eq!(truncate("abcdef".into(), 4), "abcd");
        assert_eq!(truncate("aé".into(), 2), "a");
    }
}
