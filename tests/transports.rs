//! Transports on one port: raw MQTT, MQTT over WebSocket, MQTT over TLS and WebSocket over TLS,
//! told apart by their first bytes. Certificates are made at test time (rcgen).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::pki::Pki;
use common::raw::{self, connect_packet, publish, Raw};
use common::ws::WsRaw;
use common::*;
use starling_proto::{
    decode, encode, Limits, Packet, Protocol, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    TopicFilter,
};
use tokio::net::TcpStream;

async fn tcp(broker: &TestBroker) -> TcpStream {
    TcpStream::connect(broker.addr).await.expect("connect")
}

async fn tls(
    broker: &TestBroker,
    pki: &Pki,
    client: Option<&common::pki::Leaf>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(client)));
    let stream = tcp(broker).await;
    connector.connect(Pki::server_name(), stream).await
}

/// Raw MQTT over TLS: the raw client's byte handling on top of a TLS stream.
async fn mqtt_over_tls(broker: &TestBroker, pki: &Pki, id: &str) -> WsLessTls {
    let stream = tls(broker, pki, None).await.expect("TLS handshake");
    let mut client = WsLessTls {
        stream,
        buf: BytesMut::new(),
    };
    client.send(&connect_packet(Protocol::V5, id)).await;
    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
    client
}

/// A minimal MQTT client on a TLS stream.
struct WsLessTls {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    buf: BytesMut,
}

impl WsLessTls {
    async fn send(&mut self, packet: &Packet) {
        use tokio::io::AsyncWriteExt;
        let mut out = BytesMut::new();
        encode(packet, Protocol::V5, &mut out).expect("encode");
        self.stream.write_all(&out).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    async fn recv(&mut self) -> Option<Packet> {
        use tokio::io::AsyncReadExt;
        let limits = Limits {
            protocol: Protocol::V5,
            max_packet_size: None,
        };
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = decode(&mut self.buf, &limits).expect("decodable") {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out on TLS")
    }
}

fn tls_params(mode: &str, keystore: &std::path::Path) -> String {
    format!(";sslEnabled={mode};keyStorePath={}", keystore.display())
}

/// The seed: a normal acceptor serves raw MQTT and MQTT over WebSocket on the same port.
#[tokio::test]
async fn raw_mqtt_and_websocket_clients_share_one_port() {
    let broker = TestBroker::default_broker();
    let (mut ws, chosen) = WsRaw::open(tcp(&broker).await, "/mqtt", Some("mqtt"))
        .await
        .expect("upgrade");
    assert_eq!(chosen.as_deref(), Some("mqtt"), "the subprotocol is echoed");
    ws.connect("ws-sub").await;
    ws.subscribe("bridge/#").await;
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V5, "tcp-pub").await;
    raw.subscribe("back", QoS::AtMostOnce).await;
    raw.send_packet(&publish("bridge/1", QoS::AtMostOnce, None, "tcp to ws"))
        .await;
    assert_eq!(ws.recv_payload().await, b"tcp to ws");
    ws.send_packet(&publish("back", QoS::AtMostOnce, None, "ws to tcp"))
        .await;
    assert_eq!(&raw.recv_publish().await.payload[..], b"ws to tcp");
}

/// A real client library over WebSocket (rumqttc, subprotocol mqtt) talks to a raw TCP one.
#[tokio::test]
async fn rumqttc_over_websocket_receives_from_a_tcp_client() {
    let broker = TestBroker::default_broker();
    let url = format!("ws://127.0.0.1:{}/mqtt", broker.port());
    let mut options = rumqttc::MqttOptions::new("rumqttc-ws", url, broker.port());
    options.set_transport(rumqttc::Transport::Ws);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    client
        .subscribe("lib/ws", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    v4_until(&mut eventloop, |e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_))).then_some(())
    })
    .await;
    let (mut raw, _) = Raw::connected(broker.addr, Protocol::V311, "tcp").await;
    raw.send_packet(&publish("lib/ws", QoS::AtLeastOnce, Some(1), "hello ws"))
        .await;
    let p = v4_until(&mut eventloop, |e| match e {
        rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&p.payload[..], b"hello ws");
}

