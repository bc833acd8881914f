//! End-to-end tests: the real `imapd` binary on an ephemeral port over a temporary instance,
//! driven by Python's imaplib, imapclient and raw sockets (for what no library says), with
//! the RFCs' exchanges as the expectations.

mod common;

use common::{binary, deliver_many, instance, run_python, Server};

/// The tests here run one at a time: several assert latencies (IDLE within a second) that
/// two cores shared by four debug-build servers and their clients would not give.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn imaplib_core_commands() {
    let _serial = serial();
    let dir = instance(&["joe", "bob"]);
    deliver_many(dir.path(), "joe", "INBOX", 3);
    let server = Server::start(dir.path(), &["--auth-fail-delay-ms", "50"]);
    run_python(server.addr, dir.path(), IMAPLIB_CORE, &[]);
}

const IMAPLIB_CORE: &str = r#"
m = imaplib.IMAP4(host, port, timeout=30)
caps = m.capabilities
for c in ["IMAP4REV1", "IMAP4REV2", "STARTTLS", "AUTH=PLAIN", "SASL-IR", "LITERAL-", "ID", "ENABLE", "IDLE"]:
    check(c in caps, "pre-login CAPABILITY lacks " + c)
# RFC 7888 section 5: never LITERAL+ and LITERAL- together.
check("LITERAL+" not in caps, caps)
# A wrong password: NO [AUTHENTICATIONFAILED], after the delay.
try:
    m.login("joe", "wrong")
    check(False, "bad password accepted")
except imaplib.IMAP4.error as e:
    check("AUTHENTICATIONFAILED" in str(e), e)
typ, data = m.login("joe", "pw")
check(typ == "OK" and b"[CAPABILITY " in data[0], data)
typ, data = m.capability()
caps = data[0].decode().split()
for c in ["NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS",
          "SPECIAL-USE", "ESEARCH", "SEARCHRES", "CONDSTORE", "QRESYNC", "QUOTA", "MULTIAPPEND",
          "BINARY", "COMPRESS=DEFLATE", "SORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT",
          "STATUS=SIZE", "SAVEDATE", "OBJECTID", "PREVIEW", "UTF8=ACCEPT", "ACL"]:
    check(c in caps, "CAPABILITY lacks " + c)
check(any(c.startswith("APPENDLIMIT=") for c in caps), caps)
check("STARTTLS" not in caps and "LOGINDISABLED" not in caps, caps)
check("LITERAL+" in caps and "LITERAL-" not in caps, caps)

# NAMESPACE (RFC 2342) and ID (RFC 2971).
typ, data = m.namespace()
check(data[0] == b'(("" "/")) (("Other Users/" "/")) NIL', data)
typ, data = m.xatom("ID", '("name" "imaplib")')
check(b"msgsuite-imapd" in untagged(m, "ID")[0], "ID")

# Special-use folders made at first login (RFC 6154), in LIST with \HasNoChildren (CHILDREN).
typ, data = m.list()
names = {}
for l in data:
    mm = re.match(rb'\((.*)\) "/" (.*)', l)
    names[mm.group(2).decode().strip('"')] = mm.group(1).decode().split()
for f, a in [("Drafts", "\\Drafts"), ("Sent", "\\Sent"), ("Trash", "\\Trash"), ("Junk", "\\Junk"), ("Archive", "\\Archive")]:
    check(a in names.get(f, []), "special use %s: %r" % (f, names))
check(names["INBOX"] == ["\\HasNoChildren"], names)
typ, data = m.list('""', '""')
check(data == [b'(\\Noselect) "/" ""'], data)

# CREATE (with parents), RENAME, SUBSCRIBE, LSUB, DELETE.
check(m.create("Work/2026")[0] == "OK", "create")
check(m.create("Work/2026")[1][0].startswith(b"[ALREADYEXISTS]"), "create twice")
typ, data = m.list('""', "Work*")
check(data == [b'(\\HasChildren) "/" Work', b'(\\HasNoChildren) "/" Work/2026'], data)
typ, data = m.list('""', "%")
check(b'(\\HasChildren) "/" Work' in data and not any(b"Work/2026" in l for l in data), data)
check(m.rename("Work/2026", "Work/Old")[0] == "OK", "rename")
check(m.subscribe("Work/Old")[0] == "OK", "subscribe")
typ, data = m.lsub('""', "Work/*")
check(data == [b'() "/" Work/Old'], data)
check(m.unsubscribe("Work/Old")[0] == "OK", "unsubscribe")
check(m.lsub('""', "Work/*")[1] == [None], "lsub after unsubscribe")
check(m.delete("Work/Old")[0] == "OK", "delete")
typ, data = m.delete("Nope")
check(typ == "NO" and data[0].startswith(b"[NONEXISTENT]"), data)
# Non-ASCII names travel in modified UTF-7 (RFC 3501 5.1.3).
check(m.create("Entw&APw-rfe")[0] == "OK", "create mUTF-7")
typ, data = m.list('""', "Entw*")
check(data == [b'(\\HasNoChildren) "/" Entw&APw-rfe'], data)

