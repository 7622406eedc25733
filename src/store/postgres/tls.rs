//! TLS to the database: rustls on ring, the public roots and any the options add.

use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, ErrorKind};

/// The TLS connector: the public roots and `pem`'s, rustls with ring.
pub(super) fn tls(pem: &[u8]) -> Result<MakeRustlsConnect, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let invalid = |detail: String| Error::new(ErrorKind::InvalidConfig).with_detail(detail);
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| invalid(format!("tls_roots: not PEM certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("tls_roots: not a usable root certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
