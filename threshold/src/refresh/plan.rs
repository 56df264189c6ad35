//! Who does what in one refresh: the old and new sharings, where the starting values come
//! from, who receives and deals. Public, and the same at every participant.

use crate::{Error, SharingParams};

/// Where the starting values of a refresh come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The additive shares of these holders, which sum to the key's secret: every one of
    /// them takes part.
    Additive {
        /// The holders with additive shares, ascending.
        holders: Vec<usize>,
    },
    /// The shares of these `k` holders of the old sharing: `λ_i·s_i`, masked pairwise and
    /// divided by `Δ²`, with the rounding error found from their public remainders (when a
    /// holder of an additive share is away, or after a share was rebuilt without one).
    Shares {
        /// `k` holders of the old sharing, ascending.
        set: Vec<usize>,
    },
}

/// One refresh: from the old sharing to the new one ([`super`] has the protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The sharing of the epoch being left.
    pub old: SharingParams,
    /// The sharing of the new epoch.
    pub new: SharingParams,
    /// Where the starting values come from (the *senders* of round 1).
    pub source: Source,
    /// Every holder of the new sharing, ascending: shares are dealt for each of them.
    pub new_holders: Vec<usize>,
    /// The new holders that take part now, ascending: they receive the pieces and deal;
    /// the others get their share later by recovery, and no additive share.
    pub receivers: Vec<usize>,
    /// The receiver that absorbs the remainders of the re-split.
    pub absorber: usize,
}

impl Plan {
    /// A refresh of a sharing by every holder, from their additive shares.
    pub fn all(params: SharingParams, holders: Vec<usize>, absorber: usize) -> Self {
        Self {
            old: params,
            new: params,
            source: Source::Additive {
                holders: holders.clone(),
            },
            new_holders: holders.clone(),
            receivers: holders,
            absorber,
        }
    }

    /// The holders whose values round 1 splits.
    pub fn senders(&self) -> &[usize] {
        match &self.source {
            Source::Additive { holders } => holders,
            Source::Shares { set } => set,
        }
    }

    /// Everyone who takes part: the senders and the receivers, ascending.
    pub fn participants(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self
            .senders()
            .iter()
            .chain(&self.receivers)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Whether the refresh starts from shares (its two extra rounds: masks, residues).
    pub fn from_shares(&self) -> bool {
        matches!(self.source, Source::Shares { .. })
    }

    /// Checks the plan: every set ascending, without repeats and within its sharing's
    /// indices; `k` senders from shares; at least `k` new holders taking part; the
    /// receivers among the new holders; the absorber among the receivers.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] naming what does not fit.
    pub fn validate(&self) -> Result<(), Error> {
        let fits = |set: &[usize], n: usize| {
            set.windows(2).all(|w| w[0] < w[1]) && set.iter().all(|&i| (1..=n).contains(&i))
        };
        let check = |ok: bool, what: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(Error::OutOfRange(what))
            }
        };
        let (old_n, new_n) = (self.old.parties(), self.new.parties());
        match &self.source {
            Source::Additive { holders } => {
                check(
                    fits(holders, old_n) && !holders.is_empty(),
                    "holders of the additive shares",
                )?;
            }
            Source::Shares { set } => {
                check(
                    fits(set, old_n) && set.len() == self.old.threshold(),
                    "shares to start from",
                )?;
            }
        }
        check(
            fits(&self.new_holders, new_n) && self.new_holders.len() >= self.new.threshold(),
            "new holders",
        )?;
        check(
            fits(&self.receivers, new_n)
                && self.receivers.len() >= self.new.threshold()
                && self.receivers.iter().all(|r| self.new_holders.contains(r)),
            "new holders taking part",
        )?;
        check(self.receivers.contains(&self.absorber), "absorber")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plans_are_checked() {
        let p = SharingParams::new(2, 3).unwrap();
        let plan = Plan::all(p, vec![1, 2, 3], 1);
        assert!(plan.validate().is_ok());
        assert_eq!(plan.participants(), vec![1, 2, 3]);
        let away = Plan {
            source: Source::Shares { set: vec![1, 2] },
            receivers: vec![1, 2],
            ..plan.clone()
        };
        assert!(away.validate().is_ok());
        assert!(away.from_shares());
        for bad in [
            Plan {
                absorber: 3,
                ..away.clone()
            },
            Plan {
                source: Source::Shares { set: vec![1] },
                ..away.clone()
            },
            Plan {
                receivers: vec![1],
                ..away.clone()
            },
            Plan {
                receivers: vec![2, 1],
                ..away.clone()
            },
            Plan {
                new_holders: vec![1, 2, 4],
                ..plan.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