/// MQTT packets do not align with frames: one packet split over several frames, and several
/// packets in one frame, both work.
#[tokio::test]
async fn packets_split_across_frames_and_packed_in_one_frame_are_read() {
    let broker = TestBroker::default_broker();
    let (mut ws, _) = WsRaw::open(tcp(&broker).await, "/", Some("mqtt"))
        .await
        .expect("upgrade");
    let mut connect = BytesMut::new();
    encode(
        &connect_packet(Protocol::V5, "frames"),
        Protocol::V5,
        &mut connect,
    )
    .expect("encode");
    for byte in connect.iter() {
        ws.send_frame(vec![*byte]).await;
    }
    assert!(matches!(ws.recv().await, Some(Packet::ConnAck(_))));
    let mut two = BytesMut::new();
    encode(&Packet::PingReq, Protocol::V5, &mut two).expect("encode");
    encode(&Packet::PingReq, Protocol::V5, &mut two).expect("encode");
    ws.send_frame(two.to_vec()).await;
    assert_eq!(ws.recv().await, Some(Packet::PingResp));
    assert_eq!(ws.recv().await, Some(Packet::PingResp));
}

/// The subprotocol the client offered is echoed (browsers fail the handshake otherwise); a
/// client offering only foreign subprotocols is refused.
#[tokio::test]
async fn websocket_subprotocols_are_negotiated() {
    let broker = TestBroker::default_broker();
    let (_, chosen) = WsRaw::open(tcp(&broker).await, "/", Some("mqttv3.1"))
        .await
        .expect("upgrade");
    assert_eq!(chosen.as_deref(), Some("mqttv3.1"));
    let (_, chosen) = WsRaw::open(tcp(&broker).await, "/", Some("chat, mqtt"))
        .await
        .expect("upgrade");
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    let refused = WsRaw::open(tcp(&broker).await, "/", Some("chat")).await;
    assert!(refused.is_err(), "only foreign subprotocols: refused");
}

/// RFC 6455 §4.1: the client fails a handshake whose subprotocol is not one it offered, so
/// the subprotocol is matched without regard to case and echoed as the client spelled it.
#[tokio::test]
async fn a_subprotocol_is_echoed_as_the_client_spelled_it() {
    let broker = TestBroker::default_broker();
    let (mut ws, chosen) = WsRaw::open(tcp(&broker).await, "/", Some("MQTT"))
        .await
        .expect("upgrade");
    assert_eq!(chosen.as_deref(), Some("MQTT"));
    ws.connect("shouty").await;
}

/// `[websocket] path` restricts the upgrade to one path.
#[tokio::test]
async fn a_configured_websocket_path_is_enforced() {
    let broker = TestBroker::start("", "[websocket]\npath = \"/mqtt\"");
    assert!(WsRaw::open(tcp(&broker).await, "/mqtt", Some("mqtt"))
        .await
        .is_ok());
    assert!(WsRaw::open(tcp(&broker).await, "/other", Some("mqtt"))
        .await
        .is_err());
}

/// A client that sends nothing is closed after the handshake timeout.
#[tokio::test]
async fn a_silent_socket_is_closed_after_the_handshake_timeout() {
    let broker = TestBroker::start("", "handshake_timeout = 300");
    let mut raw = Raw::open(broker.addr, Protocol::V5).await;
    let started = std::time::Instant::now();
    raw.expect_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(250));
}

