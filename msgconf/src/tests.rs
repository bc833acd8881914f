use super::*;
use names::logfile;

fn set_err(name: &str, value: &str) -> String {
    let mut c = Config::new();
    c.set(name, value).unwrap_err().to_string()
}

fn set_ok(name: &str, value: &str) -> Config {
    let mut c = Config::new();
    c.set(name, value)
        .unwrap_or_else(|e| panic!("{name} = {value:?}: {e}"));
    c
}

#[test]
fn every_default_is_valid_for_its_own_type() {
    for spec in registry::PARAMS {
        let name = spec
            .name
            .replace("<name>", "primary")
            .replace("<service>", "imap");
        let canon = spec
            .validate(&name, spec.default)
            .unwrap_or_else(|e| panic!("default of {}: {e}", spec.name));
        assert_eq!(canon, spec.default, "{} default is canonical", spec.name);
        assert_eq!(lookup(&name), Some(spec));
        assert!(!spec.description.is_empty());
        assert!(!spec.description.contains('\n'));
    }
}

#[test]
fn name_constants_are_known() {
    use names::*;
    for n in [
        STORE_DEFAULT_PARTITION,
        STORE_DEFAULT_MAILBOX_QUOTA,
        STORE_DEFAULT_MESSAGE_QUOTA,
        STORE_QUOTA_ENFORCEMENT,
        STORE_QUOTA_WARN,
        MAX_MESSAGE_SIZE,
        MAX_FOLDER_MESSAGES,
        EXPUNGE_GRACE,
        DB_CACHE_SIZE,
        SNAPSHOT_INTERVAL,
        SNAPSHOT_DIRS,
        SNAPSHOT_PATH,
        SERVER_UID,
        SERVER_GID,
        LISTEN_ADDR,
        ALLOW_PLAINTEXT_AUTH,
        IMAP_ENABLE,
        IMAP_PORT,
        IMAP_ENABLE_SSL_PORT,
        IMAP_SSL_PORT,
        IMAP_SESSIONS_PER_PROCESS,
        IMAP_IDLE_TIMEOUT,
        IMAP_BANNER,
        POP_ENABLE,
        POP_PORT,
        POP_ENABLE_SSL_PORT,
        POP_SSL_PORT,
        POP_SESSIONS_PER_PROCESS,
        POP_IDLE_TIMEOUT,
        POP_BANNER,
        HTTP_ENABLE,
        HTTP_PORT,
        HTTP_ENABLE_SSL_PORT,
        HTTP_SSL_PORT,
        HTTP_SESSIONS_PER_PROCESS,
        LMTP_PORT,
        FD_RESERVE,
        IMAP_FD_PER_SESSION,
        POP_FD_PER_SESSION,
        HTTP_FD_PER_SESSION,
        HTTP_GZIP_STATIC,
        HTTP_GZIP_DYNAMIC,
        LMTP_SESSIONS_PER_PROCESS,
        LMTP_FD_PER_SESSION,
        SSL_CERT_FILE,
        SSL_KEY_FILE,
    ] {
        assert!(lookup(n).is_some(), "{n}");
    }
    assert!(lookup(&partition_path("second")).is_some());
    assert!(lookup(&logfile("lmtp", "loglevel")).is_some());
}

