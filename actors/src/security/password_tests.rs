//! Tests for the `password` module.

#![allow(clippy::unwrap_used)]

use super::*;

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A `$6$` line built the way `mosquitto_passwd -H sha512` does.
fn sha512_line(user: &str, password: &str, salt: &[u8]) -> String {
    let mut digest = Sha512::new();
    digest.update(password.as_bytes());
    digest.update(salt);
    format!("{user}:$6${}${}", b64(salt), b64(&digest.finalize()))
}

/// A `$7$` line built the way Mosquitto 2.x `mosquitto_passwd` does.
fn pbkdf2_line(user: &str, password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
    format!("{user}:$7${iterations}${}${}", b64(salt), b64(&out))
}

/// A unique path in the system temp directory; the caller removes it.
fn temp_file(tag: &str) -> PathBuf {
    let random = getrandom::u64().unwrap();
    std::env::temp_dir().join(format!(
        "starling-pw-{tag}-{}-{random:x}",
        std::process::id()
    ))
}

#[test]
fn sha512_hash_verifies_the_right_password_only() {
    let line = sha512_line("alice", "s3cret", b"twelve bytes");
    let file = PasswordFile::parse(&line, "pw").unwrap();
    assert!(file.verify("alice", b"s3cret"));
    assert!(!file.verify("alice", b"s3cret!"));
    assert!(!file.verify("alice", b""));
}

#[test]
fn pbkdf2_hash_verifies_the_right_password_only() {
    let text = format!(
        "{}\n{}\n",
        pbkdf2_line("bob", "hunter2", b"saltsaltsalt", 101),
        pbkdf2_line("carol", "other", &[7u8; 64], 1000)
    );
    let file = PasswordFile::parse(&text, "pw").unwrap();
    assert!(file.verify("bob", b"hunter2"));
    assert!(!file.verify("bob", b"hunter3"));
    assert!(file.verify("carol", b"other"));
    assert!(!file.verify("carol", b"hunter2"));
}

#[test]
fn pbkdf2_iteration_count_is_part_of_the_hash() {
    let line = pbkdf2_line("bob", "hunter2", b"saltsaltsalt", 101).replace("$7$101$", "$7$102$");
    let file = PasswordFile::parse(&line, "pw").unwrap();
    assert!(!file.verify("bob", b"hunter2"));
}

#[test]
fn argon2id_round_trip() {
    let hash = hash_password("correct horse").unwrap();
    assert!(hash.starts_with("$argon2id$v=19$"));
    let file = PasswordFile::parse(&format!("dave:{hash}"), "pw").unwrap();
    assert!(file.verify("dave", b"correct horse"));
    assert!(!file.verify("dave", b"correct horse "));
}

#[test]
fn hash_password_uses_a_fresh_salt_each_time() {
    assert_ne!(hash_password("x").unwrap(), hash_password("x").unwrap());
}

#[test]
fn unknown_user_is_refused() {
    let file = PasswordFile::parse(&sha512_line("alice", "pw", b"salt"), "pw").unwrap();
    assert!(!file.verify("mallory", b"pw"));
    assert!(!PasswordFile::parse("", "pw")
        .unwrap()
        .verify("alice", b"pw"));
}

#[test]
fn comments_and_blank_lines_are_ignored() {
    let text = format!(
        "# users\n\n   \n{}\n  # indented comment\n{}\n",
        sha512_line("alice", "a", b"salt1"),
        pbkdf2_line("bob", "b", b"salt2", 101)
    );
    let file = PasswordFile::parse(&text, "pw").unwrap();
    assert_eq!(file.len(), 2);
    assert!(file.contains("alice") && file.contains("bob"));
    assert!(!file.contains("# users"));
    assert!(!file.is_empty());
    assert!(PasswordFile::parse("# nothing\n", "pw").unwrap().is_empty());
}

#[test]
fn username_is_everything_before_the_first_colon() {
    let line = sha512_line("user name", "pw", b"salt");
    let file = PasswordFile::parse(&line, "pw").unwrap();
    assert!(file.verify("user name", b"pw"));
}

