//! TLS for acceptors: a rustls `ServerConfig` from the Artemis keystore parameters, reloadable.
//!
//! `keyStorePath` is a PEM file (certificate chain and private key) or a PKCS#12 keystore
//! opened with `keyStorePassword`, told apart by their content, whatever the file's name (the
//! seed's example is a file named `keystore`): PEM by its `-----BEGIN` lines, PKCS#12 by its
//! DER structure. `keyStoreType` / `trustStoreType` (`PKCS12` or `PEM`, any case, as Java
//! reads them), when given, must match. A Java keystore (JKS, JCEKS) is refused with the
//! `keytool` command that converts it. With `needClientAuth=true`, clients must present a
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
    /// `keyStoreType`: when given, the keystore must be of this type.
    pub key_store_type: Option<StoreType>,
    /// `needClientAuth`.
    pub need_client_auth: bool,
    /// `trustStorePath`.
    pub trust_store: Option<PathBuf>,
    /// `trustStorePassword` (PKCS#12).
    pub trust_store_password: Option<String>,
    /// `trustStoreType`: when given, the truststore must be of this type.
    pub trust_store_type: Option<StoreType>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A keystore type (`keyStoreType`, `trustStoreType`): Java's names, without regard to case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreType {
    /// `PKCS12`.
    Pkcs12,
    /// `PEM` (Artemis' PEM keystore provider).
    Pem,
}

impl std::fmt::Display for StoreType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreType::Pkcs12 => "PKCS12",
            StoreType::Pem => "PEM",
        })
    }
}

/// What a keystore file holds, told by its content (never by its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// Text with `-----BEGIN` lines.
    Pem,
    /// A DER SEQUENCE starting with INTEGER 3: a PKCS#12 PFX (RFC 7292).
    Pkcs12,
    /// Java's own format, magic 0xFEEDFEED.
    Jks,
    /// Java's JCEKS, magic 0xCECECECE.
    Jceks,
}

impl Content {
    fn of(data: &[u8]) -> Option<Content> {
        const BEGIN: &[u8] = b"-----BEGIN";
        match data {
            [0xFE, 0xED, 0xFE, 0xED, ..] => Some(Content::Jks),
            [0xCE, 0xCE, 0xCE, 0xCE, ..] => Some(Content::Jceks),
            [0x30, ..] if is_pfx(data) => Some(Content::Pkcs12),
            _ if data.windows(BEGIN.len()).any(|w| w == BEGIN) => Some(Content::Pem),
            _ => None,
        }
    }

    fn store_type(self) -> Option<StoreType> {
        match self {
            Content::Pem => Some(StoreType::Pem),
            Content::Pkcs12 => Some(StoreType::Pkcs12),
            Content::Jks | Content::Jceks => None,
        }
    }
}

