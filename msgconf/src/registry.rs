//! The known `msg.conf` parameters: names, types, defaults and help.

use std::fmt;
use std::net::IpAddr;

use crate::ConfigError;

/// The services that have their own `logfile.<service>.*` parameters.
pub const LOG_SERVICES: &[&str] = &["imap", "pop", "http", "lmtp", "store", "admin", "default"];

/// The log levels, quietest first, as `configutil` spells them.
pub const LOG_LEVELS: &[&str] = &[
    "Nolog",
    "Critical",
    "Error",
    "Warning",
    "Notice",
    "Information",
    "Debug",
];

/// The value type of a parameter, with its valid range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A decimal integer in `min..=max`, in the given unit.
    Int {
        /// Smallest valid value.
        min: i64,
        /// Largest valid value.
        max: i64,
        /// What the number counts (for help text).
        unit: Unit,
    },
    /// `0` (off) or `1` (on).
    Bool,
    /// Free text (no control characters).
    Str {
        /// Whether the empty string is valid.
        allow_empty: bool,
    },
    /// A file system path, absolute or relative to a base that the
    /// parameter's description names.
    Path {
        /// Whether the empty string (meaning "the built-in location") is valid.
        allow_empty: bool,
    },
    /// A TCP port, 1 to 65535.
    Port,
    /// One of a fixed list of words (matched case-insensitively, stored as
    /// listed).
    Enum(&'static [&'static str]),
    /// A partition name: 1 to 32 characters of `a-z 0-9 _ -`.
    PartitionName,
    /// An IP address, or empty for all addresses.
    IpAddr,
}

/// The unit of an integer parameter, for help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain count.
    Count,
    /// Bytes.
    Bytes,
    /// Seconds.
    Seconds,
    /// Minutes.
    Minutes,
    /// Percent.
    Percent,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Count => "",
            Unit::Bytes => " bytes",
            Unit::Seconds => " seconds",
            Unit::Minutes => " minutes",
            Unit::Percent => " percent",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Int { min, max, unit } => {
                write!(f, "integer, {min} to {max}{}", unit.suffix())
            }
            Kind::Bool => f.write_str("boolean, 0 or 1"),
            Kind::Str { allow_empty: true } => f.write_str("string"),
            Kind::Str { allow_empty: false } => f.write_str("non-empty string"),
            Kind::Path { .. } => f.write_str("path"),
            Kind::Port => f.write_str("TCP port, 1 to 65535"),
            Kind::Enum(words) => write!(f, "one of {}", words.join(", ")),
            Kind::PartitionName => f.write_str("partition name, 1 to 32 of a-z 0-9 _ -"),
            Kind::IpAddr => f.write_str("IP address, or empty for all"),
        }
    }
}

/// A known parameter. Families of parameters have a placeholder in their
/// name: `<name>` (any partition name) or `<service>` (one of
/// [`LOG_SERVICES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    /// The name, lowercase, possibly with a placeholder segment.
    pub name: &'static str,
    /// The value type and range.
    pub kind: Kind,
    /// The value used when `msg.conf` does not set one.
    pub default: &'static str,
    /// One line of help.
    pub description: &'static str,
}

impl ParamSpec {
    /// True for a family (a name with a `<name>` or `<service>` segment).
    pub fn is_family(&self) -> bool {
        self.name.contains('<')
    }

