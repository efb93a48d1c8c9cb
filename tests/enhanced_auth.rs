//! MQTT 5 enhanced authentication: the seed's 0x8C for methods the broker does not offer, and
//! SCRAM-SHA-256 (with `security.scram_sha256_file`) through AUTH packets, including
//! re-authentication. The client side of SCRAM is written here, from RFC 5802.

mod common;

use std::io::Write;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use common::raw::{connect_with, Raw};
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use starling_actors::security::scram::Verifier;
use starling_proto::{Auth, Packet, Properties, Protocol, ReasonCode};

const METHOD: &str = "SCRAM-SHA-256";

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The client's half of one SCRAM exchange.
struct ScramClient {
    user: String,
    password: String,
    client_nonce: String,
    auth_message: String,
    salted: Vec<u8>,
}

impl ScramClient {
    fn new(user: &str, password: &str) -> ScramClient {
        ScramClient {
            user: user.to_owned(),
            password: password.to_owned(),
            client_nonce: "fyko+d2lbbFgONRv9qkxdawL".to_owned(),
            auth_message: String::new(),
            salted: Vec::new(),
        }
    }

    fn first(&self) -> Bytes {
        Bytes::from(format!("n,,n={},r={}", self.user, self.client_nonce))
    }

    /// client-final for the server-first challenge.
    fn final_message(&mut self, server_first: &[u8]) -> Bytes {
        let server_first = std::str::from_utf8(server_first).expect("utf8");
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for attr in server_first.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce = v;
            } else if let Some(v) = attr.strip_prefix("s=") {
                salt = B64.decode(v).expect("salt");
            } else if let Some(v) = attr.strip_prefix("i=") {
                iterations = v.parse().expect("iterations");
            }
        }
        assert!(
            nonce.starts_with(&self.client_nonce),
            "server nonce extends ours"
        );
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(self.password.as_bytes(), &salt, iterations, &mut salted);
        self.salted = salted.to_vec();
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!(
            "n={},r={},{server_first},{without_proof}",
            self.user, self.client_nonce
        );
        let signature = hmac(&stored_key, self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        Bytes::from(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server's final signature: the client authenticates the server too.
    fn verify_server(&self, server_final: &[u8]) -> bool {
        let server_key = hmac(&self.salted, b"Server Key");
        let expected = hmac(&server_key, self.auth_message.as_bytes());
        server_final == format!("v={}", B64.encode(expected)).as_bytes()
    }
}

fn auth_props(data: Bytes) -> Option<Box<Properties>> {
    Some(Box::new(Properties {
        authentication_method: Some(METHOD.to_owned()),
        authentication_data: Some(data),
        ..Properties::default()
    }))
}

/// A broker whose SCRAM file has alice / wonderland. Keeps the file alive with the broker.
fn scram_broker() -> (TestBroker, tempfile::NamedTempFile) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(
        file,
        "# test users\nalice:{}\nbob:{}",
        Verifier::new("wonderland").to_text(),
        Verifier::new("builder").to_text()
    )
    .expect("write");
    let extra = format!(
        "[security]\nscram_sha256_file = \"{}\"",
        file.path().display()
    );
    (TestBroker::start("", &extra), file)
}

fn challenge(packet: Option<Packet>) -> Bytes {
    match packet {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.reason, ReasonCode::CONTINUE_AUTHENTICATION);
            let p = a.properties.expect("properties");
            assert_eq!(
                p.authentication_method.as_deref(),
                Some(METHOD),
                "[MQTT-4.12.0-5]"
            );
            p.authentication_data.expect("challenge data")
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    }
}

