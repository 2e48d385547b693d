//! The `host-test` command, built inside the test package so tests can run it as a process.

use clap::Parser;

fn main() {
    let cli = host_test::cli::Cli::parse();
    if let Err(e) = host_test::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(host_test::cli::ExitClass::of(&e).code());
    }
}
