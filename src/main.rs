//! The `k3rs` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use k3rs::config::{self, Command, ConfigError};

fn main() -> ExitCode {
    // When containerd's shim starts us as a container's log writer, do only that.
    k3rs::agent::logger::run_if_invoked();
    // rustls must never pick a provider on its own; ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();

    let command = match config::parse(std::env::args_os().collect()) {
        Ok(c) => c,
        // --help, usage errors: clap prints them and picks the exit code.
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => return fail(&anyhow::Error::new(e)),
    };

    match command {
        Command::Version => {
            println!("{}", config::version_text());
            ExitCode::SUCCESS
        }
        Command::NotAvailable(name) => fail(&anyhow::anyhow!(
            "`k3rs {name}` is not available in this build yet"
        )),
        Command::Server(cfg) => {
            init_tracing(cfg.log_level());
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(&anyhow::Error::new(e).context("starting the runtime")),
            };
            match runtime.block_on(k3rs::server::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the level the flags ask for.
fn init_tracing(level: tracing::Level) {
    use std::io::IsTerminal;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => tracing_subscriber::EnvFilter::new(spec),
        _ => tracing_subscriber::EnvFilter::new(level.as_str().to_ascii_lowercase()),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// One line, causes joined by ": ", exit code 1.
fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("k3rs: error: {e:#}");
    ExitCode::FAILURE
}
