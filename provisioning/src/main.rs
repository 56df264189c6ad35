//! `ittc`: the operator's command line. Every subcommand has `--help`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory as _, Parser, Subcommand};
use ittc_provisioning::cluster::{Cluster, locate};
use ittc_provisioning::{
    CliError, add, audit, cert, demo, generate, import, init, pin, prompt, refresh, replace,
    reshare, status, token,
};
use ittc_threshold::RsaPrivateKey;
use ittc_wire::UserKind;
use ittc_wire::cluster::FILE_NAME;

/// Set up and run an ittc cluster: an RSA key split among share appliances.
#[derive(Parser)]
#[command(name = "ittc", version, about, propagate_version = true)]
struct Cli {
    /// The cluster folder (made by `ittc init`); default: $ITTC_CLUSTER, then the current
    /// folder.
    #[arg(long, global = true, value_name = "DIR")]
    cluster: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a cluster: CA, certificates, sealing keys, appliance configs, pkcs11.toml.
    Init {
        /// Number of appliances (n).
        #[arg(long)]
        appliances: u8,
        /// How many make a signature (k).
        #[arg(long)]
        threshold: u8,
        /// The folder to create.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Where appliance INDEX listens and is reached (default 127.0.0.1:7300+INDEX).
        #[arg(long = "host", value_name = "INDEX=HOST:PORT", value_parser = parse_host)]
        hosts: Vec<(u8, String)>,
    },
    /// Keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// PINs, on every appliance.
    Pin {
        #[command(subcommand)]
        action: PinAction,
    },
    /// Appliances and keys: reachable, versions, epochs, how many failures each key
    /// survives, refreshes.
    ///
    /// Exit status: 0 when every key is usable, no key's last refresh failed and every
    /// holder has each key's current epoch; 1 when a key is unusable, no appliance answers,
    /// or the command itself fails; 2 on wrong arguments; 3 when every key is usable but a
    /// key's last refresh failed and none has succeeded since; 4 when every key is usable
    /// and refreshes succeed but a holder is behind or does not answer.
    Status {
        /// Machine-readable output (with --watch, one JSON document per line).
        #[arg(long)]
        json: bool,
        /// Ask again every SECONDS (1 without a value) until interrupted: a terminal is
        /// redrawn each time; elsewhere each report follows the last, after a line with the
        /// time.
        #[arg(
            long,
            value_name = "SECONDS",
            num_args = 0..=1,
            default_missing_value = "1",
            value_parser = clap::value_parser!(u64).range(1..=3600)
        )]
        watch: Option<u64>,
        /// With --watch: stop after this many reports, with the exit status of the last.
        #[arg(long, requires = "watch", value_parser = clap::value_parser!(u32).range(1..))]
        count: Option<u32>,
    },
    /// Checks this host's cluster folder and the appliances it names, and says what to
    /// fix: private key files readable by others, certificates expired or expiring
    /// within 30 days, appliances that do not answer or whose clock is more than 5 s off
    /// this host's, two appliances of the same build variant.
    ///
    /// Exit status: 0 when nothing needs fixing (warnings included), 1 when something does
    /// or the folder cannot be read, 2 on wrong arguments.
    Doctor,
    /// Certificates.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// The appliances' audit logs.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Sign a file with SHA256-RSA-PKCS through the PKCS#11 module, as an application does
    /// (the module finds its cluster through $ITTC_PKCS11_CONFIG or its usual places).
    Sign {
        /// The key's id (CKA_ID), hex.
        #[arg(long, value_parser = parse_hex)]
        id: HexId,
        /// The user PIN, from the first line of FILE (else asked for).
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
        /// The module (default: libittc_pkcs11.so next to this program, else the installed
        /// one).
        #[arg(long, value_name = "PATH")]
        module: Option<PathBuf>,
        /// The file to sign.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the signature.
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
    },
    /// A local 2-of-3 demo cluster with a key, and a signature through it.
    Demo {
        /// The demo folder.
        #[arg(long, value_name = "DIR", default_value = "ittc-demo")]
        dir: PathBuf,
        /// The user PIN the demo sets (a demo only: never give a real PIN on a command line).
        #[arg(long, default_value = "1234")]
        pin: String,
        /// Stop the demo's appliances.
        #[arg(long)]
        stop: bool,
        /// The build variants for the appliances, as `scripts/variants` writes them
        /// (appliance i runs variant i; default: `variants/` beside this program's build
        /// folder, i.e. target/variants, else the installed ones, /usr/lib/ittc/variants).
        #[arg(long, value_name = "DIR")]
        variants: Option<PathBuf>,
    },
    /// Appliances: add one, or replace a lost or compromised one.
    Appliance {
        #[command(subcommand)]
        action: ApplianceAction,
    },
    /// The cluster as a whole: move every key to a new threshold and set of appliances.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Write the man pages of ittc and of each of its subcommands (section 1, roff) into
    /// DIR, for the Debian package (scripts/package). Hidden: not an operator's command.
    #[command(hide = true)]
    Man {
        /// The folder to write them to (made if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Move every key to a new sharing: THRESHOLD of the appliances in LIST (grow 2-of-3 to
    /// 3-of-5, retire an appliance). The key itself does not change.
    ///
    /// Each key is reshared like a refresh (its epoch goes up by one): the appliances of
    /// its current epoch give the new ones fresh shares, with no moment at which fewer
    /// than the old or the new threshold can sign; an appliance left out erases its share
    /// once the new epoch is committed. A new appliance must be in pkcs11.toml (`ittc
    /// appliance add`) and running with an empty data folder. When every key is on the new
    /// sharing, pkcs11.toml takes the new threshold and no longer names the appliances
    /// left out. Keys already on the new sharing are skipped, so the command can be run
    /// again after a failure. Exits 1 if any key was not reshared.
    Reshare {
        /// How many appliances make a signature (k) from now on.
        #[arg(long)]
        threshold: u8,
        /// Every appliance that holds a share from now on, by index: `1,3,4,5`.
        #[arg(long, value_name = "LIST")]
        appliances: String,
        /// Seconds to wait for each key's reshare.
        #[arg(long, value_name = "SECONDS", default_value_t = refresh::DEFAULT_TIMEOUT.as_secs())]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum ApplianceAction {
    /// Put a new appliance in the place of a lost or compromised one, at the same index.
    ///
    /// In the cluster folder (it needs ca.key): a new certificate, key, sealing key and
    /// configuration for appliance INDEX (the old files kept as *.old; the new
    /// configuration has an empty data folder), the new address in pkcs11.toml and in the
    /// other appliances' configurations, and the old certificate's serial in pkcs11.toml's
    /// `revoked` list. Then every other appliance puts the old certificate on its
    /// deny-list: from then on it refuses it, as a client's and as a peer's.
    ///
    /// Appliances that cannot be reached are named; run the same command again to reach
    /// them (it issues nothing new while a replacement is under way). Once every other
    /// appliance has been told, the replacement is over: running the command again after
    /// that replaces the appliance once more.
    ///
    /// Start the new appliance with its new files and an empty data folder: it takes the
    /// token objects, PINs and deny-list from its peers by itself.
    Replace {
        /// The index of the appliance to replace.
        #[arg(long)]
        index: u8,
        /// Where the new appliance is reached: HOST:PORT, or HOST to keep the port
        /// (default: the old address).
        #[arg(long, value_name = "HOST[:PORT]")]
        host: Option<String>,
    },
    /// Add an appliance to the cluster folder: the first step of growing the cluster.
    ///
    /// In the cluster folder (it needs ca.key): a certificate, key, sealing key and
    /// configuration for the new appliance, as `ittc init` writes them (an empty data
    /// folder, every other appliance as a peer, the cluster's revoked certificates refused);
    /// a `[[peers]]` entry for it in the other appliances' configurations; and the appliance
    /// in pkcs11.toml (the threshold stays). No appliance is asked anything.
    ///
    /// If the command is interrupted, run it again: it issues nothing new while an
    /// addition is under way (the file appliance-INDEX.adding says so) and only finishes
    /// it.
    ///
    /// Then start the new appliance with its files and an empty data folder: it takes the
    /// token objects, PINs and deny-list from its peers by itself. Restart the others one
    /// at a time so that they know their new peer, and give the new appliance shares of
    /// the keys with `ittc cluster reshare`.
    Add {
        /// The new appliance's index (default: the lowest that neither pkcs11.toml nor an
        /// appliance-INDEX.* file in the folder uses).
        #[arg(long)]
        index: Option<u8>,
        /// Where the new appliance is reached: HOST:PORT, or HOST for port 7300+INDEX
        /// (default: 127.0.0.1:7300+INDEX).
        #[arg(long, value_name = "HOST[:PORT]")]
        host: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Split an existing RSA key (PKCS#1 or PKCS#8, PEM or DER, encrypted PKCS#8) among the
    /// appliances. The key file stays the only whole copy: destroy it afterwards.
    Import {
        /// Label (CKA_LABEL).
        #[arg(long)]
        label: String,
        /// Key id (CKA_ID), hex.
        #[arg(long, value_parser = parse_hex)]
        id: HexId,
        /// A certificate for the key (PEM or DER), stored with the same id.
        #[arg(long, value_name = "CERT")]
        cert: Option<PathBuf>,
        /// Passphrase of an encrypted key, from a file (else asked for).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// The key file.
        keyfile: PathBuf,
    },
    /// Generate a new RSA key on the appliances without a dealer (Boneh–Franklin): no
    /// whole private key ever exists anywhere.
    Generate {
        /// Modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: u16,
        /// Public exponent (a prime larger than the number of appliances).
        #[arg(long, default_value_t = 65537)]
        e: u64,
        /// Label (CKA_LABEL).
        #[arg(long)]
        label: String,
        /// Key id (CKA_ID), hex.
        #[arg(long, value_parser = parse_hex)]
        id: HexId,
        /// Seconds to wait for the appliances (which give up after their own
        /// keygen.timeout_ms).
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// Refresh keys now: a new sharing of each key (its epoch goes up by one), the old
    /// shares erased; the key itself does not change.
    ///
    /// Appliance 1 also refreshes every key on its own schedule (refresh.interval, unless
    /// 0). One appliance coordinates each refresh: the lowest-indexed reachable one that
    /// has the key's current epoch. Exits 1 if any key was not refreshed.
    Refresh {
        #[command(flatten)]
        keys: WhichKeys,
        /// Seconds to wait for each key's refresh (the appliance gives up after its own
        /// refresh.timeout_ms, 60 s by default).
        #[arg(long, value_name = "SECONDS", default_value_t = refresh::DEFAULT_TIMEOUT.as_secs())]
        timeout: u64,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct WhichKeys {
    /// The key's id (CKA_ID), hex.
    #[arg(long, value_parser = parse_hex)]
    id: Option<HexId>,
    /// Every committed key, in id order.
    #[arg(long)]
    all: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Who {
    /// The user PIN.
    #[arg(long)]
    user: bool,
    /// The security officer's PIN.
    #[arg(long)]
    so: bool,
}

impl Who {
    fn kind(&self) -> UserKind {
        if self.so {
            UserKind::SecurityOfficer
        } else {
            UserKind::User
        }
    }
}

#[derive(Subcommand)]
enum AuditAction {
    /// Every appliance checks its audit chain, through its export files and its store,
    /// and names the first broken entry. Exit status 0 when every chain is intact, 1 when
    /// one is broken or an appliance does not answer.
    Verify,
}

#[derive(Subcommand)]
enum PinAction {
    /// Set (or reset, which also unlocks) a PIN.
    Set {
        #[command(flatten)]
        who: Who,
        /// Read the PIN from the first line of FILE (else asked for twice).
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
    },
    /// Change a PIN, given the old one.
    Change {
        #[command(flatten)]
        who: Who,
        /// The old PIN, from a file (else asked for).
        #[arg(long, value_name = "FILE")]
        old_pin_file: Option<PathBuf>,
        /// The new PIN, from a file (else asked for twice).
        #[arg(long, value_name = "FILE")]
        new_pin_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertAction {
    /// Store a certificate object for key ID on every appliance.
    Add {
        /// The key's id (CKA_ID), hex.
        #[arg(long, value_parser = parse_hex)]
        id: HexId,
        /// Label (default: the subject's common name).
        #[arg(long)]
        label: Option<String>,
        /// The certificate (PEM or DER).
        cert: PathBuf,
    },
    /// Issue a new certificate and key for an appliance (or the client or admin) with the
    /// cluster CA in the cluster folder; the old files are kept as *.old.
    Renew {
        /// Appliance index.
        #[arg(long, group = "whom")]
        appliance: Option<u8>,
        /// The PKCS#11 client certificate.
        #[arg(long, group = "whom")]
        client: bool,
        /// The admin certificate.
        #[arg(long, group = "whom")]
        admin: bool,
    },
}

/// A key id given in hex.
#[derive(Clone, Debug)]
struct HexId(Vec<u8>);

fn parse_hex(s: &str) -> Result<HexId, String> {
    let bytes = hex::decode(s).map_err(|e| format!("not hex: {e}"))?;
    if bytes.is_empty() || bytes.len() > 64 {
        return Err("1 to 64 bytes".into());
    }
    Ok(HexId(bytes))
}

fn parse_host(s: &str) -> Result<(u8, String), String> {
    let (index, address) = s.split_once('=').ok_or("expected INDEX=HOST:PORT")?;
    let index: u8 = index
        .parse()
        .map_err(|_| format!("{index:?} is not an appliance index"))?;
    if !address.contains(':') {
        return Err("expected HOST:PORT after =".into());
    }
    Ok((index, address.to_owned()))
}

fn step(message: &str) {
    eprintln!("==> {message}");
}

/// The spinner of `ittc key generate`: each step, then the counters while the appliances
/// search ("generating: candidates 12 345 · biprimality tests 7 · 4.2 s").
struct GenerateBar<'a>(&'a indicatif::ProgressBar);

impl generate::Progress for GenerateBar<'_> {
    fn step(&self, step: &str) {
        self.0.set_message(step.to_owned());
    }

    fn counts(&self, counts: &ittc_wire::KeygenProgress) {
        self.0
            .set_message(format!("generating: {}", generate::describe(counts)));
    }
}

/// What `ittc key refresh` shows: on a terminal, a spinner with each key's stage and the
/// result lines above it; otherwise only the result lines. Results go to standard output,
/// failures to standard error.
struct RefreshOutput(
    Option<indicatif::ProgressBar>,
    fn(&refresh::KeyRefresh) -> String,
);

impl RefreshOutput {
    fn new(line: fn(&refresh::KeyRefresh) -> String) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None, line);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Self(Some(bar), line)
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl refresh::Progress for RefreshOutput {
    fn started(&self, id: &str, coordinator: u8) {
        if let Some(bar) = &self.0 {
            bar.reset_elapsed();
            bar.set_message(refresh::describe(id, coordinator, None));
        }
    }

    fn stage(&self, id: &str, coordinator: u8, progress: &ittc_wire::RefreshProgress) {
        if let Some(bar) = &self.0 {
            bar.set_message(refresh::describe(id, coordinator, Some(progress)));
        }
    }

    fn finished(&self, result: &refresh::KeyRefresh) {
        let print = || {
            if result.result.is_ok() {
                println!("{}", (self.1)(result));
            } else {
                eprintln!("{}", (self.1)(result));
            }
        };
        match &self.0 {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let cluster_dir = locate(cli.cluster);
    match cli.command {
        Command::Init {
            appliances,
            threshold,
            out,
            hosts,
        } => {
            let config = init::init(&init::InitOptions {
                appliances,
                threshold,
                out: out.clone(),
                hosts,
            })?;
            println!(
                "cluster {} ({threshold}-of-{appliances}) written to {}",
                config.cluster_id,
                out.display()
            );
            println!(
                "next: copy ca.pem and appliance-<i>.* to each appliance host (see docs/operations.md),"
            );
            println!(
                "      start them, then `ittc --cluster {} pin set --user` and `ittc key import`.",
                out.display()
            );
            println!("keep ca.key offline: it can issue certificates for this cluster.");
        }
        Command::Key {
            action:
                KeyAction::Generate {
                    bits,
                    e,
                    label,
                    id: HexId(id),
                    timeout,
                },
        } => {
            let cluster = Cluster::open(&cluster_dir)?;
            let spec = generate::GenerateSpec {
                bits,
                public_exponent: e,
                id: &id,
                label: &label,
                timeout: std::time::Duration::from_secs(timeout),
            };
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            let generated = generate::generate_with_progress(&cluster, &spec, &GenerateBar(&bar));
            bar.finish_and_clear();
            let generated = generated?;
            let stats = &generated.stats;
            println!(
                "generated RSA-{} key id {} \"{label}\" as {}-of-{} shares in {:.1} s; checked \
                 with a trial operation.",
                generated.public.bits(),
                hex::encode(&id),
                generated.threshold,
                generated.parties,
                generated.elapsed.as_secs_f64()
            );
            println!(
                "candidates tried: {}, biprimality tests: {}, batches: {}, rounds: {}",
                stats.candidates, stats.biprimality_tests, stats.batches, stats.rounds
            );
        }
        Command::Key {
            action: KeyAction::Refresh { keys, timeout },
        } => {
            let cluster = Cluster::open(&cluster_dir)?;
            let which = match &keys.id {
                Some(HexId(id)) => refresh::Which::Key(id),
                None => refresh::Which::All,
            };
            let output = RefreshOutput::new(refresh::KeyRefresh::line);
            let results = refresh::refresh(
                &cluster,
                which,
                std::time::Duration::from_secs(timeout),
                &output,
            );
            output.finish();
            let results = results?;
            let failed = results.iter().filter(|r| r.result.is_err()).count();
            if results.is_empty() {
                println!("no committed key to refresh.");
            } else if failed > 0 {
                if keys.all {
                    eprintln!("ittc: {failed} of {} keys not refreshed", results.len());
                }
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Cluster {
            action:
                ClusterAction::Reshare {
                    threshold,
                    appliances,
                    timeout,
                },
        } => {
            let target = reshare::Target::parse(threshold, &appliances)?;
            let cluster = Cluster::open(&cluster_dir)?;
            let output = RefreshOutput::new(reshare::line);
            let done = reshare::reshare(
                &cluster,
                &target,
                std::time::Duration::from_secs(timeout),
                &output,
            );
            output.finish();
            let done = done?;
            for id in &done.unchanged {
                println!(
                    "key {id}: already {} of {:?}",
                    target.threshold, target.appliances
                );
            }
            if !done.complete() {
                let failed = done.results.iter().filter(|r| r.result.is_err()).count();
                eprintln!(
                    "ittc: {failed} of {} keys not reshared; {FILE_NAME} is unchanged. Run the \
                     same command again to finish.",
                    done.results.len() + done.unchanged.len()
                );
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "{FILE_NAME}: threshold {}, appliances {:?}",
                target.threshold, target.appliances
            );
            if !done.dropped.is_empty() {
                println!(
                    "appliances {:?} hold no share any more and are no longer in {FILE_NAME}; \
                     their certificates are revoked: stop them and wipe their data folders.",
                    done.dropped
                );
            }
            for line in &done.not_erased {
                eprintln!("warning: {line}: its old shares may remain; wipe its data folder");
            }
            if done.revoked > 0 {
                println!(
                    "appliances that refuse the {} revoked certificate(s) now: {:?}",
                    done.revoked, done.revoked_on
                );
            }
            if !done.not_reached.is_empty() {
                for line in &done.not_reached {
                    eprintln!("not reached: {line}");
                }
                eprintln!("ittc: run the same command again to reach them");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Key {
            action:
                KeyAction::Import {
                    label,
                    id: HexId(id),
                    cert,
                    passphrase_file,
                    keyfile,
                },
        } => {
            let cluster = Cluster::open(&cluster_dir)?;
            let data = zeroize::Zeroizing::new(
                std::fs::read(&keyfile).map_err(|e| CliError::file(&keyfile, e))?,
            );
            let passphrase = if RsaPrivateKey::is_encrypted(&data) {
                Some(match passphrase_file {
                    Some(f) => prompt::secret_from_file(&f)?,
                    None => prompt::ask("passphrase of the key file: ", false)?,
                })
            } else {
                None
            };
            let key = RsaPrivateKey::from_bytes(&data, passphrase.as_ref().map(|p| p.as_slice()))?;
            let cert_der = cert.as_deref().map(cert::read_certificate).transpose()?;
            let imported = import::import(&cluster, &key, &id, &label, cert_der.as_deref(), &step)?;
            drop(key);
            println!(
                "imported RSA-{} key id {} \"{label}\" as {}-of-{} shares; checked with a trial operation.",
                imported.bits,
                hex::encode(&imported.id),
                imported.threshold,
                imported.parties
            );
            println!(
                "{} is now the only whole copy of this key: destroy it (e.g. shred -u {}) unless you \
                 keep it offline on purpose.",
                keyfile.display(),
                keyfile.display()
            );
        }
        Command::Pin {
            action: PinAction::Set { who, pin_file },
        } => {
            let cluster = Cluster::open(&cluster_dir)?;
            let value = prompt::pin(pin_file.as_deref(), "new PIN: ", true)?;
            pin::set(&cluster, who.kind(), &value)?;
            println!("PIN set on {} appliances.", cluster.parties());
        }
        Command::Pin {
            action:
                PinAction::Change {
                    who,
                    old_pin_file,
                    new_pin_file,
                },
        } => {
            let cluster = Cluster::open(&cluster_dir)?;
            let old = prompt::pin(old_pin_file.as_deref(), "current PIN: ", false)?;
            let new = prompt::pin(new_pin_file.as_deref(), "new PIN: ", true)?;
            pin::change(&cluster, who.kind(), &old, &new)?;
            println!("PIN changed on {} appliances.", cluster.parties());
        }
        Command::Audit {
            action: AuditAction::Verify,
        } => {
            let cluster = Cluster::open(&cluster_dir)?;
            let checked = audit::verify(&cluster);
            for c in &checked {
                println!("{}", c.render());
            }
            if !checked.iter().all(audit::Checked::intact) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Status {
            json,
            watch: Some(every),
            count,
        } => {
            let cluster = Cluster::open(&cluster_dir)?;
            let every = std::time::Duration::from_secs(every);
            let code = status::watch(&cluster, every, count, json);
            if code != 0 {
                return Ok(ExitCode::from(code));
            }
        }
        Command::Status {
            json, watch: None, ..
        } => {
            let cluster = Cluster::open(&cluster_dir)?;
            let report = status::status(&cluster);
            if json {
                let text = serde_json::to_string_pretty(&report)
                    .map_err(|e| CliError::Usage(e.to_string()))?;
                println!("{text}");
            } else {
                print!("{}", report.render());
            }
            let code = report.exit_code();
            if code != 0 {
                return Ok(ExitCode::from(code));
            }
        }
        Command::Doctor => {
            let cluster = Cluster::open(&cluster_dir)?;
            let (text, code) =
                ittc_provisioning::doctor::render(&ittc_provisioning::doctor::doctor(&cluster));
            print!("{text}");
            if code != 0 {
                return Ok(ExitCode::from(code));
            }
        }
        Command::Cert {
            action:
                CertAction::Add {
                    id: HexId(id),
                    label,
                    cert,
                },
        } => {
            let cluster = Cluster::open(&cluster_dir)?;
            let der = cert::read_certificate(&cert)?;
            let object = cert::certificate_object(&der, &id, label.as_deref())?;
            cert::store_everywhere(&cluster, &object)?;
            println!(
                "certificate stored for key id {} on {} appliances.",
                hex::encode(&id),
                cluster.parties()
            );
        }
        Command::Cert {
            action:
                CertAction::Renew {
                    appliance,
                    client,
                    admin,
                },
        } => {
            let role = match (appliance, client, admin) {
                (Some(i), false, false) => ittc_wire::identity::Role::Appliance(i),
                (None, true, false) => ittc_wire::identity::Role::Client,
                (None, false, true) => ittc_wire::identity::Role::Admin,
                _ => {
                    return Err(CliError::Usage(
                        "name one of --appliance I, --client, --admin".into(),
                    ));
                }
            };
            let name = cert::renew(&cluster_dir, role)?;
            println!(
                "new {name}.pem and {name}.key in {} (old ones kept as .old).",
                cluster_dir.display()
            );
            if let ittc_wire::identity::Role::Appliance(i) = role {
                println!(
                    "copy them to appliance {i}'s host and restart it (systemctl restart ittc-appliance@{i})."
                );
            }
        }
        Command::Sign {
            id: HexId(id),
            pin_file,
            module,
            input,
            output,
        } => {
            let module = module.or_else(token::default_module).ok_or_else(|| {
                CliError::Usage(format!(
                    "no {} next to ittc nor installed: give --module PATH",
                    token::MODULE_FILE
                ))
            })?;
            let pin = prompt::pin(pin_file.as_deref(), "user PIN: ", false)?;
            let pin = String::from_utf8(pin.to_vec())
                .map_err(|_| CliError::Usage("the PIN is not UTF-8".into()))?;
            let message = std::fs::read(&input).map_err(|e| CliError::file(&input, e))?;
            let signature = token::sign_sha256(&module, &id, &pin, &message)?;
            std::fs::write(&output, &signature).map_err(|e| CliError::file(&output, e))?;
            println!(
                "{}-byte signature written to {}",
                signature.len(),
                output.display()
            );
        }
        Command::Demo {
            dir, stop: true, ..
        } => {
            let stopped = demo::stop(&dir)?;
            println!(
                "stopped {stopped} appliance(s) of the demo in {}",
                dir.display()
            );
        }
        Command::Demo {
            dir,
            pin,
            stop: false,
            variants,
        } => {
            let variants = variants.or_else(demo::default_variants_dir);
            let outcome = demo::run(&dir, pin.as_bytes(), variants.as_deref(), &step)?;
            print_next_steps(&outcome.dir, &outcome.message, outcome.signature.len());
        }
        Command::Appliance {
            action: ApplianceAction::Replace { index, host },
        } => {
            let options = replace::ReplaceOptions { index, host };
            let replaced = replace::replace(&cluster_dir, &options, &step)?;
            print_replaced(&cluster_dir, &replaced);
            if !replaced.complete() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Appliance {
            action: ApplianceAction::Add { index, host },
        } => {
            let options = add::AddOptions { index, host };
            let added = add::add(&cluster_dir, &options, &step)?;
            print_added(&cluster_dir, &added);
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir).map_err(|e| CliError::file(&dir, e))?;
            // From the same definition that parses the command line, so that the pages
            // cannot drift from it; one page per subcommand (`ittc-key-import.1`).
            clap_mangen::generate_to(Cli::command(), &dir).map_err(|e| CliError::file(&dir, e))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `ittc appliance replace` did, and what the operator does next.
fn print_replaced(dir: &Path, r: &replace::Replaced) {
    let (i, d) = (r.index, dir.display());
    if r.resumed {
        println!("appliance {i}: finishing the replacement an earlier run started.");
    }
    println!(
        "appliance {i}: new certificate (serial {}), key, sealing key and configuration in {d} \
         (the old ones kept as *.old); old certificate serial {}.",
        r.new_serial, r.old_serial
    );
    println!(
        "the appliances that refuse the old certificate now: {:?}",
        r.revoked_on
    );
    for line in &r.not_reached {
        eprintln!("not reached: {line}");
    }
    if !r.not_reached.is_empty() {
        eprintln!(
            "run `ittc --cluster {d} appliance replace --index {i}` again once they are up: \
             it issues nothing new, it only tells the rest."
        );
    }
    if r.address_changed {
        println!(
            "appliance {i}'s address is now {} in pkcs11.toml.",
            r.address
        );
    }
    if !r.configs_updated.is_empty() {
        println!(
            "updated with the new address: {}. Copy each to its host and restart that \
             appliance: a running appliance reads its peers' addresses only when it starts.",
            config_files(&r.configs_updated)
        );
    }
    for line in &r.configs_not_updated {
        eprintln!("note: {line}");
    }
    match &r.new_appliance {
        Ok(uptime) => println!(
            "appliance {i} answers at {} with its new certificate (up {uptime}s).",
            r.address
        ),
        Err(why) => {
            println!("appliance {i} does not answer yet ({why}). Next:");
            println!(
                "  1. stop the old appliance {i} if it still runs; on the host of {}, install ca.pem \
                 and appliance-{i}.pem, .key, .sealing, .toml from {d} (docs/operations.md);",
                r.address
            );
            println!(
                "  2. start it with an empty data folder (the old database does not open under \
                 the new sealing key: move it away): it takes the token objects, PINs and \
                 deny-list from its peers by itself;"
            );
            println!("  3. check with `ittc --cluster {d} status`.");
        }
    }
    println!(
        "copy pkcs11.toml to every PKCS#11 host: its `revoked` list makes the module refuse the \
         old certificate{}.",
        if r.address_changed {
            ", and it has the new address"
        } else {
            ""
        }
    );
    if r.complete() {
        println!(
            "replacement of appliance {i} recorded everywhere; running this command again would \
             replace appliance {i} once more."
        );
    }
}

/// What `ittc appliance add` did, and what the operator does next.
fn print_added(dir: &Path, a: &add::Added) {
    let (i, d) = (a.index, dir.display());
    if a.was_complete {
        println!("appliance {i}: added already by an earlier run; nothing was left to do.");
    } else if a.resumed {
        println!("appliance {i}: finishing the addition an earlier run started.");
    }
    println!(
        "appliance {i}: certificate (serial {}), key, sealing key and configuration in {d} \
         (appliance-{i}.pem, .key, .sealing, .toml); it is reached at {}.",
        a.serial, a.address
    );
    let all: Vec<String> = a.appliances.iter().map(u8::to_string).collect();
    println!(
        "pkcs11.toml lists appliances {} (threshold {} unchanged).",
        all.join(", "),
        a.threshold
    );
    let others: Vec<u8> = a.appliances.iter().copied().filter(|j| *j != i).collect();
    if !a.configs_updated.is_empty() {
        println!(
            "appliance {i} added as a peer to {}.",
            config_files(&a.configs_updated)
        );
    }
    for line in &a.configs_not_updated {
        eprintln!("note: {line}");
    }
    println!("No running appliance has changed. Next:");
    println!(
        "  1. on the host of {}, install ca.pem and appliance-{i}.pem, .key, .sealing, .toml \
         from {d} (docs/operations.md) and start it with an empty data folder: it takes the \
         token objects, PINs and deny-list from its peers by itself;",
        a.address
    );
    println!(
        "  2. copy {} to their hosts and restart those appliances one at a time, each back \
         up (`ittc --cluster {d} status`) before the next, so that they know their new peer;",
        config_files(&others)
    );
    println!(
        "  3. give appliance {i} shares of the keys: `ittc --cluster {d} cluster reshare \
         --threshold {} --appliances {}` (this threshold or a new one); until then it holds \
         none, and the keys sign as before without it;",
        a.threshold,
        all.join(",")
    );
    println!("  4. then copy pkcs11.toml to every PKCS#11 host.");
}

/// `appliance-1.toml, appliance-3.toml`.
fn config_files(indices: &[u8]) -> String {
    let files: Vec<String> = indices
        .iter()
        .map(|j| format!("appliance-{j}.toml"))
        .collect();
    files.join(", ")
}

fn print_next_steps(dir: &Path, message: &Path, len: usize) {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ittc"));
    let module = token::default_module().unwrap_or_else(|| PathBuf::from(token::MODULE_FILE));
    let (d, m, ittc) = (dir.display(), message.display(), exe.display());
    println!();
    println!(
        "The demo cluster runs in {d}: 3 appliances, any 2 sign. Key id 01, user PIN in {d}/demo-pin."
    );
    println!("A {len}-byte signature of {m} was made through the PKCS#11 module and verified.");
    println!();
    println!("Try next (pkcs11-tool is in Debian's opensc package):");
    println!("  export ITTC_PKCS11_CONFIG={d}/pkcs11.toml");
    println!(
        "  pkcs11-tool --module {} --login --pin $(cat {d}/demo-pin) --sign --mechanism SHA256-RSA-PKCS \\\n      --id 01 --input-file {m} --output-file {d}/pkcs11.sig",
        module.display()
    );
    println!("  openssl dgst -sha256 -verify {d}/demo-public.pem -signature {d}/pkcs11.sig {m}");
    println!(
        "  {ittc} --cluster {d} key refresh --id 01   # new shares of the same key (also hourly by itself)"
    );
    println!("  {ittc} --cluster {d} status");
    println!("  {ittc} demo --stop --dir {d}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ittc: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
