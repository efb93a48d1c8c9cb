//! Mosquitto-compatible password files: reading, verifying, and editing them.
//!
//! This module owns the `security.password_file` format so that an operator can move a file
//! between Mosquitto and Starling unchanged. One `username:hash` per line; blank lines and lines
//! starting with `#` are ignored; the username is everything before the first `:`.
//!
//! Hash formats that [`PasswordFile::verify`] accepts (checked against Mosquitto's
//! `pw__digest` / `unpwd__decode_passwords`):
//!
//! - `$6$<salt>$<hash>`: SHA-512 of the password bytes followed by the salt bytes, once
//!   (`mosquitto_passwd -H sha512`). Salt and hash are standard base64; the hash is 64 bytes.
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 of the password with that salt and
//!   iteration count, 64 bytes of output (the Mosquitto 2.x default, 101 iterations).
//! - `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`: a PHC string. This is what Starling
//!   writes ([`hash_password`], [`set_password`]): Mosquitto's formats are fast hashes.
//!
//! Anything else is an error naming the file and line, so a typo does not silently lock a user
//! out. Comparisons are constant-time, an unknown user costs about as much as a known one, and
//! neither passwords nor hashes ever reach a `Debug` output or a log.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT as B64;
use base64::Engine;
use sha2::{Digest, Sha512};

/// Length of a SHA-512 digest, the only hash length Mosquitto writes for `$6$` and `$7$`.
const SHA512_LEN: usize = 64;

/// Length of the random salt [`hash_password`] draws (the PHC recommendation).
const SALT_LEN: usize = 16;

/// One user's stored hash, decoded once at load time so `verify` only computes and compares.
#[derive(Clone)]
enum StoredHash {
    /// Mosquitto `$6$`: SHA-512(password ++ salt).
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// Mosquitto `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// Starling's own argon2id PHC string, parameters and all (boxed: it is large).
    Argon2id(Box<PasswordHash>),
}

impl StoredHash {
    /// Parses the part of a line after `username:`; the error says what is wrong, without the
    /// file and line (the caller adds them).
    fn parse(text: &str) -> Result<StoredHash, String> {
        if let Some(rest) = text.strip_prefix("$6$") {
            let [salt, hash] = fields::<2>(rest).ok_or("a $6$ hash needs `$6$<salt>$<hash>`")?;
            Ok(StoredHash::Sha512 {
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            })
        } else if let Some(rest) = text.strip_prefix("$7$") {
            let [iterations, salt, hash] =
                fields::<3>(rest).ok_or("a $7$ hash needs `$7$<iterations>$<salt>$<hash>`")?;
            let iterations = iterations
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("bad $7$ iteration count `{iterations}`"))?;
            Ok(StoredHash::Pbkdf2 {
                iterations,
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            })
        } else if text.starts_with("$argon2id$") {
            let phc = PasswordHash::new(text).map_err(|e| format!("bad argon2id hash: {e}"))?;
            if phc.salt.is_none() || phc.hash.is_none() {
                return Err("bad argon2id hash: salt or hash missing".to_owned());
            }
            argon2::Params::try_from(&phc).map_err(|e| format!("bad argon2id parameters: {e}"))?;
            Ok(StoredHash::Argon2id(Box::new(phc)))
        } else {
            Err("unknown hash format (expected $6$, $7$ or $argon2id$)".to_owned())
        }
    }

    /// True when `password` hashes to this value. Always does the full computation.
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                constant_time_eq(&digest.finalize(), hash)
            }
            StoredHash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = [0u8; SHA512_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                constant_time_eq(&out, hash)
            }
            // argon2's `Output` comparison is constant-time.
            StoredHash::Argon2id(phc) => {
                Argon2::default().verify_password(password, &**phc).is_ok()
            }
        }
    }

    /// The format's name, the only thing `Debug` shows of a hash.
    fn kind(&self) -> &'static str {
        match self {
            StoredHash::Sha512 { .. } => "sha512",
            StoredHash::Pbkdf2 { .. } => "pbkdf2-sha512",
            StoredHash::Argon2id(_) => "argon2id",
        }
    }
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// Splits `a$b$c` into exactly `N` non-empty fields.
fn fields<const N: usize>(text: &str) -> Option<[&str; N]> {
    let mut out = [""; N];
    let mut parts = text.split('$');
    for slot in &mut out {
        *slot = parts.next().filter(|p| !p.is_empty())?;
    }
    parts.next().is_none().then_some(out)
}

fn decode_salt(text: &str) -> Result<Vec<u8>, String> {
    match B64.decode(text) {
        Ok(salt) if !salt.is_empty() => Ok(salt),
        _ => Err("the salt is not base64".to_owned()),
    }
}

fn decode_hash(text: &str) -> Result<Vec<u8>, String> {
    match B64.decode(text) {
        Ok(hash) if hash.len() == SHA512_LEN => Ok(hash),
        Ok(hash) => Err(format!(
            "the hash is {} bytes, expected {SHA512_LEN}",
            hash.len()
        )),
        Err(_) => Err("the hash is not base64".to_owned()),
    }
}

