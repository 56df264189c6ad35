//! PINs and passphrases: from a file (`--pin-file`), or asked for on the terminal. Never
//! from the command line, where other users can read them.

use std::path::Path;

use zeroize::Zeroizing;

use crate::error::CliError;

/// The first line of `path`, without its line end.
pub fn secret_from_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let text = Zeroizing::new(std::fs::read(path).map_err(|e| CliError::file(path, e))?);
    let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: the first line is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(line.to_vec()))
}

/// Asks on the terminal; with `confirm`, twice, and the two must match.
pub fn ask(question: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let read = |q: &str| {
        rpassword::prompt_password(q)
            .map(|s| Zeroizing::new(s.into_bytes()))
            .map_err(|e| {
                CliError::Usage(format!(
                    "cannot ask for it on a terminal ({e}): give it in a file with --pin-file"
                ))
            })
    };
    let first = read(question)?;
    if first.is_empty() {
        return Err(CliError::Usage("empty input".into()));
    }
    if confirm && read("again: ")? != first {
        return Err(CliError::Usage("the two entries differ".into()));
    }
    Ok(first)
}

/// From the file if one is given, else asked for.
pub fn pin(
    file: Option<&Path>,
    question: &str,
    confirm: bool,
) -> Result<Zeroizing<Vec<u8>>, CliError> {
    match file {
        Some(path) => secret_from_file(path),
        None => ask(question, confirm),
    }
}
