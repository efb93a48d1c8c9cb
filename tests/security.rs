//! Security: authentication against a Mosquitto-format password file, anonymous access,
//! Mosquitto-format ACLs with %u / %c, custom client id handling (the seed's example),
//! publish authorization failures per protocol and setting, SUBACK per filter, wills and
//! retained messages under authorization, slowed brute force, reload, and `starling passwd`.

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/security_manager.rs"]
mod example;

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{connect_with, publish, retained, Raw};
use common::*;
use starling_actors::proto::{TopicFilter, TopicName};
use starling_actors::security::{
    AuthError, ConnectInfo, DefaultSecurityManager, Principal, SecurityManager, SecurityOptions,
};
use starling_proto::{ConnAck, LastWill, Packet, Protocol, QoS, ReasonCode};

/// Files the broker reads, kept alive with it.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// A password file made with `starling passwd -b`, the way an operator would.
    fn passwords(&self, users: &[(&str, &str)]) -> std::path::PathBuf {
        let path = self.path("passwd");
        for (user, password) in users {
            let status = Command::new(env!("CARGO_BIN_EXE_starling"))
                .args(["passwd", "-b"])
                .arg(&path)
                .args([user, password])
                .status()
                .expect("starling passwd");
            assert!(status.success());
        }
        path
    }
}

fn security_toml(
    anonymous: bool,
    passwd: Option<&std::path::Path>,
    acl: Option<&std::path::Path>,
) -> String {
    let mut toml = format!("[security]\nallow_anonymous = {anonymous}\nauth_failure_delay = 10\n");
    if let Some(p) = passwd {
        toml.push_str(&format!("password_file = \"{}\"\n", p.display()));
    }
    if let Some(a) = acl {
        toml.push_str(&format!("acl_file = \"{}\"\n", a.display()));
    }
    toml
}

