//! Real PKCS#11 clients against the built module and real appliances: OpenSC's
//! `pkcs11-tool` and `p11-kit`, run as processes (bounded in time), with every result they
//! produce checked independently (OpenSSL and the public key). The module finds its
//! configuration through `ITTC_PKCS11_CONFIG`, set on the client process only.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::Duration;

use openssl::hash::MessageDigest;
use support::{Fixture, KEY_LABEL, PIN, Setup, module_path, run, verify_pkcs1, verify_pss};

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

    /// A self-signed certificate for the cluster key, `CN=cn`, written as `NAME.der` and
    /// `NAME.pem`; returns both paths.
    fn certificate(&self, cn: &str, name: &str) -> (PathBuf, PathBuf) {
        use openssl::asn1::Asn1Time;
        use openssl::x509::{X509, X509NameBuilder};

        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_text("CN", cn).unwrap();
        let subject = subject.build();
        let mut builder = X509::builder().unwrap();
        builder.set_version(2).unwrap();
        builder.set_subject_name(&subject).unwrap();
        builder.set_issuer_name(&subject).unwrap();
        builder.set_pubkey(&self.fx.public()).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(2).unwrap())
            .unwrap();
        builder
            .sign(&self.fx.openssl, MessageDigest::sha256())
            .unwrap();
        let certificate = builder.build();
        let (der, pem) = (
            self.file(&format!("{name}.der")),
            self.file(&format!("{name}.pem")),
        );
        std::fs::write(&der, certificate.to_der().unwrap()).unwrap();
        std::fs::write(&pem, certificate.to_pem().unwrap()).unwrap();
        (der, pem)
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

/// A child process in its own process group, killed with its group when dropped.
struct Background(std::process::Child);

