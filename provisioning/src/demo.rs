//! `ittc demo`: a local 2-of-3 cluster on 127.0.0.1 with one RSA-2048 key, a certificate
//! for it, a user PIN, and a signature made through the appliances and verified — then the
//! commands to try next. The appliances keep running in the background; `--stop` stops
//! them; running the demo again reuses a running cluster or restarts a stopped one with the
//! same key.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ittc_threshold::RsaPrivateKey;
use ittc_wire::UserKind;
use rsa::pkcs8::EncodePrivateKey as _;
use zeroize::Zeroizing;

use crate::cluster::Cluster;
use crate::error::CliError;
use crate::init::{InitOptions, init, write_private};
use crate::process::{appliance_program, spawn_appliance};

/// The demo key's id (`CKA_ID`) and label.
pub const KEY_ID: &[u8] = &[0x01];
/// The demo key's label.
pub const KEY_LABEL: &str = "ittc demo key";
const APPLIANCES: u8 = 3;
const THRESHOLD: u8 = 2;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What the demo reports back.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The cluster folder (absolute).
    pub dir: PathBuf,
    /// The signature made, verified.
    pub signature: Vec<u8>,
    /// The file signed.
    pub message: PathBuf,
}

/// Runs the demo in `dir` with `pin` (used when the demo is created).
pub fn run(dir: &Path, pin: &[u8], progress: &dyn Fn(&str)) -> Result<DemoOutcome, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::file(dir, e))?;
    let dir = dir.canonicalize().map_err(|e| CliError::file(dir, e))?;
    let fresh = !dir.join(ittc_wire::cluster::FILE_NAME).exists();
    if fresh {
        progress(
            "creating a 2-of-3 cluster on 127.0.0.1 (CA, certificates, sealing keys, configs)",
        );
        let hosts = free_ports(APPLIANCES)?
            .into_iter()
            .zip(1..)
            .map(|(port, index)| (index, format!("127.0.0.1:{port}")))
            .collect();
        init(&InitOptions {
            appliances: APPLIANCES,
            threshold: THRESHOLD,
            out: dir.clone(),
            hosts,
        })?;
        write_private(&dir.join("demo-pin"), &String::from_utf8_lossy(pin))?;
    }
    for index in 1..=APPLIANCES {
        if running(&dir, index) {
            progress(&format!("appliance {index} is running"));
        } else {
            progress(&format!("starting appliance {index}"));
            start(&dir, index)?;
        }
    }
    let cluster = Cluster::open(&dir)?;
    let pin = Zeroizing::new(crate::prompt::secret_from_file(&dir.join("demo-pin"))?.to_vec());
    let report = crate::status::status(&cluster);
    let has_key = report
        .keys
        .iter()
        .any(|k| k.id == hex::encode(KEY_ID) && k.usable);
    if !has_key {
        progress("setting the user PIN on every appliance");
        crate::pin::set(&cluster, UserKind::User, &pin)?;
        progress("generating an RSA-2048 key and a self-signed certificate for it");
        let (key, cert_der) = demo_key()?;
        std::fs::write(dir.join("demo-cert.der"), &cert_der)
            .map_err(|e| CliError::file(dir.join("demo-cert.der"), e))?;
        progress("importing the key: split, shares to the appliances, trial operation, commit");
        crate::import::import(
            &cluster,
            &key,
            KEY_ID,
            KEY_LABEL,
            Some(&cert_der),
            &|step| progress(&format!("  {step}")),
        )?;
        write_public_key(&dir, &key)?;
        progress("the key exists only as shares now: the dealer's copy is erased");
    }
    let public_pem = std::fs::read(dir.join("demo-public.pem"))
        .map_err(|e| CliError::file(dir.join("demo-public.pem"), e))?;
    let public = public_key_from_pem(&public_pem)?;
    progress(
        "signing a message through the PKCS#11 module (2 of 3 appliances, blinded) and verifying it",
    );
    let message = dir.join("message.txt");
    std::fs::write(&message, b"hello from ittc\n").map_err(|e| CliError::file(&message, e))?;
    let signature_path = dir.join("message.sig");
    let _ = std::fs::remove_file(&signature_path);
    sign_through_module(&dir, &message, &signature_path)?;
    let signature =
        std::fs::read(&signature_path).map_err(|e| CliError::file(&signature_path, e))?;
    let text = std::fs::read(&message).map_err(|e| CliError::file(&message, e))?;
    verify_sha256(&public, &text, &signature)?;
    Ok(DemoOutcome {
        dir,
        signature,
        message,
    })
}