#[test]
fn defaults_from_the_brief() {
    let c = Config::new();
    assert_eq!(c.get_int("local.store.snapshotinterval"), 1440);
    assert_eq!(c.get_int("local.store.snapshotdirs"), 3);
    assert_eq!(c.get_str("local.store.snapshotpath"), "dbdata/snapshots");
    assert_eq!(c.get_str("store.defaultpartition"), "primary");
    assert_eq!(c.get_int("store.defaultmailboxquota"), -1);
    assert_eq!(c.get_int("store.defaultmessagequota"), -1);
    assert_eq!(c.get_int("local.store.maxmessagesize"), 52_428_800);
    assert_eq!(c.get_int("local.store.maxfoldermessages"), 0);
    assert_eq!(c.get_int("local.store.expungegrace"), 86_400);
    assert_eq!(c.get_str("local.servergid"), "mailsrv");
    assert_eq!(c.get_str("local.serveruid"), "mailsrv");
    for (name, port) in [
        ("service.imap.port", 143),
        ("service.imap.sslport", 993),
        ("service.pop.port", 110),
        ("service.pop.sslport", 995),
        ("service.http.port", 8990),
        ("service.lmtp.port", 24),
    ] {
        assert_eq!(c.get_int(name), port, "{name}");
    }
    assert_eq!(c.get_int("service.imap.sessionsperprocess"), 4000);
    assert_eq!(c.get_int("service.pop.sessionsperprocess"), 600);
    assert_eq!(c.get_int("service.http.sessionsperprocess"), 6000);
    assert_eq!(c.get_int("local.service.fdreserve"), 851);
    assert_eq!(c.get_int("local.service.imap.fdpersession"), 3);
    assert_eq!(c.get_int("local.service.pop.fdpersession"), 3);
    assert_eq!(c.get_int("local.service.http.fdpersession"), 2);
    assert!(c.get_bool("local.service.http.gzip.static"));
    assert!(c.get_bool("local.service.http.gzip.dynamic"));
    assert!(!c.get_bool("service.allowplaintextauth"));
    for svc in ["imap", "pop", "http", "lmtp", "default"] {
        assert_eq!(c.get_int(&logfile(svc, "maxlogfilesize")), 2_097_152);
        assert_eq!(c.get_int(&logfile(svc, "rollovertime")), 86_400);
        assert_eq!(c.get_int(&logfile(svc, "maxlogfiles")), 10);
        assert_eq!(c.get_str(&logfile(svc, "loglevel")), "Notice");
    }
    assert_eq!(c.get_int("local.store.dbcachesize"), 0);
}

#[test]
fn snapshotinterval_range_edges() {
    assert_eq!(
        set_err("local.store.snapshotinterval", "0"),
        "local.store.snapshotinterval: value 0 is out of range (1 to 46080)"
    );
    assert_eq!(
        set_ok("local.store.snapshotinterval", "1").get_int("local.store.snapshotinterval"),
        1
    );
    assert_eq!(
        set_ok("local.store.snapshotinterval", "46080").get_int("local.store.snapshotinterval"),
        46080
    );
    assert_eq!(
        set_err("local.store.snapshotinterval", "46081"),
        "local.store.snapshotinterval: value 46081 is out of range (1 to 46080)"
    );
}

#[test]
fn snapshotdirs_range_edges() {
    let n = "local.store.snapshotdirs";
    assert_eq!(
        set_err(n, "1"),
        format!("{n}: value 1 is out of range (2 to 367)")
    );
    assert_eq!(set_ok(n, "2").get_int(n), 2);
    assert_eq!(set_ok(n, "367").get_int(n), 367);
    assert_eq!(
        set_err(n, "368"),
        format!("{n}: value 368 is out of range (2 to 367)")
    );
}

#[test]
fn non_numbers_are_refused() {
    let n = "local.store.snapshotinterval";
    for bad in [
        "abc", "", " ", "1.5", "0x10", "1e3", "12abc", "--1", "+", "1 440", "１２",
    ] {
        let mut c = Config::new();
        let err = c.set(n, bad).unwrap_err();
        assert!(
            matches!(err, ConfigError::NotAnInteger { .. }),
            "{bad:?}: {err}"
        );
        assert!(
            err.to_string()
                .contains("is not a whole number (expected 1 to 46080)"),
            "{err}"
        );
    }
    // Huge numbers are numbers, just out of range.
    let err = set_err(n, "99999999999999999999999");
    assert_eq!(
        err,
        format!("{n}: value 99999999999999999999999 is out of range (1 to 46080)")
    );
    assert_eq!(
        set_err(n, "-5"),
        format!("{n}: value -5 is out of range (1 to 46080)")
    );
}

#[test]
fn integers_are_stored_canonically() {
    let n = "local.store.snapshotinterval";
    let c = set_ok(n, " +0060 ");
    assert_eq!(c.get(n).unwrap(), "60");
    assert_eq!(c.render(), format!("{n} = 60\n"));
}

