//! Property tests for the parsers that read untrusted bytes, cheap enough for every
//! `cargo test`: the SSE event scanner against a reference, the config loader's promises (both
//! also fuzzed in `fuzz/`), and the relay's decoder of upstream response bodies.

use bytes::BytesMut;
use proptest::prelude::*;
use ssegate::proxy::relay::framing::{BodyDecoder, Framing};
use ssegate::sse::EventScanner;

#[path = "../fuzz/common/config_checks.rs"]
mod config_checks;
#[path = "../fuzz/common/sse_reference.rs"]
mod sse_reference;

/// An SSE stream: fields, comments and every kind of line end, in any order.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        "data: x", "id: 1", "event", ":", ": ping", "\n", "\r", "\r\n", "\n\n", "\r\r", " ",
    ]);
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat().into_bytes())
}

/// A valid config file in YAML, and how many routes it has.
fn valid_config() -> impl Strategy<Value = (String, usize)> {
    let segment = "[a-z0-9]{1,5}";
    let path = prop::collection::vec(segment, 0..3).prop_map(|s| format!("/{}", s.join("/")));
    let route = (
        path,
        any::<bool>(),
        prop::option::of("[a-z]{1,6}(\\.[a-z]{1,6}){0,2}"),
        any::<bool>(),
        prop::option::of(prop::sample::subsequence(vec!["get", "POST", "Put"], 1..=3)),
        prop::option::of((1..3600u64, 1..100u64)),
    );
    let routes = prop::collection::vec(route, 1..5);
    (1..4usize, 1..3usize, routes).prop_map(|(listeners, upstreams, routes)| {
        let mut yaml = String::from("listeners:\n");
        for i in 0..listeners {
            yaml += &format!("  - address: 127.0.0.1:{}\n", 8000 + i);
        }
        yaml += "upstreams:\n";
        for i in 0..upstreams {
            yaml += &format!("  u{i}:\n    peers: [\"[::1]:{}\", 10.0.0.{i}:80]\n", 9000 + i);
            yaml += "    health_check: { path: /healthz, interval: 250ms }\n";
        }
        yaml += "routes:\n";
        for (i, (path, exact, host, wildcard, methods, sse)) in routes.iter().enumerate() {
            let key = if *exact { "path" } else { "path_prefix" };
            yaml += &format!("  - name: r{i}\n    upstream: u{}\n", i % upstreams);
            yaml += &format!("    match:\n      {key}: {path}\n");
            match host {
                Some(host) if *wildcard => yaml += &format!("      host: '*.{host}'\n"),
                Some(host) => yaml += &format!("      host: {host}\n"),
                None => {}
            }
            if let Some(methods) = methods {
                yaml += &format!("      methods: [{}]\n", methods.join(", "));
            }
            if let Some((heartbeat, max_streams)) = sse {
                yaml += &format!(
                    "    sse: {{ heartbeat: {heartbeat}s, write_timeout: 5s, max_streams: {max_streams} }}\n"
                );
            }
        }
        (yaml, routes.len())
    })
}

/// A chunked encoding of `pieces`: each chunk with an optional extension, then optional trailers.
fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..300),
        prop::option::of("[a-z]{1,8}(=[a-z0-9\";]{0,8})?"),
    );
    let trailers = prop::collection::vec("[A-Za-z-]{1,10}: [a-z0-9 ]{0,10}", 0..3);
    (prop::collection::vec(chunk, 0..8), trailers).prop_map(|(chunks, trailers)| {
        let mut wire = Vec::new();
        let mut payload = Vec::new();
        for (data, extension) in chunks {
            wire.extend_from_slice(format!("{:x}", data.len()).as_bytes());
            if let Some(extension) = extension {
                wire.extend_from_slice(format!(";{extension}").as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&data);
            wire.extend_from_slice(b"\r\n");
            payload.extend_from_slice(&data);
        }
        wire.extend_from_slice(b"0\r\n");
        for trailer in trailers {
            wire.extend_from_slice(format!("{trailer}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        (wire, payload)
    })
}

/// Cut points for `len` bytes, sorted, ending at `len`.
fn cut_points(cuts: &[prop::sample::Index], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts.push(len);
    cuts
}

proptest! {
    #[test]
    fn chunked_bodies_decode_the_same_however_the_reads_cut_them(
        (wire, payload) in chunked_body(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        extra in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut input = wire.clone();
        input.extend_from_slice(&extra);
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        let mut out = BytesMut::new();
        let (mut used, mut fed) = (0, 0);
        for cut in cut_points(&cuts, input.len()) {
            used += decoder.decode(&input[fed..cut], &mut out).expect("a valid body");
            fed = cut;
        }
        prop_assert!(decoder.is_done());
        prop_assert_eq!(used, wire.len(), "bytes past the body are not taken");
        prop_assert_eq!(&out[..], &payload[..]);
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(
        input in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        framing in prop::sample::select(vec![Framing::Chunked, Framing::Length(100), Framing::UntilClose]),
    ) {
        let mut decoder = BodyDecoder::new(framing);
        let mut out = BytesMut::new();
        let mut fed = 0;
        for cut in cut_points(&cuts, input.len()) {
            match decoder.decode(&input[fed..cut], &mut out) {
                Ok(used) => prop_assert!(used <= cut - fed),
                Err(_) => break,
            }
            fed = cut;
        }
        prop_assert!(out.len() <= input.len(), "never more body than bytes");
    }

    #[test]
    fn chunking_does_not_change_events(
        stream in sse_stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(stream.len());
        let mut scanner = EventScanner::default();
        let (mut events, mut fed) = (0, 0);
        for cut in cuts {
            events += scanner.feed(&stream[fed..cut]);
            fed = cut;
            let expected = sse_reference::events(&stream[..fed]);
            prop_assert_eq!((events, scanner.at_boundary()), expected);
        }
    }

    #[test]
    fn valid_configs_load((yaml, routes) in valid_config()) {
        let config = ssegate::config::parse("p.yaml".as_ref(), yaml.as_bytes())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        config_checks::check_config("p.yaml", &config);
        prop_assert_eq!(config.routes.len(), routes);
    }

    #[test]
    fn damaged_configs_load_or_fail_cleanly(
        (yaml, _) in valid_config(),
        at in any::<prop::sample::Index>(),
        cut in 0..4usize,
        insert in prop::sample::select(vec!["", "\n", ":", " ", "- ", "\"", "[", "{", "0s", "\r"]),
    ) {
        let mut bytes = yaml.into_bytes();
        let at = at.index(bytes.len() + 1);
        let end = (at + cut).min(bytes.len());
        bytes.splice(at..end, insert.bytes());
        config_checks::parse_and_check("p.yaml", &bytes);
    }
}
