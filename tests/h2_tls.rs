//! TLS listeners offer HTTP/2 over ALPN, and SSE streams the same way on it: many streams share
//! one connection (no 6-per-host limit in browsers) and every event arrives as it is sent.

mod common;

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use common::client::EventReader;
use common::gateway::Gateway;
use common::upstream::{Behavior, Upstream};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};

const STREAMS: usize = 20;
const EVENTS: u64 = 5;

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files into `dir`.
fn self_signed(dir: &Path) -> X509 {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
    cert.set_serial_number(&serial).unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&cert.x509v3_context(None, None))
        .unwrap();
    cert.append_extension(san).unwrap();
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = cert.build();
    std::fs::write(dir.join("cert.pem"), cert.to_pem().unwrap()).unwrap();
    std::fs::write(dir.join("key.pem"), key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    cert
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sse_streams_share_one_h2_connection_and_stream_every_event() {
    let certs = tempfile::tempdir().unwrap();
    let cert = self_signed(certs.path());
    let upstream = Upstream::start(Behavior::Sse {
        interval: Duration::from_millis(100),
        count: Some(EVENTS),
        end: true,
    })
    .await;
    let tls = format!(
        "    tls: {{ cert: {}, key: {} }}\n",
        certs.path().join("cert.pem").display(),
        certs.path().join("key.pem").display()
    );
    let gw = Gateway::start_full(
        "",
        &tls,
        &format!(
            "upstreams:\n  events:\n    peers: [{}]\n\
             routes:\n  - {{ name: events, match: {{ path_prefix: / }}, upstream: events, sse: {{ heartbeat: 10s }} }}\n",
            upstream.addr
        ),
    )
    .await;

    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
    connector.cert_store_mut().add_cert(cert).unwrap();
    connector.set_alpn_protos(b"\x02h2").unwrap();
    let ssl = connector
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut tls)
        .connect()
        .await
        .expect("TLS handshake, certificate verified");
    assert_eq!(
        tls.ssl().selected_alpn_protocol(),
        Some(&b"h2"[..]),
        "h2 chosen by ALPN"
    );

    let (client, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let mut client = client.clone().ready().await.unwrap();
        let request = http::Request::get(format!("https://localhost/events/{i}"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        streams.push(tokio::spawn(async move {
            let response = response.await.expect("response");
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-accel-buffering"], "no");
            let mut body = response.into_body();
            let mut reader = EventReader::default();
            let mut events = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk: Bytes = chunk.expect("body data");
                let _ = body.flow_control().release_capacity(chunk.len());
                events.extend(reader.feed(&chunk));
            }
            events
        }));
    }
    for stream in streams {
        let events = stream.await.unwrap();
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=EVENTS).collect::<Vec<_>>());
        for event in events {
            assert!(
                event.latency() < Duration::from_millis(50),
                "event {} took {:?} over h2",
                event.id,
                event.latency()
            );
        }
    }
    // Every stream was served on the same client connection.
    let settled =
        common::eventually(Duration::from_secs(2), || gw.access_log().len() == STREAMS).await;
    assert!(settled, "{}", gw.log());
    let clients: std::collections::BTreeSet<String> = gw
        .access_log()
        .iter()
        .filter_map(|l| {
            l.split(' ')
                .find(|f| f.starts_with("client="))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(clients.len(), 1, "{clients:?}");
    // The upstream got well-formed HTTP/1.1 requests for them.
    for req in upstream.proxied() {
        assert_eq!(req.version, "HTTP/1.1");
        assert!(req.target.starts_with("/events/"), "{}", req.target);
        assert_eq!(req.header("host"), Some("localhost"));
        assert_eq!(req.header("x-forwarded-proto"), Some("https"));
    }
}
