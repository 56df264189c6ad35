//! Which variant of the appliance this is, and whether its peers run the same one.
//!
//! One source tree builds appliances that differ in the code an exploit would have to
//! break (docs/diversity.md): the backend of the secret exponentiation (chosen by cargo
//! feature, and among those built in by the `backend` setting), the TLS crypto provider
//! (feature `tls-ring` or `tls-aws-lc-rs`) and the allocator of the `ittc-appliance`
//! binary (`alloc-mimalloc`, `alloc-jemalloc`, else the system's). The variant's name
//! lists the three, `openssl+aws-lc-rs+jemalloc`, and is reported in `Hello` and `Status`.
//!
//! A cluster gains from diversity only if no two appliances run the same variant:
//! [`peer_variants`] asks the peers of a configuration which variant they run, for
//! `ittc-appliance --check-config`, and [`same_variant`] names those that match.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::Duration;

use ittc_threshold::{Backend, PartialExp};
use ittc_wire::client::{Connection, Timeouts, TlsCrypto, TlsIdentity};

use crate::config::Config;

#[cfg(not(any(feature = "tls-ring", feature = "tls-aws-lc-rs")))]
compile_error!(
    "ittc-appliance needs a TLS crypto provider: enable feature `tls-ring` (in the default \
     features) or `tls-aws-lc-rs`"
);

/// The TLS crypto provider of the listener and of the connections to peers. With both
/// provider features on (`--all-features`), aws-lc-rs.
#[cfg(feature = "tls-aws-lc-rs")]
pub const TLS_PROVIDER: &str = "aws-lc-rs";
/// The TLS crypto provider of the listener and of the connections to peers.
#[cfg(all(feature = "tls-ring", not(feature = "tls-aws-lc-rs")))]
pub const TLS_PROVIDER: &str = "ring";
/// No provider: the `compile_error!` above says so.
#[cfg(not(any(feature = "tls-ring", feature = "tls-aws-lc-rs")))]
pub const TLS_PROVIDER: &str = "none";

/// The allocator that `ittc-appliance`'s `main.rs` installs: jemalloc, mimalloc (secure
/// mode) or the system's. With both allocator features on, jemalloc.
pub const ALLOCATOR: &str = if cfg!(feature = "alloc-jemalloc") {
    "jemalloc"
} else if cfg!(feature = "alloc-mimalloc") {
    "mimalloc"
} else {
    "system"
};

/// The TLS crypto named by [`TLS_PROVIDER`]: its provider and key loader.
#[cfg(feature = "tls-aws-lc-rs")]
pub fn tls_crypto() -> TlsCrypto {
    TlsCrypto::new(
        rustls::crypto::aws_lc_rs::default_provider(),
        rustls::crypto::aws_lc_rs::sign::any_supported_type,
    )
}

/// The TLS crypto named by [`TLS_PROVIDER`]: its provider and key loader.
#[cfg(not(feature = "tls-aws-lc-rs"))]
pub fn tls_crypto() -> TlsCrypto {
    TlsCrypto::ring()
}

/// The exponentiation backend a configuration selects: its `backend`, else OpenSSL where
/// this build has it (it is listed last), else crypto-bigint.
pub fn backend(config: &Config) -> &'static dyn PartialExp {
    match &config.backend {
        Some(name) => Backend::from_name(name).unwrap_or_default(),
        None => default_backend(),
    }
    .get()
}

/// The backend when the configuration names none: OpenSSL where this build has it, else
/// GMP where it has that, else crypto-bigint (so a build with one backend uses it).
fn default_backend() -> Backend {
    Backend::from_name("openssl")
        .or_else(|| Backend::from_name("gmp"))
        .unwrap_or_default()
}

/// The variant's name: the backend's, the TLS provider's and the allocator's, joined by
/// `+` (`openssl+ring+system`).
pub fn name(backend: &str) -> String {
    format!("{backend}+{TLS_PROVIDER}+{ALLOCATOR}")
}

/// The variant of this build with the default backend (no `backend` setting): what
/// `ittc-appliance --variant` prints.
pub fn default_name() -> String {
    name(default_backend().get().name())
}

/// What a peer said about its variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerVariant {
    /// Its index.
    pub index: u8,
    /// Its address, from the configuration.
    pub address: String,
    /// The variant it reported in `Hello`, or why it could not be asked.
    pub variant: Result<String, String>,
}

