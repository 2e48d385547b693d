//! `host-test bench`: figures for BENCHMARKS.md.

use anyhow::Result;

use crate::bench::{BenchOptions, run, table};

pub fn bench(opts: BenchOptions, json: bool) -> Result<()> {
    let report = run(&opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}
