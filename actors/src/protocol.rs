//! Packet logging on the `protocol` logger (the seed's "Debug Logging").
//!
//! Every packet in and out is logged at TRACE from this module, so a single per-logger level
//! (`[logging.levels] protocol = "trace"`) turns it on; slog formats the fields only when the
//! record is enabled, so the cost when off is one level check. Payloads are shown as UTF-8
//! (lossy) cut at 256 characters; passwords and authentication data are never shown.

use std::fmt;

use bytes::Bytes;
use slog::{trace, Logger};
use starling_proto::{Packet, Properties};

/// The most payload characters a log line shows.
pub const PAYLOAD_LOG_CHARS: usize = 256;

/// Logs a packet read from the client.
pub(crate) fn packet_in(log: &Logger, packet: &Packet) {
    trace!(log, "packet in"; "dir" => "in", "type" => packet.kind(), "packet" => %Fields(packet));
}

/// Logs a packet written to the client.
pub(crate) fn packet_out(log: &Logger, packet: &Packet) {
    trace!(log, "packet out"; "dir" => "out", "type" => packet.kind(), "packet" => %Fields(packet));
}

/// A payload as log text: UTF-8 (lossy), at most `PAYLOAD_LOG_CHARS` characters.
#[derive(Debug)]
pub struct PayloadText<'a>(pub &'a Bytes);

impl fmt::Display for PayloadText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = String::from_utf8_lossy(self.0);
        let mut chars = text.char_indices();
        match chars.nth(PAYLOAD_LOG_CHARS) {
            Some((cut, _)) => write!(f, "{}...", &text[..cut]),
            None => f.write_str(&text),
        }
    }
}

struct Props<'a>(&'a Option<Box<Properties>>);

impl fmt::Display for Props<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(p) = self.0 else { return Ok(()) };
        let mut shown = (**p).clone();
        if shown.authentication_data.is_some() {
            shown.authentication_data = Some(Bytes::from_static(b"<hidden>"));
        }
        write!(f, " properties={shown:?}")
    }
}

/// The fields of a packet, for one log line.
struct Fields<'a>(&'a Packet);

impl fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Packet::Connect(c) => {
                write!(
                    f,
                    "protocol={} client_id={:?} clean_start={} keep_alive={} username={:?} password={}",
                    c.protocol,
                    c.client_id,
                    c.clean_start,
                    c.keep_alive,
                    c.username,
                    if c.password.is_some() { "<hidden>" } else { "none" },
                )?;
                if let Some(w) = &c.will {
                    write!(
                        f,
                        " will_topic={} will_qos={} will_retain={} will_payload={:?}{}",
                        w.topic,
                        w.qos as u8,
                        w.retain,
                        PayloadText(&w.payload).to_string(),
                        Props(&w.properties)
                    )?;
                }
                write!(f, "{}", Props(&c.properties))
            }
            Packet::Publish(p) => write!(
                f,
                "topic={} qos={} retain={} dup={} packet_id={:?} payload_len={} payload={:?}{}",
                p.topic,
                p.qos as u8,
                p.retain,
                p.dup,
                p.packet_id.map(|id| id.get()),
                p.payload.len(),
                PayloadText(&p.payload).to_string(),
                Props(&p.properties)
            ),
            Packet::ConnAck(c) => write!(
                f,
                "session_present={} code={}{}",
                c.session_present,
                c.code,
                Props(&c.properties)
            ),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                write!(
                    f,
                    "packet_id={} reason={}{}",
                    r.packet_id,
                    r.reason,
                    Props(&r.properties)
                )
            }
            Packet::Subscribe(s) => {
                write!(f, "packet_id={} filters=[", s.packet_id)?;
                for (i, (filter, o)) in s.filters.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(
                        f,
                        "{sep}{filter} qos={} nl={} rap={} rh={}",
                        o.qos as u8, o.no_local, o.retain_as_published, o.retain_handling as u8
                    )?;
                }
                write!(f, "]{}", Props(&s.properties))
            }
            Packet::SubAck(s) => {
                write!(
                    f,
                    "packet_id={} reasons={:?}{}",
                    s.packet_id,
                    s.reasons,
                    Props(&s.properties)
                )
            }
            Packet::Unsubscribe(u) => {
                write!(f, "packet_id={} filters=[", u.packet_id)?;
                for (i, filter) in u.filters.iter().enumerate() {
                    write!(f, "{}{filter}", if i == 0 { "" } else { ", " })?;
                }
                write!(f, "]{}", Props(&u.properties))
            }
            Packet::UnsubAck(u) => {
                write!(
                    f,
                    "packet_id={} reasons={:?}{}",
                    u.packet_id,
                    u.reasons,
                    Props(&u.properties)
                )
            }
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(d) => write!(f, "reason={}{}", d.reason, Props(&d.properties)),
            Packet::Auth(a) => write!(f, "reason={}{}", a.reason, Props(&a.properties)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_text_is_cut_at_256_characters() {
        let long = Bytes::from("é".repeat(300));
        let shown = PayloadText(&long).to_string();
        assert_eq!(shown.chars().count(), PAYLOAD_LOG_CHARS + 3);
        assert!(shown.ends_with("..."));
        let short = Bytes::from_static(b"hi");
        assert_eq!(PayloadText(&short).to_string(), "hi");
    }

    #[test]
    fn invalid_utf8_payload_is_shown_lossy() {
        let raw = Bytes::from_static(&[0x66, 0xFF, 0x6F]);
        assert_eq!(PayloadText(&raw).to_string(), "f\u{FFFD}o");
    }
}