/// A plain MQTT socket is taken either way: with its CONNECT already there when it is accepted
/// (the accept loop hands it to the broker at once) or with the CONNECT coming later (a
/// handshake task waits for the first bytes). Both are served and talk to each other.
#[tokio::test]
async fn a_connect_sent_late_is_served_like_one_sent_at_once() {
    let broker = TestBroker::default_broker();
    let (mut early, _) = Raw::connected(broker.addr, Protocol::V5, "early").await;
    early.subscribe("late/hello", QoS::AtMostOnce).await;
    let mut late = Raw::open(broker.addr, Protocol::V5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    late.send_packet(&connect_packet(Protocol::V5, "late"))
        .await;
    match late.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    late.send_packet(&publish("late/hello", QoS::AtMostOnce, None, "hi"))
        .await;
    assert_eq!(&early.recv_publish().await.payload[..], b"hi");
}

/// A CONNECT longer than a connection's first read (512 bytes, into the stack while its read
/// buffer is released), written at once, is read whole.
#[tokio::test]
async fn a_connect_longer_than_the_first_read_is_served() {
    let broker = TestBroker::default_broker();
    let connect = raw::connect_with(Protocol::V5, "long", |c| {
        c.username = Some("u".repeat(300));
        c.password = Some(bytes::Bytes::from(vec![b'p'; 3000]));
    });
    let (mut long, ack) = Raw::connect(broker.addr, Protocol::V5, &connect).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    long.send_packet(&Packet::PingReq).await;
    assert_eq!(long.recv().await, Some(Packet::PingResp));
}

/// Garbage gets the connection closed; other clients are unaffected.
#[tokio::test]
async fn garbage_is_closed_without_affecting_others() {
    let broker = TestBroker::default_broker();
    let (mut good, _) = Raw::connected(broker.addr, Protocol::V5, "good").await;
    for junk in [
        &b"\xff\xff\xff\xff"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
    ] {
        let mut bad = Raw::open(broker.addr, Protocol::V5).await;
        bad.send(junk).await;
        bad.expect_closed().await;
    }
    good.send_packet(&Packet::PingReq).await;
    assert_eq!(good.recv().await, Some(Packet::PingResp));
}

/// `sslEnabled=true`: MQTT over TLS and WebSocket over TLS on one port, plain refused.
#[tokio::test]
async fn tls_required_serves_tls_and_wss_but_not_plain() {
    let pki = Pki::new();
    let keystore = pki.server_pem("server.pem", "broker");
    let broker = TestBroker::start(&tls_params("true", &keystore), "");
    let mut over_tls = mqtt_over_tls(&broker, &pki, "tls-sub").await;
    over_tls
        .send(&Packet::Subscribe(Subscribe {
            packet_id: common::raw::pid(1),
            properties: None,
            filters: vec![(
                TopicFilter::new("secure/#").expect("filter"),
                SubscriptionOptions::default(),
            )],
        }))
        .await;
    assert!(matches!(over_tls.recv().await, Some(Packet::SubAck(_))));

    let stream = tls(&broker, &pki, None).await.expect("TLS");
    let (mut wss, chosen) = WsRaw::open(stream, "/", Some("mqtt"))
        .await
        .expect("wss upgrade");
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    wss.connect("wss-pub").await;
    wss.send_packet(&publish("secure/x", QoS::AtMostOnce, None, "over wss"))
        .await;
    match over_tls.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"over wss"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }

    let mut plain = Raw::open(broker.addr, Protocol::V5).await;
    plain
        .send_packet(&connect_packet(Protocol::V5, "plain"))
        .await;
    plain.expect_closed().await;
}

/// Starling's own step: `sslEnabled=optional` serves TCP, TLS, WS and WSS on one port, and
/// they all exchange messages — including rumqttc over TLS.
#[tokio::test]
async fn ssl_optional_serves_all_four_transports_on_one_port() {
    let pki = Pki::new();
    let keystore = pki.server_pem("server.pem", "broker");
    let broker = TestBroker::start(&tls_params("optional", &keystore), "");

    let (mut tcp_client, _) = Raw::connected(broker.addr, Protocol::V5, "tcp").await;
    tcp_client.subscribe("all/#", QoS::AtMostOnce).await;
    let (mut ws, _) = WsRaw::open(tcp(&broker).await, "/", Some("mqtt"))
        .await
        .expect("ws");
    ws.connect("ws").await;
    let stream = tls(&broker, &pki, None).await.expect("TLS");
    let (mut wss, _) = WsRaw::open(stream, "/", Some("mqtt")).await.expect("wss");
    wss.connect("wss").await;

    let mut options = rumqttc::MqttOptions::new("rumqttc-tls", "127.0.0.1", broker.port());
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(pki.client_config(None))),
    ));
    let (lib, lib_loop) = rumqttc::AsyncClient::new(options, 10);
    let _driver = v4_drive(lib_loop);

    ws.send_packet(&publish("all/ws", QoS::AtMostOnce, None, "from ws"))
        .await;
    wss.send_packet(&publish("all/wss", QoS::AtMostOnce, None, "from wss"))
        .await;
    lib.publish("all/tls", rumqttc::QoS::AtLeastOnce, false, "from tls")
        .await
        .expect("publish");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(String::from_utf8_lossy(&tcp_client.recv_publish().await.payload).into_owned());
    }
    got.sort();
    assert_eq!(got, ["from tls", "from ws", "from wss"]);
}

/// keyStorePath may be a PKCS#12 keystore opened with keyStorePassword.
#[tokio::test]
async fn a_pkcs12_keystore_with_its_password_serves_tls() {
    let pki = Pki::new();
    let keystore = pki.server_p12("server.p12", "p12-broker", "s3cret");
    let params = format!("{};keyStorePassword=s3cret", tls_params("true", &keystore));
    let broker = TestBroker::start(&params, "");
    let _client = mqtt_over_tls(&broker, &pki, "p12").await;
}