# STATUS with SIZE, HIGHESTMODSEQ, APPENDLIMIT, MAILBOXID.
typ, data = m.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ APPENDLIMIT MAILBOXID)")
st = data[0].decode()
check("MESSAGES 3" in st and "UNSEEN 3" in st and "UIDNEXT 4" in st and "DELETED 0" in st, st)
check(re.search(r"SIZE \d+", st) and "APPENDLIMIT 52428800" in st and "MAILBOXID (F" in st, st)

# SELECT: FLAGS, PERMANENTFLAGS, EXISTS, RECENT, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ.
typ, data = m.select("INBOX")
check(data == [b"3"], data)
check(untagged(m, "RECENT") == [b"3"], "RECENT")
check(untagged(m, "UIDNEXT") == [b"4"], "UIDNEXT")
check(untagged(m, "UIDVALIDITY") != [], "UIDVALIDITY")
check(untagged(m, "HIGHESTMODSEQ") != [], "HIGHESTMODSEQ")
check(b"\\Seen" in untagged(m, "FLAGS")[0], "FLAGS")
check(b"\\*" in untagged(m, "PERMANENTFLAGS")[0], "PERMANENTFLAGS")
check(untagged(m, "READ-WRITE") is not None, "READ-WRITE")

# FETCH: the message attributes.
typ, data = m.fetch("1", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
d = data[0].decode()
check(d.startswith("1 (UID 1 FLAGS (\\Recent) INTERNALDATE \""), d)
check('ENVELOPE ("Mon, 2 Mar 2026 10:01:00 +0000" "message 1" (("Sender 1" NIL "s1" "example.com"))' in d, d)
check('(NIL NIL "joe" "example.com")) NIL NIL NIL "<m1@example.com>")' in d, d)
typ, data = m.fetch("1", "(BODYSTRUCTURE BODY)")
check(b'BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 25 2 NIL NIL NIL NIL)' in data[0], data)
check(b'BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 25 2)' in data[0], data)
# BODY.PEEK does not set \Seen; BODY[] does, and FLAGS come along.
typ, data = m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (Subject)] BODY.PEEK[TEXT]<5.3>)")
check(data[0][1] == b"Subject: message 2\r\n\r\n", data)
check(data[1][0].endswith(b"BODY[TEXT]<5> {3}") and data[1][1] == b"one", data)
typ, data = m.fetch("2", "(FLAGS)")
check(data == [b"2 (FLAGS (\\Recent))"], data)
typ, data = m.fetch("2", "(BODY[])")
check(data[0][1].startswith(b"From: Sender 2") and b"\\Seen" in data[1], data)
typ, data = m.fetch("2", "(BINARY.SIZE[1] BINARY[1] RFC822.HEADER)")
check(b"BINARY.SIZE[1] 25" in data[0][0] and data[0][1] == b"line one of 2\r\nline two\r\n", data)
typ, data = m.fetch("3", "(PREVIEW EMAILID THREADID SAVEDATE MODSEQ)")
d = data[0].decode()
check('PREVIEW "line one of 3 line two"' in d and re.search(r"EMAILID \(M[0-9a-f]{24}\)", d) and re.search(r"THREADID \(T[0-9a-f]{24}\)", d), d)
check("SAVEDATE \"" in d and "MODSEQ (" in d, d)
# An unknown attribute is a tagged BAD; the session goes on.
try:
    m.fetch("1", "(BOGUS)")
    check(False, "BOGUS accepted")
except imaplib.IMAP4.error as e:
    check("unknown fetch attribute" in str(e), e)

# STORE (+FLAGS, -FLAGS, .SILENT, keywords) and SEARCH.
typ, data = m.store("1", "+FLAGS", "(\\Flagged $Work)")
check(b"\\Flagged" in data[0] and b"$Work" in data[0], data)
typ, data = m.store("1", "-FLAGS.SILENT", "($Work)")
# CONDSTORE is on (FETCH MODSEQ above): .SILENT still reports the new MODSEQ (RFC 7162 3.1.3).
check(re.match(rb"1 \(MODSEQ \(\d+\)\)$", data[0]), data)
typ, data = m.search(None, "FLAGGED")
check(data == [b"1"], data)
typ, data = m.search(None, "OR", "SUBJECT", '"message 3"', "SEEN")
check(data == [b"2 3"], data)
typ, data = m.search(None, "NOT", "SEEN", "SINCE", "1-Jan-2000")
check(data == [b"1 3"], data)
typ, data = m.uid("SEARCH", "UID", "2:*")
check(data == [b"2 3"], data)
typ, data = m.search("UTF-8", "BODY", '"line one of 3"')
check(data == [b"3"], data)
typ, data = m.search(None, "HEADER", "Message-ID", '"<m2@example.com>"')
check(data == [b"2"], data)
typ, data = m._simple_command("SEARCH", "CHARSET", "KOI8-R", "ALL")
check(typ == "NO" and b"[BADCHARSET" in data[0], data)

