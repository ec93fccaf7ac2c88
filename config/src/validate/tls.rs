//! TLS settings (`[server.tls]`, `functions.<name>.target.tls`): which combinations make
//! sense, and whether the files they name are readable PEM of the right kind. Files are read
//! here, not only at `run`, so that `impulse validate` reports a wrong path with its line.

use std::path::Path;

use super::Validator;
use crate::locate::FieldPath;
use crate::model::{HttpTlsConfig, ServerTlsConfig};
use crate::pem;

impl Validator {
    pub(super) fn server_tls(&mut self, tls: &ServerTlsConfig) {
        let path = FieldPath::keys(["server", "tls"]);
        self.certificate_file(path.key("certificate"), &tls.certificate);
        self.private_key_file(path.key("key"), &tls.key);
    }

    /// `target` is the function's `target` path; `endpoint` its (possibly invalid) URL.
    pub(super) fn http_tls(&mut self, target: &FieldPath, endpoint: &str, tls: &HttpTlsConfig) {
        let path = target.key("tls");
        // An unparsable endpoint is reported at `endpoint` already.
        if url::Url::parse(endpoint.trim()).is_ok_and(|url| url.scheme() != "https") {
            self.error(
                path.clone(),
                "TLS settings apply to https:// endpoints only; this endpoint is not https://",
            );
        }
        if let Some(ca_file) = &tls.ca_file {
            self.certificate_file(path.key("ca_file"), ca_file);
        }
        match (&tls.client_certificate, &tls.client_key) {
            (Some(certificate), Some(key)) => {
                self.certificate_file(path.key("client_certificate"), certificate);
                self.private_key_file(path.key("client_key"), key);
            }
            (Some(_), None) => self.error(
                path.key("client_certificate"),
                "requires client_key (the certificate's private key)",
            ),
            (None, Some(_)) => self.error(
                path.key("client_key"),
                "requires client_certificate (the key's certificate chain)",
            ),
            (None, None) => {}
        }
    }

    fn certificate_file(&mut self, path: FieldPath, file: &Path) {
        if let Err(err) = pem::read_certificates(file) {
            self.error(path, err.to_string());
        }
    }

    fn private_key_file(&mut self, path: FieldPath, file: &Path) {
        if let Err(err) = pem::read_private_key(file) {
            self.error(path, err.to_string());
        }
    }
}
