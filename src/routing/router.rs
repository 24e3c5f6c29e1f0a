//! Picks the route for a request: host, path and method matching, most specific route first.
//!
//! Precedence: an exact `path` beats any prefix, a longer prefix beats a shorter one, a
//! route with a host beats one without (an exact host beats a wildcard), a route with methods beats
//! one without; remaining ties go to the route listed first. The routes are sorted once by that
//! order when the table is built, so a lookup is the first route that matches.

use pingora_http::RequestHeader;

use crate::config::model::{HostMatch, PathMatch, Route};

/// Routes in match order; lookups return an index into the config's route list.
#[derive(Debug)]
pub(crate) struct Router {
    /// `(index in config, route)`, most specific first.
    order: Vec<(usize, Route)>,
}

impl Router {
    pub(crate) fn new(routes: &[Route]) -> Self {
        let mut order: Vec<(usize, Route)> = routes.iter().cloned().enumerate().collect();
        // Stable sort: equal keys keep config order.
        order.sort_by_key(|(_, r)| std::cmp::Reverse(specificity(r)));
        Router { order }
    }

    /// The config index of the route for this request, if any. `host` may carry a port;
    /// `path` may carry a query string.
    pub(crate) fn find(&self, host: Option<&str>, path: &str, method: &str) -> Option<usize> {
        let host = host.map(normalize_host);
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.order
            .iter()
            .find(|(_, r)| {
                host_matches(r.host.as_ref(), host.as_deref())
                    && path_matches(&r.path, path)
                    && r.methods
                        .as_ref()
                        .is_none_or(|ms| ms.iter().any(|m| m == method))
            })
            .map(|(i, _)| *i)
    }
}