    /// Checks `value` against this parameter's type and range and returns
    /// it in canonical form (integers without sign or leading zeros, enum
    /// words spelled as listed). `name` is used in the error.
    pub fn validate(&self, name: &str, value: &str) -> Result<String, ConfigError> {
        let value = value.trim();
        if value.chars().any(char::is_control) {
            return Err(ConfigError::InvalidValue {
                name: name.to_string(),
                value: value.to_string(),
                expected: "text without control characters (such as newlines or tabs)".into(),
            });
        }
        let invalid = |expected: String| ConfigError::InvalidValue {
            name: name.to_string(),
            value: value.to_string(),
            expected,
        };
        match self.kind {
            Kind::Int { min, max, .. } => parse_int(name, value, min, max).map(|n| n.to_string()),
            Kind::Port => parse_int(name, value, 1, 65535).map(|n| n.to_string()),
            Kind::Bool => match value {
                "0" | "1" => Ok(value.to_string()),
                _ => Err(ConfigError::NotABoolean {
                    name: name.to_string(),
                    value: value.to_string(),
                }),
            },
            Kind::Str { allow_empty } => {
                if value.is_empty() && !allow_empty {
                    Err(invalid("a non-empty string".into()))
                } else {
                    Ok(value.to_string())
                }
            }
            Kind::Path { allow_empty } => {
                if value.is_empty() && !allow_empty {
                    Err(invalid("a non-empty path".into()))
                } else {
                    Ok(value.to_string())
                }
            }
            Kind::Enum(words) => words
                .iter()
                .find(|w| w.eq_ignore_ascii_case(value))
                .map(|w| (*w).to_string())
                .ok_or_else(|| ConfigError::NotInList {
                    name: name.to_string(),
                    value: value.to_string(),
                    allowed: words.join(", "),
                }),
            Kind::PartitionName => {
                if is_partition_name(value) {
                    Ok(value.to_string())
                } else {
                    Err(invalid("a partition name: 1 to 32 of a-z 0-9 _ -".into()))
                }
            }
            Kind::IpAddr => {
                if value.is_empty() || value.parse::<IpAddr>().is_ok() {
                    Ok(value.to_string())
                } else {
                    Err(invalid(
                        "an IP address such as 192.0.2.1 or ::1, or empty for all addresses".into(),
                    ))
                }
            }
        }
    }
}

fn parse_int(name: &str, value: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::NotAnInteger {
            name: name.to_string(),
            value: value.to_string(),
            min,
            max,
        });
    }
    let out_of_range = || ConfigError::OutOfRange {
        name: name.to_string(),
        value: value.to_string(),
        min,
        max,
    };
    // A well-formed number too large for i64 is out of range, not garbage.
    let n: i64 = value.parse().map_err(|_| out_of_range())?;
    if n < min || n > max {
        return Err(out_of_range());
    }
    Ok(n)
}

/// True for a valid partition name: 1 to 32 of `a-z 0-9 _ -`.
pub fn is_partition_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

const fn int(min: i64, max: i64, unit: Unit) -> Kind {
    Kind::Int { min, max, unit }
}

const fn p(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    description: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        kind,
        default,
        description,
    }
}

const TB: i64 = 1 << 40;
const SESSIONS: Kind = int(1, 1_000_000, Unit::Count);
const FD_PER_SESSION: Kind = int(1, 1000, Unit::Count);
const YEAR: i64 = 31_536_000;

