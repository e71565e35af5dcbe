//! End to end: the proxy listener serving HTTPS from certificate and key files.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn serves_https_and_builds_the_origin_with_https() {
    let idp = devidp::idp::DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    idp.set_audience(AUDIENCE);
    let echo = devidp::echo::EchoServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let (port, admin) = (free_port(), free_port());
    let setup = Setup {
        proxy_extra: format!("tls = {{ cert = \"{}\", key = \"{}\" }}", cert_path.display(), key_path.display()),
        extra: format!("[[clients]]\nname = \"secure\"\norigins = [\"https://localhost:{port}\"]\nclient_id = \"sec\"\n"),
        ..Setup::default()
    };
    let text = config(port, admin, &idp, echo.addr(), &setup);
    // The standard config's readiness probe uses plain http; wait on the admin only.
    let gw = spawn_gateway_without_probe(&text, admin).await;
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    // A token bound to `secure` (azp) passes only when the request's origin names that client.
    let token = idp.mint(json!({"sub": "u", "aud": AUDIENCE, "azp": "sec"}));
    let r = https.get(format!("https://localhost:{port}/api/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200, "the Host origin is https://localhost:{port}, the client `secure`");
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-auth-client"], "secure");
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    // Plain http on the TLS port is not served.
    match client().get(format!("http://127.0.0.1:{port}/public/x")).send().await {
        Ok(r) => panic!("plain http on the TLS port was answered {}", r.status()),
        // The listener is there (the https request above went through): the connection is
        // made, and the TLS handshake refuses what follows.
        Err(e) => assert!(!e.is_connect() && !e.is_timeout(), "not a TLS refusal: {e:?}"),
    }
    drop(gw);
}