#[test]
fn signed_and_large_ranges() {
    let q = "store.defaultmailboxquota";
    assert_eq!(set_ok(q, "-1").get_int(q), -1);
    assert_eq!(set_ok(q, "0").get_int(q), 0);
    assert_eq!(set_ok(q, "9223372036854775807").get_int(q), i64::MAX);
    assert!(set_err(q, "-2").contains("out of range (-1 to 9223372036854775807)"));
    let m = "local.store.maxmessagesize";
    assert!(set_err(m, "0").contains("out of range (1 to 1099511627776)"));
    assert_eq!(set_ok(m, "1099511627776").get_int(m), 1 << 40);
    assert!(set_err(m, "1099511627777").contains("out of range"));
    let g = "local.store.expungegrace";
    assert_eq!(set_ok(g, "0").get_int(g), 0);
    assert_eq!(set_ok(g, "31536000").get_int(g), 31_536_000);
    assert!(set_err(g, "31536001").contains("out of range (0 to 31536000)"));
    let s = "service.imap.sessionsperprocess";
    assert!(set_err(s, "0").contains("out of range (1 to 1000000)"));
    assert_eq!(set_ok(s, "1000000").get_int(s), 1_000_000);
    assert!(set_err(s, "1000001").contains("out of range"));
}

#[test]
fn booleans_are_0_or_1_only() {
    let n = "service.allowplaintextauth";
    assert!(set_ok(n, "1").get_bool(n));
    assert!(!set_ok(n, "0").get_bool(n));
    for bad in [
        "2", "-1", "yes", "no", "true", "false", "on", "", "01", "1.0",
    ] {
        assert_eq!(
            set_err(n, bad),
            format!("{n}: value {bad:?} is not a boolean (expected 0 or 1)"),
        );
    }
}

#[test]
fn ports() {
    let n = "service.imap.port";
    assert!(set_err(n, "0").contains("value 0 is out of range (1 to 65535)"));
    assert_eq!(set_ok(n, "1").get_int(n), 1);
    assert_eq!(set_ok(n, "65535").get_int(n), 65535);
    assert!(set_err(n, "65536").contains("out of range (1 to 65535)"));
    assert!(set_err(n, "imap").contains("not a whole number"));
}

#[test]
fn enums_match_case_insensitively_and_store_canonical_spelling() {
    let n = "logfile.imap.loglevel";
    let c = set_ok(n, "debug");
    assert_eq!(c.get_str(n), "Debug");
    for w in LOG_LEVELS {
        assert_eq!(set_ok(n, &w.to_uppercase()).get_str(n), *w);
    }
    assert_eq!(
        set_err(n, "Verbose"),
        format!(
            "{n}: value \"Verbose\" is not valid (expected one of Nolog, Critical, Error, Warning, Notice, Information, Debug)"
        )
    );
}

#[test]
fn strings_paths_and_addresses() {
    assert!(set_err("local.serveruid", "").contains("expected a non-empty string"));
    assert_eq!(
        set_ok("local.serveruid", "mail").get_str("local.serveruid"),
        "mail"
    );
    assert!(set_err("local.store.snapshotpath", "").contains("non-empty path"));
    assert!(set_err("service.imap.banner", "two\nlines").contains("control characters"));
    assert_eq!(
        set_ok("service.imap.banner", "").get_str("service.imap.banner"),
        ""
    );
    let a = "service.listenaddr";
    assert_eq!(set_ok(a, "127.0.0.1").get_str(a), "127.0.0.1");
    assert_eq!(set_ok(a, "::1").get_str(a), "::1");
    assert_eq!(set_ok(a, "").get_str(a), "");
    assert!(set_err(a, "localhost").contains("expected an IP address"));
    assert!(set_err("store.defaultpartition", "Big Disk").contains("partition name"));
}

#[test]
fn get_path_resolves_against_base() {
    let n = "local.store.snapshotpath";
    let c = Config::new();
    assert_eq!(
        c.get_path(n, "/var/mail/store"),
        PathBuf::from("/var/mail/store/dbdata/snapshots")
    );
    let c = set_ok(n, "/backup/snaps");
    assert_eq!(
        c.get_path(n, "/var/mail/store"),
        PathBuf::from("/backup/snaps")
    );
    let c = Config::new();
    assert_eq!(
        c.get_path(
            "store.partition.primary.path",
            "/data/store/partition/primary"
        ),
        PathBuf::from("/data/store/partition/primary")
    );
}

