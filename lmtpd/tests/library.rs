//! The library API on its own: `serve_connection` over an in-memory stream.

use std::sync::Arc;
use std::time::Duration;

use lmtpd::{serve_connection, Limits, LmtpContext};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use userdb::{HashParams, Secret, UserDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_connection_over_a_duplex_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("config");
    let params = HashParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };
    UserDb::open_with(dir.path().join("config/passwd"), params)
        .expect("userdb")
        .add("joe", &Secret::new("pw".to_string()))
        .expect("add");
    let limits = Limits {
        idle_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let ctx = Arc::new(
        LmtpContext::open(dir.path(), "mx.test", limits)
            .await
            .expect("open"),
    );
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(serve_connection(server, "test".into(), ctx.clone()));
    let (r, mut w) = tokio::io::split(client);
    let mut r = BufReader::new(r);
    w.write_all(
        b"LHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe+nosuch@x>\r\nDATA\r\n\
          Subject: t\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    )
    .await
    .expect("write");
    let mut replies = Vec::new();
    let mut line = String::new();
    while r.read_line(&mut line).await.expect("read") > 0 {
        replies.push(line.trim_end().to_owned());
        line.clear();
    }
    task.await.expect("session");
    assert_eq!(replies[0], "220 mx.test LMTP lmtpd ready");
    assert!(
        replies.contains(&"250-SIZE 52428800".to_owned()),
        "{replies:?}"
    );
    assert!(
        replies.contains(&"250-PIPELINING".to_owned()),
        "{replies:?}"
    );
    let tail: Vec<&str> = replies[replies.len() - 5..]
        .iter()
        .map(|s| &s[..3])
        .collect();
    assert_eq!(tail, ["250", "250", "354", "250", "221"], "{replies:?}");

    let s = ctx.client().session_for("joe").await.expect("session");
    let inbox = s.select("INBOX", true).await.expect("select");
    assert_eq!(inbox.exists(), 1);
    let m = inbox.read_message(inbox.uids()[0]).await.expect("read");
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.starts_with("Return-Path: <a@b>\r\nReceived: from c (test) by mx.test"),
        "{m}"
    );
    assert!(m.ends_with("Subject: t\r\n\r\n.dot\r\n"), "{m}");
}
