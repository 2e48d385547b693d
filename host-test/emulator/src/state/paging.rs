//! Paging the initial enumeration of a listing through its snapshot of the tree: key-range
//! scans in pre-order (parents first) and in post-order (`children_before_parents`), with
//! tombstones merged in for `include_deleted`. A page resumes strictly after the last key the
//! cursor carries, so paging is exact however the account changes meanwhile.

use super::journal::{Cursor, JEntry};
use super::tree::{Map, Node, Tree, subtree_end};
use std::ops::Bound;
use std::sync::Arc;

/// Up to `want` entries of `map` under `prefix` after `after` (all descendants, or only direct
/// children), in key order. Non-recursive scans jump over each child's subtree with a new range.
fn scan<V: Clone>(
    map: &Map<V>,
    prefix: &str,
    recursive: bool,
    after: Option<&str>,
    want: usize,
    mut accept: impl FnMut(&V) -> bool,
) -> Vec<(Arc<str>, V)> {
    let mut out = Vec::new();
    if want == 0 {
        return out;
    }
    let mut start: Bound<String> = match after {
        Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
        _ => Bound::Included(prefix.to_string()),
    };
    'restart: loop {
        let range = map.range::<_, str>((start.as_ref().map(|s| s.as_str()), Bound::Unbounded));
        for (k, v) in range {
            let Some(rest) = k.strip_prefix(prefix) else {
                break 'restart;
            };
            if !recursive && let Some(i) = rest.find('/') {
                start = Bound::Included(subtree_end(&k[..prefix.len() + i]));
                continue 'restart;
            }
            if accept(v) {
                out.push((k.clone(), v.clone()));
                if out.len() >= want {
                    break 'restart;
                }
            }
        }
        break;
    }
    out
}

/// The post-order of keys (`children_before_parents`): byte order, except that a key sorts
/// AFTER every key it is a prefix of (as if each key ended with a byte above all others). So a
/// folder follows its whole subtree; two keys that are not prefixes of one another keep their
/// usual order.
fn post_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len().min(b.len());
    a[..n].cmp(&b[..n]).then_with(|| b.len().cmp(&a.len()))
}

/// The smallest string above every string that starts with `key` (None: there is none).
fn prefix_successor(key: &str) -> Option<String> {
    let mut s = key.to_string();
    while let Some(c) = s.pop() {
        let next = match c as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(n) = next {
            s.push(n);
            return Some(s);
        }
    }
    None
}

/// `scan` in post-order (see `post_cmp`), always recursive: up to `want` entries of `map` whose
/// key starts with `prefix`, plus the entry at `self_key` if given (it sorts after all of them),
/// strictly after the key `after`.
///
/// The map is walked in its own order with a stack of pending keys, each a prefix of the next:
/// a key is emitted when the walk reaches a key it is not a prefix of (its subtree is done).
/// Resuming after `after`: the keys still due are the stored proper prefixes of `after` (its
/// pending ancestors, rebuilt as the stack) and the keys above every key that starts with
/// `after` (whose subtree was emitted before it). Each page costs O(entries walked, filtered ones
/// included, + key length * log n).
fn scan_post<V: Clone>(
    map: &Map<V>,
    prefix: &str,
    self_key: Option<&str>,
    after: Option<&str>,
    want: usize,
    mut accept: impl FnMut(&V) -> bool,
) -> Vec<(Arc<str>, V)> {
    let mut out = Vec::new();
    if want == 0 || (after.is_some() && after == self_key) {
        return out;
    }
    let in_scope = |k: &str| k.starts_with(prefix) || Some(k) == self_key;
    let entry = |k: &str| map.get_key_value(k).map(|(k, v)| (k.clone(), v.clone()));
    let mut stack: Vec<(Arc<str>, V)> = Vec::new();
    let start = match after {
        None => {
            stack.extend(self_key.and_then(entry));
            Some(prefix.to_string())
        }
        Some(a) => {
            // Proper prefixes of `after` in scope, shortest first (the listed folder included).
            stack.extend(
                a.char_indices()
                    .map(|(i, _)| &a[..i])
                    .filter(|p| in_scope(p))
                    .filter_map(entry),
            );
            prefix_successor(a).map(|s| s.max(prefix.to_string()))
        }
    };
    let mut emit = |out: &mut Vec<(Arc<str>, V)>, (k, v): (Arc<str>, V)| {
        if accept(&v) {
            out.push((k, v));
        }
        out.len() >= want
    };
    if let Some(start) = start {
        let range = map.range::<_, str>((Bound::Included(start.as_str()), Bound::Unbounded));
        for (k, v) in range {
            if !k.starts_with(prefix) {
                break;
            }
            while stack
                .last()
                .is_some_and(|(top, _)| !k.starts_with(top.as_ref()))
            {
                if let Some(done) = stack.pop()
                    && emit(&mut out, done)
                {
                    return out;
                }
            }
            stack.push((k.clone(), v.clone()));
        }
    }
    while let Some(done) = stack.pop() {
        if emit(&mut out, done) {
            break;
        }
    }
    out
}

