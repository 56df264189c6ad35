//! Certificate objects: `ittc cert add`, and the certificate `ittc key import --cert` and
//! the demo store next to a key.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ittc_wire::{ObjectId, ObjectVersion, Request, TokenObject};
use rand::RngExt as _;

use crate::cluster::{Cluster, expect_ok, on_all};
use crate::error::CliError;

/// Reads a certificate file, PEM or DER, and returns its DER.
pub fn read_certificate(path: &Path) -> Result<Vec<u8>, CliError> {
    let data = std::fs::read(path).map_err(|e| CliError::file(path, e))?;
    if data.starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(&data).map_err(|e| {
            CliError::Usage(format!("{}: not a PEM certificate: {e}", path.display()))
        })?;
        Ok(pem.contents)
    } else {
        Ok(data)
    }
}

/// The certificate object for `der`, linked to the key `id`. The label defaults to the
/// subject's common name.
pub fn certificate_object(
    der: &[u8],
    id: &[u8],
    label: Option<&str>,
) -> Result<TokenObject, CliError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CliError::Usage(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(CliError::Usage(
            "trailing bytes after the certificate".into(),
        ));
    }
    let tbs = &cert.tbs_certificate;
    let common_name = tbs
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("certificate")
        .to_owned();
    let label = label.map_or(common_name, str::to_owned);
    Ok(TokenObject::x509_certificate(
        ObjectId::derived("certificate", der),
        id,
        &label,
        der,
        tbs.subject.as_raw(),
        tbs.issuer.as_raw(),
        &der_integer(tbs.raw_serial()),
    ))
}

/// The DER encoding of a non-negative INTEGER with these content bytes (CKA_SERIAL_NUMBER
/// holds the whole DER element).
fn der_integer(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x02];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A version for an object written now: by the clock, and newer than every version this
/// process made before (an import's rollback deletes what it wrote a moment ago, maybe in
/// the same millisecond).
pub(crate) fn object_version() -> ObjectVersion {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = ObjectVersion::next(None, rand::rng().random());
    let mut last = LAST.load(Ordering::SeqCst);
    loop {
        let counter = now.counter.max(last.saturating_add(1));
        match LAST.compare_exchange(last, counter, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return ObjectVersion { counter, ..now },
            Err(newer) => last = newer,
        }
    }
}

/// Stores `object` on every appliance (all must be reachable), as a new version.
pub fn store_everywhere(cluster: &Cluster, object: &TokenObject) -> Result<(), CliError> {
    let mut connections = cluster.connect_all()?;
    let request = Request::PutObject {
        object: object.clone(),
        version: object_version(),
    };
    on_all(&mut connections, |i, c| expect_ok(i, c, &request)).map_err(|details| {
        CliError::Several {
            summary: "the object is not stored on every appliance; run the command again".into(),
            details,
        }
    })
}

/// Issues a new certificate and key for `role` with the CA in the cluster folder `dir`,
/// keeping the old files as `*.old`; returns the file stem (`appliance-2`, `client`,
/// `admin`).
pub fn renew(dir: &Path, role: ittc_wire::identity::Role) -> Result<String, CliError> {
    use ittc_wire::identity::Role;
    let name = match role {
        Role::Appliance(i) => format!("appliance-{i}"),
        Role::Client => "client".to_owned(),
        Role::Admin => "admin".to_owned(),
    };
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|e| CliError::file(path, e))
    };
    let ca = crate::pki::ClusterCa::from_pem(&read("ca.pem")?, &read("ca.key")?)?;
    if !dir.join(format!("{name}.pem")).exists() {
        return Err(CliError::Usage(format!(
            "no {name}.pem in {}: not a member of this cluster",
            dir.display()
        )));
    }
    let issued = ca.issue(role, &name)?;
    for ext in ["pem", "key"] {
        let path = dir.join(format!("{name}.{ext}"));
        std::fs::rename(&path, dir.join(format!("{name}.{ext}.old")))
            .map_err(|e| CliError::file(&path, e))?;
    }
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, &issued.cert_pem).map_err(|e| CliError::file(&pem, e))?;
    crate::init::write_private(&dir.join(format!("{name}.key")), &issued.key_pem)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_numbers_are_whole_der_integers() {
        assert_eq!(der_integer(&[0x01]), vec![0x02, 0x01, 0x01]);
        let long = vec![0x7f; 200];
        let der = der_integer(&long);
        assert_eq!(&der[..3], &[0x02, 0x81, 200]);
        assert_eq!(der.len(), 203);
    }
}
