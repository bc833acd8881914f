//! What every front end (imapd, popd, mshttpd, lmtpd) does the same way at
//! startup and while it runs: read `config/msg.conf`, log to
//! `data/log/<service>` in the format of Sun Java System Messaging Server
//! 6.3, check file descriptors against the configured sessions per process
//! (and serve with the cap it can afford rather than refuse to start),
//! bind listeners and run the accept loop under that cap, build the TLS
//! acceptor (with a self-signed certificate at first start), drop root
//! privileges after binding, and shut down on SIGTERM or SIGINT.
//!
//! A front end calls [`start`] (or [`Service::start`]), binds with
//! [`bind`], calls [`drop_privileges`], then [`serve`]s with the
//! [`Runtime`]'s limiter and shutdown signal, and finally
//! [`Runtime::wait_sessions`].

mod auth;
mod fd;
pub mod log;
mod net;
mod privs;
mod session;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use msgconf::registry::names;
use msgconf::{Config, ConfigError};

pub use auth::AuthFailures;
pub use fd::{check_descriptors, plan_descriptors, DescriptorPlan};
pub use log::{LogError, LogHandle, LogSettings, Severity};
pub use net::{bind, bind_unix, listen_addr, serve, Acceptor, BindError};
pub use privs::{drop_privileges, PrivilegeError, Privileges};
pub use session::{SessionLimiter, SessionPermit, Shutdown};
pub use tls::{TlsConfig, TlsError};

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Not one of `imap`, `pop`, `http`, `lmtp`.
    #[error("unknown service {0:?} (expected imap, pop, http or lmtp)")]
    UnknownService(String),
    /// `msg.conf` could not be read or holds an invalid value; the message
    /// names the file, line, parameter, value and valid range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The log could not be opened.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// One front end: its service name (for parameters and the log file) and
/// the process name written in its log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    name: &'static str,
    process: String,
    sessions: &'static str,
    fd_per_session: &'static str,
}

impl Service {
    /// The service called `name`: `imap` (process `imapd`), `pop`
    /// (`popd`), `http` (`mshttpd`) or `lmtp` (`lmtpd`).
    pub fn named(name: &str) -> Result<Service, StartError> {
        let (name, process, sessions, fd_per_session) = match name {
            "imap" => (
                "imap",
                "imapd",
                names::IMAP_SESSIONS_PER_PROCESS,
                names::IMAP_FD_PER_SESSION,
            ),
            "pop" => (
                "pop",
                "popd",
                names::POP_SESSIONS_PER_PROCESS,
                names::POP_FD_PER_SESSION,
            ),
            "http" => (
                "http",
                "mshttpd",
                names::HTTP_SESSIONS_PER_PROCESS,
                names::HTTP_FD_PER_SESSION,
            ),
            "lmtp" => (
                "lmtp",
                "lmtpd",
                names::LMTP_SESSIONS_PER_PROCESS,
                names::LMTP_FD_PER_SESSION,
            ),
            other => return Err(StartError::UnknownService(other.to_string())),
        };
        Ok(Service {
            name,
            process: process.to_string(),
            sessions,
            fd_per_session,
        })
    }

    /// Writes `process` instead of the default process name in log lines.
    pub fn with_process_name(mut self, process: &str) -> Service {
        self.process = process.to_string();
        self
    }

    /// The service name (`imap`).
    pub fn name(&self) -> &str {
        self.name
    }

    /// Starts the service under instance `root`: loads
    /// `<root>/config/msg.conf`, opens `<root>/data/log/<service>` and
    /// installs it as the global tracing subscriber (if none is installed
    /// yet), checks file descriptors (logging the seed's Critical line when
    /// short) and returns the [`Runtime`].
    pub fn start(self, root: impl AsRef<Path>) -> Result<Runtime, StartError> {
        let root = root.as_ref().to_path_buf();
        let config = Config::load(root.join("config").join("msg.conf"))?;
        let settings = LogSettings::from_config(&config, self.name, &self.process, &root);
        let (layer, log) = log::open(&settings, log::system_clock())?;
        let log_installed = log::install(layer);
        for w in config.warnings() {
            tracing::warn!("msg.conf: {w}");
        }
        let plan = check_descriptors(
            self.name,
            u64::try_from(config.get_int(self.sessions)).unwrap_or(1),
            u64::try_from(config.get_int(self.fd_per_session)).unwrap_or(1),
            u64::try_from(config.get_int(names::FD_RESERVE)).unwrap_or(0),
        );
        if let Some(message) = &plan.message {
            tracing::error!(severity = "Critical", "{message}");
        }
        tracing::info!(
            "{} starting: {} sessions per process, file descriptor limit {}",
            self.process,
            plan.session_cap,
            plan.soft_limit
        );
        Ok(Runtime {
            limiter: SessionLimiter::new(plan.session_cap),
            shutdown: Shutdown::new(),
            service: self,
            config,
            root,
            plan,
            log,
            log_installed,
        })
    }
}

/// Starts `service_name` (`imap`, `pop`, `http`, `lmtp`) under instance
/// `root`; see [`Service::start`].
pub fn start(service_name: &str, root: impl AsRef<Path>) -> Result<Runtime, StartError> {
    Service::named(service_name)?.start(root)
}

