//! The Block2 option value (RFC 7959 section 2.2): block number, more flag, size exponent.

/// A Block1/Block2 option value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Block number (20 bits on the wire).
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: the block is `16 << szx` bytes; 0..=6 (7 is reserved for BERT over TCP).
    pub szx: u8,
}

/// Why an option value is not a block value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Longer than three bytes.
    #[error("block option longer than 3 bytes")]
    TooLong,
    /// Size exponent 7 (BERT), not defined over UDP.
    #[error("reserved block size exponent 7")]
    Reserved,
    /// The size is not a power of two between 16 and 1024.
    #[error("block size {0} is not a power of two in 16..=1024")]
    BadSize(u32),
    /// The block number does not fit in 20 bits.
    #[error("block number {0} needs more than 20 bits")]
    NumTooLarge(u32),
}

/// Largest block number the option can carry.
pub const MAX_NUM: u32 = (1 << 20) - 1;

impl Block {
    /// Block `num` of `size` bytes (a power of two, 16..=1024).
    pub fn new(num: u32, more: bool, size: u32) -> Result<Self, BlockError> {
        if !(16..=1024).contains(&size) || !size.is_power_of_two() {
            return Err(BlockError::BadSize(size));
        }
        if num > MAX_NUM {
            return Err(BlockError::NumTooLarge(num));
        }
        Ok(Self {
            num,
            more,
            szx: (size.trailing_zeros() - 4) as u8,
        })
    }

    /// Block size in bytes.
    pub fn size(&self) -> u32 {
        16 << self.szx
    }

    /// Byte offset of the block (at most 2^30, so this never overflows).
    pub fn offset(&self) -> u32 {
        self.num * self.size()
    }

    /// Parses an option value (a big-endian uint of 0 to 3 bytes).
    pub fn decode(value: &[u8]) -> Result<Self, BlockError> {
        if value.len() > 3 {
            return Err(BlockError::TooLong);
        }
        let v = value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        let szx = (v & 7) as u8;
        if szx == 7 {
            return Err(BlockError::Reserved);
        }
        Ok(Self {
            num: v >> 4,
            more: v & 8 != 0,
            szx,
        })
    }

    /// The option value, minimal length (zero bytes for block 0 of 16 bytes, last).
    pub fn encode(&self, out: &mut [u8; 3]) -> usize {
        let v =
            (self.num.min(MAX_NUM) << 4) | (u32::from(self.more) << 3) | u32::from(self.szx & 7);
        let bytes = v.to_be_bytes();
        let n = match v {
            0 => 0,
            1..=0xFF => 1,
            0x100..=0xFFFF => 2,
            _ => 3,
        };
        for (dst, src) in out.iter_mut().zip(bytes.iter().skip(4 - n)) {
            *dst = *src;
        }
        n
    }
}
