//! TLS for TCP listeners (`--tlsverify --tlscacert --tlscert --tlskey`), as Docker's: the
//! server presents `--tlscert`; with `--tlsverify` every client must present a certificate
//! signed by `--tlscacert`. PEM files are read by core's loader (the one plugins use).

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use strata_plugin::tls::{read_certs, read_key};

use super::listen::TlsMode;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tlscert and --tlskey are both needed to serve TLS")]
    Incomplete,
    #[error("--tlsverify needs --tlscacert, the CA that signs client certificates")]
    NoCa,
    #[error(transparent)]
    Load(#[from] strata_core::Error),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The TLS the TCP listeners serve, and whether it authenticates clients.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub verifies_clients: bool,
}

/// What `parse_listen` needs to know of the TLS flags.
pub fn mode(tls: Option<&ServerTls>) -> TlsMode {
    match tls {
        None => TlsMode::None,
        Some(t) if t.verifies_clients => TlsMode::VerifyClients,
        Some(_) => TlsMode::ServerOnly,
    }
}

/// The server configuration, or None when no TLS flag is given.
pub fn server_config(
    verify: bool,
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ServerTls>, TlsError> {
    if !verify && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err(TlsError::Incomplete);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if verify {
        let ca = ca.ok_or(TlsError::NoCa)?;
        let mut roots = RootCertStore::empty();
        for c in read_certs(ca)? {
            roots
                .add(c)
                .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(ServerTls {
        config: Arc::new(config),
        verifies_clients: verify,
    }))
}