/// One page of an initial enumeration from a snapshot: (entries, last key, has_more).
/// `post_order` (`children_before_parents`, recursive listings only) puts every folder after
/// its descendants, the listed folder itself (if included) last.
pub(crate) fn snapshot_page(
    tree: &Tree,
    c: &Cursor,
    cfg_self: bool,
    post_order: bool,
) -> (Vec<JEntry>, Option<String>, bool) {
    let limit = c.l.max(1) as usize;
    let post = post_order && c.r;
    let mut items = Vec::new();
    let mut last = c.k.clone();
    if !post && c.k.is_none() && c.includes_self(cfg_self) {
        if let Some(n) = tree.live.get(c.p.as_str()) {
            items.push(JEntry::Live(n.clone()));
        }
        last = Some(c.p.clone());
    }
    let remaining = limit.saturating_sub(items.len());
    let prefix = format!("{}/", c.p);
    let after = last.as_deref();
    let accept_live = |n: &Arc<Node>| c.n || n.is_downloadable();
    let live = if post {
        let self_key = c.includes_self(cfg_self).then_some(c.p.as_str());
        scan_post(
            &tree.live,
            &prefix,
            self_key,
            after,
            remaining + 1,
            accept_live,
        )
    } else {
        scan(&tree.live, &prefix, c.r, after, remaining + 1, accept_live)
    };
    let tombs = match (c.d, post) {
        (false, _) => Vec::new(),
        (true, false) => scan(&tree.tombs, &prefix, c.r, after, remaining + 1, |_| true),
        (true, true) => scan_post(&tree.tombs, &prefix, None, after, remaining + 1, |_| true),
    };
    let mut merged: Vec<JEntry> = Vec::with_capacity(remaining + 1);
    let (mut li, mut ti) = (live.into_iter().peekable(), tombs.into_iter().peekable());
    while merged.len() <= remaining {
        let take_live = match (li.peek(), ti.peek()) {
            (Some(l), Some(t)) if post => post_cmp(&l.0, &t.0).is_le(),
            (Some(l), Some(t)) => l.0 <= t.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_live {
            if let Some((_, n)) = li.next() {
                merged.push(JEntry::Live(n));
            }
        } else if let Some((k, d)) = ti.next() {
            merged.push(JEntry::Deleted {
                path_lower: k,
                path_display: d,
            });
        }
    }
    let has_more = merged.len() > remaining;
    merged.truncate(remaining);
    if let Some(e) = merged.last() {
        last = Some(e.key().to_string());
    }
    items.extend(merged);
    (items, last, has_more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn folder(id: u64, key: &str) -> Arc<Node> {
        Arc::new(Node {
            id,
            path_lower: key.into(),
            path_display: key.into(),
            file: None,
        })
    }

    fn cursor(p: &str, d: bool, limit: u32) -> Cursor {
        Cursor {
            a: 0,
            e: 0,
            p: p.to_string(),
            i: None,
            r: true,
            d,
            n: true,
            h: false,
            l: limit,
            s: None,
            k: None,
            j: 0,
        }
    }

    /// Every page of a listing, concatenated (keys only).
    fn all_pages(tree: &Tree, mut c: Cursor, cfg_self: bool) -> Vec<String> {
        let mut keys = Vec::new();
        loop {
            let (entries, last, has_more) = snapshot_page(tree, &c, cfg_self, true);
            assert!(entries.len() <= c.l as usize);
            keys.extend(entries.iter().map(|e| e.key().to_string()));
            if !has_more {
                return keys;
            }
            assert!(!entries.is_empty(), "a page with has_more is never empty");
            c.k = last;
        }
    }

    #[test]
    fn post_order_pages_are_exact_and_children_come_first() {
        // Components chosen to sit around '/' in byte order and at the ends of the code space.
        let comps = [
            "a",
            "a b",
            "a-b",
            "a0",
            "ab",
            "b",
            "é",
            "z\u{10FFFF}",
            "\u{10FFFF}",
        ];
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut tree = Tree::default();
            let mut id = 0;
            for _ in 0..rng.random_range(1..40) {
                let depth = rng.random_range(1..5);
                let mut key = String::new();
                for _ in 0..depth {
                    key.push('/');
                    key.push_str(comps[rng.random_range(0..comps.len())]);
                    if !tree.live.contains_key(key.as_str()) {
                        id += 1;
                        tree.live.insert(key.as_str().into(), folder(id, &key));
                    }
                }
            }
            for _ in 0..rng.random_range(0..8) {
                let key = format!(
                    "/{}/{}",
                    comps[rng.random_range(0..comps.len())],
                    comps[rng.random_range(0..comps.len())]
                );
                if !tree.live.contains_key(key.as_str()) {
                    tree.tombs.insert(key.as_str().into(), key.as_str().into());
                }
            }
            let listed: Vec<String> = std::iter::once(String::new())
                .chain(tree.live.keys().take(5).map(|k| k.to_string()))
                .collect();
            for p in &listed {
                for (cfg_self, d) in [(true, false), (false, true), (true, true)] {
                    let prefix = format!("{p}/");
                    let mut want: Vec<String> = tree
                        .live
                        .keys()
                        .filter(|k| {
                            k.starts_with(&prefix)
                                || (cfg_self && !p.is_empty() && k.as_ref() == p.as_str())
                        })
                        .chain(tree.tombs.keys().filter(|k| d && k.starts_with(&prefix)))
                        .map(|k| k.to_string())
                        .collect();
                    want.sort_by(|a, b| post_cmp(a, b));
                    for limit in [1, 2, 3, 7, 1000] {
                        let got = all_pages(&tree, cursor(p, d, limit), cfg_self);
                        assert_eq!(got, want, "seed {seed} listing {p:?} limit {limit}");
                        for (i, k) in got.iter().enumerate() {
                            let sub = format!("{k}/");
                            assert!(
                                got[i..].iter().all(|later| !later.starts_with(&sub)),
                                "{k} comes before one of its descendants"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn prefix_successor_bounds_a_subtree() {
        assert_eq!(prefix_successor("/a").as_deref(), Some("/b"));
        assert_eq!(
            prefix_successor("/a\u{D7FF}").as_deref(),
            Some("/a\u{E000}")
        );
        assert_eq!(prefix_successor("/a\u{10FFFF}").as_deref(), Some("/b"));
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
        assert!(post_cmp("/a/x", "/a").is_lt());
        assert!(post_cmp("/ab", "/a").is_lt());
        assert!(post_cmp("/a b", "/a/x").is_lt());
    }
}
