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