/// A DER SEQUENCE (definite length within the data, or BER's indefinite length) whose first
/// element is INTEGER 3: the PFX version of every PKCS#12 file.
fn is_pfx(data: &[u8]) -> bool {
    let Some((&0x30, rest)) = data.split_first() else {
        return false;
    };
    let Some((&first, rest)) = rest.split_first() else {
        return false;
    };
    let content = match first {
        0x80 => rest,
        n if n < 0x80 => match rest.get(..usize::from(n)) {
            Some(content) => content,
            None => return false,
        },
        n => {
            let count = usize::from(n & 0x7F);
            if count > 4 || rest.len() < count {
                return false;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            match rest[count..].get(..len) {
                Some(content) => content,
                None => return false,
            }
        }
    };
    content.starts_with(&[0x02, 0x01, 0x03])
}

/// Reads a keystore file and tells what it holds; `expected` (the `type_param` parameter,
/// `keyStoreType` or `trustStoreType`), when given, must match it. A Java keystore gets the
/// command that converts it.
fn read_store(
    path: &Path,
    expected: Option<StoreType>,
    type_param: &str,
) -> Result<(Vec<u8>, StoreType), String> {
    let shown = path.display();
    let data = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    let content = Content::of(&data).ok_or_else(|| {
        format!(
            "{shown}: not a keystore Starling can read: neither PEM (-----BEGIN lines) nor PKCS#12"
        )
    })?;
    let Some(found) = content.store_type() else {
        let kind = if content == Content::Jks {
            "JKS"
        } else {
            "JCEKS"
        };
        return Err(format!(
            "{shown}: a {kind} keystore, which Starling cannot read; convert it to PKCS#12 with \
             `keytool -importkeystore -srckeystore {shown} -destkeystore {shown}.p12 \
             -deststoretype PKCS12` and point the parameter at {shown}.p12 (same password)"
        ));
    };
    match expected {
        Some(expected) if expected != found => Err(format!(
            "{shown}: holds {found}, but {type_param} is {expected}"
        )),
        _ => Ok((data, found)),
    }
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Reads a certificate chain and key from a PEM file or a PKCS#12 keystore.
fn load_identity(
    path: &Path,
    password: Option<&str>,
    expected: Option<StoreType>,
) -> Result<Identity, String> {
    let shown = path.display();
    let (data, found) = read_store(path, expected, "keyStoreType")?;
    if found == StoreType::Pkcs12 {
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
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{shown}: bad certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown}: no certificate (expected PEM with a chain and a key)"
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&data)
        .map_err(|e| format!("{shown}: no private key: {e}"))?;
    Ok((certs, key))
}

/// Reads trusted CA certificates from PEM or PKCS#12.
fn load_roots(
    path: &Path,
    password: Option<&str>,
    expected: Option<StoreType>,
) -> Result<RootCertStore, String> {
    let shown = path.display();
    let (data, found) = read_store(path, expected, "trustStoreType")?;
    let certs: Vec<CertificateDer<'static>> = if found == StoreType::Pkcs12 {
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
        CertificateDer::pem_slice_iter(&data)
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
    let (certs, key) = load_identity(
        key_store,
        params.key_store_password.as_deref(),
        params.key_store_type,
    )
    .map_err(|e| format!("keyStorePath: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if params.need_client_auth {
        let trust_store = params
            .trust_store
            .as_deref()
            .ok_or_else(|| "trustStorePath: required with needClientAuth=true".to_owned())?;
        let roots = load_roots(
            trust_store,
            params.trust_store_password.as_deref(),
            params.trust_store_type,
        )
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

    /// PEM by its `-----BEGIN` lines (text before them allowed, as openssl writes "Bag
    /// Attributes"), PKCS#12 by a DER SEQUENCE starting with version 3, Java keystores by
    /// their magic; a DER certificate is not taken for PKCS#12.
    #[test]
    fn keystores_are_told_apart_by_content() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        assert_eq!(Content::of(pem.as_bytes()), Some(Content::Pem));
        let with_text = format!("Bag Attributes\n    friendlyName: x\n{pem}");
        assert_eq!(Content::of(with_text.as_bytes()), Some(Content::Pem));

        let chain = p12_keystore::PrivateKeyChain::new(
            vec![1u8; 20],
            p12_keystore::PrivateKey::from_der(&key.serialize_der()).expect("key"),
            vec![p12_keystore::Certificate::from_der(cert.der()).expect("cert")],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("k", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let p12 = store.writer("pw").write().expect("pkcs12");
        assert_eq!(Content::of(&p12), Some(Content::Pkcs12));

        assert_eq!(
            Content::of(&[0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2]),
            Some(Content::Jks)
        );
        assert_eq!(
            Content::of(&[0xCE, 0xCE, 0xCE, 0xCE, 0, 0, 0, 2]),
            Some(Content::Jceks)
        );
        assert_eq!(Content::of(cert.der()), None, "a DER certificate");
        assert_eq!(
            Content::of(&p12[..p12.len() / 2]),
            None,
            "a truncated PKCS#12"
        );
        assert_eq!(Content::of(b""), None);
        assert_eq!(Content::of(b"\x30"), None);
    }
}
