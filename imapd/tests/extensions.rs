//! The later extensions against the real binary: LITERAL- before login (RFC 7888),
//! CATENATE (RFC 4469), ESORT (RFC 5267), VANISHED (EARLIER) across a compaction
//! (RFC 7162) and large FETCH BODY[] streamed from the message file.

mod common;

use common::{instance, run_python, Server};

#[test]
fn literal_minus_before_login_literal_plus_after() {
    let dir = instance(&["joe"]);
    let server = Server::start(dir.path(), &["--auth-fail-delay-ms", "50"]);
    run_python(server.addr, dir.path(), LITERAL_MINUS, &[]);
}

const LITERAL_MINUS: &str = r#"
r = Raw()
check(" LITERAL- " in r.greeting and "LITERAL+" not in r.greeting, r.greeting)
# 4096 octets non-synchronising: allowed under LITERAL-.
v = b"x" * 4096
r.send(b'a1 ID ("name" {4096+}\r\n' + v + b')\r\n')
u, t = r.until("a1")
check(t.startswith("a1 OK"), t)
# 4097: tagged BAD [TOOBIG]; the octets are read and thrown away, the session goes on.
r.send(b'a2 ID ("name" {4097+}\r\n' + v + b'y)\r\n')
u, t = r.until("a2")
check(t.startswith("a2 BAD [TOOBIG]") and "LITERAL-" in t, t)
u, t = r.cmd("a3", "NOOP")
check(t.startswith("a3 OK"), t)
# A synchronising literal of the same size is invited as usual.
r.send('a4 ID ("name" {5000}\r\n')
check(r.line().startswith("+ "), "continuation")
r.send(b"z" * 5000 + b")\r\n")
u, t = r.until("a4")
check(t.startswith("a4 OK"), t)
u, t = r.cmd("a5", "LOGIN joe pw")
check(t.startswith("a5 OK [CAPABILITY ") and "LITERAL+" in t and "LITERAL-" not in t, t)
# After login LITERAL+ holds: a large non-synchronising literal is accepted.
name = b"N" * 5000
r.send(b'a6 ID ("name" {5000+}\r\n' + name + b')\r\n')
u, t = r.until("a6")
check(t.startswith("a6 OK"), t)
u, t = r.cmd("a7", "CAPABILITY")
check(" LITERAL+ " in u[0] + " " and "LITERAL-" not in u[0], u)
"#;

#[test]
fn catenate_builds_messages_from_text_and_urls() {
    let dir = instance(&["joe", "bob"]);
    // A small message size limit, so TOOBIG is quick to reach.
    std::fs::create_dir_all(dir.path().join("config")).expect("config");
    std::fs::write(
        dir.path().join("config/msg.conf"),
        "local.store.maxmessagesize = 20000\n",
    )
    .expect("msg.conf");
    let server = Server::start(dir.path(), &["--auth-fail-delay-ms", "50"]);
    run_python(server.addr, dir.path(), CATENATE, &[]);
}

const CATENATE: &str = r#"
orig = (b"From: joe@example.com\r\nSubject: draft\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n"
        b"--B--\r\n")
m = login()
typ, data = m.append("Drafts", None, None, orig)
check(typ == "OK", data)
typ, data = m.select("Drafts")
uv = int(untagged(m, "UIDVALIDITY")[0])
base = "/Drafts;UIDVALIDITY=%d/;UID=1" % uv

r = Raw()
u, t = r.cmd("a1", "LOGIN joe pw")
check("CATENATE" in t, t)
# RFC 4469's own example shape: header and a part by URL, new text between them.
new_part = b"--B\r\nContent-Type: text/plain\r\n\r\nnew text\r\n"
r.send(('a2 APPEND Drafts (\\Draft) CATENATE (URL "%s/;SECTION=HEADER" TEXT {%d}\r\n' % (base, len(new_part) + 5)).encode())
check(r.line().startswith("+ "), "continuation for TEXT")
tail = b"\r\n--B--\r\n"
r.send(new_part + ('--B\r\n URL "%s/;SECTION=2.MIME" URL "%s/;SECTION=2" TEXT {%d+}\r\n' % (base, base, len(tail))).encode() + tail + b")\r\n")
u, t = r.until("a2")
check(re.match(r"a2 OK \[APPENDUID %d 2\]" % uv, t), t)
hdr = orig[:orig.index(b"\r\n\r\n") + 4]
part2 = b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==" 
expected = hdr + new_part + b"--B\r\n" + b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b"AAECAw==" + tail
m.noop()
typ, data = m.uid("FETCH", "2", "(FLAGS BODY.PEEK[])")
check(data[0][1] == expected, (data[0][1], expected))
check(b"\\Draft" in data[0][0], data)

