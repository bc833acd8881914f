//! mshttpd: the HTTP server (webmail page and JMAP).
//!
//! `mshttpd --root DIR [--listen 127.0.0.1:8990] [--listen-tls ADDR]` serves HTTP/1.1,
//! prints `listening on <addr>` on stdout (and `listening on <addr> (TLS)` for HTTPS), and
//! stops on SIGTERM (or SIGINT). Without `--listen` it listens on
//! `service.listenaddr`:`service.http.port`; without `--listen-tls`, HTTPS is served on
//! `service.http.sslport` when `service.http.enablesslport` is 1 (cookies are then marked
//! Secure on that port). It starts through `service-runtime`:
//! `config/msg.conf` is validated, the log goes to `data/log/http` in the seed's format, the
//! descriptor check (`local.service.http.fdpersession` descriptors per connection) sets how
//! many connections it serves at once (`service.http.sessionsperprocess`); past that a
//! client gets `503 Service Unavailable` and is closed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use msgconf_names as names;
use mshttpd::{router, serve_connection, HttpContext, Settings};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Parameter names (kept here so the binary reads as the configuration it uses).
mod msgconf_names {
    pub const HTTP_PORT: &str = "service.http.port";
    pub const HTTP_ENABLE_SSL_PORT: &str = "service.http.enablesslport";
    pub const HTTP_SSL_PORT: &str = "service.http.sslport";
    pub const GZIP_STATIC: &str = "local.service.http.gzip.static";
    pub const GZIP_DYNAMIC: &str = "local.service.http.gzip.dynamic";
    pub const SMTP_RELAY: &str = "local.service.http.smtprelay";
}

#[derive(Parser, Debug)]
#[command(
    name = "mshttpd",
    about = "Webmail and JMAP (RFC 8620, 8621) over the message store"
)]
struct Args {
    /// Instance root (default: $MSG_ROOT, else ./msg).
    #[arg(long)]
    root: Option<PathBuf>,
    /// TCP address to listen on (default: service.listenaddr:service.http.port).
    #[arg(long)]
    listen: Option<String>,
    /// TCP address for HTTPS (default: service.http.sslport when service.http.enablesslport
    /// is 1, else none).
    #[arg(long)]
    listen_tls: Option<String>,
    /// Milliseconds before the answer to a failed login.
    #[arg(long, default_value_t = 1000)]
    auth_fail_delay_ms: u64,
    /// Failed logins from one address within 10 minutes before it is refused outright.
    #[arg(long, default_value_t = 10)]
    max_auth_failures: usize,
    /// JMAP maxSizeRequest, bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    max_size_request: usize,
    /// JMAP maxSizeUpload, bytes.
    #[arg(long, default_value_t = 20 * 1024 * 1024)]
    max_size_upload: usize,
    /// JMAP maxConcurrentRequests: API requests one account may have in progress at once.
    #[arg(long, default_value_t = 8)]
    max_concurrent_requests: usize,
    /// JMAP maxConcurrentUpload: uploads one account may have in progress at once.
    #[arg(long, default_value_t = 4)]
    max_concurrent_upload: usize,
    /// Seconds an idle connection is kept open.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Seconds to wait for connections to finish on shutdown.
    #[arg(long, default_value_t = 10)]
    shutdown_grace: u64,
    /// Seconds between looks at config/passwd: when it has changed, the uploads and
    /// submission journals of accounts no longer in it are removed.
    #[arg(long, default_value_t = 60)]
    account_check_secs: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let root = service_runtime::instance_root(args.root.clone());
    service_runtime::run_main("http", &root.clone(), move |service| {
        run(args, root, service)
    })
}

fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        warn!("cannot write to stdout: {e}");
    }
}

