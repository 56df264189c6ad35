//! Signing through the appliances as a PKCS#11 host does (client certificate, user PIN,
//! blinded partials, robust combine, verification), for the demo's check. The PKCS#11
//! module does the same for applications.

use ittc_threshold::padding::{HashAlg, pkcs1v15_sign, pkcs1v15_verify};
use ittc_threshold::{Blinding, Combiner, Partial, RsaPublicKey, SharingParams};
use ittc_wire::{KeyId, Request, Response, SecretBytes, UserKind};
use num_bigint::BigUint;

use crate::cluster::Cluster;
use crate::error::CliError;

/// A SHA-256 PKCS#1 v1.5 signature of `message` by key `key_id` at `epoch`, made by the
/// first k appliances that log in and answer, and verified with the public key.
pub fn sign_sha256(
    cluster: &Cluster,
    key_id: &KeyId,
    epoch: u64,
    public: &RsaPublicKey,
    pin: &[u8],
    message: &[u8],
) -> Result<Vec<u8>, CliError> {
    let k = usize::from(cluster.config.threshold);
    let params = SharingParams::new(k, cluster.parties())?;
    let digest = HashAlg::Sha256.digest(message);
    let em = pkcs1v15_sign(HashAlg::Sha256, &digest, public.size())?;
    let (blinding, blinded) =
        Blinding::new(public, &BigUint::from_bytes_be(&em), &mut rand::rng())?;
    let identity = cluster
        .config
        .identity()
        .map_err(|e| CliError::Cluster(format!("client certificate: {e}")))?;
    let tls = identity
        .client_config()
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    let request = Request::Partial {
        key_id: key_id.clone(),
        epoch,
        input: public.integer_to_be(&blinded),
    };
    let answers = cluster.in_parallel(cluster.indices(), |index| -> Result<Partial, CliError> {
        let entry = cluster
            .config
            .appliance(index)
            .ok_or_else(|| CliError::appliance(index, "not configured"))?;
        let address = entry.resolve().map_err(|e| CliError::appliance(index, e))?;
        let mut c = ittc_wire::Connection::connect(
            address,
            index,
            tls.clone(),
            cluster.config.timeouts.timeouts(),
            "ittc demo",
        )
        .map_err(|e| CliError::appliance(index, e))?;
        let login = Request::Login {
            user: UserKind::User,
            pin: SecretBytes::new(pin.to_vec()),
        };
        match c.request(&login) {
            Ok(Response::Ok) => {}
            Ok(Response::Error(e)) => {
                return Err(CliError::appliance(
                    index,
                    format!("login: {}: {}", e.code, e.message),
                ));
            }
            Ok(other) => return Err(CliError::appliance(index, format!("login: {other:?}"))),
            Err(e) => return Err(CliError::appliance(index, e)),
        }
        match c.request(&request) {
            Ok(Response::PartialResult(p)) => Ok(Partial {
                index: usize::from(p.index),
                value: BigUint::from_bytes_be(&p.value),
            }),
            Ok(Response::Error(e)) => Err(CliError::appliance(
                index,
                format!("{}: {}", e.code, e.message),
            )),
            Ok(other) => Err(CliError::appliance(index, format!("{other:?}"))),
            Err(e) => Err(CliError::appliance(index, e)),
        }
    });
    let mut partials = Vec::new();
    let mut failures = Vec::new();
    for (_, answer) in answers {
        match answer {
            Ok(p) => partials.push(p),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if partials.len() < k {
        return Err(CliError::Several {
            summary: format!("fewer than {k} appliances answered"),
            details: failures,
        });
    }
    let outcome = Combiner::new(public, &params)?.combine_robust(&blinded, &partials)?;
    let signature = public.integer_to_be(&blinding.unblind(public, &outcome.result)?);
    let check = public.integer_from_be(&signature, "signature")?;
    pkcs1v15_verify(
        HashAlg::Sha256,
        &digest,
        &public.integer_to_be(&public.raw_public_vartime(&check)?),
    )?;
    Ok(signature)
}
