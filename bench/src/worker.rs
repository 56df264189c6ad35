//! The measuring side: runs in a child process that loads one PKCS#11 module (the parent
//! sets the module's environment: `ITTC_PKCS11_CONFIG` or `SOFTHSM2_CONF`) and times the
//! same calls on any module: C_Sign latency for two mechanisms and C_Decrypt latency (taken
//! in turn), C_Sign throughput on several threads. Prints one JSON object.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};

/// What to measure.
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerArgs {
    /// The PKCS#11 module.
    #[arg(long)]
    pub module: PathBuf,
    /// User PIN.
    #[arg(long)]
    pub pin: String,
    /// Key id (hex) of the key to use.
    #[arg(long)]
    pub id: String,
    /// Generate an RSA key of this many bits with that id first (SoftHSM2).
    #[arg(long)]
    pub generate: Option<u64>,
    /// Latency samples per operation.
    #[arg(long)]
    pub samples: usize,
    /// Seconds per throughput figure.
    #[arg(long)]
    pub seconds: f64,
    /// Thread counts for throughput, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
}

/// Percentiles of one operation, in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// How many samples.
    pub samples: usize,
}

/// Everything one module measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModuleFigures {
    /// C_Sign, CKM_SHA256_RSA_PKCS, one thread.
    pub sign_pkcs1: Latency,
    /// C_Sign, CKM_SHA256_RSA_PKCS_PSS, one thread.
    pub sign_pss: Latency,
    /// C_Decrypt, CKM_RSA_PKCS_OAEP with SHA-256 (SHA-1 where the module has only that),
    /// one thread.
    pub decrypt_oaep: Latency,
    /// The OAEP hash used: "SHA-256", or "SHA-1" for modules without OAEP-SHA256 (SoftHSM2).
    pub oaep_hash: String,
    /// C_Sign CKM_SHA256_RSA_PKCS per second, by thread count.
    pub throughput: Vec<(usize, f64)>,
}

pub(crate) fn fail(what: &str) -> impl Fn(cryptoki::error::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn pss() -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    }
}

fn oaep(sha256: bool) -> Mechanism<'static> {
    let (hash, mgf) = if sha256 {
        (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256)
    } else {
        (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1)
    };
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
}

