//! `devidp`: the development IdP and the echo upstream as one process of their own, for the
//! containers of the compose walk-through (`compose.yaml`). Development only: its users sign
//! in without a password. Configured by the environment:
//!
//! - `DEVIDP_LISTEN`: the IdP's address (default `0.0.0.0:9091`);
//! - `DEVIDP_ISSUER`: the URL the browser and the gateways reach it at (required);
//! - `DEVIDP_AUDIENCE`: the `aud` of its access tokens (default `authgate-demo`);
//! - `DEVIDP_CLIENTS`: the client apps, space-separated `client_id:secret:redirect_uri`;
//! - `ECHO_LISTEN`: the echo upstream's address (default `0.0.0.0:8081`; `off` for none).

use devidp::echo::EchoServer;
use devidp::idp::DevIdp;
use std::net::SocketAddr;
use std::process::ExitCode;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn address(name: &str, default: &str) -> Result<SocketAddr, String> {
    let text = var(name, default);
    text.parse()
        .map_err(|e| format!("{name}={text:?} is not an address such as 0.0.0.0:9091: {e}"))
}

/// `client_id:secret:redirect_uri` entries, space-separated.
fn clients(text: &str) -> Result<Vec<(String, String, String)>, String> {
    text.split_whitespace()
        .map(|entry| {
            let mut parts = entry.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(id), Some(secret), Some(uri))
                    if !id.is_empty() && uri.starts_with("http") =>
                {
                    Ok((id.to_string(), secret.to_string(), uri.to_string()))
                }
                _ => Err(format!(
                    "DEVIDP_CLIENTS: {entry:?} is not client_id:secret:redirect_uri"
                )),
            }
        })
        .collect()
}

async fn run() -> Result<(), String> {
    let listen = address("DEVIDP_LISTEN", "0.0.0.0:9091")?;
    let issuer = std::env::var("DEVIDP_ISSUER").map_err(|_| {
        "DEVIDP_ISSUER is required: the URL the browser and the gateways reach this IdP at"
            .to_string()
    })?;
    let idp = DevIdp::start_exposed(listen, issuer.trim_end_matches('/').to_string())
        .await
        .map_err(|e| format!("IdP on {listen}: {e}"))?;
    idp.set_audience(var("DEVIDP_AUDIENCE", "authgate-demo"));
    for (id, secret, uri) in clients(&var("DEVIDP_CLIENTS", ""))? {
        idp.register_client(&id, Some(&secret), &[&uri]);
        eprintln!("devidp: client {id} returns to {uri}");
    }
    eprintln!(
        "devidp: development IdP on {} as {} (users sign in without a password: never expose it)",
        idp.addr(),
        idp.issuer()
    );
    let _echo = match var("ECHO_LISTEN", "0.0.0.0:8081").as_str() {
        "off" => None,
        _ => {
            let addr = address("ECHO_LISTEN", "0.0.0.0:8081")?;
            let echo = EchoServer::start(addr)
                .await
                .map_err(|e| format!("echo upstream on {addr}: {e}"))?;
            eprintln!("devidp: echo upstream on {}", echo.addr());
            Some(echo)
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devidp: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clients;

    #[test]
    fn clients_are_id_secret_and_redirect_uri() {
        let parsed = clients(
            "demo:s3cret:http://localhost:8080/_authgate/callback  other:x:https://a.test/cb",
        )
        .unwrap();
        assert_eq!(
            parsed[0],
            (
                "demo".into(),
                "s3cret".into(),
                "http://localhost:8080/_authgate/callback".into()
            )
        );
        assert_eq!(parsed[1].0, "other");
        assert!(clients("demo:nosecret").is_err());
        assert!(clients("").unwrap().is_empty());
    }
}
