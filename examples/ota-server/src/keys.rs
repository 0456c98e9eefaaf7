//! Signing key files: 32-byte Ed25519 seeds and public keys, hex encoded.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;

/// File name of the secret key in a key directory.
pub const SIGNING: &str = "signing.key";
/// File name of the public key in a key directory.
pub const PUBLIC: &str = "public.key";

/// Writes a new key pair into `dir` (refusing to overwrite one); returns the public key path.
pub fn generate(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let secret = dir.join(SIGNING);
    if secret.exists() {
        bail!(
            "{} exists; refusing to overwrite a signing key",
            secret.display()
        );
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    write_private(&secret, &hex::encode(seed))?;
    let public = dir.join(PUBLIC);
    std::fs::write(&public, hex::encode(key.verifying_key().to_bytes()))
        .with_context(|| format!("cannot write {}", public.display()))?;
    Ok(public)
}

/// Writes `contents` to a new file readable by its owner only.
#[cfg(unix)]
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// Writes `contents` to a new file.
#[cfg(not(unix))]
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

fn read_32(path: &Path, what: &str) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let bytes =
        hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} does not hold a 32-byte {what}", path.display()))
}

/// Reads a signing key from a file, or from `signing.key` in a directory. A public key (by
/// name, or equal to the `public.key` beside it) is refused: its bytes would make a valid but
/// wrong seed, and every manifest signed with it would be refused by devices.
pub fn load_signing(path: &Path) -> anyhow::Result<SigningKey> {
    let path = if path.is_dir() {
        path.join(SIGNING)
    } else {
        path.to_path_buf()
    };
    let seed = read_32(&path, "signing key")?;
    let beside = path.with_file_name(PUBLIC);
    let is_public = path.file_name().is_some_and(|n| n == PUBLIC)
        || (beside != path && read_32(&beside, "public key").is_ok_and(|p| p == seed));
    if is_public {
        bail!(
            "{} is a public key; sign with the signing key ({SIGNING}) or its directory",
            path.display()
        );
    }
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads a public key from a file, or from `public.key` in a directory.
pub fn load_public(path: &Path) -> anyhow::Result<[u8; 32]> {
    let path = if path.is_dir() {
        path.join(PUBLIC)
    } else {
        path.to_path_buf()
    };
    read_32(&path, "public key")
}
