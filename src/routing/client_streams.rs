//! Per-client stream caps (`sse.max_streams_per_client`): how many streams each client holds
//! open on one route, so that one client (a browser with many tabs, a script in a loop, one API
//! key shared by a fleet) cannot take the whole route.
//!
//! # What is kept
//! One entry per client that has a stream open on the route: a 64-bit hash of its key (the
//! client's IP address, or a request header's value) and its stream count. The entry goes when
//! the client's last stream closes, so the table is as large as the number of clients with a
//! stream open, never the number of clients ever seen. A header's value is never kept or logged,
//! only its hash, under a key chosen at random when the route is loaded. Two clients share a
//! count only if their keys' hashes collide: about 1 in 10^11 for 10 000 clients at once.
//!
//! # Why a table of its own
//! A crate map (`dashmap`) keeps its capacity when entries go, so after a burst of distinct
//! clients its memory would stay. Here each shard shrinks as it empties, and the lock is one of
//! 64 shards, held for one hash-map operation.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::IntGauge;

use crate::config::model::ClientKey;
use crate::observe::metrics;

const SHARDS: usize = 64;

/// A shard smaller than this is not shrunk: a few entries cost less than the reallocation.
const MIN_SHRINK_CAPACITY: usize = 16;

/// The clients with streams open on one capped route.
pub(crate) struct ClientStreams {
    key: ClientKey,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
    /// `ssegate_stream_clients{route}`: clients with at least one stream open.
    clients: IntGauge,
}

/// Where a request comes from, as the route's `client_key` reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClientIdentity<'a> {
    /// The client's IP address, as bytes (IPv4 mapped into IPv6).
    Ip([u8; 16]),
    /// The value of the route's key header.
    Header(&'a [u8]),
}

impl ClientStreams {
    /// An empty table for route `route`, whose clients are told apart by `key`.
    pub(crate) fn new(route: &str, key: &ClientKey) -> ClientStreams {
        ClientStreams {
            key: key.clone(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            clients: metrics::stream_clients(route),
        }
    }

    /// How clients are told apart.
    pub(crate) fn key(&self) -> &ClientKey {
        &self.key
    }

    /// Whether a route whose clients are now told apart by `key` can keep this table across a
    /// reload: only with the same key are the counts of the same clients.
    pub(crate) fn keeps(&self, key: &ClientKey) -> bool {
        self.key == *key
    }

    /// Takes one of `client`'s stream slots under a cap of `cap` (the route's cap in the table
    /// the request was routed with); `None` when the client already holds `cap` streams.
    pub(crate) fn admit(
        self: &Arc<Self>,
        client: ClientIdentity<'_>,
        cap: u64,
    ) -> Option<ClientSlot> {
        let hash = match client {
            ClientIdentity::Ip(octets) => self.hasher.hash_one((0u8, octets)),
            ClientIdentity::Header(value) => self.hasher.hash_one((1u8, value)),
        };
        let mut shard = self.shard(hash);
        let count = shard.entry(hash).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        if *count == 1 {
            self.clients.inc();
        }
        Some(ClientSlot {
            table: self.clone(),
            hash,
        })
    }

    fn release(&self, hash: u64) {
        let mut shard = self.shard(hash);
        let Some(count) = shard.get_mut(&hash) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        shard.remove(&hash);
        self.clients.dec();
        if shard.capacity() > MIN_SHRINK_CAPACITY && shard.len() * 4 < shard.capacity() {
            let keep = (shard.len() * 2).max(MIN_SHRINK_CAPACITY);
            shard.shrink_to(keep);
        }
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        // The top bits pick the shard; the map hashes the whole value again.
        let i = (hash >> 58) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Clients with a stream open, and the entries the table has room for: for tests.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(len, cap), s| {
            let s = s.lock().unwrap();
            (len + s.len(), cap + s.capacity())
        })
    }
}

/// One stream of one client; given back when dropped.
pub(crate) struct ClientSlot {
    table: Arc<ClientStreams>,
    hash: u64,
}

impl std::fmt::Debug for ClientSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSlot")
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.table.release(self.hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Arc<ClientStreams> {
        Arc::new(ClientStreams::new("client_streams_test", &ClientKey::Ip))
    }

    fn ip(n: u32) -> ClientIdentity<'static> {
        let mut octets = [0; 16];
        octets[12..].copy_from_slice(&n.to_be_bytes());
        ClientIdentity::Ip(octets)
    }

    #[test]
    fn a_client_gets_its_cap_and_no_more_and_others_are_not_affected() {
        let t = table();
        let a1 = t.admit(ip(1), 2).expect("first");
        let _a2 = t.admit(ip(1), 2).expect("second");
        assert!(t.admit(ip(1), 2).is_none(), "third is over the cap");
        let _b = t.admit(ip(2), 2).expect("another client");
        drop(a1);
        assert!(
            t.admit(ip(1), 2).is_some(),
            "a slot given back is free again"
        );
    }

    #[test]
    fn header_and_ip_keys_do_not_share_counts() {
        let t = table();
        let value = [0u8; 16];
        let _h = t
            .admit(ClientIdentity::Header(&value), 1)
            .expect("header key");
        assert!(t.admit(ClientIdentity::Ip(value), 1).is_some());
        assert!(t.admit(ClientIdentity::Header(&value), 1).is_none());
    }

    #[test]
    fn entries_go_with_the_last_stream_and_the_table_shrinks() {
        let t = table();
        let slots: Vec<_> = (0..10_000).map(|n| t.admit(ip(n), 3).unwrap()).collect();
        let (len, grown) = t.size();
        assert_eq!(len, 10_000);
        assert_eq!(t.clients.get(), 10_000);
        drop(slots);
        let (len, shrunk) = t.size();
        assert_eq!(len, 0);
        assert_eq!(t.clients.get(), 0);
        assert!(
            shrunk <= SHARDS * MIN_SHRINK_CAPACITY * 2 && shrunk * 4 < grown,
            "room for {grown} entries at the peak, {shrunk} after"
        );
    }
}
