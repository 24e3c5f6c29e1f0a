//! The target URL of the load tool (`http://`, or `https://` for the HTTP/2 mode). The HTTP/1.1
//! framing itself (heads, chunked bodies) is the workspace test kit's.

/// `http://HOST[:PORT]/PATH` or `https://…`, split for connecting and for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https`: TLS (the client speaks HTTP/2 over it).
    pub tls: bool,
    /// `HOST:PORT`, for connecting and for the `Host` header.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!(
                "{url}: only http:// and https:// URLs are supported"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_string()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        Ok(Self {
            tls,
            authority,
            path: path.to_string(),
        })
    }

    /// The host without the port (and without an IPv6 address's brackets).
    pub fn host(&self) -> &str {
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The whole URL, for an HTTP/2 request's `:scheme`, `:authority` and `:path`.
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }

    /// The GET request for an event stream.
    pub fn sse_request(&self) -> Vec<u8> {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
            self.path, self.authority
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url = Url::parse("http://127.0.0.1:8080/sse?x=1").expect("valid");
        assert_eq!(url.authority, "127.0.0.1:8080");
        assert_eq!(url.path, "/sse?x=1");
        assert_eq!(
            Url::parse("http://localhost").expect("valid").authority,
            "localhost:80"
        );
        assert!(!url.tls);
        assert_eq!(url.host(), "127.0.0.1");
        let url = Url::parse("https://[::1]/sse").expect("valid");
        assert!(url.tls);
        assert_eq!((url.authority.as_str(), url.host()), ("[::1]:443", "::1"));
        assert_eq!(url.uri(), "https://[::1]:443/sse");
        assert!(Url::parse("ftp://x/").is_err());
    }
}
