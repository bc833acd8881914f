//! mbsync (isync) keeps a Maildir and the server in step: an account of 10,000 messages
//! synced both ways, with flag changes, new messages and deletions on both sides, twice,
//! ending identical.

mod common;

use common::{deliver_many, instance, run_python, Server};

const COUNT: usize = 10_000;

#[test]
fn mbsync_two_way_sync_of_10000_messages() {
    if std::process::Command::new("mbsync")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("mbsync is not installed (Debian package isync, tests/debian-packages.txt)");
    }
    let dir = instance(&["joe"]);
    let t0 = std::time::Instant::now();
    deliver_many(dir.path(), "joe", "INBOX", COUNT);
    eprintln!("delivered {COUNT} in {:?}", t0.elapsed());
    let server = Server::start(dir.path(), &[]);
    let work = tempfile::tempdir().expect("maildir");
    let out = run_python(
        server.addr,
        dir.path(),
        MBSYNC,
        &[&work.path().display().to_string(), &COUNT.to_string()],
    );
    eprintln!("{out}");
}

const MBSYNC: &str = r#"
import subprocess, random
work, count = extra[0], int(extra[1])
mail = os.path.join(work, "mail")
os.makedirs(mail)
rc = os.path.join(work, "mbsyncrc")
with open(rc, "w") as f:
    f.write(f"""FSync no

IMAPAccount acc
Host {host}
Port {port}
User joe
Pass pw
SSLType None
AuthMechs LOGIN
PipelineDepth 50

IMAPStore remote
Account acc

MaildirStore local
Path {mail}/
Inbox {mail}/INBOX

Channel ch
Far :remote:INBOX
Near :local:INBOX
Create Both
Expunge Both
SyncState *
Sync All
""")

def sync():
    t0 = time.time()
    p = subprocess.run(["mbsync", "-c", rc, "-q", "ch"], capture_output=True, text=True, timeout=600)
    check(p.returncode == 0, "mbsync failed: %s %s" % (p.stdout, p.stderr))
    return time.time() - t0

MAILDIR_FLAGS = {"S": "\\Seen", "F": "\\Flagged", "R": "\\Answered", "D": "\\Draft"}

def local_state():
    out = {}
    for sub in ("cur", "new"):
        d = os.path.join(mail, "INBOX", sub)
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                head = f.read(4096)
            subj = re.search(rb"^Subject: (.*?)\r?$", head, re.M).group(1).decode()
            flags = set()
            if ":2," in name:
                for c in name.split(":2,")[1]:
                    if c in MAILDIR_FLAGS:
                        flags.add(MAILDIR_FLAGS[c])
            check(subj not in out, "duplicate local message " + subj)
            out[subj] = flags
    return out

def server_state():
    m = login()
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        flags = set(f.decode() for f in re.search(rb"FLAGS \((.*?)\)", item[0]).group(1).split())
        flags.discard("\\Recent")
        subj = re.search(rb"Subject: (.*?)\r\n", item[1]).group(1).decode()
        check(subj not in out, "duplicate server message " + subj)
        out[subj] = flags
    m.logout()
    return out

def server_flags():
    m = login()
    m.select("INBOX", readonly=True)
    typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
    m.logout()
    return sorted(data)

def local_files():
    files = []
    for sub in ("cur", "new"):
        d = os.path.join(mail, "INBOX", sub)
        files += [os.path.join(d, n) for n in sorted(os.listdir(d))]
    return files

def same(what):
    t0 = time.time()
    l = local_state()
    t1 = time.time()
    s = server_state()
    print("%s: local state %.1fs, server state %.1fs" % (what, t1 - t0, time.time() - t1))
    if l != s:
        only_l = sorted(set(l) - set(s))[:5]
        only_s = sorted(set(s) - set(l))[:5]
        diff = [(k, l[k], s[k]) for k in l if k in s and l[k] != s[k]][:5]
        check(False, "%s: local %d, server %d; only local %r; only server %r; flags differ %r" % (what, len(l), len(s), only_l, only_s, diff))
    return l

took = sync()
state = same("first sync")
check(len(state) == count, len(state))
print("first sync of %d messages: %.1fs" % (count, took))

rnd = random.Random(7)
for round_no in (1, 2):
    # Server side: flags, deletions and new messages through IMAP.
    m = login()
    m.select("INBOX")
    typ, data = m.search(None, "ALL")
    seqs = data[0].split()
    flag = rnd.sample(seqs, 200)
    m.store(b",".join(flag).decode(), "+FLAGS.SILENT", "(\\Flagged \\Answered)")
    gone = rnd.sample([s for s in seqs if s not in flag], 150)
    m.store(b",".join(gone).decode(), "+FLAGS.SILENT", "(\\Deleted)")
    m.expunge()
    for i in range(20):
        m.append("INBOX", "(\\Seen)", None, b"Subject: server new %d.%d\r\n\r\nfrom the server\r\n" % (round_no, i))
    m.logout()
    # Local side: flags (renames), deletions and new messages in the Maildir.
    files = local_files()
    rnd.shuffle(files)
    for path in files[:200]:
        base = os.path.basename(path)
        if ":2," in base:
            name, fl = base.split(":2,")
        else:
            name, fl = base, ""
        fl = "".join(sorted(set(fl + "S")))
        os.rename(path, os.path.join(mail, "INBOX", "cur", name + ":2," + fl))
    for path in files[200:350]:
        if os.path.exists(path):
            os.unlink(path)
    for i in range(20):
        name = "%d.%d_%d.local" % (time.time(), os.getpid(), round_no * 100 + i)
        with open(os.path.join(mail, "INBOX", "new", name), "wb") as f:
            f.write(b"Subject: local new %d.%d\r\n\r\nfrom the maildir\r\n" % (round_no, i))
    took = sync()
    state = same("round %d" % round_no)
    print("round %d: %d messages after sync (%.1fs)" % (round_no, len(state), took))
    before = (local_state(), server_flags())
    took = sync()
    check((local_state(), server_flags()) == before, "a second sync changes nothing")
expected = count + 2 * (20 + 20)
check(len(state) <= expected - 2 * 150, (len(state), expected))
"#;
