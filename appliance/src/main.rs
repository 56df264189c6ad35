//! `ittc-appliance`: the share appliance daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand};
use ittc_appliance::AuditVerifier;
use ittc_appliance::storage::AuditReport;
use ittc_appliance::variant;

// The allocator is part of the build variant (docs/diversity.md); `variant::ALLOCATOR`
// names the one chosen here, by the same features and the same precedence.
#[cfg(feature = "alloc-jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(all(feature = "alloc-mimalloc", not(feature = "alloc-jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long `--check-config` waits for each peer, to connect and again to answer `Hello`.
const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// An ittc share appliance: holds shares of RSA keys and answers partial operations over
/// mutual TLS.
#[derive(Parser)]
#[command(
    name = "ittc-appliance",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, value_name = "FILE", required = false)]
    config: Option<PathBuf>,
    /// Check the configuration (and its certificate, key and sealing-key files), ask the
    /// configured peers which build variant they run (a warning if one runs this build's),
    /// then exit.
    #[arg(long, requires = "config")]
    check_config: bool,
    /// Run even as root (user id 0), which the appliance otherwise refuses; the
    /// configuration's `[process] allow_root = true` says the same.
    #[arg(long)]
    allow_root: bool,
    /// Print this build's variant (exponentiation backend, TLS provider, allocator) and
    /// exit; with --config, with the backend that configuration selects.
    #[arg(long)]
    variant: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Write the man pages of ittc-appliance and of its subcommands (section 8: a daemon)
    /// into DIR, for the Debian package (scripts/package). Hidden: not an operator's command.
    #[command(hide = true)]
    Man {
        /// The folder to write them to (made if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the hash chain, through the export files and the store, and name the first
    /// broken entry; asks the appliance itself (with its own certificate) when it runs.
    Verify {
        /// The appliance's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the entries of a stopped appliance, oldest first (the export files', then the
    /// store's), one per line (sequence number, time, who, request, key, result),
    /// tab-separated.
    Show {
        /// The appliance's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any command reads a secret (the sealing key, the store): no core dump, and no
    // process of this user may attach or read this one's memory.
    if let Err(e) = ittc_appliance::hygiene::make_non_dumpable() {
        eprintln!("ittc-appliance: making the process non-dumpable: {e}");
        return ExitCode::FAILURE;
    }
    if cli.variant && !cli.check_config {
        return match cli
            .config
            .as_deref()
            .map(ittc_appliance::config::Config::load)
        {
            None => {
                println!("{}", variant::default_name());
                ExitCode::SUCCESS
            }
            Some(Ok(config)) => {
                println!("{}", variant::name(variant::backend(&config).name()));
                ExitCode::SUCCESS
            }
            Some(Err(e)) => {
                eprintln!("ittc-appliance: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Man { dir }) = &cli.command {
        return match write_man_pages(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "ittc-appliance: writing man pages to {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    let result = match (cli.command, cli.config) {
        (
            Some(Command::Audit {
                action: AuditAction::Verify { config },
            }),
            _,
        ) => match ittc_appliance::verify_audit(&config) {
            Ok((report, verifier)) => {
                let by = match verifier {
                    AuditVerifier::Store => String::new(),
                    AuditVerifier::Running(address) => {
                        format!(" (checked by the running appliance at {address})")
                    }
                };
                return match report {
                    AuditReport::Intact {
                        entries,
                        head,
                        exported,
                        files,
                    } => {
                        println!(
                            "audit log intact: {entries} entries ({exported} of them in {files} \
                             export files), head {}{by}",
                            hex(&head.hash)
                        );
                        ExitCode::SUCCESS
                    }
                    AuditReport::Broken { seq, reason } => {
                        eprintln!("audit log broken at entry {seq}: {reason}{by}");
                        ExitCode::FAILURE
                    }
                };
            }
            Err(e) => Err(e),
        },
        (
            Some(Command::Audit {
                action: AuditAction::Show { config },
            }),
            _,
        ) => ittc_appliance::audit_entries(&config, |seq, e| {
            println!(
                "{seq}\t{}\t{}\t{}\t{}\t{}",
                e.time_unix_ms,
                e.client,
                e.request,
                e.key_id.as_deref().unwrap_or("-"),
                e.result
            );
        }),
        (Some(Command::Man { .. }), _) => Ok(()),
        (None, Some(path)) if cli.check_config => {
            ittc_appliance::check_config(&path).map(|config| {
                println!("config {} is valid", path.display());
                check_peer_variants(&config);
            })
        }
        (None, Some(config)) => ittc_appliance::run(&config, cli.allow_root),
        (None, None) => {
            eprintln!("ittc-appliance: --config FILE is required (see --help)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ittc-appliance: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

/// One page per command, from the definition that parses the command line, in section 8
/// (system daemons; `ittc`'s own pages are in section 1, where its `ittc appliance`
/// subcommand has the name `ittc-appliance`): `ittc-appliance.8`,
/// `ittc-appliance-audit-verify.8`, …
fn write_man_pages(dir: &Path) -> std::io::Result<()> {
    fn write(command: clap::Command, dir: &Path) -> std::io::Result<()> {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub.clone(), dir)?;
        }
        clap_mangen::Man::new(command)
            .section("8")
            .generate_to(dir)?;
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    write(command, dir)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints this build's variant and each configured peer's, and warns (on standard error)
/// about every peer that runs the same one: one exploit of that build would open both.
/// A peer that does not answer within [`PEER_CHECK_TIMEOUT`] is noted and not compared;
/// none of this changes the exit code.
fn check_peer_variants(config: &ittc_appliance::config::Config) {
    let own = variant::name(variant::backend(config).name());
    println!("build variant: {own}");
    let peers = match variant::peer_variants(config, PEER_CHECK_TIMEOUT) {
        Ok(peers) => peers,
        Err(e) => {
            println!("note: peers not asked for their variant: {e}");
            return;
        }
    };
    if config.peers.is_empty() {
        println!("note: no peers in the configuration: their variants are not compared");
    }
    for p in &peers {
        match &p.variant {
            Ok(v) => println!("peer {} ({}) runs {v}", p.index, p.address),
            Err(e) => println!(
                "note: peer {} ({}) did not answer, its variant is not compared: {e}",
                p.index, p.address
            ),
        }
    }
    for p in variant::same_variant(&own, &peers) {
        eprintln!(
            "warning: peer {} ({}) runs the same build variant as this one ({own}): one \
             exploit of it would open both; install a different variant on one of them \
             (docs/operations.md)",
            p.index, p.address
        );
    }
}
