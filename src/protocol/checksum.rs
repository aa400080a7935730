//! The checksum that frames and files carry on the wire: XXH3-64 with seed 0, exactly
//! as the reference xxHash computes it (pinned below and cross-checked against a second
//! implementation in `tests/protocol_props.rs`). twox-hash picks its AVX2 or SSE2 code
//! at run time, so a build for baseline x86-64 still hashes with AVX2 where the CPU has
//! it (about a third faster per byte than SSE2 on this project's machines).

use std::hash::Hasher as _;

use twox_hash::xxhash3_64::{RawHasher, SecretBuffer, DEFAULT_SECRET_LENGTH};

/// XXH3-64 of `bytes` in one call.
pub fn checksum(bytes: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(bytes)
}

/// XXH3-64 over bytes that arrive in pieces: the same value as [`checksum`] of the
/// pieces joined, whatever their sizes.
///
/// Built on twox-hash's `RawHasher` over the reference secret by `&'static` reference
/// and an inline stripe buffer, so neither [`Checksum::new`] nor [`Checksum::reset`]
/// allocates (its `XxHash3_64::new` boxes a copy of the 192-byte secret every time).
#[derive(Clone)]
pub struct Checksum(RawHasher<&'static [u8; DEFAULT_SECRET_LENGTH]>);

impl Default for Checksum {
    fn default() -> Checksum {
        Checksum::new()
    }
}

impl Checksum {
    pub fn new() -> Checksum {
        Checksum(RawHasher::new(SecretBuffer::default()))
    }

    pub fn update(&mut self, piece: &[u8]) {
        self.0.write(piece);
    }

    /// Starts over, as [`Checksum::new`] (keeping no state of what came before).
    pub fn reset(&mut self) {
        *self = Checksum::new();
    }

    /// The checksum of everything so far; more may still be added.
    pub fn digest(&self) -> u64 {
        self.0.finish()
    }
}

impl std::fmt::Debug for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checksum(XXH3-64)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of the reference XXH3-64 (seed 0).
    #[test]
    fn matches_the_reference_values() {
        assert_eq!(checksum(b""), 0x2d06_8005_38d3_94c2);
        // Long enough for the vectorised path (over 240 bytes).
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        assert_eq!(checksum(&big), 0x02df_1e98_5a77_6b74);
        let mut streamed = Checksum::new();
        for piece in big.chunks(7919) {
            streamed.update(piece);
        }
        assert_eq!(streamed.digest(), 0x02df_1e98_5a77_6b74);
    }
}
