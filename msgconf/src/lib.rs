//! The server configuration in `config/msg.conf`, as `configutil` manages it.
//!
//! Every server and admin command reads its settings from one file of
//! `name = value` lines, using the parameter names that administrators of
//! Sun Java System Messaging Server 6.3 know (`service.imap.port`,
//! `local.store.snapshotinterval`, ...). This crate is the single place
//! that knows those parameters: their types, valid ranges, defaults and
//! help text (the [`registry`]), and how to read, validate, change and
//! rewrite the file without losing the administrator's comments
//! ([`Config`]). A bad value is refused with a message that names the
//! parameter and what it accepts, before any server starts with it.
//!
//! # File format
//!
//! One `name = value` per line. Lines whose first non-blank character is
//! `#` are comments; blank lines are ignored. Names are case-insensitive
//! (stored lowercase). Surrounding whitespace is trimmed from values, and
//! one pair of surrounding double quotes is removed, so `name = "value"`
//! reads the same as `name = value`. Unknown names are kept (and reported
//! by [`Config::warnings`]); if a name appears twice, the last one counts.

pub mod registry;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use registry::{describe, lookup, names, Kind, ParamSpec, Unit, LOG_LEVELS, LOG_SERVICES};

/// The partition that always exists.
pub const PRIMARY_PARTITION: &str = "primary";

/// Why a configuration could not be read, changed or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A number outside the parameter's range.
    #[error("{name}: value {value} is out of range ({min} to {max})")]
    OutOfRange {
        /// Parameter name.
        name: String,
        /// The value given.
        value: String,
        /// Smallest valid value.
        min: i64,
        /// Largest valid value.
        max: i64,
    },
    /// Not a decimal integer.
    #[error("{name}: value {value:?} is not a whole number (expected {min} to {max})")]
    NotAnInteger {
        /// Parameter name.
        name: String,
        /// The value given.
        value: String,
        /// Smallest valid value.
        min: i64,
        /// Largest valid value.
        max: i64,
    },
    /// Not `0` or `1`.
    #[error("{name}: value {value:?} is not a boolean (expected 0 or 1)")]
    NotABoolean {
        /// Parameter name.
        name: String,
        /// The value given.
        value: String,
    },
    /// Not one of the parameter's words.
    #[error("{name}: value {value:?} is not valid (expected one of {allowed})")]
    NotInList {
        /// Parameter name.
        name: String,
        /// The value given.
        value: String,
        /// The valid words, comma-separated.
        allowed: String,
    },
    /// Another kind of invalid value (empty, control characters, bad
    /// partition name or address).
    #[error("{name}: value {value:?} is not valid (expected {expected})")]
    InvalidValue {
        /// Parameter name.
        name: String,
        /// The value given.
        value: String,
        /// What the parameter accepts.
        expected: String,
    },
    /// A name that is not a known parameter (when setting one).
    #[error("{name}: unknown parameter")]
    UnknownParameter {
        /// The name given.
        name: String,
    },
    /// A name with characters no parameter name has.
    #[error("{name:?} is not a valid parameter name (letters, digits, '.', '_' and '-' only)")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A line that is neither a comment nor `name = value`.
    #[error("{}: line {line}: expected `name = value` or a # comment, found {text:?}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The line.
        text: String,
    },
    /// An invalid value in the file; `source` says what is wrong.
    #[error("{}: line {line}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The problem with the value.
        source: Box<ConfigError>,
    },
    /// Reading or writing the file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
}

impl ConfigError {
    /// The underlying problem, without the file location of
    /// [`ConfigError::InFile`].
    pub fn root(&self) -> &ConfigError {
        match self {
            ConfigError::InFile { source, .. } => source.root(),
            other => other,
        }
    }
}

