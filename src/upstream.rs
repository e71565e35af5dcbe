//! Upstream selection: each configured upstream is a round-robin set of peers, built once.

use crate::config::model::UpstreamSettings;
use pingora::upstreams::peer::HttpPeer;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// One upstream's peers, ready to clone into a request.
#[derive(Debug)]
pub struct Upstream {
    /// The upstream's name.
    pub name: String,
    peers: Vec<HttpPeer>,
    next: AtomicUsize,
}

impl Upstream {
    /// Builds the peers of a configured upstream, resolving host names once.
    pub fn from_config(u: &UpstreamSettings) -> Result<Upstream, UpstreamError> {
        let peers = u
            .addresses
            .iter()
            .map(|addr| {
                let resolved = addr
                    .to_socket_addrs()
                    .map_err(|source| UpstreamError::Resolve { upstream: u.name.clone(), address: addr.to_string(), source })?
                    .next()
                    .ok_or_else(|| UpstreamError::NoAddress { upstream: u.name.clone(), address: addr.to_string() })?;
                let mut peer = HttpPeer::new(resolved, u.tls, u.sni.clone());
                peer.options.connection_timeout = Some(u.connect_timeout);
                peer.options.total_connection_timeout = Some(u.connect_timeout * 2);
                peer.options.read_timeout = Some(u.read_timeout);
                peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
                Ok(peer)
            })
            .collect::<Result<Vec<_>, UpstreamError>>()?;
        Ok(Upstream { name: u.name.clone(), peers, next: AtomicUsize::new(0) })
    }

    /// The next peer, round robin.
    pub fn pick(&self) -> Option<Box<HttpPeer>> {
        let n = if self.peers.len() == 1 { 0 } else { self.next.fetch_add(1, Ordering::Relaxed) % self.peers.len().max(1) };
        self.peers.get(n).map(|p| Box::new(p.clone()))
    }
}