# APPEND with flags and date: APPENDUID (UIDPLUS).
typ, data = m.append("INBOX", "(\\Draft)", '"01-Feb-2026 12:00:00 +0100"', b"Subject: appended\r\n\r\nbody\r\n")
mm = re.match(rb"\[APPENDUID (\d+) 4\]", data[0])
check(mm, data)
uidvalidity = mm.group(1)
m.noop()
check(untagged(m, "EXISTS")[-1:] == [b"4"], "EXISTS after APPEND")
typ, data = m.fetch("4", "(FLAGS INTERNALDATE)")
check(b'\\Draft' in data[0] and b'INTERNALDATE "01-Feb-2026 11:00:00 +0000"' in data[0], data)
typ, data = m.append("Nope", None, None, b"Subject: x\r\n\r\ny\r\n")
check(typ == "NO" and data[0].startswith(b"[TRYCREATE]"), data)

# COPY (COPYUID), MOVE (COPYUID untagged, EXPUNGE), UID EXPUNGE.
typ, data = m.copy("1:2", "Archive")
check(data[0].startswith(b"[COPYUID ") and data[0].split()[2:4] == [b"1:2", b"1:2]"], data)
typ, data = m._simple_command("MOVE", "4", "Drafts")
check(typ == "OK", data)
check(untagged(m, "EXPUNGE") == [b"4"], "MOVE expunges")
check(any(b"COPYUID" in x for x in untagged(m, "OK")), "MOVE COPYUID")
m.store("3", "+FLAGS.SILENT", "\\Deleted")
m.store("2", "+FLAGS.SILENT", "\\Deleted")
typ, data = m.uid("EXPUNGE", "3")
check(typ == "OK" and untagged(m, "EXPUNGE") == [b"3"], data)
typ, data = m.expunge()
check(data == [b"2"], data)
typ, data = m.search(None, "ALL")
check(data == [b"1"], data)

# EXAMINE is read-only: STORE refused, no \Seen set by BODY[].
typ, data = m.select("Archive", readonly=True)
check(data == [b"2"], data)
typ, data = m.store("1", "+FLAGS", "\\Deleted")
check(typ == "NO", data)
typ, data = m.fetch("1", "(BODY[TEXT])")
typ, data = m.fetch("1", "(FLAGS)")
check(b"\\Seen" not in data[0], data)

# SORT and THREAD.
m.select("INBOX")
for i, (subj, ref) in enumerate([("Re: topic", "<t1@x>"), ("topic", None), ("another", None)]):
    hdr = "Subject: %s\r\nMessage-ID: <t%d@x>\r\nDate: Mon, %d Mar 2026 10:00:00 +0000\r\n" % (subj, [2, 1, 3][i], 10 + i)
    if ref:
        hdr += "References: %s\r\n" % ref
    m.append("INBOX", None, None, (hdr + "\r\nx\r\n").encode())
m.noop()
typ, data = m.uid("SORT", "(SUBJECT)", "UTF-8", "ALL")
check(data == [b"7 1 5 6"], data)
typ, data = m.sort("(REVERSE DATE)", "UTF-8", "ALL")
check(data == [b"4 3 2 1"], data)
typ, data = m.uid("THREAD", "REFERENCES", "UTF-8", "ALL")
check(data == [b"(1)(6 5)(7)"], data)
typ, data = m.thread("ORDEREDSUBJECT", "UTF-8", "ALL")
check(data == [b"(1)(2 3)(4)"], data)

# QUOTA (RFC 9208).
typ, data = m.getquotaroot("INBOX")
# imap-codec writes the root as an atom; a quoted string is the same astring (RFC 9208).
check(data[0] in ([b'INBOX "user/joe"'], [b'INBOX user/joe']), data)
check(data[1][0].startswith((b'"user/joe" (', b'user/joe (')), data)

# ACL (RFC 4314): share a folder with bob; bob sees it under Other Users/.
m.create("Shared")
m.append("Shared", None, None, b"Subject: shared\r\n\r\nfor bob\r\n")
check(m.setacl("Shared", "bob", "lr")[0] == "OK", "SETACL")
typ, data = m.getacl("Shared")
check(data == [b'Shared joe lrswipkxtea bob lr'], data)
check(m.myrights("Shared")[1] == [b'Shared lrswipkxtea'], "MYRIGHTS")
typ, data = m.xatom("LISTRIGHTS", "Shared", "bob")
data = untagged(m, "LISTRIGHTS")
check(data[0].startswith(b'Shared bob "" l r s'), data)
b = login("bob")
typ, data = b.list('""', '"Other Users/*"')
check(data == [b'(\\Noselect \\HasChildren) "/" "Other Users/joe"', b'(\\HasNoChildren) "/" "Other Users/joe/Shared"'], data)
typ, data = b.list('""', '%')
check(b'(\\Noselect \\HasChildren) "/" "Other Users"' in data, data)
try:
    b.select('"Other Users/joe/Shared"')
    check(False, "bob may only read")
except imaplib.IMAP4.readonly:
    untagged(b, "READ-ONLY")
check(untagged(b, "EXISTS") == [b"1"], "shared folder EXISTS")
typ, data = b.myrights('"Other Users/joe/Shared"')
check(data == [b'"Other Users/joe/Shared" lr'], data)
typ, data = b.select('"Other Users/joe/INBOX"')
check(typ == "NO" and b"NONEXISTENT" in data[0], data)
b.logout()
# A folder deleted under a session that has it selected: BYE, not stale numbers.
m.create("Doomed")
d = login()
d.select("Doomed")
m.delete("Doomed")
try:
    d.noop()
    check(False, "NOOP on a deleted mailbox")
