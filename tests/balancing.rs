//! `balance: least_streams` against round robin, with streams of uneven lifetimes: every third
//! stream is short, the others stay open. Round robin hands the short ones to the same peer, so
//! the long ones pile up on the other two; least streams keeps the open streams within one of
//! even. Both on a marked route (the relay) and on an unmarked one (Pingora's loop), since both
//! count streams per peer.

mod common;

use std::time::Duration;

use common::client;
use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};

/// Streams opened one after another; every third one closes at once.
const STREAMS: usize = 45;

struct Pool {
    name: &'static str,
    peers: Vec<Upstream>,
}

impl Pool {
    async fn start(name: &'static str) -> Pool {
        let mut peers = Vec::new();
        for _ in 0..3 {
            peers.push(Upstream::start(Behavior::endless(Duration::from_millis(50))).await);
        }
        Pool { name, peers }
    }

    fn yaml(&self, balance: &str) -> String {
        let peers: Vec<String> = self.peers.iter().map(|p| p.addr.to_string()).collect();
        format!(
            "  {}:\n    peers: [{}]\n    balance: {balance}\n",
            self.name,
            peers.join(", ")
        )
    }

    /// Streams open at each peer, as the peers see them.
    fn open(&self) -> Vec<usize> {
        self.peers.iter().map(Upstream::open_connections).collect()
    }
}

/// Streams open through `upstream`, summed over its peers, from the proxy's own gauge.
async fn streams_through(gw: &Gateway, upstream: &str) -> f64 {
    let label = format!("upstream=\"{upstream}\"");
    gw.scrape()
        .await
        .lines()
        .filter(|l| l.starts_with("ssegate_upstream_streams_active{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Opens [`STREAMS`] streams on `path`, closing every third as soon as its first event arrives
/// and waiting until the proxy has counted it closed, so each pick sees the counts as they are.
/// Returns the streams open at each peer at the end, and the long-lived streams (kept open).
async fn uneven_lifetimes(
    gw: &Gateway,
    path: &str,
    pool: &Pool,
) -> (Vec<usize>, Vec<client::Response>) {
    let mut kept = Vec::new();
    for i in 0..STREAMS {
        let mut stream = client::get(gw.addr, path).await.expect("stream opens");
        assert_eq!(stream.status, 200);
        stream
            .next_event()
            .await
            .expect("first event")
            .expect("an event");
        if i % 3 == 0 {
            drop(stream);
        } else {
            kept.push(stream);
        }
        let want = kept.len() as f64;
        let counted = common::eventually_async(Duration::from_secs(5), || async {
            streams_through(gw, pool.name).await == want
        })
        .await;
        assert!(
            counted,
            "{}: {} streams open",
            pool.name,
            streams_through(gw, pool.name).await
        );
    }
    // The peers see the closes too.
    let want = kept.len();
    assert!(
        common::eventually(Duration::from_secs(5), || pool.open().iter().sum::<usize>()
            == want)
        .await,
        "{}: peers see {:?}, {want} open",
        pool.name,
        pool.open()
    );
    (pool.open(), kept)
}

fn spread(open: &[usize]) -> usize {
    open.iter().max().unwrap_or(&0) - open.iter().min().unwrap_or(&0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_streams_keeps_open_streams_even_where_round_robin_drifts() {
    let least_marked = Pool::start("least_marked").await;
    let least_plain = Pool::start("least_plain").await;
    let rr_marked = Pool::start("rr_marked").await;
    let gw = Gateway::start(&format!(
        "upstreams:\n{}{}{}routes:\n\
         - {{ name: least_marked, match: {{ path_prefix: /least/marked }}, upstream: least_marked, sse: true }}\n\
         - {{ name: least_plain, match: {{ path_prefix: /least/plain }}, upstream: least_plain }}\n\
         - {{ name: rr_marked, match: {{ path_prefix: /rr }}, upstream: rr_marked, sse: true }}\n",
        least_marked.yaml("least_streams"),
        least_plain.yaml("least_streams"),
        rr_marked.yaml("round_robin"),
    ))
    .await;

    let (marked, _kept_marked) = uneven_lifetimes(&gw, "/least/marked", &least_marked).await;
    let (plain, _kept_plain) = uneven_lifetimes(&gw, "/least/plain", &least_plain).await;
    let (rr, _kept_rr) = uneven_lifetimes(&gw, "/rr", &rr_marked).await;
    println!(
        "open streams per peer after {STREAMS} streams, every third short-lived:\n  \
         least_streams, marked route:   {marked:?} (spread {})\n  \
         least_streams, unmarked route: {plain:?} (spread {})\n  \
         round_robin, marked route:     {rr:?} (spread {})",
        spread(&marked),
        spread(&plain),
        spread(&rr)
    );
    assert!(
        spread(&marked) <= 1,
        "least_streams on the relay: {marked:?}"
    );
    assert!(
        spread(&plain) <= 1,
        "least_streams on Pingora's loop: {plain:?}"
    );
    // The control: the same traffic does drift under round robin.
    assert!(
        spread(&rr) >= 5,
        "round robin was expected to drift: {rr:?}"
    );

    // The gauge names each peer, and agrees with what the peer sees.
    for (peer, open) in least_marked.peers.iter().zip(&marked) {
        gw.expect_metric(
            &format!(
                "ssegate_upstream_streams_active{{peer=\"{}\",upstream=\"least_marked\"}}",
                peer.addr
            ),
            *open as f64,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_streams_skips_an_unhealthy_peer_and_counts_go_to_zero() {
    let healthy = Upstream::start(Behavior::endless(Duration::from_millis(50))).await;
    let sick = Upstream::start(Behavior::endless(Duration::from_millis(50))).await;
    sick.set_health_status(503);
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    peers: [{}, {}]\n    balance: least_streams\n    \
         health_check: {{ path: /healthz, interval: 200ms }}\n\
         routes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: app, sse: true }}\n",
        healthy.addr, sick.addr
    ))
    .await;
    let sick_gauge = format!(
        "ssegate_upstream_peer_healthy{{peer=\"{}\",upstream=\"app\"}}",
        sick.addr
    );
    gw.expect_metric(&sick_gauge, 0.0).await;

    // The sick peer has the fewest streams throughout, and still gets none.
    let mut streams = Vec::new();
    for _ in 0..6 {
        let mut s = client::get(gw.addr, "/events").await.unwrap();
        assert_eq!(s.status, 200);
        s.next_event().await.unwrap().unwrap();
        streams.push(s);
    }
    assert_eq!(sick.proxied().len(), 0);
    let healthy_gauge = format!(
        "ssegate_upstream_streams_active{{peer=\"{}\",upstream=\"app\"}}",
        healthy.addr
    );
    gw.expect_metric(&healthy_gauge, 6.0).await;
    drop(streams);
    gw.expect_metric(&healthy_gauge, 0.0).await;
}
