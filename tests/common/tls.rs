//! TLS for the tests: a self-signed certificate for a TLS listener, and an HTTP/2 client
//! connection to it chosen by ALPN.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as `cert.pem` and `key.pem`
/// into `dir`.
pub fn self_signed(dir: &Path) -> X509 {
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

/// The listener keys (indented by four) for a TLS listener with the certificate in `dir`.
pub fn listener_yaml(dir: &Path) -> String {
    format!(
        "    tls: {{ cert: {}, key: {} }}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

/// An HTTP/2 connection to `addr`, which must present `cert` and choose h2 by ALPN.
pub async fn h2_connect(addr: SocketAddr, cert: X509) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
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
    client
}
