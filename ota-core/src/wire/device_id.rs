//! The one rule for device ids, shared by device, server and both transports.
//!
//! A device id is 1 to [`MAX_DEVICE_ID`] bytes of `A-Z a-z 0-9 . _ : -`. It names a store row,
//! an MQTT topic level and a file, so it holds nothing that is special in any of them (`/`, `+`,
//! `#`, `$`, NUL, spaces, non-ASCII), and an over-long id is refused, never cut.

/// Longest device id, in bytes.
pub const MAX_DEVICE_ID: usize = 32;

/// Why a device id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// No bytes.
    #[error("device id is empty")]
    Empty,
    /// Longer than [`MAX_DEVICE_ID`].
    #[error("device id of {0} bytes exceeds the limit of {MAX_DEVICE_ID}")]
    TooLong(usize),
    /// A byte outside `A-Z a-z 0-9 . _ : -`.
    #[error("device id byte {byte:#04x} at {at} is not one of A-Z a-z 0-9 . _ : -")]
    BadByte {
        /// Its position.
        at: usize,
        /// The byte.
        byte: u8,
    },
}

/// True for the bytes a device id may hold.
pub const fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// Checks `id` against the rule; on success the id as text (it is ASCII).
pub fn check_device_id(id: &[u8]) -> Result<&str, DeviceIdError> {
    if id.is_empty() {
        return Err(DeviceIdError::Empty);
    }
    if id.len() > MAX_DEVICE_ID {
        return Err(DeviceIdError::TooLong(id.len()));
    }
    if let Some(at) = id.iter().position(|&b| !is_id_byte(b)) {
        let byte = id.get(at).copied().unwrap_or(0);
        return Err(DeviceIdError::BadByte { at, byte });
    }
    // Every byte is ASCII, so this cannot fail.
    core::str::from_utf8(id).map_err(|_| DeviceIdError::BadByte { at: 0, byte: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        assert_eq!(check_device_id(b"dev-01.a_b:c"), Ok("dev-01.a_b:c"));
        assert_eq!(check_device_id(b""), Err(DeviceIdError::Empty));
        assert_eq!(
            check_device_id(&[b'a'; 33]),
            Err(DeviceIdError::TooLong(33))
        );
        assert!(check_device_id(&[b'a'; 32]).is_ok());
        for bad in [
            &b"a/b"[..],
            b"+",
            b"#",
            b"$SYS",
            b"a b",
            b"\0",
            "é".as_bytes(),
        ] {
            assert!(
                matches!(check_device_id(bad), Err(DeviceIdError::BadByte { .. })),
                "{bad:?}"
            );
        }
    }
}
