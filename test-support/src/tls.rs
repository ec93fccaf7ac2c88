//! Certificates made at test time: a private CA, a server certificate for `localhost` and
//! `127.0.0.1`, and a client certificate, as PEM text and as files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate (PEM) and its private key (PKCS#8 PEM).
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub certificate: String,
    /// The private key.
    pub key: String,
}

/// A private CA and what it signed.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA's certificate (PEM): what a client or server adds to its roots.
    pub ca: String,
    /// A server certificate for `localhost` and `127.0.0.1`.
    pub server: Pem,
    /// A client certificate (CN `impulse-test-client`).
    pub client: Pem,
}

/// The files of a [`TestPki`] written by [`TestPki::write_to`].
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// `ca.pem`.
    pub ca: PathBuf,
    /// `server.pem`.
    pub server_certificate: PathBuf,
    /// `server-key.pem`.
    pub server_key: PathBuf,
    /// `client.pem`.
    pub client_certificate: PathBuf,
    /// `client-key.pem`.
    pub client_key: PathBuf,
}

impl TestPki {
    /// A new CA (`Impulse test CA`) with a server and a client certificate.
    ///
    /// # Panics
    ///
    /// When rcgen cannot generate a key or sign: a broken test environment.
    pub fn generate() -> Self {
        Self::generate_named("Impulse test CA")
    }

    /// As [`TestPki::generate`], with the CA's common name (two CAs with different names make
    /// the "wrong CA" case).
    ///
    /// # Panics
    ///
    /// As [`TestPki::generate`].
    pub fn generate_named(ca_name: &str) -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("no names to parse");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a CA key"))
            .expect("a self-signed CA");

        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).expect("valid names");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("a leaf key");
            let certificate = params.signed_by(&key, &ca).expect("signed by the CA");
            Pem {
                certificate: certificate.pem(),
                key: key.serialize_pem(),
            }
        };
        let server = leaf(
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            Vec::new(),
            "impulse-test-client",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Self {
            ca: ca.pem(),
            server,
            client,
        }
    }

    /// Writes every certificate and key into `dir`.
    ///
    /// # Panics
    ///
    /// When `dir` is not writable.
    pub fn write_to(&self, dir: &Path) -> PkiFiles {
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).expect("the test directory is writable");
            path
        };
        PkiFiles {
            ca: write("ca.pem", &self.ca),
            server_certificate: write("server.pem", &self.server.certificate),
            server_key: write("server-key.pem", &self.server.key),
            client_certificate: write("client.pem", &self.client.certificate),
            client_key: write("client-key.pem", &self.client.key),
        }
    }
}