/// Asks every peer of `config` (in parallel, each within `timeout` to connect and again to
/// answer) for its variant: a TLS handshake with this appliance's certificate and one
/// `Hello`. A peer that is down is reported as such, not as an error of the check.
///
/// # Errors
///
/// The certificate or key of `config` cannot be loaded.
pub fn peer_variants(
    config: &Config,
    timeout: Duration,
) -> Result<Vec<PeerVariant>, ittc_wire::Error> {
    let identity = TlsIdentity::from_pem_files_with(
        &config.tls.ca,
        &config.tls.cert,
        &config.tls.key,
        tls_crypto(),
    )?;
    let client = identity.client_config()?;
    let timeouts = Timeouts {
        connect: timeout,
        io: timeout,
    };
    let peers: Vec<_> = config
        .peers
        .iter()
        .filter(|p| p.index != config.index)
        .collect();
    Ok(std::thread::scope(|scope| {
        let handles: Vec<_> = peers
            .iter()
            .map(|peer| {
                let client = Arc::clone(&client);
                scope.spawn(move || hello_variant(&peer.address, peer.index, client, timeouts))
            })
            .collect();
        peers
            .iter()
            .zip(handles)
            .map(|(peer, handle)| PeerVariant {
                index: peer.index,
                address: peer.address.clone(),
                variant: handle
                    .join()
                    .unwrap_or_else(|_| Err("the asking thread failed".into())),
            })
            .collect()
    }))
}

/// The variant appliance `index` at `address` reports in `Hello`.
fn hello_variant(
    address: &str,
    index: u8,
    client: Arc<rustls::ClientConfig>,
    timeouts: Timeouts,
) -> Result<String, String> {
    let addr: SocketAddr = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("address {address:?} does not resolve"))?;
    Connection::connect(addr, index, client, timeouts, "ittc-appliance check-config")
        .map(|c| c.hello().build_variant.clone())
        .map_err(|e| e.to_string())
}

/// The peers that answered with `own`, this build's variant.
pub fn same_variant<'a>(own: &str, peers: &'a [PeerVariant]) -> Vec<&'a PeerVariant> {
    peers
        .iter()
        .filter(|p| p.variant.as_deref() == Ok(own))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_lists_backend_tls_provider_and_allocator() {
        let name = name("crypto-bigint");
        let parts: Vec<&str> = name.split('+').collect();
        assert_eq!(parts, ["crypto-bigint", TLS_PROVIDER, ALLOCATOR]);
        // The features of this build decide the last two, aws-lc-rs and jemalloc first.
        let tls = if cfg!(feature = "tls-aws-lc-rs") {
            "aws-lc-rs"
        } else {
            "ring"
        };
        assert_eq!(TLS_PROVIDER, tls);
        let allocator = match (
            cfg!(feature = "alloc-jemalloc"),
            cfg!(feature = "alloc-mimalloc"),
        ) {
            (true, _) => "jemalloc",
            (false, true) => "mimalloc",
            (false, false) => "system",
        };
        assert_eq!(ALLOCATOR, allocator);
    }

    #[test]
    fn the_default_name_has_the_default_backend() {
        let expected = if cfg!(feature = "openssl-backend") {
            "openssl"
        } else {
            "crypto-bigint"
        };
        assert!(
            default_name().starts_with(&format!("{expected}+")),
            "{}",
            default_name()
        );
        assert!(ittc_wire::limits::MAX_NAME_LEN >= default_name().len());
    }

    #[test]
    fn the_provider_is_the_one_named() {
        // aws-lc-rs offers the post-quantum hybrid group, ring does not.
        let hybrid = tls_crypto()
            .provider()
            .kx_groups
            .iter()
            .any(|g| g.name() == rustls::NamedGroup::X25519MLKEM768);
        assert_eq!(hybrid, TLS_PROVIDER == "aws-lc-rs");
    }

    #[test]
    fn only_peers_that_answered_with_the_same_variant_match() {
        let peer = |index: u8, variant: Result<&str, &str>| PeerVariant {
            index,
            address: format!("127.0.0.1:{}", 7400 + u16::from(index)),
            variant: variant.map(str::to_owned).map_err(str::to_owned),
        };
        let peers = [
            peer(2, Ok("openssl+ring+system")),
            peer(3, Ok("crypto-bigint+ring+mimalloc")),
            peer(4, Err("connection refused")),
            peer(5, Ok("openssl+ring+system")),
        ];
        let same: Vec<u8> = same_variant("openssl+ring+system", &peers)
            .iter()
            .map(|p| p.index)
            .collect();
        assert_eq!(same, [2, 5]);
        assert!(same_variant("gmp+aws-lc-rs+system", &peers).is_empty());
    }
}
