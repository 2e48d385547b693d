//! A seeded random tree with realistic names, so tests and demos meet what real accounts hold:
//! spaces, accents, CJK, Greek final sigma, astral-plane emoji, mixed case, nesting up to eight
//! levels, a few shared links and a few non-downloadable Paper docs.
//!
//! It must build a million files in seconds: contents are small generated patterns, hashes are
//! computed on all cores, and the whole batch enters the tree under one lock.

use crate::blob::Blob;
use crate::error::EmulatorError;
use crate::shared::Shared;
use crate::state::{Export, FileInfo, Node, lower};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::sync::Arc;

const MAX_DEPTH: usize = 8;

const WORDS: &[&str] = &[
    "Report",
    "report",
    "Budget",
    "Photos",
    "Résumé",
    "Über uns",
    "Año nuevo",
    "niño",
    "Café",
    "naïve",
    "Zürich",
    "Ångström",
    "文件",
    "報告書",
    "データ",
    "사진",
    "Привет",
    "Ελλάδα",
    "ΟΔΥΣΣΕΥΣ",
    "straße",
    "İstanbul",
    "🎉 Party",
    "📁 Archive",
    "😀",
    "🚀 Launch",
    "☀ Summer",
    "Meeting notes",
    "TODO",
    "README",
    "Q1",
    "Q2",
    "draft",
    "Final FINAL",
    "backup",
    "misc",
    "Invoices 2023",
    "tax Returns",
    "Holiday",
    "Projects",
    "Code",
    "src",
    "Music",
    "Videos",
    "Mixed CaSe",
    "Ünïcödé",
    "mañana",
    "Crème brûlée",
    "東京",
    "Notes",
    "Scans",
    "Work",
    "Family",
    "Recipes",
    "Travel 🌍",
    "plans",
    "Old stuff",
];

const EXTS: &[&str] = &[
    ".txt", ".pdf", ".jpg", ".md", ".docx", ".png", ".csv", ".json", ".xlsx", ".mp3", "",
    ".tar.gz", ".JPG",
];

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

fn folder_name(rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => pick(rng, WORDS).to_string(),
        1 => format!("{} {}", pick(rng, WORDS), pick(rng, WORDS)),
        2 => format!("{} {}", pick(rng, WORDS), rng.random_range(1990..2030)),
        _ => format!("{}_{}", pick(rng, WORDS), rng.random_range(0..1000)),
    }
}

fn file_name(rng: &mut StdRng, i: usize) -> String {
    let base = match rng.random_range(0..3) {
        0 => format!("{} {}", pick(rng, WORDS), i),
        1 => format!("{}-{}", pick(rng, WORDS), rng.random_range(0..100_000)),
        _ => format!("{} ({})", pick(rng, WORDS), i % 97),
    };
    format!("{base}{}", pick(rng, EXTS))
}

/// Make `name` unique (case-insensitively) among the names already used under `parent`.
/// Names are remembered by a 64-bit hash of their lower-case form: a (rare) false collision only
/// adds a " (2)" suffix, and it saves a million string allocations.
fn unique(
    used: &mut HashSet<(usize, u64)>,
    parent: usize,
    name: String,
    taken: impl Fn(&str) -> bool,
) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    loop {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&lower(&candidate), &mut h);
        let key = (parent, std::hash::Hasher::finish(&h));
        if !used.contains(&key) && !taken(&candidate) {
            used.insert(key);
            return candidate;
        }
        candidate = match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
            _ => format!("{name} ({n})"),
        };
        n += 1;
    }
}

/// File sizes: mostly small (cheap hashes), a few tens of KiB.
fn size(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..100) {
        0..70 => rng.random_range(0..512),
        70..95 => rng.random_range(512..4096),
        _ => rng.random_range(4096..32_768),
    }
}

fn hash_all(specs: &[(u64, u64)]) -> Vec<[u8; 32]> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(1);
    let chunk = specs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&(seed, len)| Blob::Pattern { seed, len }.hash())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

