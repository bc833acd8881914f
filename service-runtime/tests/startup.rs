//! Startup as the front ends run it, in child processes (each re-runs this
//! test executable with `T_CHILD` set, since a process has one global
//! tracing subscriber and one descriptor limit).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use service_runtime::{drop_privileges, start, StartError};

fn child(test: &str, envs: &[(&str, &str)], prlimit: Option<&str>) -> Output {
    let exe = std::env::current_exe().expect("test binary");
    let mut c = match prlimit {
        Some(limit) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={limit}")).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    c.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("T_CHILD", "1");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run child")
}

fn is_child() -> bool {
    std::env::var_os("T_CHILD").is_some()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// Child: starts `T_SERVICE` under `T_ROOT` and reports the session cap.
#[test]
fn child_start() {
    if !is_child() {
        return;
    }
    let rt = start(&env("T_SERVICE"), env("T_ROOT")).expect("start");
    assert!(rt.log_installed());
    assert!(rt.flush_log(Duration::from_secs(5)));
    println!("CAP={}", rt.session_cap());
    println!("LIMIT={}", rt.descriptor_plan().soft_limit);
}

/// Checks `[dd/Mon/yyyy:HH:MM:SS +0000] host process[pid]: rest` and
/// returns `rest`.
fn seed_format<'a>(line: &'a str, process: &str) -> &'a str {
    let b = line.as_bytes();
    assert_eq!(b[0], b'[', "{line}");
    let ts = &line[1..27];
    let tb = ts.as_bytes();
    for (i, c) in tb.iter().enumerate() {
        let ok = match i {
            2 | 6 => *c == b'/',
            3..=5 => c.is_ascii_alphabetic(),
            11 | 14 | 17 => *c == b':',
            20 => *c == b' ',
            _ => true,
        };
        assert!(ok, "timestamp {ts:?} in {line}");
    }
    assert!(ts.ends_with(" +0000"), "{line}");
    assert_eq!(&line[27..29], "] ", "{line}");
    let rest = &line[29..];
    let (host, rest) = rest.split_once(' ').expect("host");
    assert!(!host.is_empty());
    let (proc_pid, rest) = rest.split_once("]: ").expect("process[pid]");
    let (name, pid) = proc_pid.split_once('[').expect("[pid");
    assert_eq!(name, process, "{line}");
    assert!(pid.parse::<u32>().is_ok(), "{line}");
    rest
}

#[test]
fn short_descriptors_log_the_seeds_three_lines_figure_for_figure() {
    if is_child() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    for (svc, process, cap, text) in [
        (
            "http",
            "mshttpd",
            87,
            "Not enough file descriptors to support 6000 sessions per process; \
             Recommend ulimit -n 12851 or 87 sessions per process.",
        ),
        (
            "pop",
            "popd",
            58,
            "Not enough file descriptors to support 600 sessions per process; \
             Recommend ulimit -n 2651 or 58 sessions per process.",
        ),
        (
            "imap",
            "imapd",
            58,
            "Not enough file descriptors to support 4000 sessions per process; \
             Recommend ulimit -n 12851 or 58 sessions per process.",
        ),
    ] {
        let out = child(
            "child_start",
            &[("T_ROOT", r), ("T_SERVICE", svc)],
            Some("1024:1024"),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{svc}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("CAP={cap}\n")), "{svc}: {stdout}");
        assert!(stdout.contains("LIMIT=1024\n"), "{svc}: {stdout}");
        let log = std::fs::read_to_string(root.path().join("data/log").join(svc)).unwrap();
        let critical: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Critical"))
            .map(|l| seed_format(l, process))
            .collect();
        assert_eq!(
            critical,
            vec![format!("General Critical: {text}")],
            "{svc}: {log}"
        );
        let notice = log.lines().find(|l| l.contains("Notice")).expect("notice");
        assert!(
            seed_format(notice, process).starts_with("General Notice: "),
            "{notice}"
        );
    }
}

#[test]
fn enough_descriptors_serve_the_configured_sessions_quietly() {
    if is_child() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("config")).unwrap();
    std::fs::write(
        root.path().join("config/msg.conf"),
        "service.pop.sessionsperprocess = 50\nlocal.service.fdreserve = 100\n",
    )
    .unwrap();
    let r = root.path().to_str().unwrap();
    // 50 * 3 + 100 = 250 <= 1024
    let out = child(
        "child_start",
        &[("T_ROOT", r), ("T_SERVICE", "pop")],
        Some("1024:1024"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("CAP=50\n"), "{stdout}");
    let log = std::fs::read_to_string(root.path().join("data/log/pop")).unwrap();
    assert!(!log.contains("Critical"), "{log}");
}

