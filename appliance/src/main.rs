//! `ittc-appliance`: the share appliance daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ittc_appliance::storage::AuditReport;

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
    /// Check the configuration (and its certificate, key and sealing-key files), then exit.
    #[arg(long, requires = "config")]
    check_config: bool,
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
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the hash chain of a stopped appliance and name the first broken entry.
    Verify {
        /// The appliance's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the entries of a stopped appliance, oldest first, one per line (sequence
    /// number, time, who, request, key, result), tab-separated.
    Show {
        /// The appliance's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.command, cli.config) {
        (
            Some(Command::Audit {
                action: AuditAction::Verify { config },
            }),
            _,
        ) => match ittc_appliance::verify_audit(&config) {
            Ok(AuditReport::Intact { entries, head }) => {
                println!(
                    "audit log intact: {entries} entries, head {}",
                    hex(&head.hash)
                );
                return ExitCode::SUCCESS;
            }
            Ok(AuditReport::Broken { seq, reason }) => {
                eprintln!("audit log broken at entry {seq}: {reason}");
                return ExitCode::FAILURE;
            }
            Err(e) => Err(e),
        },
        (
            Some(Command::Audit {
                action: AuditAction::Show { config },
            }),
            _,
        ) => ittc_appliance::audit_entries(&config).map(|entries| {
            for (seq, e) in entries {
                println!(
                    "{seq}\t{}\t{}\t{}\t{}\t{}",
                    e.time_unix_ms,
                    e.client,
                    e.request,
                    e.key_id.as_deref().unwrap_or("-"),
                    e.result
                );
            }
        }),
        (None, Some(config)) if cli.check_config => {
            ittc_appliance::check_config(&config).map(|_| {
                println!("config {} is valid", config.display());
            })
        }
        (None, Some(config)) => ittc_appliance::run(&config),
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