async fn login(
    broker: &TestBroker,
    protocol: Protocol,
    id: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> (Raw, ConnAck) {
    let connect = connect_with(protocol, id, |c| {
        c.username = user.map(str::to_owned);
        c.password = password.map(|p| Bytes::from(p.to_owned()));
    });
    Raw::connect(broker.addr, protocol, &connect).await
}

/// The right password connects; a wrong one or an unknown user gets 0x86 (3.1.1: 4).
#[tokio::test]
async fn passwords_are_checked_against_the_password_file() {
    let files = Files::new();
    let passwd = files.passwords(&[("alice", "wonderland")]);
    let broker = TestBroker::start("", &security_toml(false, Some(&passwd), None));
    let (_ok, ack) = login(
        &broker,
        Protocol::V5,
        "a",
        Some("alice"),
        Some("wonderland"),
    )
    .await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    for (user, password) in [("alice", "looking-glass"), ("mallory", "wonderland")] {
        let (mut raw, ack) = login(&broker, Protocol::V5, "a", Some(user), Some(password)).await;
        assert_eq!(ack.code, ReasonCode::BAD_USER_NAME_OR_PASSWORD, "{user}");
        raw.expect_closed().await;
        let (mut raw, ack) = login(&broker, Protocol::V311, "a", Some(user), Some(password)).await;
        assert_eq!(ack.code.to_v3_connack(), 4, "3.1.1 return code 4");
        raw.expect_closed().await;
    }
}

/// allow_anonymous=false refuses clients without a user name: 0x87 (3.1.1: 5).
#[tokio::test]
async fn anonymous_clients_are_refused_when_anonymous_access_is_off() {
    let broker = TestBroker::start("", &security_toml(false, None, None));
    let (_, ack) = login(&broker, Protocol::V5, "anon", None, None).await;
    assert_eq!(ack.code, ReasonCode::NOT_AUTHORIZED);
    let (_, ack) = login(&broker, Protocol::V311, "anon", None, None).await;
    assert_eq!(ack.code.to_v3_connack(), 5);
    let open = TestBroker::start("", &security_toml(true, None, None));
    let (_, ack) = login(&open, Protocol::V311, "anon", None, None).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
}

const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic write shared/in
topic deny alice/secret

pattern readwrite devices/%c/#
pattern write users/%u/out
";

/// ACL rules: per user, anonymous, deny wins, %c and %u patterns, default deny.
#[tokio::test]
async fn acl_rules_decide_publish_and_subscribe() {
    let files = Files::new();
    let passwd = files.passwords(&[("alice", "pw")]);
    let acl = files.write("acl", ACL);
    let broker = TestBroker::start(
        ";closeMqttConnectionOnPublishAuthorizationFailure=false",
        &security_toml(true, Some(&passwd), Some(&acl)),
    );
    let (mut alice, _) = login(&broker, Protocol::V5, "dev1", Some("alice"), Some("pw")).await;

    let filters = [
        "alice/#",
        "alice/secret",
        "public/#",
        "devices/dev1/+",
        "devices/dev2/x",
        "shared/in",
    ];
    let mut reasons = Vec::new();
    for f in filters {
        reasons.push(alice.subscribe(f, QoS::AtLeastOnce).await[0]);
    }
    assert_eq!(
        reasons,
        vec![
            ReasonCode::NOT_AUTHORIZED, // overlaps the deny on alice/secret
            ReasonCode::NOT_AUTHORIZED, // denied
            ReasonCode::NOT_AUTHORIZED, // anonymous rules are not alice's
            ReasonCode::GRANTED_QOS_1,  // %c
            ReasonCode::NOT_AUTHORIZED, // another client's device
            ReasonCode::NOT_AUTHORIZED, // write only
        ]
    );
    for (topic, allowed) in [
        ("alice/x", true),
        ("alice/secret", false),
        ("users/alice/out", true),
        ("users/bob/out", false),
        ("elsewhere", false),
    ] {
        alice
            .send_packet(&publish(topic, QoS::AtLeastOnce, Some(1), "x"))
            .await;
        match alice.recv().await {
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.reason.is_success(), allowed, "{topic}: {:?}", a.reason)
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    // An anonymous client gets the rules before the first user line (and patterns with %c).
    let (mut anon, _) = Raw::connected(broker.addr, Protocol::V5, "dev9").await;
    assert_eq!(
        anon.subscribe("public/#", QoS::AtMostOnce).await[0],
        ReasonCode::GRANTED_QOS_0
    );
    assert_eq!(
        anon.subscribe("alice/x", QoS::AtMostOnce).await[0],
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        anon.subscribe("devices/dev9/#", QoS::AtMostOnce).await[0],
        ReasonCode::GRANTED_QOS_0
    );
}

/// [MQTT-3.9.3-1] One SUBACK code per filter: refused filters get 0x80 on 3.1.1 and 0x87 on
/// MQTT 5, the others are granted.
#[tokio::test]
async fn suback_mixes_granted_and_refused_filters() {
    let files = Files::new();
    let acl = files.write("acl", "topic read ok/#\n");
    let broker = TestBroker::start("", &security_toml(true, None, Some(&acl)));
    for (protocol, refused) in [(Protocol::V311, 0x80), (Protocol::V5, 0x87)] {
        let (mut raw, _) = Raw::connected(broker.addr, protocol, "mixed").await;
        raw.send_packet(&Packet::Subscribe(starling_proto::Subscribe {
            packet_id: common::raw::pid(4),
            properties: None,
            filters: ["ok/1", "no/1", "ok/#"]
                .iter()
                .map(|f| (TopicFilter::new(f).expect("filter"), Default::default()))
                .collect(),
        }))
        .await;
        match raw.recv().await {
            Some(Packet::SubAck(ack)) => {
                let codes: Vec<u8> = ack.reasons.iter().map(|r| r.0).collect();
                assert_eq!(codes, vec![0, refused, 0], "{protocol}");
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

/// The seed's Publish Authorization Failures, MQTT 3.1.1 default: the connection is closed.
#[tokio::test]
async fn v311_unauthorized_publish_closes_the_connection_by_default() {
    let files = Files::new();
    let acl = files.write("acl", "topic readwrite allowed\n");
    let broker = TestBroker::start("", &security_toml(true, None, Some(&acl)));
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V311, "p").await;
    raw.send_packet(&publish("forbidden", QoS::AtLeastOnce, Some(1), "x"))
        .await;
    raw.expect_closed().await;
}

/// closeMqttConnectionOnPublishAuthorizationFailure=false: 3.1.1 gets a positive
/// acknowledgement and the message is dropped.
#[tokio::test]
async fn v311_unauthorized_publish_is_acknowledged_and_dropped_when_configured() {
    let files = Files::new();
    let acl = files.write("acl", "topic readwrite allowed\ntopic read forbidden\n");
    let broker = TestBroker::start(
        ";closeMqttConnectionOnPublishAuthorizationFailure=false",
        &security_toml(true, None, Some(&acl)),
    );
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "s").await;
    sub.subscribe("forbidden", QoS::AtLeastOnce).await;
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V311, "p").await;
    raw.send_packet(&publish("forbidden", QoS::AtLeastOnce, Some(1), "x"))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::PubAck(_))));
    raw.send_packet(&publish("forbidden", QoS::ExactlyOnce, Some(2), "x"))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))));
    raw.send_packet(&Packet::PubRel(starling_proto::PubResponse::success(
        common::raw::pid(2),
    )))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::PubComp(_))));
    sub.expect_silence(300).await;
}