/// Whether a request path holds a `.` or `..` segment, also percent-encoded (`%2e%2e`). Such a
/// path could match a prefix route (`/v1/chat/../admin`) and then be resolved by the upstream to
/// a path outside it, so ssegate refuses it instead of routing it; browsers and HTTP clients
/// never send one.
///
/// Segments are split the way lenient upstreams split them too, so that none of them can
/// resolve a segment ssegate did not see: at a backslash (Windows servers, some frameworks) and
/// at an encoded slash or backslash (`%2f`, `%5c`: servers that decode before they normalise),
/// and a segment's `;parameters` are ignored (Tomcat and Spring read `..;` as `..`).
///
/// Encoded percent signs are decoded first, as often as they nest: `%252e%252e` is `..` to an
/// upstream that decodes twice (a gateway or framework in front of the application that
/// decodes once more, or a server with the old double-decode flaw). An upstream that decodes
/// once sees the harmless segment `%2e%2e`, so forwarding would be safe there; ssegate cannot
/// know which kind it fronts, and no client has a reason to send an encoded dot twice encoded,
/// so it refuses them, as it refuses the other lenient spellings.
pub(crate) fn has_dot_segments(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    // A dot segment needs a `.` or an encoded one (`%2e`); most paths have neither, and skip the
    // normalising below (which allocates).
    if memchr::memchr2(b'.', b'%', path.as_bytes()).is_none() {
        return false;
    }
    let mut path = path.to_ascii_lowercase();
    // Each pass shortens the path, so this ends.
    while path.contains("%25") {
        path = path.replace("%25", "%");
    }
    let path = path
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    path.split('/').any(|segment| {
        let segment = segment.split(';').next().unwrap_or(segment);
        let decoded = segment.replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// Why a request target must not be routed, or `None` if it may be. ssegate routes on the
/// target's path but forwards the target as the client sent it, so the two must agree:
///
/// - Only origin-form (`/path?query`) and absolute-form `http(s)://authority/path` targets are
///   routed. Pingora gives every other form (`admin/secret`, `x/../admin`, `foo:bar://h/x`,
///   `?q`) the path `/` for routing yet forwards it verbatim, so a route that matched `/` would
///   hand its upstream a path it never matched, dot segments included. (`*`, for
///   `OPTIONS *`, matches no route and gets a 404.)
/// - A path with dot segments ([`has_dot_segments`]).
pub(crate) fn target_problem(raw_target: &[u8]) -> Option<&'static str> {
    let target = String::from_utf8_lossy(raw_target);
    let path = if target.starts_with('/') || target == "*" {
        &target[..]
    } else {
        let lower = target.to_ascii_lowercase();
        let scheme_len = ["http://", "https://"]
            .iter()
            .find(|scheme| lower.starts_with(*scheme))
            .map(|scheme| scheme.len());
        let Some(scheme_len) = scheme_len else {
            return Some("request target not in origin form");
        };
        let rest = &target[scheme_len..];
        &rest[rest.find(['/', '?', '#']).unwrap_or(rest.len())..]
    };
    has_dot_segments(path).then_some("path with dot segments")
}

/// Why a request must be refused with 400 before it is routed, or `None` if it may be routed:
/// an HTTP/1.1 request without `Host` (RFC 9112 section 3.2 requires the 400), or a target that
/// [`target_problem`] refuses.
pub(crate) fn refusal(req: &RequestHeader) -> Option<&'static str> {
    if req.version == http::Version::HTTP_11
        && !req.headers.contains_key(http::header::HOST)
        && req.uri.authority().is_none()
    {
        return Some("HTTP/1.1 request without Host");
    }
    target_problem(req.raw_path())
}

/// Sort key: larger is more specific.
fn specificity(r: &Route) -> (u8, usize, u8, bool) {
    let (exact, len) = match &r.path {
        PathMatch::Exact(p) => (1, p.len()),
        PathMatch::Prefix(p) => (0, p.len()),
    };
    let host = match &r.host {
        Some(HostMatch::Exact(_)) => 2,
        Some(HostMatch::Wildcard(_)) => 1,
        None => 0,
    };
    (exact, len, host, r.methods.is_some())
}

/// Lower-cases and strips a port and a trailing dot: `API.Example.com.:8080` → `api.example.com`.
fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a port after them.
        host.split_once(']').map_or(host, |(h, _)| h)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

fn host_matches(rule: Option<&HostMatch>, host: Option<&str>) -> bool {
    match (rule, host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(HostMatch::Exact(h)), Some(host)) => h == host,
        // `.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`.
        (Some(HostMatch::Wildcard(suffix)), Some(host)) => {
            host.len() > suffix.len() && host.ends_with(suffix.as_str())
        }
    }
}

