//! File content as the emulator stores it: either real bytes, or a deterministic pseudo-random
//! pattern that is generated on the fly.
//!
//! The pattern exists so that a test can create a 2 GiB file (or a million small ones) without the
//! emulator holding that much memory: any byte range can be produced directly from the seed and the
//! offset (a counter-based generator), which also makes Range requests cheap.

use crate::content_hash::ContentHasher;
use std::io::{self, Write};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub(crate) enum Blob {
    Bytes(Arc<[u8]>),
    Pattern { seed: u64, len: u64 },
}

/// SplitMix64 finaliser: a good 64-bit mixer, so word k of a pattern is independent of word k+1.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline]
fn pattern_word(seed: u64, k: u64) -> u64 {
    mix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ k.wrapping_mul(0xd6e8_feb8_6659_fd93)
            .wrapping_add(0x632b_e59b_d9b4_e019))
}

/// Fill `buf` with the pattern bytes starting at `offset`.
pub(crate) fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = 0usize;
    let mut off = offset;
    // Unaligned head.
    if !off.is_multiple_of(8) {
        let w = pattern_word(seed, off / 8).to_le_bytes();
        let start = (off % 8) as usize;
        let n = (8 - start).min(buf.len());
        buf[..n].copy_from_slice(&w[start..start + n]);
        pos += n;
        off += n as u64;
    }
    // Aligned body, one word at a time.
    let mut k = off / 8;
    while buf.len() - pos >= 8 {
        buf[pos..pos + 8].copy_from_slice(&pattern_word(seed, k).to_le_bytes());
        pos += 8;
        k += 1;
    }
    if pos < buf.len() {
        let w = pattern_word(seed, k).to_le_bytes();
        let n = buf.len() - pos;
        buf[pos..].copy_from_slice(&w[..n]);
    }
}

impl Blob {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Blob::Bytes(b) => b.len() as u64,
            Blob::Pattern { len, .. } => *len,
        }
    }

    /// Copy `buf.len()` bytes starting at `offset` (the caller keeps the range in bounds).
    pub(crate) fn read_at(&self, offset: u64, buf: &mut [u8]) {
        match self {
            Blob::Bytes(b) => {
                let s = offset as usize;
                buf.copy_from_slice(&b[s..s + buf.len()]);
            }
            Blob::Pattern { seed, .. } => fill_pattern(*seed, offset, buf),
        }
    }

    /// Stream `len` bytes from `start` into `w` in bounded chunks, optionally flipping the byte at
    /// response offset `corrupt_at` (fault injection), never materialising the whole range.
    pub(crate) fn write_range(
        &self,
        w: &mut dyn Write,
        start: u64,
        len: u64,
        corrupt_at: Option<u64>,
    ) -> io::Result<()> {
        const CHUNK: usize = 256 * 1024;
        let mut buf = vec![0u8; CHUNK.min(len as usize).max(1)];
        let mut done = 0u64;
        while done < len {
            let n = ((len - done) as usize).min(buf.len());
            let chunk = &mut buf[..n];
            self.read_at(start + done, chunk);
            if let Some(c) = corrupt_at
                && c >= done
                && c < done + n as u64
            {
                chunk[(c - done) as usize] ^= 0x5a;
            }
            w.write_all(chunk)?;
            done += n as u64;
        }
        Ok(())
    }

    /// The whole content in memory (only for small blobs: exports, tests).
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len() as usize];
        self.read_at(0, &mut v);
        v
    }

    /// Content hash by streaming once over the content.
    pub(crate) fn hash(&self) -> [u8; 32] {
        let mut h = ContentHasher::new();
        match self {
            Blob::Bytes(b) => h.update(b),
            Blob::Pattern { .. } => {
                // Infallible: the hasher's writer never fails.
                let _ = self.write_range(&mut h, 0, self.len(), None);
            }
        }
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_random_access() {
        let b = Blob::Pattern { seed: 7, len: 1000 };
        let all = b.to_vec();
        for start in [0u64, 1, 7, 8, 9, 13, 500, 993] {
            let mut part = vec![0u8; (1000 - start as usize).min(37)];
            b.read_at(start, &mut part);
            assert_eq!(&part[..], &all[start as usize..start as usize + part.len()]);
        }
        let mut out = Vec::new();
        b.write_range(&mut out, 3, 990, Some(10)).unwrap();
        assert_eq!(out[10], all[13] ^ 0x5a);
        assert_eq!(out[11..], all[14..993]);
    }
}
