//! Where the programs that `ittc` runs or loads are, relative to `ittc` itself: beside it
//! in a build (`target/release/`, with the build variants in `target/variants/`), or
//! where the Debian packages put them (`scripts/package`, docs/operations.md):
//!
//! | file | build tree | installed, PREFIX = `/usr` |
//! |---|---|---|
//! | `ittc` | `target/release/ittc` | `PREFIX/bin/ittc` |
//! | `ittc-appliance` | beside `ittc` | `PREFIX/sbin/ittc-appliance` |
//! | `libittc_pkcs11.so` | beside `ittc` | `PREFIX/lib/MULTIARCH/pkcs11/` (where p11-kit looks) |
//! | the build variants | `target/variants/` | `PREFIX/lib/ittc/variants/` |
//!
//! Each lookup tries the build tree's place first, so a build run from its tree never
//! picks up an installed package.

use std::path::{Path, PathBuf};

/// The folder of this program: `target/release` in a build, `/usr/bin` installed.
pub fn own_folder() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

/// The folder above this program's: `target` in a build, `/usr` installed.
pub fn prefix() -> Option<PathBuf> {
    own_folder()?.parent().map(Path::to_path_buf)
}

/// `file` beside this program, if it is there.
pub fn beside(file: &str) -> Option<PathBuf> {
    Some(own_folder()?.join(file)).filter(|p| p.is_file())
}

/// The installed appliance, `PREFIX/sbin/ittc-appliance`, if it is there (a daemon: the
/// system administrator's folder).
pub fn appliance() -> Option<PathBuf> {
    Some(prefix()?.join("sbin").join("ittc-appliance")).filter(|p| p.is_file())
}

/// The installed PKCS#11 module `file`, in the multiarch PKCS#11 folder, if it is there.
pub fn module(file: &str) -> Option<PathBuf> {
    let dir = prefix()?.join("lib").join(multiarch()?).join("pkcs11");
    Some(dir.join(file)).filter(|p| p.is_file())
}

/// The installed build variants, `PREFIX/lib/ittc/variants`, if the folder is there.
pub fn variants() -> Option<PathBuf> {
    Some(prefix()?.join("lib").join("ittc").join("variants")).filter(|p| p.is_dir())
}

/// Debian's multiarch tuple for this build's target (`dpkg-architecture -q
/// DEB_HOST_MULTIARCH`), the folder under `PREFIX/lib` that holds its PKCS#11 modules;
/// `None` for a target Debian does not name here.
pub fn multiarch() -> Option<&'static str> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return None;
    }
    Some(match std::env::consts::ARCH {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "x86" => "i386-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "powerpc64" if cfg!(target_endian = "little") => "powerpc64le-linux-gnu",
        "arm" if cfg!(target_abi = "eabihf") => "arm-linux-gnueabihf",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_not_an_installation() {
        // The tests run from target/debug/deps: nothing is installed around them.
        assert!(appliance().is_none());
        assert!(module("libittc_pkcs11.so").is_none());
        assert!(variants().is_none());
    }

    #[test]
    fn multiarch_matches_the_target() {
        if cfg!(all(
            target_os = "linux",
            target_env = "gnu",
            target_arch = "x86_64"
        )) {
            assert_eq!(multiarch(), Some("x86_64-linux-gnu"));
        }
    }
}
