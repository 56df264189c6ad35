//! Real PKCS#11 clients against the built module and real appliances: OpenSC's
//! `pkcs11-tool` and `p11-kit`, run as processes (bounded in time), and the integration
//! guides of `docs/integrations/` (Apache, nginx, a CA with `openssl ca`, OpenSSH, NSS,
//! Java), whose commands run as written ([`support::guide`]); every result is checked
//! independently (OpenSSL and the public key). The module finds its configuration through
//! `ITTC_PKCS11_CONFIG`, set on the client process only.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::Duration;

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use support::guide::Guide;
use support::{Fixture, KEY_ID, KEY_LABEL, PIN, Setup, module_path, run, verify_pkcs1, verify_pss};

/// How long one client run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// One cluster at a time.
static TURN: Mutex<()> = Mutex::new(());

struct Client {
    fx: Fixture,
    _config_dir: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Client {
    fn new(setup: &Setup) -> Self {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let fx = Fixture::prepare(setup, &dir.path().join("pkcs11.toml"));
        Self {
            fx,
            _config_dir: dir,
            _turn: turn,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.fx.cluster.dir().join(name)
    }

    /// `pkcs11-tool --module <so> ARGS` with the module's configuration and a log file.
    fn tool(&self, args: &[&str]) -> (ExitStatus, String) {
        let mut all: Vec<OsString> = vec!["--module".into(), module_path().into()];
        all.extend(args.iter().map(OsString::from));
        run("pkcs11-tool", &all, &self.env(), CLIENT_TIMEOUT)
    }

    fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("ITTC_PKCS11_CONFIG", self.fx.config_path.clone().into()),
            ("ITTC_PKCS11_LOG", self.file("pkcs11.log").into()),
        ]
    }

    /// Like [`Self::tool`], failing the test unless it exits 0.
    fn tool_ok(&self, args: &[&str]) -> String {
        let (status, out) = self.tool(args);
        assert!(
            status.success(),
            "pkcs11-tool {args:?}: {status}\n{out}\nmodule log:\n{}",
            self.log()
        );
        out
    }

    /// A client program (`certutil`, `keytool`, …) with the module's configuration,
    /// which must exit 0; returns its output.
    fn run_ok(&self, program: &str, args: &[&OsStr]) -> String {
        let args: Vec<OsString> = args.iter().map(|a| a.to_os_string()).collect();
        let (status, out) = run(program, &args, &self.env(), CLIENT_TIMEOUT);
        assert!(
            status.success(),
            "{program} {args:?}: {status}\n{out}\nmodule log:\n{}",
            self.log()
        );
        out
    }