impl Background {
    fn spawn(command: &mut std::process::Command) -> Self {
        use std::os::unix::process::CommandExt;
        let program = command.get_program().to_owned();
        Self(
            command
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{program:?} (./scripts/test provides it): {e}")),
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        support::wait_or_kill_group(&mut self.0, Duration::ZERO);
    }
}

/// Waits until `file`, which `process` writes, contains `text`, `process` has ended or
/// [`CLIENT_TIMEOUT`] has passed; returns what the file holds then.
fn wait_for(file: &std::path::Path, text: &str, process: &mut Background) -> String {
    let start = std::time::Instant::now();
    loop {
        let ended = !matches!(process.0.try_wait(), Ok(None));
        let contents = std::fs::read_to_string(file).unwrap_or_default();
        if contents.contains(text) || ended || start.elapsed() > CLIENT_TIMEOUT {
            return contents;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// NSS, as Firefox uses it for a client certificate: the module added to an NSS database
/// with `modutil`, then NSS's `tstclnt` authenticates to an OpenSSL TLS 1.3 server with
/// the certificate stored on the token, found by its nickname `ittc:LABEL`, and a
/// CertificateVerify signature made by the token (NSS has no copy of the key). The server
/// checks that signature and echoes the client certificate it accepted.
#[test]
fn nss_authenticates_a_tls_client_with_the_token_key() {
    let c = Client::new(&Setup::new(2, 3));
    let (cert_der, cert_pem) = c.certificate("ittc nss client", "nss-client");
    let cert_arg = cert_der.to_str().unwrap();
    c.tool_ok(&[
        "--login",
        "--pin",
        PIN,
        "--write-object",
        cert_arg,
        "--type",
        "cert",
        "--id",
        "01",
        "--label",
        "nss client",
    ]);

    let (db_arg, pin_file) = c.nss_database();
    let nss = |program: &str, args: &[&OsStr]| c.run_ok(program, args);
    let keys = nss(
        "certutil",
        &[
            "-K".as_ref(),
            "-d".as_ref(),
            &db_arg,
            "-h".as_ref(),
            "ittc".as_ref(),
            "-f".as_ref(),
            pin_file.as_os_str(),
        ],
    );
    assert!(keys.contains("rsa") && keys.contains(KEY_LABEL), "{keys}");

    // The server, on loopback only; it requires a client certificate signed by itself.
    let (server_cert, server_key) = (c.file("nss-server.pem"), c.file("nss-server.key"));
    openssl(&[
        "req".as_ref(),
        "-x509".as_ref(),
        "-newkey".as_ref(),
        "rsa:2048".as_ref(),
        "-nodes".as_ref(),
        "-subj".as_ref(),
        "/CN=localhost".as_ref(),
        "-days".as_ref(),
        "2".as_ref(),
        "-keyout".as_ref(),
        server_key.as_os_str(),
        "-out".as_ref(),
        server_cert.as_os_str(),
    ]);
    let port = free_port();
    let server_out = c.file("s_server.out");
    let mut server = Background::spawn(
        std::process::Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(&server_cert)
            .arg("-key")
            .arg(&server_key)
            .arg("-CAfile")
            .arg(&cert_pem)
            .args([
                "-Verify",
                "1",
                "-verify_return_error",
                "-www",
                "-naccept",
                "1",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&server_out).unwrap())
            .stderr(std::process::Stdio::null()),
    );
    let listening = wait_for(&server_out, "ACCEPT", &mut server);
    assert!(listening.contains("ACCEPT"), "{listening}");

    // NSS's client asks for a page; the answer describes the accepted client certificate.
    let client_out = c.file("tstclnt.out");
    let mut client = Background::spawn(
        std::process::Command::new("tstclnt")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o"])
            .args(["-V", "tls1.3:tls1.3", "-n", "ittc:nss client"])
            .arg("-d")
            .arg(&db_arg)
            .arg("-W")
            .arg(&pin_file)
            .envs(c.env())
            .stdin(std::process::Stdio::piped())
            .stdout(std::fs::File::create(&client_out).unwrap())
            .stderr(std::fs::File::create(c.file("tstclnt.err")).unwrap()),
    );
    {
        use std::io::Write;
        let mut stdin = client.0.stdin.take().unwrap();
        stdin.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    }
    let page = wait_for(&client_out, "Subject Public Key Info", &mut client);
    let diagnostics = || {
        format!(
            "{page}\ntstclnt: {}\ns_server: {}\nmodule log:\n{}",
            std::fs::read_to_string(c.file("tstclnt.err")).unwrap_or_default(),
            std::fs::read_to_string(&server_out).unwrap_or_default(),
            c.log()
        )
    };
    assert!(page.contains("HTTP/1.0 200 ok"), "{}", diagnostics());
    assert!(page.contains("Client certificate"), "{}", diagnostics());
    assert!(
        page.contains("Subject: CN=ittc nss client"),
        "{}",
        diagnostics()
    );
    // TLS 1.3 signs with RSA-PSS: the token's PSS, checked by OpenSSL.
    assert!(
        page.contains("Peer signature type: RSA-PSS"),
        "{}",
        diagnostics()
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

/// nginx serving HTTPS with the cluster key through OpenSSL's PKCS#11 engine (Debian's
/// `libengine-pkcs11-openssl`), the way a web server is meant to use ittc: the master
/// loads the key as root, forks workers that run as `nobody` and can no longer read the
/// module's TLS files, and every handshake a worker makes is signed by the token. OpenSSL's
/// client checks each handshake's signature against the certificate of the cluster key.
#[test]
fn nginx_serves_tls_with_the_token_key_from_unprivileged_workers() {
    let c = Client::new(&Setup::new(2, 3));
    // As deployed: the module's TLS key readable by root only, so not by the workers.
    {
        use std::os::unix::fs::PermissionsExt;
        let key = c.file("client.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (_, cert_pem) = c.certificate("localhost", "nginx");
    let root = c.file("nginx");
    std::fs::create_dir_all(&root).unwrap();
    let port = free_port();
    let config = format!(
        "daemon off;\n\
         master_process on;\n\
         worker_processes 2;\n\
         pid {root}/nginx.pid;\n\
         error_log {root}/error.log info;\n\
         env ITTC_PKCS11_CONFIG;\n\
         env ITTC_PKCS11_LOG;\n\
         env PKCS11_MODULE_PATH;\n\
         ssl_engine pkcs11;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {root}/body;\n\
           proxy_temp_path {root}/proxy;\n\
           fastcgi_temp_path {root}/fastcgi;\n\
           uwsgi_temp_path {root}/uwsgi;\n\
           scgi_temp_path {root}/scgi;\n\
           server {{\n\
             listen 127.0.0.1:{port} ssl;\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n\
             ssl_certificate {cert};\n\
             ssl_certificate_key \"engine:pkcs11:pkcs11:token=ittc;id=%01;type=private;pin-value={PIN}\";\n\
             location / {{ return 200 \"signed by the cluster\\n\"; }}\n\
           }}\n\
         }}\n",
        root = root.display(),
        cert = cert_pem.display(),
    );
    let config_file = root.join("nginx.conf");
    std::fs::write(&config_file, config).unwrap();
    let mut env = c.env();
    env.push(("PKCS11_MODULE_PATH", module_path().into()));
    // scripts/test unpacks Debian's nginx and names its binary here.
    let program = std::env::var_os("ITTC_TEST_NGINX").unwrap_or_else(|| "nginx".into());
    let mut nginx = Background::spawn(
        std::process::Command::new(&program)
            .arg("-c")
            .arg(&config_file)
            .arg("-p")
            .arg(&root)
            .arg("-e")
            .arg(root.join("error.log"))
            .envs(env.clone())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let error_log = root.join("error.log");
    let started = wait_for(&error_log, "start worker process", &mut nginx);
    let up = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            up.elapsed() < CLIENT_TIMEOUT && matches!(nginx.0.try_wait(), Ok(None)),
            "nginx is not listening:\n{started}\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Several handshakes, so that both workers are likely to sign.
    for _ in 0..4 {
        let args: Vec<OsString> = [
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-tls1_3",
            "-CAfile",
            cert_pem.to_str().unwrap(),
            "-verify_return_error",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let (status, out) = run("openssl", &args, &[], CLIENT_TIMEOUT);
        let diagnostics = || {
            format!(
                "{out}\nnginx:\n{}\nmodule log:\n{}",
                std::fs::read_to_string(&error_log).unwrap_or_default(),
                c.log()
            )
        };
        assert!(status.success(), "{}", diagnostics());
        assert!(
            out.contains("Verify return code: 0 (ok)"),
            "{}",
            diagnostics()
        );
        assert!(
            out.contains("Peer signature type: RSA-PSS"),
            "{}",
            diagnostics()
        );
    }
    let log = std::fs::read_to_string(&error_log).unwrap_or_default();
    assert!(!log.contains("[crit]") && !log.contains("[emerg]"), "{log}");
}

/// Java's SunPKCS11 provider, for code signing: `keytool` lists the token's key (with the
/// certificate stored next to it) as a private-key entry, `jarsigner` signs a jar through
/// the token, and `jarsigner -verify` (Java's own RSA) accepts the signature and names
/// the certificate of the cluster key.
#[test]
fn java_signs_a_jar_through_the_token() {
    let c = Client::new(&Setup::new(2, 3));
    let (cert_der, _) = c.certificate("ittc java signer", "java-signer");
    c.tool_ok(&[
        "--login",
        "--pin",
        PIN,
        "--write-object",
        cert_der.to_str().unwrap(),
        "--type",
        "cert",
        "--id",
        "01",
        "--label",
        "java signer",
    ]);
    let provider_config = c.file("sunpkcs11.cfg");
    std::fs::write(
        &provider_config,
        format!(
            "name = ittc\nlibrary = {}\nslot = 1\n",
            module_path().display()
        ),
    )
    .unwrap();
    let java = |program: &str, args: &[&OsStr]| c.run_ok(program, args);
    let keystore: Vec<&OsStr> = vec![
        "-keystore".as_ref(),
        "NONE".as_ref(),
        "-storetype".as_ref(),
        "PKCS11".as_ref(),
        "-providerClass".as_ref(),
        "sun.security.pkcs11.SunPKCS11".as_ref(),
        "-providerArg".as_ref(),
        provider_config.as_os_str(),
        "-storepass".as_ref(),
        PIN.as_ref(),
    ];
    let mut list: Vec<&OsStr> = vec!["-list".as_ref()];
    list.extend(&keystore);
    let listed = java("keytool", &list);
    assert!(listed.contains("java signer, PrivateKeyEntry"), "{listed}");

    let content = c.file("jar-content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("hello.txt"), b"signed by a threshold key\n").unwrap();
    let jar = c.file("app.jar");
    java(
        "jar",
        &[
            "cf".as_ref(),
            jar.as_os_str(),
            "-C".as_ref(),
            content.as_os_str(),
            ".".as_ref(),
        ],
    );
    let mut sign = keystore.clone();
    sign.extend::<[&OsStr; 4]>([
        "-sigalg".as_ref(),
        "SHA256withRSA".as_ref(),
        jar.as_os_str(),
        "java signer".as_ref(),
    ]);
    java("jarsigner", &sign);
    let verified = java(
        "jarsigner",
        &[
            "-verify".as_ref(),
            "-verbose".as_ref(),
            "-certs".as_ref(),
            jar.as_os_str(),
        ],
    );
    assert!(verified.contains("jar verified."), "{verified}");
    assert!(
        verified.contains("Signed by \"CN=ittc java signer\""),
        "{verified}"
    );
}