/// Compares without an early exit, so the time taken does not reveal where bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The username a line defines, or `None` for a blank or comment line. Shared by the parser and
/// the editors so both agree on which line belongs to whom.
fn line_user(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(line.split_once(':').unwrap_or((line, "")))
}

/// A loaded password file: user name -> stored hash.
#[derive(Clone)]
pub struct PasswordFile {
    users: BTreeMap<String, StoredHash>,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PasswordFile {
    /// Reads and parses the file at `path`; errors name the file (and line).
    pub fn load(path: &Path) -> Result<PasswordFile, String> {
        let origin = path.display().to_string();
        let text = fs::read_to_string(path).map_err(|e| format!("{origin}: cannot read: {e}"))?;
        PasswordFile::parse(&text, &origin)
    }

    /// Parses password-file text; `origin` names the file in errors (`"{origin}:{line}: ..."`).
    /// A user listed twice is an error: which line wins would otherwise be a guess.
    pub fn parse(text: &str, origin: &str) -> Result<PasswordFile, String> {
        let mut users = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let Some((username, hash)) = line_user(line) else {
                continue;
            };
            if !line.contains(':') {
                return Err(format!("{origin}:{number}: expected `username:hash`"));
            }
            if username.is_empty() {
                return Err(format!("{origin}:{number}: empty username"));
            }
            let hash = StoredHash::parse(hash)
                .map_err(|e| format!("{origin}:{number}: user `{username}`: {e}"))?;
            if users.insert(username.to_owned(), hash).is_some() {
                return Err(format!(
                    "{origin}:{number}: user `{username}` is listed more than once"
                ));
            }
        }
        Ok(PasswordFile { users })
    }

    /// True when `username` is listed and `password` matches its hash.
    ///
    /// An unknown user gets `false` only after verifying against another entry's hash (of the
    /// same format and cost as the first user's), so response time does not reveal which user
    /// names exist.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(hash) => hash.verify(password),
            None => {
                if let Some(dummy) = self.users.values().next() {
                    std::hint::black_box(dummy.verify(password));
                }
                false
            }
        }
    }

    /// True when `username` has a line in the file.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file lists no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// An argon2id PHC hash of a password, with a fresh random salt (getrandom) and argon2's default params.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| format!("cannot draw a random salt: {e}"))?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|phc| phc.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Adds or replaces `username`'s line (argon2id), creating the file if missing; keeps other lines and comments as they were; writes atomically (temp file in the same directory + rename) with mode 0600 on unix. Errors name the file.
pub fn set_password(path: &Path, username: &str, password: &str) -> Result<(), String> {
    let origin = path.display();
    if username.is_empty() {
        return Err(format!("{origin}: the username is empty"));
    }
    if username.contains([':', '\n', '\r']) {
        return Err(format!(
            "{origin}: the username may not contain `:` or a line break"
        ));
    }
    let text = read_if_exists(path)?;
    let entry = format!("{username}:{}", hash_password(password)?);
    let mut replaced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line_user(line).is_some_and(|(user, _)| user == username) {
            // The first line for the user becomes the new one; any duplicates go.
            if !replaced {
                lines.push(entry.as_str());
                replaced = true;
            }
        } else {
            lines.push(line);
        }
    }
    if !replaced {
        lines.push(&entry);
    }
    write_atomically(path, &lines)
}

/// Removes `username`'s line; Ok(false) if it was not there.
pub fn delete_user(path: &Path, username: &str) -> Result<bool, String> {
    let text = read_if_exists(path)?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| line_user(line).is_none_or(|(user, _)| user != username))
        .collect();
    if kept.len() == text.lines().count() {
        return Ok(false);
    }
    write_atomically(path, &kept)?;
    Ok(true)
}

/// The file's text, or an empty string when it does not exist yet.
fn read_if_exists(path: &Path) -> Result<String, String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
    }
}

/// Writes `lines` to a fresh owner-only temporary file next to `path`, then renames it over
/// `path`, so a reader (the broker reloading) sees the old file or the new one, never half.
fn write_atomically(path: &Path, lines: &[&str]) -> Result<(), String> {
    let origin = path.display();
    let temp = temp_path(path)?;
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temp)?;
        for line in lines {
            file.write_all(line.as_bytes())?;
            file.write_all(b"\n")?;
        }
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    result.map_err(|e| {
        // Best effort: the temporary file is ours and useless now.
        let _ = fs::remove_file(&temp);
        format!("{origin}: cannot write: {e}")
    })
}

/// `.<name>.<pid>.<random>.tmp` in the same directory as `path` (a rename is atomic only
/// within one file system).
fn temp_path(path: &Path) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file path", path.display()))?;
    let random = getrandom::u64().map_err(|e| format!("{}: {e}", path.display()))?;
    let temp_name = format!(
        ".{}.{}.{random:016x}.tmp",
        name.to_string_lossy(),
        std::process::id()
    );
    Ok(path.with_file_name(temp_name))
}

#[cfg(test)]
#[path = "password_tests.rs"]
mod tests;
