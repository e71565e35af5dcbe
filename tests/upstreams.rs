//! End to end: upstreams with several addresses: active health checks take a dead address out
//! of rotation and bring it back, least connections prefers the idle address, idempotent
//! requests retry another address when one cannot be connected to, HTTP/2 where configured.

mod common;

use common::*;
use devidp::echo::EchoServer;
use devidp::idp::DevIdp;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A world whose config appends `extra` (upstreams and routes), with echo servers of its own.
async fn world(extra: String) -> (DevIdp, EchoServer, Gateway) {
    let (idp, echo) = idp_and_echo().await;
    let setup = Setup {
        extra,
        ..Setup::default()
    };
    let gw = start_gateway(
        |port, admin| config(port, admin, &idp, echo.addr(), &setup),
        true,
    )
    .await;
    (idp, echo, gw)
}

/// Which echo server answered `GET {gw}{path}`; `Err(status)` when not 200.
async fn served_by(
    http: &reqwest::Client,
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
) -> Result<String, u16> {
    let r = http
        .request(method, format!("{}{path}", gw.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", gw.log.lock().unwrap()));
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let body: Value = r.json().await.unwrap();
    Ok(body["server"].as_str().unwrap().to_string())
}

async fn healthy(
    http: &reqwest::Client,
    gw: &Gateway,
    upstream: &str,
    address: SocketAddr,
) -> Option<f64> {
    let metrics = http
        .get(format!("{}/metrics", gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (a, u) = (
        format!("address=\"{address}\""),
        format!("upstream=\"{upstream}\""),
    );
    metrics
        .lines()
        .filter(|l| l.starts_with("authgate_upstream_healthy{") && l.contains(&a) && l.contains(&u))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn pool(name: &str, addresses: &[SocketAddr], settings: &str) -> String {
    let list = addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("\n[[upstreams]]\nname = \"{name}\"\naddresses = [{list}]\nconnect_timeout = \"500ms\"\n{settings}\n\n[[routes]]\nname = \"{name}\"\npath = \"/{name}/*\"\nupstream = \"{name}\"\nauth = \"none\"\n")
}

#[tokio::test]
async fn a_health_check_takes_a_dead_address_out_of_rotation_and_brings_it_back() {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (a_addr, b_addr) = (a.addr(), b.addr());
    // No retries: a request sent to the dead address would fail, so every success after the
    // check took it out shows it out of rotation.
    let settings = "retries = 0\n[upstreams.health_check]\npath = \"/healthz\"\ninterval = \"150ms\"\ntimeout = \"300ms\"\nunhealthy_threshold = 2\nhealthy_threshold = 2";
    let (_idp, _echo, gw) = world(pool("pool", &[a_addr, b_addr], settings)).await;
    let http = client();

    let mut seen = HashMap::new();
    for _ in 0..6 {
        *seen
            .entry(
                served_by(&http, &gw, reqwest::Method::GET, "/pool/x")
                    .await
                    .unwrap(),
            )
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both addresses serve: {seen:?}");
    assert_eq!(healthy(&http, &gw, "pool", b_addr).await, Some(1.0));

    b.shutdown();
    let out = eventually(Duration::from_secs(10), || async {
        healthy(&http, &gw, "pool", b_addr).await == Some(0.0)
    })
    .await;
    assert!(
        out,
        "the dead address was never taken out; log:\n{}",
        gw.log.lock().unwrap()
    );
    for _ in 0..20 {
        assert_eq!(
            served_by(&http, &gw, reqwest::Method::GET, "/pool/x").await,
            Ok(a_addr.to_string()),
            "a request went to the dead address"
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            gw.log.lock().unwrap().contains("out of rotation")
        })
        .await
    );

    // Back on the same address: checked healthy twice, back in rotation.
    let b = EchoServer::start(b_addr).await.unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        healthy(&http, &gw, "pool", b_addr).await == Some(1.0)
    })
    .await;
    assert!(
        back,
        "the address never came back; log:\n{}",
        gw.log.lock().unwrap()
    );
    let mut from_b = 0;
    for _ in 0..6 {
        if served_by(&http, &gw, reqwest::Method::GET, "/pool/x")
            .await
            .unwrap()
            == b_addr.to_string()
        {
            from_b += 1;
        }
    }
    assert_eq!(from_b, 3, "round robin over both again");
    assert!(
        eventually(Duration::from_secs(5), || async {
            gw.log.lock().unwrap().contains("back in rotation")
        })
        .await
    );
    assert_eq!(healthy(&http, &gw, "pool", a_addr).await, Some(1.0));
    drop(b);
}

#[tokio::test]
async fn least_connections_prefers_the_idle_address() {
    let slow = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let fast = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    slow.set_delay(Some(Duration::from_secs(3)));
    let (_idp, _echo, gw) = world(pool(
        "lc",
        &[slow.addr(), fast.addr()],
        "selection = \"least_connections\"",
    ))
    .await;
    let gw = std::sync::Arc::new(gw);
    let http = client();

    // Two requests while both are idle: ties go to different addresses, so one is held by
    // the slow address.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (http, gw) = (http.clone(), gw.clone());
            tokio::spawn(
                async move { served_by(&http, &gw, reqwest::Method::GET, "/lc/held").await },
            )
        })
        .collect();
    let waited = eventually(Duration::from_secs(5), || async {
        slow.requests() == 1 && fast.requests() == 1
    })
    .await;
    assert!(waited, "slow {} fast {}", slow.requests(), fast.requests());

    // While the slow address holds one request, every new one goes to the idle address (round
    // robin would send every other one to the slow address).
    for _ in 0..10 {
        let started = std::time::Instant::now();
        assert_eq!(
            served_by(&http, &gw, reqwest::Method::GET, "/lc/x").await,
            Ok(fast.addr().to_string())
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a request waited on the busy address"
        );
    }
    assert_eq!(slow.requests(), 1);
    let mut answers: Vec<String> = Vec::new();
    for h in held {
        answers.push(h.await.unwrap().unwrap());
    }
    answers.sort();
    let mut expected = vec![slow.addr().to_string(), fast.addr().to_string()];
    expected.sort();
    assert_eq!(answers, expected);
}

#[tokio::test]
async fn idempotent_requests_retry_another_address_when_one_refuses_connections() {
    let up = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (_idp, _echo, gw) = world(pool("retry", &[dead, up.addr()], "retries = 1")).await;
    let http = client();
    for _ in 0..6 {
        assert_eq!(
            served_by(&http, &gw, reqwest::Method::GET, "/retry/x").await,
            Ok(up.addr().to_string())
        );
    }
    // A POST is not idempotent: it is not retried, so one in two fails. (A failed proxy
    // attempt closes the connection: a fresh one for each.)
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut failed = 0;
    for _ in 0..4 {
        match served_by(&fresh, &gw, reqwest::Method::POST, "/retry/x").await {
            Ok(server) => assert_eq!(server, up.addr().to_string()),
            Err(status) => {
                assert_eq!(status, 502);
                failed += 1;
            }
        }
    }
    assert_eq!(
        failed, 2,
        "round robin over a dead and a live address, without retries for POST"
    );
}

#[tokio::test]
async fn http2_to_the_upstream_where_configured() {
    let h2 = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let extra = pool("h2", &[h2.addr()], "http2 = true");
    let (_idp, echo, gw) = world(extra).await;
    let http = client();
    let r: Value = http
        .get(format!("{}/h2/x", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["version"], "HTTP/2.0", "{r}");
    assert_eq!(r["path"], "/h2/x");
    let r: Value = http
        .get(format!("{}/public/x", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["version"], "HTTP/1.1", "other upstreams keep HTTP/1.1");
    assert_eq!(r["server"], echo.addr().to_string());
}

/// A TLS upstream with a certificate for `upstream.test` issued by a CA of its own: each answer
/// names the SNI the connection asked for. Returns its address, the CA's PEM and the count of
/// requests it has read.
async fn tls_upstream() -> (SocketAddr, String, Arc<AtomicUsize>) {
    use pingora::tls::{CertificateDer, PrivateKeyDer, ServerConfig, TlsAcceptor};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    pingora::tls::install_default_crypto_provider();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "authgate test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["upstream.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let read = Arc::new(AtomicUsize::new(0));
    let counted = read.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let body = format!("{{\"server\": \"tls\", \"sni\": \"{sni}\"}}");
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, ca.pem(), read)
}

/// TLS to an upstream verifies its certificate: against the upstream's `ca_file` (an internal
/// CA) for the name `sni` says, which is also the SNI sent. A certificate for another name, or
/// one the platform's roots do not know (no `ca_file`), is refused with 502 and nothing is sent.
#[tokio::test]
async fn upstream_tls_verifies_the_certificate_against_ca_file_and_sends_the_sni() {
    let (addr, ca, read) = tls_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let ca_file = ca_file.display();
    let upstream = |name: &str, more: &str| {
        format!("\n[[upstreams]]\nname = \"{name}\"\naddresses = [\"{addr}\"]\ntls = true\nconnect_timeout = \"1s\"\n{more}\n\n[[routes]]\nname = \"{name}\"\npath = \"/{name}/*\"\nupstream = \"{name}\"\nauth = \"none\"\n")
    };
    let extra = [
        upstream(
            "good",
            &format!("sni = \"upstream.test\"\nca_file = \"{ca_file}\""),
        ),
        upstream(
            "other-name",
            &format!("sni = \"other.test\"\nca_file = \"{ca_file}\""),
        ),
        upstream("platform-roots", "sni = \"upstream.test\""),
    ]
    .concat();
    let (_idp, _echo, gw) = world(extra).await;
    let http = client();
    let r = http.get(format!("{}/good/x", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", gw.log.lock().unwrap());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["sni"], "upstream.test", "{body}");
    for refused in ["other-name", "platform-roots"] {
        let r = http
            .get(format!("{}/{refused}/x", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            502,
            "{refused}: an unverifiable certificate was accepted"
        );
    }
    assert_eq!(
        read.load(Ordering::SeqCst),
        1,
        "a request went over an unverified connection"
    );
}