/// Every known parameter, in help order.
pub static PARAMS: &[ParamSpec] = &[
    // --- Message store ---
    p(
        "store.defaultpartition",
        Kind::PartitionName,
        "primary",
        "Partition on which new mailboxes are created.",
    ),
    p(
        "store.partition.<name>.path",
        Kind::Path { allow_empty: true },
        "",
        "Directory of a store partition; empty means <datadir>/store/partition/<name>.",
    ),
    p(
        "store.defaultmailboxquota",
        int(-1, i64::MAX, Unit::Bytes),
        "-1",
        "Default mailbox quota for users without their own, in bytes; -1 = unlimited.",
    ),
    p(
        "store.defaultmessagequota",
        int(-1, i64::MAX, Unit::Count),
        "-1",
        "Default quota on the number of messages per user; -1 = unlimited.",
    ),
    p(
        "store.quotaenforcement",
        Kind::Bool,
        "1",
        "1 = refuse delivery to users over quota; 0 = only report quota usage.",
    ),
    p(
        "store.quotawarn",
        int(0, 100, Unit::Percent),
        "90",
        "Percentage of quota at which users are warned they are nearly full.",
    ),
    p(
        "local.store.maxmessagesize",
        int(1, TB, Unit::Bytes),
        "52428800",
        "Largest message the store accepts (delivery and APPEND), in bytes.",
    ),
    p(
        "local.store.maxfoldermessages",
        int(0, u32::MAX as i64, Unit::Count),
        "0",
        "Most messages one folder may hold; 0 = unlimited.",
    ),
    p(
        "local.store.fsync",
        Kind::Enum(&["optimized", "always"]),
        "optimized",
        "Which changes are on stable storage before they are acknowledged. optimized: a \
         delivered, appended or copied message (its file, directory entry and index record) \
         always; flag changes, expunges and other index updates at the folder's next commit \
         round or the kernel's writeback (Dovecot's default, mail_fsync=optimized). always: \
         every change.",
    ),
    p(
        "local.store.expungegrace",
        int(0, YEAR, Unit::Seconds),
        "86400",
        "Seconds expunged messages are kept on disk before cleanup removes them.",
    ),
    p(
        "local.store.dbcachesize",
        int(0, TB, Unit::Bytes),
        "0",
        "Store database cache size in bytes; 0 = sized from the store.",
    ),
    p(
        "local.store.snapshotinterval",
        int(1, 46080, Unit::Minutes),
        "1440",
        "Minutes between snapshots of the store databases.",
    ),
    p(
        "local.store.snapshotdirs",
        int(2, 367, Unit::Count),
        "3",
        "Number of database snapshots kept.",
    ),
    p(
        "local.store.snapshotpath",
        Kind::Path { allow_empty: false },
        "dbdata/snapshots",
        "Where database snapshots are written: absolute, or relative to the store directory.",
    ),
    p(
        "local.store.checkpointinterval",
        int(1, 3600, Unit::Seconds),
        "60",
        "Seconds between stored's database checkpoints (stamp mboxlist/stored.ckp).",
    ),
    p(
        "local.store.logcleanupinterval",
        int(1, 86400, Unit::Seconds),
        "300",
        "Seconds between stored's database log cleanups (stamp mboxlist/stored.lcu).",
    ),
    p(
        "local.store.peruserinterval",
        int(1, 86400, Unit::Seconds),
        "3600",
        "Seconds between stored's write-outs of per-user data (stamp mboxlist/stored.per).",
    ),
    p(
        "local.store.cleanupinterval",
        int(1, 86400, Unit::Seconds),
        "3600",
        "Seconds between stored's passes erasing expunged messages past local.store.expungegrace.",
    ),
    p(
        "store.expirestart",
        int(0, 23, Unit::Count),
        "23",
        "Hour of the day (0-23, local time) at which stored applies the aging policies of config/store.expirerule, once a day.",
    ),
    p(
        "local.store.reconstructcheckinterval",
        int(0, 604800, Unit::Seconds),
        "21600",
        "Seconds between stored's reconstruct -r -n checks exported as metrics (msg_reconstruct_*); 0 = off.",
    ),
    p(
        "local.store.metricsport",
        int(0, 65535, Unit::Count),
        "0",
        "Port on 127.0.0.1 where stored serves Prometheus metrics at /metrics; 0 = off.",
    ),
    // --- Server identity ---
    p(
        "local.serveruid",
        Kind::Str { allow_empty: false },
        "mailsrv",
        "User the servers run as after binding their ports.",
    ),
    p(
        "local.servergid",
        Kind::Str { allow_empty: false },
        "mailsrv",
        "Group the servers run as after binding their ports.",
    ),
    // --- Services ---
    p(
        "service.listenaddr",
        Kind::IpAddr,
        "",
        "Address the IMAP, POP and HTTP services listen on; empty = all addresses.",
    ),
    p(
        "service.allowplaintextauth",
        Kind::Bool,
        "0",
        "1 = accept plaintext passwords on connections without TLS.",
    ),
    p(
        "local.service.imap.loopbackplaintext",
        Kind::Bool,
        "1",
        "1 = IMAP accepts plaintext passwords without TLS from loopback addresses, as secure \
         local connections; 0 = loopback follows service.allowplaintextauth like any address.",
    ),
    p(
        "local.service.pop.exclusive",
        Kind::Bool,
        "0",
        "1 = refuse a second POP session on the same maildrop with -ERR [IN-USE].",
    ),
    p(
        "service.imap.enable",
        Kind::Bool,
        "1",
        "1 = run the IMAP service.",
    ),
    p("service.imap.port", Kind::Port, "143", "IMAP port."),
    p(
        "service.imap.enablesslport",
        Kind::Bool,
        "0",
        "1 = also listen for IMAP over TLS on service.imap.sslport.",
    ),
    p(
        "service.imap.sslport",
        Kind::Port,
        "993",
        "IMAP-over-TLS port.",
    ),
    p(
        "service.imap.sessionsperprocess",
        SESSIONS,
        "4000",
        "Most IMAP sessions one server process handles.",
    ),
    p(
        "service.imap.idletimeout",
        int(30, 1440, Unit::Minutes),
        "30",
        "Minutes an idle IMAP session is kept (RFC 3501 asks for at least 30).",
    ),
    p(
        "service.imap.banner",
        Kind::Str { allow_empty: true },
        "",
        "IMAP greeting text; empty = the built-in greeting.",
    ),
    p(
        "service.pop.enable",
        Kind::Bool,
        "1",
        "1 = run the POP service.",
    ),
    p("service.pop.port", Kind::Port, "110", "POP3 port."),
    p(
        "service.pop.enablesslport",
        Kind::Bool,
        "0",
        "1 = also listen for POP3 over TLS on service.pop.sslport.",
    ),
    p(
        "service.pop.sslport",
        Kind::Port,
        "995",
        "POP3-over-TLS port.",
    ),
    p(
        "service.pop.sessionsperprocess",
        SESSIONS,
        "600",
        "Most POP sessions one server process handles.",
    ),
    p(
        "service.pop.idletimeout",
        int(10, 1440, Unit::Minutes),
        "10",
        "Minutes an idle POP session is kept (RFC 1939 asks for at least 10).",
    ),
    p(
        "service.pop.banner",
        Kind::Str { allow_empty: true },
        "",
        "POP3 greeting text; empty = the built-in greeting.",
    ),
    p(
        "service.http.enable",
        Kind::Bool,
        "1",
        "1 = run the HTTP (webmail) service.",
    ),
    p("service.http.port", Kind::Port, "8990", "HTTP port."),
    p(
        "service.http.enablesslport",
        Kind::Bool,
        "0",
        "1 = also listen for HTTPS on service.http.sslport.",
    ),
    p("service.http.sslport", Kind::Port, "8991", "HTTPS port."),
    p(
        "service.http.sessionsperprocess",
        SESSIONS,
        "6000",
        "Most HTTP sessions one server process handles.",
    ),
    p("service.lmtp.port", Kind::Port, "24", "LMTP delivery port."),
    p(
        "service.lmtp.sessionsperprocess",
        SESSIONS,
        "1000",
        "Most LMTP sessions one server process handles.",
    ),
    p(
        "service.ssl.certfile",
        Kind::Path { allow_empty: true },
        "",
        "TLS certificate chain (PEM) of the services: absolute, or relative to the config directory; empty = a self-signed certificate made at first start.",
    ),
    p(
        "service.ssl.keyfile",
        Kind::Path { allow_empty: true },
        "",
        "TLS private key (PEM) of the services: absolute, or relative to the config directory; empty = the key of the self-signed certificate.",
    ),
    p(
        "local.service.fdreserve",
        int(0, 1_000_000, Unit::Count),
        "851",
        "File descriptors each server process keeps free for files other than sessions.",
    ),
    p(
        "local.service.imap.fdpersession",
        FD_PER_SESSION,
        "3",
        "File descriptors budgeted per IMAP session.",
    ),
    p(
        "local.service.pop.fdpersession",
        FD_PER_SESSION,
        "3",
        "File descriptors budgeted per POP session.",
    ),
    p(
        "local.service.http.fdpersession",
        FD_PER_SESSION,
        "2",
        "File descriptors budgeted per HTTP session.",
    ),
    p(
        "local.service.lmtp.fdpersession",
        FD_PER_SESSION,
        "3",
        "File descriptors budgeted per LMTP session.",
    ),
    p(
        "local.service.http.gzip.static",
        Kind::Bool,
        "1",
        "1 = gzip static HTTP content for clients that accept it.",
    ),
    p(
        "local.service.http.gzip.dynamic",
        Kind::Bool,
        "1",
        "1 = gzip dynamic HTTP responses for clients that accept it.",
    ),
    p(
        "local.service.http.smtprelay",
        Kind::Str { allow_empty: true },
        "",
        "host:port of the SMTP relay JMAP EmailSubmission sends through; empty = no sending.",
    ),
    // --- Logging, per service ---
    p(
        "logfile.<service>.logdir",
        Kind::Path { allow_empty: false },
        "log",
        "Directory of the service's log files: absolute, or relative to the data directory.",
    ),
    p(
        "logfile.<service>.loglevel",
        Kind::Enum(LOG_LEVELS),
        "Notice",
        "Least severe level of messages written to the log.",
    ),
    p(
        "logfile.<service>.maxlogfilesize",
        int(1, TB, Unit::Bytes),
        "2097152",
        "Size in bytes at which the current log file is rolled over.",
    ),
    p(
        "logfile.<service>.rollovertime",
        int(1, YEAR, Unit::Seconds),
        "86400",
        "Seconds after which the current log file is rolled over.",
    ),
    p(
        "logfile.<service>.maxlogfiles",
        int(1, 1000, Unit::Count),
        "10",
        "Number of log files kept; the oldest is removed beyond this.",
    ),
    p(
        "logfile.<service>.expirytime",
        int(0, YEAR, Unit::Seconds),
        "604800",
        "Seconds a rolled-over log file is kept; 0 = keep until maxlogfiles removes it.",
    ),
];