/// Accepts on the HTTPS listener, or waits forever when there is none.
async fn accept_tls(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn run(
    args: Args,
    root: PathBuf,
    service: Arc<service_runtime::Runtime>,
) -> anyhow::Result<()> {
    let config = service.config();
    let relay = config.get_str(names::SMTP_RELAY).trim().to_owned();
    let settings = Settings {
        gzip_static: config.get_bool(names::GZIP_STATIC),
        gzip_dynamic: config.get_bool(names::GZIP_DYNAMIC),
        smtp_relay: (!relay.is_empty()).then_some(relay),
        auth_fail_delay: Duration::from_millis(args.auth_fail_delay_ms),
        max_auth_failures: args.max_auth_failures.max(1),
        max_size_request: args.max_size_request.max(1024),
        max_size_upload: args.max_size_upload.max(1024),
        max_concurrent_requests: args.max_concurrent_requests.max(1),
        max_concurrent_upload: args.max_concurrent_upload.max(1),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        ..Settings::default()
    };
    let listen = match &args.listen {
        Some(l) => l.clone(),
        None => {
            let port = u16::try_from(config.get_int(names::HTTP_PORT)).unwrap_or(8990);
            service_runtime::listen_addr(config, port).to_string()
        }
    };
    let listen_tls = match &args.listen_tls {
        Some(a) => Some(a.clone()),
        None if config.get_bool(names::HTTP_ENABLE_SSL_PORT) => {
            let port = u16::try_from(config.get_int(names::HTTP_SSL_PORT)).unwrap_or(8991);
            Some(service_runtime::listen_addr(config, port).to_string())
        }
        None => None,
    };
    let tls = match &listen_tls {
        Some(_) => Some(
            service_runtime::TlsConfig::from_config(config, &root)
                .context("HTTPS port configured but no usable certificate")?,
        ),
        None => None,
    };
    let tcp = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = tcp.local_addr().context("listener address")?;
    let tls_listener = match &listen_tls {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (TLS)"))?,
        ),
        None => None,
    };
    // Ports are bound: give up root before the store is opened or a client is heard.
    service.drop_privileges()?;
    let ctx = Arc::new(
        HttpContext::open(&root, settings)
            .await
            .with_context(|| format!("instance {}", root.display()))?,
    );
    // Detached: it only removes files, and ends with the runtime.
    tokio::spawn(mshttpd::watch_deleted_users(
        root.clone(),
        Duration::from_secs(args.account_check_secs.max(1)),
    ));
    let app = router(ctx.clone());
    let limiter = service.limiter().clone();
    announce(&format!("listening on {local}"));
    if let Some(l) = &tls_listener {
        announce(&format!(
            "listening on {} (TLS)",
            l.local_addr().context("listener address")?
        ));
    }
    info!(%local, root = %root.display(), "mshttpd started");

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { info!("SIGINT: shutting down"); break; }
            r = tcp.accept() => match r {
                Ok((mut stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match limiter.try_acquire() {
                        Some(permit) => {
                            let (app, ctx) = (app.clone(), ctx.clone());
                            sessions.spawn(async move {
                                serve_connection(stream, peer, false, app, ctx).await;
                                drop(permit);
                            });
                        }
                        None => {
                            sessions.spawn(async move { mshttpd::busy(&mut stream).await });
                        }
                    }
                }
                Err(e) => {
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            r = accept_tls(tls_listener.as_ref()) => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    // The cap is checked before the handshake, so a flood of TLS connections
                    // cannot hold more than the sessions allowed.
                    match (limiter.try_acquire(), &tls) {
                        (Some(permit), Some(tls)) => {
                            let (app, ctx, acceptor) = (app.clone(), ctx.clone(), tls.acceptor());
                            sessions.spawn(async move {
                                let handshake = tokio::time::timeout(
                                    Duration::from_secs(30),
                                    acceptor.accept(stream),
                                )
                                .await;
                                match handshake {
                                    Ok(Ok(s)) => serve_connection(s, peer, true, app, ctx).await,
                                    Ok(Err(e)) => info!("TLS negotiation with {peer} failed: {e}"),
                                    Err(_) => info!("TLS negotiation with {peer} timed out"),
                                }
                                drop(permit);
                            });
                        }
                        _ => warn!("session limit reached: TLS connection from {peer} refused"),
                    }
                }
                Err(e) => {
                    warn!("accept (TLS): {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(tcp);
    drop(tls_listener);
    let grace = Duration::from_secs(args.shutdown_grace);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = sessions.len(),
            "connections still open at shutdown: closed"
        );
        sessions.abort_all();
    }
    info!("mshttpd stopped");
    Ok(())
}
