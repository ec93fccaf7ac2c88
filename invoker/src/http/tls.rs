//! TLS for `https://` endpoints: the rustls client configuration every `http` target's client
//! is built with (the aws-lc-rs provider, the system's roots plus an optional CA file, an
//! optional client certificate). Certificate verification is always on.

use std::sync::{Arc, LazyLock};

use impulse_config::pem::{self, PemError};
use impulse_config::HttpTlsConfig;

use crate::role::ClientCertificate;
use rustls::{ClientConfig, RootCertStore};

/// Why an endpoint's TLS settings cannot be used. The message starts with the setting it is
/// about (`ca_file: …`) and never quotes a file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `ca_file` cannot be read or parsed.
    #[error("ca_file: {0}")]
    CaFile(#[source] PemError),
    /// A certificate in `ca_file` cannot be a trust anchor.
    #[error("ca_file: {0}")]
    CaCertificate(#[source] rustls::Error),
    /// `client_certificate` cannot be read or parsed.
    #[error("client_certificate: {0}")]
    ClientCertificate(#[source] PemError),
    /// `client_key` cannot be read or parsed.
    #[error("client_key: {0}")]
    ClientKey(#[source] PemError),
    /// One of `client_certificate` and `client_key` without the other.
    #[error("client_certificate and client_key must be set together")]
    IncompleteIdentity,
    /// A client certificate in the function's TLS settings and in its execution role.
    #[error("client_certificate is set both by the function and by its execution role")]
    TwoIdentities,
    /// rustls refused the certificate and key (they do not match, or the key type is not
    /// supported).
    #[error("client_certificate and client_key: {0}")]
    Identity(#[source] rustls::Error),
    /// rustls refused the protocol versions (cannot happen with the aws-lc-rs provider).
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// reqwest refused to build the client.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The system's trusted roots, loaded once per process from the platform's store
/// (`/etc/ssl/certs` on Debian, from the `ca-certificates` package; `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` override). A missing store is not an error: plain-HTTP functions do not need
/// it, and an `https://` endpoint then fails to verify with a certificate error.
static SYSTEM_ROOTS: LazyLock<RootCertStore> = LazyLock::new(|| {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(error = %error, "Cannot load the system's CA certificates.");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "Some system CA certificates cannot be used; ignored."
        );
    }
    if added == 0 {
        tracing::warn!(
            "No CA certificates found on this system (install ca-certificates): https function \
             endpoints verify only against their tls.ca_file."
        );
    } else {
        tracing::debug!(certificates = added, "Loaded the system's CA certificates.");
    }
    roots
});

/// The client configuration for `tls` and an execution role's client certificate (neither:
/// the system's roots, no client certificate).
pub(super) fn client_config(
    tls: Option<&HttpTlsConfig>,
    role_certificate: Option<&ClientCertificate>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = SYSTEM_ROOTS.clone();
    if let Some(ca_file) = tls.and_then(|tls| tls.ca_file.as_deref()) {
        for certificate in pem::read_certificates(ca_file).map_err(TlsError::CaFile)? {
            roots.add(certificate).map_err(TlsError::CaCertificate)?;
        }
    }
    // The provider is named rather than taken from rustls's process default, so that no
    // initialisation order matters and another crate enabling `ring` changes nothing here.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots);
    let own = match tls.map(|tls| (&tls.client_certificate, &tls.client_key)) {
        Some((Some(certificate), Some(key))) => Some(ClientCertificate {
            chain: pem::read_certificates(certificate).map_err(TlsError::ClientCertificate)?,
            key: pem::read_private_key(key).map_err(TlsError::ClientKey)?,
        }),
        Some((Some(_), None) | (None, Some(_))) => return Err(TlsError::IncompleteIdentity),
        Some((None, None)) | None => None,
    };
    let identity = match (own, role_certificate) {
        (Some(_), Some(_)) => return Err(TlsError::TwoIdentities),
        (Some(own), None) => Some(own),
        (None, role) => role.cloned(),
    };
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain, identity.key)
            .map_err(TlsError::Identity)?,
        None => builder.with_no_client_auth(),
    };
    // The client speaks HTTP/1.1 only (reqwest is built without `http2`).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
