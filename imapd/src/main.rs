//! imapd: the IMAP server.
//!
//! `imapd --root DIR [--listen 127.0.0.1:143]` serves IMAP on TCP, prints
//! `listening on <addr>` on stdout, and stops on SIGTERM (or SIGINT). Without `--listen`
//! it listens on `service.listenaddr`:`service.imap.port` from msg.conf, and, when
//! `service.imap.enablesslport` is 1, also serves implicit TLS on `service.imap.sslport`
//! (printing `listening on <addr> (tls)`). It starts through `service-runtime`:
//! `config/msg.conf` is validated, the log goes to `data/log/imap` in the seed's format, the
//! descriptor check (`local.service.imap.fdpersession`) sets how many sessions it serves at
//! once (`service.imap.sessionsperprocess`); past that a client gets
//! `* BYE [UNAVAILABLE] too many sessions, try again later` and is closed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use imapd::{serve_connection, ImapContext, ImapSettings, Peer};

// Many small, short-lived allocations per command from every session's task: mimalloc's
// per-thread free lists cost less than glibc's arenas here (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "imapd",
    about = "IMAP4rev1/IMAP4rev2 access to the message store"
)]
struct Args {
    /// Instance root (default: $MSG_ROOT, else ./msg).
    #[arg(long)]
    root: Option<PathBuf>,
    /// TCP address to listen on (default: service.listenaddr:service.imap.port).
    #[arg(long)]
    listen: Option<String>,
    /// Seconds allowed before login.
    #[arg(long, default_value_t = 60)]
    login_timeout: u64,
    /// Seconds an authenticated session may be idle (default: service.imap.idletimeout).
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Milliseconds before the answer to a failed login.
    #[arg(long, default_value_t = 1000)]
    auth_fail_delay_ms: u64,
    /// Failed logins from one address within 10 minutes before it is refused outright.
    #[arg(long, default_value_t = 10)]
    max_auth_failures: usize,
    /// Seconds to wait for sessions to finish on shutdown.
    #[arg(long, default_value_t = 10)]
    shutdown_grace: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let root = service_runtime::instance_root(args.root.clone());
    service_runtime::run_main("imap", &root.clone(), move |service| {
        run(args, root, service)
    })
}

/// At the session cap: IMAP's "try later" greeting, then close.
async fn busy<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::AsyncWriteExt;
    warn!("session limit reached: connection refused");
    let _ = stream
        .write_all(b"* BYE [UNAVAILABLE] too many sessions, try again later\r\n")
        .await;
    let _ = stream.shutdown().await;
}

fn announce(addr: SocketAddr, tls: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let suffix = if tls { " (tls)" } else { "" };
    if let Err(e) = writeln!(out, "listening on {addr}{suffix}").and_then(|()| out.flush()) {
        warn!("cannot write to stdout: {e}");
    }
}

async fn run(
    args: Args,
    root: PathBuf,
    service: Arc<service_runtime::Runtime>,
) -> anyhow::Result<()> {
    let config = service.config();
    let idle_timeout = args.idle_timeout.unwrap_or_else(|| {
        u64::try_from(config.get_int("service.imap.idletimeout")).unwrap_or(30) * 60
    });
    let banner = config.get_str("service.imap.banner");
    let mut settings = ImapSettings {
        allow_plaintext_auth: config.get_bool("service.allowplaintextauth"),
        loopback_plaintext: config.get_bool("local.service.imap.loopbackplaintext"),
        login_timeout: Duration::from_secs(args.login_timeout.max(1)),
        idle_timeout: Duration::from_secs(idle_timeout.max(1)),
        auth_fail_delay: Duration::from_millis(args.auth_fail_delay_ms),
        max_auth_failures: args.max_auth_failures.max(1),
        max_message_size: u64::try_from(config.get_int("local.store.maxmessagesize"))
            .unwrap_or(50 * 1024 * 1024),
        ..ImapSettings::default()
    };
    if !banner.trim().is_empty() {
        settings.greeting = banner.trim().to_owned();
    }
    let tls = match service_runtime::TlsConfig::from_config(config, &root) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!("STARTTLS disabled: {e}");
            None
        }
    };

    let listen: SocketAddr = match &args.listen {
        Some(l) => l.parse().with_context(|| format!("--listen {l}"))?,
        None => {
            let port = u16::try_from(config.get_int("service.imap.port")).unwrap_or(143);
            service_runtime::listen_addr(config, port)
        }
    };
    let tcp = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = tcp.local_addr().context("listener address")?;
    // Implicit TLS (imaps) only when configured and not overridden by --listen.
    let tls_listener = if args.listen.is_none() && config.get_bool("service.imap.enablesslport") {
        match &tls {
            Some(_) => {
                let port = u16::try_from(config.get_int("service.imap.sslport")).unwrap_or(993);
                let addr = service_runtime::listen_addr(config, port);
                let l = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening on {addr}"))?;
                Some(l)
            }
            None => {
                warn!("service.imap.enablesslport is 1 but TLS is not configured");
                None
            }
        }
    } else {
        None
    };
    // Ports are bound: give up root before the store is opened or a client is heard.
    service.drop_privileges()?;
    let ctx = Arc::new(
        ImapContext::open(&root, settings, tls.clone())
            .await
            .with_context(|| format!("instance {}", root.display()))?,
    );
    let limiter = service.limiter().clone();
    announce(local, false);
    if let Some(l) = &tls_listener {
        announce(l.local_addr().context("listener address")?, true);
    }
    info!(%local, root = %root.display(), "imapd started");

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sessions = JoinSet::new();
    let accept_tls = async |l: &Option<TcpListener>| match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    };
    loop {
        let (stream, peer, implicit) = tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { info!("SIGINT: shutting down"); break; }
            r = tcp.accept() => match r {
                Ok((s, p)) => (s, p, false),
                Err(e) => {
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            r = accept_tls(&tls_listener) => match r {
                Ok((s, p)) => (s, p, true),
                Err(e) => {
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        let mut stream = stream;
        let _ = stream.set_nodelay(true);
        match limiter.try_acquire() {
            Some(permit) => {
                let ctx = ctx.clone();
                sessions.spawn(async move {
                    if implicit {
                        let Some(tls) = ctx.tls().cloned() else {
                            return;
                        };
                        let accepted = tokio::time::timeout(
                            ctx.settings().login_timeout,
                            tls.acceptor().accept(stream),
                        )
                        .await;
                        if let Ok(Ok(s)) = accepted {
                            serve_connection(
                                s,
                                Peer {
                                    addr: peer,
                                    tls: true,
                                },
                                ctx,
                            )
                            .await;
                        }
                    } else {
                        serve_connection(
                            stream,
                            Peer {
                                addr: peer,
                                tls: false,
                            },
                            ctx,
                        )
                        .await;
                    }
                    drop(permit);
                });
            }
            None => {
                sessions.spawn(async move { busy(&mut stream).await });
            }
        }
    }
    drop(tcp);
    let grace = Duration::from_secs(args.shutdown_grace);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = sessions.len(),
            "sessions still running at shutdown: aborted"
        );
        sessions.abort_all();
    }
    info!("imapd stopped");
    Ok(())
}