# MULTIAPPEND with CATENATE: a URL relative to the selected folder, a partial range, and a
# plain literal; one APPENDUID for both.
u, t = r.cmd("b1", "SELECT Drafts")
r.send('b2 APPEND INBOX CATENATE (URL ";UID=1/;SECTION=HEADER" URL ";UID=1/;SECTION=1/;PARTIAL=0.5" TEXT {2+}\r\n\r\n) {9+}\r\nSubject:x\r\n')
u, t = r.until("b2")
check(re.match(r"b2 OK \[APPENDUID \d+ 1:2\]", t), t)
typ, data = m.select("INBOX")
typ, data = m.uid("FETCH", "1", "(BODY.PEEK[])")
check(data[0][1] == hdr + b"first\r\n", data)

# BADURL: a wrong UIDVALIDITY, a missing message, another user's URL, a URL syntax error, a
# relative URL without a selected folder. Nothing is appended, even the good message.
bad = ["/Drafts;UIDVALIDITY=%d/;UID=1" % (uv + 1), "/Drafts/;UID=99", "imap://bob@localhost/INBOX/;UID=1",
       "/Drafts/;UID=1/;URLAUTH=anonymous:internal:00", "/Nowhere/;UID=1"]
for i, url in enumerate(bad):
    r.send('c%d APPEND INBOX {9+}\r\nSubject:y CATENATE (URL "%s")\r\n' % (i, url))
    u, t = r.until("c%d" % i)
    check(t.startswith("c%d NO [BADURL %s]" % (i, url)), t)
typ, data = m.status("INBOX", "(MESSAGES)")
check(b"MESSAGES 2" in data[0], data)
u, t = r.cmd("c8", "UNSELECT")
u, t = r.cmd("c9", 'APPEND INBOX CATENATE (URL ";UID=1")')
check(t.startswith("c9 NO [BADURL ;UID=1]"), t)
# Grammar errors are BAD.
u, t = r.cmd("d1", "APPEND INBOX CATENATE ()")
check(t.startswith("d1 BAD"), t)
u, t = r.cmd("d2", 'APPEND INBOX CATENATE (TEXT "quoted")')
check(t.startswith("d2 BAD"), t)
# TOOBIG: the parts together exceed the 20000-octet limit.
big = b"Subject: big\r\n\r\n" + b"x" * 12000 + b"\r\n"
typ, data = m.append("Drafts", None, None, big)
check(typ == "OK", data)
u, t = r.cmd("e1", 'APPEND INBOX CATENATE (URL "/Drafts/;UID=3" URL "/Drafts/;UID=3/;SECTION=TEXT")')
check(t.startswith("e1 NO [TOOBIG]"), t)
u, t = r.cmd("e2", 'APPEND INBOX CATENATE (URL "/Drafts/;UID=3" TEXT {1+}\r\nx)')
check(t.startswith("e2 OK [APPENDUID"), t)
m.logout()
"#;

#[test]
fn esort_answers_esearch_in_sort_order() {
    let dir = instance(&["joe"]);
    common::deliver_many(dir.path(), "joe", "INBOX", 6);
    let server = Server::start(dir.path(), &[]);
    run_python(server.addr, dir.path(), ESORT, &[]);
}

