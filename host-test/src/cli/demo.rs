//! `host-test demo`: the project's main job on its embedded default, offline.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::progress_bar;
use crate::app::ConnectorHost;
use crate::emulator::{Content, Emulator, EmulatorConfig};
use crate::runtime::SandboxConfig;
use crate::store::StoredCredentials;

/// Prints what happens step by step for a person, or (`json`) one object at the end:
/// `{files, seed, full, changes, incremental, records, items, match, database}`, where `full`
/// and `incremental` are `{entries, pages, seconds, api_calls, guest_peak_bytes, events: {kind: n}}`.
pub fn demo(files: usize, seed: u64, db: Option<PathBuf>, json: bool) -> Result<()> {
    let say = |line: &str| {
        if !json {
            println!("{line}");
        }
    };
    let db = db.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("dropbox-demo-{}.db", std::process::id()))
    });
    if db.exists() {
        std::fs::remove_file(&db).with_context(|| format!("cannot replace {}", db.display()))?;
    }
    say(&format!(
        "Starting the Dropbox emulator with a sample account of {files} files (seed {seed})..."
    ));
    let emulator = Emulator::start(EmulatorConfig {
        seed,
        files,
        ..Default::default()
    })?;
    // The demo is the Dropbox connector's, against the Dropbox emulator: always the default
    // component.
    let runtime = crate::components::default_runtime(SandboxConfig::default())?;
    let host = ConnectorHost::open(runtime, &db, Some(&emulator.base_url()))?;
    let tenant = "demo";
    host.connect(
        tenant,
        StoredCredentials {
            access_token: emulator.access_token(),
            ..Default::default()
        },
    )?;

    say("\n1. Full sync");
    let full = host.sync(tenant, Some(progress_bar()), None)?;
    let full_report = report(
        "full sync",
        &host,
        &full.value,
        full.elapsed,
        full.peak_memory,
        0,
        json,
    )?;
    let after_full = host.store().last_event_seq()?;

    say("\n2. Changing the account");
    let changes = change_account(&emulator)?;
    for line in &changes {
        say(&format!("   - {line}"));
    }

    say("\n3. Incremental sync");
    let incremental = host.sync(tenant, Some(progress_bar()), None)?;
    let incremental_report = report(
        "incremental sync",
        &host,
        &incremental.value,
        incremental.elapsed,
        incremental.peak_memory,
        after_full,
        json,
    )?;

    let truth = emulator.truth();
    let records = host.store().records(tenant)?;
    let same = truth.len() == records.len()
        && truth.iter().all(|t| {
            records
                .iter()
                .any(|r| r.external_id == t.id && r.path_lower() == Some(t.path_lower.as_str()))
        });
    if json {
        println!(
            "{}",
            serde_json::json!({
                "files": files,
                "seed": seed,
                "full": full_report,
                "changes": changes,
                "incremental": incremental_report,
                "records": records.len(),
                "items": truth.len(),
                "match": same,
                "database": db.display().to_string(),
            })
        );
    } else {
        println!(
            "\nThe store holds {} records; the emulator's account has {} items; {}",
            records.len(),
            truth.len(),
            if same { "they match." } else { "THEY DIFFER." }
        );
        println!("Database: {}", db.display());
        println!(
            "Look inside: host-test records --db {} --tenant {tenant} --json",
            db.display()
        );
        println!("             host-test events --db {} --json", db.display());
    }
    if !same {
        bail!("the store does not match the account");
    }
    Ok(())
}

/// One sync of the demo: printed for a person, and returned as JSON.
fn report(
    label: &str,
    host: &ConnectorHost,
    s: &crate::bindings::connector::SyncSummary,
    elapsed: std::time::Duration,
    peak: usize,
    since: i64,
    quiet: bool,
) -> Result<serde_json::Value> {
    let events = host.store().events(None, since)?;
    let count = |k: &str| events.iter().filter(|e| e.kind == k).count();
    let summary = serde_json::json!({
        "entries": s.entries,
        "pages": s.pages,
        "seconds": elapsed.as_secs_f64(),
        "api_calls": s.api_calls,
        "guest_peak_bytes": peak,
        "events": {
            "created": count("created"),
            "content": count("content"),
            "metadata": count("metadata"),
            "content_and_metadata": count("content_and_metadata"),
            "deleted": count("deleted"),
        },
    });
    if quiet {
        return Ok(summary);
    }
    println!(
        "   {label}: {} entries in {} pages, {:.3}s, {} API calls, guest memory peak {:.1} MiB",
        s.entries,
        s.pages,
        elapsed.as_secs_f64(),
        s.api_calls,
        peak as f64 / (1024.0 * 1024.0)
    );
    println!(
        "   events: {} new, {} content updates, {} metadata updates, {} content+metadata, {} deleted",
        count("created"),
        count("content"),
        count("metadata"),
        count("content_and_metadata"),
        count("deleted")
    );
    Ok(summary)
}

/// Edit, rename, move a folder, delete a folder with descendants, add files.
fn change_account(emulator: &Emulator) -> Result<Vec<String>> {
    let truth = emulator.truth();
    let mut lines = Vec::new();
    let files: Vec<_> = truth
        .iter()
        .filter(|t| t.kind == crate::emulator::Kind::File && t.is_downloadable)
        .collect();
    let folders: Vec<_> = truth
        .iter()
        .filter(|t| t.kind == crate::emulator::Kind::Folder)
        .collect();
    if let Some(f) = files.first() {
        emulator.modify_file(
            &f.path_display,
            Content::Bytes(b"edited by the demo\n".to_vec()),
        )?;
        lines.push(format!("edited {}", f.path_display));
    }
    if let Some(f) = files.get(1) {
        let to = rename_target(&f.path_display, "renamed by demo");
        emulator.move_path(&f.path_display, &to)?;
        lines.push(format!("renamed {} -> {}", f.path_display, to));
    }
    // A folder with descendants to delete, and a different one to move.
    let with_children = |path: &str| {
        truth
            .iter()
            .filter(|t| t.path_lower.starts_with(&format!("{path}/")))
            .count()
    };
    let mut candidates: Vec<_> = folders
        .iter()
        .filter(|f| with_children(&f.path_lower) > 0)
        .collect();
    candidates.sort_by_key(|f| std::cmp::Reverse(with_children(&f.path_lower)));
    if let Some(del) = candidates
        .iter()
        .find(|f| f.path_lower.matches('/').count() >= 2)
    {
        let n = with_children(&del.path_lower);
        emulator.delete(&del.path_display)?;
        lines.push(format!(
            "deleted folder {} with {n} descendants",
            del.path_display
        ));
        if let Some(mv) = candidates.iter().find(|f| {
            !f.path_lower.starts_with(&del.path_lower) && !del.path_lower.starts_with(&f.path_lower)
        }) {
            let to = format!("/Moved by demo {}", mv.name);
            let n = with_children(&mv.path_lower);
            emulator.move_path(&mv.path_display, &to)?;
            lines.push(format!(
                "moved folder {} ({n} descendants) -> {to}",
                mv.path_display
            ));
        }
    }
    for (i, name) in ["Notes 2026.md", "Résumé final.pdf", "Ideas 💡.txt"]
        .iter()
        .enumerate()
    {
        let path = format!("/New from demo/{name}");
        emulator.create_file(
            &path,
            Content::Bytes(format!("new file {i}\n").into_bytes()),
        )?;
        lines.push(format!("added {path}"));
    }
    Ok(lines)
}

fn rename_target(path: &str, suffix: &str) -> String {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{dir}/{stem} ({suffix}).{ext}"),
        None => format!("{dir}/{name} ({suffix})"),
    }
}
