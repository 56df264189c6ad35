//! Clusters made by the operator's own tool: `ittc init` with free loopback ports, the
//! appliances started from the configs it wrote, and the `ittc` binary run as a process.
//! Every appliance is killed when the [`InitCluster`] is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use openssl::hash::MessageDigest;
use openssl::pkey::{HasPublic, PKeyRef};
use openssl::sign::Verifier;

use crate::PROCESS_TIMEOUT;

/// A binary (or the PKCS#11 module) of the workspace, next to the running test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first",
        bin.display()
    );
    bin
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `ittc ARGS`, with no standard input.
pub fn ittc(args: &[&str]) -> Command {
    let mut command = Command::new(binary("ittc"));
    command.args(args).stdin(Stdio::null());
    command
}

/// Runs `ittc ARGS` and returns its output.
pub fn run_ittc(args: &[&str]) -> Output {
    ittc(args).output().unwrap()
}

/// Asserts success and returns standard output.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A cluster folder written by `ittc init`, in a temporary folder, with its appliances.
pub struct InitCluster {
    tmp: tempfile::TempDir,
    /// The cluster folder.
    pub dir: PathBuf,
    children: Vec<Option<Child>>,
}

impl InitCluster {
    /// `ittc init` for n appliances (k of n) on free loopback ports; `appliance_extra` is
    /// appended to every appliance config (e.g. a `[keygen]` table); all started.
    pub fn new(n: u8, k: u8, appliance_extra: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cluster");
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut args: Vec<String> = [
            "init",
            "--appliances",
            &n.to_string(),
            "--threshold",
            &k.to_string(),
            "--out",
        ]
        .map(String::from)
        .to_vec();
        args.push(dir.display().to_string());
        for (i, l) in listeners.iter().enumerate() {
            args.push("--host".into());
            args.push(format!(
                "{}=127.0.0.1:{}",
                i + 1,
                l.local_addr().unwrap().port()
            ));
        }
        drop(listeners);
        ok(run_ittc(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        for i in 1..=n {
            let path = dir.join(format!("appliance-{i}.toml"));
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push('\n');
            text.push_str(appliance_extra);
            std::fs::write(&path, text).unwrap();
        }
        let mut cluster = Self {
            tmp,
            dir,
            children: (0..n).map(|_| None).collect(),
        };
        for i in 1..=n {
            cluster.start(i);
        }
        cluster
    }

    /// A folder for the test's own files, beside the cluster folder.
    pub fn scratch(&self) -> &Path {
        self.tmp.path()
    }

    /// `--cluster`'s argument.
    pub fn arg(&self) -> String {
        self.dir.display().to_string()
    }

    /// Starts appliance `index` (one of `ittc init`'s, or one added since) and waits until
    /// it listens.
    pub fn start(&mut self, index: u8) {
        let (child, _) = ittc_provisioning::process::spawn_appliance(
            &binary("ittc-appliance"),
            &self.dir.join(format!("appliance-{index}.toml")),
            &self.dir.join(format!("appliance-{index}.log")),
            false,
            PROCESS_TIMEOUT,
        )
        .unwrap();
        let slot = usize::from(index) - 1;
        if self.children.len() <= slot {
            self.children.resize_with(slot + 1, || None);
        }
        self.children[slot] = Some(child);
    }

    /// SIGKILL, if running.
    pub fn kill(&mut self, index: u8) {
        if let Some(mut c) = self
            .children
            .get_mut(usize::from(index) - 1)
            .and_then(Option::take)
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The appliance's log so far.
    pub fn log(&self, index: u8) -> String {
        std::fs::read_to_string(self.dir.join(format!("appliance-{index}.log"))).unwrap_or_default()
    }

    /// Writes `pin` to a file and sets it as the user PIN with `ittc pin set`; returns the
    /// file's path.
    pub fn set_user_pin(&self, pin: &[u8]) -> String {
        let path = self.scratch().join("user-pin");
        std::fs::write(&path, pin).unwrap();
        let path = path.display().to_string();
        ok(run_ittc(&[
            "--cluster",
            &self.arg(),
            "pin",
            "set",
            "--user",
            "--pin-file",
            &path,
        ]));
        path
    }

    /// Where appliance `index` listens, as `pkcs11.toml` says now.
    pub fn address(&self, index: u8) -> std::net::SocketAddr {
        ittc_wire::cluster::ClusterConfig::load(&self.dir.join(ittc_wire::cluster::FILE_NAME))
            .unwrap()
            .appliance(index)
            .unwrap()
            .resolve()
            .unwrap()
    }

    /// The public key of key `id`, from appliance 1's public-key object.
    pub fn public_key(&self, id: &[u8]) -> openssl::pkey::PKey<openssl::pkey::Public> {
        use ittc_wire::{ObjectId, Request, Response};
        let cli = ittc_provisioning::cluster::Cluster::open(&self.dir).unwrap();
        let mut c = cli.connect(1).unwrap();
        let handle = ObjectId::derived("public-key", id);
        let Response::Object { object, .. } = c.request(&Request::GetObject { handle }).unwrap()
        else {
            panic!("no public key object")
        };
        use ittc_wire::attributes::{CKA_MODULUS, CKA_PUBLIC_EXPONENT};
        let number =
            |kind| openssl::bn::BigNum::from_slice(object.attribute(kind).unwrap()).unwrap();
        let rsa = openssl::rsa::Rsa::from_public_components(
            number(CKA_MODULUS),
            number(CKA_PUBLIC_EXPONENT),
        )
        .unwrap();
        openssl::pkey::PKey::from_rsa(rsa).unwrap()
    }

    /// A new RSA-2048 key, imported with `ittc key import` as `id_hex` with `label`.
    pub fn import_new_key(
        &self,
        label: &str,
        id_hex: &str,
    ) -> openssl::rsa::Rsa<openssl::pkey::Private> {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let keyfile = self.scratch().join(format!("key-{id_hex}.pem"));
        std::fs::write(&keyfile, rsa.private_key_to_pem().unwrap()).unwrap();
        ok(run_ittc(&[
            "--cluster",
            &self.arg(),
            "key",
            "import",
            "--label",
            label,
            "--id",
            id_hex,
            &keyfile.display().to_string(),
        ]));
        rsa
    }

    /// Signs a message with `ittc sign` through the PKCS#11 module, as an application
    /// does, and checks the signature with OpenSSL and `public`.
    pub fn sign_and_verify<T: HasPublic>(&self, id_hex: &str, pin_file: &str, public: &PKeyRef<T>) {
        let message = self.scratch().join("to-sign.txt");
        std::fs::write(&message, b"signed through the token").unwrap();
        let signature = self.scratch().join("to-sign.sig");
        let out = Command::new(binary("ittc"))
            .args(["sign", "--id", id_hex, "--pin-file", pin_file, "--module"])
            .arg(binary("libittc_pkcs11.so"))
            .arg("--in")
            .arg(&message)
            .arg("--out")
            .arg(&signature)
            .env("ITTC_PKCS11_CONFIG", self.dir.join("pkcs11.toml"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        ok(out);
        let mut verifier = Verifier::new(MessageDigest::sha256(), public).unwrap();
        verifier.update(&std::fs::read(&message).unwrap()).unwrap();
        assert!(
            verifier
                .verify(&std::fs::read(&signature).unwrap())
                .unwrap(),
            "OpenSSL rejects the signature made through the token"
        );
    }

    /// `ittc status --json`: whether it exited 0, and the report.
    pub fn status(&self) -> (bool, serde_json::Value) {
        let out = run_ittc(&["--cluster", &self.arg(), "status", "--json"]);
        (
            out.status.success(),
            serde_json::from_slice(&out.stdout).unwrap(),
        )
    }
}

impl Drop for InitCluster {
    fn drop(&mut self) {
        for i in 1..=self.children.len() as u8 {
            self.kill(i);
        }
    }
}