/// A missing keystore, or a PKCS#12 with the wrong password, stops the broker at start-up
/// with an error naming the acceptor and the file.
#[test]
fn an_unreadable_keystore_is_a_start_up_error_naming_acceptor_and_file() {
    let pki = Pki::new();
    let p12 = pki.server_p12("server.p12", "x", "right");
    let cases = [
        (
            format!(
                ";sslEnabled=true;keyStorePath={}/missing.pem",
                pki.dir.path().display()
            ),
            "missing.pem",
        ),
        (
            format!(
                ";sslEnabled=true;keyStorePath={};keyStorePassword=wrong",
                p12.display()
            ),
            "server.p12",
        ),
    ];
    for (params, file) in cases {
        let mut settings = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp");
        std::io::Write::write_all(
            &mut settings,
            format!("[[acceptors]]\nname = \"secure\"\nurl = \"tcp://127.0.0.1:0?protocols=MQTT{params}\"\n").as_bytes(),
        )
        .expect("write");
        let err = starling::Settings::load_with_env(&[settings.path().to_path_buf()], None)
            .expect_err("rejected")
            .to_string();
        assert!(
            err.contains("\"secure\"") && err.contains("keyStorePath") && err.contains(file),
            "{err}"
        );
    }
}

/// needClientAuth=true: a client without a certificate from the trusted CA cannot connect; one
/// with a certificate can.
#[tokio::test]
async fn client_certificates_are_required_with_need_client_auth() {
    let pki = Pki::new();
    let keystore = pki.server_pem("server.pem", "broker");
    let ca = pki.ca_pem();
    let params = format!(
        "{};needClientAuth=true;trustStorePath={}",
        tls_params("true", &keystore),
        ca.display()
    );
    let broker = TestBroker::start(&params, "");

    let refused = async {
        let mut stream = tls(&broker, &pki, None).await?;
        // TLS 1.3 reports the missing certificate on the first read.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = BytesMut::new();
        encode(
            &connect_packet(Protocol::V5, "anon"),
            Protocol::V5,
            &mut out,
        )
        .expect("encode");
        stream.write_all(&out).await?;
        let mut buf = [0u8; 16];
        match stream.read(&mut buf).await? {
            0 => Err(std::io::Error::other("closed")),
            _ => Ok(()),
        }
    }
    .await;
    assert!(refused.is_err(), "no client certificate: refused");

    let leaf = pki.leaf("device-7");
    let stream = tls(&broker, &pki, Some(&leaf)).await.expect("mutual TLS");
    let mut client = WsLessTls {
        stream,
        buf: BytesMut::new(),
    };
    client.send(&connect_packet(Protocol::V5, "device-7")).await;
    assert!(
        matches!(client.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::SUCCESS)
    );
}

/// Reload (SIGHUP in the daemon): new handshakes get the new certificate; open connections
/// stay up.
#[tokio::test]
async fn reloading_swaps_the_certificate_without_dropping_connections() {
    let pki = Pki::new();
    let keystore = pki.server_pem("server.pem", "first");
    let broker = TestBroker::start(&tls_params("true", &keystore), "");
    let identity = |stream: &tokio_rustls::client::TlsStream<TcpStream>| {
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("cert")
            .clone();
        starling::tls::certificate_identity(&cert)
    };
    let mut old = mqtt_over_tls(&broker, &pki, "old").await;
    assert_eq!(identity(&old.stream).as_deref(), Some("first"));

    pki.server_pem("server.pem", "second");
    let (reloaded, failed) = broker.server.as_ref().expect("server").reload();
    assert_eq!((reloaded.len(), failed.len()), (1, 0), "{failed:?}");
    let fresh = tls(&broker, &pki, None).await.expect("TLS");
    assert_eq!(identity(&fresh).as_deref(), Some("second"));

    old.send(&Packet::PingReq).await;
    assert_eq!(
        old.recv().await,
        Some(Packet::PingResp),
        "the old connection is still up"
    );

    // A broken keystore on reload keeps the working certificate.
    std::fs::write(&keystore, b"not a certificate").expect("write");
    let (_, failed) = broker.server.as_ref().expect("server").reload();
    assert_eq!(failed.len(), 1);
    let still = tls(&broker, &pki, None).await.expect("TLS still works");
    assert_eq!(identity(&still).as_deref(), Some("second"));
}
