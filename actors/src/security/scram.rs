//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5 authentication method.
//!
//! The broker stores no passwords, only verifiers in PostgreSQL's format
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64), one
//! `user:verifier` line per user in `security.scram_sha256_file`; `starling scram-verifier`
//! makes them. Channel binding is not offered (GS2 header `n,,` or `y,,`).
//!
//! The exchange: CONNECT carries client-first (`n,,n=user,r=cnonce`); the broker answers AUTH
//! 0x18 with server-first (`r=cnonce+snonce,s=salt,i=iterations`); the client's AUTH 0x18
//! carries client-final (`c=biws,r=nonce,p=proof`); the broker checks the proof and answers with
//! server-final (`v=signature`) in CONNACK. An unknown user goes through the same steps with a
//! made-up verifier, so the answer does not reveal which user names exist.

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use starling_proto::ReasonCode;

use super::{AuthConversation, AuthMethod, AuthStep};

/// The method's name on the wire.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// Iterations used for new verifiers (RFC 7677 asks for at least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to a hash of the time and a counter (unique, if weaker).
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = format!(
            "{:?}{}",
            std::time::SystemTime::now(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let digest = Sha256::digest(seed.as_bytes());
        for (b, d) in bytes.iter_mut().zip(digest.iter().cycle()) {
            *b = *d;
        }
    }
    bytes
}

/// One user's SCRAM credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier {{ iterations: {}, .. }}", self.iterations)
    }
}

impl Verifier {
    /// Derives a verifier from a password (for `starling scram-verifier` and tests).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// A verifier with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        Verifier::from_password(password, &random_bytes::<16>(), DEFAULT_ITERATIONS)
    }

    /// PostgreSQL's text form: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn to_text(&self) -> String {
        format!(
            "{SCRAM_SHA_256}${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Verifier, String> {
        let bad =
            || "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>".to_owned();
        let rest = text
            .strip_prefix(SCRAM_SHA_256)
            .and_then(|r| r.strip_prefix('$'))
            .ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let key = |s: &str| -> Result<[u8; 32], String> {
            B64.decode(s)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| "a key is not 32 bytes of base64".to_owned())
        };
        Ok(Verifier {
            iterations: iterations
                .parse()
                .map_err(|_| "iterations is not a number".to_owned())?,
            salt: B64
                .decode(salt)
                .map_err(|_| "the salt is not base64".to_owned())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// SCRAM-SHA-256 with a fixed set of users.
#[derive(Debug)]
pub struct ScramSha256 {
    users: HashMap<String, Verifier>,
    /// Stands in for unknown users, so failures look alike.
    decoy: Verifier,
}

impl ScramSha256 {
    /// A method for these users.
    pub fn new(users: HashMap<String, Verifier>) -> ScramSha256 {
        ScramSha256 {
            users,
            decoy: Verifier::new(&B64.encode(random_bytes::<24>())),
        }
    }

    /// Loads `user:verifier` lines (blank lines and `#` comments skipped). Errors name the line.
    pub fn from_file(path: &Path) -> Result<ScramSha256, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, verifier) = line
                .split_once(':')
                .ok_or_else(|| format!("{}:{}: expected user:verifier", path.display(), n + 1))?;
            let verifier = Verifier::parse(verifier)
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
            users.insert(user.to_owned(), verifier);
        }
        Ok(ScramSha256::new(users))
    }
}

/// Where a conversation stands.
#[derive(Debug)]
enum Stage {
    /// Waiting for client-final.
    ClientFinal {
        user: String,
        known: bool,
        verifier: Verifier,
        nonce: String,
        /// client-first-bare + "," + server-first: the start of the AuthMessage.
        transcript: String,
    },
    /// Finished (successfully or not): any further step fails.
    Done,
}

/// One client's SCRAM exchange.
#[derive(Debug)]
pub struct ScramConversation {
    stage: Stage,
}