const ESORT: &str = r#"
r = Raw()
u, t = r.cmd("a1", "LOGIN joe pw")
check(" ESORT" in t and "CONTEXT=SORT" not in t and "CONTEXT=SEARCH" not in t, t)
u, t = r.cmd("a2", "SELECT INBOX")
# Plain SORT is unchanged.
u, t = r.cmd("a3", "SORT (REVERSE SUBJECT) UTF-8 ALL")
check(u == ["* SORT 6 5 4 3 2 1"], u)
# MIN and MAX are the first and last in sort order; ALL keeps the order.
u, t = r.cmd("a4", "SORT RETURN (MIN MAX COUNT ALL) (REVERSE SUBJECT) UTF-8 ALL")
check(u == ['* ESEARCH (TAG "a4") MIN 6 MAX 1 ALL 6:1 COUNT 6'], u)
u, t = r.cmd("a5", "UID SORT RETURN () (REVERSE SUBJECT) UTF-8 NOT UID 3")
check(u == ['* ESEARCH (TAG "a5") UID ALL 6:4,2:1'], u)
u, t = r.cmd("a6", "UID SORT RETURN (COUNT MIN) (SUBJECT) UTF-8 FROM nobody")
check(u == ['* ESEARCH (TAG "a6") UID COUNT 0'], u)
# SAVE (SEARCHRES) from a SORT: the set, for later commands.
u, t = r.cmd("a7", "SORT RETURN (SAVE) (SUBJECT) UTF-8 UID 2,5")
check(u == [] and t.startswith("a7 OK"), (u, t))
u, t = r.cmd("a8", "UID FETCH $ (UID)")
check(u == ["* 2 FETCH (UID 2)", "* 5 FETCH (UID 5)"], u)
u, t = r.cmd("a9", "SORT RETURN (BOGUS) (SUBJECT) UTF-8 ALL")
check(t.startswith("a9 BAD"), t)
"#;

/// Total size of every folder index under the instance (to see that compaction ran).
fn index_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "store.idx") {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

#[test]
fn vanished_earlier_survives_compaction() {
    let dir = instance(&["joe"]);
    common::deliver_many(dir.path(), "joe", "INBOX", 4200);
    let server = Server::start(dir.path(), &[]);
    let out = run_python(server.addr, dir.path(), VANISHED_BEFORE, &[]);
    // Expunging more than 4096 records, over half the folder, compacts it: the expunged
    // records (and their modseqs) are gone from the index.
    let idx = index_bytes(dir.path());
    assert!(
        idx < 200 * 80 + 64 * 1024,
        "index not compacted: {idx} bytes"
    );
    let state = out
        .lines()
        .find_map(|l| l.strip_prefix("STATE "))
        .expect("state line");
    run_python(
        server.addr,
        dir.path(),
        VANISHED_AFTER,
        &state.split(' ').collect::<Vec<_>>(),
    );
}

const VANISHED_BEFORE: &str = r#"
r = Raw()
r.cmd("a1", "LOGIN joe pw")
r.cmd("a2", "ENABLE QRESYNC")
u, t = r.cmd("a3", "SELECT INBOX")
uv = int(re.search(r"UIDVALIDITY (\d+)", " ".join(u)).group(1))
ms = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(u)).group(1))
u, t = r.cmd("a4", "UID STORE 1:4100 +FLAGS.SILENT (\\Deleted)")
check(t.startswith("a4 OK"), t)
u, t = r.cmd("a5", "UID EXPUNGE 1:4100")
check(u[0] == "* VANISHED 1:4100", u[:3])
# One more expunge after the compaction: recorded with its modseq.
r.cmd("a6", "UID STORE 4150 +FLAGS.SILENT (\\Deleted)")
u, t = r.cmd("a7", "UID EXPUNGE 4150")
check(u[0] == "* VANISHED 4150", u)
u, t = r.cmd("a8", "NOOP")
print("STATE %d %d" % (uv, ms))
"#;

const VANISHED_AFTER: &str = r#"
uv, ms = int(extra[0]), int(extra[1])
r = Raw()
r.cmd("b1", "LOGIN joe pw")
r.cmd("b2", "ENABLE QRESYNC")
# The client last saw the folder before the expunges: all of them are reported, though
# compaction dropped the records of 1:4100.
u, t = r.cmd("b3", "SELECT INBOX (QRESYNC (%d %d))" % (uv, ms))
check("* VANISHED (EARLIER) 1:4100,4150" in u, u[:5])
check("* 99 EXISTS" in u, u[:5])
hms = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(u)).group(1))
# Within the client's known UIDs only.
u, t = r.cmd("b4", "SELECT INBOX (QRESYNC (%d %d 4000:4200))" % (uv, ms))
check("* VANISHED (EARLIER) 4000:4100,4150" in u, u[:5])
u, t = r.cmd("b5", "SELECT INBOX (QRESYNC (%d %d 1:4000000000))" % (uv, ms))
check("* VANISHED (EARLIER) 1:4100,4150" in u, u[:5])
# A client that is up to date hears nothing.
u, t = r.cmd("b6", "SELECT INBOX (QRESYNC (%d %d))" % (uv, hms))
check(not any("VANISHED" in l for l in u), u)
# UID FETCH ... (CHANGEDSINCE m VANISHED) says the same for its UID set.
u, t = r.cmd("b7", "UID FETCH 4090:4160 (FLAGS) (CHANGEDSINCE %d VANISHED)" % ms)
check(u[0] == "* VANISHED (EARLIER) 4090:4100,4150", u)
check(t.startswith("b7 OK"), t)
"#;

