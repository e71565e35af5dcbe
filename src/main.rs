//! The `authgate` command: `run`, `check`, `health` and (with the default feature `demo`) `demo`.

use authgate::config;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: fewer CPU µs per proxied request (see PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A reverse-proxy authentication gateway on Pingora.
#[derive(Parser)]
#[command(name = "authgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or print every problem and exit 1.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Probe a running gateway's admin `/healthz` (for container health checks): exit 0 when healthy.
    Health {
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
    /// Start a self-contained demo on loopback: gateway, development IdP and echo upstream.
    #[cfg(feature = "demo")]
    Demo {
        /// The gateway's proxy address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The gateway's admin address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// The development IdP's address (loopback only).
        #[arg(long, default_value = "127.0.0.1:9091")]
        idp: SocketAddr,
    },
}

/// Starts the log on standard error, in the config's format, filtered by `AUTHGATE_LOG`.
fn init_log(format: config::model::LogFormat) {
    let filter = authgate::logging::filter(std::env::var("AUTHGATE_LOG").ok().as_deref());
    match format {
        config::model::LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none(),
            )
            .init(),
        config::model::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` starts the log once the config has said which format; the others write text.
    if !matches!(cli.command, Command::Run { .. }) {
        init_log(config::model::LogFormat::Text);
    }
    match cli.command {
        Command::Check { config } => match authgate::server::load(&config) {
            Ok((c, table)) => {
                // Not errors: a method list that hides a less specific route is often meant.
                for warning in table.shadow_warnings() {
                    eprintln!("{}: warning: {warning}", config.display());
                }
                for w in &c.warnings {
                    match w.line {
                        Some(line) => eprintln!("{}:{line}: {w}", config.display()),
                        None => eprintln!("{}: {w}", config.display()),
                    }
                }
                println!(
                    "{}: ok ({} clients, {} upstreams, {} routes)",
                    config.display(),
                    c.clients.len(),
                    c.upstreams.len(),
                    c.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => {
            let (config, routes, hash) = match authgate::server::load_hashed(&path) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            init_log(config.log.format);
            config.log_warnings(&path);
            serve(&config, routes, Some((&path, &hash)))
        }
        Command::Health { admin } => health(admin),
        #[cfg(feature = "demo")]
        Command::Demo { listen, admin, idp } => match authgate::demo::run(listen, admin, idp) {
            Ok((config, routes)) => serve(&config, routes, None),
            Err(e) => {
                eprintln!("authgate demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(
    config: &config::Config,
    routes: authgate::authz::routes::RouteTable,
    file: Option<(&std::path::Path, &str)>,
) -> ExitCode {
    match authgate::server::build(config, routes, file) {
        Ok(server) => {
            tracing::info!(proxy = %config.proxy.listen, admin = %config.admin.listen, "authgate listening");
            server.run_forever()
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// One `GET /healthz` over a plain socket, so that slim images need no curl.
fn health(admin: SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    use std::time::Duration;
    let probe = || -> std::io::Result<bool> {
        let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"HTTP/1.1 200"))
    };
    match probe() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("{admin}: /healthz did not answer 200");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{admin}: {e}");
            ExitCode::FAILURE
        }
    }
}