/// Parameter name constants for callers, so a typo is a compile error.
pub mod names {
    #![allow(missing_docs)]
    pub const STORE_DEFAULT_PARTITION: &str = "store.defaultpartition";
    pub const STORE_DEFAULT_MAILBOX_QUOTA: &str = "store.defaultmailboxquota";
    pub const STORE_DEFAULT_MESSAGE_QUOTA: &str = "store.defaultmessagequota";
    pub const STORE_QUOTA_ENFORCEMENT: &str = "store.quotaenforcement";
    pub const STORE_QUOTA_WARN: &str = "store.quotawarn";
    pub const MAX_MESSAGE_SIZE: &str = "local.store.maxmessagesize";
    pub const MAX_FOLDER_MESSAGES: &str = "local.store.maxfoldermessages";
    pub const EXPUNGE_GRACE: &str = "local.store.expungegrace";
    pub const FSYNC: &str = "local.store.fsync";
    pub const DB_CACHE_SIZE: &str = "local.store.dbcachesize";
    pub const SNAPSHOT_INTERVAL: &str = "local.store.snapshotinterval";
    pub const SNAPSHOT_DIRS: &str = "local.store.snapshotdirs";
    pub const SNAPSHOT_PATH: &str = "local.store.snapshotpath";
    pub const CHECKPOINT_INTERVAL: &str = "local.store.checkpointinterval";
    pub const LOG_CLEANUP_INTERVAL: &str = "local.store.logcleanupinterval";
    pub const PERUSER_INTERVAL: &str = "local.store.peruserinterval";
    pub const CLEANUP_INTERVAL: &str = "local.store.cleanupinterval";
    pub const METRICS_PORT: &str = "local.store.metricsport";
    pub const EXPIRE_START: &str = "store.expirestart";
    pub const RECONSTRUCT_CHECK_INTERVAL: &str = "local.store.reconstructcheckinterval";
    pub const SERVER_UID: &str = "local.serveruid";
    pub const SERVER_GID: &str = "local.servergid";
    pub const LISTEN_ADDR: &str = "service.listenaddr";
    pub const ALLOW_PLAINTEXT_AUTH: &str = "service.allowplaintextauth";
    pub const POP_EXCLUSIVE: &str = "local.service.pop.exclusive";
    pub const IMAP_ENABLE: &str = "service.imap.enable";
    pub const IMAP_PORT: &str = "service.imap.port";
    pub const IMAP_ENABLE_SSL_PORT: &str = "service.imap.enablesslport";
    pub const IMAP_SSL_PORT: &str = "service.imap.sslport";
    pub const IMAP_SESSIONS_PER_PROCESS: &str = "service.imap.sessionsperprocess";
    pub const IMAP_IDLE_TIMEOUT: &str = "service.imap.idletimeout";
    pub const IMAP_BANNER: &str = "service.imap.banner";
    pub const POP_ENABLE: &str = "service.pop.enable";
    pub const POP_PORT: &str = "service.pop.port";
    pub const POP_ENABLE_SSL_PORT: &str = "service.pop.enablesslport";
    pub const POP_SSL_PORT: &str = "service.pop.sslport";
    pub const POP_SESSIONS_PER_PROCESS: &str = "service.pop.sessionsperprocess";
    pub const POP_IDLE_TIMEOUT: &str = "service.pop.idletimeout";
    pub const POP_BANNER: &str = "service.pop.banner";
    pub const HTTP_ENABLE: &str = "service.http.enable";
    pub const HTTP_PORT: &str = "service.http.port";
    pub const HTTP_ENABLE_SSL_PORT: &str = "service.http.enablesslport";
    pub const HTTP_SSL_PORT: &str = "service.http.sslport";
    pub const HTTP_SESSIONS_PER_PROCESS: &str = "service.http.sessionsperprocess";
    pub const LMTP_PORT: &str = "service.lmtp.port";
    pub const LMTP_SESSIONS_PER_PROCESS: &str = "service.lmtp.sessionsperprocess";
    pub const SSL_CERT_FILE: &str = "service.ssl.certfile";
    pub const SSL_KEY_FILE: &str = "service.ssl.keyfile";
    pub const FD_RESERVE: &str = "local.service.fdreserve";
    pub const IMAP_FD_PER_SESSION: &str = "local.service.imap.fdpersession";
    pub const POP_FD_PER_SESSION: &str = "local.service.pop.fdpersession";
    pub const HTTP_FD_PER_SESSION: &str = "local.service.http.fdpersession";
    pub const LMTP_FD_PER_SESSION: &str = "local.service.lmtp.fdpersession";
    pub const HTTP_GZIP_STATIC: &str = "local.service.http.gzip.static";
    pub const HTTP_GZIP_DYNAMIC: &str = "local.service.http.gzip.dynamic";
    pub const HTTP_SMTP_RELAY: &str = "local.service.http.smtprelay";

