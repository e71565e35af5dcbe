//! Tuned bare Pingora: the floor authgate's proxy path is measured against.
//!
//! The same runtime settings, allocator, release profile and upstream peer options as
//! authgate (one worker thread, no work stealing, mimalloc, fat LTO, a peer built once and
//! cloned per request, read/connect/idle timeouts, no downstream modules), and no work of
//! its own: no auth, no header changes. `benches/load/instructions.sh --mode bare` and
//! `benches/load/run.sh --modes bare` run it beside authgate, so that the difference is
//! authgate's own cost.
//!
//! With CERT and KEY (PEM files) it serves HTTPS as authgate's listener does with
//! `[proxy.tls]`: rustls, ALPN `h2` then `http/1.1`, Pingora's default session cache.
//!
//!     cargo build --release --example bare_proxy
//!     target/release/examples/bare_proxy LISTEN UPSTREAM [THREADS [CERT KEY]]

use async_trait::async_trait;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM [THREADS [CERT KEY]]");
        std::process::exit(2);
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let upstream: std::net::SocketAddr = upstream.parse().expect("UPSTREAM is ip:port");
    // authgate's defaults for an upstream (config: connect_timeout 2s, read_timeout 30s; idle 60s).
    let mut peer = HttpPeer::new(upstream, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(2));
    peer.options.total_connection_timeout = Some(Duration::from_secs(4));
    peer.options.read_timeout = Some(Duration::from_secs(30));
    peer.options.idle_timeout = Some(Duration::from_secs(60));

    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { peer });
    match (args.get(4), args.get(5)) {
        (Some(cert), Some(key)) => {
            let mut tls = pingora::listeners::tls::TlsSettings::intermediate(cert, key)
                .expect("TLS settings");
            tls.set_certificate_chain_file(cert)
                .expect("CERT holds a PEM certificate");
            tls.set_private_key_file(key)
                .expect("KEY holds a PEM private key");
            tls.enable_h2();
            proxy.add_tls_with_settings(listen, None, tls);
        }
        _ => proxy.add_tcp(listen),
    }
    server.add_service(proxy);
    server.run_forever();
}
