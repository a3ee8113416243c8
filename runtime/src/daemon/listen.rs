//! Parses and vets `-H` addresses: unix sockets anywhere, TCP only on loopback unless TLS is
//! configured (we do not serve plain TCP to the network).

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
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
}

pub fn parse_listen(addr: &str, tls: bool) -> Result<ListenAddr, ListenError> {
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
        if !sock.ip().is_loopback() && !tls {
            return Err(ListenError::InsecureTcp(addr.to_string()));
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
            parse_listen("unix:///run/strata.sock", false),
            Ok(ListenAddr::Unix("/run/strata.sock".into()))
        );
        assert!(matches!(
            parse_listen("tcp://127.0.0.1:2375", false),
            Ok(ListenAddr::Tcp(_))
        ));
        assert!(matches!(
            parse_listen("tcp://0.0.0.0:2375", false),
            Err(ListenError::InsecureTcp(_))
        ));
        assert!(matches!(
            parse_listen("tcp://0.0.0.0:2376", true),
            Ok(ListenAddr::Tcp(_))
        ));
        assert!(parse_listen("unix://relative", false).is_err());
        assert!(parse_listen("http://x", false).is_err());
    }
}
