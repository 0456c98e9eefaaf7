//! Bit-level coding: the reader the applier resumes from a few bytes of state, and the writer
//! the generator uses.

/// Marks "no Exp-Golomb prefix pending" in [`Bits::ez`].
pub(crate) const NO_PREFIX: u8 = 0xff;

/// The applier's bit buffer: up to 64 bits read ahead from the patch, most significant first.
///
/// It is part of the persisted state, so a code split across two patch chunks resumes exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bits {
    /// The valid bits are the low `n`; all bits above them are zero.
    pub acc: u64,
    /// How many bits `acc` holds (0 to 64).
    pub n: u8,
    /// The number of leading zeros of an Exp-Golomb code whose prefix was read but whose
    /// remaining bits were not yet available, or [`NO_PREFIX`].
    pub ez: u8,
}

/// What a read returns: a value, not enough bits yet, or an invalid code.
pub(crate) enum Read<T> {
    Value(T),
    More,
    Overlong,
}

fn mask(n: u8) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

impl Bits {
    pub const EMPTY: Bits = Bits {
        acc: 0,
        n: 0,
        ez: NO_PREFIX,
    };

    /// Moves whole bytes from `input[*pos..]` into the buffer while it has room for one.
    pub fn refill(&mut self, input: &[u8], pos: &mut usize) -> u32 {
        let mut taken = 0;
        while self.n <= 56 {
            let Some(&b) = input.get(*pos) else { break };
            self.acc = (self.acc << 8) | u64::from(b);
            self.n += 8;
            *pos += 1;
            taken += 1;
        }
        taken
    }

    /// Takes `count` (at most 32) bits, if the buffer holds them.
    pub fn take(&mut self, count: u8) -> Option<u32> {
        if count > self.n || count > 32 {
            return None;
        }
        let rest = self.n - count;
        let v = (self.acc.checked_shr(u32::from(rest)).unwrap_or(0) & mask(count)) as u32;
        self.n = rest;
        self.acc &= mask(rest);
        Some(v)
    }

    /// Reads an Exp-Golomb code of order `k` (at most [`crate::format::MAX_K`]).
    pub fn eg(&mut self, k: u8) -> Read<u32> {
        let max_zeros = 31 - k.min(31);
        if self.ez == NO_PREFIX {
            // Leading zeros among the `n` valid bits (bits above them are zero).
            let zeros = if self.acc == 0 {
                u32::from(self.n)
            } else {
                self.acc.leading_zeros() - (64 - u32::from(self.n))
            };
            if zeros > u32::from(max_zeros) {
                return Read::Overlong;
            }
            if zeros >= u32::from(self.n) {
                return Read::More;
            }
            let z = zeros as u8;
            // The zeros and the terminating one bit.
            if self.take(z + 1).is_none() {
                return Read::More;
            }
            self.ez = z;
        }
        let z = self.ez;
        let payload = z + k;
        let Some(low) = self.take(payload) else {
            return Read::More;
        };
        self.ez = NO_PREFIX;
        let w = (1u64 << payload) | u64::from(low);
        Read::Value((w - (1u64 << k)) as u32)
    }
}

/// The number of bits `EG(k)` spends on `v`.
#[cfg(feature = "std")]
pub fn eg_len(v: u32, k: u8) -> u32 {
    let w = u64::from(v) + (1u64 << k);
    let bits = 64 - w.leading_zeros();
    2 * bits - 1 - u32::from(k)
}

/// Writes bits most significant first into a byte vector.
#[cfg(feature = "std")]
#[derive(Default)]
pub(crate) struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

#[cfg(feature = "std")]
impl BitWriter {
    /// Appends the low `count` (at most 32) bits of `v`.
    pub fn put(&mut self, v: u32, count: u32) {
        debug_assert!(count <= 32);
        if count == 0 {
            return;
        }
        self.acc = (self.acc << count) | (u64::from(v) & mask(count as u8));
        self.n += count;
        while self.n >= 8 {
            self.n -= 8;
            self.out.push((self.acc >> self.n) as u8);
        }
        self.acc &= mask(self.n as u8);
    }

