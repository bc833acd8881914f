use super::*;
use std::thread;

/// Cheap Argon2id parameters so debug-build tests stay fast.
const FAST: HashParams = HashParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};

fn pw(s: &str) -> Secret<String> {
    Secret::new(s.to_string())
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    (dir, path)
}

fn open(path: &Path) -> UserDb {
    UserDb::open_with(path, FAST).unwrap()
}

#[test]
fn user_ids() {
    for ok in [
        "joe",
        "J",
        "joe@example.com",
        "a+b_c.d-e",
        "0day",
        "_x",
        "@x",
        &"a".repeat(64),
    ] {
        let id = UserId::try_from(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(id.as_str(), ok);
        assert_eq!(id.to_string(), ok);
    }
    for (bad, why) in [
        ("", "empty"),
        (&"a".repeat(65) as &str, "longer than 64"),
        (".joe", "must not start"),
        ("-joe", "must not start"),
        ("jo e", "only letters"),
        ("joe:x", "only letters"),
        ("joe\n", "only letters"),
        ("jöe", "only letters"),
        ("joe/..", "only letters"),
    ] {
        let err = UserId::try_from(bad).unwrap_err();
        assert!(err.to_string().contains(why), "{bad:?}: {err}");
    }
    let err = UserId::try_from("a\nb").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid user name \"a\\nb\": only letters, digits and the characters . _ @ + - are allowed"
    );
    assert!("joe".parse::<UserId>().is_ok());
    assert!(UserId::try_from(String::from("x y")).is_err());
}

#[test]
fn secrets_never_print() {
    #[derive(Debug)]
    #[allow(dead_code)]
    struct Login {
        user: String,
        password: Secret<String>,
        token: Secret<Vec<u8>>,
    }
    let login = Login {
        user: "joe".into(),
        password: pw("hunter2"),
        token: Secret::new(b"tok3n".to_vec()),
    };
    for shown in [
        format!("{login:?}"),
        format!("{login:#?}"),
        format!("{}", login.password),
        format!("{:>20}", login.password),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("116, 111"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
    assert_eq!(login.password.expose(), "hunter2");
    assert_eq!(Secret::<String>::from("x").into_inner(), "x");
}

#[test]
fn missing_file_is_an_empty_database() {
    let (_dir, path) = setup();
    let db = open(&path);
    assert!(db.list().unwrap().is_empty());
    assert!(!db.exists("joe").unwrap());
    assert_eq!(db.verify("joe", &pw("x")).unwrap(), None);
    assert!(!path.exists(), "reading does not create the file");
}

#[test]
fn add_verify_and_file_format() {
    let (dir, path) = setup();
    let db = open(&path);
    let id = db.add("joe", &pw("correct horse")).unwrap();
    assert_eq!(id, "joe");
    assert_eq!(db.verify("joe", &pw("correct horse")).unwrap(), Some(id));
    assert_eq!(db.verify("joe", &pw("correct horsE")).unwrap(), None);
    assert_eq!(db.verify("joe", &pw("")).unwrap(), None);
    assert_eq!(db.verify("nobody", &pw("correct horse")).unwrap(), None);
    assert!(db.exists("joe").unwrap());

    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("joe:{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1);
    assert!(text.ends_with('\n'));
    assert!(!text.contains("correct horse"));
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(dir.path().join("passwd.lock").exists());

    let err = db.add("joe", &pw("other")).unwrap_err();
    assert!(matches!(err, UserDbError::UserExists(_)));
    assert_eq!(err.to_string(), "user joe already exists");
    assert_eq!(
        db.verify("joe", &pw("correct horse")).unwrap().unwrap(),
        "joe"
    );
}

#[test]
fn user_ids_are_case_sensitive() {
    let (_dir, path) = setup();
    let db = open(&path);
    db.add("Joe", &pw("pw1")).unwrap();
    assert!(!db.exists("joe").unwrap());
    assert_eq!(db.verify("joe", &pw("pw1")).unwrap(), None);
    db.add("joe", &pw("pw2")).unwrap();
    assert_eq!(db.verify("Joe", &pw("pw2")).unwrap(), None);
    assert_eq!(db.verify("joe", &pw("pw2")).unwrap().unwrap(), "joe");
    assert_eq!(
        db.list().unwrap(),
        vec![UserId::new("Joe").unwrap(), UserId::new("joe").unwrap()]
    );
}

#[test]
fn set_password_keeps_the_other_fields_and_lines() {
    let (_dir, path) = setup();
    let original = "\
# users
joe:{PLAIN}old:1000:1000:Joe User:/home/joe::userdb_quota_rule=*:storage=1G
ann:{PLAIN}ann's
";
    fs::write(&path, original).unwrap();
    let db = open(&path);
    assert!(db.warnings().unwrap().is_empty(), "{:?}", db.warnings());
    assert_eq!(db.verify("joe", &pw("old")).unwrap().unwrap(), "joe");
    db.set_password("joe", &pw("new secret")).unwrap();
    assert_eq!(db.verify("joe", &pw("old")).unwrap(), None);
    assert_eq!(db.verify("joe", &pw("new secret")).unwrap().unwrap(), "joe");
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], "# users");
    assert!(
        lines[1].starts_with("joe:{ARGON2ID}$argon2id$"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].ends_with(":1000:1000:Joe User:/home/joe::userdb_quota_rule=*:storage=1G"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "ann:{PLAIN}ann's");
    assert_eq!(db.verify("ann", &pw("ann's")).unwrap().unwrap(), "ann");

    let err = db.set_password("nobody", &pw("x")).unwrap_err();
    assert_eq!(err.to_string(), "no such user: nobody");
}

#[test]
fn delete_removes_user_and_duplicates() {
    let (_dir, path) = setup();
    fs::write(&path, "a:{PLAIN}1\nb:{PLAIN}2\na:{PLAIN}3\n# end\n").unwrap();
    let db = open(&path);
    let warnings = db.warnings().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("line 3: user a is listed again; the first entry counts"));
    assert_eq!(db.verify("a", &pw("1")).unwrap().unwrap(), "a");
    assert_eq!(
        db.verify("a", &pw("3")).unwrap(),
        None,
        "first entry counts"
    );
    assert_eq!(db.list().unwrap().len(), 2);
    db.delete("a").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "b:{PLAIN}2\n# end\n");
    assert!(!db.exists("a").unwrap());
    assert!(matches!(db.delete("a"), Err(UserDbError::UnknownUser(_))));
    assert!(matches!(
        db.delete("bad name"),
        Err(UserDbError::InvalidUserId(_))
    ));
}

