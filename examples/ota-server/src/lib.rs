//! The update server's library: the SQLite store, the fleet's desired state, key files.
//!
//! The `ota-server` binary is a thin CLI over it; `ota-demo` reuses it in-process.
#![deny(missing_docs)]

pub mod cache;
pub mod credentials;
pub mod desired;
pub mod keys;
pub mod mqtt;
pub mod store;

/// Vendor id the server signs for and devices expect (one vendor per server here).
pub const VENDOR: u32 = 1;

/// A device class's numeric id: the CRC-32 of its name, so devices and server agree on it
/// without a registry.
pub fn class_id(name: &str) -> u32 {
    ota_core::crc32::checksum(name.as_bytes())
}

/// Parses `X.Y.Z`.
pub fn parse_version(s: &str) -> anyhow::Result<ota_core::wire::Version> {
    let mut it = s.split('.').map(|p| p.parse::<u16>());
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Ok(ota_core::wire::Version::new(a, b, c)),
        _ => anyhow::bail!("version {s:?} is not X.Y.Z with numbers up to 65535"),
    }
}