/// Runs `ittc sign` (this program) as a child process, with the module pointed at the demo
/// cluster through `ITTC_PKCS11_CONFIG`: the signature is made the way an application makes
/// one.
fn sign_through_module(dir: &Path, message: &Path, signature: &Path) -> Result<(), CliError> {
    let program = std::env::current_exe()
        .map_err(|e| CliError::Usage(format!("cannot find ittc itself: {e}")))?;
    let module = crate::token::default_module().ok_or_else(|| {
        CliError::Usage(format!(
            "no {} next to {}: build it (cargo build --release -p ittc-pkcs11, or ./scripts/demo)",
            crate::token::MODULE_FILE,
            program.display()
        ))
    })?;
    let output = Command::new(&program)
        .arg("sign")
        .args(["--id", &hex::encode(KEY_ID)])
        .arg("--pin-file")
        .arg(dir.join("demo-pin"))
        .arg("--module")
        .arg(&module)
        .arg("--in")
        .arg(message)
        .arg("--out")
        .arg(signature)
        .env(
            "ITTC_PKCS11_CONFIG",
            dir.join(ittc_wire::cluster::FILE_NAME),
        )
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CliError::Usage(format!("running {}: {e}", program.display())))?;
    if !output.status.success() {
        return Err(CliError::Usage(format!(
            "signing through the module failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Checks a SHA-256 PKCS#1 v1.5 signature with the public key.
fn verify_sha256(
    public: &ittc_threshold::RsaPublicKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), CliError> {
    use ittc_threshold::padding::{HashAlg, pkcs1v15_verify};
    let s = public.integer_from_be(signature, "signature")?;
    let em = public.integer_to_be(&public.raw_public_vartime(&s)?);
    pkcs1v15_verify(HashAlg::Sha256, &HashAlg::Sha256.digest(message), &em)
        .map_err(|_| CliError::Usage("the signature does not verify with the public key".into()))
}

/// Stops the demo's appliances (SIGTERM, then waits).
pub fn stop(dir: &Path) -> Result<usize, CliError> {
    let mut stopped = 0;
    for index in 1..=APPLIANCES {
        let Some(pid) = read_pid(dir, index) else {
            continue;
        };
        if alive(pid) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            let start = Instant::now();
            while alive(pid) {
                if start.elapsed() > STOP_TIMEOUT {
                    return Err(CliError::appliance(
                        index,
                        format!("pid {pid} did not stop within {STOP_TIMEOUT:?}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            stopped += 1;
        }
        let _ = std::fs::remove_file(pid_file(dir, index));
    }
    Ok(stopped)
}

fn demo_key() -> Result<(RsaPrivateKey, Vec<u8>), CliError> {
    let generated = rsa::PrivateKey::new(&mut rand::rng(), 2048)
        .map_err(|e| CliError::Usage(format!("generating the key: {e}")))?;
    let der = generated
        .to_pkcs8_der()
        .map_err(|e| CliError::Usage(format!("encoding the key: {e}")))?;
    let key = RsaPrivateKey::from_der(der.as_bytes(), None)?;
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| CliError::Usage(format!("certificate key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .map_err(|e| CliError::Usage(format!("certificate: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, KEY_LABEL);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params
        .self_signed(&signer)
        .map_err(|e| CliError::Usage(format!("certificate: {e}")))?;
    Ok((key, cert.der().to_vec()))
}

fn write_public_key(dir: &Path, key: &RsaPrivateKey) -> Result<(), CliError> {
    use rsa::pkcs8::EncodePublicKey as _;
    let public = rsa::PublicKey::new(
        rsa::BoxedUint::from_be_slice_vartime(&key.public_key().n_be()),
        rsa::BoxedUint::from_be_slice_vartime(&key.public_key().e_be()),
    )
    .map_err(|e| CliError::Usage(format!("public key: {e}")))?;
    let pem = public
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| CliError::Usage(format!("public key: {e}")))?;
    let path = dir.join("demo-public.pem");
    std::fs::write(&path, pem).map_err(|e| CliError::file(path, e))
}

fn public_key_from_pem(pem: &[u8]) -> Result<ittc_threshold::RsaPublicKey, CliError> {
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let text = std::str::from_utf8(pem)
        .map_err(|_| CliError::Usage("demo-public.pem is not text".into()))?;
    let key = rsa::PublicKey::from_public_key_pem(text)
        .map_err(|e| CliError::Usage(format!("demo-public.pem: {e}")))?;
    Ok(ittc_threshold::RsaPublicKey::from_be_bytes(
        &key.n().to_be_bytes(),
        &key.e().to_be_bytes(),
    )?)
}

fn free_ports(count: u8) -> Result<Vec<u16>, CliError> {
    // Hold every listener until all ports are chosen, so they are distinct.
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .map_err(|e| CliError::Usage(format!("no free port: {e}")))
        })
        .collect::<Result<_, _>>()?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| CliError::Usage(format!("no free port: {e}")))
        })
        .collect()
}

fn pid_file(dir: &Path, index: u8) -> PathBuf {
    dir.join(format!("appliance-{index}.pid"))
}

fn read_pid(dir: &Path, index: u8) -> Option<u32> {
    std::fs::read_to_string(pid_file(dir, index))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .arg("-0")
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn running(dir: &Path, index: u8) -> bool {
    read_pid(dir, index).is_some_and(alive)
}

/// Starts appliance `index` of the cluster in `dir` in its own process group, waits for
/// it to listen, and records its pid.
fn start(dir: &Path, index: u8) -> Result<(), CliError> {
    let (child, _) = spawn_appliance(
        &appliance_program(),
        &dir.join(format!("appliance-{index}.toml")),
        &dir.join(format!("appliance-{index}.log")),
        true,
        START_TIMEOUT,
    )
    .map_err(|e| CliError::appliance(index, e))?;
    let pid_path = pid_file(dir, index);
    std::fs::write(&pid_path, child.id().to_string()).map_err(|e| CliError::file(pid_path, e))
}
