//! The peers whose `X-Forwarded-Proto` and `X-Forwarded-Host` are believed: CIDR ranges from
//! the config, checked against each connection's address.

use ipnet::IpNet;
use std::net::IpAddr;

/// Peers whose `X-Forwarded-Proto` and `X-Forwarded-Host` are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// A set of ranges.
    pub fn new(ranges: Vec<IpNet>) -> Self {
        TrustedProxies(ranges)
    }

    /// Parses `10.0.0.1` or `10.0.0.0/8` (IPv6 alike).
    pub fn parse_range(text: &str) -> Result<IpNet, String> {
        let text = text.trim();
        if text.contains('/') {
            return text.parse::<IpNet>().map_err(|_| format!("{text:?} is not an IP address or CIDR range with a prefix length in range, e.g. \"10.0.0.0/8\""));
        }
        text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!("{text:?} is not an IP address or CIDR range, e.g. \"10.0.0.0/8\"")
        })
    }

    /// True when `peer` is in a trusted range (an IPv4-mapped IPv6 peer counts as its IPv4 address).
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&peer))
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxy_ranges() {
        let t = TrustedProxies::new(vec![
            TrustedProxies::parse_range("10.0.0.0/8").unwrap(),
            TrustedProxies::parse_range("127.0.0.1").unwrap(),
            TrustedProxies::parse_range("fd00::/8").unwrap(),
        ]);
        for (ip, want) in [
            ("10.2.3.4", true),
            ("11.0.0.1", false),
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("fd12::1", true),
            ("::ffff:10.0.0.1", true),
            ("fe80::1", false),
        ] {
            assert_eq!(t.contains(ip.parse().unwrap()), want, "{ip}");
        }
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
            assert!(TrustedProxies::parse_range(bad).is_err(), "{bad}");
        }
    }
}