except imaplib.IMAP4.abort as e:
    check("NONEXISTENT" in str(e) or "no longer exists" in str(e), e)
check(m.deleteacl("Shared", "bob")[0] == "OK", "DELETEACL")
check(m.getacl("Shared")[1] == [b'Shared joe lrswipkxtea'], "after DELETEACL")

# UNSELECT leaves the deleted flags; CLOSE expunges them silently.
m.select("INBOX")
m.store("1", "+FLAGS.SILENT", "\\Deleted")
check(m._simple_command("UNSELECT")[0] == "OK", "UNSELECT")
typ, data = m.status("INBOX", "(MESSAGES DELETED)")
check(b"MESSAGES 4 DELETED 1" in data[0], data)
m.select("INBOX")
m.close()
typ, data = m.status("INBOX", "(MESSAGES)")
check(b"MESSAGES 3" in data[0], data)
check(m.logout()[0] == "BYE", "logout")
"#;

#[test]
fn raw_protocol_extensions() {
    let _serial = serial();
    let dir = instance(&["joe"]);
    deliver_many(dir.path(), "joe", "INBOX", 5);
    // A quota set the administrator's way, for GETQUOTA's resources.
    let st = std::process::Command::new(binary("mboxutil"))
        .arg("--root")
        .arg(dir.path())
        .args(["-q", "user/joe", "-s", "10M", "-m", "1000"])
        .output()
        .expect("mboxutil");
    assert!(st.status.success(), "{st:?}");
    let server = Server::start(dir.path(), &["--auth-fail-delay-ms", "50"]);
    run_python(server.addr, dir.path(), RAW_EXTENSIONS, &[]);
}

