//! The CLI's one error type. Each message is meant for an operator: what failed, on which
//! appliance, and what to do.

use std::path::PathBuf;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Wrong arguments or an unusable input file.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster folder or its configuration is unusable.
    #[error("cluster: {0}")]
    Cluster(String),
    /// An appliance could not be reached or refused.
    #[error("appliance {index}: {message}")]
    Appliance {
        /// Its index.
        index: u8,
        /// What happened.
        message: String,
    },
    /// The key, certificate or threshold math refused.
    #[error("{0}")]
    Key(#[from] ittc_threshold::Error),
    /// A padding encoding or verification failed.
    #[error("{0}")]
    Padding(#[from] ittc_threshold::padding::PaddingError),
    /// The PKI refused.
    #[error("{0}")]
    Pki(#[from] crate::pki::PkiError),
    /// Several appliances failed; each line names one.
    #[error("{summary}:\n{}", details.join("\n"))]
    Several {
        /// One line.
        summary: String,
        /// One line per failure.
        details: Vec<String>,
    },
}

impl CliError {
    /// An error about a file.
    pub fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::File {
            path: path.into(),
            source,
        }
    }

    /// An appliance's error.
    pub fn appliance(index: u8, message: impl std::fmt::Display) -> Self {
        CliError::Appliance {
            index,
            message: message.to_string(),
        }
    }

    /// The process exit code: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}