/// A started service: its configuration, session cap and limiter,
/// shutdown signal and log.
pub struct Runtime {
    service: Service,
    config: Config,
    root: PathBuf,
    plan: DescriptorPlan,
    limiter: SessionLimiter,
    shutdown: Shutdown,
    log: LogHandle,
    log_installed: bool,
}

impl Runtime {
    /// The service.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The configuration read at start.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The instance root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The outcome of the descriptor check.
    pub fn descriptor_plan(&self) -> &DescriptorPlan {
        &self.plan
    }

    /// Sessions this process accepts at once.
    pub fn session_cap(&self) -> u64 {
        self.plan.session_cap
    }

    /// The session counter under the cap (clone it into [`serve`]).
    pub fn limiter(&self) -> &SessionLimiter {
        &self.limiter
    }

    /// The shutdown signal (call [`Shutdown::on_signals`] inside the tokio
    /// runtime to tie it to SIGTERM and SIGINT).
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The service log.
    pub fn log(&self) -> &LogHandle {
        &self.log
    }

    /// False if another global tracing subscriber was already installed,
    /// so this service's log file receives no events.
    pub fn log_installed(&self) -> bool {
        self.log_installed
    }

    /// Writes out queued log lines (at most `timeout`).
    pub fn flush_log(&self, timeout: Duration) -> bool {
        self.log.flush(timeout)
    }

    /// Switches to the unprivileged server user after the ports are bound and before any
    /// client byte is read (or the store is opened, so every file it creates belongs to that
    /// user). Running as root with `local.serveruid` or `local.servergid` set in msg.conf, it
    /// switches to them: a name the name service does not know stops startup with the seed's
    /// "Fatal error: Cannot find group in name service" (or user), and so does a store
    /// (`data/store`) that the server user does not own (it could not write it). `data/` and
    /// the log directory, when root made them, are handed to that user so it can create the
    /// store and rotate its log. Running as root with neither
    /// set, it keeps running as root and says so at Warning: an instance made by root for a
    /// quick start must not become unreadable to its own server. Not root: nothing to do.
    pub fn drop_privileges(&self) -> Result<Privileges, PrivilegeError> {
        use msgconf::registry::names;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return privs::drop_privileges(&self.config);
        }
        if !self.config.is_set(names::SERVER_UID) && !self.config.is_set(names::SERVER_GID) {
            tracing::warn!(
                "running as root: set {} and {} in msg.conf to run as an unprivileged user",
                names::SERVER_UID,
                names::SERVER_GID
            );
            return Ok(Privileges::NotRoot { uid: 0 });
        }
        let user = self.config.get_str(names::SERVER_UID);
        let group = self.config.get_str(names::SERVER_GID);
        let (Some(uid), Some(gid)) = (privs::lookup_user(&user), privs::lookup_group(&group))
        else {
            // Let the shared path report which name is unknown, in the seed's words.
            return privs::drop_privileges(&self.config);
        };
        let data = self.root.join("data");
        let store = data.join("store");
        if let Ok(meta) = std::fs::metadata(&store) {
            use std::os::unix::fs::MetadataExt;
            if meta.uid() != uid {
                let e = PrivilegeError::NotOwner {
                    path: store,
                    owner: meta.uid(),
                    user,
                    group,
                };
                tracing::error!(severity = "Critical", "{e}");
                return Err(e);
            }
        }
        // data/ and the log directory may have just been made by this process, as root; the
        // server user must be able to create the store and rotate its log in them.
        let log_file = self.log.path().to_path_buf();
        let mut mine: Vec<&Path> = vec![&data, &log_file];
        mine.extend(
            log_file
                .ancestors()
                .skip(1)
                .take_while(|p| p.starts_with(&data)),
        );
        for path in mine {
            let root_owned = std::fs::symlink_metadata(path)
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
                .unwrap_or(false);
            if root_owned {
                if let Err(e) = privs::chown(path, uid, gid) {
                    tracing::warn!("cannot give {} to {user}: {e}", path.display());
                }
            }
        }
        privs::drop_privileges(&self.config)
    }

    /// Waits, at most `timeout`, for every session to end. Returns the
    /// number still running (0 when all ended).
    pub async fn wait_sessions(&self, timeout: Duration) -> u64 {
        let left = self.limiter.wait_idle(timeout).await;
        if left > 0 {
            tracing::warn!("{left} sessions still running after {timeout:?}; exiting anyway");
        }
        left
    }
}

/// Environment variable naming the instance root, as every command reads it.
pub const ROOT_ENV: &str = "MSG_ROOT";

/// The instance root: `--root`, else `$MSG_ROOT`, else `./msg`.
pub fn instance_root(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os(ROOT_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("msg"))
}

/// A service's `main`: start `service` under `root` (configuration, log, descriptor check),
/// run `body` on a multi-threaded tokio runtime, flush the log, and turn the outcome into
/// the exit status. Failures go to stderr and, once the log is open, to the log.
pub fn run_main<F, Fut, E>(service: &str, root: &Path, body: F) -> std::process::ExitCode
where
    F: FnOnce(std::sync::Arc<Runtime>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let process = Service::named(service)
        .map(|s| s.name().to_owned())
        .unwrap_or_else(|_| service.to_owned());
    let runtime = match start(service, root) {
        Ok(r) => std::sync::Arc::new(r),
        Err(e) => {
            eprintln!("{process}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            runtime.flush_log(Duration::from_secs(2));
            eprintln!("{process}: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = tokio.block_on(body(runtime.clone()));
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    runtime.flush_log(Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{process}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
