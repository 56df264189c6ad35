//! A fresh process's first signature: what `openssl ca`, ssh or a command-line tool pays on
//! every run. A child process loads the module, calls C_Initialize, C_OpenSession, C_Login,
//! C_FindObjects, one C_Sign and C_Finalize, and exits; the parent times it from spawn to
//! exit, and the child reports how long each step took.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};

use crate::report::median;
use crate::worker::{fail, find};

/// What the child does.
#[derive(Clone, Debug, clap::Args)]
pub struct FirstArgs {
    /// The PKCS#11 module.
    #[arg(long)]
    pub module: std::path::PathBuf,
    /// User PIN.
    #[arg(long)]
    pub pin: String,
    /// Key id (hex) of the key to sign with.
    #[arg(long)]
    pub id: String,
}

/// How long each step of one run took, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Steps {
    /// Loading the library and C_Initialize.
    pub initialize_ms: f64,
    /// C_GetSlotList and C_OpenSession.
    pub open_ms: f64,
    /// C_Login.
    pub login_ms: f64,
    /// C_FindObjects for the private key.
    pub find_ms: f64,
    /// C_SignInit and C_Sign, CKM_SHA256_RSA_PKCS.
    pub sign_ms: f64,
    /// C_CloseSession and C_Finalize.
    pub finalize_ms: f64,
    /// The whole process, spawn to exit, as the parent saw it (0 in the child's own report).
    pub process_ms: f64,
}

/// The child's side: one first signature, each step timed.
pub fn run(args: &FirstArgs) -> Result<Steps, String> {
    let id = hex::decode(&args.id).map_err(|e| format!("--id: {e}"))?;
    let mut steps = Steps::default();
    let mut clock = Instant::now();
    let mut lap = |into: &mut f64| {
        *into = clock.elapsed().as_secs_f64() * 1e3;
        clock = Instant::now();
    };
    let pkcs11 = Pkcs11::new(&args.module).map_err(fail("loading the module"))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(fail("C_Initialize"))?;
    lap(&mut steps.initialize_ms);
    let slot = *pkcs11
        .get_slots_with_token()
        .map_err(fail("C_GetSlotList"))?
        .first()
        .ok_or("no token")?;
    let session = pkcs11
        .open_ro_session(slot)
        .map_err(fail("C_OpenSession"))?;
    lap(&mut steps.open_ms);
    session
        .login(UserType::User, Some(&AuthPin::from(args.pin.clone())))
        .map_err(fail("C_Login"))?;
    lap(&mut steps.login_ms);
    let key = find(&session, ObjectClass::PRIVATE_KEY, &id)?;
    lap(&mut steps.find_ms);
    let signature = session
        .sign(
            &Mechanism::Sha256RsaPkcs,
            key,
            b"one certificate's worth of bytes",
        )
        .map_err(fail("C_Sign"))?;
    if signature.is_empty() {
        return Err("C_Sign gave an empty signature".into());
    }
    lap(&mut steps.sign_ms);
    drop(session);
    pkcs11.finalize().map_err(fail("C_Finalize"))?;
    lap(&mut steps.finalize_ms);
    Ok(steps)
}

/// The medians of several first signatures through one module.
#[derive(Clone, Debug, Serialize)]
pub struct FirstFigures {
    /// Each step's median, and the process's.
    pub median: Steps,
    /// How many runs.
    pub runs: usize,
}

/// Runs `ittc-bench first-sign` `runs` times with `env` set for the module.
pub fn measure(module: &Path, env: (&str, &Path), runs: usize) -> Result<FirstFigures, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut all = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new(&exe)
            .arg("first-sign")
            .arg("--module")
            .arg(module)
            .args(["--pin", crate::setup::PIN, "--id", crate::setup::KEY_ID])
            .env(env.0, env.1)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let process_ms = start.elapsed().as_secs_f64() * 1e3;
        if !out.status.success() {
            return Err(format!(
                "first signature through {}: {}",
                module.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let steps: Steps =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("first-sign output: {e}"))?;
        all.push(Steps {
            process_ms,
            ..steps
        });
    }
    let m = |f: fn(&Steps) -> f64| median(all.iter().map(f));
    Ok(FirstFigures {
        median: Steps {
            initialize_ms: m(|s| s.initialize_ms),
            open_ms: m(|s| s.open_ms),
            login_ms: m(|s| s.login_ms),
            find_ms: m(|s| s.find_ms),
            sign_ms: m(|s| s.sign_ms),
            finalize_ms: m(|s| s.finalize_ms),
            process_ms: m(|s| s.process_ms),
        },
        runs,
    })
}
