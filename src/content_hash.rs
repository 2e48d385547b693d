//! The Dropbox content hash (host-test/emulator/DROPBOX-API.md §9): SHA-256 of the concatenated
//! SHA-256 digests of each 4 MiB block, as lowercase hex.
//!
//! [`ContentHasher`] implements [`std::io::Write`], so a download can write each chunk into the
//! hasher next to its destination and the hash falls out at the end. Memory is constant: each
//! block is fed to SHA-256 as it arrives and only its 32-byte digest is kept.

use sha2::{Digest, Sha256};

/// Dropbox's block size: 4 MiB.
pub const BLOCK_SIZE: usize = 4 * 1024 * 1024;

/// Streaming content hasher; chunk boundaries of the input don't matter.
#[derive(Clone, Default)]
pub struct ContentHasher {
    /// Hash over the block digests.
    overall: Sha256,
    /// Hash of the current (incomplete) block.
    block: Sha256,
    /// Bytes in the current block, always `< BLOCK_SIZE` between calls.
    block_len: usize,
    total: u64,
}

impl ContentHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = BLOCK_SIZE - self.block_len;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.block.update(now);
            self.block_len += now.len();
            self.total = self.total.saturating_add(now.len() as u64);
            if self.block_len == BLOCK_SIZE {
                let digest = self.block.finalize_reset();
                self.overall.update(digest);
                self.block_len = 0;
            }
            data = rest;
        }
    }

    /// Number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The content hash: 64 lowercase hex characters. An empty input has no blocks, so its
    /// hash is SHA-256 of nothing.
    pub fn finalize(mut self) -> String {
        if self.block_len > 0 {
            let digest = self.block.finalize();
            self.overall.update(digest);
        }
        hex(&self.overall.finalize())
    }
}

impl std::fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentHasher")
            .field("bytes", &self.total)
            .finish_non_exhaustive()
    }
}

impl std::io::Write for ContentHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The content hash of a whole buffer.
pub fn content_hash(data: &[u8]) -> String {
    let mut hasher = ContentHasher::new();
    hasher.update(data);
    hasher.finalize()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const B: usize = BLOCK_SIZE;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 256) as u8).collect()
    }

    fn chunked(data: &[u8], sizes: &[usize]) -> String {
        let mut h = ContentHasher::new();
        let mut rest = data;
        for &size in sizes {
            let (now, later) = rest.split_at(size.min(rest.len()));
            h.update(now);
            rest = later;
        }
        h.update(rest);
        h.finalize()
    }

    #[test]
    fn small_vectors() {
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
        assert!(ContentHasher::new().is_empty());
    }

    #[test]
    fn block_vectors() {
        let mut data = pattern(B);
        assert_eq!(
            content_hash(&data),
            "894bbb52d1212d6bcbe9967f1a2169138c4d4af0c8dfbaeae86cd1d3f0c03faf"
        );
        data.push(0xFF);
        assert_eq!(
            content_hash(&data),
            "9149387a91f71c7c2149b8427d15526b71c1a38d6c6f999ad71486a2ce788d57"
        );
        let big = pattern(B * 7 / 2);
        let expected = "f61d3ae93fa4f7646d37949fc0885141bf682faa9a130896b93459c650335d0f";
        assert_eq!(content_hash(&big), expected);
        // Odd chunk sizes straddling the boundaries.
        assert_eq!(chunked(&big, &[1, 65_537, B, 3, B - 1]), expected);
    }

    #[test]
    fn chunking_does_not_matter() {
        // The official suite's chunkings, on inputs around one and two block lengths.
        for len in [B - 1, B, B + 1, 2 * B + 5] {
            let data = pattern(len);
            let one_shot = content_hash(&data);
            for sizes in [&[B - 1][..], &[B], &[B + 1], &[B - 2, 1], &[B - 2, B + 3]] {
                assert_eq!(
                    chunked(&data, sizes),
                    one_shot,
                    "len {len}, chunks {sizes:?}"
                );
            }
        }
    }

    #[test]
    fn io_write_feeds_the_hasher() {
        let data = pattern(B + 10);
        let mut h = ContentHasher::new();
        let mut reader = &data[..];
        let copied = std::io::copy(&mut reader, &mut h).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copied, data.len() as u64);
        assert_eq!(h.len(), data.len() as u64);
        h.flush().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.finalize(), content_hash(&data));
    }
}
