//! TLS for acceptors: a rustls `ServerConfig` from the Artemis keystore parameters, reloadable.
//!
//! `keyStorePath` is a PEM file (certificate chain and private key) or a PKCS#12 keystore
//! opened with `keyStorePassword`. With `needClientAuth=true`, clients must present a
//! certificate signed by a CA in `trustStorePath` (PEM, or PKCS#12 with `trustStorePassword`);
//! the certificate's subject common name becomes the connection's identity. `reload` re-reads
//! the files: new handshakes use the new certificate, open connections keep theirs.
//!
//! One crypto provider only (ring): see DEPENDENCIES.md.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How an acceptor uses TLS (`sslEnabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP (and WebSocket) only.
    #[default]
    Off,
    /// TLS only: MQTT over TLS and WebSocket over TLS.
    Required,
    /// Both: the first bytes tell TLS from plain.
    Optional,
}

/// The TLS parameters of an acceptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsParams {
    /// `sslEnabled`.
    pub mode: SslMode,
    /// `keyStorePath`.
    pub key_store: Option<PathBuf>,
    /// `keyStorePassword` (PKCS#12).
    pub key_store_password: Option<String>,
    /// `needClientAuth`.
    pub need_client_auth: bool,
    /// `trustStorePath`.
    pub trust_store: Option<PathBuf>,
    /// `trustStorePassword` (PKCS#12).
    pub trust_store_password: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn is_pkcs12(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("p12") || e.eq_ignore_ascii_case("pfx"))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Reads a certificate chain and key from a PEM file or a PKCS#12 keystore.
fn load_identity(path: &Path, password: Option<&str>) -> Result<Identity, String> {
    let shown = path.display();
    if is_pkcs12(path) {
        let data = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
        let store = p12_keystore::KeyStore::from_pkcs12(
            &data,
            password.unwrap_or(""),
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| {
            format!("{shown}: not a readable PKCS#12 keystore (wrong keyStorePassword?): {e}")
        })?;
        for (_, entry) in store.entries() {
            if let p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) = entry {
                let certs: Vec<CertificateDer<'static>> = chain
                    .certs()
                    .iter()
                    .map(|c| CertificateDer::from(c.as_der().to_vec()))
                    .collect();
                if certs.is_empty() {
                    continue;
                }
                let key =
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
                return Ok((certs, key));
            }
        }
        return Err(format!(
            "{shown}: the keystore holds no private key with a certificate"
        ));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{shown}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{shown}: bad certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown}: no certificate (expected PEM with a chain and a key)"
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{shown}: no private key: {e}"))?;
    Ok((certs, key))
}

/// Reads trusted CA certificates from PEM or PKCS#12.
fn load_roots(path: &Path, password: Option<&str>) -> Result<RootCertStore, String> {
    let shown = path.display();
    let certs: Vec<CertificateDer<'static>> = if is_pkcs12(path) {
        let data = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
        let store = p12_keystore::KeyStore::from_pkcs12(
            &data,
            password.unwrap_or(""),
            p12_keystore::Pkcs12ImportPolicy::Raw,
        )
        .map_err(|e| format!("{shown}: not a readable PKCS#12 truststore: {e}"))?;
        store
            .entries()
            .filter_map(|(_, e)| match e {
                p12_keystore::KeyStoreEntry::Certificate(c) => {
                    Some(CertificateDer::from(c.as_der().to_vec()))
                }
                _ => None,
            })
            .collect()
    } else {
        CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{shown}: bad certificate: {e}"))?
    };
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{shown}: unusable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{shown}: no CA certificate"));
    }
    Ok(roots)
}

/// Builds the rustls configuration; every error names the file and what is wrong with it.
pub fn server_config(params: &TlsParams) -> Result<ServerConfig, String> {
    let key_store = params
        .key_store
        .as_deref()
        .ok_or_else(|| "keyStorePath: required when sslEnabled is true or optional".to_owned())?;
    let (certs, key) = load_identity(key_store, params.key_store_password.as_deref())
        .map_err(|e| format!("keyStorePath: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if params.need_client_auth {
        let trust_store = params
            .trust_store
            .as_deref()
            .ok_or_else(|| "trustStorePath: required with needClientAuth=true".to_owned())?;
        let roots = load_roots(trust_store, params.trust_store_password.as_deref())
            .map_err(|e| format!("trustStorePath: {e}"))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("trustStorePath: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "keyStorePath: {}: the key does not fit the certificate: {e}",
            key_store.display()
        )
    })
}

/// An acceptor's TLS configuration, swappable at run time.
#[derive(Debug, Clone)]
pub struct Tls {
    params: TlsParams,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Loads the configuration for these parameters.
    pub fn new(params: TlsParams) -> Result<Tls, String> {
        let config = server_config(&params)?;
        Ok(Tls {
            params,
            current: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    /// The mode (`sslEnabled`).
    pub fn mode(&self) -> SslMode {
        self.params.mode
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = match self.current.read() {
            Ok(config) => Arc::clone(&config),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Re-reads the keystore and truststore; on error the current configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = Arc::new(server_config(&self.params)?);
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}

/// The subject common name of a DER certificate, if it has one: the identity of a client that
/// authenticated with a certificate. A small DER walk over TBSCertificate; anything unexpected
/// yields `None`.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    /// One DER element: (tag, content, rest).
    fn element(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = data.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }
    const SEQUENCE: u8 = 0x30;
    const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // Optional [0] version.
    let (tag, _, after) = element(rest)?;
    if tag == 0xA0 {
        rest = after;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (tag, mut subject, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut name = None;
    while !subject.is_empty() {
        let (_, rdn, next) = element(subject)?;
        subject = next;
        let (_, attribute, _) = element(rdn)?;
        let (oid_tag, oid, value) = element(attribute)?;
        if oid_tag == 0x06 && oid == COMMON_NAME {
            let (_, text, _) = element(value)?;
            name = String::from_utf8(text.to_vec()).ok();
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_of_a_certificate_is_its_identity() {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Starling Tests");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sensor-42");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            certificate_identity(cert.der()).as_deref(),
            Some("sensor-42")
        );
        assert_eq!(certificate_identity(b"not a certificate"), None);
        assert_eq!(certificate_identity(&[]), None);
    }

    #[test]
    fn missing_files_are_errors_naming_the_parameter_and_file() {
        let params = TlsParams {
            mode: SslMode::Required,
            key_store: Some(PathBuf::from("/nonexistent/key.pem")),
            ..TlsParams::default()
        };
        let err = server_config(&params).expect_err("missing file");
        assert!(
            err.starts_with("keyStorePath: /nonexistent/key.pem"),
            "{err}"
        );
        let err = server_config(&TlsParams {
            mode: SslMode::Required,
            ..TlsParams::default()
        })
        .expect_err("no key store");
        assert!(err.starts_with("keyStorePath: required"), "{err}");
    }
}