#[test]
fn bad_input_is_rejected_and_leaves_the_file_alone() {
    let (_dir, path) = setup();
    let db = open(&path);
    db.add("joe", &pw("ok")).unwrap();
    let before = fs::read(&path).unwrap();
    for user in [
        "",
        "jo:e",
        "joe\nroot",
        "joe\r",
        ".hidden",
        "-x",
        "a b",
        &"x".repeat(65),
    ] {
        let err = db.add(user, &pw("pw")).unwrap_err();
        assert!(
            matches!(err, UserDbError::InvalidUserId(_)),
            "{user:?}: {err}"
        );
        assert!(matches!(
            db.set_password(user, &pw("pw")),
            Err(UserDbError::InvalidUserId(_))
        ));
        // Logging in with a bad name is just a failed login.
        assert_eq!(db.verify(user, &pw("pw")).unwrap(), None);
        assert!(!db.exists(user).unwrap());
    }
    let long = "x".repeat(MAX_PASSWORD_LEN + 1);
    for bad in ["", "pa:ss", "pa\nss", "pa\rss", "pa\0ss", long.as_str()] {
        let err = db.add("ann", &pw(bad)).unwrap_err();
        assert!(matches!(err, UserDbError::InvalidPassword(_)), "{err}");
        assert!(!err.to_string().contains(bad) || bad.is_empty(), "{err}");
        assert!(matches!(
            db.set_password("joe", &pw(bad)),
            Err(UserDbError::InvalidPassword(_))
        ));
    }
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(db.verify("joe", &pw(&long)).unwrap(), None);
    let max = "y".repeat(MAX_PASSWORD_LEN);
    db.set_password("joe", &pw(&max)).unwrap();
    assert!(db.verify("joe", &pw(&max)).unwrap().is_some());
}