#[test]
fn soft_limit_is_raised_toward_the_hard_limit() {
    if is_child() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    // imap needs 12851: the soft limit rises to it, below the hard limit
    let out = child(
        "child_start",
        &[("T_ROOT", r), ("T_SERVICE", "imap")],
        Some("1024:20000"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("CAP=4000\n"), "{stdout}");
    assert!(stdout.contains("LIMIT=12851\n"), "{stdout}");
    let log = std::fs::read_to_string(root.path().join("data/log/imap")).unwrap();
    assert!(!log.contains("Critical"), "{log}");
}

#[test]
fn a_bad_value_stops_startup_naming_parameter_value_and_range() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("config")).unwrap();
    std::fs::write(
        root.path().join("config/msg.conf"),
        "service.imap.sessionsperprocess = 0\n",
    )
    .unwrap();
    let Err(e) = start("imap", root.path()) else {
        panic!("started with a bad value");
    };
    assert!(matches!(e, StartError::Config(_)));
    let text = e.to_string();
    assert!(
        text.contains("service.imap.sessionsperprocess")
            && text.contains("value 0")
            && text.contains("1 to 1000000"),
        "{text}"
    );
    let Err(e) = start("smtp", root.path()) else {
        panic!("started an unknown service");
    };
    assert!(e.to_string().contains("\"smtp\""), "{e}");
}

/// Child: drops privileges per `T_ROOT`'s msg.conf and prints the outcome.
#[test]
fn child_drop_privileges() {
    if !is_child() {
        return;
    }
    let config =
        msgconf::Config::load(Path::new(&env("T_ROOT")).join("config/msg.conf")).expect("config");
    match drop_privileges(&config) {
        Ok(p) => println!("OK {p:?}"),
        Err(e) => println!("ERR {e}"),
    }
}

fn privileges_child(conf: &str) -> String {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("config")).unwrap();
    std::fs::write(root.path().join("config/msg.conf"), conf).unwrap();
    let out = child(
        "child_drop_privileges",
        &[("T_ROOT", root.path().to_str().unwrap())],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn missing_group_or_user_is_fatal_in_the_seeds_words() {
    if is_child() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let out = privileges_child("local.servergid = no-such-group-xyzzy\n");
        assert!(out.contains("OK NotRoot"), "{out}");
        return;
    }
    let out = privileges_child("local.servergid = no-such-group-xyzzy\n");
    assert!(
        out.contains("ERR Fatal error: Cannot find group in name service\n"),
        "{out}"
    );
    let out = privileges_child("local.servergid = root\nlocal.serveruid = no-such-user-xyzzy\n");
    assert!(
        out.contains("ERR Fatal error: Cannot find user in name service\n"),
        "{out}"
    );
    // an existing user and group: the child really switches
    let out = privileges_child("local.servergid = 65534\nlocal.serveruid = 65534\n");
    assert!(
        out.contains("OK Dropped { uid: 65534, gid: 65534 }"),
        "{out}"
    );
}

/// Child: starts pop on a loopback port, serves until SIGTERM, says
/// goodbye to its session, waits for it and exits.
#[test]
fn child_serve_until_sigterm() {
    if !is_child() {
        return;
    }
    use tokio::io::AsyncWriteExt;
    let rt = start("pop", env("T_ROOT")).expect("start");
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    tokio.block_on(async {
        rt.shutdown().on_signals().expect("signals");
        let listener = service_runtime::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        println!("PORT={}", listener.local_addr().expect("addr").port());
        let shutdown = rt.shutdown().clone();
        service_runtime::serve(
            listener,
            rt.limiter().clone(),
            rt.shutdown().clone(),
            move |mut s: tokio::net::TcpStream, _| {
                let shutdown = shutdown.clone();
                async move {
                    let _ = s.write_all(b"+OK hello\r\n").await;
                    shutdown.wait().await;
                    let _ = s.write_all(b"-ERR server shutting down\r\n").await;
                }
            },
            |mut s: tokio::net::TcpStream, _| async move {
                let _ = s.write_all(b"-ERR busy\r\n").await;
            },
        )
        .await;
        let left = rt.wait_sessions(Duration::from_secs(5)).await;
        println!("LEFT={left}");
    });
    rt.flush_log(Duration::from_secs(5));
}

#[test]
fn sigterm_stops_accepting_and_sessions_say_goodbye() {
    if is_child() {
        return;
    }
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let root = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut proc = Command::new(exe)
        .args(["--exact", "child_serve_until_sigterm", "--nocapture"])
        .env("T_CHILD", "1")
        .env("T_ROOT", root.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(proc.stdout.take().unwrap());
    let mut port = None;
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if let Some(p) = line.trim().strip_prefix("PORT=") {
            port = Some(p.parse::<u16>().unwrap());
            break;
        }
        line.clear();
    }
    let port = port.expect("child printed its port");
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 11];
    client.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"+OK hello\r\n");

    // SAFETY: kill with a child's pid and a valid signal.
    let rc = unsafe { libc::kill(proc.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let mut bye = String::new();
    client.read_to_string(&mut bye).unwrap();
    assert_eq!(bye, "-ERR server shutting down\r\n");
    let status = proc.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("LEFT=0"), "{rest}");
    let log = std::fs::read_to_string(root.path().join("data/log/pop")).unwrap();
    assert!(
        log.contains("General Notice: SIGTERM received; shutting down"),
        "{log}"
    );
}