/// Times `samples` calls of each operation, taken in turn (a, b, c, a, b, c, …) so that all
/// of them see the same stretch of the machine's life: on a machine that the appliances
/// share, how the kernel happens to place their threads changes over seconds, and timing
/// one operation after the other would give each a different stretch.
fn latencies<const N: usize>(
    samples: usize,
    ops: [&mut dyn FnMut() -> Result<(), String>; N],
) -> Result<[Latency; N], String> {
    let mut ops = ops;
    for op in ops.iter_mut() {
        op()?; // warm-up: connections, caches
    }
    let mut times: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(samples));
    for _ in 0..samples {
        for (op, times) in ops.iter_mut().zip(times.iter_mut()) {
            let t = Instant::now();
            op()?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times.map(|mut times| {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| {
            times
                .get(((times.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        Latency {
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            samples,
        }
    }))
}

pub(crate) fn find(
    session: &Session,
    class: ObjectClass,
    id: &[u8],
) -> Result<ObjectHandle, String> {
    session
        .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
        .map_err(fail("C_FindObjects"))?
        .first()
        .copied()
        .ok_or_else(|| format!("no {class:?} with id {}", hex::encode(id)))
}

/// Runs the measurements and returns them.
pub fn run(args: &WorkerArgs) -> Result<ModuleFigures, String> {
    let id = hex::decode(&args.id).map_err(|e| format!("--id: {e}"))?;
    let pkcs11 = Pkcs11::new(&args.module).map_err(fail("loading the module"))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(fail("C_Initialize"))?;
    let slot: Slot = *pkcs11
        .get_slots_with_token()
        .map_err(fail("C_GetSlotList"))?
        .first()
        .ok_or("no token")?;
    let pin = AuthPin::from(args.pin.clone());
    // This session stays open (and logged in) for the whole run: others share its login.
    let main = pkcs11
        .open_rw_session(slot)
        .map_err(fail("C_OpenSession"))?;
    main.login(UserType::User, Some(&pin))
        .map_err(fail("C_Login"))?;
    if let Some(bits) = args.generate {
        let public = [
            Attribute::Token(true),
            Attribute::Id(id.clone()),
            Attribute::ModulusBits(bits.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Verify(true),
            Attribute::Encrypt(true),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Id(id.clone()),
            Attribute::Sign(true),
            Attribute::Decrypt(true),
            Attribute::Sensitive(true),
        ];
        main.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .map_err(fail("C_GenerateKeyPair"))?;
    }
    let key = find(&main, ObjectClass::PRIVATE_KEY, &id)?;
    let public_key = find(&main, ObjectClass::PUBLIC_KEY, &id)?;
    let message = vec![0x5a_u8; 1024];

    let secret = b"a 32-byte session key, or so....";
    let (sha256, ciphertext) = match main.encrypt(&oaep(true), public_key, secret) {
        Ok(c) => (true, c),
        Err(_) => (
            false,
            main.encrypt(&oaep(false), public_key, secret)
                .map_err(fail("C_Encrypt"))?,
        ),
    };
    let [sign_pkcs1, sign_pss, decrypt_oaep] = latencies(
        args.samples,
        [
            &mut || {
                main.sign(&Mechanism::Sha256RsaPkcs, key, &message)
                    .map(|_| ())
                    .map_err(fail("C_Sign"))
            },
            &mut || {
                main.sign(&Mechanism::Sha256RsaPkcsPss(pss()), key, &message)
                    .map(|_| ())
                    .map_err(fail("C_Sign PSS"))
            },
            &mut || {
                main.decrypt(&oaep(sha256), key, &ciphertext)
                    .map(|_| ())
                    .map_err(fail("C_Decrypt"))
            },
        ],
    )?;
    let oaep_hash = if sha256 { "SHA-256" } else { "SHA-1" }.to_owned();
    let _ = main.get_attributes(key, &[AttributeType::Label]);

    let mut throughput = Vec::new();
    for &threads in &args.threads {
        let done = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let errors = AtomicU64::new(0);
        // Threads that have finished their first two operations (a new session, and for
        // ittc new pooled connections, each logged in once).
        let settled = AtomicU64::new(0);
        let measured = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let Ok(session) = pkcs11.open_ro_session(slot) else {
                            errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        };
                        let mut mine = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            match session.sign(&Mechanism::Sha256RsaPkcs, key, &message) {
                                Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                                Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                            };
                            mine += 1;
                            if mine == 2 {
                                settled.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            // Warm-up, not counted: new sessions and, for ittc, new pooled connections
            // (each logs in once) settle first; the figure is the steady state.
            let warm_up = Instant::now();
            while (settled.load(Ordering::Relaxed) < threads as u64
                || warm_up.elapsed().as_secs_f64() < args.seconds / 3.0)
                && errors.load(Ordering::Relaxed) == 0
                && warm_up.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let counted_from = done.load(Ordering::Relaxed);
            let start = Instant::now();
            std::thread::sleep(Duration::from_secs_f64(args.seconds));
            let counted = done.load(Ordering::Relaxed) - counted_from;
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            for w in workers {
                let _ = w.join();
            }
            (counted, elapsed)
        });
        if errors.load(Ordering::Relaxed) > 0 {
            return Err(format!(
                "{} signing errors on {threads} threads",
                errors.load(Ordering::Relaxed)
            ));
        }
        let (counted, elapsed) = measured;
        throughput.push((threads, counted as f64 / elapsed.as_secs_f64()));
    }
    drop(main);
    pkcs11.finalize().map_err(fail("C_Finalize"))?;
    Ok(ModuleFigures {
        sign_pkcs1,
        sign_pss,
        decrypt_oaep,
        oaep_hash,
        throughput,
    })
}