    /// `store.partition.<partition>.path`.
    pub fn partition_path(partition: &str) -> String {
        format!("store.partition.{partition}.path")
    }

    /// `logfile.<service>.<setting>`, e.g. `logfile("imap", "loglevel")`.
    pub fn logfile(service: &str, setting: &str) -> String {
        format!("logfile.{service}.{setting}")
    }
}

/// Finds the spec for a (lowercase) parameter name, matching families.
pub fn lookup(name: &str) -> Option<&'static ParamSpec> {
    let name = name.to_ascii_lowercase();
    PARAMS.iter().find(|spec| matches_spec(spec.name, &name))
}

fn matches_spec(pattern: &str, name: &str) -> bool {
    if !pattern.contains('<') {
        return pattern == name;
    }
    let mut pat = pattern.split('.');
    let mut got = name.split('.');
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return true,
            (Some(p), Some(g)) => {
                let ok = match p {
                    "<name>" => is_partition_name(g),
                    "<service>" => LOG_SERVICES.contains(&g),
                    _ => p == g,
                };
                if !ok {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Help text for a parameter: its name, type and range, default and
/// description. `None` for an unknown name.
pub fn describe(name: &str) -> Option<String> {
    let spec = lookup(name)?;
    let default = if spec.default.is_empty() {
        "(empty)".to_string()
    } else {
        spec.default.to_string()
    };
    Some(format!(
        "{}\n  {}\n  type: {}\n  default: {}",
        name.to_ascii_lowercase(),
        spec.description,
        spec.kind,
        default
    ))
}