/// Something in the file worth telling the administrator about that does
/// not stop it loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A parameter name this version does not know (kept as it is).
    UnknownParameter {
        /// The name, lowercase.
        name: String,
        /// Line number, from 1.
        line: usize,
    },
    /// A parameter set more than once; the last line counts.
    Duplicate {
        /// The name, lowercase.
        name: String,
        /// The line that counts.
        line: usize,
        /// The earlier, ignored line.
        ignored_line: usize,
    },
    /// `store.defaultpartition` names a partition with no
    /// `store.partition.<name>.path` line.
    UndefinedDefaultPartition {
        /// The partition named.
        name: String,
    },
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::UnknownParameter { name, line } => {
                write!(
                    f,
                    "line {line}: unknown parameter {name} (kept, but not used)"
                )
            }
            ConfigWarning::Duplicate {
                name,
                line,
                ignored_line,
            } => write!(
                f,
                "line {line}: {name} is also set on line {ignored_line}; line {line} counts"
            ),
            ConfigWarning::UndefinedDefaultPartition { name } => write!(
                f,
                "store.defaultpartition is {name}, but no store.partition.{name}.path is set"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// Blank or comment line, kept verbatim.
    Other(String),
    /// A `name = value` line. `raw` is the original text, written back
    /// unchanged unless the value is changed.
    Entry {
        name: String,
        value: String,
        raw: Option<String>,
    },
}