#[test]
fn malformed_lines_name_the_file_and_line() {
    let good = sha512_line("alice", "a", b"salt");
    let cases = [
        ("no colon here", "expected `username:hash`"),
        (":$6$c2FsdA==$AAAA", "empty username"),
        ("bob:plaintext", "unknown hash format"),
        ("bob:$5$salt$hash", "unknown hash format"),
        ("bob:$6$c2FsdA==", "$6$"),
        ("bob:$6$!!!$AAAA", "salt is not base64"),
        ("bob:$6$c2FsdA==$AAAA", "expected 64"),
        ("bob:$7$0$c2FsdA==$AAAA", "iteration count"),
        ("bob:$7$abc$c2FsdA==$AAAA", "iteration count"),
        ("bob:$argon2id$v=19$garbage", "argon2id"),
    ];
    for (bad, expected) in cases {
        let text = format!("# header\n{good}\n{bad}\n");
        let err = PasswordFile::parse(&text, "/etc/starling/pw").unwrap_err();
        assert!(err.starts_with("/etc/starling/pw:3: "), "{bad}: {err}");
        assert!(err.contains(expected), "{bad}: {err}");
    }
}

#[test]
fn duplicate_user_is_an_error() {
    let line = sha512_line("alice", "a", b"salt");
    let err = PasswordFile::parse(&format!("{line}\n{line}\n"), "pw").unwrap_err();
    assert!(err.starts_with("pw:2: "), "{err}");
}

#[test]
fn debug_shows_user_names_but_no_hashes() {
    let line = sha512_line("alice", "a", b"salt");
    let file = PasswordFile::parse(&line, "pw").unwrap();
    let debug = format!("{file:?}");
    assert!(debug.contains("alice"), "{debug}");
    assert!(
        !debug.contains("$6$") && !debug.contains(&b64(b"salt")),
        "{debug}"
    );
}

#[test]
fn load_names_a_missing_file() {
    let path = temp_file("missing");
    let err = PasswordFile::load(&path).unwrap_err();
    assert!(err.starts_with(&path.display().to_string()), "{err}");
}

#[test]
fn set_password_creates_the_file_owner_only() {
    let path = temp_file("create");
    set_password(&path, "alice", "first").unwrap();
    let file = PasswordFile::load(&path).unwrap();
    assert!(file.verify("alice", b"first"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    fs::remove_file(&path).unwrap();
}

#[test]
fn set_password_replaces_a_user_and_keeps_everything_else() {
    let path = temp_file("replace");
    let bob = pbkdf2_line("bob", "b", b"saltsaltsalt", 101);
    let original = format!(
        "# managed by hand\n{}\n\n{bob}\n# trailing comment\n",
        sha512_line("alice", "old", b"salt")
    );
    fs::write(&path, &original).unwrap();

    set_password(&path, "alice", "new").unwrap();
    set_password(&path, "carol", "c").unwrap();

    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "# managed by hand");
    assert!(lines[1].starts_with("alice:$argon2id$"), "{text}");
    assert_eq!(lines[2], "");
    assert_eq!(lines[3], bob);
    assert_eq!(lines[4], "# trailing comment");
    assert!(lines[5].starts_with("carol:$argon2id$"), "{text}");
    assert_eq!(lines.len(), 6);

    let file = PasswordFile::load(&path).unwrap();
    assert!(file.verify("alice", b"new"));
    assert!(!file.verify("alice", b"old"));
    assert!(file.verify("bob", b"b"));
    assert!(file.verify("carol", b"c"));
    fs::remove_file(&path).unwrap();
}

#[test]
fn set_password_rejects_bad_usernames() {
    let path = temp_file("badname");
    for name in ["", "a:b", "a\nb"] {
        let err = set_password(&path, name, "pw").unwrap_err();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
    }
    assert!(!path.exists());
}

#[test]
fn delete_user_removes_only_that_user() {
    let path = temp_file("delete");
    let alice = sha512_line("alice", "a", b"salt");
    let bob = pbkdf2_line("bob", "b", b"saltsaltsalt", 101);
    fs::write(&path, format!("# users\n{alice}\n{bob}\n")).unwrap();

    assert!(delete_user(&path, "alice").unwrap());
    assert!(!delete_user(&path, "alice").unwrap());
    assert!(!delete_user(&path, "nobody").unwrap());

    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        format!("# users\n{bob}\n")
    );
    fs::remove_file(&path).unwrap();
}

#[test]
fn delete_user_on_a_missing_file_is_false() {
    let path = temp_file("delete-missing");
    assert!(!delete_user(&path, "alice").unwrap());
    assert!(!path.exists());
}
