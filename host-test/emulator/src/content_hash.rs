//! The Dropbox content hash (DROPBOX-API.md §9), computed by streaming.
//!
//! It exists as its own module because every file the emulator stores needs one, and because the
//! block-boundary rule (finalize a block at exactly 4 MiB whatever the write chunking) is easy to
//! get wrong and deserves its own tests with the official vectors.

use sha2::{Digest, Sha256};
use std::io;

/// Dropbox hashes content in blocks of exactly 4 MiB.
pub const BLOCK_SIZE: usize = 4 * 1024 * 1024;

/// Streaming content hasher: feed bytes in any chunking, get the Dropbox `content_hash`.
///
/// Implements `std::io::Write` so it can sit at the end of `io::copy` or next to another writer.
#[derive(Clone, Default)]
pub struct ContentHasher {
    block: Sha256,
    block_len: usize,
    overall: Sha256,
}

impl ContentHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = BLOCK_SIZE - self.block_len;
            let take = room.min(data.len());
            self.block.update(&data[..take]);
            self.block_len += take;
            data = &data[take..];
            if self.block_len == BLOCK_SIZE {
                let digest = std::mem::take(&mut self.block).finalize();
                self.overall.update(digest);
                self.block_len = 0;
            }
        }
    }

    /// The binary (32-byte) hash. An empty input has no blocks, so it hashes to SHA-256("").
    pub fn finalize(mut self) -> [u8; 32] {
        if self.block_len > 0 {
            let digest = self.block.finalize();
            self.overall.update(digest);
        }
        self.overall.finalize().into()
    }

    /// The hash as Dropbox writes it: 64 lowercase hex characters.
    pub fn finalize_hex(self) -> String {
        to_hex(&self.finalize())
    }
}

impl io::Write for ContentHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One-shot content hash of an in-memory buffer, as lowercase hex.
pub fn content_hash(data: &[u8]) -> String {
    let mut h = ContentHasher::new();
    h.update(data);
    h.finalize_hex()
}

/// Lowercase hex of bytes (content hashes, request ids).
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 256) as u8).collect()
    }

    fn chunked(data: &[u8], sizes: &[usize]) -> String {
        let mut h = ContentHasher::new();
        let mut rest = data;
        for &s in sizes {
            let s = s.min(rest.len());
            h.update(&rest[..s]);
            rest = &rest[s..];
        }
        h.update(rest);
        h.finalize_hex()
    }

    /// The vectors of DROPBOX-API.md §9 (the name keeps the section number of an older reference).
    #[test]
    fn section_10_vectors() {
        assert_eq!(
            content_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            content_hash(b"hello rdrop2"),
            "1aa2b7623dfff520c4abdc1227d10bc4e229b74005b66b3458345830e556f4de"
        );
        assert_eq!(
            content_hash(b"a"),
            "bf5d3affb73efd2ec6c36ad3112dd933efed63c4e1cbffcfa88e2759c144f2d8"
        );
        let one_block = ramp(BLOCK_SIZE);
        assert_eq!(
            content_hash(&one_block),
            "894bbb52d1212d6bcbe9967f1a2169138c4d4af0c8dfbaeae86cd1d3f0c03faf"
        );
        let mut plus = one_block.clone();
        plus.push(0xFF);
        assert_eq!(
            content_hash(&plus),
            "9149387a91f71c7c2149b8427d15526b71c1a38d6c6f999ad71486a2ce788d57"
        );
        let three_and_half = ramp(14_680_064);
        assert_eq!(
            content_hash(&three_and_half),
            "f61d3ae93fa4f7646d37949fc0885141bf682faa9a130896b93459c650335d0f"
        );
    }

    #[test]
    fn streaming_chunkings_match_one_shot() {
        const B: usize = BLOCK_SIZE;
        let data = ramp(14_680_064);
        let want = "f61d3ae93fa4f7646d37949fc0885141bf682faa9a130896b93459c650335d0f";
        for sizes in [
            vec![B - 1],
            vec![B],
            vec![B + 1],
            vec![B - 2, 1],
            vec![B - 2, B + 3],
            vec![1, 2, 3, 4096],
        ] {
            assert_eq!(chunked(&data, &sizes), want, "chunking {sizes:?}");
        }
        // Chunkings that repeat until the end, so every boundary is crossed the same way.
        for step in [B - 1, B, B + 1, 65_537] {
            let mut h = ContentHasher::new();
            for c in data.chunks(step) {
                h.update(c);
            }
            assert_eq!(h.finalize_hex(), want, "step {step}");
        }
    }
}
