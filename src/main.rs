//! The `authgate` command: `run`, `check` and `demo`.

use authgate::config;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Start a self-contained demo on loopback: gateway, development IdP and echo upstream.
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("AUTHGATE_LOG").unwrap_or_else(|_| "info,pingora=warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
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
        Command::Run { config } => {
            let config = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            serve(&config)
        }
        Command::Demo { listen, admin, idp } => match authgate::demo::run(listen, admin, idp) {
            Ok(config) => serve(&config),
            Err(e) => {
                eprintln!("authgate demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(config: &config::Config) -> ExitCode {
    match authgate::server::build(config) {
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
