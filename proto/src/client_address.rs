//! Which address a call comes from, for per-caller limits: the TCP peer, or the client that a
//! trusted proxy (`TRUSTED_PROXIES`) names in `x-forwarded-for`. A forwarded address from any
//! other peer is ignored, or any caller could claim a fresh address on every attempt.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use tonic::metadata::MetadataMap;

/// The metadata (HTTP header) in which L7 proxies and ingresses name the client they forward.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// At most this many `x-forwarded-for` entries are read, from the right (nearest hop first).
const MAX_FORWARDED_HOPS: usize = 16;

/// The networks whose `x-forwarded-for` is believed: the proxies in front of a service.
/// Parsed from a comma- or space-separated list of CIDR blocks or single addresses
/// (`10.0.0.0/8, 192.168.1.7, fd00::/8`); empty (the default) trusts no one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpBlock>);

/// One CIDR block, its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

impl IpBlock {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl FromStr for IpBlock {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address = IpAddr::from_str(address)
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?
            .to_canonical();
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?,
        };
        let network = match address {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::from(std::net::Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::from(std::net::Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(IpBlock { network, prefix })
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .map(IpBlock::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(ip))
    }

    /// The address to count a call against: the TCP `peer`, unless the peer is a trusted
    /// proxy, in which case `x-forwarded-for` is walked from the right (the entry the nearest
    /// proxy appended) past further trusted proxies to the first address that is not one. An
    /// entry that is not an address stops the walk at the last trusted hop, which is where
    /// the call is then counted.
    pub fn client_address(&self, peer: Option<IpAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        let mut client = peer?.to_canonical();
        if !self.contains(client) {
            return Some(client);
        }
        let headers: Vec<&str> = metadata
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let entries = headers.iter().rev().flat_map(|h| h.rsplit(','));
        for entry in entries.take(MAX_FORWARDED_HOPS) {
            match parse_forwarded_entry(entry.trim()) {
                Some(ip) if self.contains(ip) => client = ip,
                Some(ip) => return Some(ip),
                None => return Some(client),
            }
        }
        Some(client)
    }
}

/// An `x-forwarded-for` entry: an address, possibly with a port (`[v6]:port`, `v4:port`).
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    IpAddr::from_str(entry)
        .or_else(|_| SocketAddr::from_str(entry).map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for v in values {
            metadata.append(FORWARDED_FOR, v.parse().unwrap());
        }
        metadata
    }

    #[test]
    fn blocks_parse_and_match() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.7 fd00::/8,127.0.0.1/32"
            .parse()
            .unwrap();
        for inside in [
            "10.1.2.3",
            "192.168.1.7",
            "fd12::1",
            "::ffff:10.9.9.9",
            "127.0.0.1",
        ] {
            assert!(trusted.contains(ip(inside)), "{inside}");
        }
        for outside in ["11.0.0.1", "192.168.1.8", "fe80::1", "127.0.0.2"] {
            assert!(!trusted.contains(ip(outside)), "{outside}");
        }
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::default()));
        assert!(
            "0.0.0.0/0"
                .parse::<TrustedProxies>()
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "10.0.0",
        ] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
    }

    /// Guards the `contains(client)` check: an untrusted peer's header is never read.
    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            trusted.client_address(Some(ip("203.0.113.9")), &forwarded(&["198.51.100.1"])),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            TrustedProxies::default()
                .client_address(Some(ip("127.0.0.1")), &forwarded(&["198.51.100.1"])),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn a_trusted_chain_is_walked_from_the_right_to_the_first_untrusted_address() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = Some(ip("10.0.0.1"));
        // The client put a made-up address first; the proxies appended the real one.
        let metadata = forwarded(&["6.6.6.6, 198.51.100.1", "10.0.0.2"]);
        assert_eq!(
            trusted.client_address(peer, &metadata),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            trusted.client_address(peer, &forwarded(&["[2001:db8::1]:4711"])),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            trusted.client_address(peer, &forwarded(&["198.51.100.1:80"])),
            Some(ip("198.51.100.1"))
        );
        // Garbage stops the walk at the last trusted hop; no header means the proxy itself.
        assert_eq!(
            trusted.client_address(peer, &forwarded(&["unknown, 10.0.0.3"])),
            Some(ip("10.0.0.3"))
        );
        assert_eq!(
            trusted.client_address(peer, &MetadataMap::new()),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(trusted.client_address(None, &metadata), None);
    }
}
