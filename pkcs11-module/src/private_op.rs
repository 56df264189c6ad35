//! One private operation across the cluster: blind, ask k appliances at once (another one
//! too when one is slow to answer: [`ApplianceClient::gather`]), combine robustly (asking
//! the others if a partial is missing or wrong), check, unblind. Any appliance whose
//! partial takes part in no verifying set is named in the log.

use ittc_threshold::{Blinding, Error as ThresholdError, Partial};
use ittc_wire::{Request, Response};
use num_bigint::BigUint;

use crate::client::ApplianceClient;
use crate::error::{Error, Result};
use crate::objects::KeyEntry;

/// `m^d mod N` for a cluster key; `m` must be below `N`.
///
/// # Errors
///
/// [`Error::StaleEpoch`] when fewer than k appliances give correct partials and at least
/// one said the epoch is not (any longer) one it answers: the caller reads the key again.
/// [`Error::Device`] when fewer than k appliances give correct partials otherwise.
pub fn raw_private(client: &ApplianceClient, key: &KeyEntry, m: &BigUint) -> Result<BigUint> {
    let mut rng = crate::rng()?;
    let (blinding, blinded) = Blinding::new(&key.public, m, &mut rng)
        .map_err(|err| Error::General(format!("blinding: {err}")))?;
    let input = key.public.integer_to_be(&blinded);
    let k = key.params.threshold();
    let mut available = client.available();
    available.retain(|i| key.holders.contains(i));
    if available.len() < k {
        tracing::error!(
            available = available.len(),
            needed = k,
            "too few appliances reachable for a private operation"
        );
        return Err(Error::Device(format!(
            "{} of the {k} appliances needed are reachable",
            available.len()
        )));
    }
    let request = Request::Partial {
        key_id: key.key_id.clone(),
        epoch: key.epoch,
        input,
    };
    let is_partial = |index: u8, answer: &Response| matches!(answer, Response::PartialResult(p) if p.index == index && p.epoch == key.epoch);
    let (answers, asked) = client.gather(&available, k, &request, is_partial);
    let rest: Vec<u8> = available
        .iter()
        .copied()
        .filter(|i| !asked.contains(i))
        .collect();
    let mut stale = false;
    let mut partials = collect(answers, key, &mut stale);
    let mut asked_rest = false;
    loop {
        if partials.len() >= k {
            match key
                .combiner
                .combine_robust_blinded(&blinded, &partials, blinding.clone())
            {
                Ok(outcome) => {
                    for index in &outcome.faulty {
                        tracing::error!(
                            appliance = index,
                            key = %key.key_id,
                            "appliance returned a wrong partial result"
                        );
                    }
                    return Ok(outcome.result);
                }
                Err(ThresholdError::NotEnoughGoodPartials { .. }) => {}
                Err(err) => return Err(Error::General(format!("combine: {err}"))),
            }
        }
        if asked_rest || rest.is_empty() {
            if stale {
                tracing::info!(
                    key = %key.key_id,
                    epoch = key.epoch,
                    "the key was refreshed: reading it again"
                );
                return Err(Error::StaleEpoch);
            }
            tracing::error!(
                received = partials.len(),
                needed = k,
                key = %key.key_id,
                "not enough correct partial results"
            );
            return Err(Error::Device("not enough correct partial results".into()));
        }
        asked_rest = true;
        partials.extend(collect(client.fan_out(&rest, &request), key, &mut stale));
    }
}

fn collect(
    answers: Vec<(
        u8,
        std::result::Result<Response, crate::client::ExchangeError>,
    )>,
    key: &KeyEntry,
    stale: &mut bool,
) -> Vec<Partial> {
    answers
        .into_iter()
        .filter_map(|(index, answer)| match answer {
            Ok(Response::Error(err)) if err.code == ittc_wire::ErrorCode::WrongEpoch => {
                tracing::debug!(appliance = index, epoch = key.epoch, "epoch not answered");
                *stale = true;
                None
            }
            Ok(Response::PartialResult(p)) if p.index == index && p.epoch == key.epoch => {
                Some(Partial {
                    index: usize::from(index),
                    value: BigUint::from_bytes_be(&p.value),
                })
            }
            Ok(Response::Error(err)) => {
                tracing::warn!(appliance = index, %err, "partial refused");
                None
            }
            Ok(other) => {
                tracing::error!(
                    appliance = index,
                    kind = other.kind(),
                    "appliance answered a partial request with something else"
                );
                None
            }
            Err(err) => {
                tracing::warn!(appliance = index, %err, "no partial");
                None
            }
        })
        .collect()
}