/// A large message of numbered lines; the Python side builds the same bytes.
fn large_message(lines: usize) -> Vec<u8> {
    let mut m = b"From: big@example.com\r\nSubject: large\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    for i in 0..lines {
        m.extend_from_slice(
            format!("{i:08} abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n")
                .as_bytes(),
        );
    }
    m
}

#[test]
fn large_fetches_stream_from_the_file() {
    let dir = instance(&["joe"]);
    // 30 MB, delivered through the store so the server never held it.
    let lines = 30 * 1024 * 1024 / 73;
    let data = large_message(lines);
    let size = data.len();
    common::rt().block_on(async {
        let client = store_client::StoreClient::open(dir.path())
            .await
            .expect("store");
        let s = client.session_for("joe").await.expect("session");
        s.append("INBOX", data, &[], None).await.expect("append");
    });
    let server = Server::start(dir.path(), &[]);
    run_python(server.addr, dir.path(), "login().select('INBOX')", &[]);
    let (before, rss_before) = (server.hwm_kib(), server.rss_kib());
    // VmHWM also counts what login once cost (a password hash), so resident memory is
    // sampled every millisecond while the sessions fetch.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, pid) = (stop.clone(), server.proc.pid());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = st
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0u64);
                peak = peak.max(rss);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            peak
        })
    };
    let out = run_python(
        server.addr,
        dir.path(),
        STREAM,
        &[&lines.to_string(), &size.to_string()],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rss_peak = sampler.join().expect("sampler");
    let after = server.hwm_kib();
    let grew = after.saturating_sub(before);
    let rss_grew = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "three sessions fetching a {} MB message at once: VmHWM {before} -> {after} KiB (+{grew}), VmRSS {rss_before} -> peak {rss_peak} KiB (+{rss_grew}); {}",
        size >> 20,
        out.lines().find(|l| l.starts_with("fetched")).unwrap_or("")
    );
    // Held whole, each of the three would have cost the message size several times over.
    assert!(
        grew < 8 * 1024,
        "peak memory grew by {grew} KiB while streaming"
    );
    assert!(
        rss_grew < 8 * 1024,
        "resident memory grew by {rss_grew} KiB while streaming"
    );
}

const STREAM: &str = r#"
import threading, hashlib
lines, size = int(extra[0]), int(extra[1])
msg = bytearray(b"From: big@example.com\r\nSubject: large\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n")
for i in range(lines):
    msg += b"%08d abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n" % i
msg = bytes(msg)
check(len(msg) == size, (len(msg), size))
want = hashlib.sha256(msg).hexdigest()
hlen = msg.index(b"\r\n\r\n") + 4
results = {}
def fetch(name, item):
    m = login()
    m.select("INBOX", readonly=True)
    t = time.time()
    typ, data = m.fetch("1", "(%s)" % item)
    results[name] = (typ, data[0][0], data[0][1], time.time() - t)
    m.logout()
threads = [threading.Thread(target=fetch, args=a) for a in
           [("body", "BODY.PEEK[]"), ("binary", "BINARY.PEEK[]"), ("rfc822", "RFC822")]]
for t in threads: t.start()
for t in threads: t.join()
for name, (typ, head, body, secs) in results.items():
    check(typ == "OK", (name, typ))
    check(len(body) == size and hashlib.sha256(body).hexdigest() == want, (name, head, len(body)))
