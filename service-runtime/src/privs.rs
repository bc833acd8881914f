//! Dropping root privileges after the ports are bound: the group of
//! `local.servergid`, then the user of `local.serveruid`.

use std::ffi::CString;
use std::io;

use msgconf::registry::names;
use msgconf::Config;

/// Why privileges could not be dropped. The first two read exactly as the
/// seed's messages; [`PrivilegeError::detail`] names the parameter and value.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `local.servergid` names no group.
    #[error("Fatal error: Cannot find group in name service")]
    NoGroup {
        /// The group name configured.
        group: String,
    },
    /// `local.serveruid` names no user.
    #[error("Fatal error: Cannot find user in name service")]
    NoUser {
        /// The user name configured.
        user: String,
    },
    /// The store belongs to someone else than the server user.
    #[error(
        "Fatal error: the store {} is owned by uid {owner}, not by {user}: run chown -R {user}:{group} {}",
        path.display(),
        path.display()
    )]
    NotOwner {
        /// The instance's data directory.
        path: std::path::PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// `local.serveruid`.
        user: String,
        /// `local.servergid`.
        group: String,
    },
    /// A system call failed.
    #[error("Fatal error: cannot {action}: {source}")]
    System {
        /// What was being done (`setgid(1001)`).
        action: String,
        /// The system error.
        source: io::Error,
    },
}

impl PrivilegeError {
    /// The parameter and value behind the error, e.g.
    /// `local.servergid = "mailsrv"`.
    pub fn detail(&self) -> Option<String> {
        match self {
            PrivilegeError::NoGroup { group } => Some(format!("{} = {group:?}", names::SERVER_GID)),
            PrivilegeError::NoUser { user } => Some(format!("{} = {user:?}", names::SERVER_UID)),
            PrivilegeError::System { .. } | PrivilegeError::NotOwner { .. } => None,
        }
    }
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privileges {
    /// Not running as root: nothing changed.
    NotRoot {
        /// The effective user id kept.
        uid: u32,
    },
    /// Now running as this user and group.
    Dropped {
        /// The new user id.
        uid: u32,
        /// The new group id.
        gid: u32,
    },
}

/// When running as root, switches to the group `local.servergid` and then
/// the user `local.serveruid` (call it after binding privileged ports).
/// Not root: does nothing and says so in the log. Errors are logged as
/// Critical with the parameter named, and returned.
pub fn drop_privileges(config: &Config) -> Result<Privileges, PrivilegeError> {
    let user = config.get_str(names::SERVER_UID);
    let group = config.get_str(names::SERVER_GID);
    let result = drop_privileges_to(&user, &group);
    match &result {
        Ok(Privileges::NotRoot { uid }) => {
            tracing::info!("not running as root (uid {uid}): keeping the current user and group")
        }
        Ok(Privileges::Dropped { uid, gid }) => {
            tracing::info!("running as user {user} (uid {uid}), group {group} (gid {gid})")
        }
        Err(e) => match e.detail() {
            Some(d) => tracing::error!(severity = "Critical", "{e} ({d})"),
            None => tracing::error!(severity = "Critical", "{e}"),
        },
    }
    result
}

/// [`drop_privileges`] with the names given directly (no logging).
pub fn drop_privileges_to(user: &str, group: &str) -> Result<Privileges, PrivilegeError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Ok(Privileges::NotRoot { uid: euid });
    }
    let gid = lookup_group(group).ok_or_else(|| PrivilegeError::NoGroup {
        group: group.to_string(),
    })?;
    let uid = lookup_user(user).ok_or_else(|| PrivilegeError::NoUser {
        user: user.to_string(),
    })?;
    let sys = |action: String| PrivilegeError::System {
        action,
        source: io::Error::last_os_error(),
    };
    let groups = [gid];
    // SAFETY: the pointer and length describe a live array of one gid.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        return Err(sys(format!("setgroups({gid})")));
    }
    // SAFETY: plain system calls with integer arguments.
    if unsafe { libc::setgid(gid) } != 0 {
        return Err(sys(format!("setgid({gid})")));
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(uid) } != 0 {
        return Err(sys(format!("setuid({uid})")));
    }
    Ok(Privileges::Dropped { uid, gid })
}

/// Changes the owner of `path` (not following a symbolic link).
pub fn chown(path: &std::path::Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

fn numeric(name: &str) -> Option<u32> {
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// The gid of a group name (or a number), from the name service.
pub fn lookup_group(name: &str) -> Option<u32> {
    if let Some(n) = numeric(name) {
        return Some(n);
    }
    let cname = CString::new(name).ok()?;
    let mut size = 16 * 1024;
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: zeroed is a valid `group` (pointers null, ids 0).
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf outlives it.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && size < 1 << 22 {
            size *= 4;
            continue;
        }
        return (rc == 0 && !out.is_null()).then_some(grp.gr_gid);
    }
}

/// The uid of a user name (or a number), from the name service.
pub fn lookup_user(name: &str) -> Option<u32> {
    if let Some(n) = numeric(name) {
        return Some(n);
    }
    let cname = CString::new(name).ok()?;
    let mut size = 16 * 1024;
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: zeroed is a valid `passwd` (pointers null, ids 0).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf outlives it.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && size < 1 << 22 {
            size *= 4;
            continue;
        }
        return (rc == 0 && !out.is_null()).then_some(pwd.pw_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(lookup_group("root"), Some(0));
        assert_eq!(lookup_user("root"), Some(0));
        assert_eq!(lookup_group("1234"), Some(1234));
        assert_eq!(lookup_group("no-such-group-xyzzy"), None);
        assert_eq!(lookup_user("no-such-user-xyzzy"), None);
        assert_eq!(lookup_user("nul\0byte"), None);
    }

    #[test]
    fn messages_are_the_seeds() {
        let e = PrivilegeError::NoGroup {
            group: "mailsrv".into(),
        };
        assert_eq!(
            e.to_string(),
            "Fatal error: Cannot find group in name service"
        );
        assert_eq!(e.detail().as_deref(), Some("local.servergid = \"mailsrv\""));
        let e = PrivilegeError::NoUser {
            user: "mailsrv".into(),
        };
        assert_eq!(
            e.to_string(),
            "Fatal error: Cannot find user in name service"
        );
    }
}
