//! popd: the POP3 server.
//!
//! `popd --root DIR [--listen ADDR] [--listen-tls ADDR]` serves POP3 on TCP, prints
//! `listening on <addr>` on stdout (and `listening on <addr> (TLS)` for the implicit-TLS
//! port), and stops on SIGTERM (or SIGINT). Without `--listen` it listens on
//! `service.listenaddr`:`service.pop.port`; without `--listen-tls`, implicit TLS (RFC 8314)
//! is served on `service.pop.sslport` when `service.pop.enablesslport` is 1. It starts through
//! `service-runtime`: `config/msg.conf` is validated, the log goes to `data/log/pop` in the
//! seed's format, the descriptor check sets how many sessions it serves at once
//! (`service.pop.sessionsperprocess`); past that a client gets
//! `-ERR [SYS/TEMP] too many sessions, try again later` and is closed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use popd::{serve_connection, serve_tls_connection, PopContext, PopSettings};
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(name = "popd", about = "POP3 access to the message store (RFC 1939)")]
struct Args {
    /// Instance root (default: $MSG_ROOT, else ./msg).
    #[arg(long)]
    root: Option<PathBuf>,
    /// TCP address to listen on (default: service.listenaddr and service.pop.port).
    #[arg(long)]
    listen: Option<String>,
    /// TCP address for POP3 over implicit TLS (default: service.pop.sslport when
    /// service.pop.enablesslport is 1, else none).
    #[arg(long)]
    listen_tls: Option<String>,
    /// Refuse a second session on a maildrop already in use with -ERR [IN-USE]
    /// (also local.service.pop.exclusive = 1 in msg.conf).
    #[arg(long)]
    exclusive: bool,
    /// Seconds allowed before login.
    #[arg(long, default_value_t = 60)]
    login_timeout: u64,
    /// Seconds a logged-in session may be idle (default: service.pop.idletimeout).
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
    service_runtime::run_main("pop", &root.clone(), move |service| {
        run(args, root, service)
    })
}

/// A port number parameter (validated as a port by msgconf).
fn port_of(config: &msgconf::Config, name: &str) -> u16 {
    u16::try_from(config.get_int(name)).unwrap_or(0)
}

/// Tells whoever started us (start-msg, a test) where we listen.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        warn!("cannot write to stdout: {e}");
    }
}

/// At the session cap: POP3's "try later" answer, then close.
async fn busy<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::AsyncWriteExt;
    let _ = stream
        .write_all(b"-ERR [SYS/TEMP] too many sessions, try again later\r\n")
        .await;
    let _ = stream.shutdown().await;
}

async fn run(
    args: Args,
    root: PathBuf,
    service: std::sync::Arc<service_runtime::Runtime>,
) -> anyhow::Result<()> {
    let config = service.config();
    let idle_timeout = args.idle_timeout.unwrap_or_else(|| {
        u64::try_from(config.get_int("service.pop.idletimeout")).unwrap_or(10) * 60
    });
    let banner = config.get_str("service.pop.banner");
    let mut settings = PopSettings {
        allow_plaintext_auth: config.get_bool("service.allowplaintextauth"),
        exclusive: args.exclusive || config.get_bool("local.service.pop.exclusive"),
        login_timeout: Duration::from_secs(args.login_timeout.max(1)),
        idle_timeout: Duration::from_secs(idle_timeout.max(1)),
        auth_fail_delay: Duration::from_millis(args.auth_fail_delay_ms),
        max_auth_failures: args.max_auth_failures.max(1),
        ..PopSettings::default()
    };
    if !banner.trim().is_empty() {
        settings.greeting = banner.trim().to_owned();
    }
    let tls = match service_runtime::TlsConfig::from_config(config, &root) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!("STLS disabled: {e}");
            None
        }
    };

    let listen = match &args.listen {
        Some(a) => a.clone(),
        None => {
            service_runtime::listen_addr(config, port_of(config, "service.pop.port")).to_string()
        }
    };
    let listen_tls = match &args.listen_tls {
        Some(a) => Some(a.clone()),
        None if config.get_bool("service.pop.enablesslport") => Some(
            service_runtime::listen_addr(config, port_of(config, "service.pop.sslport"))
                .to_string(),
        ),
        None => None,
    };
    if listen_tls.is_some() && tls.is_none() {
        anyhow::bail!("implicit TLS port configured but no usable certificate (see the log)");
    }
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
        PopContext::open(&root, settings, tls)
            .await
            .with_context(|| format!("instance {}", root.display()))?,
    );
    let limiter = service.limiter().clone();
    announce(&format!("listening on {local}"));
    if let Some(l) = &tls_listener {
        announce(&format!(
            "listening on {} (TLS)",
            l.local_addr().context("listener address")?
        ));
    }
    info!(%local, root = %root.display(), "popd started");

    // One accept loop per listener under the shared cap; SIGTERM or SIGINT stops both,
    // then sessions get `--shutdown-grace` seconds to finish.
    let shutdown = service.shutdown().clone();
    shutdown.on_signals().context("signal handlers")?;
    let plain = {
        let ctx = ctx.clone();
        service_runtime::serve(
            tcp,
            limiter.clone(),
            shutdown.clone(),
            move |stream, peer| serve_connection(stream, peer, ctx.clone()),
            |mut stream, _| async move { busy(&mut stream).await },
        )
    };
    let implicit_tls = async {
        let Some(listener) = tls_listener else { return };
        let ctx = ctx.clone();
        service_runtime::serve(
            listener,
            limiter.clone(),
            shutdown.clone(),
            move |stream, peer| serve_tls_connection(stream, peer, ctx.clone()),
            // The cap is checked before the handshake, so a flood of TLS connections cannot
            // hold more than the sessions allowed; the refused ones are closed without a
            // reply, as POP3 has no way to speak before TLS is up.
            |_stream, peer| async move { warn!("TLS connection from {peer} refused") },
        )
        .await
    };
    tokio::join!(plain, implicit_tls);
    service
        .wait_sessions(Duration::from_secs(args.shutdown_grace))
        .await;
    info!("popd stopped");
    Ok(())
}
