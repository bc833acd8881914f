//! lmtpd: the LMTP delivery server.
//!
//! `lmtpd --root DIR [--listen 127.0.0.1:24] [--socket PATH]` serves LMTP on TCP and,
//! optionally, a Unix socket. It prints `listening on <addr>` for each listener on stdout,
//! and on SIGTERM (or SIGINT) stops accepting, lets sessions finish what they are
//! delivering (bounded by `--shutdown-grace`), and exits.
//!
//! It starts through `service-runtime`: `config/msg.conf` is validated, the log goes to
//! `data/log/lmtp` in the seed's format, and the descriptor check sets how many sessions it
//! serves at once (`service.lmtp.sessionsperprocess`); past that, a client gets
//! `421 4.3.2` and is closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lmtpd::{serve_connection, Limits, LmtpContext};
use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "lmtpd",
    about = "LMTP delivery into the message store (RFC 2033)"
)]
struct Args {
    /// Instance root (default: $MSG_ROOT, else ./msg).
    #[arg(long)]
    root: Option<PathBuf>,
    /// TCP address to listen on.
    #[arg(long, default_value = "127.0.0.1:24")]
    listen: String,
    /// Also listen on this Unix socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Host name used in greetings and Received: fields (default: the system's).
    #[arg(long)]
    hostname: Option<String>,
    /// Largest message accepted, in bytes (default: local.store.maxmessagesize).
    #[arg(long)]
    max_message_size: Option<u64>,
    /// Seconds a client may send nothing before it is disconnected.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Seconds to wait for sessions to finish on shutdown.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let root = service_runtime::instance_root(args.root.clone());
    service_runtime::run_main("lmtp", &root.clone(), move |service| {
        run(args, root, service)
    })
}

/// At the session cap: the protocol's own "too busy" answer, then close.
async fn busy<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::AsyncWriteExt;
    let _ = stream
        .write_all(b"421 4.3.2 Too many connections, try again later\r\n")
        .await;
    let _ = stream.shutdown().await;
}

/// Remove a stale socket file left by an earlier run (never anything but a socket).
fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display())),
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(_) => Ok(()),
    }
}

async fn run(
    args: Args,
    root: PathBuf,
    service: std::sync::Arc<service_runtime::Runtime>,
) -> anyhow::Result<()> {
    let max_message_size = args.max_message_size.unwrap_or_else(|| {
        service
            .config()
            .get_int("local.store.maxmessagesize")
            .max(1) as u64
    });
    let limiter = service.limiter().clone();
    let limits = Limits {
        max_message_size: max_message_size.max(1),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        ..Limits::default()
    };
    let host = args.hostname.unwrap_or_else(system_hostname);
    let tcp = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = tcp.local_addr().context("listener address")?;
    let unix = match &args.socket {
        Some(path) => {
            remove_stale_socket(path)?;
            Some(
                UnixListener::bind(path)
                    .with_context(|| format!("listening on {}", path.display()))?,
            )
        }
        None => None,
    };
    // Ports are bound: give up root before the store is opened or a client is heard.
    service.drop_privileges()?;
    let ctx = Arc::new(
        LmtpContext::open(&root, host, limits)
            .await
            .with_context(|| format!("instance {}", root.display()))?,
    );
    // The address goes to stdout for whoever started us (tests bind port 0); a closed
    // stdout is no reason not to serve.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let mut text = format!("listening on {local}\n");
        if let Some(path) = &args.socket {
            text.push_str(&format!("listening on unix:{}\n", path.display()));
        }
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            warn!("cannot write to stdout: {e}");
        }
    }
    info!(%local, socket = ?args.socket, root = %root.display(), "lmtpd started");

    // One accept loop per listener under the shared cap; SIGTERM or SIGINT stops both,
    // then sessions get `--shutdown-grace` seconds to finish what they are delivering.
    let shutdown = service.shutdown().clone();
    shutdown.on_signals().context("signal handlers")?;
    let on_tcp = {
        let ctx = ctx.clone();
        service_runtime::serve(
            tcp,
            limiter.clone(),
            shutdown.clone(),
            move |stream, peer: std::net::SocketAddr| {
                serve_connection(stream, peer.ip().to_string(), ctx.clone())
            },
            |mut stream, _| async move { busy(&mut stream).await },
        )
    };
    let on_unix = async {
        let Some(listener) = unix else { return };
        let ctx = ctx.clone();
        service_runtime::serve(
            listener,
            limiter.clone(),
            shutdown.clone(),
            move |stream, _| serve_connection(stream, "unix".to_owned(), ctx.clone()),
            |mut stream, _| async move { busy(&mut stream).await },
        )
        .await
    };
    tokio::join!(on_tcp, on_unix);
    if let Some(path) = &args.socket {
        let _ = std::fs::remove_file(path);
    }
    ctx.begin_shutdown();
    let pending = limiter.active();
    if pending > 0 {
        info!(pending, "waiting for sessions to finish");
    }
    service
        .wait_sessions(Duration::from_secs(args.shutdown_grace))
        .await;
    info!("lmtpd stopped");
    Ok(())
}
