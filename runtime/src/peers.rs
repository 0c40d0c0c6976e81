//! Pools of what callers hold (connections, in-flight calls, request bytes, control streams),
//! each with a server-wide limit and a per-peer share, so no one address can take a pool from
//! everyone else.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Who holds a share: the caller's IP address, IPv6 addresses by their /64 (one host gets a
/// whole /64, so counting single addresses would give it 2^64 shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer(IpAddr);

impl Peer {
    pub fn of(ip: IpAddr) -> Peer {
        match ip {
            IpAddr::V4(_) => Peer(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Peer(IpAddr::V4(v4)),
                None => Peer(IpAddr::V6(Ipv6Addr::from(
                    u128::from(v6) & !u128::from(u64::MAX),
                ))),
            },
        }
    }

    /// The peer of a request, from the connection information tonic attaches (plaintext or
    /// TLS); `None` when the transport has no address (then only the server-wide limit holds).
    pub fn of_request<B>(req: &http::Request<B>) -> Option<Peer> {
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        let ext = req.extensions();
        ext.get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .or_else(|| {
                ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|i| i.get_ref().remote_addr())
            })
            .map(|a| Peer::of(a.ip()))
    }
}

/// Which limit refused a take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The pool is full.
    Server,
    /// This peer holds its whole share.
    Peer,
}

impl Refusal {
    /// Metric label value.
    pub fn scope(self) -> &'static str {
        match self {
            Refusal::Server => "server",
            Refusal::Peer => "peer",
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_peer: HashMap<Peer, usize>,
}

/// A counted resource with a server-wide limit and a per-peer limit. Peers are forgotten as
/// soon as they hold nothing, so the table never outgrows the connections.
#[derive(Debug)]
pub struct PeerPool {
    limit: usize,
    per_peer: usize,
    held: Mutex<Held>,
}

impl PeerPool {
    /// `share_percent` of `limit` (at least 1) is the most one peer may hold.
    pub fn new(limit: usize, share_percent: u8) -> Arc<PeerPool> {
        let share = usize::from(share_percent.clamp(1, 100));
        Arc::new(PeerPool {
            limit,
            per_peer: (limit.saturating_mul(share) / 100).clamp(1, limit.max(1)),
            held: Mutex::new(Held::default()),
        })
    }

    /// The most one peer may hold.
    #[cfg(test)]
    pub fn per_peer(&self) -> usize {
        self.per_peer
    }

    /// What is held now, server-wide.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // The counters stay consistent whatever panicked while holding the lock: each update
        // is a single assignment.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `n` units for `peer`, or says which limit refuses them.
    pub fn try_take(self: &Arc<Self>, peer: Option<Peer>, n: usize) -> Result<PoolGuard, Refusal> {
        self.take(peer, n)?;
        Ok(PoolGuard {
            pool: self.clone(),
            peer,
            held: n,
        })
    }

    fn take(&self, peer: Option<Peer>, n: usize) -> Result<(), Refusal> {
        let mut held = self.lock();
        let total = held.total.saturating_add(n);
        if total > self.limit {
            return Err(Refusal::Server);
        }
        if let Some(peer) = peer {
            let mine = held
                .by_peer
                .get(&peer)
                .copied()
                .unwrap_or(0)
                .saturating_add(n);
            if mine > self.per_peer {
                return Err(Refusal::Peer);
            }
            held.by_peer.insert(peer, mine);
        }
        held.total = total;
        Ok(())
    }

    fn give_back(&self, peer: Option<Peer>, n: usize) {
        let mut held = self.lock();
        held.total = held.total.saturating_sub(n);
        if let Some(peer) = peer
            && let Some(mine) = held.by_peer.get_mut(&peer)
        {
            *mine = mine.saturating_sub(n);
            if *mine == 0 {
                held.by_peer.remove(&peer);
            }
        }
    }
}

/// Units taken from a [`PeerPool`]; given back when dropped.
#[derive(Debug)]
pub struct PoolGuard {
    pool: Arc<PeerPool>,
    peer: Option<Peer>,
    held: usize,
}

impl PoolGuard {
    /// Takes `n` more units for the same peer.
    pub fn grow(&mut self, n: usize) -> Result<(), Refusal> {
        self.pool.take(self.peer, n)?;
        self.held = self.held.saturating_add(n);
        Ok(())
    }
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        self.pool.give_back(self.peer, self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Option<Peer> {
        Some(Peer::of(s.parse().unwrap()))
    }

    #[test]
    fn a_peer_gets_its_share_and_others_the_rest() {
        let pool = PeerPool::new(8, 25);
        assert_eq!(pool.per_peer(), 2);
        let a = [
            pool.try_take(peer("10.0.0.1"), 1).unwrap(),
            pool.try_take(peer("10.0.0.1"), 1).unwrap(),
        ];
        assert_eq!(
            pool.try_take(peer("10.0.0.1"), 1).unwrap_err(),
            Refusal::Peer
        );
        let b = pool.try_take(peer("10.0.0.2"), 2).unwrap();
        drop(a);
        assert!(pool.try_take(peer("10.0.0.1"), 2).is_ok());
        drop(b);
        assert_eq!(pool.in_use(), 0);
        assert!(pool.lock().by_peer.is_empty(), "idle peers are forgotten");
    }

    #[test]
    fn the_server_limit_holds_whatever_the_shares() {
        let pool = PeerPool::new(4, 100);
        let _held: Vec<_> = (1..=4)
            .map(|i| pool.try_take(peer(&format!("10.0.0.{i}")), 1).unwrap())
            .collect();
        assert_eq!(
            pool.try_take(peer("10.0.0.9"), 1).unwrap_err(),
            Refusal::Server
        );
        assert_eq!(pool.try_take(None, 1).unwrap_err(), Refusal::Server);
    }

    #[test]
    fn a_growing_guard_stays_within_the_share_and_gives_everything_back() {
        let pool = PeerPool::new(100, 50);
        let mut guard = pool.try_take(peer("10.0.0.1"), 10).unwrap();
        guard.grow(40).unwrap();
        assert_eq!(guard.grow(1).unwrap_err(), Refusal::Peer);
        assert_eq!(pool.in_use(), 50);
        drop(guard);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn ipv6_peers_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(peer("2001:db8::1"), peer("2001:db8::ffff:1234"));
        assert_ne!(peer("2001:db8::1"), peer("2001:db8:0:1::1"));
        assert_eq!(peer("::ffff:10.0.0.1"), peer("10.0.0.1"));
    }
}