#[test]
fn malformed_lines_are_skipped_with_a_warning_and_kept() {
    let (_dir, path) = setup();
    let original = "\
good:{PLAIN}pw
no colon here
bad user:{PLAIN}pw
.dot:{PLAIN}pw

   # indented comment
also:{PLAIN}pw2:::
crlf:{PLAIN}pw3\r
";
    fs::write(&path, original).unwrap();
    let db = open(&path);
    let warnings = db.warnings().unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].contains("line 2: expected user:password"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].contains("line 3: only letters"),
        "{}",
        warnings[1]
    );
    assert!(
        warnings[2].contains("line 4: it must not start"),
        "{}",
        warnings[2]
    );
    for w in &warnings {
        // The file's own path may hold any letters (a random temporary name once had "pw").
        let said = w.replace(&path.display().to_string(), "");
        assert!(
            !said.contains("pw") && !said.contains("PLAIN"),
            "warnings never show line content: {w}"
        );
    }
    assert_eq!(db.verify("good", &pw("pw")).unwrap().unwrap(), "good");
    assert_eq!(db.verify("also", &pw("pw2")).unwrap().unwrap(), "also");
    assert_eq!(db.verify("crlf", &pw("pw3")).unwrap().unwrap(), "crlf");
    assert_eq!(db.list().unwrap().len(), 3);

    db.add("new", &pw("x")).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let expected_prefix = original.replace("\r\n", "\n");
    assert!(text.starts_with(&expected_prefix), "{text}");
    assert!(text[expected_prefix.len()..].starts_with("new:{ARGON2ID}"));
}

#[test]
fn invalid_utf8_does_not_break_the_file() {
    let (_dir, path) = setup();
    fs::write(&path, b"good:{PLAIN}pw\nb\xffd:{PLAIN}x\n").unwrap();
    let db = open(&path);
    assert_eq!(db.verify("good", &pw("pw")).unwrap().unwrap(), "good");
    assert!(db.warnings().unwrap().len() >= 2);
}

#[test]
fn stored_passwords_in_every_scheme() {
    let (_dir, path) = setup();
    let blf = bcrypt::hash("blf pw", 4).unwrap();
    let text = format!(
        "\
sha512:{{SHA512-CRYPT}}$6$Vh7Cy2gQ0zQfTQ3B$rL3i2pldAVVtOq4dMKQDpWMISDkpN1MK3gNbgi4F/yjhrNN.dFpAQ0j9.1eSN/mXeb/johyxFGsoKhwBQFgG3.
bare512:$6$Vh7Cy2gQ0zQfTQ3B$rL3i2pldAVVtOq4dMKQDpWMISDkpN1MK3gNbgi4F/yjhrNN.dFpAQ0j9.1eSN/mXeb/johyxFGsoKhwBQFgG3.
sha256:{{SHA256-CRYPT}}$5$Vh7Cy2gQ0zQfTQ3B$YMUCgQjBP8d6SHCCMicuIswtEYaxmv0cghKlWof0a02:1001:1001::/home/x
blfext:{{BLF-CRYPT}}$2y$05$ABCDEFGHIJKLMNOPQRSTUuoRzMfTz14Et2G0HCoDlm3q91eDCVDS2
blf:{{BLF-CRYPT}}{blf}
argon2i:{{ARGON2I}}$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$sd2wE4z6YKcwaFhcyqP4TORSrNKt7aNTBs3DelB3HkQ
argon2id:$argon2id$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$H5rnCvoHJK5J3ADJ9mc9NL74Ow2lIMZ5zI+CyR256y0
plain:{{CLEARTEXT}}correct horse
md5:{{MD5-CRYPT}}$1$abcdefgh$0123456789012345678901
nohash:correct horse
empty:
emptyrest::1000:1000
"
    );
    fs::write(&path, text).unwrap();
    let db = open(&path);
    for user in [
        "sha512", "bare512", "sha256", "blfext", "argon2i", "argon2id", "plain",
    ] {
        assert_eq!(
            db.verify(user, &pw("correct horse"))
                .unwrap()
                .as_ref()
                .map(UserId::as_str),
            Some(user),
            "{user}"
        );
        assert_eq!(db.verify(user, &pw("wrong")).unwrap(), None, "{user}");
    }
    assert!(db.verify("blf", &pw("blf pw")).unwrap().is_some());

    let err = db.verify("md5", &pw("correct horse")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "user md5: unsupported password scheme {MD5-CRYPT}"
    );
    let err = db.verify("nohash", &pw("correct horse")).unwrap_err();
    assert!(matches!(
        err,
        UserDbError::StoredPassword {
            source: HashError::UnknownFormat,
            ..
        }
    ));
    assert!(!err.to_string().contains("correct horse"), "{err}");
    assert_eq!(db.verify("empty", &pw("")).unwrap(), None);
    assert_eq!(db.verify("empty", &pw("x")).unwrap(), None);
    assert_eq!(db.verify("emptyrest", &pw("x")).unwrap(), None);
}