/// MQTT 5 says it: PUBACK / PUBREC 0x87 for QoS 1 / 2; a QoS 0 publish (no acknowledgement to
/// carry the code) gets DISCONNECT 0x87 under the default close setting.
#[tokio::test]
async fn v5_unauthorized_publish_is_answered_with_0x87() {
    let files = Files::new();
    let acl = files.write("acl", "topic readwrite allowed\n");
    let broker = TestBroker::start("", &security_toml(true, None, Some(&acl)));
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "p").await;
    raw.send_packet(&publish("forbidden", QoS::AtLeastOnce, Some(1), "x"))
        .await;
    match raw.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
    raw.send_packet(&publish("forbidden", QoS::ExactlyOnce, Some(2), "x"))
        .await;
    match raw.recv().await {
        Some(Packet::PubRec(r)) => assert_eq!(r.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected PUBREC 0x87, got {other:?}"),
    }
    raw.send_packet(&publish("forbidden", QoS::AtMostOnce, None, "x"))
        .await;
    raw.expect_disconnect(ReasonCode::NOT_AUTHORIZED).await;
}

/// [MQTT-4.13.1-1] A protocol error closes the connection even in a publish the client may not
/// make: a QoS 1 PUBLISH to a forbidden topic with a Subscription Identifier ([MQTT-3.3.4-6])
/// gets DISCONNECT 0x82, not PUBACK 0x87 and an open connection.
#[tokio::test]
async fn a_protocol_error_in_an_unauthorized_publish_still_closes_the_connection() {
    let files = Files::new();
    let acl = files.write("acl", "topic readwrite allowed\n");
    let broker = TestBroker::start("", &security_toml(true, None, Some(&acl)));
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "p").await;
    let mut packet = publish("forbidden", QoS::AtLeastOnce, Some(1), "x");
    if let Packet::Publish(p) = &mut packet {
        p.properties = Some(Box::new(starling_proto::Properties {
            subscription_identifiers: vec![5],
            ..Default::default()
        }));
    }
    raw.send_packet(&packet).await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// Will messages are authorized like publishes: a will to a topic the client may not publish
/// to is not published.
#[tokio::test]
async fn a_will_to_a_forbidden_topic_is_not_published() {
    let files = Files::new();
    let acl = files.write("acl", "topic read will/#\ntopic write will/ok\n");
    let broker = TestBroker::start("", &security_toml(true, None, Some(&acl)));
    let (mut watcher, _) = Raw::connected(broker.addr, Protocol::V311, "w").await;
    watcher.subscribe("will/#", QoS::AtMostOnce).await;
    for topic in ["will/forbidden", "will/ok"] {
        let connect = connect_with(Protocol::V311, topic, |c| {
            c.will = Some(LastWill {
                topic: TopicName::new(topic).expect("topic"),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: None,
            })
        });
        let (raw, _) = Raw::connect(broker.addr, Protocol::V311, &connect).await;
        drop(raw);
    }
    assert_eq!(watcher.recv_publish().await.topic.as_str(), "will/ok");
    watcher.expect_silence(300).await;
}

/// A manager that lets everyone subscribe anywhere but read only `open/...` topics.
#[derive(Debug)]
struct ReadOpenOnly;

impl SecurityManager for ReadOpenOnly {
    fn authenticate(&self, c: &mut ConnectInfo) -> Result<Principal, AuthError> {
        Ok(Principal {
            username: c.username.clone(),
            client_id: c.client_id().to_owned(),
        })
    }
    fn authorize_publish(&self, _: &Principal, _: &TopicName) -> bool {
        true
    }
    fn authorize_subscribe(&self, _: &Principal, _: &TopicFilter) -> bool {
        true
    }
    fn authorize_receive(&self, _: &Principal, topic: &TopicName) -> bool {
        topic.as_str().starts_with("open/")
    }
}

