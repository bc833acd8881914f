//! End-to-end tests: the real `mshttpd` binary on an ephemeral port over a temporary
//! instance, driven by curl (compression, bad input, login and cookies), the jmapc JMAP
//! client library from PyPI (queries and changes), a raw socket (EventSource push) and a
//! small SMTP relay in Python (EmailSubmission). Mail is delivered through store-client from
//! this process, as another process (lmtpd) would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use store_client::StoreClient;

const JMAP_USING: &[&str] = &[
    "urn:ietf:params:jmap:core",
    "urn:ietf:params:jmap:mail",
    "urn:ietf:params:jmap:submission",
];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A temporary instance with users (password "pw") and msg.conf lines.
fn instance(users: &[&str], conf: &str) -> tempfile::TempDir {
    let dir = testkit::instance(users);
    std::fs::write(dir.path().join("config/msg.conf"), conf).expect("msg.conf");
    dir
}

fn deliver(root: &Path, user: &str, folder: &str, msgs: &[String]) {
    rt().block_on(async {
        let client = StoreClient::open(root).await.expect("store");
        let s = client.session_for(user).await.expect("session");
        for m in msgs {
            s.append(folder, m.clone().into_bytes(), &[], None)
                .await
                .expect("append");
        }
    })
}

fn msg(n: usize, subject: &str) -> String {
    format!(
        "From: Alice <alice@example.com>\r\nTo: joe@example.com\r\nSubject: {subject}\r\nMessage-ID: <m{n}@example.com>\r\nDate: Sun, 29 Nov 2026 1{}:00:00 +0000\r\n\r\nHello number {n}, lunch at noon.\r\n",
        n % 10
    )
}

struct Server {
    proc: testkit::Spawned,
    addr: SocketAddr,
}

