//! What went wrong with a proxied request, in the terms a client and an operator need: the status
//! to answer, the `kind` of upstream error to count, and the close reason of a stream.

use pingora_core::{Error, ErrorSource, ErrorType};

use crate::metrics::{CloseReason, UpstreamErrorKind};

/// The error `upstream_peer` returns when every peer of the upstream is unhealthy.
pub const NO_HEALTHY_PEER: ErrorType = ErrorType::Custom("no healthy peer");

/// How ssegate answers and counts a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Status to send, or 0 when the client is gone and nothing can be sent.
    pub status: u16,
    pub upstream_kind: Option<UpstreamErrorKind>,
    /// Short text for the response body; never names a peer or an address.
    pub reason: &'static str,
}

pub fn classify(e: &Error) -> Failure {
    use ErrorType::*;
    let failure = |status, kind, reason| Failure {
        status,
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
        ) => failure(0, None, "client went away"),
        (ErrorSource::Downstream, ReadTimedout) => failure(408, None, "request timed out"),
        (ErrorSource::Downstream, _) => failure(400, None, "malformed request"),
        (ErrorSource::Internal | ErrorSource::Unset, _) => failure(500, None, "internal error"),
    }
}

/// Why a stream that ended with `e` (or cleanly, with `None`) was closed.
pub fn close_reason(e: Option<&Error>) -> CloseReason {
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
        assert_eq!(classify(&upstream(ErrorType::ConnectRefused)).status, 502);
        assert_eq!(classify(&upstream(ErrorType::ReadTimedout)).status, 504);
        assert_eq!(classify(&upstream(ErrorType::ConnectionClosed)).status, 502);
        assert_eq!(classify(&Error::new(NO_HEALTHY_PEER)).status, 503);
    }

    #[test]
    fn a_vanished_client_gets_nothing_and_closes_as_client_gone() {
        let mut e = Error::new(ErrorType::WriteError);
        e.esource = ErrorSource::Downstream;
        assert_eq!(classify(&e).status, 0);
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
