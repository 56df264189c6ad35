//! Pairwise zero-sum masks among a set of holders: each pair `i < j` shares a random value
//! `m_ij` (i draws it and sends it to j); `i` adds it to what it publishes, `j` subtracts
//! it. Every holder's total `M_i = Σ_{j>i} m_ij − Σ_{j<i} m_ji` is then hidden from
//! anyone missing one of its masks, and `Σ_i M_i = 0`, so the masked values still add up
//! to what the unmasked ones do. Used to add up secrets held by several holders without
//! any of them showing its own (share recovery, the start of a refresh from shares).

use num_bigint::BigUint;
use rand::CryptoRng;

use super::Signed;
use crate::{Error, SecretInt};

/// One holder's side of the masks of one set.
pub(crate) struct Masks {
    me: usize,
    lower: Vec<usize>,
    bound: BigUint,
    precision: u32,
    total: Signed,
}

impl Masks {
    /// Draws `me`'s masks for the members of `set` above it, uniform in `[0, bound)`;
    /// returns them to send (position by member) with the state that takes the others.
    pub(crate) fn draw<R: CryptoRng + ?Sized>(
        me: usize,
        set: &[usize],
        bound: &BigUint,
        precision: u32,
        rng: &mut R,
    ) -> Result<(Self, Vec<(usize, SecretInt)>), Error> {
        let mut total = Signed::zero(precision);
        let mut out = Vec::new();
        for &j in set.iter().filter(|&&j| j > me) {
            let m = Signed::random_below(bound, precision, rng)
                .ok_or(Error::OutOfRange("mask bound"))?;
            total = total.add(&m);
            out.push((j, m.to_secret()));
        }
        let lower = set.iter().copied().filter(|&j| j < me).collect();
        Ok((
            Self {
                me,
                lower,
                bound: bound.clone(),
                precision,
                total,
            },
            out,
        ))
    }

    /// Takes the masks of the members below `me` (one from each) and returns `M_me`.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshMessage`] naming a member whose mask is missing, of the wrong
    /// length or out of range.
    pub(crate) fn total(self, received: &[(usize, SecretInt)]) -> Result<Signed, Error> {
        let mut total = self.total;
        for &from in &self.lower {
            let bad = |reason| Error::RefreshMessage { from, reason };
            let (_, bytes) = received
                .iter()
                .find(|(f, _)| *f == from)
                .ok_or(bad("no mask from this holder"))?;
            let m = Signed::from_bytes(bytes.as_be_bytes(), self.precision)
                .ok_or(bad("value of the wrong length"))?;
            if !m.in_range(&self.bound) {
                return Err(bad("mask out of range"));
            }
            total = total.sub(&m);
        }
        let _ = self.me;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use num_bigint::BigInt;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn masks_add_up_to_zero_and_check_what_arrives() {
        let mut rng = StdRng::seed_from_u64(1);
        let set = [1, 3, 4, 7];
        let bound = BigUint::from(1u8) << 100u8;
        let mut states = Vec::new();
        let mut sent = Vec::new();
        for &me in &set {
            let (state, out) = Masks::draw(me, &set, &bound, 192, &mut rng).unwrap();
            states.push(state);
            sent.extend(out.into_iter().map(|(to, m)| (me, to, m)));
        }
        let mut sum = BigInt::from(0);
        for (state, &me) in states.into_iter().zip(&set) {
            let received: Vec<(usize, SecretInt)> = sent
                .iter()
                .filter(|(_, to, _)| *to == me)
                .map(|(from, _, m)| (*from, m.clone()))
                .collect();
            sum += state.total(&received).unwrap().open_vartime();
        }
        assert_eq!(sum, BigInt::from(0));

        let (state, _) = Masks::draw(4, &set, &bound, 192, &mut rng).unwrap();
        assert!(matches!(
            state.total(&[]),
            Err(Error::RefreshMessage { from: 1, .. })
        ));
        let (state, _) = Masks::draw(3, &set, &bound, 192, &mut rng).unwrap();
        let too_big = Signed::public(&bound, 192).unwrap().to_secret();
        assert!(matches!(
            state.total(&[(1, too_big)]),
            Err(Error::RefreshMessage {
                from: 1,
                reason: "mask out of range"
            })
        ));
    }
}
