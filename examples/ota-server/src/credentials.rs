//! A device's credentials file, written by `ota-server device add` and read by `ota-device`:
//! its id, class and OSCORE context (kid, master secret, salt), as `key = value` lines. Also
//! the same context as an aiocoap security context directory, for tools that speak OSCORE.

use std::path::Path;

use anyhow::{bail, Context};

use crate::store::Credentials;

/// The file's text.
pub fn to_text(c: &Credentials) -> String {
    format!(
        "# ota device credentials: keep secret\nid = {}\nclass = {}\nkid = {}\nsecret = {}\nsalt = {}\nserver-id = \n",
        c.id,
        c.class,
        hex::encode(&c.kid),
        hex::encode(&c.secret),
        hex::encode(&c.salt)
    )
}

/// Parses a credentials file's text.
pub fn parse(text: &str) -> anyhow::Result<Credentials> {
    let get = |key: &str| -> anyhow::Result<String> {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .with_context(|| format!("credentials lack {key}"))
    };
    let hex_of = |key: &str, v: String| -> anyhow::Result<Vec<u8>> {
        hex::decode(&v).with_context(|| format!("credentials: {key} is not hex"))
    };
    let c = Credentials {
        id: get("id")?,
        class: get("class")?,
        kid: hex_of("kid", get("kid")?)?,
        secret: hex_of("secret", get("secret")?)?,
        salt: hex_of("salt", get("salt")?)?,
        floor: None,
    };
    if c.secret.len() < 16 {
        bail!("credentials: the secret must be at least 16 bytes");
    }
    Ok(c)
}

/// Reads a credentials file.
pub fn load(path: &Path) -> anyhow::Result<Credentials> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read credentials {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Writes a credentials file readable by its owner only.
pub fn save(path: &Path, c: &Credentials) -> anyhow::Result<()> {
    crate::keys::write_private(path, &to_text(c))
}

/// Writes the device's side of the context as an aiocoap security context directory
/// (`settings.json` and `secret.json`), for a client such as `aiocoap-client`.
pub fn save_aiocoap(dir: &Path, c: &Credentials) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join("settings.json"),
        format!(
            "{{\"sender-id_hex\": \"{}\", \"recipient-id_hex\": \"\", \"algorithm\": \"AES-CCM-16-64-128\", \"kdf-hashfun\": \"sha256\"}}\n",
            hex::encode(&c.kid)
        ),
    )?;
    crate::keys::write_private(
        &dir.join("secret.json"),
        &format!(
            "{{\"secret_hex\": \"{}\", \"salt_hex\": \"{}\"}}\n",
            hex::encode(&c.secret),
            hex::encode(&c.salt)
        ),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip() {
        let c = Credentials {
            id: "dev-1".into(),
            class: "sensor".into(),
            kid: vec![1],
            secret: vec![7; 16],
            salt: vec![9; 8],
            floor: None,
        };
        assert_eq!(parse(&to_text(&c)).unwrap(), c);
        assert!(parse("id = x\n").is_err());
    }
}