    /// A fresh NSS database (`sql:DIR`) that knows the module as `ittc` (added with
    /// `modutil`), and a file holding the user PIN for NSS's `-f`/`-W`.
    fn nss_database(&self) -> (OsString, PathBuf) {
        let db = self.file("nssdb");
        std::fs::create_dir_all(&db).unwrap();
        let db_arg: OsString = format!("sql:{}", db.display()).into();
        let pin_file = self.file("pin.txt");
        std::fs::write(&pin_file, PIN).unwrap();
        self.run_ok(
            "certutil",
            &[
                "-N".as_ref(),
                "-d".as_ref(),
                &db_arg,
                "--empty-password".as_ref(),
            ],
        );
        self.run_ok(
            "modutil",
            &[
                "-dbdir".as_ref(),
                &db_arg,
                "-add".as_ref(),
                "ittc".as_ref(),
                "-libfile".as_ref(),
                module_path().as_os_str(),
                "-force".as_ref(),
            ],
        );
        (db_arg, pin_file)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.file("pkcs11.log")).unwrap_or_default()
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `openssl ARGS`, which must succeed.
fn openssl(args: &[&OsStr]) {
    let args: Vec<OsString> = args.iter().map(|a| a.to_os_string()).collect();
    let (status, out) = run("openssl", &args, &[], CLIENT_TIMEOUT);
    assert!(status.success(), "openssl {args:?}: {status}\n{out}");
}

/// A configuration that stops C_Initialize says why on standard error, where pkcs11-tool's
/// user sees it, even with no log configured: a named file that is not there, and a file
/// that does not parse. (The test process has no `ITTC_PKCS11_LOG`; the clients get it
/// per child only.)
#[test]
fn pkcs11_tool_shows_why_the_configuration_is_unusable() {
    assert!(std::env::var_os("ITTC_PKCS11_LOG").is_none());
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "threshold = \"two\"\n").unwrap();
    for (config, cause) in [
        (
            dir.path().join("missing.toml"),
            "missing.toml: no such file",
        ),
        (broken, "broken.toml"),
    ] {
        let args: Vec<OsString> = vec![
            "--module".into(),
            module_path().into_os_string(),
            "--list-slots".into(),
        ];
        let (status, out) = run(
            "pkcs11-tool",
            &args,
            &[("ITTC_PKCS11_CONFIG", config.into_os_string())],
            CLIENT_TIMEOUT,
        );
        assert!(!status.success(), "{out}");
        assert!(out.contains("CKR_GENERAL_ERROR"), "{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("ittc PKCS#11 module: "))
            .unwrap_or_else(|| panic!("no cause on standard error:\n{out}"));
        assert!(line.contains(cause), "{line}");
    }
}

#[test]
fn pkcs11_tool_lists_the_objects() {
    let c = Client::new(&Setup::new(2, 3));
    let public = c.tool_ok(&["--list-objects"]);
    assert!(
        public.contains("Public Key Object; RSA 2048 bits"),
        "{public}"
    );
    assert!(public.contains(KEY_LABEL), "{public}");
    assert!(!public.contains("Private Key Object"), "{public}");
    let all = c.tool_ok(&["--list-objects", "--login", "--pin", PIN]);
    assert!(all.contains("Private Key Object; RSA"), "{all}");
    assert!(all.contains("ID:         01"), "{all}");
}

#[test]
fn pkcs11_tool_signatures_verify_with_openssl() {
    let c = Client::new(&Setup::new(2, 3));
    let public = c.fx.public();
    let msg = b"signed by pkcs11-tool through a threshold";
    let digest = openssl::sha::sha256(msg);
    let mut digest_info = hex::decode("3031300d060960864801650304020105000420").unwrap();
    digest_info.extend_from_slice(&digest);
    std::fs::write(c.file("msg"), msg).unwrap();
    std::fs::write(c.file("digest"), digest).unwrap();
    std::fs::write(c.file("digest-info"), &digest_info).unwrap();
    let sign = |mechanism: &str, input: &str, extra: &[&str]| -> Vec<u8> {
        let input = c.file(input);
        let output = c.file("sig");
        let _ = std::fs::remove_file(&output);
        let mut args = vec![
            "--login",
            "--pin",
            PIN,
            "--sign",
            "--id",
            "01",
            "--mechanism",
            mechanism,
            "--input-file",
            input.to_str().unwrap(),
            "--output-file",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        c.tool_ok(&args);
        std::fs::read(&output).unwrap()
    };
    let sig = sign("RSA-PKCS", "digest-info", &[]);
    verify_pkcs1(&public, MessageDigest::sha256(), msg, &sig);
    let sig = sign("SHA256-RSA-PKCS", "msg", &[]);
    verify_pkcs1(&public, MessageDigest::sha256(), msg, &sig);
    let pss = ["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"];
    let sig = sign("RSA-PKCS-PSS", "digest", &pss);
    verify_pss(&public, MessageDigest::sha256(), msg, &sig);
    let sig = sign("SHA256-RSA-PKCS-PSS", "msg", &[]);
    verify_pss(&public, MessageDigest::sha256(), msg, &sig);
    let sig = sign("SHA224-RSA-PKCS-PSS", "msg", &[]);
    verify_pss(&public, MessageDigest::sha224(), msg, &sig);
}

#[test]
fn pkcs11_tool_decrypts_what_openssl_encrypted() {
    let c = Client::new(&Setup::new(2, 3));
    let public = c.fx.public_pem();
    let secret = b"a key wrapped by openssl pkeyutl";
    std::fs::write(c.file("secret"), secret).unwrap();
    let oaep: [&str; 6] = [
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
    ];
    let cases: [(&str, &[&str], &[&str]); 2] = [
        ("RSA-PKCS", &[], &[]),
        (
            "RSA-PKCS-OAEP",
            &oaep,
            &["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"],
        ),
    ];
    for (mechanism, openssl_opts, tool_opts) in cases {
        let ct = c.file("ct");
        let pt = c.file("pt");
        let _ = std::fs::remove_file(&pt);
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("pkeyutl"),
            OsStr::new("-encrypt"),
            OsStr::new("-pubin"),
            OsStr::new("-inkey"),
            public.as_os_str(),
        ];
        let input = c.file("secret");
        args.extend([
            OsStr::new("-in"),
            input.as_os_str(),
            OsStr::new("-out"),
            ct.as_os_str(),
        ]);
        args.extend(openssl_opts.iter().map(OsStr::new));
        openssl(&args);
        let mut tool = vec![
            "--login",
            "--pin",
            PIN,
            "--decrypt",
            "--id",
            "01",
            "--mechanism",
            mechanism,
            "--input-file",
            ct.to_str().unwrap(),
            "--output-file",
            pt.to_str().unwrap(),
        ];
        tool.extend_from_slice(tool_opts);
        c.tool_ok(&tool);
        assert_eq!(std::fs::read(&pt).unwrap(), secret, "{mechanism}");
    }
}

#[test]
fn pkcs11_tool_test_login_passes() {
    let c = Client::new(&Setup::new(2, 3));
    let out = c.tool_ok(&["--test", "--login", "--pin", PIN]);
    assert!(out.contains("No errors"), "{out}");
}

#[test]
fn pkcs11_tool_test_threads_end_without_errors() {
    let c = Client::new(&Setup::new(2, 3));
    let out = c.tool_ok(&[
        "--test-threads",
        "ILGISLT0",
        "--test-threads",
        "ILGISLT0",
        "-L",
    ]);
    assert!(out.contains("all threads have ended with CKR_OK"), "{out}");
    for line in out.lines().filter(|l| l.contains("returning rv")) {
        assert!(line.ends_with("rv = 0"), "{line}\n{out}");
    }
    assert!(out.contains("ittc cluster"), "{out}");
}

#[test]
fn pkcs11_tool_test_fork_initializes_again_in_the_child() {
    let c = Client::new(&Setup::new(2, 3));
    let out = c.tool_ok(&["--test-fork", "--login", "--pin", PIN]);
    assert!(!out.contains("error"), "{out}");
}

/// Registers the module with p11-kit for as long as it lives.
struct Registration {
    file: PathBuf,
    home: Option<tempfile::TempDir>,
}

impl Registration {
    fn new() -> Self {
        let body = format!("module: {}\n", module_path().display());
        let name = format!("ittc-test-{}.module", std::process::id());
        // p11-kit reads no user configuration for root.
        let root = run("id", &["-u".into()], &[], CLIENT_TIMEOUT).1.trim() == "0";
        if root {
            std::fs::create_dir_all("/etc/pkcs11/modules").unwrap();
            let file = PathBuf::from("/etc/pkcs11/modules").join(name);
            std::fs::write(&file, body).unwrap();
            Self { file, home: None }
        } else {
            let home = tempfile::tempdir().unwrap();
            let dir = home.path().join(".config/pkcs11/modules");
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(name);
            std::fs::write(&file, body).unwrap();
            Self {
                file,
                home: Some(home),
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

#[test]
fn p11_kit_lists_the_registered_module_and_its_token() {
    let c = Client::new(&Setup::new(2, 3));
    let registration = Registration::new();
    let mut env = c.env();
    if let Some(home) = &registration.home {
        env.push(("HOME", home.path().into()));
    }
    let (status, out) = run("p11-kit", &["list-modules".into()], &env, CLIENT_TIMEOUT);
    assert!(status.success(), "p11-kit list-modules: {status}\n{out}");
    let listed = format!(
        "ittc-test-{}: {}",
        std::process::id(),
        module_path().display()
    );
    assert!(out.contains(&listed), "{out}");
    // The module's own details, and those of the modules listed after it.
    let ours = out.split(&listed).nth(1).unwrap();
    for line in [
        "library-description: ittc threshold RSA token",
        "library-manufacturer: ittc",
        "token: ittc",
        "model: threshold RSA",
        "token-initialized",
    ] {
        assert!(ours.contains(line), "{line}\n{out}");
    }
    // Every module listed, before and after this one, printed its library details.
    let modules = out.lines().filter(|l| !l.starts_with(' ')).count();
    let details = out
        .lines()
        .filter(|l| l.trim_start().starts_with("library-description:"))
        .count();
    assert_eq!(modules, details, "a module lost its details:\n{out}");
}

/// OpenSC's `pkcs11-spy.so` between `pkcs11-tool` and the module: the spy asks the
/// module for its 3.0 interface (and writes into the structure it gets), then passes
/// every call through and logs it.
const SPY: &str = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so";

#[test]
fn pkcs11_spy_wraps_the_module_to_list_slots_and_sign() {
    let c = Client::new(&Setup::new(2, 3));
    let spy_log = c.file("spy.log");
    let msg = b"signed through pkcs11-spy";
    std::fs::write(c.file("msg"), msg).unwrap();
    let spy = |args: &[&str]| -> String {
        let mut all: Vec<OsString> = vec!["--module".into(), SPY.into()];
        all.extend(args.iter().map(OsString::from));
        let mut env = c.env();
        env.push(("PKCS11SPY", module_path().into()));
        env.push(("PKCS11SPY_OUTPUT", spy_log.clone().into()));
        let (status, out) = run("pkcs11-tool", &all, &env, CLIENT_TIMEOUT);
        let log = std::fs::read_to_string(&spy_log).unwrap_or_default();
        assert!(
            status.success(),
            "pkcs11-tool (spy) {args:?}: {status}\n{out}\nspy log:\n{log}\nmodule log:\n{}",
            c.log()
        );
        out
    };
    let slots = spy(&["-L"]);
    assert!(slots.contains("ittc cluster"), "{slots}");
    assert!(
        slots.contains("token model        : threshold RSA"),
        "{slots}"
    );
    let sig_path = c.file("sig");
    let input = c.file("msg");
    spy(&[
        "--login",
        "--pin",
        PIN,
        "--sign",
        "--id",
        "01",
        "--mechanism",
        "SHA256-RSA-PKCS",
        "--input-file",
        input.to_str().unwrap(),
        "--output-file",
        sig_path.to_str().unwrap(),
    ]);
    let sig = std::fs::read(&sig_path).unwrap();
    verify_pkcs1(&c.fx.public(), MessageDigest::sha256(), msg, &sig);
    let log = std::fs::read_to_string(&spy_log).unwrap();
    assert!(log.contains("Loaded: "), "{log}");
    for call in ["C_GetInterface", "C_GetSlotList", "C_Login", "C_Sign"] {
        assert!(log.contains(&format!(": {call}\n")), "{call}\n{log}");
    }
    assert!(!log.contains("Returned:  5 CKR_GENERAL_ERROR"), "{log}");
}

/// The integration guides (`docs/integrations/*.md`), run as they are written
/// ([`support::guide`]) against a fresh 2-of-3 cluster; each test then checks what the
/// guide made with the cluster's public key and the clients' own verification.
impl Client {
    /// Runs guide `name` with the module, the PIN and `vars`; the module's own variables
    /// come from [`Self::env`].
    fn guide(&self, name: &str, vars: &[(&str, OsString)]) -> Guide {
        let mut all: Vec<(&str, OsString)> = vec![
            ("ITTC_MODULE", module_path().into()),
            ("ITTC_PIN", PIN.into()),
        ];
        all.extend(vars.iter().cloned());
        Guide::run(&Guide::path(name), &all, &self.env(), &[PIN], || {
            format!("module log:\n{}", self.log())
        })
    }

    /// As deployed: the module's TLS key readable by root only, so not by the workers of
    /// a server that drops its privileges.
    fn root_only_tls_key(&self) {
        use std::os::unix::fs::PermissionsExt;
        let key = self.file("client.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Fails unless the certificate in `pem` certifies the cluster key.
    fn assert_certifies_the_key(&self, pem: &Path) {
        let cert = X509::from_pem(&std::fs::read(pem).unwrap()).unwrap();
        assert!(
            cert.public_key().unwrap().public_eq(&self.fx.public()),
            "{} does not hold the cluster key",
            pem.display()
        );
    }
}

/// The key's URI in the guides.
const KEY_URI: &str = "pkcs11:token=ittc;id=%01;type=private";

/// Fails unless the processes that `master` forked all run as a user other than root.
fn assert_unprivileged_workers(master: u32, diagnostics: &str) {
    let workers = support::guide::children_uids(master);
    assert!(!workers.is_empty(), "no workers of {master}\n{diagnostics}");
    for (pid, uid) in workers {
        assert_ne!(uid, 0, "worker {pid} runs as root\n{diagnostics}");
    }
}

/// `count` HTTPS requests to 127.0.0.1:`port` from `threads` threads at once, alternately
/// over TLS 1.2 and 1.3, each on a new connection (a full handshake: one signature by the
/// token). OpenSSL checks each server signature against the certificate in `ca` (for the
/// name localhost); the certificate presented must hold `key` and the answer must contain
/// `body`. Returns the failures.
fn https_requests(
    port: u16,
    ca: &Path,
    key: &PKey<Public>,
    body: &str,
    count: usize,
    threads: usize,
) -> Vec<String> {
    use openssl::ssl::{SslConnector, SslMethod, SslVersion};
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let one = |i: usize| -> Result<(), String> {
        let version = [SslVersion::TLS1_2, SslVersion::TLS1_3][i % 2];
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        builder.set_ca_file(ca).unwrap();
        builder.set_min_proto_version(Some(version)).unwrap();
        builder.set_max_proto_version(Some(version)).unwrap();
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        let mut tls = builder
            .build()
            .connect("localhost", tcp)
            .map_err(|e| format!("{version:?} handshake: {e}"))?;
        if tls.ssl().version2() != Some(version) {
            return Err(format!("{:?} instead of {version:?}", tls.ssl().version2()));
        }
        let presented = tls.ssl().peer_certificate().ok_or("no certificate")?;
        if !presented.public_key().unwrap().public_eq(key) {
            return Err("the certificate presented does not hold the cluster key".into());
        }
        tls.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        // Servers may close without a TLS close_notify: what arrived counts.
        let _ = tls.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        if !(answer.starts_with("HTTP/1.1 200") && answer.contains(body)) {
            return Err(format!("{version:?}: answer {answer:?}"));
        }
        Ok(())
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut failures = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= count {
                            return failures;
                        }
                        if let Err(e) = one(i) {
                            failures.push(format!("request {i}: {e}"));
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

#[test]
fn the_guide_runner_takes_only_the_sh_blocks() {
    let markdown = "# A guide\n\n```sh\necho one\n```\n\n```text\necho not run\n```\n\n\
                    - a step:\n\n  ```sh\n  cat <<EOF\n  two\n  EOF\n  ```\n\n\
                    ````markdown\n```sh\necho quoted\n```\n````\n";
    let blocks = support::guide::sh_blocks(markdown);
    assert_eq!(
        blocks,
        vec![
            (3, "echo one\n".to_owned()),
            (13, "cat <<EOF\ntwo\nEOF\n".to_owned())
        ]
    );
}

/// A guide whose command fails fails the test, with the guide's file and line, its output
/// and its daemon's log with the secret masked, and the daemon it started is stopped by
/// its pid file.
#[test]
fn a_failing_guide_fails_and_its_daemon_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failing.md");
    let markdown = "# A failing guide\n\n```sh\n: \"${SECRET:?}\"\n\
                    sleep 300 &\necho $! > \"$WORK/sleep.pid\"\necho \"started $!\"\n\
                    echo \"ready, $SECRET\" > \"$WORK/daemon.log\"\n```\n\n\
                    Then:\n\n```sh\necho \"the secret is $SECRET\"\nfalse\necho never\n```\n";
    std::fs::write(&path, markdown).unwrap();
    let failure = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let secret = "s3cr3t-value";
        Guide::run(&path, &[("SECRET", secret.into())], &[], &[secret], || {
            "diagnostics".into()
        })
    }))
    .map(|_| ())
    .unwrap_err();
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("failing.md:15: false: failed"),
        "{message}"
    );
    assert!(message.contains("daemon.log:\nready, ***"), "{message}");
    assert!(message.contains("the secret is ***"), "{message}");
    assert!(
        !message.contains("s3cr3t") && !message.contains("never"),
        "{message}"
    );
    assert!(message.contains("diagnostics"), "{message}");
    let sleep: u32 = message
        .lines()
        .find_map(|l| l.strip_prefix("started "))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    assert!(!support::guide::alive(sleep), "sleep {sleep} still runs");
}

/// docs/integrations/apache.md: Apache's mod_ssl, workers as `nobody`, TLS 1.2 and 1.3.
#[test]
fn apache_guide_serves_tls_with_the_token_key_from_unprivileged_workers() {
    let c = Client::new(&Setup::new(2, 3));
    c.root_only_tls_key();
    let port = free_port();
    let guide = c.guide(
        "apache.md",
        &[
            ("ITTC_KEY", KEY_URI.into()),
            ("PORT", port.to_string().into()),
        ],
    );
    let site = guide.file("site.pem");
    c.assert_certifies_the_key(&site);
    let diagnostics = || {
        format!(
            "guide:\n{}\nerror log:\n{}\nmodule log:\n{}",
            guide.output,
            std::fs::read_to_string(guide.file("error.log")).unwrap_or_default(),
            c.log()
        )
    };
    assert_unprivileged_workers(guide.pid("apache2.pid"), &diagnostics());
    let start = std::time::Instant::now();
    let failures = https_requests(port, &site, &c.fx.public(), "signed by the cluster", 50, 8);
    assert!(failures.is_empty(), "{failures:#?}\n{}", diagnostics());
    eprintln!(
        "apache: 50 handshakes from 8 threads in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// docs/integrations/nginx.md: nginx through the engine, workers as `nobody`.
#[test]
fn nginx_guide_serves_tls_with_the_token_key_from_unprivileged_workers() {
    let c = Client::new(&Setup::new(2, 3));
    c.root_only_tls_key();
    let port = free_port();
    // scripts/test unpacks Debian's nginx and names its binary here.
    let nginx = std::env::var_os("ITTC_TEST_NGINX").unwrap_or_else(|| "nginx".into());
    let guide = c.guide(
        "nginx.md",
        &[
            ("ITTC_KEY", KEY_URI.into()),
            ("PORT", port.to_string().into()),
            ("NGINX_BIN", nginx),
        ],
    );
    let site = guide.file("site.pem");
    c.assert_certifies_the_key(&site);
    let error_log = std::fs::read_to_string(guide.file("error.log")).unwrap_or_default();
    let diagnostics = format!("guide:\n{}\nerror log:\n{error_log}", guide.output);
    assert!(
        guide.output.contains("Peer signature type: RSA-PSS"),
        "{diagnostics}"
    );
    assert_unprivileged_workers(guide.pid("nginx.pid"), &diagnostics);
    let failures = https_requests(port, &site, &c.fx.public(), "signed by the cluster", 8, 2);
    assert!(
        failures.is_empty(),
        "{failures:#?}\n{diagnostics}\n{}",
        c.log()
    );
    let error_log = std::fs::read_to_string(guide.file("error.log")).unwrap_or_default();
    assert!(
        !error_log.contains("[crit]") && !error_log.contains("[emerg]"),
        "{error_log}"
    );
}

/// docs/integrations/ca.md: `openssl ca` with its key on the token. Every certificate and
/// the CRL must verify with the cluster's public key, bob's with RSA-PSS; OpenSSL with
/// the CRL accepts alice and bob and refuses carol, revoked.
#[test]
fn ca_guide_issues_revokes_and_publishes_a_crl_through_the_token() {
    use openssl::nid::Nid;
    use openssl::x509::X509Crl;

    let c = Client::new(&Setup::new(2, 3));
    let guide = c.guide("ca.md", &[("ITTC_KEY", KEY_URI.into())]);
    let ca = guide.work.join("ca");
    c.assert_certifies_the_key(&ca.join("ca.pem"));
    let key = c.fx.public();
    let mut serials = Vec::new();
    for (name, algorithm) in [
        ("alice", Nid::SHA256WITHRSAENCRYPTION),
        ("bob", Nid::RSASSAPSS),
        ("carol", Nid::SHA256WITHRSAENCRYPTION),
    ] {
        let cert = X509::from_pem(&std::fs::read(ca.join(format!("{name}.pem"))).unwrap()).unwrap();
        assert_eq!(
            cert.signature_algorithm().object().nid(),
            algorithm,
            "{name}"
        );
        assert!(cert.verify(&key).unwrap(), "{name}'s signature");
        serials.push(
            cert.serial_number()
                .to_bn()
                .unwrap()
                .to_hex_str()
                .unwrap()
                .to_string(),
        );
    }
    let crl = X509Crl::from_pem(&std::fs::read(ca.join("crl.pem")).unwrap()).unwrap();
    assert!(crl.verify(&key).unwrap(), "the CRL's signature");
    let revoked: Vec<String> = crl
        .get_revoked()
        .map(|stack| {
            stack
                .iter()
                .map(|r| {
                    r.serial_number()
                        .to_bn()
                        .unwrap()
                        .to_hex_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(revoked, vec![serials[2].clone()], "{}", guide.output);

    let verify = |name: &str| {
        let args: Vec<OsString> = vec![
            "verify".into(),
            "-crl_check".into(),
            "-CAfile".into(),
            ca.join("ca.pem").into(),
            "-CRLfile".into(),
            ca.join("crl.pem").into(),
            ca.join(format!("{name}.pem")).into(),
        ];
        let (status, out) = run("openssl", &args, &[], CLIENT_TIMEOUT);
        (status.success(), out)
    };
    for name in ["alice", "bob"] {
        let (ok, out) = verify(name);
        assert!(ok && out.contains(": OK"), "{name}: {out}");
    }
    let (ok, out) = verify("carol");
    assert!(!ok && out.contains("certificate revoked"), "carol: {out}");
}

/// docs/integrations/openssh.md: `ssh-keygen -D` prints the cluster key, and `sshd`
/// accepted exactly that key for the `ssh -I` login and the one through `ssh-agent`, each
/// of which ran its command.
#[test]
fn openssh_guide_logs_in_with_the_token_key() {
    let c = Client::new(&Setup::new(2, 3));
    let port = free_port();
    let guide = c.guide("openssh.md", &[("PORT", port.to_string().into())]);
    let authorized = guide.file("authorized_keys");
    let user = run("id", &["-un".into()], &[], CLIENT_TIMEOUT)
        .1
        .trim()
        .to_owned();
    let sshd_log = std::fs::read_to_string(guide.file("sshd.log")).unwrap_or_default();
    let diagnostics = format!("guide:\n{}\nsshd:\n{sshd_log}", guide.output);

    // The public key ssh-keygen -D printed is the cluster key.
    let args: Vec<OsString> = vec![
        "-e".into(),
        "-m".into(),
        "PKCS8".into(),
        "-f".into(),
        authorized.clone().into(),
    ];
    let (status, pem) = run("ssh-keygen", &args, &[], CLIENT_TIMEOUT);
    assert!(status.success(), "{pem}\n{diagnostics}");
    let printed = PKey::public_key_from_pem(pem.as_bytes()).unwrap();
    assert!(printed.public_eq(&c.fx.public()), "{diagnostics}");

    // Both logins ran their command, with that key.
    for line in [
        format!("logged in with ssh -I as {user}"),
        format!("logged in through ssh-agent as {user}"),
    ] {
        assert!(
            guide.output.lines().any(|l| l == line),
            "{line}\n{diagnostics}"
        );
    }
    let args: Vec<OsString> = vec!["-l".into(), "-f".into(), authorized.into()];
    let (status, listed) = run("ssh-keygen", &args, &[], CLIENT_TIMEOUT);
    assert!(status.success(), "{listed}");
    let fingerprint = listed.split_whitespace().nth(1).unwrap().to_owned();
    let accepted = format!("Accepted publickey for {user} from 127.0.0.1");
    let logins = sshd_log
        .lines()
        .filter(|l| l.starts_with(&accepted) && l.ends_with(&format!("RSA {fingerprint}")))
        .count();
    assert_eq!(logins, 2, "{fingerprint}\n{diagnostics}");
}

/// docs/integrations/nss.md: NSS's `tstclnt` authenticated to OpenSSL's server with the
/// certificate on the token and an RSA-PSS CertificateVerify by the token, which the
/// server checked against that certificate.
#[test]
fn nss_guide_authenticates_a_tls_client_with_the_token_key() {
    let c = Client::new(&Setup::new(2, 3));
    let port = free_port();
    let guide = c.guide(
        "nss.md",
        &[
            ("ITTC_KEY", KEY_URI.into()),
            ("ITTC_KEY_ID", hex::encode(KEY_ID).into()),
            ("PORT", port.to_string().into()),
        ],
    );
    c.assert_certifies_the_key(&guide.file("client.pem"));
    assert!(
        guide.output.contains(KEY_LABEL),
        "certutil -K:\n{}",
        guide.output
    );
    let page = std::fs::read_to_string(guide.file("page.txt")).unwrap_or_default();
    let diagnostics = format!(
        "{page}\nguide:\n{}\ntstclnt: {}\nmodule log:\n{}",
        guide.output,
        std::fs::read_to_string(guide.file("tstclnt.log")).unwrap_or_default(),
        c.log()
    );
    for line in [
        "HTTP/1.0 200 ok",
        "Client certificate",
        "Subject: CN=ittc nss client",
        // TLS 1.3 signs with RSA-PSS: the token's PSS, checked by OpenSSL.
        "Peer signature type: RSA-PSS",
    ] {
        assert!(page.contains(line), "{line}\n{diagnostics}");
    }
}

/// docs/integrations/java.md: `keytool` lists the token's key with its certificate,
/// `jarsigner` signs a jar through the token, and `jarsigner -verify` (Java's own RSA)
/// accepts it, signed by the certificate of the cluster key.
#[test]
fn java_guide_signs_a_jar_through_the_token() {
    let c = Client::new(&Setup::new(2, 3));
    let guide = c.guide(
        "java.md",
        &[
            ("ITTC_KEY", KEY_URI.into()),
            ("ITTC_KEY_ID", hex::encode(KEY_ID).into()),
        ],
    );
    c.assert_certifies_the_key(&guide.file("signer.pem"));
    assert!(
        guide.output.contains("java signer, PrivateKeyEntry"),
        "{}",
        guide.output
    );
    let args: Vec<OsString> = vec![
        "-verify".into(),
        "-verbose".into(),
        "-certs".into(),
        guide.file("app.jar").into(),
    ];
    let (status, verified) = run("jarsigner", &args, &[], CLIENT_TIMEOUT);
    assert!(status.success(), "{verified}\n{}", guide.output);
    assert!(verified.contains("jar verified."), "{verified}");
    assert!(
        verified.contains("Signed by \"CN=ittc java signer\""),
        "{verified}"
    );
}

/// NSS generates a key pair on the token for a certificate request (`certutil -R -k rsa`),
/// as it initialises every module: with `CKF_LIBRARY_CANT_CREATE_OS_THREADS`. The
/// appliances generate the key (1024 bits, which they allow here); OpenSSL verifies the
/// request's signature, the token holds its public key under the SHA-1 of the modulus
/// as `CKA_ID` (as NSS names keys), and signs with the private key.
#[test]
fn nss_generates_a_key_pair_on_the_token_for_a_certificate_request() {
    let c = Client::new(&Setup::keygen(2, 3));
    let (db_arg, pin_file) = c.nss_database();
    let noise = c.file("noise.bin");
    let mut bytes = [0u8; 2048];
    openssl::rand::rand_bytes(&mut bytes).unwrap();
    std::fs::write(&noise, bytes).unwrap();
    let request = c.file("nss-request.pem");
    c.run_ok(
        "certutil",
        &[
            "-R".as_ref(),
            "-d".as_ref(),
            &db_arg,
            "-h".as_ref(),
            "ittc".as_ref(),
            "-k".as_ref(),
            "rsa".as_ref(),
            "-g".as_ref(),
            "1024".as_ref(),
            "-s".as_ref(),
            "CN=ittc nss keygen".as_ref(),
            "-z".as_ref(),
            noise.as_os_str(),
            "-f".as_ref(),
            pin_file.as_os_str(),
            "-a".as_ref(),
            "-o".as_ref(),
            request.as_os_str(),
        ],
    );
    let args: Vec<OsString> = ["req", "-verify", "-noout", "-in"]
        .iter()
        .map(OsString::from)
        .chain([request.clone().into()])
        .collect();
    let (status, out) = run("openssl", &args, &[], CLIENT_TIMEOUT);
    assert!(
        status.success() && out.contains("verify OK"),
        "{status}\n{out}"
    );
    let req = openssl::x509::X509Req::from_pem(&std::fs::read(&request).unwrap()).unwrap();
    let public = req.public_key().unwrap();
    assert_eq!(public.bits(), 1024);
    assert!(req.verify(&public).unwrap());

    // The token's new public key is the request's.
    let id = hex::encode(openssl::sha::sha1(&public.rsa().unwrap().n().to_vec()));
    let on_token = c.file("generated.der");
    c.tool_ok(&[
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        &id,
        "--output-file",
        on_token.to_str().unwrap(),
    ]);
    let on_token =
        openssl::pkey::PKey::public_key_from_der(&std::fs::read(&on_token).unwrap()).unwrap();
    assert!(on_token.public_eq(&public));

    // And its private key signs.
    let (msg, sig) = (c.file("generated.msg"), c.file("generated.sig"));
    std::fs::write(&msg, b"signed with the key NSS had generated").unwrap();
    c.tool_ok(&[
        "--sign",
        "--login",
        "--pin",
        PIN,
        "--id",
        &id,
        "--mechanism",
        "SHA256-RSA-PKCS",
        "--input-file",
        msg.to_str().unwrap(),
        "--output-file",
        sig.to_str().unwrap(),
    ]);
    verify_pkcs1(
        &public,
        MessageDigest::sha256(),
        b"signed with the key NSS had generated",
        &std::fs::read(&sig).unwrap(),
    );
}