#[test]
#[should_panic(expected = "not a known parameter")]
fn typed_getter_on_unknown_name_is_a_bug() {
    Config::new().get_int("no.such.thing");
}

#[test]
#[should_panic(expected = "not integer")]
fn typed_getter_on_wrong_type_is_a_bug() {
    Config::new().get_int("local.serveruid");
}

#[test]
fn load_missing_file_gives_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(dir.path().join("msg.conf")).unwrap();
    assert_eq!(c, Config::new());
    assert!(c.warnings().is_empty());
    assert_eq!(c.get_int("service.imap.port"), 143);
}

#[test]
fn load_errors_name_file_line_parameter_value_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("msg.conf");
    fs::write(&path, "# store\nlocal.store.snapshotinterval = 0\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: line 2: ", path.display())),
        "{msg}"
    );
    assert!(
        msg.ends_with("local.store.snapshotinterval: value 0 is out of range (1 to 46080)"),
        "{msg}"
    );
    assert!(matches!(
        err.root(),
        ConfigError::OutOfRange {
            min: 1,
            max: 46080,
            ..
        }
    ));

    fs::write(&path, "service.allowplaintextauth = yes\n").unwrap();
    let msg = Config::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains(
            "line 1: service.allowplaintextauth: value \"yes\" is not a boolean (expected 0 or 1)"
        ),
        "{msg}"
    );

    fs::write(&path, "service.imap.port 143\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 1, .. }), "{err}");
    assert!(err.to_string().contains("expected `name = value`"));

    fs::write(&path, " = 143\n").unwrap();
    assert!(matches!(
        Config::load(&path),
        Err(ConfigError::Syntax { .. })
    ));
    fs::write(&path, "bad name = 143\n").unwrap();
    assert!(matches!(
        Config::load(&path),
        Err(ConfigError::Syntax { .. })
    ));
}

#[test]
fn load_reads_case_insensitive_names_quotes_and_crlf() {
    let c = Config::parse(
        "Service.IMAP.Port = \"1143\"\r\n  local.store.snapshotdirs=7  \r\nservice.imap.banner = \"\"\n",
    )
    .unwrap();
    assert_eq!(c.get_int("service.imap.port"), 1143);
    assert_eq!(c.get_int("SERVICE.imap.PORT"), 1143);
    assert_eq!(c.get_int("local.store.snapshotdirs"), 7);
    assert_eq!(c.get_str("service.imap.banner"), "");
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

const SAMPLE: &str = "\
# msg.conf written by hand
#   with an indented comment

service.imap.port = 143
# the store
local.store.snapshotinterval=\"60\"
local.site.custom = anything goes here
Service.Pop.Port = 110
";

#[test]
fn round_trip_preserves_comments_layout_and_unknown_lines() {
    let c = Config::parse(SAMPLE).unwrap();
    assert_eq!(c.render(), SAMPLE, "unchanged config renders byte for byte");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("msg.conf");
    let mut c = c;
    c.set("local.store.snapshotinterval", "120").unwrap();
    c.set("service.http.port", "80").unwrap();
    c.save(&path).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "\
# msg.conf written by hand
#   with an indented comment

service.imap.port = 143
# the store
local.store.snapshotinterval = 120
local.site.custom = anything goes here
Service.Pop.Port = 110
service.http.port = 80
"
    );
    let back = Config::load(&path).unwrap();
    assert_eq!(back.get_int("local.store.snapshotinterval"), 120);
    assert_eq!(back.get_int("service.http.port"), 80);
    assert_eq!(back.get("local.site.custom").unwrap(), "anything goes here");
    assert_eq!(back.render(), text);
}

#[test]
fn save_is_atomic_and_keeps_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("msg.conf");
    Config::new().save(&path).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    set_ok("service.imap.port", "1143").save(&path).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "msg.conf")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A directory that does not exist is an I/O error, not a panic.
    let err = Config::new()
        .save(dir.path().join("missing/msg.conf"))
        .unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err}");
}