    /// Appends `EG(k)` of `v`.
    pub fn eg(&mut self, v: u32, k: u8) {
        let w = u64::from(v) + (1u64 << k);
        let bits = 64 - w.leading_zeros();
        let zeros = bits - 1 - u32::from(k);
        self.put(0, zeros);
        // `w` has at most 33 bits: write its top bit apart.
        self.put(1, 1);
        let rest = bits - 1;
        if rest > 32 {
            self.put((w >> 32) as u32, rest - 32);
            self.put(w as u32, 32);
        } else {
            self.put(w as u32, rest);
        }
    }

    /// Pads with zero bits to a byte boundary and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put(0, pad);
        }
        self.out
    }
}

#[cfg(all(test, feature = "std"))]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(bytes: &[u8], ks: &[u8], split: usize) -> Vec<u32> {
        let mut b = Bits::EMPTY;
        let mut out = Vec::new();
        let (first, second) = bytes.split_at(split.min(bytes.len()));
        let mut input = first;
        let mut on_second = false;
        let mut pos = 0;
        let mut i = 0;
        while i < ks.len() {
            b.refill(input, &mut pos);
            match b.eg(ks[i]) {
                Read::Value(v) => {
                    out.push(v);
                    i += 1;
                }
                Read::More => {
                    // A code's prefix may use up the buffer: refill and go on.
                    if pos < input.len() {
                        continue;
                    }
                    if on_second {
                        break;
                    }
                    on_second = true;
                    input = second;
                    pos = 0;
                }
                Read::Overlong => panic!("overlong"),
            }
        }
        out
    }

    #[test]
    fn eg_examples() {
        let mut w = BitWriter::default();
        for v in [0, 1, 2, 3] {
            w.eg(v, 0);
        }
        // 1 010 011 00100 -> 1010 0110 0100 (+ padding)
        assert_eq!(w.finish(), vec![0b1010_0110, 0b0100_0000]);
        assert_eq!(eg_len(0, 0), 1);
        assert_eq!(eg_len(3, 0), 5);
        assert_eq!(eg_len(3, 2), 3);
        assert_eq!(eg_len(u32::MAX - (1 << 15), 15), 16 + 32);
    }

    #[test]
    fn overlong_codes_are_refused() {
        let mut b = Bits::EMPTY;
        let zeros = [0u8; 8];
        let mut pos = 0;
        b.refill(&zeros, &mut pos);
        assert!(matches!(b.eg(0), Read::Overlong));
        let mut b = Bits::EMPTY;
        let mut pos = 0;
        b.refill(&zeros[..3], &mut pos);
        assert!(matches!(b.eg(0), Read::More));
        assert!(matches!(b.eg(8), Read::Overlong));
    }

    proptest! {
        #[test]
        fn eg_round_trips_across_any_split(
            vals in prop::collection::vec((any::<u32>(), 0u8..=15), 1..40),
            split in 0usize..400,
        ) {
            let vals: Vec<(u32, u8)> = vals
                .into_iter()
                .map(|(v, k)| (v.min(u32::MAX - (1u32 << k)), k))
                .collect();
            let mut w = BitWriter::default();
            let mut total = 0;
            for &(v, k) in &vals {
                w.eg(v, k);
                total += eg_len(v, k);
            }
            let bytes = w.finish();
            prop_assert_eq!(bytes.len() as u32, total.div_ceil(8));
            let ks: Vec<u8> = vals.iter().map(|&(_, k)| k).collect();
            let got = read_all(&bytes, &ks, split);
            let want: Vec<u32> = vals.iter().map(|&(v, _)| v).collect();
            prop_assert_eq!(got, want);
        }
    }
}
