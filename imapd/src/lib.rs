//! imapd: the IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051) server of the suite, over
//! `store-client`.
//!
//! [`serve_connection`] runs one session over any async stream: our own driver reads one
//! command at a time with its literals (bounded: a line over [`MAX_LINE`] or a literal over
//! the limit is refused before it is read), `parse.rs` and `ext/` turn it into a
//! [`parse::Command`], and `session.rs` carries it out against the store, announcing other
//! sessions' changes (EXISTS, EXPUNGE or VANISHED, FETCH FLAGS) when IMAP allows. STARTTLS,
//! COMPRESS=DEFLATE, IDLE and the failed-login delay live in the driver. The `imapd` binary
//! (`src/main.rs`) is the TCP server started through `service-runtime`.

pub mod codec;
pub mod encode;
pub mod ext;
pub mod order;
pub mod parse;
pub mod qresync;
pub mod respond;
mod session;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use store_client::{ClientError, StoreClient};

pub use session::serve_connection;

/// The name ID reports.
pub const IMPLEMENTATION: &str = "msgsuite-imapd";

/// Longest command line (without its literals) accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest literal outside APPEND (and before login).
pub const MAX_SMALL_LITERAL: u64 = 64 * 1024;
/// Largest command (lines and literals) outside APPEND.
pub const MAX_COMMAND: usize = 1024 * 1024;

/// Tunables of the IMAP service.
#[derive(Debug, Clone)]
pub struct ImapSettings {
    /// `service.allowplaintextauth`: accept passwords without TLS from non-loopback peers.
    pub allow_plaintext_auth: bool,
    /// `local.service.imap.loopbackplaintext`: loopback peers count as secure for passwords.
    pub loopback_plaintext: bool,
    /// Time allowed before login.
    pub login_timeout: Duration,
    /// Idle time allowed after login (RFC 9051 5.4: at least 30 minutes).
    pub idle_timeout: Duration,
    /// Delay before the answer to a failed login.
    pub auth_fail_delay: Duration,
    /// Failed logins from one address within `auth_failure_window` before it is refused.
    pub max_auth_failures: usize,
    pub auth_failure_window: Duration,
    /// Largest message APPEND accepts (`local.store.maxmessagesize`): APPENDLIMIT.
    pub max_message_size: u64,
    /// Text of the greeting after `* OK [CAPABILITY ...] `.
    pub greeting: String,
}

impl Default for ImapSettings {
    fn default() -> Self {
        ImapSettings {
            allow_plaintext_auth: false,
            loopback_plaintext: true,
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30 * 60),
            auth_fail_delay: Duration::from_secs(1),
            max_auth_failures: 10,
            auth_failure_window: Duration::from_secs(600),
            max_message_size: 50 * 1024 * 1024,
            greeting: format!("{IMPLEMENTATION} IMAP4rev2 server ready"),
        }
    }
}

/// What every session of a process shares.
pub struct ImapContext {
    client: StoreClient,
    root: PathBuf,
    tls: Option<service_runtime::TlsConfig>,
    settings: ImapSettings,
    /// Failed logins per address (shared with popd's rule).
    pub(crate) failures: service_runtime::AuthFailures,
}

impl ImapContext {
    /// Open the store of the instance at `root`. `tls` enables STARTTLS.
    pub async fn open(
        root: impl AsRef<Path>,
        settings: ImapSettings,
        tls: Option<service_runtime::TlsConfig>,
    ) -> Result<ImapContext, ClientError> {
        let root = root.as_ref().to_path_buf();
        let client = StoreClient::open(&root).await?;
        let failures = service_runtime::AuthFailures::new(
            settings.max_auth_failures,
            settings.auth_failure_window,
        );
        Ok(ImapContext {
            client,
            root,
            tls,
            settings,
            failures,
        })
    }

    pub fn settings(&self) -> &ImapSettings {
        &self.settings
    }

    pub fn tls(&self) -> Option<&service_runtime::TlsConfig> {
        self.tls.as_ref()
    }
}

/// Where a session came from (for the failed-login count and the loopback rule).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The connection is already TLS (the implicit-TLS port).
    pub tls: bool,
}
