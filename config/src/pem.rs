//! Reading the PEM files that TLS settings name (certificates, private keys): the one loader
//! that `validate` and `run` share, with errors that name the file and never quote it.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject};
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that cannot be used. The message names the file and what is wrong with it, never
/// its contents (a key file's lines are secret).
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM section of the kind wanted.
    #[error("{} holds no PEM {what}", .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was looked for: `certificate` or `private key (PKCS#8, PKCS#1 RSA or SEC1 EC)`.
        what: &'static str,
    },
    /// The file is not well-formed PEM.
    #[error("{} is not valid PEM: {reason}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words that quote nothing from the file.
        reason: &'static str,
    },
}

const CERTIFICATE: &str = "certificate (-----BEGIN CERTIFICATE-----)";
const PRIVATE_KEY: &str = "private key (PKCS#8, PKCS#1 RSA or SEC1 EC)";

/// Every certificate in the PEM file at `path`, in file order; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e, CERTIFICATE))?;
    if certificates.is_empty() {
        return Err(PemError::Missing {
            path: path.to_owned(),
            what: CERTIFICATE,
        });
    }
    Ok(certificates)
}

/// The first private key in the PEM file at `path`.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_error(path, &e, PRIVATE_KEY))
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Our own words for a parse error: `pem::Error`'s `Display` quotes the offending line.
fn pem_error(path: &Path, error: &pem::Error, what: &'static str) -> PemError {
    let path = path.to_owned();
    let reason = match error {
        pem::Error::NoItemsFound => return PemError::Missing { path, what },
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "unreadable",
    };
    PemError::Malformed { path, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("a temp file");
        std::fs::write(file.path(), contents).expect("the temp file is writable");
        file
    }

    #[test]
    fn reads_certificates_and_keys() {
        // Not real DER: PEM parsing does not look inside a section.
        let certs = file(
            "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nBAUG\n-----END CERTIFICATE-----\n",
        );
        let read = read_certificates(certs.path()).expect("two certificates");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].as_ref(), &[1, 2, 3]);
        let key = file("-----BEGIN PRIVATE KEY-----\nAQID\n-----END PRIVATE KEY-----\n");
        assert!(matches!(
            read_private_key(key.path()),
            Ok(PrivateKeyDer::Pkcs8(_))
        ));
    }

    #[test]
    fn errors_name_the_file_and_quote_nothing() {
        let missing = Path::new("/nonexistent/impulse/ca.pem");
        let err = read_certificates(missing).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read /nonexistent/impulse/ca.pem: "),
            "{err}"
        );

        let not_pem = file("canary-not-pem-at-all\n");
        let err = read_certificates(not_pem.path()).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");

        // A key where a certificate is expected, and the reverse.
        let key = file("-----BEGIN PRIVATE KEY-----\nY2FuYXJ5\n-----END PRIVATE KEY-----\n");
        let err = read_certificates(key.path()).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let cert = file("-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n");
        let err = read_private_key(cert.path()).unwrap_err().to_string();
        assert!(err.contains("holds no PEM private key"), "{err}");

        let truncated = file("-----BEGIN PRIVATE KEY-----\nY2FuYXJ5LXNlY3JldA==\n");
        let err = read_private_key(truncated.path()).unwrap_err().to_string();
        assert!(
            err.contains("is not valid PEM: a section has no END line"),
            "{err}"
        );
        assert!(!err.contains("Y2FuYXJ5"), "{err}");
    }
}
