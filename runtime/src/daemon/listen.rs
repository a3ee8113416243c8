//! Parses and vets `-H` addresses. Unix sockets anywhere; TCP on a loopback address with or
//! without TLS; TCP on any other address only with `--tlsverify` (client certificates signed
//! by `--tlscacert`): the API is root-equivalent, and TLS without client verification only
//! hides the traffic, it does not keep anyone out.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// What the TLS flags give TCP listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    None,
    /// `--tls`/`--tlscert` without `--tlsverify`: encrypted, but anyone may connect.
    ServerOnly,
    /// `--tlsverify`: every client must present a certificate signed by `--tlscacert`.
    VerifyClients,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenError {
    #[error("-H {0:?}: expected unix:///path or tcp://HOST:PORT")]
    Malformed(String),
    #[error(
        "-H {0}: refusing to serve the API in plain TCP on a non-loopback address; \
         use 127.0.0.1, or configure --tlsverify --tlscacert --tlscert --tlskey"
    )]
    InsecureTcp(String),
    #[error(
        "-H {0}: refusing to serve the API on a non-loopback address without client \
         certificates: TLS without --tlsverify lets anyone who can connect control the \
         daemon (root on this host); add --tlsverify --tlscacert CA.pem, or listen on \
         127.0.0.1"
    )]
    UnverifiedTls(String),
}

pub fn parse_listen(addr: &str, tls: TlsMode) -> Result<ListenAddr, ListenError> {
    if let Some(path) = addr.strip_prefix("unix://") {
        if path.is_empty() || !path.starts_with('/') {
            return Err(ListenError::Malformed(addr.to_string()));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    if let Some(hostport) = addr.strip_prefix("tcp://") {
        let sock: SocketAddr = hostport
            .parse()
            .map_err(|_| ListenError::Malformed(addr.to_string()))?;
        if !sock.ip().is_loopback() {
            match tls {
                TlsMode::None => return Err(ListenError::InsecureTcp(addr.to_string())),
                TlsMode::ServerOnly => return Err(ListenError::UnverifiedTls(addr.to_string())),
                TlsMode::VerifyClients => {}
            }
        }
        return Ok(ListenAddr::Tcp(sock));
    }
    Err(ListenError::Malformed(addr.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_without_tls() {
        assert_eq!(
            parse_listen("unix:///run/strata.sock", TlsMode::None),
            Ok(ListenAddr::Unix("/run/strata.sock".into()))
        );
        assert!(matches!(
            parse_listen("tcp://127.0.0.1:2375", TlsMode::None),
            Ok(ListenAddr::Tcp(_))
        ));
        assert!(matches!(
            parse_listen("tcp://0.0.0.0:2375", TlsMode::None),
            Err(ListenError::InsecureTcp(_))
        ));
        assert!(matches!(
            parse_listen("tcp://0.0.0.0:2376", TlsMode::VerifyClients),
            Ok(ListenAddr::Tcp(_))
        ));
        assert!(parse_listen("unix://relative", TlsMode::None).is_err());
        assert!(parse_listen("http://x", TlsMode::None).is_err());
    }

    /// Guards: `--tlscert --tlskey` without `--tlsverify` served the network with no client
    /// authentication (accepted on HEAD 3af0184).
    #[test]
    fn unverified_tls_only_on_loopback() {
        assert!(matches!(
            parse_listen("tcp://0.0.0.0:2376", TlsMode::ServerOnly),
            Err(ListenError::UnverifiedTls(_))
        ));
        assert!(matches!(
            parse_listen("tcp://[::]:2376", TlsMode::ServerOnly),
            Err(ListenError::UnverifiedTls(_))
        ));
        assert!(matches!(
            parse_listen("tcp://127.0.0.1:2376", TlsMode::ServerOnly),
            Ok(ListenAddr::Tcp(_))
        ));
        assert!(matches!(
            parse_listen("tcp://[::1]:2376", TlsMode::ServerOnly),
            Ok(ListenAddr::Tcp(_))
        ));
    }
}