/// Retained messages are only delivered to subscribers authorized to read their topic.
#[tokio::test]
async fn retained_messages_go_only_to_authorized_subscribers() {
    let broker = TestBroker::start_with("", "", Some(Arc::new(ReadOpenOnly)));
    let (mut publisher, _) = Raw::connected(broker.addr, Protocol::V311, "p").await;
    publisher
        .send_packet(&retained("open/a", QoS::AtMostOnce, None, "yes"))
        .await;
    publisher
        .send_packet(&retained("closed/a", QoS::AtMostOnce, None, "no"))
        .await;
    publisher.send_packet(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    let (mut sub, _) = Raw::connected(broker.addr, Protocol::V311, "s").await;
    sub.subscribe("#", QoS::AtMostOnce).await;
    assert_eq!(sub.recv_publish().await.topic.as_str(), "open/a");
    sub.expect_silence(300).await;
}

/// The seed's custom client id handling (examples/security_manager.rs): ids are prefixed with
/// the user name, visible as the session's id; ids with `/` are refused with 0x85 (3.1.1: 2).
#[tokio::test]
async fn the_example_manager_rewrites_and_rejects_client_ids() {
    let manager = example::PrefixingManager {
        inner: Arc::new(DefaultSecurityManager::allow_all()),
    };
    let broker = TestBroker::start_with("", "", Some(Arc::new(manager)));
    let (_raw, ack) = login(&broker, Protocol::V5, "sensor", Some("alice"), None).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert!(
        broker.session_info("alice/sensor").await.is_some(),
        "the session is under the rewritten id"
    );
    assert!(broker.session_info("sensor").await.is_none());

    let (mut raw, ack) = login(&broker, Protocol::V5, "a/b", Some("alice"), None).await;
    assert_eq!(ack.code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    raw.expect_closed().await;
    let (_, ack) = login(&broker, Protocol::V311, "a/b", Some("alice"), None).await;
    assert_eq!(ack.code.to_v3_connack(), 2);
}

/// Repeated failures from one address are answered more and more slowly.
#[tokio::test]
async fn repeated_login_failures_are_slowed() {
    let files = Files::new();
    let passwd = files.passwords(&[("alice", "right")]);
    let toml = security_toml(false, Some(&passwd), None)
        .replace("auth_failure_delay = 10", "auth_failure_delay = 200");
    let broker = TestBroker::start("", &toml);
    let mut took = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (_, ack) = login(&broker, Protocol::V5, "guess", Some("alice"), Some("wrong")).await;
        assert_eq!(ack.code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        took.push(started.elapsed());
    }
    assert!(took[0] >= Duration::from_millis(180), "{took:?}");
    assert!(
        took[2] >= Duration::from_millis(580),
        "third failure waits 3 x 200 ms: {took:?}"
    );
}

/// Reload (SIGHUP in the daemon) re-reads the password and ACL files.
#[tokio::test]
async fn password_and_acl_files_are_reloaded() {
    let files = Files::new();
    let passwd = files.passwords(&[("alice", "one")]);
    let acl = files.write("acl", "user alice\ntopic readwrite a\n");
    let broker = TestBroker::start("", &security_toml(false, Some(&passwd), Some(&acl)));
    let (_, ack) = login(&broker, Protocol::V5, "c", Some("bob"), Some("two")).await;
    assert_eq!(ack.code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);

    files.passwords(&[("bob", "two")]);
    files.write(
        "acl",
        "user alice\ntopic readwrite a\nuser bob\ntopic readwrite b\n",
    );
    let (reloaded, failed) = broker.server.as_ref().expect("server").reload();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        reloaded.iter().any(|r| r.contains("password")),
        "{reloaded:?}"
    );
    let (mut bob, ack) = login(&broker, Protocol::V5, "c", Some("bob"), Some("two")).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert_eq!(
        bob.subscribe("b", QoS::AtMostOnce).await[0],
        ReasonCode::GRANTED_QOS_0
    );

    // A broken file keeps the previous state.
    files.write("acl", "nonsense line\n");
    let (_, failed) = broker.server.as_ref().expect("server").reload();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        bob.subscribe("b", QoS::AtMostOnce).await[0],
        ReasonCode::GRANTED_QOS_0
    );
}