fn path_matches(rule: &PathMatch, path: &str) -> bool {
    match rule {
        PathMatch::Exact(p) => p == path,
        PathMatch::Prefix(p) if p == "/" => path.starts_with('/'),
        // On segment boundaries: `/v1/chat` matches `/v1/chat` and `/v1/chat/x`, not `/v1/chatter`.
        PathMatch::Prefix(p) => path
            .strip_prefix(p.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, path: PathMatch, methods: Option<&[&str]>) -> Route {
        Route {
            name: name.to_string(),
            host: host.map(|h| match h.strip_prefix('*') {
                Some(rest) => HostMatch::Wildcard(rest.to_string()),
                None => HostMatch::Exact(h.to_string()),
            }),
            path,
            methods: methods.map(|ms| ms.iter().map(|m| m.to_string()).collect()),
            upstream: 0,
            sse: None,
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.to_string())
    }

    fn exact(p: &str) -> PathMatch {
        PathMatch::Exact(p.to_string())
    }

    /// A lookup that answers with route names, for readable assertions.
    fn names(routes: &[Route]) -> impl Fn(Option<&str>, &str, &str) -> Option<String> + '_ {
        let router = Router::new(routes);
        move |host, path, method| {
            router
                .find(host, path, method)
                .map(|i| routes[i].name.clone())
        }
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let routes = [route("chat", None, prefix("/v1/chat"), None)];
        let find = names(&routes);
        assert_eq!(find(None, "/v1/chat", "GET"), Some("chat".into()));
        assert_eq!(find(None, "/v1/chat/x", "GET"), Some("chat".into()));
        assert_eq!(find(None, "/v1/chat?stream=1", "GET"), Some("chat".into()));
        assert_eq!(find(None, "/v1/chatter", "GET"), None);
        assert_eq!(find(None, "/v1", "GET"), None);
    }

    #[test]
    fn root_prefix_matches_everything() {
        let routes = [route("web", None, prefix("/"), None)];
        let find = names(&routes);
        assert_eq!(find(None, "/", "GET"), Some("web".into()));
        assert_eq!(find(None, "/anything/at/all", "GET"), Some("web".into()));
    }

    #[test]
    fn exact_path_matches_only_itself() {
        let routes = [route("health", None, exact("/healthz"), None)];
        let find = names(&routes);
        assert_eq!(find(None, "/healthz", "GET"), Some("health".into()));
        assert_eq!(find(None, "/healthz?x=1", "GET"), Some("health".into()));
        assert_eq!(find(None, "/healthz/", "GET"), None);
        assert_eq!(find(None, "/healthzz", "GET"), None);
    }

    #[test]
    fn exact_path_beats_any_prefix() {
        let routes = [
            route("prefix", None, prefix("/v1/chat"), None),
            route("exact", None, exact("/v1/chat"), None),
        ];
        let find = names(&routes);
        assert_eq!(find(None, "/v1/chat", "GET"), Some("exact".into()));
        assert_eq!(find(None, "/v1/chat/x", "GET"), Some("prefix".into()));
    }

    #[test]
    fn longer_prefix_beats_shorter() {
        let routes = [
            route("root", None, prefix("/"), None),
            route("v1", None, prefix("/v1"), None),
            route("chat", None, prefix("/v1/chat"), None),
        ];
        let find = names(&routes);
        assert_eq!(
            find(None, "/v1/chat/completions", "POST"),
            Some("chat".into())
        );
        assert_eq!(find(None, "/v1/models", "GET"), Some("v1".into()));
        assert_eq!(find(None, "/index.html", "GET"), Some("root".into()));
    }

    #[test]
    fn host_is_case_insensitive_and_ignores_the_port() {
        let routes = [route("api", Some("api.example.com"), prefix("/"), None)];
        let find = names(&routes);
        assert_eq!(
            find(Some("API.Example.COM"), "/", "GET"),
            Some("api".into())
        );
        assert_eq!(
            find(Some("api.example.com:8080"), "/", "GET"),
            Some("api".into())
        );
        assert_eq!(
            find(Some("api.example.com."), "/", "GET"),
            Some("api".into())
        );
        assert_eq!(find(Some("www.example.com"), "/", "GET"), None);
        assert_eq!(find(None, "/", "GET"), None);
    }

    #[test]
    fn wildcard_host_matches_one_or_more_labels() {
        let routes = [route("wild", Some("*.example.com"), prefix("/"), None)];
        let find = names(&routes);
        assert_eq!(find(Some("a.example.com"), "/", "GET"), Some("wild".into()));
        assert_eq!(
            find(Some("a.b.example.com"), "/", "GET"),
            Some("wild".into())
        );
        assert_eq!(find(Some("example.com"), "/", "GET"), None);
        assert_eq!(find(Some("badexample.com"), "/", "GET"), None);
    }

    #[test]
    fn host_route_beats_hostless_route_and_exact_beats_wildcard() {
        let routes = [
            route("any", None, prefix("/"), None),
            route("wild", Some("*.example.com"), prefix("/"), None),
            route("api", Some("api.example.com"), prefix("/"), None),
        ];
        let find = names(&routes);
        assert_eq!(
            find(Some("api.example.com"), "/", "GET"),
            Some("api".into())
        );
        assert_eq!(
            find(Some("www.example.com"), "/", "GET"),
            Some("wild".into())
        );
        assert_eq!(find(Some("other.org"), "/", "GET"), Some("any".into()));
    }

    #[test]
    fn path_specificity_outranks_host() {
        let routes = [
            route("host", Some("api.example.com"), prefix("/"), None),
            route("path", None, prefix("/v1"), None),
        ];
        let find = names(&routes);
        assert_eq!(
            find(Some("api.example.com"), "/v1/x", "GET"),
            Some("path".into())
        );
        assert_eq!(
            find(Some("api.example.com"), "/other", "GET"),
            Some("host".into())
        );
    }

    #[test]
    fn methods_restrict_the_match() {
        let routes = [
            route("post", None, prefix("/v1/chat"), Some(&["POST"])),
            route("any", None, prefix("/v1/chat"), None),
        ];
        let find = names(&routes);
        assert_eq!(find(None, "/v1/chat", "POST"), Some("post".into()));
        assert_eq!(find(None, "/v1/chat", "GET"), Some("any".into()));
        let only_post = [route("post", None, prefix("/"), Some(&["POST"]))];
        assert_eq!(names(&only_post)(None, "/", "DELETE"), None);
    }

    #[test]
    fn ties_go_to_the_route_listed_first() {
        let routes = [
            route("first", None, prefix("/x"), None),
            route("second", None, prefix("/x"), None),
        ];
        assert_eq!(names(&routes)(None, "/x", "GET"), Some("first".into()));
    }

    #[test]
    fn dot_segments_are_found_plain_and_encoded() {
        for path in [
            "/v1/chat/../admin",
            "/./x",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a/.%2e",
            "/..",
            // Split where lenient upstreams split: `;params`, `\`, `%2f`, `%5c`.
            "/a/..;/b",
            "/a/..;x=1/b",
            "/a/.;/b",
            "/a/..%2fb",
            "/a/..%2Fb",
            "/a/%2e%2e%2fb",
            "/a/..%5cb",
            "/a/..\\b",
            "/a\\..\\b",
            // Encoded percent signs, once or more: `..` to an upstream that decodes twice.
            "/a/%252e%252e/b",
            "/a/%252E./b",
            "/a/%25252e%25252e/b",
            "/a/..%252fb",
        ] {
            assert!(has_dot_segments(path), "{path}");
        }
        for path in [
            "/",
            "/v1/chat",
            "/a.b/c",
            "/..a/b",
            "/a/b?x=/../",
            "/file.txt",
            "/group%2Fproject/x",
            "/a;v=1/b",
            "/a\\b",
            "/a..;/b",
            "/100%25/x",
            "/a/%252e%252ex/b",
        ] {
            assert!(!has_dot_segments(path), "{path}");
        }
    }

    #[test]
    fn only_origin_and_http_absolute_form_targets_are_routed() {
        for target in [
            "/",
            "/v1/chat?x=1",
            "*",
            "http://api.example.com/v1/chat",
            "HTTPS://api.example.com:8443/x?y",
            "http://api.example.com",
            "http://api.example.com?q=1",
        ] {
            assert_eq!(target_problem(target.as_bytes()), None, "{target}");
        }
        for target in [
            "admin/secret",
            "x/../admin",
            "api.example.com:80",
            "foo:bar://api.example.com/admin",
            "ftp://api.example.com/x",
            "mailto:a@b",
            "?x=1",
        ] {
            assert_eq!(
                target_problem(target.as_bytes()),
                Some("request target not in origin form"),
                "{target}"
            );
        }
        for target in [
            "/a/../b",
            "/a/%2E%2e/b",
            "http://api.example.com/a/../b",
            "https://api.example.com/..;/b",
        ] {
            assert_eq!(
                target_problem(target.as_bytes()),
                Some("path with dot segments"),
                "{target}"
            );
        }
        // Not UTF-8: checked all the same.
        assert_eq!(
            target_problem(b"/a/\xff/../b"),
            Some("path with dot segments")
        );
    }

    #[test]
    fn no_match_gives_none() {
        let routes = [route("chat", None, prefix("/v1/chat"), None)];
        assert_eq!(names(&routes)(None, "/v2", "GET"), None);
    }
}