/// A response as curl received it (no decoding).
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Server {
    fn start(root: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mshttpd"));
        cmd.arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0", "--auth-fail-delay-ms", "20"])
            .args(extra);
        // One `listening on` line per listener.
        let lines = 1 + usize::from(extra.contains(&"--listen-tls"));
        let proc = testkit::Spawned::start(cmd, lines);
        Server {
            addr: proc.addr(0),
            proc,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Runs curl with `args` and the URL of `path`; never follows redirects or decodes.
    fn curl(&self, args: &[&str], path: &str) -> Resp {
        let out = Command::new("curl")
            .args([
                "-s",
                "-i",
                "--path-as-is",
                "--max-time",
                "30",
                "-H",
                "Expect:",
            ])
            .args(args)
            .arg(self.url(path))
            .output()
            .expect("run curl (Debian package curl)");
        let raw = out.stdout;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "no response from curl: {:?}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Resp {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    /// POST a JMAP request as joe (Basic).
    fn api_raw(&self, body: &str, extra: &[&str]) -> Resp {
        let mut args = vec![
            "-u",
            "joe:pw",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ];
        args.extend_from_slice(extra);
        self.curl(&args, "/jmap/api")
    }

    fn api(&self, calls: Value) -> Vec<Value> {
        let body = json!({"using": JMAP_USING, "methodCalls": calls}).to_string();
        let r = self.api_raw(&body, &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["methodResponses"]
            .as_array()
            .expect("methodResponses")
            .clone()
    }

    /// Run a Python script with the test venv's interpreter: `host`, `port`, `check` defined.
    fn python(&self, script: &str, stdin_feed: Option<&dyn Fn(&str) -> String>) -> String {
        let prelude = r#"
import sys, json, functools
host, port = sys.argv[1], int(sys.argv[2])
def check(cond, what):
    if not cond:
        raise AssertionError(what)
"#;
        let mut child = Command::new(python())
            .arg("-c")
            .arg(format!("{prelude}\n{script}"))
            .arg(self.addr.ip().to_string())
            .arg(self.addr.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut all = String::new();
        let mut line = String::new();
        while out.read_line(&mut line).expect("python output") > 0 {
            if let (Some(rest), Some(feed)) = (line.trim().strip_prefix("WAIT "), stdin_feed) {
                let answer = feed(rest);
                stdin
                    .write_all(format!("{answer}\n").as_bytes())
                    .expect("answer python");
                stdin.flush().expect("flush");
            }
            all.push_str(&line);
            line.clear();
        }
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("stderr");
        let status = child.wait().expect("python exit");
        assert!(status.success(), "python failed:\n{all}\n{err}");
        all
    }
}

fn python() -> PathBuf {
    testkit::python()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn method<'a>(responses: &'a [Value], i: usize, name: &str) -> &'a Value {
    assert_eq!(responses[i][0], name, "response {i}: {}", responses[i]);
    &responses[i][1]
}

/// RFC 9110 12.5.3 with the seed's two switches: static assets are gzipped exactly when
/// local.service.http.gzip.static is 1, JMAP responses exactly when
/// local.service.http.gzip.dynamic is 1, each only for clients that accept gzip.
#[test]
fn compression_static_and_dynamic_follow_their_own_switch() {
    for (stat, dynamic) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let conf = format!(
            "local.service.http.gzip.static = {stat}\nlocal.service.http.gzip.dynamic = {dynamic}\n"
        );
        let dir = instance(&["joe"], &conf);
        let server = Server::start(dir.path(), &[]);
        let what = format!("static={stat} dynamic={dynamic}");

        let plain = server.curl(&[], "/");
        assert_eq!(plain.status, 200, "{what}");
        assert_eq!(plain.header("content-encoding"), None, "{what}");
        assert!(plain
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/html"));
        assert_eq!(
            plain.header("content-length"),
            Some(plain.body.len().to_string().as_str())
        );
        let gz = server.curl(&["-H", "Accept-Encoding: gzip"], "/");
        assert_eq!(gz.status, 200);
        assert_eq!(
            gz.header("content-length"),
            Some(gz.body.len().to_string().as_str()),
            "{what}"
        );
        if stat == 1 {
            assert_eq!(gz.header("content-encoding"), Some("gzip"), "{what}");
            assert_eq!(gunzip(&gz.body), plain.body, "{what}");
            assert!(gz.body.len() < plain.body.len());
            assert_ne!(
                gz.header("etag"),
                plain.header("etag"),
                "{what}: distinct ETags"
            );
            assert!(gz.all("vary").iter().any(|v| v.contains("Accept-Encoding")));
            // Revalidation of the gzip variant by its own ETag.
            let etag = gz.header("etag").expect("etag").to_owned();
            let again = server.curl(
                &[
                    "-H",
                    "Accept-Encoding: gzip",
                    "-H",
                    &format!("If-None-Match: {etag}"),
                ],
                "/",
            );
            assert_eq!(again.status, 304, "{what}");
        } else {
            assert_eq!(gz.header("content-encoding"), None, "{what}");
            assert_eq!(gz.body, plain.body, "{what}");
        }
        let refused = server.curl(&["-H", "Accept-Encoding: gzip;q=0, identity"], "/");
        assert_eq!(refused.header("content-encoding"), None, "{what}");

        let body = json!({"using": JMAP_USING, "methodCalls": [
            ["Mailbox/get", {"accountId": "joe"}, "0"]]})
        .to_string();
        let dplain = server.api_raw(&body, &[]);
        assert_eq!(dplain.status, 200);
        assert_eq!(dplain.header("content-encoding"), None, "{what}");
        let dgz = server.api_raw(&body, &["-H", "Accept-Encoding: gzip"]);
        assert_eq!(dgz.status, 200);
        assert_eq!(
            dgz.header("content-length"),
            Some(dgz.body.len().to_string().as_str()),
            "{what}"
        );
        if dynamic == 1 {
            assert_eq!(dgz.header("content-encoding"), Some("gzip"), "{what}");
            let v: Value = serde_json::from_slice(&gunzip(&dgz.body)).expect("JSON");
            assert_eq!(v["methodResponses"][0][0], "Mailbox/get");
            assert!(dgz
                .all("vary")
                .iter()
                .any(|v| v.contains("Accept-Encoding")));
        } else {
            assert_eq!(dgz.header("content-encoding"), None, "{what}");
            dgz.json();
        }
    }
}

/// RFC 8620 3.6.1 request-level errors, 3.6.2 method-level errors, limits from the session
/// resource, invalid ids, and path traversal in asset URLs: each its own error, never a 500.
#[test]
fn bad_input_gets_the_error_it_calls_for() {
    let dir = instance(&["joe", "bob"], "");
    deliver(dir.path(), "joe", "INBOX", &[msg(1, "hello")]);
    let server = Server::start(
        dir.path(),
        &[
            "--max-size-request",
            "65536",
            "--max-size-upload",
            "8192",
            "--max-concurrent-requests",
            "3",
            "--max-concurrent-upload",
            "2",
        ],
    );
    let session = server.curl(&["-u", "joe:pw"], "/jmap/session").json();
    let core = &session["capabilities"]["urn:ietf:params:jmap:core"];
    let max_request = core["maxSizeRequest"].as_u64().expect("maxSizeRequest") as usize;
    let max_upload = core["maxSizeUpload"].as_u64().expect("maxSizeUpload") as usize;
    let max_calls = core["maxCallsInRequest"]
        .as_u64()
        .expect("maxCallsInRequest") as usize;
    assert_eq!((max_request, max_upload), (65536, 8192));
    assert_eq!(core["maxConcurrentRequests"], 3);
    assert_eq!(core["maxConcurrentUpload"], 2);

    let problem = |r: &Resp, kind: &str| {
        assert_ne!(r.status, 500);
        let v = r.json();
        assert_eq!(
            v["type"],
            format!("urn:ietf:params:jmap:error:{kind}"),
            "{v}"
        );
        v
    };
    let r = server.api_raw("{\"using\": [", &[]);
    assert_eq!(r.status, 400);
    problem(&r, "notJSON");
    let r = server.api_raw("{\"using\": [], \"methodCalls\": {}}", &[]);
    assert_eq!(r.status, 400);
    problem(&r, "notRequest");
    let r = server.api_raw("[1, 2]", &[]);
    problem(&r, "notRequest");
    // Nesting deeper than the parser allows, and bytes that are not UTF-8: notJSON, no crash.
    let r = server.api_raw(&"[".repeat(3000), &[]);
    problem(&r, "notJSON");
    let bad_utf8 = std::env::temp_dir().join(format!("mshttpd-bad-{}", std::process::id()));
    std::fs::write(
        &bad_utf8,
        b"{\"using\": [\"\xff\xfe\"], \"methodCalls\": []}",
    )
    .expect("write");
    let r = server.curl(
        &[
            "-u",
            "joe:pw",
            "--data-binary",
            &format!("@{}", bad_utf8.display()),
        ],
        "/jmap/api",
    );
    let _ = std::fs::remove_file(&bad_utf8);
    problem(&r, "notJSON");
    // A deeply nested filter within the parser's limit is answered, not overflowed.
    let mut filter = json!({"text": "x"});
    for _ in 0..30 {
        filter = json!({"operator": "NOT", "conditions": [filter]});
    }
    let deep = server.api(json!([["Email/query", {"accountId": "joe", "filter": filter}, "0"]]));
    assert_eq!(deep[0][0], "Email/query", "{}", deep[0]);
    let r = server.api_raw(
        &json!({"using": ["urn:example:nope"], "methodCalls": []}).to_string(),
        &[],
    );
    assert_eq!(r.status, 400);
    problem(&r, "unknownCapability");
    let big = json!({"using": JMAP_USING, "methodCalls": [
        ["Core/echo", {"pad": "x".repeat(max_request)}, "0"]]})
    .to_string();
    let r = server.api_raw(&big, &[]);
    assert_eq!(r.status, 413);
    assert_eq!(problem(&r, "limit")["limit"], "maxSizeRequest");
    let calls: Vec<Value> = (0..=max_calls)
        .map(|i| json!(["Core/echo", {}, i.to_string()]))
        .collect();
    let r = server.api_raw(
        &json!({"using": JMAP_USING, "methodCalls": calls}).to_string(),
        &[],
    );
    assert_eq!(problem(&r, "limit")["limit"], "maxCallsInRequest");

    let responses = server.api(json!([
        ["Email/frobnicate", {"accountId": "joe"}, "a"],
        ["Email/get", {"accountId": "joe", "#ids": {"resultOf": "zz", "name": "Email/query", "path": "/ids"}}, "b"],
        ["Email/query", {"accountId": "joe"}, "c"],
        ["Email/get", {"accountId": "joe", "#ids": {"resultOf": "c", "name": "Email/query", "path": "/nothing/here"}}, "d"],
        ["Email/get", {"accountId": "nobody", "ids": []}, "e"],
        ["Email/get", {"accountId": "joe", "ids": "E1_1"}, "f"],
        ["Email/get", {"accountId": "joe", "ids": ["../../etc/passwd", "Ezz_1", "E0_0", "", "M1"], "properties": ["subject"]}, "g"],
        ["Mailbox/get", {"accountId": "joe", "ids": ["nope", "M../x"]}, "h"],
        ["Email/query", {"accountId": "joe", "filter": {"frobnicate": 1}}, "i"],
        ["Email/query", {"accountId": "joe", "sort": [{"property": "nonsense"}]}, "j"],
        ["Email/changes", {"accountId": "joe", "sinceState": "not a state"}, "k"],
        ["Email/set", {"accountId": "joe", "update": {"Ezz": {"keywords/$seen": true}}, "destroy": ["E0_0"]}, "l"],
        ["Email/get", {"accountId": "joe", "properties": ["nonsense"]}, "m"],
        ["Email/set", {"accountId": "joe", "ifInState": "s0"}, "n"],
    ]));
    let err = |i: usize| -> String {
        assert_eq!(responses[i][0], "error", "{}", responses[i]);
        responses[i][1]["type"].as_str().unwrap_or("").to_owned()
    };
    assert_eq!(err(0), "unknownMethod");
    assert_eq!(err(1), "invalidResultReference");
    assert_eq!(responses[2][0], "Email/query");
    assert_eq!(err(3), "invalidResultReference");
    assert_eq!(err(4), "accountNotFound");
    assert_eq!(err(5), "invalidArguments");
    let g = method(&responses, 6, "Email/get");
    assert_eq!(g["list"], json!([]));
    assert_eq!(g["notFound"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        method(&responses, 7, "Mailbox/get")["notFound"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(err(8), "unsupportedFilter");
    assert_eq!(err(9), "unsupportedSort");
    assert_eq!(err(10), "cannotCalculateChanges");
    let l = method(&responses, 11, "Email/set");
    assert_eq!(l["notUpdated"]["Ezz"]["type"], "notFound");
    assert_eq!(l["notDestroyed"]["E0_0"]["type"], "notFound");
    assert_eq!(err(12), "invalidArguments");
    assert_eq!(err(13), "stateMismatch");

    // Uploads: the limit from the session resource.
    let big = "y".repeat(max_upload + 1);
    let r = server.curl(
        &[
            "-u",
            "joe:pw",
            "--data-binary",
            &big,
            "-H",
            "Content-Type: text/plain",
        ],
        "/jmap/upload/joe/",
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["limit"], "maxSizeUpload");
    let r = server.curl(
        &["-u", "joe:pw", "--data-binary", "ok"],
        "/jmap/upload/bob/",
    );
    assert_eq!(r.status, 404);
    for blob in ["nope", "B1", "U", "Uzz", "B..%2F..%2Fetc"] {
        let r = server.curl(
            &["-u", "joe:pw"],
            &format!("/jmap/download/joe/{blob}/x.txt"),
        );
        assert_eq!(r.status, 404, "{blob}");
    }

    session_limits_are_enforced(&server, dir.path(), core);

    // Authentication.
    assert_eq!(server.curl(&[], "/jmap/session").status, 401);
    assert_eq!(
        server.curl(&["-u", "joe:wrong"], "/jmap/session").status,
        401
    );
    assert_eq!(
        server
            .curl(&["-H", "Authorization: Bearer nope"], "/jmap/session")
            .status,
        401
    );
    assert_eq!(
        server
            .curl(&["-H", "Authorization: Basic %%%"], "/jmap/session")
            .status,
        401
    );

    // Assets: traversal is refused, never served.
    for path in [
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/Cargo.toml",
        "/assets/..%2fCargo.toml",
        "/assets/.keep",
        "/assets/a//b",
        "/assets/%00",
        "/assets/..\\Cargo.toml",
    ] {
        let r = server.curl(&[], path);
        assert!(
            r.status == 400 || r.status == 404,
            "{path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("[package]"),
            "{path}"
        );
    }
    assert_eq!(server.curl(&[], "/assets/no-such-file.js").status, 404);
    assert_eq!(server.curl(&[], "/nowhere").status, 404);
    let wk = server.curl(&[], "/.well-known/jmap");
    assert!(
        wk.status == 307 || wk.status == 301 || wk.status == 308,
        "{}",
        wk.status
    );
    assert_eq!(wk.header("location"), Some("/jmap/session"));
    // A malformed login form is a 400, not a 500.
    let r = server.curl(
        &[
            "--data-binary",
            "%%%",
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
        ],
        "/login",
    );
    assert_eq!(r.status, 400);
}

/// Opens a connection that sends a request's head and the start of its body, then holds.
fn hold_request(addr: SocketAddr, path: &str, user_pass_b64: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {user_pass_b64}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"using\": "
    )
    .expect("request head");
    s.flush().expect("flush");
    s
}

/// Whether the server has answered on a held connection (without waiting).
fn answered(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    // Ok(0) is a close, Ok(_) an answer; WouldBlock is a server still reading the body.
    let got = s.peek(&mut b).is_ok();
    s.set_nonblocking(false).expect("blocking");
    got
}

/// Polls `f` until it returns true, for up to 10 seconds.
fn eventually(what: &str, f: &mut dyn FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The core limits of the session resource really refuse (RFC 8620 2, 3.6.1, 5.1, 5.3,
/// 6.1): maxObjectsInGet and maxObjectsInSet for every type, maxSizeRequest and
/// maxSizeUpload while a body streams (no Content-Length), maxConcurrentRequests and
/// maxConcurrentUpload per account (held open by bodies that stop half way). Uploads live
/// in files under data/http/uploads/<user>/, partial ones are removed, expired ones are gone.
fn session_limits_are_enforced(server: &Server, root: &Path, core: &Value) {
    let max_get = core["maxObjectsInGet"].as_u64().expect("maxObjectsInGet") as usize;
    let max_set = core["maxObjectsInSet"].as_u64().expect("maxObjectsInSet") as usize;
    let max_requests = core["maxConcurrentRequests"]
        .as_u64()
        .expect("maxConcurrentRequests") as usize;
    let max_uploads = core["maxConcurrentUpload"]
        .as_u64()
        .expect("maxConcurrentUpload") as usize;
    let max_request = core["maxSizeRequest"].as_u64().expect("maxSizeRequest") as usize;
    let max_upload = core["maxSizeUpload"].as_u64().expect("maxSizeUpload") as usize;

    // Objects per call: at the limit answered, one past it refused, for each kind of call.
    let ids = |n: usize| -> Vec<String> { (0..n).map(|i| format!("x{i}")).collect() };
    let r = server.api(json!([
        ["Email/get", {"accountId": "joe", "ids": ids(max_get), "properties": ["id"]}, "0"],
        ["Email/get", {"accountId": "joe", "ids": ids(max_get + 1)}, "1"],
        ["EmailSubmission/get", {"accountId": "joe", "ids": ids(max_get + 1)}, "2"],
        ["Mailbox/get", {"accountId": "joe", "ids": ids(max_get + 1)}, "3"],
        ["Email/frobnicate", {"accountId": "joe", "ids": ids(max_get + 1)}, "4"],
        ["Email/set", {"accountId": "joe", "destroy": ids(max_set + 1)}, "5"],
    ]));
    assert_eq!(
        method(&r, 0, "Email/get")["notFound"]
            .as_array()
            .map(Vec::len),
        Some(max_get)
    );
    for e in &r[1..4] {
        assert_eq!(e[0], "error", "{e}");
        assert_eq!(e[1]["type"], "requestTooLarge", "{e}");
    }
    // An unknown method is that, whatever its arguments; a known one too large is still
    // refused after it.
    assert_eq!(r[4][1]["type"], "unknownMethod", "{}", r[4]);
    assert_eq!(r[5][1]["type"], "requestTooLarge", "{}", r[5]);
    let r = server.api(json!([
        ["Email/set", {"accountId": "joe", "destroy": ids(max_set)}, "0"],
        ["Email/set", {"accountId": "joe", "destroy": ids(max_set + 1)}, "1"],
        ["Mailbox/set", {"accountId": "joe", "destroy": ids(max_set + 1)}, "2"],
        ["EmailSubmission/set", {"accountId": "joe", "destroy": ids(max_set + 1)}, "3"],
    ]));
    assert_eq!(
        method(&r, 0, "Email/set")["notDestroyed"]
            .as_object()
            .map(|o| o.len()),
        Some(max_set)
    );
    for e in &r[1..4] {
        assert_eq!(e[1]["type"], "requestTooLarge", "{e}");
    }

    // Sizes while streaming: chunked bodies carry no Content-Length to refuse up front.
    let big = std::env::temp_dir().join(format!("mshttpd-big-{}", std::process::id()));
    let body = json!({"using": JMAP_USING, "methodCalls": [
        ["Core/echo", {"pad": "x".repeat(max_request)}, "0"]]})
    .to_string();
    std::fs::write(&big, body).expect("write");
    let chunked = |path: &str| {
        server.curl(
            &[
                "-u",
                "joe:pw",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &format!("@{}", big.display()),
            ],
            path,
        )
    };
    let r = chunked("/jmap/api");
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["limit"], "maxSizeRequest");
    let uploads = root.join("data/http/uploads/joe");
    let before = files_in(&uploads);
    assert!(max_upload < max_request);
    let r = chunked("/jmap/upload/joe/");
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["type"], "urn:ietf:params:jmap:error:limit");
    assert_eq!(r.json()["limit"], "maxSizeUpload");
    assert_eq!(
        files_in(&uploads),
        before,
        "the refused upload left nothing"
    );
    let _ = std::fs::remove_file(&big);

    // An upload is a file of its own; it downloads as it was, until it expires.
    let data: String = (0..max_upload)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let up = server.curl(
        &[
            "-u",
            "joe:pw",
            "--data-binary",
            &data,
            "-H",
            "Content-Type: text/plain",
        ],
        "/jmap/upload/joe/",
    );
    assert_eq!(up.status, 201);
    let blob = up.json()["blobId"].as_str().expect("blobId").to_owned();
    assert_eq!(up.json()["size"], max_upload);
    let file = uploads.join(blob.trim_start_matches('U'));
    assert_eq!(std::fs::read(&file).expect("upload file"), data.as_bytes());
    let dl = server.curl(
        &["-u", "joe:pw"],
        &format!("/jmap/download/joe/{blob}/a.txt"),
    );
    assert_eq!(dl.status, 200);
    assert_eq!(dl.body, data.as_bytes());
    assert_eq!(
        dl.header("content-length"),
        Some(max_upload.to_string().as_str())
    );
    // Another account cannot fetch it by id.
    let other = server.curl(
        &["-u", "bob:pw"],
        &format!("/jmap/download/bob/{blob}/a.txt"),
    );
    assert_eq!(other.status, 404);
    let aged = Command::new("touch")
        .args(["-m", "-d", "2 hours ago"])
        .arg(&file)
        .status()
        .expect("touch");
    assert!(aged.success());
    let dl = server.curl(
        &["-u", "joe:pw"],
        &format!("/jmap/download/joe/{blob}/a.txt"),
    );
    assert_eq!(dl.status, 404, "an upload older than an hour has expired");
    let r = server.api(json!([["Email/import", {"accountId": "joe", "emails": {"i": {"blobId": blob, "mailboxIds": {}}}}, "0"]]));
    assert_eq!(
        method(&r, 0, "Email/import")["notCreated"]["i"]["type"],
        "blobNotFound",
        "{}",
        r[0]
    );

    // Concurrent requests per account: held open by unfinished bodies.
    let joe = "am9lOnB3"; // joe:pw
    let mut held: Vec<TcpStream> = (0..max_requests)
        .map(|_| hold_request(server.addr, "/jmap/api", joe))
        .collect();
    let echo = json!({"using": JMAP_USING, "methodCalls": [["Core/echo", {}, "0"]]}).to_string();
    let mut refused = None;
    eventually("maxConcurrentRequests to refuse", &mut || {
        // A probe served while the holders were still authenticating held a slot of its
        // own then, and a holder may have been refused for it: such a holder has its
        // answer, and is replaced, so that in the end all of them hold a slot.
        for h in held.iter_mut() {
            if answered(h) {
                *h = hold_request(server.addr, "/jmap/api", joe);
            }
        }
        let r = server.api_raw(&echo, &[]);
        let hit = r.status == 429;
        refused = Some(r);
        hit
    });
    let r = refused.expect("response");
    assert_eq!(r.json()["type"], "urn:ietf:params:jmap:error:limit");
    assert_eq!(r.json()["limit"], "maxConcurrentRequests");
    // The limit is per account: bob is served meanwhile.
    let bob = server.curl(
        &[
            "-u",
            "bob:pw",
            "--data-binary",
            &echo,
            "-H",
            "Content-Type: application/json",
        ],
        "/jmap/api",
    );
    assert_eq!(bob.status, 200);
    // One held request gone, the next one is served.
    held.pop();
    eventually("a request slot to come back", &mut || {
        server.api_raw(&echo, &[]).status == 200
    });
    drop(held);

    // Concurrent uploads per account, the same way; each has its partial file meanwhile.
    // A holder's partial file is made after it took its slot, and goes before the slot is
    // given back: once all of them are there, every slot is held. (Probing earlier raced
    // the holders: a probe could take a slot while one of them was still authenticating,
    // which then was refused, and the probes after it were all served.)
    let held: Vec<TcpStream> = (0..max_uploads)
        .map(|_| hold_request(server.addr, "/jmap/upload/joe/", joe))
        .collect();
    let partial = |name: &String| name.ends_with(".part");
    eventually("partial upload files", &mut || {
        files_in(&uploads).iter().filter(|n| partial(n)).count() == max_uploads
    });
    let r = server.curl(&["-u", "joe:pw", "--data-binary", "x"], "/jmap/upload/joe/");
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.json()["limit"], "maxConcurrentUpload", "{r:?}");
    assert!(held.iter().all(|h| !answered(h)), "the holders wait");
    drop(held);
    eventually("partial uploads to be removed", &mut || {
        !files_in(&uploads).iter().any(partial)
    });
    let r = server.curl(&["-u", "joe:pw", "--data-binary", "x"], "/jmap/upload/joe/");
    assert_eq!(r.status, 201, "upload slots came back");
}

/// A request body that stops arriving fails its request after the idle timeout: the client
/// gets an answer, the partial upload file goes and the account's slots come back, all
/// while the client keeps its connection open and silent.
#[test]
fn stalled_bodies_time_out() {
    let dir = instance(&["joe"], "");
    let server = Server::start(
        dir.path(),
        &["--idle-timeout", "2", "--max-concurrent-upload", "1"],
    );
    let uploads = dir.path().join("data/http/uploads/joe");
    let joe = "am9lOnB3"; // joe:pw
    let mut upload = hold_request(server.addr, "/jmap/upload/joe/", joe);
    let mut api = hold_request(server.addr, "/jmap/api", joe);
    let started = Instant::now();
    for s in [&mut upload, &mut api] {
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer).expect("an answer, not a hang");
        let status = String::from_utf8_lossy(&answer[9..12]).into_owned();
        assert!(
            status.starts_with('4'),
            "{}\n{}",
            String::from_utf8_lossy(&answer),
            std::fs::read_to_string(dir.path().join("data/log/http")).unwrap_or_default()
        );
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    eventually("the partial upload to be removed", &mut || {
        !files_in(&uploads).iter().any(|n| n.ends_with(".part"))
    });
    let r = server.curl(&["-u", "joe:pw", "--data-binary", "x"], "/jmap/upload/joe/");
    assert_eq!(r.status, 201, "the upload slot came back");
}

/// A user deleted with msuser loses the files mshttpd kept for them outside the store (their
/// uploads, their EmailSubmission journal) while the server runs, so an account created
/// again under the name starts empty; other users keep theirs.
#[test]
fn deleted_accounts_lose_their_uploads_and_submissions() {
    let dir = instance(&["joe", "bob"], "");
    let root = dir.path();
    let server = Server::start(root, &["--account-check-secs", "1"]);
    let uploads = root.join("data/http/uploads");
    let mut blobs = Vec::new();
    for user in ["joe", "bob"] {
        let r = server.curl(
            &["-u", &format!("{user}:pw"), "--data-binary", "kept?"],
            &format!("/jmap/upload/{user}/"),
        );
        assert_eq!(r.status, 201, "{r:?}");
        blobs.push(r.json()["blobId"].as_str().expect("blobId").to_owned());
    }
    // A journal as EmailSubmission/set writes it (no relay here to make a real one).
    let journals = root.join("data/http/submissions");
    std::fs::create_dir_all(&journals).expect("submissions dir");
    for user in ["joe", "bob"] {
        std::fs::write(journals.join(format!("{user}.jsonl")), "").expect("journal");
    }
    let out = Command::new(testkit::binary("msuser"))
        .arg("--root")
        .arg(root)
        .args(["delete", "bob"])
        .output()
        .expect("msuser");
    assert!(out.status.success(), "{out:?}");
    eventually("bob's files to go", &mut || {
        !uploads.join("bob").exists() && !journals.join("bob.jsonl").exists()
    });
    assert!(journals.join("joe.jsonl").exists());
    let dl = server.curl(
        &["-u", "joe:pw"],
        &format!("/jmap/download/joe/{}/a.txt", blobs[0]),
    );
    assert_eq!(dl.status, 200);
    assert_eq!(dl.body, b"kept?");
    // bob again, under the same name: nothing of the old bob's.
    testkit::add_users(root, &["bob"]);
    let dl = server.curl(
        &["-u", "bob:pw"],
        &format!("/jmap/download/bob/{}/a.txt", blobs[1]),
    );
    assert_eq!(dl.status, 404, "{dl:?}");
}

/// The login form's cookies (HttpOnly session, readable CSRF token, SameSite=Strict), the
/// CSRF check on cookie-authenticated writes, Bearer with the session token, logout, the
/// per-address limit on failed logins, and the telemetry capture without credentials.
#[test]
fn login_cookies_csrf_limits_and_telemetry() {
    let dir = instance(&["joe"], "");
    std::fs::create_dir_all(dir.path().join("data/telemetry/http/joe")).expect("telemetry dir");
    let server = Server::start(dir.path(), &["--max-auth-failures", "3"]);
    let form = ["-H", "Content-Type: application/x-www-form-urlencoded"];

    let bad = server.curl(
        &[&form[..], &["--data", "username=joe&password=nope"]].concat(),
        "/login",
    );
    assert_eq!(bad.status, 303);
    assert_eq!(bad.header("location"), Some("/?error=login"));
    assert!(bad.all("set-cookie").is_empty());
    let bad = server.curl(
        &[
            &form[..],
            &[
                "-H",
                "Accept: application/json",
                "--data",
                "username=joe&password=nope",
            ],
        ]
        .concat(),
        "/login",
    );
    assert_eq!(bad.status, 401);

    let ok = server.curl(
        &[&form[..], &["--data", "username=joe&password=pw"]].concat(),
        "/login",
    );
    assert_eq!(ok.status, 303);
    assert_eq!(ok.header("location"), Some("/"));
    let cookies = ok.all("set-cookie");
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("msg_session="))
        .expect("session cookie");
    let csrf_cookie = cookies
        .iter()
        .find(|c| c.starts_with("msg_csrf="))
        .expect("csrf cookie");
    assert!(session_cookie.contains("HttpOnly"));
    assert!(session_cookie.contains("SameSite=Strict"));
    assert!(session_cookie.contains("Path=/"));
    assert!(!session_cookie.contains("Secure"), "no TLS here");
    assert!(!csrf_cookie.contains("HttpOnly"));
    assert!(csrf_cookie.contains("SameSite=Strict"));
    let value = |c: &str| {
        c.split(';')
            .next()
            .unwrap_or("")
            .split_once('=')
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default()
    };
    let token = value(session_cookie);
    let csrf = value(csrf_cookie);
    let cookie = format!("Cookie: msg_session={token}; msg_csrf={csrf}");

    // No credentials at all: the Basic challenge JMAP clients answer. A session cookie the
    // server no longer knows (a browser after a restart): 401 without the challenge, so the
    // browser shows the page's sign-in form rather than its own password prompt.
    let anonymous = server.curl(&[], "/jmap/session");
    assert_eq!(anonymous.status, 401);
    assert!(anonymous
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic")));
    let expired = server.curl(
        &["-H", "Cookie: msg_session=forgotten-session; msg_csrf=x"],
        "/jmap/session",
    );
    assert_eq!(expired.status, 401);
    assert_eq!(expired.header("www-authenticate"), None);

    let body =
        json!({"using": JMAP_USING, "methodCalls": [["Mailbox/get", {"accountId": "joe"}, "0"]]})
            .to_string();
    let post = |extra: &[&str]| {
        server.curl(
            &[
                &[
                    "-H",
                    &cookie,
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    &body,
                ][..],
                extra,
            ]
            .concat(),
            "/jmap/api",
        )
    };
    assert_eq!(post(&[]).status, 403, "cookie without X-CSRF-Token");
    assert_eq!(post(&["-H", "X-CSRF-Token: wrong"]).status, 403);
    let r = post(&["-H", &format!("X-CSRF-Token: {csrf}")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["methodResponses"][0][0], "Mailbox/get");
    // GET with the cookie needs no token; Bearer with the session token works too.
    assert_eq!(server.curl(&["-H", &cookie], "/jmap/session").status, 200);
    let bearer = format!("Authorization: Bearer {token}");
    let s = server.curl(&["-H", &bearer], "/jmap/session");
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["username"], "joe");
    let r = server.curl(&["-H", &bearer, "--data-binary", &body], "/jmap/api");
    assert_eq!(r.status, 200, "Bearer needs no CSRF token");

    assert_eq!(
        server
            .curl(&["-H", &cookie, "-X", "POST"], "/logout")
            .status,
        403
    );
    let out = server.curl(
        &[
            "-H",
            &cookie,
            "-H",
            &format!("X-CSRF-Token: {csrf}"),
            "-X",
            "POST",
        ],
        "/logout",
    );
    assert_eq!(out.status, 303);
    assert!(out
        .all("set-cookie")
        .iter()
        .all(|c| c.contains("Max-Age=0")));
    assert_eq!(server.curl(&["-H", &cookie], "/jmap/session").status, 401);
    assert_eq!(server.curl(&["-H", &bearer], "/jmap/session").status, 401);

    // Two failures so far from 127.0.0.1; the third reaches the limit of 3.
    let _ = server.curl(&["-u", "joe:nope"], "/jmap/session");
    let locked = server.curl(
        &[
            &form[..],
            &[
                "-H",
                "Accept: application/json",
                "--data",
                "username=joe&password=pw",
            ],
        ]
        .concat(),
        "/login",
    );
    assert_eq!(
        locked.status, 429,
        "the right password is refused while locked out"
    );
    assert_eq!(server.curl(&["-u", "joe:pw"], "/jmap/session").status, 429);
    drop(server);

    // The capture: requests and responses, without the password, cookies or tokens.
    let captures: Vec<_> = std::fs::read_dir(dir.path().join("data/telemetry/http/joe"))
        .expect("captures")
        .flatten()
        .collect();
    assert!(!captures.is_empty(), "a capture was written");
    let mut text = String::new();
    for c in captures {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(c.path()).expect("read"),
        ));
    }
    assert!(text.contains("LOGIN joe"), "{text}");
    assert!(text.contains("POST /jmap/api"), "{text}");
    // Bodies as they streamed through: the request's and the response's.
    assert!(text.contains("\"methodCalls\""), "{text}");
    assert!(text.contains("\"methodResponses\""), "{text}");
    assert!(text.contains("password=***"), "{text}");
    assert!(!text.contains("password=pw"));
    assert!(
        !text.contains(&token),
        "session token leaked into the capture"
    );
    assert!(!text.contains(&csrf[..20]), "csrf cookie leaked");
    let log = std::fs::read_to_string(dir.path().join("data/log/http")).unwrap_or_default();
    assert!(log.contains("mshttpd"), "log in data/log/http: {log}");
    assert!(!log.contains("password=pw"));
}

/// jmapc (PyPI) against the server: Mailbox/query + Mailbox/get by result reference, Email
/// query and get, Thread/get through a `*` path, and Email/changes, Email/queryChanges and
/// Mailbox/changes after a flag change, a destroy and a delivery by another process.
#[test]
fn jmapc_runs_queries_and_changes() {
    let dir = instance(&["joe"], "");
    // Threads are conversations (RFC 8474 THREADID from References): 2 replies to 1, and 4
    // and 5 to 3.
    let reply = |n: usize, subject: &str, to: usize| {
        msg(n, subject).replacen(
            "\r\n\r\n",
            &format!("\r\nReferences: <m{to}@example.com>\r\n\r\n"),
            1,
        )
    };
    let msgs: Vec<String> = (1..=5)
        .map(|n| match n {
            1 | 3 => msg(n, if n == 1 { "lunch" } else { "report" }),
            2 => reply(n, "lunch", 1),
            _ => reply(n, "report", 3),
        })
        .collect();
    deliver(dir.path(), "joe", "INBOX", &msgs);
    let server = Server::start(dir.path(), &[]);
    let root = dir.path().to_path_buf();
    let feed = move |what: &str| -> String {
        assert_eq!(what, "deliver");
        deliver(&root, "joe", "INBOX", &[reply(6, "Re: lunch", 1)]);
        "done".into()
    };
    let out = server.python(
        r#"
import functools
from jmapc import Client, Ref, Comparator, EmailQueryFilterCondition, MailboxQueryFilterCondition
from jmapc.methods import (MailboxQuery, MailboxGet, MailboxChanges, EmailQuery, EmailGet,
    EmailChanges, EmailSet, EmailQueryChanges, ThreadGet)
from jmapc.session import Session

class HttpClient(Client):
    # jmapc always asks https://host/.well-known/jmap; this server runs plain HTTP here.
    @functools.cached_property
    def jmap_session(self):
        r = self.requests_session.get(f"http://{self._host}/.well-known/jmap", timeout=30)
        r.raise_for_status()
        return Session.from_dict(r.json())

c = HttpClient.create_with_password(f"{host}:{port}", "joe", "pw")
check(c.account_id == "joe", c.account_id)
res = c.request([
    MailboxQuery(filter=MailboxQueryFilterCondition(role="inbox")),
    MailboxGet(ids=Ref("/ids")),
], raise_errors=True)
inbox = res[1].response.data[0]
check(inbox.name == "INBOX" and inbox.total_emails == 5 and inbox.unread_emails == 5, inbox)
mstate = res[1].response.state

res = c.request([
    EmailQuery(filter=EmailQueryFilterCondition(in_mailbox=inbox.id),
               sort=[Comparator(property="receivedAt", is_ascending=False)]),
    EmailGet(ids=Ref("/ids"), properties=["subject", "threadId", "mailboxIds", "keywords", "from", "preview"]),
    ThreadGet(ids=Ref("/list/*/threadId")),
], raise_errors=True)
ids = res[0].response.ids
check(len(ids) == 5, ids)
emails = res[1].response.data
check(all(e.mailbox_ids == {inbox.id: True} for e in emails), emails)
check(emails[0].mail_from[0].email == "alice@example.com", emails[0].mail_from)
check("lunch at noon" in emails[0].preview, emails[0].preview)
threads = res[2].response.data
check(len(threads) == 2, threads)
check(sorted(len(t.email_ids) for t in threads) == [2, 3], threads)
estate = res[1].response.state

# Every body mentions lunch: five messages in two threads.
res = c.request(EmailQuery(filter=EmailQueryFilterCondition(text="lunch"), collapse_threads=True), raise_errors=True, single_response=True)
check(len(res.ids) == 2, res.ids)
res = c.request(EmailQuery(filter=EmailQueryFilterCondition(text="lunch")), raise_errors=True, single_response=True)
check(len(res.ids) == 5, res.ids)
res = c.request(EmailQuery(filter=EmailQueryFilterCondition(header=["Subject", "report"]), calculate_total=True), raise_errors=True, single_response=True)
check(res.total == 3, res)
query_state = res.query_state

r = c.request(EmailSet(update={ids[0]: {"keywords/$seen": True, "keywords/$flagged": True}}), raise_errors=True, single_response=True)
check(ids[0] in r.updated, r)
r = c.request(EmailSet(destroy=[ids[1]]), raise_errors=True, single_response=True)
check(r.destroyed == [ids[1]], r)
print("WAIT deliver", flush=True)
check(sys.stdin.readline().strip() == "done", "delivery")

ch = c.request(EmailChanges(since_state=estate), raise_errors=True, single_response=True)
check(ch.updated == [ids[0]], ch)
check(ch.destroyed == [ids[1]], ch)
check(len(ch.created) == 1, ch)
new_id = ch.created[0]
got = c.request(EmailGet(ids=[new_id, ids[0]], properties=["subject", "keywords", "threadId"]), raise_errors=True, single_response=True)
check(got.data[0].subject == "Re: lunch", got.data)
check(got.data[1].keywords == {"$seen": True, "$flagged": True}, got.data[1].keywords)
ch2 = c.request(EmailChanges(since_state=ch.new_state), raise_errors=True, single_response=True)
check(ch2.created == [] and ch2.updated == [] and ch2.destroyed == [], ch2)
# maxChanges: the same changes in pages.
seen = set()
state = estate
for _ in range(10):
    page = c.request(EmailChanges(since_state=state, max_changes=1), raise_errors=True, single_response=True)
    seen.update(page.created + page.updated + page.destroyed)
    state = page.new_state
    if not page.has_more_changes:
        break
check(seen == {ids[0], ids[1], new_id}, seen)

qc = c.request(EmailQueryChanges(since_query_state=query_state, filter=EmailQueryFilterCondition(header=["Subject", "lunch"])), raise_errors=True, single_response=True)
check(new_id in [a.id for a in qc.added], qc)
check(ids[1] in qc.removed, qc)

mc = c.request(MailboxChanges(since_state=mstate), raise_errors=True, single_response=True)
check(inbox.id in mc.updated, mc)
mb = c.request(MailboxGet(ids=[inbox.id]), raise_errors=True, single_response=True)
check(mb.data[0].total_emails == 5 and mb.data[0].unread_emails == 4, mb.data[0])
print("jmapc ok")
"#,
        Some(&feed),
    );
    assert!(out.contains("jmapc ok"), "{out}");
}

/// A small SMTP relay: accepts one message per connection and appends what it got to a file.
const SMTP_RELAY: &str = r#"
import socket, sys, threading
out = sys.argv[1]
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(5)
print(srv.getsockname()[1], flush=True)
def serve(c):
    f = c.makefile("rb"); w = lambda s: c.sendall(s.encode() + b"\r\n")
    w("220 relay ready"); env = []
    while True:
        line = f.readline()
        if not line: return
        cmd = line.decode(errors="replace").strip()
        u = cmd.upper()
        if u.startswith("EHLO") or u.startswith("HELO"): w("250 relay")
        elif u.startswith("MAIL FROM") or u.startswith("RCPT TO"): env.append(cmd); w("250 ok")
        elif u == "DATA":
            w("354 go"); data = b""
            while True:
                l = f.readline()
                if l in (b".\r\n", b""): break
                data += l
            with open(out, "ab") as o:
                o.write(("\n".join(env) + "\n").encode() + data + b"\n--end--\n")
            env = []; w("250 queued")
        elif u == "QUIT": w("221 bye"); c.close(); return
        elif u in ("RSET", "NOOP"): w("250 ok")
        else: w("502 no")
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

struct Relay {
    child: Child,
    port: u16,
    file: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relay(dir: &Path) -> Relay {
    let file = dir.join("relay.out");
    let mut child = Command::new(python())
        .arg("-c")
        .arg(SMTP_RELAY)
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("relay");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("relay port");
    Relay {
        child,
        port: line.trim().parse().expect("port"),
        file,
    }
}

/// Reads EventSource events from a raw connection until `pred` holds or the time is up.
fn read_events(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    until: Instant,
    pred: &dyn Fn(&str) -> bool,
) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if pred(&String::from_utf8_lossy(buf)) {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return false,
        }
    }
}

/// Mailbox/set, blob upload and download, Email/set create (draft with an attachment),
/// Email/get bodies, Email/parse, Email/import, SearchSnippet/get, EmailSubmission through
/// the relay (Bcc removed, the draft moved to Sent by onSuccessUpdateEmail), push of a
/// delivery by another process over EventSource, and a refused submission without a relay.
#[test]
fn drafts_submission_blobs_and_push() {
    let dir = instance(&["joe"], "");
    let relay = relay(dir.path());
    std::fs::write(
        dir.path().join("config/msg.conf"),
        format!("local.service.http.smtprelay = 127.0.0.1:{}\n", relay.port),
    )
    .expect("msg.conf");
    let server = Server::start(dir.path(), &[]);

    // Push: subscribe first, then watch a delivery by another process arrive.
    let mut es = TcpStream::connect(server.addr).expect("connect");
    es.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    write!(
        es,
        "GET /jmap/eventsource?types=*&closeafter=no&ping=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic am9lOnB3\r\n\r\n"
    )
    .expect("request");
    let mut events = Vec::new();
    assert!(
        read_events(
            &mut es,
            &mut events,
            Instant::now() + Duration::from_secs(10),
            &|s| s.contains("event: state")
        ),
        "first state event: {}",
        String::from_utf8_lossy(&events)
    );
    let head = String::from_utf8_lossy(&events).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"));
    assert!(head.contains("\"@type\":\"StateChange\""));
    let first_len = events.len();
    deliver(dir.path(), "joe", "INBOX", &[msg(1, "pushed")]);
    let ok = read_events(
        &mut es,
        &mut events,
        Instant::now() + Duration::from_secs(10),
        &|s| s.matches("event: state").count() >= 2,
    );
    assert!(
        ok,
        "no StateChange after a delivery: {}",
        String::from_utf8_lossy(&events[first_len..])
    );

    // Mailboxes.
    let r = server.api(json!([
        ["Mailbox/query", {"accountId": "joe", "filter": {"role": "drafts"}}, "0"],
        ["Mailbox/query", {"accountId": "joe", "filter": {"role": "sent"}}, "1"],
        ["Mailbox/set", {"accountId": "joe", "create": {"w": {"name": "Work", "parentId": null}}}, "2"],
        ["Mailbox/set", {"accountId": "joe", "create": {"y": {"name": "2026", "parentId": "#w"}}}, "3"],
        ["Mailbox/get", {"accountId": "joe", "ids": ["#y"]}, "4"],
        ["Mailbox/set", {"accountId": "joe", "update": {"#y": {"name": "2027"}}, "destroy": ["#w"]}, "5"],
    ]));
    let drafts = method(&r, 0, "Mailbox/query")["ids"][0]
        .as_str()
        .expect("drafts")
        .to_owned();
    let sent = method(&r, 1, "Mailbox/query")["ids"][0]
        .as_str()
        .expect("sent")
        .to_owned();
    let work = method(&r, 2, "Mailbox/set")["created"]["w"]["id"]
        .as_str()
        .expect("created")
        .to_owned();
    let y = &method(&r, 4, "Mailbox/get")["list"][0];
    assert_eq!(y["name"], "2026");
    assert_eq!(y["parentId"], json!(work));
    let s5 = method(&r, 5, "Mailbox/set");
    assert_eq!(s5["notDestroyed"]["#w"]["type"], "mailboxHasChild", "{s5}");
    assert_eq!(s5["updated"].as_object().map(|o| o.len()), Some(1), "{s5}");
    mailbox_query_changes(&server, &work);

    // Upload an attachment, create a draft with it.
    let up = server.curl(
        &[
            "-u",
            "joe:pw",
            "-H",
            "Content-Type: application/pdf",
            "--data-binary",
            "%PDF-1.4 fake\n",
        ],
        "/jmap/upload/joe/",
    );
    assert_eq!(up.status, 201);
    let blob = up.json()["blobId"].as_str().expect("blobId").to_owned();
    let r = server.api(json!([
        ["Email/set", {"accountId": "joe", "create": {"d": {
            "mailboxIds": {drafts.clone(): true},
            "keywords": {"$draft": true, "$seen": true},
            "from": [{"name": "Joe", "email": "joe@example.com"}],
            "to": [{"name": "Bob", "email": "bob@example.org"}],
            "bcc": [{"email": "secret@example.org"}],
            "subject": "Quarterly report",
            "textBody": [{"partId": "t", "type": "text/plain"}],
            "bodyValues": {"t": {"value": "See the attached report.\nJoe"}},
            "attachments": [{"blobId": blob, "type": "application/pdf", "name": "report.pdf"}],
        }}}, "0"],
        ["Email/get", {"accountId": "joe", "ids": ["#d"], "fetchTextBodyValues": true,
            "properties": ["subject", "mailboxIds", "keywords", "to", "bcc", "textBody", "attachments", "bodyValues", "hasAttachment"]}, "1"],
    ]));
    let created = &method(&r, 0, "Email/set")["created"]["d"];
    let draft_id = created["id"].as_str().expect("draft id").to_owned();
    let e = &method(&r, 1, "Email/get")["list"][0];
    assert_eq!(e["subject"], "Quarterly report");
    assert_eq!(e["keywords"], json!({"$draft": true, "$seen": true}));
    assert_eq!(e["mailboxIds"], json!({drafts.clone(): true}));
    assert_eq!(e["hasAttachment"], true);
    let text_part = e["textBody"][0]["partId"].as_str().expect("partId");
    assert!(e["bodyValues"][text_part]["value"]
        .as_str()
        .unwrap_or("")
        .contains("attached report"));
    let att = &e["attachments"][0];
    assert_eq!(att["name"], "report.pdf");
    assert_eq!(att["type"], "application/pdf");
    let att_blob = att["blobId"].as_str().expect("blobId");
    let dl = server.curl(
        &["-u", "joe:pw"],
        &format!("/jmap/download/joe/{att_blob}/report.pdf?type=application/pdf"),
    );
    assert_eq!(dl.status, 200);
    assert_eq!(dl.body, b"%PDF-1.4 fake\n");
    assert_eq!(dl.header("content-type"), Some("application/pdf"));

    let r = server.api(json!([
        ["EmailSubmission/get", {"accountId": "joe", "ids": []}, "0"],
        ["EmailSubmission/query", {"accountId": "joe", "sort": [{"property": "sentAt"}]}, "1"],
    ]));
    let sub_state0 = method(&r, 0, "EmailSubmission/get")["state"].clone();
    let sub_query0 = method(&r, 1, "EmailSubmission/query");
    assert_eq!(sub_query0["canCalculateChanges"], true);
    let sub_query0 = sub_query0["queryState"].clone();

    // Send it: the relay gets it without Bcc; the draft moves to Sent.
    let r = server.api(json!([
        ["Identity/get", {"accountId": "joe"}, "0"],
        ["EmailSubmission/set", {"accountId": "joe",
            "create": {"s": {"identityId": "I1", "emailId": draft_id}},
            "onSuccessUpdateEmail": {"#s": {
                format!("mailboxIds/{drafts}"): null, format!("mailboxIds/{sent}"): true,
                "keywords/$draft": null}}}, "1"],
    ]));
    assert_eq!(method(&r, 0, "Identity/get")["list"][0]["id"], "I1");
    let sub = method(&r, 1, "EmailSubmission/set");
    assert_eq!(sub["created"]["s"]["undoStatus"], "final", "{sub}");
    assert_eq!(r[2][0], "Email/set", "implicit Email/set: {}", r[2]);
    assert!(
        r[2][1]["updated"]
            .as_object()
            .is_some_and(|u| u.contains_key(&draft_id)),
        "{}",
        r[2]
    );
    let got = std::fs::read_to_string(&relay.file).expect("relay received");
    assert!(got.contains("Subject: Quarterly report"), "{got}");
    assert!(got.contains("bob@example.org"));
    assert!(
        got.contains("RCPT TO:<secret@example.org>"),
        "Bcc is a recipient: {got}"
    );
    assert!(
        !got.to_ascii_lowercase().contains("\nbcc:"),
        "Bcc header removed: {got}"
    );
    let r = server.api(json!([
        ["Email/query", {"accountId": "joe", "filter": {"inMailbox": sent}}, "0"],
        ["Email/get", {"accountId": "joe", "#ids": {"resultOf": "0", "name": "Email/query", "path": "/ids"}, "properties": ["subject", "keywords"]}, "1"],
        ["Email/query", {"accountId": "joe", "filter": {"inMailbox": drafts}}, "2"],
    ]));
    let in_sent = &method(&r, 1, "Email/get")["list"];
    assert_eq!(in_sent[0]["subject"], "Quarterly report");
    assert_eq!(in_sent[0]["keywords"], json!({"$seen": true}));
    assert_eq!(method(&r, 2, "Email/query")["ids"], json!([]));
    let sub1 = sub["created"]["s"]["id"]
        .as_str()
        .expect("submission id")
        .to_owned();
    let after_restart = submissions_are_kept(
        &server,
        &relay,
        &drafts,
        &draft_id,
        &sub1,
        &sub_state0,
        &sub_query0,
    );

    // Email/parse and Email/import of an uploaded message; SearchSnippet/get.
    let raw = msg(7, "Imported lunch plans");
    let up = server.curl(
        &[
            "-u",
            "joe:pw",
            "--data-binary",
            &raw,
            "-H",
            "Content-Type: message/rfc822",
        ],
        "/jmap/upload/joe/",
    );
    let mblob = up.json()["blobId"].as_str().expect("blobId").to_owned();
    let inbox = server
        .api(json!([["Mailbox/query", {"accountId": "joe", "filter": {"role": "inbox"}}, "0"]]))[0]
        [1]["ids"][0]
        .as_str()
        .expect("inbox")
        .to_owned();
    let r = server.api(json!([
        ["Email/parse", {"accountId": "joe", "blobIds": [mblob, "Unope"], "properties": ["subject", "from"]}, "0"],
        ["Email/import", {"accountId": "joe", "emails": {"i": {"blobId": mblob, "mailboxIds": {inbox.clone(): true}, "keywords": {"$seen": true}}}}, "1"],
        ["SearchSnippet/get", {"accountId": "joe", "filter": {"text": "lunch"}, "emailIds": ["#i"]}, "2"],
        ["Email/get", {"accountId": "joe", "ids": ["#i", "#nope"], "properties": ["subject"]}, "3"],
    ]));
    let p = method(&r, 0, "Email/parse");
    assert_eq!(p["parsed"][&mblob]["subject"], "Imported lunch plans");
    assert_eq!(p["notFound"], json!(["Unope"]));
    let imported = &method(&r, 1, "Email/import")["created"]["i"]["id"];
    assert!(imported.is_string());
    // A creation id from Email/import resolves in Email/get (RFC 8620 5.3); an unknown one
    // is not found as given.
    let g = method(&r, 3, "Email/get");
    assert_eq!(g["list"][0]["id"], *imported, "{g}");
    assert_eq!(g["list"][0]["subject"], "Imported lunch plans", "{g}");
    assert_eq!(g["notFound"], json!(["#nope"]), "{g}");
    let snip = &method(&r, 2, "SearchSnippet/get")["list"][0];
    assert_eq!(snip["subject"], "Imported <mark>lunch</mark> plans");
    assert!(
        snip["preview"]
            .as_str()
            .unwrap_or("")
            .contains("<mark>lunch</mark>"),
        "{snip}"
    );
    // An upload outlives a restart (it expires by age); a partial one left behind does not.
    let up = server.curl(
        &["-u", "joe:pw", "--data-binary", "kept across restarts"],
        "/jmap/upload/joe/",
    );
    let kept = up.json()["blobId"].as_str().expect("blobId").to_owned();
    let uploads = dir.path().join("data/http/uploads/joe");
    let stale = uploads.join("0123456789abcdef0123456789abcdef.part");
    std::fs::write(&stale, b"half an upload").expect("partial file");
    drop(server);

    // Without a relay, a submission is refused in JMAP's terms.
    std::fs::write(dir.path().join("config/msg.conf"), "").expect("msg.conf");
    let server = Server::start(dir.path(), &[]);
    assert!(!stale.exists(), "partial uploads are removed at start");
    let dl = server.curl(
        &["-u", "joe:pw"],
        &format!("/jmap/download/joe/{kept}/k.txt"),
    );
    assert_eq!(
        (dl.status, dl.body.as_slice()),
        (200, &b"kept across restarts"[..])
    );
    let r = server.api(json!([["Email/query", {"accountId": "joe"}, "0"]]));
    let any = method(&r, 0, "Email/query")["ids"][0].clone();
    let r = server.api(json!([
        ["EmailSubmission/set", {"accountId": "joe", "create": {"s": {"identityId": "I1", "emailId": any}}}, "0"],
    ]));
    assert_eq!(
        method(&r, 0, "EmailSubmission/set")["notCreated"]["s"]["type"],
        "forbiddenToSend"
    );
    after_restart(&server);
}

/// Mailbox/queryChanges (RFC 8620 5.6): for queries with and without filters and sorts,
/// the old results with `removed` taken out and `added` put in are the new results, across
/// creations, a rename that moves a folder in the sort, and a destruction.
fn mailbox_query_changes(server: &Server, work: &str) {
    let queries = [
        json!({"accountId": "joe"}),
        json!({"accountId": "joe", "sort": [{"property": "name"}]}),
        json!({"accountId": "joe", "filter": {"parentId": null},
            "sort": [{"property": "sortOrder"}, {"property": "name", "isAscending": false}]}),
        json!({"accountId": "joe", "filter": {"parentId": work}, "sort": [{"property": "name"}]}),
        json!({"accountId": "joe", "filter": {"operator": "OR", "conditions": [{"name": "a"}, {"role": "inbox"}]}}),
    ];
    let snapshot = || -> Vec<(Vec<Value>, Value)> {
        let calls: Vec<Value> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| json!(["Mailbox/query", q, i.to_string()]))
            .collect();
        server
            .api(json!(calls))
            .iter()
            .map(|r| {
                assert_eq!(r[1]["canCalculateChanges"], true, "{r}");
                (
                    r[1]["ids"].as_array().expect("ids").clone(),
                    r[1]["queryState"].clone(),
                )
            })
            .collect()
    };
    let omitted = std::cell::Cell::new(0usize);
    let check = |old: &[(Vec<Value>, Value)]| {
        let now = snapshot();
        for (i, q) in queries.iter().enumerate() {
            let mut args = q.clone();
            args["sinceQueryState"] = old[i].1.clone();
            args["calculateTotal"] = json!(true);
            let r = server.api(json!([["Mailbox/queryChanges", args, "0"]]));
            let c = method(&r, 0, "Mailbox/queryChanges");
            assert_eq!(c["newQueryState"], now[i].1, "{c}");
            let removed = c["removed"].as_array().expect("removed");
            let mut ids: Vec<Value> = old[i]
                .0
                .iter()
                .filter(|id| !removed.contains(id))
                .cloned()
                .collect();
            let mut added = c["added"].as_array().expect("added").clone();
            added.sort_by_key(|a| a["index"].as_u64());
            for a in added {
                let at = a["index"].as_u64().expect("index") as usize;
                assert!(at <= ids.len(), "{c}");
                ids.insert(at, a["id"].clone());
            }
            assert_eq!(ids, now[i].0, "query {q}: {c}");
            assert_eq!(c["total"], now[i].0.len(), "{c}");
            // upToId: a client that cached the old results only as far as one id has them
            // exact that far, and is not told of additions after it.
            let Some(up) = old[i].0.get(old[i].0.len() / 2) else {
                continue;
            };
            let full_added = c["added"].as_array().expect("added").len();
            args["upToId"] = up.clone();
            let r = server.api(json!([["Mailbox/queryChanges", args, "0"]]));
            let c = method(&r, 0, "Mailbox/queryChanges");
            let removed = c["removed"].as_array().expect("removed");
            let cached = old[i].0.iter().position(|id| id == up).expect("upToId");
            let mut ids: Vec<Value> = old[i].0[..=cached]
                .iter()
                .filter(|id| !removed.contains(id))
                .cloned()
                .collect();
            let mut added = c["added"].as_array().expect("added").clone();
            added.sort_by_key(|a| a["index"].as_u64());
            let at_now = now[i].0.iter().position(|id| id == up);
            match at_now {
                Some(p) => {
                    for a in &added {
                        let at = a["index"].as_u64().expect("index") as usize;
                        assert!(at <= p, "added after upToId: {c}");
                        ids.insert(at.min(ids.len()), a["id"].clone());
                    }
                    assert_eq!(ids[..=p], now[i].0[..=p], "query {q} upToId {up}: {c}");
                    omitted.set(omitted.get() + full_added - added.len());
                }
                // Gone from the results: upToId means nothing then.
                None => assert_eq!(added.len(), full_added, "{c}"),
            }
        }
        now
    };
    let s0 = snapshot();
    let r = server.api(json!([
        ["Mailbox/set", {"accountId": "joe", "create": {
            "a": {"name": "Alpha", "parentId": null},
            "z": {"name": "Zed", "parentId": work}}}, "0"],
        ["Mailbox/query", {"accountId": "joe", "filter": {"parentId": work}}, "1"],
    ]));
    let alpha = method(&r, 0, "Mailbox/set")["created"]["a"]["id"].clone();
    let child = method(&r, 1, "Mailbox/query")["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .find(|id| **id != method(&r, 0, "Mailbox/set")["created"]["z"]["id"])
        .expect("Work/2027")
        .clone();
    let r = server.api(json!([
        ["Mailbox/set", {"accountId": "joe", "update": {child.as_str().expect("id"): {"name": "Aardvark"}}}, "0"],
    ]));
    assert_eq!(
        method(&r, 0, "Mailbox/set")["updated"]
            .as_object()
            .map(|o| o.len()),
        Some(1),
        "{}",
        r[0]
    );
    let s1 = check(&s0);
    let r = server.api(json!([
        ["Mailbox/set", {"accountId": "joe", "destroy": [alpha]}, "0"],
    ]));
    assert_eq!(method(&r, 0, "Mailbox/set")["destroyed"], json!([alpha]));
    check(&s1);
    check(&s0);
    assert!(omitted.get() > 0, "upToId left nothing out");
    // Bad states and too many changes are the errors RFC 8620 names.
    let mut args = queries[0].clone();
    args["sinceQueryState"] = json!("nonsense");
    let mut few = queries[0].clone();
    few["sinceQueryState"] = s0[0].1.clone();
    few["maxChanges"] = json!(1);
    let mut bad_up_to = few.clone();
    bad_up_to["maxChanges"] = json!(null);
    bad_up_to["upToId"] = json!(7);
    let r = server.api(json!([
        ["Mailbox/queryChanges", args, "0"],
        ["Mailbox/queryChanges", few, "1"],
        ["Mailbox/queryChanges", bad_up_to, "2"],
    ]));
    assert_eq!(r[0][1]["type"], "cannotCalculateChanges", "{}", r[0]);
    assert_eq!(r[1][1]["type"], "tooManyChanges", "{}", r[1]);
    assert_eq!(r[2][1]["type"], "invalidArguments", "{}", r[2]);
}

/// EmailSubmission/get, /changes, /query, /queryChanges and /set update and destroy over
/// the submissions this server made (RFC 8621 7), a second submission whose draft is
/// destroyed by onSuccessDestroyEmail; returns the checks to run after a restart.
fn submissions_are_kept(
    server: &Server,
    relay: &Relay,
    drafts: &str,
    draft_id: &str,
    sub1: &str,
    state0: &Value,
    query0: &Value,
) -> impl Fn(&Server) {
    let r = server.api(json!([
        ["EmailSubmission/get", {"accountId": "joe"}, "0"],
        ["EmailSubmission/changes", {"accountId": "joe", "sinceState": state0}, "1"],
        ["EmailSubmission/query", {"accountId": "joe", "filter": {"undoStatus": "final", "emailIds": [draft_id]}}, "2"],
        ["EmailSubmission/set", {"accountId": "joe", "update": {sub1: {"undoStatus": "canceled"}}}, "3"],
        ["EmailSubmission/get", {"accountId": "joe", "ids": [sub1, "Snope"], "properties": ["deliveryStatus"]}, "4"],
    ]));
    let got = method(&r, 0, "EmailSubmission/get");
    let s = &got["list"][0];
    assert_eq!(got["list"].as_array().map(Vec::len), Some(1), "{got}");
    assert_eq!(s["id"], sub1);
    assert_eq!(s["emailId"], draft_id);
    assert_eq!(s["identityId"], "I1");
    assert_eq!(s["undoStatus"], "final");
    assert!(s["threadId"].is_string(), "{s}");
    assert!(
        s["sendAt"].as_str().is_some_and(|d| d.ends_with('Z')),
        "{s}"
    );
    assert!(s["envelope"]["rcptTo"]
        .as_array()
        .is_some_and(|r| r.iter().any(|a| a["email"] == "secret@example.org")));
    let reply = s["deliveryStatus"]["bob@example.org"]["smtpReply"]
        .as_str()
        .unwrap_or("");
    assert!(reply.starts_with("250") && reply.contains("queued"), "{s}");
    let changes = method(&r, 1, "EmailSubmission/changes");
    assert_eq!(changes["created"], json!([sub1]), "{changes}");
    assert_eq!(changes["newState"], got["state"]);
    assert_eq!(method(&r, 2, "EmailSubmission/query")["ids"], json!([sub1]));
    assert_eq!(
        method(&r, 3, "EmailSubmission/set")["notUpdated"][sub1]["type"],
        "cannotUnsend"
    );
    let g = method(&r, 4, "EmailSubmission/get");
    assert_eq!(g["notFound"], json!(["Snope"]));
    assert!(g["list"][0]["deliveryStatus"].is_object() && g["list"][0]["envelope"].is_null());

    // A second message, its draft destroyed once sent.
    let r = server.api(json!([
        ["Email/set", {"accountId": "joe", "create": {"d2": {
            "mailboxIds": {drafts: true}, "keywords": {"$draft": true},
            "from": [{"email": "joe@example.com"}], "to": [{"email": "carol@example.org"}],
            "subject": "Second note", "bodyValues": {"t": {"value": "Hi Carol"}},
            "textBody": [{"partId": "t", "type": "text/plain"}]}}}, "0"],
        ["EmailSubmission/set", {"accountId": "joe",
            "create": {"s2": {"identityId": "I1", "emailId": "#d2",
                "envelope": {"mailFrom": {"email": "joe@example.com"}, "rcptTo": [{"email": "carol@example.org"}]}}},
            "onSuccessDestroyEmail": ["#s2"]}, "1"],
    ]));
    let d2 = method(&r, 0, "Email/set")["created"]["d2"]["id"]
        .as_str()
        .expect("d2")
        .to_owned();
    let set2 = method(&r, 1, "EmailSubmission/set");
    let sub2 = set2["created"]["s2"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{set2}"))
        .to_owned();
    assert_eq!(r[2][0], "Email/set", "implicit Email/set: {}", r[2]);
    assert_eq!(r[2][1]["destroyed"], json!([d2]), "{}", r[2]);
    let gone = server.api(
        json!([["Email/get", {"accountId": "joe", "ids": [d2], "properties": ["subject"]}, "0"]]),
    );
    assert_eq!(method(&gone, 0, "Email/get")["notFound"], json!([d2]));
    assert!(std::fs::read_to_string(&relay.file)
        .expect("relay file")
        .contains("Subject: Second note"));

    let r = server.api(json!([
        ["EmailSubmission/queryChanges", {"accountId": "joe", "sinceQueryState": query0,
            "sort": [{"property": "sentAt"}], "calculateTotal": true}, "0"],
        ["EmailSubmission/set", {"accountId": "joe", "destroy": [sub1]}, "1"],
        ["EmailSubmission/changes", {"accountId": "joe", "sinceState": set2["newState"]}, "2"],
        ["EmailSubmission/changes", {"accountId": "joe", "sinceState": state0, "maxChanges": 1}, "3"],
        ["EmailSubmission/changes", {"accountId": "joe", "sinceState": "j999"}, "4"],
    ]));
    let qc = method(&r, 0, "EmailSubmission/queryChanges");
    assert_eq!(qc["removed"], json!([]));
    assert_eq!(
        qc["added"],
        json!([{"id": sub1, "index": 0}, {"id": sub2, "index": 1}]),
        "{qc}"
    );
    assert_eq!(qc["total"], 2);
    assert_eq!(
        method(&r, 1, "EmailSubmission/set")["destroyed"],
        json!([sub1])
    );
    let c = method(&r, 2, "EmailSubmission/changes");
    assert_eq!(
        (&c["created"], &c["destroyed"]),
        (&json!([]), &json!([sub1]))
    );
    let c = method(&r, 3, "EmailSubmission/changes");
    assert_eq!(c["hasMoreChanges"], true, "{c}");
    assert_eq!(c["created"], json!([sub1]));
    assert_eq!(r[4][1]["type"], "cannotCalculateChanges");

    let (state0, sub2) = (state0.clone(), sub2.clone());
    move |server: &Server| {
        // After a restart the journal still knows: sub1 destroyed, sub2 kept as it was.
        let r = server.api(json!([
            ["EmailSubmission/get", {"accountId": "joe"}, "0"],
            ["EmailSubmission/changes", {"accountId": "joe", "sinceState": state0}, "1"],
            ["EmailSubmission/query", {"accountId": "joe"}, "2"],
        ]));
        let g = method(&r, 0, "EmailSubmission/get");
        assert_eq!(g["list"].as_array().map(Vec::len), Some(1), "{g}");
        assert_eq!(g["list"][0]["id"], sub2);
        assert_eq!(g["list"][0]["undoStatus"], "final");
        assert!(
            g["list"][0]["deliveryStatus"]["carol@example.org"]["smtpReply"]
                .as_str()
                .is_some_and(|r| r.starts_with("250"))
        );
        let c = method(&r, 1, "EmailSubmission/changes");
        // Made and destroyed since state0: sub1 is in neither list.
        assert_eq!(
            (&c["created"], &c["destroyed"]),
            (&json!([sub2]), &json!([]))
        );
        assert_eq!(method(&r, 2, "EmailSubmission/query")["ids"], json!([sub2]));
    }
}

/// Over HTTPS (implicit TLS, a self-signed certificate made at first start) the login
/// cookies are marked Secure.
#[test]
fn https_login_cookies_are_secure() {
    let dir = instance(&["joe"], "");
    let server = Server::start(dir.path(), &["--listen-tls", "127.0.0.1:0"]);
    let tls_addr = server.proc.addr(1).to_string();
    let out = Command::new("curl")
        .args([
            "-s",
            "-i",
            "-k",
            "--max-time",
            "30",
            "--data",
            "username=joe&password=pw",
        ])
        .arg(format!("https://{tls_addr}/login"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("HTTP/1.1 303"), "{text}");
    let cookies: Vec<&str> = text
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .collect();
    assert_eq!(cookies.len(), 2, "{text}");
    assert!(
        cookies.iter().all(|c| c.contains("; Secure")),
        "{cookies:?}"
    );
}

/// The session cap (descriptor check): past service.http.sessionsperprocess connections a
/// client gets 503 and the connection is closed.
#[test]
fn session_cap_answers_503() {
    let dir = instance(&["joe"], "service.http.sessionsperprocess = 1\n");
    let server = Server::start(dir.path(), &[]);
    let mut first = TcpStream::connect(server.addr).expect("connect");
    write!(
        first,
        "GET /jmap/session HTTP/1.1\r\nHost: x\r\nAuthorization: Basic am9lOnB3\r\n\r\n"
    )
    .expect("write");
    let mut buf = [0u8; 512];
    let n = first.read(&mut buf).expect("first answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut second = TcpStream::connect(server.addr).expect("connect");
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = second.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(first);
}