#[test]
fn unknown_names_are_kept_and_reported() {
    let c = Config::parse("local.site.custom = 1\nservice.imap.prot = 144\n").unwrap();
    assert_eq!(
        c.warnings(),
        &[
            ConfigWarning::UnknownParameter {
                name: "local.site.custom".into(),
                line: 1
            },
            ConfigWarning::UnknownParameter {
                name: "service.imap.prot".into(),
                line: 2
            },
        ]
    );
    assert_eq!(
        c.warnings()[1].to_string(),
        "line 2: unknown parameter service.imap.prot (kept, but not used)"
    );
    assert_eq!(c.get("service.imap.prot").unwrap(), "144");
    assert!(c.list().iter().all(|(n, _, _)| n != "service.imap.prot"));
    let mut c = c;
    let err = c.set("service.imap.prot", "144").unwrap_err();
    assert_eq!(err.to_string(), "service.imap.prot: unknown parameter");
    assert!(matches!(
        Config::new().get("no.such"),
        Err(ConfigError::UnknownParameter { .. })
    ));
    assert!(matches!(
        Config::new().set("bad name", "1"),
        Err(ConfigError::InvalidName { .. })
    ));
    assert!(c.unset("service.imap.prot"));
    assert_eq!(c.warnings().len(), 1);
    assert_eq!(c.render(), "local.site.custom = 1\n");
}

#[test]
fn duplicates_last_wins_and_set_collapses_them() {
    let mut c = Config::parse("service.imap.port = 1\n# keep\nservice.imap.port = 2\n").unwrap();
    assert_eq!(c.get_int("service.imap.port"), 2);
    assert_eq!(
        c.warnings(),
        &[ConfigWarning::Duplicate {
            name: "service.imap.port".into(),
            line: 3,
            ignored_line: 1
        }]
    );
    c.set("service.imap.port", "3").unwrap();
    assert_eq!(c.render(), "# keep\nservice.imap.port = 3\n");
    assert!(c.warnings().is_empty());
}

#[test]
fn unset_reverts_to_default() {
    let mut c = Config::parse("# x\nservice.imap.port = 1\nservice.imap.port = 2\n").unwrap();
    assert!(c.unset("SERVICE.IMAP.PORT"));
    assert_eq!(c.get_int("service.imap.port"), 143);
    assert!(!c.unset("service.imap.port"));
    assert_eq!(c.render(), "# x\n");
}

#[test]
fn partition_family() {
    let c = Config::new();
    assert_eq!(c.partitions(), vec![("primary".to_string(), None)]);

    let mut c = Config::parse(
        "store.partition.zeta.path = /disk2/zeta\n\
         store.partition.primary.path = /disk1/primary\n\
         store.partition.alpha_1.path =\n",
    )
    .unwrap();
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    assert_eq!(
        c.partitions(),
        vec![
            ("primary".to_string(), Some(PathBuf::from("/disk1/primary"))),
            ("alpha_1".to_string(), None),
            ("zeta".to_string(), Some(PathBuf::from("/disk2/zeta"))),
        ]
    );
    c.set("store.partition.new-disk.path", "/disk3").unwrap();
    assert_eq!(c.partitions().len(), 4);
    // Names outside [a-z0-9_-]{1,32} are not partitions.
    let long = "a".repeat(33);
    for bad in [long.as_str(), "", "has space", "dot.ted", "ünï"] {
        let name = format!("store.partition.{bad}.path");
        assert!(lookup(&name).is_none(), "{name}");
        assert!(c.set(&name, "/x").is_err(), "{name}");
    }
    let ok32 = "a".repeat(32);
    c.set(&format!("store.partition.{ok32}.path"), "/y")
        .unwrap();
    // Upper case in the file is folded like any name.
    let c = Config::parse("STORE.PARTITION.Second.PATH = /s\n").unwrap();
    assert_eq!(
        c.partitions()[1],
        ("second".to_string(), Some(PathBuf::from("/s")))
    );
}

