//! `serve_connection` over an in-memory stream: what depends on the peer's address.

use std::net::SocketAddr;
use std::sync::Arc;

use popd::{serve_connection, PopContext, PopSettings};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use userdb::{HashParams, Secret, UserDb};

fn instance() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
    let params = HashParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let db = UserDb::open_with(dir.path().join("config/passwd"), params).expect("userdb");
    db.add("joe", &Secret::new("pw".to_string()))
        .expect("add user");
    dir
}

/// Run `commands` against a session from `peer`; every line the server wrote.
async fn session(ctx: Arc<PopContext>, peer: &str, commands: &[&str]) -> Vec<String> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = peer.parse().expect("peer");
    let task = tokio::spawn(serve_connection(server, peer, ctx));
    let (r, mut w) = tokio::io::split(client);
    let mut r = BufReader::new(r);
    let mut lines = Vec::new();
    let mut l = String::new();
    r.read_line(&mut l).await.expect("greeting");
    lines.push(l.trim_end().to_owned());
    for c in commands {
        w.write_all(format!("{c}\r\n").as_bytes())
            .await
            .expect("write");
        // Multi-line answers (CAPA) end with "."; the rest are one line.
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).await.expect("read") == 0 {
                break;
            }
            let l = l.trim_end().to_owned();
            let multi = *c == "CAPA";
            let first = lines
                .last()
                .is_none_or(|p: &String| !p.starts_with("+OK Cap"));
            lines.push(l.clone());
            if !multi || l == "." || (first && l.starts_with("-ERR")) {
                break;
            }
        }
    }
    drop(w);
    task.await.expect("session task");
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_needs_tls_or_loopback_or_the_parameter() {
    let dir = instance();
    let settings = PopSettings {
        auth_fail_delay: std::time::Duration::from_millis(1),
        ..PopSettings::default()
    };
    let ctx = Arc::new(
        PopContext::open(dir.path(), settings.clone(), None)
            .await
            .expect("context"),
    );
    let remote = session(
        ctx.clone(),
        "192.0.2.7:4000",
        &[
            "CAPA",
            "USER joe",
            "PASS pw",
            "AUTH PLAIN AGpvZQBwdw==",
            "QUIT",
        ],
    )
    .await;
    assert!(
        !remote.iter().any(|l| l == "USER" || l == "SASL PLAIN"),
        "{remote:?}"
    );
    assert!(
        !remote.iter().any(|l| l == "STLS"),
        "no TLS configured: {remote:?}"
    );
    let errs: Vec<&String> = remote.iter().filter(|l| l.starts_with("-ERR")).collect();
    assert_eq!(errs.len(), 3, "{remote:?}");
    assert!(errs[0].starts_with("-ERR [AUTH]"), "{remote:?}");
    assert!(errs[2].starts_with("-ERR [AUTH]"), "{remote:?}");

    let local = session(
        ctx,
        "127.0.0.1:4000",
        &["USER joe", "PASS pw", "STAT", "QUIT"],
    )
    .await;
    assert!(local[2].starts_with("+OK"), "{local:?}");
    assert_eq!(local[3], "+OK 0 0");

    let allowed = PopSettings {
        allow_plaintext_auth: true,
        ..settings
    };
    let ctx = Arc::new(
        PopContext::open(dir.path(), allowed, None)
            .await
            .expect("context"),
    );
    let remote = session(
        ctx,
        "192.0.2.7:4000",
        &["AUTH PLAIN AGpvZQBwdw==", "STAT", "QUIT"],
    )
    .await;
    assert!(remote[1].starts_with("+OK"), "{remote:?}");
    assert_eq!(remote[2], "+OK 0 0");
}
