//! CRC-32 (ISO-HDLC, the one zlib and Ethernet use), bit by bit: 30 instructions of flash
//! instead of a 1 KiB table, and a register the applier can persist between patch chunks.

/// The register before any byte.
pub const INIT: u32 = 0xffff_ffff;

/// Feeds `data` into the running register `crc`.
pub fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    crc
}

/// The CRC-32 of `data`.
pub fn checksum(data: &[u8]) -> u32 {
    !update(INIT, data)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    #[test]
    fn matches_the_crc_crate() {
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
        for data in [&b""[..], b"123456789", &[0xffu8; 300][..]] {
            assert_eq!(super::checksum(data), crc.checksum(data));
        }
        let (a, b) = b"split anywhere".split_at(5);
        assert_eq!(
            !super::update(super::update(super::INIT, a), b),
            crc.checksum(b"split anywhere")
        );
    }
}