print("fetched %d bytes three times at once in %.1f s" % (size, max(r[3] for r in results.values())))
# Partial and TEXT ranges stream too.
m = login()
m.select("INBOX", readonly=True)
typ, data = m.fetch("1", "(BODY.PEEK[TEXT]<1000.5000000>)")
check(data[0][1] == msg[hlen + 1000:hlen + 1000 + 5000000], (data[0][0], len(data[0][1])))
check(b"BODY[TEXT]<1000> {5000000}" in data[0][0], data[0][0])
typ, data = m.fetch("1", "(BODY.PEEK[1]<%d.100>)" % (size - hlen - 50))
check(data[0][1] == msg[-50:], data)
typ, data = m.fetch("1", "(RFC822.TEXT)")
check(data[0][1] == msg[hlen:], (data[0][0], len(data[0][1])))
# Small sections keep working.
typ, data = m.fetch("1", "(BODY.PEEK[HEADER])")
check(data[0][1] == msg[:hlen], data)
m.logout()
"#;

#[test]
fn objectid_emailid_threadid_mailboxid() {
    let dir = instance(&["joe"]);
    let server = Server::start(dir.path(), &[]);
    run_python(server.addr, dir.path(), OBJECTID, &[]);
}

const OBJECTID: &str = r#"
m = login()
msgs = [
    b"Message-ID: <a@x>\r\nSubject: start\r\n\r\nfirst\r\n",
    b"Message-ID: <b@x>\r\nIn-Reply-To: <a@x>\r\nReferences: <a@x>\r\nSubject: Re: start\r\n\r\nsecond\r\n",
    b"Message-ID: <c@x>\r\nIn-Reply-To: <b@x>\r\nReferences: <a@x> <b@x>\r\nSubject: Re: start\r\n\r\nthird\r\n",
    b"Message-ID: <d@x>\r\nSubject: other\r\n\r\nunrelated\r\n",
]
for b in msgs:
    check(m.append("INBOX", None, None, b)[0] == "OK", "append")
r = Raw()
r.cmd("a1", "LOGIN joe pw")
u, t = r.cmd("a2", "SELECT INBOX")
mbox = re.search(r"MAILBOXID \((F[^)]+)\)", " ".join(u)).group(1)
u, t = r.cmd("a3", "UID FETCH 1:4 (EMAILID THREADID)")
ids = {}
for l in u:
    mm = re.match(r"\* \d+ FETCH \(UID (\d+) EMAILID \((M[0-9a-f]{24})\) THREADID \((T[0-9a-f]{24})\)\)", l)
    check(mm, l)
    ids[int(mm.group(1))] = (mm.group(2), mm.group(3))
check(len(ids) == 4 and len({e for e, _ in ids.values()}) == 4, ids)
# A reply chain shares its THREADID; an unrelated message does not.
check(ids[1][1] == ids[2][1] == ids[3][1] != ids[4][1], ids)
u, t = r.cmd("a4", "UID SEARCH THREADID %s" % ids[1][1])
check(u == ["* SEARCH 1 2 3"], u)
u, t = r.cmd("a5", "UID SEARCH EMAILID %s" % ids[2][0])
check(u == ["* SEARCH 2"], u)
u, t = r.cmd("a6", "UID SEARCH OR EMAILID %s EMAILID Mnot-an-id" % ids[4][0])
check(u == ["* SEARCH 4"], u)
# MOVE and COPY keep EMAILID and THREADID (RFC 8474 5.1); the folder has its own MAILBOXID.
u, t = r.cmd("b1", "UID MOVE 2 Archive")
check(t.startswith("b1 OK"), t)
u, t = r.cmd("b2", "UID COPY 3 Archive")
u, t = r.cmd("b3", "SELECT Archive")
mbox2 = re.search(r"MAILBOXID \((F[^)]+)\)", " ".join(u)).group(1)
check(mbox2 != mbox, (mbox, mbox2))
u, t = r.cmd("b4", "FETCH 1:2 (EMAILID THREADID)")
check(u == ["* 1 FETCH (EMAILID (%s) THREADID (%s))" % ids[2], "* 2 FETCH (EMAILID (%s) THREADID (%s))" % ids[3]], u)
u, t = r.cmd("b5", 'STATUS INBOX (MAILBOXID)')
check(u == ["* STATUS INBOX (MAILBOXID (%s))" % mbox], u)
"#;
