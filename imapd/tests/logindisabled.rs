//! LOGINDISABLED (RFC 9051 6.2.3, RFC 3501 7.2.1) against the real binary: with plaintext
//! passwords forbidden on connections without TLS (`service.allowplaintextauth = 0` and
//! `local.service.imap.loopbackplaintext = 0`, so our loopback test client counts like any
//! remote one), CAPABILITY says LOGINDISABLED and not AUTH=PLAIN, LOGIN and AUTHENTICATE
//! PLAIN are refused with NO [PRIVACYREQUIRED], and after STARTTLS both work; imaplib does
//! the same through its own starttls() and login().

mod common;

use common::{instance, run_python, Server};

#[test]
fn plaintext_login_needs_starttls() {
    let dir = instance(&["joe"]);
    std::fs::write(
        dir.path().join("config/msg.conf"),
        "service.allowplaintextauth = 0\nlocal.service.imap.loopbackplaintext = 0\n",
    )
    .expect("msg.conf");
    let server = Server::start(dir.path(), &["--auth-fail-delay-ms", "50"]);
    run_python(server.addr, dir.path(), SCRIPT, &[]);
}

const SCRIPT: &str = r#"
def caps_of(line):
    return line.upper().split("[CAPABILITY ", 1)[-1].split("]")[0].split()

r = Raw()
g = caps_of(r.greeting)
check("LOGINDISABLED" in g and "STARTTLS" in g and "AUTH=PLAIN" not in g, r.greeting)
u, t = r.cmd("a1", "CAPABILITY")
c = u[0].upper().split()
check("LOGINDISABLED" in c and "STARTTLS" in c and "AUTH=PLAIN" not in c, u)
check(t.startswith("a1 OK"), t)
# The password is refused before it is checked, a right one included.
u, t = r.cmd("a2", "LOGIN joe pw")
check(t.startswith("a2 NO [PRIVACYREQUIRED]"), t)
u, t = r.cmd("a3", "AUTHENTICATE PLAIN " + base64.b64encode(b"\0joe\0pw").decode())
check(t.startswith("a3 NO [PRIVACYREQUIRED]"), t)
# Not logged in: a command that needs it is still refused.
u, t = r.cmd("a4", "SELECT INBOX")
check(t.startswith("a4 BAD"), t)
u, t = r.cmd("a5", "STARTTLS")
check(t.startswith("a5 OK"), t)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
r.s = ctx.wrap_socket(r.s)
u, t = r.cmd("a6", "CAPABILITY")
c = u[0].upper().split()
check("AUTH=PLAIN" in c and "LOGINDISABLED" not in c and "STARTTLS" not in c, u)
u, t = r.cmd("a7", "LOGIN joe pw")
check(t.startswith("a7 OK"), t)
u, t = r.cmd("a8", "SELECT INBOX")
check(t.startswith("a8 OK"), t)

# imaplib: LOGIN in the clear fails, after starttls() it succeeds.
m = imaplib.IMAP4(host, port, timeout=30)
check("LOGINDISABLED" in m.capabilities and "AUTH=PLAIN" not in m.capabilities, m.capabilities)
try:
    m.login("joe", "pw")
    check(False, "plaintext LOGIN accepted without TLS")
except imaplib.IMAP4.error as e:
    check("PRIVACYREQUIRED" in str(e), e)
m.starttls(ctx)
check("LOGINDISABLED" not in m.capabilities, m.capabilities)
typ, data = m.login("joe", "pw")
check(typ == "OK", data)
typ, data = m.select("INBOX")
check(typ == "OK", data)
m.logout()
"#;