/// Runs the exchange on a fresh connection; returns it and the CONNACK.
async fn scram_connect(
    broker: &TestBroker,
    user: &str,
    password: &str,
) -> (Raw, starling_proto::ConnAck, ScramClient) {
    let mut client = ScramClient::new(user, password);
    let connect = connect_with(Protocol::V5, "scram-client", |c| {
        c.properties = auth_props(client.first());
    });
    let mut raw = Raw::open(broker.addr, Protocol::V5).await;
    raw.send_packet(&connect).await;
    let server_first = challenge(raw.recv().await);
    let client_final = client.final_message(&server_first);
    raw.send_packet(&Packet::Auth(Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: auth_props(client_final),
    }))
    .await;
    match raw.recv().await {
        Some(Packet::ConnAck(ack)) => (raw, ack, client),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The seed: a method the broker does not offer gets CONNACK 0x8C and a close, even when
/// another method is configured.
#[tokio::test]
async fn an_unknown_method_gets_bad_authentication_method() {
    let (broker, _file) = scram_broker();
    let connect = connect_with(Protocol::V5, "k", |c| {
        c.properties = Some(Box::new(Properties {
            authentication_method: Some("GS2-KRB5".to_owned()),
            ..Properties::default()
        }))
    });
    let mut raw = Raw::open(broker.addr, Protocol::V5).await;
    raw.send_packet(&connect).await;
    raw.expect_connack_refusal(ReasonCode::BAD_AUTHENTICATION_METHOD)
        .await;
}

/// MQTT 5 §3.1.2.11.10: "It is a Protocol Error to include Authentication Data if there is
/// no Authentication Method": CONNACK 0x82 and a close, not a connection that ignores it.
#[tokio::test]
async fn authentication_data_without_a_method_is_a_protocol_error() {
    let broker = TestBroker::default_broker();
    let connect = connect_with(Protocol::V5, "k", |c| {
        c.properties = Some(Box::new(Properties {
            authentication_data: Some(Bytes::from_static(b"proof")),
            ..Properties::default()
        }))
    });
    let mut raw = Raw::open(broker.addr, Protocol::V5).await;
    raw.send_packet(&connect).await;
    raw.expect_connack_refusal(ReasonCode::PROTOCOL_ERROR).await;
}

/// SCRAM-SHA-256 with the right password: CONNACK 0x00 with the method and the server's
/// signature, which the client verifies; the connection then works.
#[tokio::test]
async fn scram_sha256_with_the_right_password_connects() {
    let (broker, _file) = scram_broker();
    let (mut raw, ack, client) = scram_connect(&broker, "alice", "wonderland").await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    let props = ack.properties.expect("properties");
    assert_eq!(
        props.authentication_method.as_deref(),
        Some(METHOD),
        "[MQTT-4.12.0-5]"
    );
    let server_final = props.authentication_data.expect("server-final");
    assert!(
        client.verify_server(&server_final),
        "the broker proved it knows the verifier"
    );
    raw.send_packet(&Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}

/// A wrong password or an unknown user: CONNACK 0x86 (bad user name or password), alike.
#[tokio::test]
async fn scram_sha256_with_a_wrong_password_or_unknown_user_is_refused() {
    let (broker, _file) = scram_broker();
    for (user, password) in [("alice", "looking-glass"), ("mallory", "wonderland")] {
        let (mut raw, ack, _) = scram_connect(&broker, user, password).await;
        assert_eq!(ack.code, ReasonCode::BAD_USER_NAME_OR_PASSWORD, "{user}");
        raw.expect_closed().await;
    }
}

/// Re-authenticates on a live connection as `client`: AUTH 0x19, the challenge, the proof. The
/// broker's answer to the proof is left to read.
async fn reauthenticate(raw: &mut Raw, client: &mut ScramClient) {
    raw.send_packet(&Packet::Auth(Auth {
        reason: ReasonCode::RE_AUTHENTICATE,
        properties: auth_props(client.first()),
    }))
    .await;
    let server_first = challenge(raw.recv().await);
    let client_final = client.final_message(&server_first);
    raw.send_packet(&Packet::Auth(Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: auth_props(client_final),
    }))
    .await;
}

/// Re-authentication ([MQTT-4.12.1-1]): AUTH 0x19 with the same method, a challenge, then
/// AUTH 0x00 with the server's signature; the connection stays up.
#[tokio::test]
async fn reauthentication_succeeds_on_a_live_connection() {
    let (broker, _file) = scram_broker();
    let (mut raw, ack, _) = scram_connect(&broker, "alice", "wonderland").await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    let mut again = ScramClient::new("alice", "wonderland");
    reauthenticate(&mut raw, &mut again).await;
    match raw.recv().await {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.reason, ReasonCode::SUCCESS);
            let data = a
                .properties
                .and_then(|p| p.authentication_data)
                .expect("server-final");
            assert!(again.verify_server(&data));
        }
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    raw.send_packet(&Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}

/// [MQTT-4.12.1-2] A failed re-authentication closes the connection (DISCONNECT 0x87: DISCONNECT
/// cannot carry 0x86).
#[tokio::test]
async fn a_failed_reauthentication_disconnects() {
    let (broker, _file) = scram_broker();
    let (mut raw, _, _) = scram_connect(&broker, "alice", "wonderland").await;
    let mut wrong = ScramClient::new("alice", "queen-of-hearts");
    reauthenticate(&mut raw, &mut wrong).await;
    raw.expect_disconnect(ReasonCode::NOT_AUTHORIZED).await;
}

/// Re-authentication proves the identity the connection was authorized as, or the connection
/// ends: a client connected as alice that proves bob (with bob's right password) gets
/// DISCONNECT 0x87, since what the connection and its subscriptions may do was decided for
/// alice.
#[tokio::test]
async fn reauthentication_as_another_user_disconnects() {
    let (broker, _file) = scram_broker();
    let (mut raw, ack, _) = scram_connect(&broker, "alice", "wonderland").await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    let mut bob = ScramClient::new("bob", "builder");
    reauthenticate(&mut raw, &mut bob).await;
    raw.expect_disconnect(ReasonCode::NOT_AUTHORIZED).await;
    // Bob may connect as himself.
    let (_, ack, _) = scram_connect(&broker, "bob", "builder").await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
}

/// [MQTT-4.12.1-1] Re-authentication must use the CONNECT's method; a client that connected
/// without one cannot start it: DISCONNECT 0x82.
#[tokio::test]
async fn reauthentication_without_the_connect_method_is_a_protocol_error() {
    let (broker, _file) = scram_broker();
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "plain").await;
    raw.send_packet(&Packet::Auth(Auth {
        reason: ReasonCode::RE_AUTHENTICATE,
        properties: auth_props(ScramClient::new("alice", "wonderland").first()),
    }))
    .await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// During authentication only AUTH (or DISCONNECT) may come: anything else gets CONNACK 0x82.
#[tokio::test]
async fn a_packet_other_than_auth_during_authentication_is_a_protocol_error() {
    let (broker, _file) = scram_broker();
    let client = ScramClient::new("alice", "wonderland");
    let connect = connect_with(Protocol::V5, "eager", |c| {
        c.properties = auth_props(client.first())
    });
    let mut raw = Raw::open(broker.addr, Protocol::V5).await;
    raw.send_packet(&connect).await;
    challenge(raw.recv().await);
    raw.send_packet(&Packet::PingReq).await;
    raw.expect_connack_refusal(ReasonCode::PROTOCOL_ERROR).await;
}

/// A settings file naming a broken SCRAM file is a start-up error naming the key and file.
#[test]
fn a_broken_scram_file_is_a_settings_error() {
    let mut scram = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(scram, "alice:not-a-verifier").expect("write");
    let mut settings = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    writeln!(
        settings,
        "[security]\nscram_sha256_file = \"{}\"",
        scram.path().display()
    )
    .expect("write");
    let err = starling::Settings::load_with_env(&[settings.path().to_path_buf()], None)
        .expect_err("rejected")
        .to_string();
    assert!(err.contains("security.scram_sha256_file"), "{err}");
    assert!(
        err.contains(&format!("{}:1", scram.path().display())),
        "{err}"
    );
}
