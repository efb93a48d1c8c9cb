//! Keystores are recognised by their content, not their file name: the seed's
//! `keyStorePath=/path/to/keystore;keyStorePassword=...` with a PKCS#12 file named `keystore`
//! serves TLS; `keyStoreType` / `trustStoreType` are enforced when given; a Java keystore is
//! refused with the command that converts it. Certificates are made at test time (rcgen).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::pki::Pki;
use common::*;

/// A rumqttc client over TLS, trusting the test CA, gets its CONNACK.
async fn connects_over_tls(broker: &TestBroker, pki: &Pki, id: &str) {
    connects_with(broker, pki, None, id).await;
}

/// Like `connects_over_tls`, presenting `certificate` if given.
async fn connects_with(
    broker: &TestBroker,
    pki: &Pki,
    certificate: Option<&common::pki::Leaf>,
    id: &str,
) {
    let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", broker.port());
    options.set_keep_alive(std::time::Duration::from_secs(30));
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(pki.client_config(certificate))),
    ));
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    v4_until(&mut eventloop, |e| match e {
        rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(ack)) => Some(ack.code),
        _ => None,
    })
    .await;
}

/// The settings error for an acceptor with these URL parameters.
fn start_up_error(params: &str) -> String {
    let file = settings_file(&format!(
        "[[acceptors]]\nname = \"secure\"\nurl = \"tcp://127.0.0.1:0?protocols=MQTT{params}\"\n"
    ));
    starling::Settings::load_with_env(&[file.path().to_path_buf()], None)
        .expect_err("rejected")
        .to_string()
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// The seed (Web Sockets): `tcp://host:8883?protocols=MQTT;sslEnabled=true;
/// keyStorePath=/path/to/keystore;keyStorePassword=myPass`. The keystore is a PKCS#12 file
/// named `keystore`, without an extension: it is read as PKCS#12 for what it holds.
#[tokio::test]
async fn a_pkcs12_keystore_named_keystore_serves_tls() {
    let pki = Pki::new();
    let keystore = pki.server_p12("keystore", "broker", "myPass");
    let broker = TestBroker::start(
        &format!(
            ";sslEnabled=true;keyStorePath={};keyStorePassword=myPass",
            shown(&keystore)
        ),
        "",
    );
    connects_over_tls(&broker, &pki, "seed").await;
}

/// A PEM keystore and a PKCS#12 truststore, neither with an extension, for client
/// certificates: each is read for what it holds.
#[tokio::test]
async fn pem_and_pkcs12_stores_without_extensions_are_told_apart() {
    let pki = Pki::new();
    let keystore = pki.server_pem("server-identity", "broker");
    let truststore = pki.ca_p12("client-cas", "trust");
    let broker = TestBroker::start(
        &format!(
            ";sslEnabled=true;keyStorePath={};needClientAuth=true;trustStorePath={};\
             trustStorePassword=trust",
            shown(&keystore),
            shown(&truststore)
        ),
        "",
    );
    connects_with(&broker, &pki, Some(&pki.leaf("sensor-1")), "sensor-1").await;
}

/// `keyStoreType` / `trustStoreType` are read without regard to case, as Java reads them,
/// and a store whose content is another type is a start-up error naming the parameter, the
/// file and both types.
#[tokio::test]
async fn store_types_are_enforced_when_given() {
    let pki = Pki::new();
    let keystore = pki.server_p12("keystore", "broker", "pw");
    let broker = TestBroker::start(
        &format!(
            ";sslEnabled=true;keyStorePath={};keyStorePassword=pw;keyStoreType=pkcs12",
            shown(&keystore)
        ),
        "",
    );
    connects_over_tls(&broker, &pki, "typed").await;

    let err = start_up_error(&format!(
        ";sslEnabled=true;keyStorePath={};keyStorePassword=pw;keyStoreType=PEM",
        shown(&keystore)
    ));
    assert!(
        err.contains(&format!(
            "keyStorePath: {}: holds PKCS12, but keyStoreType is PEM",
            shown(&keystore)
        )),
        "{err}"
    );
    let pem = pki.server_pem("identity", "broker");
    let err = start_up_error(&format!(
        ";sslEnabled=true;keyStorePath={};needClientAuth=true;trustStorePath={};\
         trustStoreType=PKCS12",
        shown(&pem),
        shown(&pki.ca_pem())
    ));
    assert!(
        err.contains("trustStorePath: ")
            && err.contains("ca.pem: holds PEM, but trustStoreType is PKCS12"),
        "{err}"
    );
}

/// A Java keystore (JKS, magic 0xFEEDFEED; JCEKS, 0xCECECECE) cannot be read: the error
/// names the parameter and the file and gives the `keytool` command that converts it.
#[test]
fn a_java_keystore_is_refused_with_the_command_that_converts_it() {
    let pki = Pki::new();
    for (name, magic, kind) in [
        ("broker.jks", [0xFE, 0xED, 0xFE, 0xED], "JKS"),
        ("keystore", [0xCE, 0xCE, 0xCE, 0xCE], "JCEKS"),
    ] {
        let mut data = magic.to_vec();
        data.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1]);
        let path = pki.write(name, &data);
        let err = start_up_error(&format!(
            ";sslEnabled=true;keyStorePath={};keyStorePassword=changeit",
            shown(&path)
        ));
        let file = shown(&path);
        assert!(err.contains("\"secure\""), "{err}");
        assert!(
            err.contains(&format!("keyStorePath: {file}: a {kind} keystore")),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "keytool -importkeystore -srckeystore {file} -destkeystore {file}.p12 \
                 -deststoretype PKCS12"
            )),
            "{err}"
        );
    }
}