pub(crate) fn populate(shared: &Shared, files: usize, seed: u64) -> Result<(), EmulatorError> {
    if files == 0 {
        return Ok(());
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let now = shared.now();
    let n_folders = (files / 15).max(1);
    let n_paper = (2 + files / 5000).min(20).min(files);
    let n_plain = files - n_paper;
    // Existing root names must not be reused (populate may run on a non-empty account).
    let (tree, first_id, first_rev) = {
        let mut st = shared.state();
        let (id, rev) = st.reserve_ids((n_folders + files) as u64);
        (st.tree.clone(), id, rev)
    };
    let taken_at_root = |name: &str| tree.live.contains_key(lower(&format!("/{name}")).as_str());
    const ROOT: usize = usize::MAX;

    // Folders: a few top-level ones, one chain down to MAX_DEPTH, the rest under random earlier folders.
    let mut used: HashSet<(usize, u64)> = HashSet::with_capacity(n_folders + files);
    let mut f_display: Vec<String> = Vec::with_capacity(n_folders);
    let mut f_depth: Vec<usize> = Vec::with_capacity(n_folders);
    let top = (8 + files / 50_000).min(n_folders);
    for i in 0..n_folders {
        let parent = if i < top {
            ROOT
        } else if i < top + MAX_DEPTH - 1 {
            i - 1
        } else {
            let mut p = rng.random_range(0..i);
            while f_depth[p] >= MAX_DEPTH {
                p = rng.random_range(0..i);
            }
            p
        };
        let raw = folder_name(&mut rng);
        let name = if parent == ROOT {
            unique(&mut used, parent, raw, taken_at_root)
        } else {
            unique(&mut used, parent, raw, |_| false)
        };
        let (display, depth) = if parent == ROOT {
            (format!("/{name}"), 1)
        } else {
            (format!("{}/{name}", f_display[parent]), f_depth[parent] + 1)
        };
        f_display.push(display);
        f_depth.push(depth);
    }

    // Files: mostly inside folders, a few at the root.
    let mut f_specs: Vec<(String, u64, u64, i64)> = Vec::with_capacity(files);
    for i in 0..files {
        let parent = if rng.random_range(0..100) < 2 {
            ROOT
        } else {
            rng.random_range(0..n_folders)
        };
        let mut raw = file_name(&mut rng, i);
        if i >= n_plain {
            raw = format!("{} notes {i}.paper", pick(&mut rng, WORDS));
        }
        let name = if parent == ROOT {
            unique(&mut used, parent, raw, taken_at_root)
        } else {
            unique(&mut used, parent, raw, |_| false)
        };
        let display = if parent == ROOT {
            format!("/{name}")
        } else {
            format!("{}/{name}", f_display[parent])
        };
        let client_modified = now - rng.random_range(3600..5 * 365 * 86_400);
        f_specs.push((display, rng.random(), size(&mut rng), client_modified));
    }
    drop(used);
    let hashes = hash_all(
        &f_specs[..n_plain]
            .iter()
            .map(|(_, s, l, _)| (*s, *l))
            .collect::<Vec<_>>(),
    );

    let mut nodes: Vec<Arc<Node>> = Vec::with_capacity(n_folders + files);
    for (i, display) in f_display.into_iter().enumerate() {
        nodes.push(Arc::new(Node {
            id: first_id + i as u64,
            path_lower: lower(&display).into(),
            path_display: display.into(),
            file: None,
        }));
    }
    let markdown = Arc::new(Export {
        export_as: "markdown".into(),
    });
    for (i, (display, pseed, len, client_modified)) in f_specs.into_iter().enumerate() {
        let (blob, hash, export) = if i < n_plain {
            (Blob::Pattern { seed: pseed, len }, Some(hashes[i]), None)
        } else {
            let title = display
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches(".paper")
                .to_string();
            let text = format!("# {title}\n\nA Paper doc generated by the emulator ({pseed:x}).\n");
            (
                Blob::Bytes(Arc::from(text.as_bytes())),
                None,
                Some(markdown.clone()),
            )
        };
        let server_modified = (client_modified + rng.random_range(0..3600)).min(now);
        let file = FileInfo {
            rev: first_rev + i as u64,
            blob,
            hash,
            client_modified,
            server_modified,
            export,
        };
        nodes.push(Arc::new(Node {
            id: first_id + (n_folders + i) as u64,
            path_lower: lower(&display).into(),
            path_display: display.into(),
            file: Some(file),
        }));
    }
    // Key order is parent-before-child too, and sorted insertion is much faster for the B-tree.
    nodes.sort_unstable_by(|a, b| a.path_lower.cmp(&b.path_lower));
    let n_links = (3 + files / 2000).min(25).min(nodes.len());
    let link_picks: Vec<usize> = (0..n_links)
        .map(|_| rng.random_range(0..nodes.len()))
        .collect();
    {
        let mut st = shared.state();
        st.insert_batch(nodes.clone());
        for i in link_picks {
            let n = nodes[i].clone();
            if st.node_by_id(n.id).is_some() {
                st.share_node(&n, &shared.base_url);
            }
        }
    }
    shared.changed.notify_all();
    Ok(())
}
