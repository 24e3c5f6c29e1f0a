//! The relay's own HTTP/1.1 path for marked routes, through the real binary: it decodes the
//! upstream's chunked body itself, writes the client's chunks itself once it has taken the
//! client connection over, and gives that connection back for the client's next request.

mod common;

use std::time::Duration;

use common::client;
use common::gateway::Gateway;
use common::raw;
use common::upstream::{Behavior, RawEnd, Upstream};
use testkit::http::{self, chunk, LAST_CHUNK};
use testkit::upstream::{self as wire, hold_until_closed, STREAM_HEAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `sse` (marked, `/sse`) and `plain` (everything else) on one upstream.
fn config(peer: &str) -> String {
    [
        "upstreams:",
        "  up:",
        &format!("    peers: [{peer}]"),
        "routes:",
        "  - name: sse",
        "    match: { path_prefix: /sse }",
        "    upstream: up",
        "    sse: true",
        "  - name: plain",
        "    match: { path_prefix: / }",
        "    upstream: up",
        "",
    ]
    .join("\n")
}

/// Events cut at awkward places: across chunks, a chunk cut across writes (inside its size line
/// and inside its data), a chunk extension, several events in one write, and a 1 MiB event.
/// The client must get exactly the upstream's payload, and the metrics must count each event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkwardly_framed_events_arrive_exactly_and_are_counted() {
    let big_event = [b"data: ".as_slice(), &vec![b'x'; 1 << 20], b"\n\n"].concat();
    let split_chunk = chunk(b" 1\n\n");
    let pause = Duration::from_millis(30);
    let pieces: Vec<(Duration, Vec<u8>)> = vec![
        (Duration::ZERO, STREAM_HEAD.to_vec()),
        // Event 1 in two chunks; the second chunk cut inside its size line, then in its data.
        (pause, chunk(b"data:")),
        (pause, split_chunk[..1].to_vec()),
        (pause, split_chunk[1..5].to_vec()),
        (pause, split_chunk[5..].to_vec()),
        // Event 2 in a chunk with extensions.
        (pause, b"9;name=\"a;b\";x\r\ndata: 2\n\n\r\n".to_vec()),
        // Events 3 to 5 in one write.
        (
            pause,
            [chunk(b"data: 3\n\n"), chunk(b"data: 4\n\ndata: 5\n\n")].concat(),
        ),
        // Event 6: 1 MiB in one chunk.
        (pause, chunk(&big_event)),
        (pause, LAST_CHUNK.to_vec()),
    ];
    let upstream = Upstream::start(Behavior::Raw {
        pieces,
        then: RawEnd::Hold,
    })
    .await;
    let gw = Gateway::start(&config(&upstream.addr.to_string())).await;

    let resp = client::get(gw.addr, "/sse").await.expect("response head");
    assert_eq!(resp.status, 200);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .expect("the stream ends")
        .expect("a complete chunked body");
    let expected = [
        b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ndata: 5\n\n".as_slice(),
        &big_event,
    ]
    .concat();
    assert_eq!(body.len(), expected.len(), "every byte, nothing more");
    assert!(
        body.as_bytes() == expected.as_slice(),
        "the payload is unchanged"
    );
    gw.expect_metric("ssegate_stream_events_total{route=\"sse\"}", 6.0)
        .await;
    gw.expect_metric(
        "ssegate_stream_bytes_total{route=\"sse\"}",
        expected.len() as f64,
    )
    .await;
    gw.expect_metric(
        "ssegate_stream_closed_total{reason=\"upstream_end\",route=\"sse\"}",
        1.0,
    )
    .await;
}

/// An upstream that sends a stream's head, then nothing until it is told to go on.
async fn head_then_wait(
    listener: TcpListener,
    go_on: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let (mut socket, _) = listener.accept().await?;
    if wire::read_request(&mut socket, &mut Vec::new())
        .await?
        .is_none()
    {
        return Ok(());
    }
    socket.write_all(STREAM_HEAD).await?;
    let _ = go_on.await;
    socket.write_all(&chunk(b"data: first\n\n")).await?;
    socket.write_all(LAST_CHUNK).await?;
    // Hold the connection until the proxy is done with it.
    hold_until_closed(&mut socket).await;
    Ok(())
}

