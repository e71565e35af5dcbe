//! Upstream selection: each configured upstream is a set of peers, built once per config,
//! chosen round robin or by least connections among the addresses its active health check
//! (Pingora's `pingora-load-balancing` HTTP check, run by [`crate::server`]'s health service)
//! has not taken out. The request path reads one atomic flag per address tried: the check
//! flips the flags, the request never waits for it.

use crate::config::model::{HealthCheckSettings, Selection, UpstreamSettings};
use crate::metrics::Metrics;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::health_check::{HealthObserve, HttpHealthCheck};
use pingora_load_balancing::{Backend, Backends};
use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why an upstream's peers cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// An address did not resolve.
    #[error("upstream {upstream:?}: cannot resolve {address}: {source}")]
    Resolve {
        /// The upstream's name.
        upstream: String,
        /// The address as configured.
        address: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// An address resolved to nothing.
    #[error("upstream {upstream:?}: {address} resolves to no address")]
    NoAddress {
        /// The upstream's name.
        upstream: String,
        /// The address as configured.
        address: String,
    },
}

/// Per-address state shared by the request path and the health check.
#[derive(Debug)]
struct PeerState {
    /// Not taken out by the health check (every address starts healthy).
    healthy: Box<[AtomicBool]>,
    /// Requests in flight (counted for least-connections upstreams only).
    active: Box<[AtomicUsize]>,
}

/// One upstream's peers, ready to clone into a request.
pub struct Upstream {
    /// The upstream's name.
    pub name: String,
    settings: UpstreamSettings,
    peers: Vec<HttpPeer>,
    state: Arc<PeerState>,
    next: AtomicUsize,
    checks: Option<Checks>,
    latency: prometheus::Histogram,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("peers", &self.peers.len())
            .field("state", &self.state)
            .finish()
    }
}

/// The address a request was sent to, released when the request ends (for least connections).
#[derive(Debug)]
pub struct Lease {
    state: Arc<PeerState>,
    index: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(n) = self.state.active.get(self.index) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A chosen peer: the peer, its index among the upstream's addresses and, for a
/// least-connections upstream, the lease that counts it in flight.
pub struct Picked {
    /// The peer to connect to.
    pub peer: Box<HttpPeer>,
    /// Its index in the upstream's addresses.
    pub index: usize,
    /// Held for the request's lifetime by least-connections upstreams.
    pub lease: Option<Lease>,
}

impl Upstream {
    /// Builds the peers of a configured upstream, resolving host names once.
    pub fn from_config(u: &UpstreamSettings, metrics: &Metrics) -> Result<Upstream, UpstreamError> {
        let resolved = u
            .addresses
            .iter()
            .map(|addr| {
                addr.to_socket_addrs()
                    .map_err(|source| UpstreamError::Resolve {
                        upstream: u.name.clone(),
                        address: addr.to_string(),
                        source,
                    })?
                    .next()
                    .ok_or_else(|| UpstreamError::NoAddress {
                        upstream: u.name.clone(),
                        address: addr.to_string(),
                    })
            })
            .collect::<Result<Vec<SocketAddr>, UpstreamError>>()?;
        let ca = trust_anchors(&u.ca);
        let peers = resolved
            .iter()
            .map(|addr| {
                let mut peer = HttpPeer::new(*addr, u.tls, u.sni.clone());
                peer.options.ca = ca.clone();
                peer.options.connection_timeout = Some(u.connect_timeout);
                peer.options.total_connection_timeout = Some(u.connect_timeout * 2);
                peer.options.read_timeout = Some(u.read_timeout);
                peer.options.idle_timeout = Some(Duration::from_secs(60));
                if u.http2 {
                    // Over TLS ALPN offers h2 and falls back to HTTP/1.1; without TLS there is
                    // no negotiation, so h2 is spoken with prior knowledge (h2c).
                    peer.options.set_http_version(2, if u.tls { 1 } else { 2 });
                }
                peer
            })
            .collect::<Vec<_>>();
        let state = Arc::new(PeerState {
            healthy: resolved.iter().map(|_| AtomicBool::new(true)).collect(),
            active: resolved.iter().map(|_| AtomicUsize::new(0)).collect(),
        });
        for addr in &u.addresses {
            metrics
                .upstream_healthy
                .with_label_values(&[u.name.as_str(), addr.as_str()])
                .set(1);
        }
        let checks = u
            .health_check
            .as_ref()
            .map(|hc| Checks::new(u, hc, &resolved, state.clone(), metrics.clone()));
        let latency = metrics
            .upstream_latency
            .with_label_values(&[u.name.as_str()]);
        Ok(Upstream {
            name: u.name.clone(),
            settings: u.clone(),
            peers,
            state,
            next: AtomicUsize::new(0),
            checks,
            latency,
        })
    }

    /// The settings it was built from (a reload keeps an upstream whose settings are unchanged,
    /// with its health and connection counts).
    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// How many other addresses an idempotent request may try after a connect failure.
    pub fn retries(&self) -> u32 {
        self.settings.retries
    }

