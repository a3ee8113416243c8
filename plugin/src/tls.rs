//! TLS to plugins reached over TCP, as a `.json` spec's `TLSConfig` asks (Docker's rules:
//! `CAFile` verifies the plugin's certificate, and without one or with `InsecureSkipVerify` it
//! is not verified; `CertFile` + `KeyFile` are our client certificate).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use strata_core::error::{Error, Result};

/// A plugin spec's `TLSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct PluginTls {
    #[serde(rename = "InsecureSkipVerify", default)]
    pub insecure_skip_verify: bool,
    #[serde(rename = "CAFile", default)]
    pub ca_file: Option<PathBuf>,
    #[serde(rename = "CertFile", default)]
    pub cert_file: Option<PathBuf>,
    #[serde(rename = "KeyFile", default)]
    pub key_file: Option<PathBuf>,
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::invalid(format!("{}: not a PEM certificate: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| Error::invalid(format!("{}: not a PEM key: {e}", path.display())))?
        .ok_or_else(|| Error::invalid(format!("{}: no private key in it", path.display())))
}

/// Accepts any server certificate: only when the spec asks for it (Docker's semantics).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl PluginTls {
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Other(format!("TLS: {e}")))?;
        let builder = match (&self.ca_file, self.insecure_skip_verify) {
            (Some(ca), false) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| Error::invalid(format!("{}: {e}", ca.display())))?;
                }
                builder.with_root_certificates(roots)
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
        };
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
                .map_err(|e| Error::invalid(format!("TLS client certificate: {e}")))?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::invalid(
                    "TLSConfig needs both CertFile and KeyFile, or neither",
                ))
            }
        };
        Ok(Arc::new(config))
    }
}