/// The contents of `msg.conf`: the lines as read (so rewriting keeps
/// comments and layout) and the effective values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    lines: Vec<Line>,
    warnings: Vec<ConfigWarning>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn unquote(value: &str) -> &str {
    let v = value.trim();
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

impl Config {
    /// A configuration with every parameter at its default.
    pub fn new() -> Config {
        Config::default()
    }

    /// Reads `path`. A missing file is a configuration with every
    /// parameter at its default. A line that is not `name = value`, or a
    /// value that is invalid for a known parameter, is an error naming the
    /// line; unknown names are kept and listed by [`warnings`](Self::warnings).
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        match fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                Config::parse_at(&text, path)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::new()),
            Err(source) => Err(ConfigError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses `msg.conf` text (as [`load`](Self::load) does, with errors
    /// naming the file as `msg.conf`).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_at(text, Path::new("msg.conf"))
    }

    fn parse_at(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut lines = Vec::new();
        let mut warnings = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                lines.push(Line::Other(raw.to_string()));
                continue;
            }
            let syntax = || ConfigError::Syntax {
                path: path.to_path_buf(),
                line: lineno,
                text: raw.to_string(),
            };
            let (name, value) = trimmed.split_once('=').ok_or_else(syntax)?;
            let name = name.trim();
            if !valid_name(name) {
                return Err(syntax());
            }
            let name = name.to_ascii_lowercase();
            let value = unquote(value);
            let value = match registry::lookup(&name) {
                Some(spec) => spec
                    .validate(&name, value)
                    .map_err(|e| ConfigError::InFile {
                        path: path.to_path_buf(),
                        line: lineno,
                        source: Box::new(e),
                    })?,
                None => {
                    warnings.push(ConfigWarning::UnknownParameter {
                        name: name.clone(),
                        line: lineno,
                    });
                    value.to_string()
                }
            };
            if let Some(prev) = seen.insert(name.clone(), lineno) {
                warnings.push(ConfigWarning::Duplicate {
                    name: name.clone(),
                    line: lineno,
                    ignored_line: prev,
                });
            }
            lines.push(Line::Entry {
                name,
                value,
                raw: Some(raw.to_string()),
            });
        }
        let mut config = Config { lines, warnings };
        config.check_default_partition();
        Ok(config)
    }

    fn check_default_partition(&mut self) {
        let default = self.effective(names::STORE_DEFAULT_PARTITION);
        if default != PRIMARY_PARTITION && self.explicit(&names::partition_path(&default)).is_none()
        {
            self.warnings
                .push(ConfigWarning::UndefinedDefaultPartition { name: default });
        }
    }

    /// Problems found when the file was read that did not stop it loading.
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.warnings
    }

    /// The value set in the file for `name` (last one wins), if any.
    fn explicit(&self, name: &str) -> Option<&str> {
        self.lines.iter().rev().find_map(|l| match l {
            Line::Entry { name: n, value, .. } if n == name => Some(value.as_str()),
            _ => None,
        })
    }

    fn effective(&self, name: &str) -> String {
        let name = name.to_ascii_lowercase();
        match self.explicit(&name) {
            Some(v) => v.to_string(),
            None => registry::lookup(&name)
                .map(|s| s.default.to_string())
                .unwrap_or_default(),
        }
    }

    /// The effective value of `name` as text: the value set in the file,
    /// else the default. Works for unknown names that the file sets; an
    /// unknown name the file does not set is an error.
    pub fn get(&self, name: &str) -> Result<String, ConfigError> {
        let lname = name.to_ascii_lowercase();
        if let Some(v) = self.explicit(&lname) {
            return Ok(v.to_string());
        }
        registry::lookup(&lname)
            .map(|s| s.default.to_string())
            .ok_or(ConfigError::UnknownParameter { name: lname })
    }

    /// True if the file sets `name`.
    pub fn is_set(&self, name: &str) -> bool {
        self.explicit(&name.to_ascii_lowercase()).is_some()
    }

    fn known(&self, name: &str, want: &str, ok: impl Fn(&Kind) -> bool) -> String {
        match registry::lookup(name) {
            Some(spec) if ok(&spec.kind) => self.effective(name),
            Some(spec) => panic!("msgconf: {name} is a {} parameter, not {want}", spec.kind),
            None => panic!("msgconf: {name} is not a known parameter"),
        }
    }

    /// The value of an integer (or port) parameter.
    ///
    /// # Panics
    /// If `name` is not a known integer or port parameter: that is a bug in
    /// the caller (use the constants in [`names`]). Values are validated
    /// when loaded or set, so a known name always has a valid value.
    pub fn get_int(&self, name: &str) -> i64 {
        let v = self.known(name, "integer", |k| {
            matches!(k, Kind::Int { .. } | Kind::Port)
        });
        // Validated on load/set; the fallback is unreachable in practice.
        v.parse().unwrap_or_default()
    }

    /// The value of a boolean (`0`/`1`) parameter.
    ///
    /// # Panics
    /// If `name` is not a known boolean parameter (a bug in the caller).
    pub fn get_bool(&self, name: &str) -> bool {
        self.known(name, "boolean", |k| matches!(k, Kind::Bool)) == "1"
    }

    /// The value of a string-like parameter (string, path, word list,
    /// partition name, address).
    ///
    /// # Panics
    /// If `name` is not a known parameter of one of those types (a bug in
    /// the caller).
    pub fn get_str(&self, name: &str) -> String {
        self.known(name, "string", |k| {
            !matches!(k, Kind::Int { .. } | Kind::Port | Kind::Bool)
        })
    }

    /// The value of a path parameter, resolved: an absolute value as it
    /// is, a relative one joined to `base` (the directory the parameter's
    /// description names). An empty value (where allowed) gives `base`.
    ///
    /// # Panics
    /// If `name` is not a known path parameter (a bug in the caller).
    pub fn get_path(&self, name: &str, base: impl AsRef<Path>) -> PathBuf {
        let v = self.known(name, "path", |k| matches!(k, Kind::Path { .. }));
        if v.is_empty() {
            base.as_ref().to_path_buf()
        } else {
            base.as_ref().join(v)
        }
    }

    /// The store partitions: `primary` first, then every partition with a
    /// `store.partition.<name>.path` line, by name. The path is `None`
    /// when empty, meaning the default `<datadir>/store/partition/<name>`.
    pub fn partitions(&self) -> Vec<(String, Option<PathBuf>)> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        for line in &self.lines {
            if let Line::Entry { name, .. } = line {
                if let Some(p) = partition_of(name) {
                    names.insert(p.to_string());
                }
            }
        }
        names.remove(PRIMARY_PARTITION);
        std::iter::once(PRIMARY_PARTITION.to_string())
            .chain(names)
            .map(|p| {
                let v = self.effective(&names::partition_path(&p));
                let path = (!v.is_empty()).then(|| PathBuf::from(v));
                (p, path)
            })
            .collect()
    }

    /// Sets a known parameter after validating the value, which is stored
    /// in canonical form (e.g. `+05` as `5`, `notice` as `Notice`). The
    /// line is changed in place if the file already sets it (earlier
    /// duplicates are removed), else appended.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        if !valid_name(name) {
            return Err(ConfigError::InvalidName {
                name: name.to_string(),
            });
        }
        let name = name.to_ascii_lowercase();
        let spec = registry::lookup(&name)
            .ok_or_else(|| ConfigError::UnknownParameter { name: name.clone() })?;
        let value = spec.validate(&name, value)?;
        let last = self
            .lines
            .iter()
            .rposition(|l| matches!(l, Line::Entry { name: n, .. } if *n == name));
        match last {
            Some(i) => {
                self.lines[i] = Line::Entry {
                    name: name.clone(),
                    value,
                    raw: None,
                };
                let mut idx = 0;
                self.lines.retain(|l| {
                    let keep = idx >= i || !matches!(l, Line::Entry { name: n, .. } if *n == name);
                    idx += 1;
                    keep
                });
            }
            None => self.lines.push(Line::Entry {
                name: name.clone(),
                value,
                raw: None,
            }),
        }
        self.warnings.retain(|w| match w {
            ConfigWarning::Duplicate { name: n, .. } => *n != name,
            ConfigWarning::UndefinedDefaultPartition { .. } => false,
            ConfigWarning::UnknownParameter { .. } => true,
        });
        self.check_default_partition();
        Ok(())
    }

    /// Removes every line setting `name`, so it reverts to its default.
    /// Works for unknown names too. Returns whether anything was removed.
    pub fn unset(&mut self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Entry { name: n, .. } if *n == name));
        self.warnings.retain(|w| match w {
            ConfigWarning::Duplicate { name: n, .. }
            | ConfigWarning::UnknownParameter { name: n, .. } => *n != name,
            ConfigWarning::UndefinedDefaultPartition { .. } => false,
        });
        self.check_default_partition();
        self.lines.len() != before
    }

    /// Every known parameter with its effective value and whether it is at
    /// its default (not set in the file), sorted by name. Families are
    /// listed for each partition in [`partitions`](Self::partitions) and
    /// each service in [`LOG_SERVICES`]. Unknown names from the file are
    /// not included (see [`warnings`](Self::warnings)).
    pub fn list(&self) -> Vec<(String, String, bool)> {
        let mut names: Vec<String> = Vec::new();
        for spec in registry::PARAMS {
            if spec.name.contains("<name>") {
                for (p, _) in self.partitions() {
                    names.push(spec.name.replace("<name>", &p));
                }
            } else if spec.name.contains("<service>") {
                for s in LOG_SERVICES {
                    names.push(spec.name.replace("<service>", s));
                }
            } else {
                names.push(spec.name.to_string());
            }
        }
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let explicit = self.explicit(&n).map(str::to_string);
                let is_default = explicit.is_none();
                let value = explicit.unwrap_or_else(|| self.effective(&n));
                (n, value, is_default)
            })
            .collect()
    }

    /// Help for `name` with its current value, or `None` if unknown.
    pub fn describe(&self, name: &str) -> Option<String> {
        let help = registry::describe(name)?;
        let value = self.effective(name);
        let shown = if value.is_empty() {
            "(empty)"
        } else {
            value.as_str()
        };
        let origin = if self.is_set(name) {
            "set in msg.conf"
        } else {
            "default"
        };
        Some(format!("{help}\n  current: {shown} ({origin})"))
    }

    /// The file text: original lines as they were, changed lines as
    /// `name = value`, new parameters at the end.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Other(raw) | Line::Entry { raw: Some(raw), .. } => out.push_str(raw),
                Line::Entry {
                    name,
                    value,
                    raw: None,
                } => {
                    out.push_str(name);
                    out.push_str(" = ");
                    // Quote a value that would otherwise lose its own quotes
                    // when read back.
                    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
                        out.push('"');
                        out.push_str(value);
                        out.push('"');
                    } else {
                        out.push_str(value);
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// Writes the configuration to `path` atomically: a temporary file in
    /// the same directory is written and fsynced, then renamed over
    /// `path`, and the directory is fsynced. An existing file's permission
    /// bits are kept; a new file gets mode 0640.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        write_atomic(path.as_ref(), self.render().as_bytes())
    }
}

/// The partition name in `store.partition.<name>.path`, if `name` is one.
fn partition_of(name: &str) -> Option<&str> {
    let p = name
        .strip_prefix("store.partition.")?
        .strip_suffix(".path")?;
    registry::is_partition_name(p).then_some(p)
}

fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ConfigError> {
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| ConfigError::Io {
            action,
            path: p,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "msg.conf".to_string());
    let mode = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => 0o640,
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.tmp.{}.{n}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        // The umask may have narrowed the mode; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("set permissions on", &tmp))?;
        f.write_all(contents).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err("replace", path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync directory", &dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests;
