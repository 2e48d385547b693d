//! The hash maps of a page's planning: keyed by ids and paths, built and dropped once per page,
//! a few thousand keys each.
//!
//! std's default hasher (SipHash-1-3) was 2.9% of a 100,000-file sync's samples (perf, the
//! guest's functions named). foldhash is several times cheaper per key. It is not a
//! cryptographic hash, so each map gets a seed of its own from std's `RandomState`, which is
//! seeded from `wasi:random` in the component: the keys are file names that anyone who can
//! write into the account chooses, and a fixed seed would let them choose colliding ones. A
//! page holds at most a few thousand keys, which bounds the cost of collisions anyway.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

/// The `BuildHasher` of the planner's maps: foldhash under a per-map random seed.
#[derive(Clone, Debug)]
pub struct PageHasher(foldhash::fast::FixedState);

impl Default for PageHasher {
    fn default() -> Self {
        // One SipHash of a constant under std's per-process random keys (which it moves on for
        // every `RandomState`): a fresh random seed for each map.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        PageHasher(foldhash::fast::FixedState::with_seed(seed))
    }
}

impl BuildHasher for PageHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

pub type PageMap<K, V> = HashMap<K, V, PageHasher>;
pub type PageSet<K> = HashSet<K, PageHasher>;

/// An empty map with room for `capacity` keys.
pub fn map_with_capacity<K, V>(capacity: usize) -> PageMap<K, V> {
    PageMap::with_capacity_and_hasher(capacity, PageHasher::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn each_map_has_its_own_seed() {
        let (a, b) = (PageHasher::default(), PageHasher::default());
        let key = "/some/path/name.txt";
        assert_ne!(a.hash_one(key), b.hash_one(key));
        // One map hashes a key the same way every time.
        assert_eq!(a.hash_one(key), a.hash_one(key));
    }

    #[test]
    fn maps_work_as_maps() {
        let mut m: PageMap<String, u32> = map_with_capacity(4);
        for i in 0..1000 {
            m.insert(format!("/p/{i}"), i);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get("/p/999"), Some(&999));
        assert_eq!(m.get("/p/1000"), None);
    }
}