/// An `EventSource` opens on the response head; a stream whose first event comes late (an LLM
/// that thinks first) must show its head at once, not hold it until the first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_head_reaches_the_client_before_the_first_event() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = listener.local_addr().unwrap().to_string();
    let (go_on, wait) = tokio::sync::oneshot::channel();
    let upstream = tokio::spawn(head_then_wait(listener, wait));
    let gw = Gateway::start(&config(&peer)).await;

    // The upstream sends no event until the client has the head, so a proxy that holds the
    // head back never gets one to send.
    let resp = tokio::time::timeout(Duration::from_secs(5), client::get(gw.addr, "/sse"))
        .await
        .expect("the head arrives while the upstream has sent no event")
        .expect("response head");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    go_on.send(()).unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(body, "data: first\n\n");
    drop(gw);
    upstream.abort();
}

/// Reads one chunked response from `socket`: returns its head and its decoded body.
async fn read_chunked_response(socket: &mut TcpStream) -> (http::ResponseHead, Vec<u8>) {
    let mut raw = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((head, len)) = http::parse_response(&raw).expect("a response head") {
            if let Some((body, _)) = http::decode_chunked(&raw[len..]).expect("a chunked body") {
                return (head, body);
            }
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, socket.read(&mut buf))
            .await
            .expect("the stream ends within 10 s")
            .expect("read");
        assert!(n > 0, "connection closed before the stream ended: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// After a stream ends, the client's kept-alive connection carries its next request, as it
/// would through any proxy: the relay gives it back to Pingora.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_carries_the_next_request_after_a_stream() {
    let upstream = Upstream::start(Behavior::Sse {
        interval: Duration::from_millis(10),
        count: Some(2),
        end: true,
    })
    .await;
    let gw = Gateway::start(&config(&upstream.addr.to_string())).await;
    let mut socket = TcpStream::connect(gw.addr).await.unwrap();
    for n in 1..=3 {
        let request = format!("GET /sse/{n} HTTP/1.1\r\nHost: test\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = read_chunked_response(&mut socket).await;
        assert_eq!(head.status, 200, "stream {n}: {head:?}");
        assert_eq!(head.header("connection"), Some("keep-alive"));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(text.matches("id: ").count(), 2, "stream {n}: {text}");
    }
    let targets: Vec<String> = upstream.proxied().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/sse/1", "/sse/2", "/sse/3"]);
    let logged = common::eventually(Duration::from_secs(3), || {
        gw.access_log()
            .iter()
            .filter(|l| l.contains("route=sse ") && l.contains("close=upstream_end"))
            .count()
            == 3
    })
    .await;
    assert!(logged, "one access-log line per stream:\n{}", gw.log());
}

/// A client that asked to close gets its stream, then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asked_to_close_gets_its_stream_then_the_close() {
    let reply = request_a_stream_that_ends(
        2,
        b"GET /sse HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.end, raw::End::Closed, "{}", reply.text());
    assert_eq!(reply.statuses(), [200]);
    assert_eq!(reply.responses[0].header("connection"), Some("close"));
    assert_eq!(reply.responses[0].body_text().matches("id: ").count(), 2);
}

/// An HTTP/1.0 client cannot read chunks: its stream is delimited by the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_gets_a_stream_delimited_by_the_close() {
    let reply = request_a_stream_that_ends(3, b"GET /sse HTTP/1.0\r\n\r\n").await;
    assert_eq!(reply.end, raw::End::Closed, "{}", reply.text());
    assert_eq!(reply.statuses(), [200], "{}", reply.text());
    let resp = &reply.responses[0];
    assert_eq!(resp.header("transfer-encoding"), None, "{}", reply.text());
    assert_eq!(
        resp.body_text().matches("id: ").count(),
        3,
        "{}",
        reply.text()
    );
}

/// Sends `request` (raw bytes) to a gateway whose upstream streams `events` events, 10 ms apart,
/// and then ends the stream; returns what the client read until the connection closed.
async fn request_a_stream_that_ends(events: u64, request: &[u8]) -> raw::Reply {
    let upstream = Upstream::start(Behavior::Sse {
        interval: Duration::from_millis(10),
        count: Some(events),
        end: true,
    })
    .await;
    let gw = Gateway::start(&config(&upstream.addr.to_string())).await;
    raw::send(gw.addr, request, Duration::from_secs(5)).await
}
