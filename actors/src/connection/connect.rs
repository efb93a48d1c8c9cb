//! The CONNECT handshake: validate, pick the client id, open the session, answer CONNACK.
//!
//! With an Authentication Method (MQTT 5 enhanced authentication) the broker first runs the
//! method's challenge/response over AUTH packets. Reading is paused from the end of
//! authentication until CONNACK is written, so nothing a client pipelines after its CONNECT is
//! handled before its session exists.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use slog::{debug, info, o, warn};
use starling_proto::{Auth, ConnAck, Connect, LastWill, Packet, Properties, Protocol, ReasonCode};

use super::{Attachment, Connection, State};
use crate::msg::{ClientLink, Detach, Message, OpenSession, SessionParams, Will};
use crate::security::{AuthStep, ConnectInfo};

/// Longest client id MQTT 3.1 allows ([MQTT 3.1, 3.1 CONNECT, Client Identifier]).
const V31_MAX_CLIENT_ID: usize = 23;

/// A client id for a client that sent none: unique in this process and across restarts.
fn assign_client_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let boot = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("starling-{boot:x}-{n}")
}

impl Connection {
    /// Handles the first CONNECT of a connection: enhanced authentication first when the
    /// client asks for it, then the session.
    pub(super) fn on_connect(&mut self, connect: Box<Connect>, ctx: &mut Context<Self>) {
        self.limits.protocol = connect.protocol;
        let props = connect.properties.as_deref();
        self.client_max_packet_size = props
            .and_then(|p| p.maximum_packet_size)
            .and_then(std::num::NonZeroU32::new);
        if props
            .is_some_and(|p| p.authentication_data.is_some() && p.authentication_method.is_none())
        {
            // MQTT 5 §3.1.2.11.10: Authentication Data without an Authentication Method is a
            // Protocol Error.
            self.refuse_with(
                ReasonCode::PROTOCOL_ERROR,
                Some("Authentication Data without an Authentication Method".to_owned()),
                ctx,
            );
            return;
        }
        if let Some(name) = props.and_then(|p| p.authentication_method.clone()) {
            // The seed: a method the broker does not offer gets 0x8C and the connection closed.
            let Some(method) = self.broker.auth_methods.get(&name).cloned() else {
                self.refuse(ReasonCode::BAD_AUTHENTICATION_METHOD, ctx);
                return;
            };
            let data = props
                .and_then(|p| p.authentication_data.clone())
                .unwrap_or_default();
            let (conversation, step) = method.start(&data);
            let auth = self.auth.get_or_default();
            auth.method = Some(name);
            auth.exchange = Some(super::AuthInProgress {
                conversation,
                connect: Some(connect),
            });
            self.state = State::Authenticating;
            self.on_auth_step(step, ctx);
            return;
        }
        self.open_session(&connect, None, ctx);
    }

    /// Acts on what the authentication method decided.
    pub(super) fn on_auth_step(&mut self, step: AuthStep, ctx: &mut Context<Self>) {
        match step {
            AuthStep::Continue(data) => {
                self.send_auth(ReasonCode::CONTINUE_AUTHENTICATION, Some(data))
            }
            AuthStep::Success { data, identity } => {
                let Some(auth) = self.auth.get_mut().and_then(|a| a.exchange.take()) else {
                    return;
                };
                info!(self.log, "authenticated"; "method" => self.auth_method(), "identity" => &identity);
                match auth.connect {
                    Some(connect) => {
                        self.auth.get_or_default().identity = Some(identity.clone());
                        self.open_session(&connect, Some((data, identity)), ctx)
                    }
                    None => {
                        let proven = self.auth.get().and_then(|a| a.identity.as_deref());
                        if proven != Some(identity.as_str()) {
                            // The connection's rights (and its session's subscriptions) were
                            // granted to the identity it connected as; another one must connect
                            // on its own.
                            warn!(self.log, "re-authentication proved another identity";
                                "connected_as" => proven, "identity" => &identity);
                            self.close(Some(ReasonCode::NOT_AUTHORIZED), ctx);
                            return;
                        }
                        // Re-authentication succeeded: AUTH 0x00 with the final data.
                        self.send_auth(ReasonCode::SUCCESS, data)
                    }
                }
            }
            AuthStep::Failure(code) => {
                let initial = self
                    .auth
                    .get_mut()
                    .and_then(|a| a.exchange.take())
                    .is_some_and(|a| a.connect.is_some());
                info!(self.log, "authentication failed"; "method" => self.auth_method(), "code" => %code);
                if initial {
                    self.refuse(code, ctx);
                } else {
                    // [MQTT-4.12.1-2]: a failed re-authentication closes the connection.
                    self.close(Some(code), ctx);
                }
            }
        }
    }

