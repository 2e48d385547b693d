//! `host-test emulator`: the Dropbox API emulator as a standalone server.

use std::io::Write;

use anyhow::{Context, Result};

use crate::emulator::{Emulator, EmulatorConfig};

pub fn run_emulator(listen: &str, seed: u64, files: usize) -> Result<()> {
    let addr = listen
        .parse()
        .with_context(|| format!("--listen {listen} is not an address like 127.0.0.1:8765"))?;
    let emulator = Emulator::start(EmulatorConfig {
        listen: Some(addr),
        seed,
        files,
        ..Default::default()
    })?;
    println!("{}", emulator.base_url());
    println!("{}", emulator.access_token());
    std::io::stdout().flush()?;
    // Serves until stopped (Ctrl-C, or POST /__emulator/stop on the control interface).
    emulator.run_until_stopped();
    Ok(())
}
