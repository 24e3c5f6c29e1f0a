//! What went wrong with a proxied request, in the terms a client and an operator need: the status
//! to answer, the `kind` of upstream error to count, and the close reason of a stream.

use pingora_core::{Error, ErrorSource, ErrorType};

use crate::observe::metrics::{CloseReason, UpstreamErrorKind};
use crate::upstream::NO_HEALTHY_PEER;

/// How ssegate answers and counts a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The status to answer with, or `None` when the client is gone and nothing can be sent.
    pub(crate) status: Option<u16>,
    pub(crate) upstream_kind: Option<UpstreamErrorKind>,
    /// Short text for the response body; never names a peer or an address.
    pub(crate) reason: &'static str,
}

pub(crate) fn classify(e: &Error) -> Failure {
    use ErrorType::*;
    let failure = |status, kind, reason| Failure {
        status: Some(status),
        upstream_kind: kind,
        reason,
    };
    match (e.esource(), e.etype()) {
        (_, t) if *t == NO_HEALTHY_PEER => failure(
            503,
            Some(UpstreamErrorKind::Unhealthy),
            "no healthy upstream peer",
        ),
        (_, HTTPStatus(code)) => failure(*code, None, "request rejected"),
        (
            ErrorSource::Upstream,
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | BindError
            | SocketError | TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert
            | HandshakeError | ConnectProxyFailure,
        ) => failure(
            502,
            Some(UpstreamErrorKind::Connect),
            "upstream connection failed",
        ),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => failure(
            504,
            Some(UpstreamErrorKind::Timeout),
            "upstream did not answer in time",
        ),
        (ErrorSource::Upstream, _) => failure(
            502,
            Some(UpstreamErrorKind::Reset),
            "upstream closed the connection or sent an invalid response",
        ),
        // An HTTP/2 client that resets its stream (EventSource.close()) shows up as H2Error; a
        // client that stops reading until the write timeout is as good as gone.
        (
            ErrorSource::Downstream,
            ReadError | WriteError | WriteTimedout | ConnectionClosed | H2Error,
        ) => Failure {
            status: None,
            upstream_kind: None,
            reason: "client went away",
        },
        (ErrorSource::Downstream, ReadTimedout) => failure(408, None, "request timed out"),
        (ErrorSource::Downstream, _) => failure(400, None, "malformed request"),
        (ErrorSource::Internal | ErrorSource::Unset, _) => failure(500, None, "internal error"),
    }
}

/// Why a stream that ended with `e` (or cleanly, with `None`) was closed.
pub(crate) fn close_reason(e: Option<&Error>) -> CloseReason {
    let Some(e) = e else {
        return CloseReason::UpstreamEnd;
    };
    match classify(e).upstream_kind {
        Some(UpstreamErrorKind::Timeout) => CloseReason::IdleTimeout,
        Some(_) => CloseReason::UpstreamError,
        None if *e.esource() == ErrorSource::Downstream => CloseReason::ClientGone,
        None => CloseReason::UpstreamError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(t: ErrorType) -> Box<Error> {
        let mut e = Error::new(t);
        e.esource = ErrorSource::Upstream;
        e
    }

    #[test]
    fn maps_upstream_errors_to_statuses() {
        assert_eq!(
            classify(&upstream(ErrorType::ConnectRefused)).status,
            Some(502)
        );
        assert_eq!(
            classify(&upstream(ErrorType::ReadTimedout)).status,
            Some(504)
        );
        assert_eq!(
            classify(&upstream(ErrorType::ConnectionClosed)).status,
            Some(502)
        );
        assert_eq!(classify(&Error::new(NO_HEALTHY_PEER)).status, Some(503));
    }

    #[test]
    fn a_vanished_client_gets_nothing_and_closes_as_client_gone() {
        let mut e = Error::new(ErrorType::WriteError);
        e.esource = ErrorSource::Downstream;
        assert_eq!(classify(&e).status, None);
        assert_eq!(close_reason(Some(&e)), CloseReason::ClientGone);
    }

    #[test]
    fn stream_close_reasons() {
        assert_eq!(close_reason(None), CloseReason::UpstreamEnd);
        assert_eq!(
            close_reason(Some(&upstream(ErrorType::ReadTimedout))),
            CloseReason::IdleTimeout
        );
        assert_eq!(
            close_reason(Some(&upstream(ErrorType::ConnectionClosed))),
            CloseReason::UpstreamError
        );
    }
}