    /// The next peer: round robin, or the one with the fewest requests in flight, among the
    /// healthy addresses other than `avoid` (the one a retry failed to connect to). When every
    /// address is out, they are all tried in turn rather than none: a check can be wrong, and
    /// a refused connection costs no more than a 502 without trying.
    pub fn pick(&self, avoid: Option<usize>) -> Option<Picked> {
        let n = self.peers.len();
        if n == 0 {
            return None;
        }
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        let candidates = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| Some(i) != avoid || n == 1);
        let healthy = |i: &usize| {
            self.state
                .healthy
                .get(*i)
                .is_some_and(|h| h.load(Ordering::Relaxed))
        };
        let index = match self.settings.selection {
            Selection::RoundRobin => candidates.clone().find(healthy),
            Selection::LeastConnections => candidates.clone().filter(healthy).min_by_key(|&i| {
                self.state
                    .active
                    .get(i)
                    .map_or(usize::MAX, |a| a.load(Ordering::Relaxed))
            }),
        };
        let index = index.or_else(|| candidates.clone().next())?;
        let peer = Box::new(self.peers.get(index)?.clone());
        let lease = (self.settings.selection == Selection::LeastConnections).then(|| {
            if let Some(a) = self.state.active.get(index) {
                a.fetch_add(1, Ordering::Relaxed);
            }
            Lease {
                state: self.state.clone(),
                index,
            }
        });
        Some(Picked { peer, index, lease })
    }

    /// Records the time from sending a request to its response header.
    pub fn observe_latency(&self, took: Duration) {
        self.latency.observe(took.as_secs_f64());
    }

    /// Whether the address at `index` is in rotation (not taken out by the health check).
    pub fn is_healthy(&self, index: usize) -> bool {
        self.state
            .healthy
            .get(index)
            .is_some_and(|h| h.load(Ordering::Relaxed))
    }

    /// The health check's interval, when the upstream has one.
    pub fn check_interval(&self) -> Option<Duration> {
        self.checks.as_ref().map(|c| c.interval)
    }

    /// When (milliseconds since the health service's epoch) the next round is due; `None`
    /// without a health check.
    pub fn next_check(&self) -> Option<u64> {
        self.checks.as_ref().map(|c| c.due.load(Ordering::Relaxed))
    }

    /// Whether a round of the health check is due at `now` (milliseconds since the health
    /// service's epoch) and none is running.
    pub fn check_due(&self, now: u64) -> bool {
        self.checks.as_ref().is_some_and(|c| {
            now >= c.due.load(Ordering::Relaxed) && !c.running.load(Ordering::Relaxed)
        })
    }

    /// Runs one round of the health check if it is due at `now` (milliseconds since the health
    /// service's epoch) and not already running; whether one ran.
    pub async fn check_if_due(&self, at: u64) -> bool {
        let Some(checks) = &self.checks else {
            return false;
        };
        if at < checks.due.load(Ordering::Relaxed) || checks.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        let interval = u64::try_from(checks.interval.as_millis()).unwrap_or(u64::MAX);
        checks
            .due
            .store(at.saturating_add(interval), Ordering::Relaxed);
        // Static membership: the first round publishes the addresses, later ones change nothing.
        if let Err(e) = checks.backends.update(|_| {}).await {
            tracing::warn!(upstream = %self.name, error = %e, "health check: the addresses could not be listed");
        }
        checks.backends.run_health_check(true).await;
        checks.running.store(false, Ordering::Release);
        true
    }
}

/// An upstream's active health check: Pingora's HTTP check over its addresses, with a
/// callback that flips the addresses' flags.
struct Checks {
    backends: Backends,
    interval: Duration,
    /// Milliseconds since the health service's epoch when the next round is due.
    due: AtomicU64,
    running: AtomicBool,
}

/// The CA certificates an upstream's TLS certificate must chain to, as Pingora's connector
/// takes them; `None` (the platform's roots) when the config names none. Each DER was parsed
/// when the config was loaded, so the parse here cannot fail.
fn trust_anchors(ca: &[Vec<u8>]) -> Option<Arc<pingora::protocols::tls::CaType>> {
    if ca.is_empty() {
        return None;
    }
    let certs: Box<pingora::protocols::tls::CaType> = ca
        .iter()
        .map(|der| WrappedX509::new(der.clone(), parse_x509))
        .collect();
    Some(Arc::from(certs))
}

