use clap::Parser;

fn main() {
    let cli = host_test::cli::Cli::parse();
    if let Err(e) = host_test::cli::run(cli) {
        // `host-test records | head` closing the pipe early is not an error.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("error: {e:#}");
        // One code per class of failure (README, "Exit codes"), found through the chain.
        std::process::exit(host_test::cli::ExitClass::of(&e).code());
    }
}
