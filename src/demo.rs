//! `authgate demo` (cargo feature `demo`, on by default): the built-in config that points the
//! gateway at the development IdP and echo upstream of the `devidp` crate, started on loopback.
//! Production builds (`--no-default-features`) carry neither this module nor `devidp`.

use crate::authz::routes::RouteTable;
use crate::config::{self, Config};
use std::net::SocketAddr;

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An address that is not loopback.
    #[error("{0} is not a loopback address: the demo only listens on 127.0.0.1 or ::1")]
    NotLoopback(SocketAddr),
    /// The development IdP or the echo upstream could not start.
    #[error(transparent)]
    Servers(#[from] devidp::demo::DemoError),
    /// The built-in config does not load (a broken build).
    #[error("the built-in demo config: {0}")]
    Config(String),
}

/// What a client's name keeps unencoded in its back-channel logout URL.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// The demo's config; `{PROXY}`, `{ADMIN}`, `{PORT}`, `{IDP}`, `{ECHO}`, `{GITHUB}`,
/// `{GITHUB_API}` and `{LANDING}` are filled in at start.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// Starts the demo's IdP and echo upstream on a background thread, prints how to use it,
/// and returns the gateway config to serve.
pub fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    idp_addr: SocketAddr,
) -> Result<(Config, RouteTable), DemoError> {
    for addr in [listen, admin, idp_addr] {
        if !addr.ip().is_loopback() {
            return Err(DemoError::NotLoopback(addr));
        }
    }
    let servers = devidp::demo::start(idp_addr)?;
    let text = DEMO_CONFIG
        .replace("{PROXY}", &listen.to_string())
        .replace("{ADMIN}", &admin.to_string())
        .replace("{PORT}", &listen.port().to_string())
        .replace("{IDP}", servers.issuer())
        .replace("{ECHO}", &servers.echo().to_string())
        .replace("{GITHUB_API}", &servers.github_api_url())
        .replace("{GITHUB}", &servers.github_base_url())
        .replace("{LANDING}", &servers.landing().to_string());
    let (config, routes) = config::parse_then(
        "(built-in demo config)",
        &text,
        &|_| None,
        RouteTable::from_config,
    )
    .map_err(|e| DemoError::Config(e.to_string()))?;
    for client in &config.clients {
        let uris: Vec<String> = client
            .origins
            .iter()
            .map(|o| format!("{o}{}", client.redirect_path))
            .collect();
        for sign_in in &client.sign_in {
            match config.providers.get(sign_in.provider).map(|p| &p.kind) {
                Some(crate::config::model::ProviderKind::GitHub(_)) => {
                    // A GitHub OAuth app has one callback URL.
                    if let Some(uri) = uris.first() {
                        servers.register_github_app(
                            &sign_in.client_id,
                            sign_in.client_secret.expose(),
                            uri,
                        );
                    }
                }
                _ => {
                    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
                    servers.register_client(
                        &sign_in.client_id,
                        Some(sign_in.client_secret.expose()),
                        &uris,
                    );
                    // Signing out at the IdP signs the browser out here too (OIDC back-channel logout).
                    if let Some(origin) = client.origins.first() {
                        let name =
                            percent_encoding::utf8_percent_encode(&client.name, PATH_SEGMENT);
                        servers.register_backchannel_logout(
                            &sign_in.client_id,
                            &format!(
                                "{origin}{}{name}",
                                crate::identity::browser::BACKCHANNEL_PATH
                            ),
                        );
                    }
                }
            }
        }
    }
    print!("{}", servers.instructions(listen, admin));
    Ok((config, routes))
}