    fn send_auth(&mut self, reason: ReasonCode, data: Option<Bytes>) {
        self.send(&Packet::Auth(Auth {
            reason,
            properties: Some(Box::new(Properties {
                authentication_method: self.auth_method().map(str::to_owned),
                authentication_data: data,
                ..Properties::default()
            })),
        }));
    }

    /// Validates the client id, asks the security manager, opens the session in the session table
    /// and answers CONNACK. `auth` holds the final authentication data and the proven identity
    /// when enhanced authentication succeeded.
    fn open_session(
        &mut self,
        connect: &Connect,
        auth: Option<(Option<Bytes>, String)>,
        ctx: &mut Context<Self>,
    ) {
        let props = connect.properties.as_deref();
        let mut client_id = connect.client_id.clone();
        let mut assigned = false;
        if connect.protocol == Protocol::V31
            && (client_id.is_empty() || client_id.chars().count() > V31_MAX_CLIENT_ID)
        {
            // MQTT 3.1: 1 to 23 characters, else "identifier rejected".
            self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, ctx);
            return;
        }
        if client_id.is_empty() {
            // [MQTT-3.1.3-8]: 3.1.1 allows an empty id only with clean session.
            if connect.protocol == Protocol::V311 && !connect.clean_start {
                self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, ctx);
                return;
            }
            client_id = assign_client_id();
            assigned = connect.protocol.is_v5();
        }

        // The security manager decides who the client is, and may rewrite or refuse its id.
        let mut info = ConnectInfo::new(client_id.clone(), connect.protocol, self.peer);
        info.username = connect.username.clone();
        info.password = connect.password.clone();
        info.certificate_identity = self.auth.get().and_then(|a| a.certificate_identity.clone());
        info.enhanced_identity = auth.as_ref().map(|(_, identity)| identity.clone());
        let principal = match self.broker.security.authenticate(&mut info) {
            Ok(principal) => principal,
            Err(e) => {
                let delay = self.broker.failures.failed(self.peer.ip());
                warn!(self.log, "login refused";
                    "client_id" => info.client_id(),
                    "username" => info.username.as_deref(),
                    "reason" => %e,
                    "delay_ms" => delay.as_millis() as u64);
                // Reading stays paused while the answer waits: no password is tried at line rate.
                self.state = State::Connecting;
                let code = e.reason_code();
                ctx.run_later(delay, move |act, ctx| act.refuse(code, ctx));
                return;
            }
        };
        self.broker.failures.succeeded(self.peer.ip());
        if info.client_id() != client_id {
            info!(self.log, "client id rewritten by the security manager";
                "from" => &client_id, "to" => info.client_id());
        }
        let client_id = info.client_id().to_owned();
        let principal = Arc::new(principal);
        self.principal = Some(Arc::clone(&principal));

        self.keep_alive = self.config.effective_keep_alive(connect.keep_alive);
        if self.config.outbound_topic_aliases == super::AliasPolicy::Lru {
            let max = props.and_then(|p| p.topic_alias_maximum).unwrap_or(0);
            if max > 0 {
                *self.outbound_aliases.get_or_default() = super::aliases::OutboundAliases::new(max);
            }
        }
        self.connect_session_expiry = props.and_then(|p| p.session_expiry_interval);
        let expiry = starling_proto::lifecycle::session_expiry(
            connect.protocol,
            connect.clean_start,
            self.connect_session_expiry,
            self.config.default_session_expiry,
        );

        let client_id: Arc<str> = client_id.into();
        self.log = self.log.new(o!("client_id" => Arc::clone(&client_id)));
        self.client_id = Some(Arc::clone(&client_id));
        self.state = State::Connecting;
        let params = SessionParams {
            clean_start: connect.clean_start,
            expiry,
            will: connect.will.clone().map(will_from),
            // 3.x clients announce no Receive Maximum: the broker's cap applies.
            window: props.and_then(|p| p.receive_maximum).unwrap_or(u16::MAX),
            max_packet_size: props.and_then(|p| p.maximum_packet_size),
            inbound_maximum: self.announced_receive_maximum(),
            principal,
        };
        let open = OpenSession {
            client_id,
            params,
            link: ClientLink {
                conn_id: self.id,
                addr: ctx.address(),
                protocol: connect.protocol,
            },
        };
        let keep_alive_changed = self.keep_alive != connect.keep_alive;
        // Found or started here, on this thread; the session's reply comes straight to us.
        let sessions = &self.broker.sessions;
        let attached = sessions.table.open(sessions, open);
        actix::fut::wrap_future::<_, Self>(attached)
            .map(move |result, act, ctx| {
                if act.state != State::Connecting {
                    // Closed meanwhile (shutdown, or taken over already): the session must
                    // not stay attached to us, and learns whether our will goes out.
                    if let Ok(attached) = result {
                        attached.session.do_send(Detach {
                            conn_id: act.id,
                            publish_will: !act.clean_disconnect,
                            new_expiry: None,
                        });
                    }
                    return;
                }
                match result {
                    Ok(attached) => {
                        let mut properties = act.connack_properties(assigned, keep_alive_changed);
                        if let Some((data, _)) = auth {
                            properties.authentication_method = act.auth_method().map(str::to_owned);
                            properties.authentication_data = data;
                        }
                        let properties = if act.protocol().is_v5() && !properties.is_empty() {
                            Some(Box::new(properties))
                        } else {
                            None
                        };
                        act.attachment = Some(Attachment {
                            session: attached.session,
                            session_id: attached.session_id,
                        });
                        act.state = State::Connected;
                        act.send(&Packet::ConnAck(ConnAck {
                            session_present: attached.session_present,
                            code: ReasonCode::SUCCESS,
                            properties,
                        }));
                        // [MQTT-4.4.0-1]: unacknowledged messages are resent first, in order,
                        // then whatever the session sent while we waited.
                        for packet in attached.replay {
                            act.send_delivery(packet);
                        }
                        for packet in std::mem::take(&mut act.pending) {
                            act.send_delivery(packet);
                        }
                        info!(act.log, "client connected";
                            "protocol" => %act.protocol(),
                            "keep_alive" => act.keep_alive,
                            "session_present" => attached.session_present);
                        act.start_keep_alive();
                    }
                    Err(e) => {
                        warn!(act.log, "session actor unavailable"; "error" => %e);
                        act.refuse(ReasonCode::SERVER_UNAVAILABLE, ctx);
                    }
                }
            })
            .spawn(ctx);
    }

    /// The Receive Maximum this connection's client was told (MQTT 5 CONNACK): the acceptor's
    /// `receiveMaximum`, or 65 535 when it announces none. A 3.x CONNACK cannot announce one,
    /// so a 3.x client is held to none.
    pub(super) fn announced_receive_maximum(&self) -> u16 {
        if self.protocol().is_v5() {
            self.config.receive_maximum.unwrap_or(u16::MAX)
        } else {
            u16::MAX
        }
    }

    /// The CONNACK properties this acceptor announces (MQTT 5).
    fn connack_properties(&self, assigned: bool, keep_alive_changed: bool) -> Properties {
        let config = &self.config;
        Properties {
            receive_maximum: config.receive_maximum,
            topic_alias_maximum: config.topic_alias_maximum.filter(|&max| max > 0),
            // The acceptor's, or less where the transport carries less (WebSocket).
            maximum_packet_size: self.limits.max_packet_size,
            server_keep_alive: keep_alive_changed.then_some(self.keep_alive),
            assigned_client_identifier: if assigned {
                self.client_id.as_deref().map(str::to_owned)
            } else {
                None
            },
            ..Properties::default()
        }
    }
}