#[test]
fn unknown_users_still_cost_a_hash() {
    let (_dir, path) = setup();
    let db = open(&path);
    assert!(db.dummy.get().is_none());
    assert_eq!(db.verify("ghost", &pw("x")).unwrap(), None);
    let dummy = db.dummy.get().unwrap().as_ref().unwrap();
    assert!(dummy.starts_with("{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$"));
}

#[test]
fn running_server_sees_changes_without_restart() {
    let (_dir, path) = setup();
    let server = open(&path);
    let admin = open(&path);
    assert_eq!(server.verify("joe", &pw("pw")).unwrap(), None);
    admin.add("joe", &pw("pw")).unwrap();
    assert_eq!(server.verify("joe", &pw("pw")).unwrap().unwrap(), "joe");
    admin.set_password("joe", &pw("pw2")).unwrap();
    assert_eq!(server.verify("joe", &pw("pw")).unwrap(), None);
    assert!(server.verify("joe", &pw("pw2")).unwrap().is_some());
    admin.delete("joe").unwrap();
    assert!(!server.exists("joe").unwrap());

    // An edit in place by hand (same inode) is noticed too.
    fs::write(&path, "ann:{PLAIN}a\n").unwrap();
    assert!(server.exists("ann").unwrap());
    {
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(b"bob:{PLAIN}a\n").unwrap();
    }
    assert!(server.exists("bob").unwrap());
    assert!(!server.exists("ann").unwrap());
    // Removing the file empties the database.
    fs::remove_file(&path).unwrap();
    assert!(server.list().unwrap().is_empty());
}

#[test]
fn concurrent_admin_commands_do_not_lose_updates() {
    let (_dir, path) = setup();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            thread::spawn(move || {
                // Each thread is its own "admin command" with its own handle.
                let db = open(&path);
                for i in 0..6 {
                    db.add(&format!("user{t}_{i}"), &pw("pw")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let db = open(&path);
    assert_eq!(db.list().unwrap().len(), 24);
    assert!(db.warnings().unwrap().is_empty());
    let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "passwd" && n != "passwd.lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn shared_handle_across_threads() {
    let (_dir, path) = setup();
    let db = Arc::new(open(&path));
    db.add("joe", &pw("pw")).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let db = Arc::clone(&db);
            thread::spawn(move || {
                for _ in 0..5 {
                    assert!(db.verify("joe", &pw("pw")).unwrap().is_some());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn keeps_mode_of_existing_file() {
    let (_dir, path) = setup();
    fs::write(&path, "").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let db = open(&path);
    db.add("joe", &pw("pw")).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn io_errors_are_reported_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("passwd");
    let db = open(&path);
    let err = db.add("joe", &pw("pw")).unwrap_err();
    assert!(matches!(err, UserDbError::Io { .. }), "{err}");
    assert!(err.to_string().contains("passwd.lock"), "{err}");
    // A directory where the file should be.
    let (_dir2, path2) = setup();
    fs::create_dir(&path2).unwrap();
    assert!(matches!(UserDb::open(&path2), Err(UserDbError::Io { .. })));
}