impl Checks {
    fn new(
        u: &UpstreamSettings,
        hc: &HealthCheckSettings,
        resolved: &[SocketAddr],
        state: Arc<PeerState>,
        metrics: Metrics,
    ) -> Checks {
        let set: BTreeSet<Backend> = resolved
            .iter()
            .filter_map(|a| Backend::new(&a.to_string()).ok())
            .collect();
        let mut backends = Backends::new(Static::new(set));
        let mut check = HttpHealthCheck::new(&hc.host, u.tls);
        check.peer_template.sni = u.sni.clone();
        check.peer_template.options.ca = trust_anchors(&u.ca);
        check.peer_template.options.connection_timeout = Some(hc.timeout);
        check.peer_template.options.read_timeout = Some(hc.timeout);
        check.peer_template.options.total_connection_timeout = Some(hc.timeout);
        check.consecutive_failure = hc.unhealthy_threshold;
        check.consecutive_success = hc.healthy_threshold;
        if let Ok(mut req) = RequestHeader::build("GET", hc.path.as_bytes(), None) {
            if req.insert_header(http::header::HOST, &hc.host).is_ok()
                && req
                    .insert_header(http::header::USER_AGENT, "authgate-health-check")
                    .is_ok()
            {
                check.req = req;
            }
        }
        check.health_changed_callback = Some(Box::new(Observer {
            upstream: u.name.clone(),
            path: hc.path.clone(),
            addresses: resolved
                .iter()
                .copied()
                .zip(u.addresses.iter().cloned())
                .collect(),
            state,
            metrics,
        }));
        backends.set_health_check(Box::new(check));
        Checks {
            backends,
            interval: hc.interval,
            due: AtomicU64::new(0),
            running: AtomicBool::new(false),
        }
    }
}

/// Told by the health check when an address changes state: flips its flag, its gauge, and logs.
struct Observer {
    upstream: String,
    path: String,
    /// Each resolved address with the address as configured (the metric's label).
    addresses: Vec<(SocketAddr, String)>,
    state: Arc<PeerState>,
    metrics: Metrics,
}

#[async_trait]
impl HealthObserve for Observer {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let Some(inet) = target.addr.as_inet() else {
            return;
        };
        for (i, (addr, configured)) in self.addresses.iter().enumerate() {
            if addr != inet {
                continue;
            }
            if let Some(flag) = self.state.healthy.get(i) {
                flag.store(healthy, Ordering::Relaxed);
            }
            self.metrics
                .upstream_healthy
                .with_label_values(&[self.upstream.as_str(), configured.as_str()])
                .set(i64::from(healthy));
            if healthy {
                tracing::info!(upstream = %self.upstream, address = %configured, "upstream address passed its health checks: back in rotation");
            } else {
                tracing::warn!(upstream = %self.upstream, address = %configured, path = %self.path, "upstream address failed its health checks: out of rotation");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(selection: Selection, addresses: &[&str]) -> UpstreamSettings {
        UpstreamSettings {
            name: "u".into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            tls: false,
            sni: String::new(),
            ca: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            selection,
            retries: 1,
            http2: false,
            health_check: None,
            reads: Default::default(),
        }
    }

    fn picks(u: &Upstream, n: usize) -> Vec<usize> {
        (0..n).map(|_| u.pick(None).unwrap().index).collect()
    }

    #[test]
    fn round_robin_skips_addresses_out_of_rotation_and_tries_all_when_all_are_out() {
        let u = Upstream::from_config(
            &settings(
                Selection::RoundRobin,
                &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
            ),
            &Metrics::new(),
        )
        .unwrap();
        assert_eq!(picks(&u, 6), vec![0, 1, 2, 0, 1, 2]);
        u.state.healthy[1].store(false, Ordering::Relaxed);
        assert!(picks(&u, 6).iter().all(|&i| i != 1));
        for h in u.state.healthy.iter() {
            h.store(false, Ordering::Relaxed);
        }
        let mut all = picks(&u, 3);
        all.sort();
        assert_eq!(all, vec![0, 1, 2]);
    }

    #[test]
    fn a_retry_avoids_the_address_that_failed() {
        let u = Upstream::from_config(
            &settings(Selection::RoundRobin, &["127.0.0.1:1", "127.0.0.1:2"]),
            &Metrics::new(),
        )
        .unwrap();
        for _ in 0..4 {
            assert_eq!(u.pick(Some(0)).unwrap().index, 1);
        }
        let single = Upstream::from_config(
            &settings(Selection::RoundRobin, &["127.0.0.1:1"]),
            &Metrics::new(),
        )
        .unwrap();
        assert_eq!(
            single.pick(Some(0)).unwrap().index,
            0,
            "a single address is retried"
        );
    }

    #[test]
    fn least_connections_prefers_the_idle_address_and_leases_release_on_drop() {
        let u = Upstream::from_config(
            &settings(Selection::LeastConnections, &["127.0.0.1:1", "127.0.0.1:2"]),
            &Metrics::new(),
        )
        .unwrap();
        let first = u.pick(None).unwrap();
        let busy = first.index;
        for _ in 0..5 {
            let p = u.pick(None).unwrap();
            assert_ne!(p.index, busy, "picked the busy address");
        }
        let second = u.pick(None).unwrap();
        assert_ne!(second.index, busy);
        // One in flight on each: either may be picked; dropping one makes it the idle one.
        drop(first);
        for _ in 0..4 {
            assert_eq!(u.pick(None).unwrap().index, busy);
        }
        drop(second);
        assert!(u
            .state
            .active
            .iter()
            .all(|a| a.load(Ordering::Relaxed) == 0));
    }
}
