//! Postfix (Debian's) hands mail to the real lmtpd over an `lmtp:` transport on loopback;
//! the mail is read back through store-client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::binary;
use store_client::StoreClient;

/// Postfix only runs from a configuration directory listed in the default configuration's
/// `alternate_config_directories`, so the test instance lives at a fixed path.
const POSTFIX_DIR: &str = "/tmp/msgsuite-postfix-test";

struct Running {
    lmtpd: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .args(["-c", POSTFIX_DIR, "stop"])
            .output();
        let _ = self.lmtpd.kill();
        let _ = self.lmtpd.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn configure_postfix(smtp_port: u16, lmtp_addr: &str) {
    let dir = Path::new(POSTFIX_DIR);
    let _ = Command::new("postfix")
        .args(["-c", POSTFIX_DIR, "stop"])
        .output();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("queue")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    run(Command::new("chown").arg("postfix").arg(dir.join("data")));
    if !Path::new("/etc/postfix/main.cf").exists() {
        std::fs::write("/etc/postfix/main.cf", "").unwrap();
    }
    run(Command::new("postconf")
        .arg("-e")
        .arg(format!("alternate_config_directories = {POSTFIX_DIR}")));
    std::fs::write(
        dir.join("main.cf"),
        format!(
            "compatibility_level = 3.6\n\
             queue_directory = {POSTFIX_DIR}/queue\n\
             data_directory = {POSTFIX_DIR}/data\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = mx.example.com\n\
             mydomain = example.com\n\
             mydestination = example.com\n\
             local_recipient_maps =\n\
             alias_maps =\n\
             alias_database =\n\
             local_transport = lmtp:inet:{lmtp_addr}\n\
             maillog_file = {POSTFIX_DIR}/maillog\n\
             maillog_file_prefixes = {POSTFIX_DIR}\n\
             mynetworks = 127.0.0.0/8\n\
             smtputf8_enable = no\n"
        ),
    )
    .unwrap();
    // The system's master.cf with smtpd on our port and nothing chrooted.
    let master = std::fs::read_to_string("/etc/postfix/master.cf").unwrap();
    let mut out = String::new();
    for line in master.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("smtp ") && fields.get(1) == Some(&"inet") {
            out.push_str(&format!("127.0.0.1:{smtp_port} inet n - n - - smtpd\n"));
        } else if !line.starts_with(['#', ' ', '\t']) && fields.len() >= 8 {
            let mut f: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
            f[4] = "n".into();
            out.push_str(&f.join(" "));
            out.push('\n');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(dir.join("master.cf"), out).unwrap();
    run(Command::new("postfix").args(["-c", POSTFIX_DIR, "start"]));
}

fn smtp_send(port: u16, from: &str, to: &str, body: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut expect = |code: &str| loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    };
    expect("220");
    for (cmd, code) in [
        ("EHLO client.example.org".to_string(), "250"),
        (format!("MAIL FROM:<{from}>"), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".into(), "354"),
    ] {
        write!(s, "{cmd}\r\n").unwrap();
        expect(code);
    }
    write!(s, "{body}\r\n.\r\nQUIT\r\n").unwrap();
    expect("250");
    expect("221");
}

fn wait_for_port(port: u16) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "postfix smtpd did not open port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_delivers_through_lmtpd_into_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let root: PathBuf = tmp.path().join("msg");
    run(Command::new(binary("start-msg"))
        .arg("--root")
        .arg(&root)
        .arg("--prepare-only"));
    let mut add = Command::new(binary("msuser"))
        .arg("--root")
        .arg(&root)
        .args(["add", "joe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    assert!(add.wait().unwrap().success());
    let client = StoreClient::open(&root).await.unwrap();
    let joe = client.session_for("joe").await.unwrap();
    joe.create("Lists", None).await.unwrap();

    let mut lmtpd = Command::new(binary("lmtpd"))
        .arg("--root")
        .arg(&root)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(lmtpd.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let lmtp_addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("lmtpd prints its address")
        .to_owned();
    let smtp_port = free_port();
    let _running = Running { lmtpd };
    configure_postfix(smtp_port, &lmtp_addr);
    wait_for_port(smtp_port);

    smtp_send(
        smtp_port,
        "alice@other.org",
        "joe@example.com",
        "Subject: first\r\nFrom: alice@other.org\r\n\r\nhello joe",
    );
    smtp_send(
        smtp_port,
        "alice@other.org",
        "joe+Lists@example.com",
        "Subject: list mail\r\nFrom: alice@other.org\r\n\r\nto the list folder",
    );
    smtp_send(
        smtp_port,
        "alice@other.org",
        "nobody@example.com",
        "Subject: lost\r\n\r\nno such user",
    );

    let t = Instant::now();
    loop {
        let inbox = joe.status("INBOX").await.unwrap().messages;
        let lists = joe.status("Lists").await.unwrap().messages;
        if inbox == 1 && lists == 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "mail did not arrive: INBOX {inbox}, Lists {lists}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let inbox = joe.select("INBOX", true).await.unwrap();
    let raw =
        String::from_utf8(inbox.read_message(inbox.uid_of(1).unwrap()).await.unwrap()).unwrap();
    assert!(
        raw.starts_with("Return-Path: <alice@other.org>\r\nReceived: from "),
        "{raw}"
    );
    assert!(raw.contains("hello joe"));

    // Postfix's log shows the relay's replies, including the refusal of the unknown user.
    let t = Instant::now();
    let mut log = String::new();
    while t.elapsed() < Duration::from_secs(20) {
        log.clear();
        let _ = std::fs::File::open(Path::new(POSTFIX_DIR).join("maillog"))
            .and_then(|mut f| f.read_to_string(&mut log));
        if log.matches("status=sent").count() >= 2 && log.contains("status=bounced") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let relay = format!(
        "relay={}[{}]:{}",
        "127.0.0.1",
        "127.0.0.1",
        lmtp_addr.rsplit(':').next().unwrap()
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(&relay) && l.contains("status=sent (250 2.1.5"))
            .count(),
        2,
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("nobody@example.com")
            && l.contains("status=bounced")
            && l.contains("550 5.1.1")),
        "{log}"
    );
}