#[test]
fn default_partition_must_be_defined() {
    let c = Config::parse("store.defaultpartition = second\n").unwrap();
    assert_eq!(
        c.warnings(),
        &[ConfigWarning::UndefinedDefaultPartition {
            name: "second".into()
        }]
    );
    let mut c = c;
    c.set("store.partition.second.path", "/disk2").unwrap();
    assert!(c.warnings().is_empty());
}

#[test]
fn list_shows_every_parameter_with_default_flag() {
    let c = Config::parse("service.imap.port = 1143\nstore.partition.b.path = /b\n").unwrap();
    let list = c.list();
    let find = |n: &str| list.iter().find(|(name, _, _)| name == n).cloned();
    assert_eq!(
        find("service.imap.port"),
        Some(("service.imap.port".into(), "1143".into(), false))
    );
    assert_eq!(
        find("service.pop.port"),
        Some(("service.pop.port".into(), "110".into(), true))
    );
    assert_eq!(
        find("store.partition.primary.path"),
        Some(("store.partition.primary.path".into(), "".into(), true))
    );
    assert_eq!(
        find("store.partition.b.path"),
        Some(("store.partition.b.path".into(), "/b".into(), false))
    );
    for svc in LOG_SERVICES {
        assert!(find(&logfile(svc, "loglevel")).is_some());
    }
    let fixed = registry::PARAMS.iter().filter(|s| !s.is_family()).count();
    let families = registry::PARAMS
        .iter()
        .filter(|s| s.name.contains("<service>"))
        .count();
    assert_eq!(list.len(), fixed + families * LOG_SERVICES.len() + 2);
    let mut sorted = list.clone();
    sorted.sort();
    assert_eq!(sorted, list);
}

#[test]
fn describe_gives_help() {
    let help = describe("Local.Store.SnapshotInterval").unwrap();
    assert!(help.starts_with("local.store.snapshotinterval\n"), "{help}");
    assert!(help.contains("integer, 1 to 46080 minutes"), "{help}");
    assert!(help.contains("default: 1440"), "{help}");
    assert!(describe("no.such").is_none());
    let c = set_ok("logfile.pop.loglevel", "Debug");
    let help = c.describe("logfile.pop.loglevel").unwrap();
    assert!(help.contains("one of Nolog, Critical"), "{help}");
    assert!(help.contains("current: Debug (set in msg.conf)"), "{help}");
    let help = c.describe("store.partition.primary.path").unwrap();
    assert!(help.contains("current: (empty) (default)"), "{help}");
}

#[test]
fn values_with_their_own_quotes_survive_a_round_trip() {
    let mut c = Config::new();
    c.set("service.imap.banner", "\"quoted\"").unwrap();
    let back = Config::parse(&c.render()).unwrap();
    assert_eq!(back.get_str("service.imap.banner"), "\"quoted\"");
}

#[test]
fn service_runtime_parameters() {
    use names::*;
    let c = Config::new();
    assert_eq!(c.get_int(LMTP_SESSIONS_PER_PROCESS), 1000);
    assert_eq!(c.get_int(LMTP_FD_PER_SESSION), 3);
    assert_eq!(c.get_str(SSL_CERT_FILE), "");
    assert_eq!(c.get_str(SSL_KEY_FILE), "");
    assert_eq!(
        c.get_path(SSL_CERT_FILE, "/r/config/tls"),
        Path::new("/r/config/tls")
    );
    let c = set_ok(SSL_CERT_FILE, "certs/server.pem");
    assert_eq!(
        c.get_path(SSL_CERT_FILE, "/r/config"),
        Path::new("/r/config/certs/server.pem")
    );
    assert!(set_err(LMTP_FD_PER_SESSION, "0").contains("1 to 1000"));
    assert!(set_err(LMTP_SESSIONS_PER_PROCESS, "0").contains("1 to 1000000"));
    for svc in ["imap", "pop", "http", "lmtp", "default"] {
        assert_eq!(c.get_int(&logfile(svc, "expirytime")), 604_800);
    }
    assert_eq!(
        set_ok(&logfile("imap", "expirytime"), "0").get_int("logfile.imap.expirytime"),
        0
    );
    let e = set_err(&logfile("imap", "expirytime"), "31536001");
    assert!(e.contains("0 to 31536000"), "{e}");
}