const RAW_EXTENSIONS: &str = r#"
r = Raw()
# Capability names are case-insensitive (RFC 9051 section 4); imap-codec writes IMAP4REV1.
check(r.greeting.upper().startswith("* OK [CAPABILITY IMAP4REV1 IMAP4REV2 "), r.greeting)
# Malformed input: tagged BAD, or untagged BAD without a tag; the session goes on.
u, t = r.cmd("a1", "FROBNICATE")
check(t.startswith("a1 BAD"), t)
r.send("\r\n")
check(r.line().startswith("* BAD"), "untagged BAD")
u, t = r.cmd("a2", "SELECT INBOX")
check(t.startswith("a2 BAD") and "before authentication" in t, t)
# SASL-IR: AUTHENTICATE PLAIN with the initial response on the command line (RFC 4959).
ir = base64.b64encode(b"\0joe\0pw").decode()
u, t = r.cmd("a3", "AUTHENTICATE PLAIN " + ir)
check(t.startswith("a3 OK [CAPABILITY "), t)
# ENABLE (RFC 5161).
u, t = r.cmd("a4", "ENABLE CONDSTORE QRESYNC UTF8=ACCEPT X-UNKNOWN")
check(u == ["* ENABLED CONDSTORE QRESYNC UTF8=ACCEPT"], u)
# LITERAL+ (non-synchronising) and a synchronising literal with its continuation.
name = "Lit/Plüs".encode()
r.send(b"a5 CREATE {%d+}\r\n" % len(name) + name + b"\r\n")
u, t = r.until("a5")
check(t.startswith("a5 OK"), t)
r.send("a6 CREATE {8}\r\n")
check(r.line().startswith("+ "), "continuation")
r.send("Lit/Sync\r\n")
u, t = r.until("a6")
check(t.startswith("a6 OK"), t)
# UTF8=ACCEPT: names go out as UTF-8, not modified UTF-7.
u, t = r.cmd("a7", 'LIST "" "Lit*"')
check(u == ['* LIST (\\HasChildren) "/" Lit', '* LIST (\\HasNoChildren) "/" "Lit/Plüs"', '* LIST (\\HasNoChildren) "/" Lit/Sync'], u)
# CREATE with USE (RFC 6154) and LIST-EXTENDED selection/return options.
u, t = r.cmd("a8", "CREATE Important (USE (\\Flagged))")
check(t.startswith("a8 OK"), t)
u, t = r.cmd("a9", "CREATE Bad (USE (\\Bogus))")
check(t.startswith("a9 BAD") and "USEATTR" in t, t)
u, t = r.cmd("b1", 'LIST (SPECIAL-USE) "" "*" RETURN (SPECIAL-USE)')
check(len(u) == 6 and '* LIST (\\HasNoChildren \\Flagged) "/" Important' in u, u)
r.cmd("b2", "SUBSCRIBE Lit/Sync")
r.cmd("b3", "SUBSCRIBE Gone")
u, t = r.cmd("b4", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "Lit" RETURN (CHILDREN)')
check(u == ['* LIST (\\HasChildren) "/" Lit ("CHILDINFO" ("SUBSCRIBED"))'], u)
u, t = r.cmd("b5", 'LIST (SUBSCRIBED) "" "*"')
check('* LIST (\\NonExistent \\Subscribed) "/" Gone' in u and '* LIST (\\HasNoChildren \\Subscribed) "/" Lit/Sync' in u, u)
u, t = r.cmd("b6", 'LIST "" ("INBOX" "Lit/%") RETURN (STATUS (MESSAGES UNSEEN))')
check(u[:2] == ['* LIST (\\HasNoChildren) "/" INBOX', "* STATUS INBOX (MESSAGES 5 UNSEEN 5)"], u)
# MULTIAPPEND (RFC 3502): several messages, one APPENDUID with a UID set; all or nothing.
m1, m2 = b"Subject: one\r\n\r\nbody\r\n", b"Subject: two\r\n\r\nbody\r\n"
r.send(b"b7 APPEND Lit/Sync (\\Seen) {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(m1), m1, len(m2), m2))
u, t = r.until("b7")
check(re.match(r"b7 OK \[APPENDUID \d+ 1:2\]", t), t)
# CONDSTORE / QRESYNC (RFC 7162).
u, t = r.cmd("c1", "SELECT INBOX (CONDSTORE)")
hms = [l for l in u if "HIGHESTMODSEQ" in l][0]
modseq0 = int(re.search(r"HIGHESTMODSEQ (\d+)", hms).group(1))
uidvalidity = int(re.search(r"UIDVALIDITY (\d+)", " ".join(u)).group(1))
check("[READ-WRITE]" in t, t)
u, t = r.cmd("c2", "STORE 1 +FLAGS (\\Seen)")
check(re.match(r"\* 1 FETCH \(FLAGS \(\\Seen \\Recent\) MODSEQ \((\d+)\)\)", u[0]), u)
modseq1 = int(re.search(r"MODSEQ \((\d+)\)", u[0]).group(1))
check(modseq1 > modseq0, (modseq0, modseq1))
u, t = r.cmd("c3", "STORE 1,2 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)" % modseq0)
check(t.startswith("c3 OK [MODIFIED 1]"), t)
u, t = r.cmd("c4", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % modseq0)
check(len(u) == 2 and all("MODSEQ" in l for l in u), u)
u, t = r.cmd("c5", "SEARCH MODSEQ %d" % (modseq1 + 1))
check(re.match(r"\* SEARCH 2 \(MODSEQ \d+\)", u[0]), u)
r.cmd("c6", "STORE 3 +FLAGS.SILENT (\\Deleted)")
u, t = r.cmd("c7", "EXPUNGE")
check(u[0] == "* VANISHED 3" and not any("EXPUNGE" in l for l in u), u)
u, t = r.cmd("c8", "SELECT INBOX (QRESYNC (%d %d 1:5))" % (uidvalidity, modseq0))
check("* VANISHED (EARLIER) 3" in u, u)
check(sum(1 for l in u if re.match(r"\* \d+ FETCH \(UID \d+ FLAGS", l)) == 2, u)
check("* OK [CLOSED] previous mailbox closed" == u[0], u)
u, t = r.cmd("c9", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % modseq0)
check(u[0] == "* VANISHED (EARLIER) 3", u)
# ESEARCH (RFC 4731) and SEARCHRES (RFC 5182).
u, t = r.cmd("d1", "UID SEARCH RETURN (MIN MAX COUNT ALL) ALL")
check(u == ['* ESEARCH (TAG "d1") UID MIN 1 MAX 5 ALL 1:2,4:5 COUNT 4'], u)
u, t = r.cmd("d2", "SEARCH RETURN (SAVE) FLAGGED")
check(u == [] and t.startswith("d2 OK"), (u, t))
u, t = r.cmd("d3", "FETCH $ (UID)")
check(u == ["* 2 FETCH (UID 2)"], u)
u, t = r.cmd("d4", "SEARCH RETURN (COUNT) NOT UID $")
check(u == ['* ESEARCH (TAG "d4") COUNT 3'], u)
# BINARY (RFC 3516): APPEND of a literal8, decoded parts.
msg = b"Subject: bin\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--B--\r\n"
r.send(("d5 APPEND INBOX ~{%d+}\r\n" % len(msg)).encode() + msg + b"\r\n")
u, t = r.until("d5")
check(t.startswith("d5 OK [APPENDUID"), t)
r.send("d6 UID FETCH 6 (BINARY.PEEK[1] BINARY.SIZE[1])\r\n")
l = r.line()
check(l.endswith("BINARY[1] ~{4}"), l)
while len(r.buf) < 4:
    r.recv()
check(r.buf[:4] == b"\x00\x01\x02\x03", r.buf)
r.buf = r.buf[4:]
u, t = r.until("d6")
check(u == [" BINARY.SIZE[1] 4)"], u)
# ID, NAMESPACE, GETQUOTA.
u, t = r.cmd("e1", 'ID ("name" "raw")')
check(u[0].startswith('* ID ("name" "msgsuite-imapd"'), u)
u, t = r.cmd("e2", 'GETQUOTA "user/joe"')
check(len(u) == 1 and re.match(r'\* QUOTA "?user/joe"? \(STORAGE [1-9]\d* 10240 MESSAGE 7 1000\)$', u[0]), u)
u, t = r.cmd("e3", "SETQUOTA \"user/joe\" (STORAGE 10)")
check(t.startswith("e3 NO [NOPERM]"), t)
# IDLE on our own change, then DONE.
r.send("e4 IDLE\r\n")
check(r.line() == "+ idling", "idle")
r.send("DONE\r\n")
u, t = r.until("e4")
check(t == "e4 OK IDLE terminated", t)
# COMPRESS=DEFLATE (RFC 4978): everything after the OK is raw deflate both ways.
u, t = r.cmd("f1", "COMPRESS DEFLATE")
check(t == "f1 OK DEFLATE active", t)
r.z_out = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
r.z_in = zlib.decompressobj(-15)
u, t = r.cmd("f2", "UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])")
check(len([l for l in u if "FETCH" in l]) == 5 and t.startswith("f2 OK"), (u, t))
u, t = r.cmd("f3", "CAPABILITY")
check("COMPRESS=DEFLATE" not in u[0], u)
u, t = r.cmd("f4", "COMPRESS DEFLATE")
check(t.startswith("f4 NO [COMPRESSIONACTIVE]"), t)
# IMAP4rev2 (RFC 9051): SELECT lists the folder and leaves RECENT out; SEARCH answers ESEARCH.
u, t = r.cmd("g1", "ENABLE IMAP4rev2")
check(u == ["* ENABLED IMAP4REV2"], u)
u, t = r.cmd("g2", "SELECT Sent")
check('* LIST (\\HasNoChildren \\Sent) "/" Sent' in u and not any("RECENT" in l for l in u), u)
check("* OK [CLOSED] previous mailbox closed" in u, u)
u, t = r.cmd("g3", "SEARCH ALL")
check(u == ['* ESEARCH (TAG "g3")'], u)
u, t = r.cmd("f5", "LOGOUT")
check(u == ["* BYE logging out"], u)

# STARTTLS (RFC 9051 6.2.1), then AUTHENTICATE PLAIN with a continuation.
r = Raw()
check("STARTTLS" in r.greeting, r.greeting)
u, t = r.cmd("s1", "STARTTLS")
check(t.startswith("s1 OK"), t)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
r.s = ctx.wrap_socket(r.s)
u, t = r.cmd("s2", "CAPABILITY")
check("STARTTLS" not in u[0] and "AUTH=PLAIN" in u[0], u)
r.send("s3 AUTHENTICATE PLAIN\r\n")
check(r.line() == "+ ", "continuation")
r.send(base64.b64encode(b"\0joe\0wrong").decode() + "\r\n")
u, t = r.until("s3")
check(t.startswith("s3 NO [AUTHENTICATIONFAILED]"), t)
r.send("s4 AUTHENTICATE PLAIN\r\n")
r.line()
r.send("*\r\n")
u, t = r.until("s4")
check(t.startswith("s4 BAD"), t)
u, t = r.cmd("s5", "LOGIN joe pw")
check(t.startswith("s5 OK"), t)
u, t = r.cmd("s6", "STARTTLS")
check(t.startswith("s6 BAD"), t)
"#;

#[test]
fn sessions_see_each_others_changes() {
    let _serial = serial();
    let dir = instance(&["joe"]);
    deliver_many(dir.path(), "joe", "INBOX", 5);
    let server = Server::start(dir.path(), &[]);
    run_python(server.addr, dir.path(), TWO_SESSIONS, &[]);
}

const TWO_SESSIONS: &str = r#"
a = login()
b = login()
a.select("INBOX")
b.select("INBOX")
untagged(b, "FETCH")
# A flag change by A reaches B as an untagged FETCH at B's next command.
a.store("1", "+FLAGS", "(\\Flagged)")
b.noop()
f = untagged(b, "FETCH")
check(f == [b"1 (FLAGS (\\Flagged \\Recent))"] or f == [b"1 (FLAGS (\\Flagged))"], f)
# An expunge by A is not announced to B during FETCH, STORE or SEARCH by number
# (RFC 9051 7.5.1): B's numbers stay put until a command that allows it.
a.store("2", "+FLAGS", "(\\Deleted)")
a.expunge()
untagged(b, "EXPUNGE")
typ, data = b.fetch("1:*", "(UID)")
check(untagged(b, "EXPUNGE") == [], "EXPUNGE during FETCH")
check(b"1 (UID 1)" in data and b"3 (UID 3)" in data, data)
typ, data = b.search(None, "ALL")
check(untagged(b, "EXPUNGE") == [], "EXPUNGE during SEARCH")
typ, data = b.store("5", "-FLAGS", "(\\Seen)")
check(untagged(b, "EXPUNGE") == [], "EXPUNGE during STORE")
typ, data = b.uid("FETCH", "1:*", "(UID)")
check(untagged(b, "EXPUNGE") == [b"2"], "UID FETCH may announce the expunge")
typ, data = b.fetch("1:*", "(UID)")
check(data == [b"1 (UID 1)", b"2 (UID 3)", b"3 (UID 4)", b"4 (UID 5)"], data)
# A new message by A: EXISTS at B.
a.append("INBOX", None, None, b"Subject: new\r\n\r\nx\r\n")
b.noop()
check(untagged(b, "EXISTS")[-1:] == [b"5"], "EXISTS")
# IDLE: B learns of A's changes while idling, at once.
r = Raw()
r.cmd("i0", "LOGIN joe pw")
r.cmd("i1", "SELECT INBOX")
r.send("i2 IDLE\r\n")
check(r.line() == "+ idling", "idle")
t0 = time.time()
a.store("1", "-FLAGS", "(\\Flagged)")
l = r.line()
check(l.startswith("* 1 FETCH (FLAGS ("), l)
a.append("INBOX", None, None, b"Subject: newer\r\n\r\nx\r\n")
l = r.line()
check(l == "* 6 EXISTS", l)
a.store("1", "+FLAGS.SILENT", "(\\Deleted)")
a.expunge()
lines = [r.line()]
while lines[-1] != "* 1 EXPUNGE" and len(lines) < 5:
    lines.append(r.line())
check(lines[-1] == "* 1 EXPUNGE", lines)
check(time.time() - t0 < 1.0, "IDLE updates took %.2fs" % (time.time() - t0))
r.send("DONE\r\n")
u, t = r.until("i2")
check(t.startswith("i2 OK"), t)
"#;

#[test]
fn idle_hears_lmtp_deliveries_and_pop_deletions_within_a_second() {
    let _serial = serial();
    let dir = instance(&["joe"]);
    deliver_many(dir.path(), "joe", "INBOX", 1);
    let server = Server::start(dir.path(), &[]);
    let lmtpd = Server::start_bin(&binary("lmtpd"), dir.path(), &[]);
    let popd = Server::start_bin(&binary("popd"), dir.path(), &[]);
    let lmtp_port = lmtpd.addr.port().to_string();
    let pop_port = popd.addr.port().to_string();
    run_python(server.addr, dir.path(), IDLE_LMTP, &[&lmtp_port, &pop_port]);
}

const IDLE_LMTP: &str = r#"
import smtplib
lmtp_port = int(extra[0])
r = Raw()
r.cmd("a", "LOGIN joe pw")
u, t = r.cmd("b", "SELECT INBOX")
check("* 1 EXISTS" in u, u)
r.send("c IDLE\r\n")
check(r.line() == "+ idling", "idle")
times = []
for i in range(3):
    time.sleep(0.3)
    l = smtplib.LMTP(host, lmtp_port)
    l.sendmail("a@example.com", ["joe"], b"Subject: lmtp %d\r\n\r\nhello\r\n" % i)
    t0 = time.time()
    l.quit()
    line = r.line()
    while "RECENT" in line:
        line = r.line()
    times.append(time.time() - t0)
    check(line == "* %d EXISTS" % (i + 2), line)
# A POP3 client deletes the first message (at its QUIT): EXPUNGE within a second.
import poplib
p = poplib.POP3(host, int(extra[1]), timeout=30)
p.user("joe")
p.pass_("pw")
p.dele(1)
p.quit()
t0 = time.time()
line = r.line()
while "EXPUNGE" not in line:
    line = r.line()
times.append(time.time() - t0)
check(line == "* 1 EXPUNGE", line)
print("IDLE latencies", times)
check(max(times) < 1.0, times)
r.send("DONE\r\n")
u, t = r.until("c")
check(t.startswith("c OK"), t)
"#;

#[test]
fn imapclient_library() {
    let _serial = serial();
    let dir = instance(&["joe", "bob"]);
    deliver_many(dir.path(), "joe", "INBOX", 10);
    let server = Server::start(dir.path(), &[]);
    run_python(server.addr, dir.path(), IMAPCLIENT, &[]);
}

const IMAPCLIENT: &str = r#"
import imapclient, threading
from imapclient.imapclient import SENT, TRASH, SEEN, DRAFT, FLAGGED
from imapclient import IMAPClient
c = IMAPClient(host, port=port, ssl=False, timeout=30)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c.starttls(ctx)
c.plain_login("joe", "pw")
check(c.has_capability("IDLE") and c.has_capability("CONDSTORE"), c.capabilities())
idr = c.id_({"name": "imapclient"})
while len(idr) == 1:
    idr = idr[0]
check(dict(zip(idr[::2], idr[1::2]))[b"name"] == b"msgsuite-imapd", idr)
ns = c.namespace()
check(ns.personal[0][0] == "" and ns.other[0][0] == "Other Users/", ns)
check(c.enable("CONDSTORE") == [b"CONDSTORE"], "ENABLE")
check(c.find_special_folder(SENT) == "Sent", "special use")
check(c.find_special_folder(TRASH) == "Trash", "special use")
c.create_folder("Projects/Alpha")
check(c.folder_exists("Projects/Alpha") and c.folder_exists("Projects"), "CREATE with parent")
c.rename_folder("Projects/Alpha", "Projects/Beta")
check([f[2] for f in c.list_folders("", "Projects/*")] == ["Projects/Beta"], "LIST after RENAME")
c.subscribe_folder("Projects/Beta")
check(any(f[2] == "Projects/Beta" for f in c.list_sub_folders()), "LSUB")
c.unsubscribe_folder("Projects/Beta")
st = c.folder_status("INBOX", ["MESSAGES", "UNSEEN", "UIDNEXT", "HIGHESTMODSEQ", "SIZE"])
check(st[b"MESSAGES"] == 10 and st[b"UNSEEN"] == 10 and st[b"UIDNEXT"] == 11 and st[b"SIZE"] > 0, st)
sel = c.select_folder("INBOX")
check(sel[b"EXISTS"] == 10 and sel[b"UIDNEXT"] == 11 and b"HIGHESTMODSEQ" in sel, sel)
modseq = sel[b"HIGHESTMODSEQ"]
# FETCH with imapclient's parser: envelope, body structure, dates, modseq.
r = c.fetch([1, 2], ["ENVELOPE", "BODYSTRUCTURE", "INTERNALDATE", "RFC822.SIZE", "FLAGS", "MODSEQ", "BODY.PEEK[TEXT]"])
env = r[1][b"ENVELOPE"]
check(env.subject == b"message 1" and env.from_[0].mailbox == b"s1" and env.from_[0].host == b"example.com", env)
check(env.message_id == b"<m1@example.com>" and env.to[0].mailbox == b"joe", env)
check(r[1][b"BODYSTRUCTURE"][0] == b"text" and r[1][b"BODY[TEXT]"] == b"line one of 1\r\nline two\r\n", r[1])
check(r[2][b"INTERNALDATE"].year >= 2026 and r[2][b"MODSEQ"][0] > 0, r[2])
# Flags and CONDSTORE.
c.add_flags([1, 2, 3], [SEEN, b"$Label1"])
c.remove_flags([3], [SEEN])
f = c.get_flags([1, 3])
check(set(f[1]) >= {b"\\Seen", b"$Label1"} and b"\\Seen" not in f[3], f)
c.set_flags([4], [FLAGGED])
r = c.fetch(c.search("ALL"), ["FLAGS"], modifiers=["CHANGEDSINCE %d" % modseq])
check(sorted(r) == [1, 2, 3, 4], r)
check(c.search(["FLAGGED"]) == [4], "SEARCH FLAGGED")
check(c.search(["KEYWORD", "$Label1"]) == [1, 2, 3], "SEARCH KEYWORD")
check(c.search(["SUBJECT", "message 1"]) == [1, 10], "SEARCH SUBJECT")
check(c.search(["SEEN", "NOT", "FLAGGED"]) == [1, 2], "SEARCH SEEN")
check(c.search("UNSEEN SINCE 1-Jan-2020") == [3, 4, 5, 6, 7, 8, 9, 10], "SEARCH string")
check(c.sort(["REVERSE", "SUBJECT"])[:2] == [9, 8], "SORT")
check(c.thread() == [(1,), (2,), (3,), (4,), (5,), (6,), (7,), (8,), (9,), (10,)] or len(c.thread()) == 10, "THREAD")
# APPEND, MULTIAPPEND, COPY, MOVE, UID EXPUNGE.
r = c.append("INBOX", b"Subject: appended\r\n\r\nhi\r\n", flags=[DRAFT])
check(b"APPENDUID" in r, r)
r = c.multiappend("Projects/Beta", [b"Subject: m1\r\n\r\na\r\n", {"msg": b"Subject: m2\r\n\r\nb\r\n", "flags": [SEEN]}])
check(re.match(rb"\[APPENDUID \d+ 1:2\]", r[1][0]), r)
check(c.folder_status("Projects/Beta", ["MESSAGES"])[b"MESSAGES"] == 2, "MULTIAPPEND")
c.copy([1, 2], "Archive")
c.move([3], "Trash")
check(c.folder_status("Trash", ["MESSAGES"])[b"MESSAGES"] == 1, "MOVE")
check(3 not in c.search("ALL"), "moved away")
c.delete_messages([4, 5])
c.uid_expunge([4])
check(c.search("ALL") == [1, 2, 5, 6, 7, 8, 9, 10, 11], c.search("ALL"))
c.expunge()
# QUOTA and ACL.
roots, quotas = c.get_quota_root("INBOX")
check(roots.quota_roots == ["user/joe"], roots)
c.setacl("Projects/Beta", "bob", "lrswi")
acl = dict(c.getacl("Projects/Beta"))
check(acl[b"bob"] == b"lrswi", acl)
# IDLE: another client's APPEND arrives within a second.
c.select_folder("INBOX")
c.idle()
other = IMAPClient(host, port=port, ssl=False, timeout=30)
other.login("bob", "pw")
t0 = time.time()
other.append("Other Users/joe/Projects/Beta", b"Subject: from bob\r\n\r\nhi\r\n")
m2 = login()
m2.append("INBOX", None, None, b"Subject: for idle\r\n\r\nx\r\n")
got = c.idle_check(timeout=5)
c.idle_done()
check(any(x[1] == b"EXISTS" for x in got), got)
check(time.time() - t0 < 1.5, "IDLE took %.2fs" % (time.time() - t0))
check(other.folder_status("Other Users/joe/Projects/Beta", ["MESSAGES"])[b"MESSAGES"] == 3, "bob appended")
other.logout()
c.unselect_folder()
c.delete_folder("Projects/Beta")
check(not c.folder_exists("Projects/Beta"), "DELETE")
c.logout()
"#;