/// A will as the session keeps it: the Will Delay Interval taken out of its properties.
fn will_from(will: LastWill) -> Will {
    let mut properties = will.properties;
    let delay = properties
        .as_deref_mut()
        .and_then(|p| p.will_delay_interval.take())
        .unwrap_or(0);
    Will {
        msg: Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: properties.filter(|p| !p.is_empty()),
            origin: None,
            // Its Message Expiry Interval counts from when it is published (`Will::publish`).
            expires_at: None,
        },
        delay,
    }
}

impl Connection {
    /// Answers CONNECT with a failure code and closes ([MQTT-3.2.2-5]).
    pub(super) fn refuse(&mut self, code: ReasonCode, ctx: &mut Context<Self>) {
        self.refuse_with(code, None, ctx);
    }

    /// Like `refuse`, with a Reason String (MQTT 5; the code's name when no detail is given).
    pub(super) fn refuse_with(
        &mut self,
        code: ReasonCode,
        detail: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        debug!(self.log, "connection refused"; "code" => %code);
        let properties = self.protocol().is_v5().then(|| {
            Box::new(Properties {
                reason_string: Some(detail.unwrap_or_else(|| code.name().to_owned())),
                ..Properties::default()
            })
        });
        let mut connack = Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties,
        });
        self.fit_reason_string(&mut connack);
        self.send(&connack);
        self.close(None, ctx);
    }
}