/// TLS client certificates: with use_identity_as_username the certificate's common name is the
/// user name the ACL sees.
#[tokio::test]
async fn a_client_certificate_identity_is_the_user_name() {
    use common::pki::Pki;
    let pki = Pki::new();
    let keystore = pki.server_pem("server.pem", "broker");
    let ca = pki.ca_pem();
    let files = Files::new();
    let acl = files.write("acl", "user device-7\ntopic readwrite d7/#\n");
    let params = format!(
        ";sslEnabled=true;keyStorePath={};needClientAuth=true;trustStorePath={}",
        keystore.display(),
        ca.display()
    );
    let toml = format!(
        "{}use_identity_as_username = true\n",
        security_toml(false, None, Some(&acl)).replace("use_identity_as_username = false\n", "")
    );
    let broker = TestBroker::start(&params, &toml);

    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(Some(&pki.leaf("device-7")))));
    let stream = tokio::net::TcpStream::connect(broker.addr)
        .await
        .expect("tcp");
    let mut tls = connector
        .connect(Pki::server_name(), stream)
        .await
        .expect("tls");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = bytes::BytesMut::new();
    starling_proto::encode(
        &common::raw::connect_packet(Protocol::V5, "d"),
        Protocol::V5,
        &mut out,
    )
    .expect("encode");
    starling_proto::encode(
        &Packet::Subscribe(starling_proto::Subscribe {
            packet_id: common::raw::pid(1),
            properties: None,
            filters: vec![
                (TopicFilter::new("d7/#").expect("f"), Default::default()),
                (TopicFilter::new("d8/#").expect("f"), Default::default()),
            ],
        }),
        Protocol::V5,
        &mut out,
    )
    .expect("encode");
    tls.write_all(&out).await.expect("write");
    let mut buf = bytes::BytesMut::new();
    let limits = starling_proto::Limits {
        protocol: Protocol::V5,
        max_packet_size: None,
    };
    let mut packets = Vec::new();
    while packets.len() < 2 {
        tokio::time::timeout(WAIT, tls.read_buf(&mut buf))
            .await
            .expect("read")
            .expect("read");
        while let Some(p) = starling_proto::decode(&mut buf, &limits).expect("decode") {
            packets.push(p);
        }
    }
    assert!(
        matches!(&packets[0], Packet::ConnAck(a) if a.code == ReasonCode::SUCCESS),
        "anonymous is off: the certificate logged it in"
    );
    match &packets[1] {
        Packet::SubAck(a) => assert_eq!(
            a.reasons,
            vec![ReasonCode::GRANTED_QOS_0, ReasonCode::NOT_AUTHORIZED]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// `starling passwd`: -b adds (argon2id, never plain text), -D deletes; both keep other lines.
#[test]
fn starling_passwd_adds_changes_and_deletes_users() {
    let files = Files::new();
    let path = files.write("passwd", "# operators\n");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_starling"))
            .arg("passwd")
            .args(args)
            .status()
            .expect("run")
    };
    let p = path.to_str().expect("utf8 path");
    assert!(run(&["-b", p, "alice", "secret1"]).success());
    assert!(run(&["-b", p, "bob", "secret2"]).success());
    assert!(run(&["-b", p, "alice", "secret3"]).success());
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.starts_with("# operators\n"), "{text}");
    assert!(!text.contains("secret"), "no plain text");
    assert!(
        text.lines()
            .filter(|l| l.starts_with("alice:$argon2id$"))
            .count()
            == 1,
        "{text}"
    );
    let manager = DefaultSecurityManager::new(SecurityOptions {
        password_file: Some(path.clone()),
        ..SecurityOptions::default()
    })
    .expect("loads");
    let mut info = ConnectInfo::new(
        "c".into(),
        Protocol::V5,
        "127.0.0.1:1".parse().expect("addr"),
    );
    info.username = Some("alice".into());
    info.password = Some(Bytes::from_static(b"secret3"));
    assert!(manager.authenticate(&mut info).is_ok());
    assert!(run(&["-D", p, "bob"]).success());
    assert!(!std::fs::read_to_string(&path)
        .expect("read")
        .contains("bob:"));
    assert!(
        !run(&["-D", p, "bob"]).success(),
        "deleting a missing user fails"
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    writeln!(file, "broken line").expect("write");
    assert!(DefaultSecurityManager::new(SecurityOptions {
        password_file: Some(path),
        ..SecurityOptions::default()
    })
    .is_err());
}