impl AuthConversation for ScramConversation {
    fn step(&mut self, data: &[u8]) -> AuthStep {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        let Stage::ClientFinal {
            user,
            known,
            verifier,
            nonce,
            transcript,
        } = stage
        else {
            return AuthStep::Failure(ReasonCode::PROTOCOL_ERROR);
        };
        let Ok(client_final) = std::str::from_utf8(data) else {
            return AuthStep::Failure(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let Some((without_proof, proof)) = client_final.rsplit_once(",p=") else {
            return AuthStep::Failure(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        let mut attrs = without_proof.split(',');
        let binding_ok = matches!(attrs.next(), Some("c=biws") | Some("c=eSws"));
        let nonce_ok = attrs.next() == Some(&*format!("r={nonce}"));
        let Ok(proof) = B64.decode(proof) else {
            return AuthStep::Failure(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        if !binding_ok || !nonce_ok || proof.len() != 32 {
            return AuthStep::Failure(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        }
        let auth_message = format!("{transcript},{without_proof}");
        let client_signature = hmac(&verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.iter())
            .map(|(p, s)| p ^ s)
            .collect();
        let computed: [u8; 32] = Sha256::digest(&client_key).into();
        // Constant-time comparison: no early exit on the first differing byte.
        let diff = computed
            .iter()
            .zip(verifier.stored_key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 || !known {
            return AuthStep::Failure(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        }
        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
        AuthStep::Success {
            data: Some(Bytes::from(format!("v={}", B64.encode(server_signature)))),
            identity: user,
        }
    }
}

/// Decodes a SCRAM saslname (`=2C` is `,`, `=3D` is `=`).
fn decode_saslname(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

impl AuthMethod for ScramSha256 {
    fn name(&self) -> &str {
        SCRAM_SHA_256
    }

    fn start(&self, data: &[u8]) -> (Box<dyn AuthConversation>, AuthStep) {
        let done = || Box::new(ScramConversation { stage: Stage::Done });
        let fail = AuthStep::Failure(ReasonCode::BAD_AUTHENTICATION_METHOD);
        let Ok(client_first) = std::str::from_utf8(data) else {
            return (done(), fail);
        };
        // gs2-header: "n,," (no channel binding) or "y,," (client could, server does not).
        let bare = match client_first
            .strip_prefix("n,,")
            .or_else(|| client_first.strip_prefix("y,,"))
        {
            Some(bare) => bare,
            None => return (done(), fail),
        };
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = decode_saslname(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                client_nonce = Some(v.to_owned());
            } else if attr.starts_with("m=") {
                // Mandatory extensions are not supported (RFC 5802 §5.1).
                return (done(), fail);
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return (done(), fail);
        };
        if client_nonce.is_empty() || client_nonce.contains(',') {
            return (done(), fail);
        }
        let (known, verifier) = match self.users.get(&user) {
            Some(v) => (true, v.clone()),
            None => (false, self.decoy.clone()),
        };
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes::<18>()));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let transcript = format!("{bare},{server_first}");
        let conversation = ScramConversation {
            stage: Stage::ClientFinal {
                user,
                known,
                verifier,
                nonce,
                transcript,
            },
        };
        (
            Box::new(conversation),
            AuthStep::Continue(Bytes::from(server_first)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's example: user "user", password "pencil".
    #[test]
    fn the_rfc_7677_example_exchange_succeeds() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let verifier = Verifier::from_password("pencil", &salt, 4096);
        let users = HashMap::from([("user".to_owned(), verifier)]);
        let method = ScramSha256::new(users);
        let (mut conversation, step) = method.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let AuthStep::Continue(server_first) = step else {
            panic!("expected a challenge, got {step:?}")
        };
        let server_first = String::from_utf8(server_first.to_vec()).expect("utf8");
        let nonce = server_first
            .strip_prefix("r=")
            .and_then(|s| s.split(',').next())
            .expect("nonce");
        assert!(nonce.starts_with("rOprNGfwEbeRWgbNEkqO"));
        assert!(server_first.ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));

        // The client's side, as RFC 5802 describes it.
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"pencil", &salt, 4096, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first},{without_proof}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let client_final = format!("{without_proof},p={}", B64.encode(proof));
        match conversation.step(client_final.as_bytes()) {
            AuthStep::Success { data, identity } => {
                assert_eq!(identity, "user");
                let server_key = hmac(&salted, b"Server Key");
                let expected = hmac(&server_key, auth_message.as_bytes());
                assert_eq!(
                    data,
                    Some(Bytes::from(format!("v={}", B64.encode(expected))))
                );
            }
            other => panic!("expected success, got {other:?}"),
        }
        // A finished conversation accepts nothing more.
        assert!(matches!(conversation.step(b"x"), AuthStep::Failure(_)));
    }

    #[test]
    fn a_wrong_proof_fails() {
        let method = ScramSha256::new(HashMap::from([("u".to_owned(), Verifier::new("right"))]));
        let (mut conversation, step) = method.start(b"n,,n=u,r=abc");
        let AuthStep::Continue(first) = step else {
            panic!("{step:?}")
        };
        let nonce = String::from_utf8_lossy(&first)
            .strip_prefix("r=")
            .and_then(|s| s.split(',').next())
            .map(str::to_owned)
            .expect("nonce");
        let bogus = format!("c=biws,r={nonce},p={}", B64.encode([0u8; 32]));
        assert_eq!(
            conversation.step(bogus.as_bytes()),
            AuthStep::Failure(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
    }

    #[test]
    fn verifiers_round_trip_through_text() {
        let v = Verifier::new("secret");
        assert_eq!(Verifier::parse(&v.to_text()), Ok(v));
        assert!(Verifier::parse("SCRAM-SHA-256$x:y$z").is_err());
        assert!(Verifier::parse("plain").is_err());
    }

    #[test]
    fn malformed_client_first_messages_fail() {
        let method = ScramSha256::new(HashMap::new());
        for bad in [
            &b"n=user,r=abc"[..],
            b"p=tls-unique,,n=u,r=a",
            b"n,,r=abc",
            b"n,,n=u",
            b"n,,m=x,n=u,r=a",
            &[0xFF],
        ] {
            let (_, step) = method.start(bad);
            assert_eq!(
                step,
                AuthStep::Failure(ReasonCode::BAD_AUTHENTICATION_METHOD),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn saslnames_are_decoded() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("bad=xx"), None);
    }
}
