//! A test PKI made at test time with rcgen: a CA, server certificates for 127.0.0.1 and
//! localhost, client certificates, written as PEM (and PKCS#12) files in a temporary directory.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

pub struct Pki {
    pub dir: tempfile::TempDir,
    ca_params: CertificateParams,
    ca_key: KeyPair,
    pub ca_der: CertificateDer<'static>,
}

pub struct Leaf {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    pub fn new() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Starling Test CA");
        let ca_key = KeyPair::generate().expect("key");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        Pki {
            dir: tempfile::tempdir().expect("temp dir"),
            ca_der: ca.der().clone(),
            ca_params,
            ca_key,
        }
    }

    /// A certificate signed by the CA, with common name `cn`, valid for 127.0.0.1/localhost.
    pub fn leaf(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![
            SanType::IpAddress("127.0.0.1".parse().expect("ip")),
            SanType::DnsName("localhost".try_into().expect("dns name")),
        ];
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        Leaf {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }

    /// A PEM keystore (chain + key) for a server certificate with this common name.
    pub fn server_pem(&self, name: &str, cn: &str) -> PathBuf {
        let leaf = self.leaf(cn);
        self.write(
            name,
            format!("{}{}", leaf.cert_pem, leaf.key_pem).as_bytes(),
        )
    }

    /// A PKCS#12 keystore for a server certificate, protected by `password`.
    pub fn server_p12(&self, name: &str, cn: &str, password: &str) -> PathBuf {
        let leaf = self.leaf(cn);
        let key = p12_keystore::PrivateKey::from_der(&leaf.key_der).expect("key");
        let cert = p12_keystore::Certificate::from_der(&leaf.cert_der).expect("cert");
        let chain = p12_keystore::PrivateKeyChain::new(vec![1u8; 20], key, vec![cert]);
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry(
            "server",
            p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
        );
        let data = store.writer(password).write().expect("pkcs12");
        self.write(name, &data)
    }

    /// The CA certificate in a PKCS#12 truststore protected by `password`.
    pub fn ca_p12(&self, name: &str, password: &str) -> PathBuf {
        let cert = p12_keystore::Certificate::from_der(&self.ca_der).expect("cert");
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("ca", p12_keystore::KeyStoreEntry::Certificate(cert));
        let data = store.writer(password).write().expect("pkcs12");
        self.write(name, &data)
    }

    /// The CA certificate as a PEM file (a truststore).
    pub fn ca_pem(&self) -> PathBuf {
        let pem = rustls_pem(&self.ca_der);
        self.write("ca.pem", pem.as_bytes())
    }

    /// A client TLS configuration trusting the CA, optionally with a client certificate.
    pub fn client_config(&self, client: Option<&Leaf>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        match client {
            Some(leaf) => builder
                .with_client_auth_cert(
                    vec![leaf.cert_der.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
                )
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        }
    }

    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from("127.0.0.1").expect("server name")
    }
}

fn rustls_pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
