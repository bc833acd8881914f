//! Aging policies: automatic expire and purge (Messaging Server's `store.expirerule` file,
//! seed 20.9). `config/store.expirerule` holds rules as `<rule>.<attribute>: <value>` lines:
//!
//! ```text
//! Trash.folderpattern: user/*/Trash
//! Trash.messagedays: 30
//! Big.folderpattern: user/%/INBOX
//! Big.messagecount: 10000
//! Big.foldersizebytes: 1073741824
//! Big.deleted: on
//! ```
//!
//! `folderpattern` (an IMAP LIST pattern on `user/<userid>/<folder>`) is required; a message
//! in a matching folder is expunged when it is older than `messagedays`, beyond the newest
//! `messagecount`, among the oldest that bring the folder over `foldersizebytes`, larger than
//! `messagesize` and older than `messagesizedays`, or flagged \Deleted when `deleted: on`. A
//! rule with `exclusive: on` is the only one applied to the folders it matches. A file that
//! does not parse is reported (file, line, why) and no rule is applied: aging never guesses.
//! Expunged messages keep their files for `local.store.expungegrace`, as any expunge does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use msgstore::{flag, FlagOp, MailboxName, Pattern, Store};

pub const FILE: &str = "store.expirerule";

/// One rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub pattern: String,
    pub message_days: Option<u64>,
    pub message_count: Option<u64>,
    pub folder_size: Option<u64>,
    pub message_size: Option<u64>,
    pub message_size_days: Option<u64>,
    pub deleted: bool,
    pub exclusive: bool,
}

fn on_off(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "1" | "yes" | "true" => Some(true),
        "off" | "0" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Parse the rule file's text; errors name the line.
pub fn parse(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules: BTreeMap<String, Rule> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line {n}: expected <rule>.<attribute>: <value>"));
        };
        let value = value.trim();
        let Some((rule, attr)) = key.trim().rsplit_once('.') else {
            return Err(format!("line {n}: {key:?} is not <rule>.<attribute>"));
        };
        if rule.is_empty()
            || !rule
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("line {n}: invalid rule name {rule:?}"));
        }
        let r = rules.entry(rule.to_owned()).or_insert_with(|| Rule {
            name: rule.to_owned(),
            ..Default::default()
        });
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("line {n}: {key}: {value:?} is not a non-negative integer"))
        };
        let flag =
            || on_off(value).ok_or_else(|| format!("line {n}: {key}: {value:?} is not on or off"));
        match attr.to_ascii_lowercase().as_str() {
            "folderpattern" => {
                if !value.starts_with("user/") {
                    return Err(format!(
                        "line {n}: {key}: the pattern must name user folders (user/<userid>/<folder>)"
                    ));
                }
                r.pattern = value.to_owned();
            }
            "messagedays" => r.message_days = Some(num()?),
            "messagecount" => r.message_count = Some(num()?),
            "foldersizebytes" => r.folder_size = Some(num()?),
            "messagesize" => r.message_size = Some(num()?),
            "messagesizedays" => r.message_size_days = Some(num()?),
            "deleted" => r.deleted = flag()?,
            "exclusive" => r.exclusive = flag()?,
            other => return Err(format!("line {n}: unknown attribute {other:?}")),
        }
    }
    let rules: Vec<Rule> = rules.into_values().collect();
    for r in &rules {
        if r.pattern.is_empty() {
            return Err(format!("rule {}: no folderpattern", r.name));
        }
        if r.message_days.is_none()
            && r.message_count.is_none()
            && r.folder_size.is_none()
            && r.message_size.is_none()
            && !r.deleted
        {
            return Err(format!("rule {}: no criterion (messagedays, messagecount, foldersizebytes, messagesize or deleted)", r.name));
        }
    }
    Ok(rules)
}

/// Load `config/store.expirerule`; no file, no rules.
pub fn load(config_dir: &Path) -> Result<Vec<Rule>, String> {
    let p = config_dir.join(FILE);
    match std::fs::read_to_string(&p) {
        Ok(t) => parse(&t).map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

/// A message as the rules see it.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    pub uid: u32,
    pub date: i64,
    pub size: u64,
    pub deleted: bool,
}

/// The UIDs `rules` expire among `items` (live messages of one folder) at `now`.
pub fn select(rules: &[&Rule], items: &[Item], now: i64) -> BTreeSet<u32> {
    let day = 86_400i64;
    let mut out = BTreeSet::new();
    // Oldest first: the order count and size limits cut from.
    let mut by_age: Vec<Item> = items.to_vec();
    by_age.sort_by_key(|i| (i.date, i.uid));
    for r in rules {
        for it in &by_age {
            let age_days = (now - it.date).max(0) / day;
            if r.message_days.is_some_and(|d| age_days >= d as i64)
                || (r.deleted && it.deleted)
                || r.message_size.is_some_and(|s| {
                    it.size > s && age_days >= r.message_size_days.unwrap_or(0) as i64
                })
            {
                out.insert(it.uid);
            }
        }
        if let Some(max) = r.message_count {
            let keep = max as usize;
            let left: Vec<&Item> = by_age.iter().filter(|i| !out.contains(&i.uid)).collect();
            if left.len() > keep {
                for it in &left[..left.len() - keep] {
                    out.insert(it.uid);
                }
            }
        }
        if let Some(limit) = r.folder_size {
            let mut total: u64 = by_age
                .iter()
                .filter(|i| !out.contains(&i.uid))
                .map(|i| i.size)
                .sum();
            for it in &by_age {
                if total <= limit {
                    break;
                }
                if out.insert(it.uid) {
                    total = total.saturating_sub(it.size);
                }
            }
        }
    }
    out
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AgingOutcome {
    pub folders: usize,
    pub expunged: usize,
    pub bytes: u64,
}

/// Apply `rules` to every folder in the store.
pub fn run(store: &Store, rules: &[Rule], now: i64) -> (AgingOutcome, Vec<String>) {
    let mut out = AgingOutcome::default();
    let mut errors = Vec::new();
    if rules.is_empty() {
        return (out, errors);
    }
    let patterns: Vec<(Pattern, &Rule)> = rules
        .iter()
        .map(|r| (Pattern::new(&r.pattern), r))
        .collect();
    let entries = match store.db().list_all() {
        Ok(e) => e,
        Err(e) => return (out, vec![format!("cannot list the folders: {e}")]),
    };
    for e in entries {
        let matching: Vec<&Rule> = patterns
            .iter()
            .filter(|(p, _)| p.matches(&e.name))
            .map(|(_, r)| *r)
            .collect();
        if matching.is_empty() {
            continue;
        }
        let applied: Vec<&Rule> = match matching.iter().find(|r| r.exclusive) {
            Some(x) => vec![*x],
            None => matching,
        };
        let Ok(name) = MailboxName::parse(&e.name) else {
            continue;
        };
        let items = store.with_state(&name, |s| {
            Ok(s.records(0, s.msgs.len(), name.as_str())?
                .into_iter()
                .filter(|r| !r.is_expunged())
                .map(|r| Item {
                    uid: r.uid,
                    date: r.internal_date,
                    size: r.size,
                    deleted: r.flags & flag::DELETED != 0,
                })
                .collect::<Vec<_>>())
        });
        let items = match items {
            Ok(i) => i,
            Err(err) => {
                errors.push(format!("{name}: {err}"));
                continue;
            }
        };
        let uids: Vec<u32> = select(&applied, &items, now).into_iter().collect();
        if uids.is_empty() {
            continue;
        }
        // Marked \Deleted, then expunged: the one expunge path, quota and store.exp included.
        let r = store
            .store_flags(&name, &uids, FlagOp::Add, flag::DELETED, &[], None)
            .and_then(|_| store.expunge(&name, Some(&uids)));
        match r {
            Ok(gone) => {
                out.folders += 1;
                out.expunged += gone.len();
                out.bytes += gone.iter().map(|g| g.size).sum::<u64>();
            }
            Err(err) => errors.push(format!("{name}: {err}")),
        }
    }
    (out, errors)
}

/// The local hour (0-23) and a number for the local day of `now` (seconds since the epoch):
/// aging runs once a day, at the hour `store.expirestart` names.
pub fn local_hour_and_day(now: i64) -> (u32, i64) {
    let t: libc::time_t = now as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack frame.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        // No time zone information: UTC.
        return (
            ((now.rem_euclid(86_400)) / 3600) as u32,
            now.div_euclid(86_400),
        );
    }
    (
        tm.tm_hour.clamp(0, 23) as u32,
        i64::from(tm.tm_year) * 1000 + i64::from(tm.tm_yday),
    )
}

/// Whether aging is due: at the configured hour, once a day (`last_day`: the day it last
/// ran to completion).
pub fn due(now: i64, start_hour: u32, last_day: Option<i64>) -> bool {
    let (hour, day) = local_hour_and_day(now);
    hour == start_hour && last_day != Some(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn it(uid: u32, days_old: i64, size: u64, deleted: bool) -> Item {
        Item {
            uid,
            date: 100 * 86_400 - days_old * 86_400,
            size,
            deleted,
        }
    }

    #[test]
    fn rules_parse_and_report_the_line() {
        let r = parse("# x\nT.folderpattern: user/*/Trash\nT.messagedays: 30\nT.exclusive: on\n")
            .unwrap();
        assert_eq!(r[0].message_days, Some(30));
        assert!(r[0].exclusive);
        assert_eq!(
            parse("T.folderpattern: user/*\nT.messagedays: soon\n").unwrap_err(),
            "line 2: T.messagedays: \"soon\" is not a non-negative integer"
        );
        assert!(parse("T.messagedays: 3\n")
            .unwrap_err()
            .contains("no folderpattern"));
        assert!(parse("T.folderpattern: user/*\n")
            .unwrap_err()
            .contains("no criterion"));
        assert!(parse("T.colour: red\n")
            .unwrap_err()
            .contains("unknown attribute"));
        assert!(parse("just words\n").unwrap_err().starts_with("line 1:"));
    }

    #[test]
    fn each_criterion_selects_what_it_says() {
        let items = [
            it(1, 40, 100, false),
            it(2, 20, 5000, false),
            it(3, 10, 100, true),
            it(4, 1, 100, false),
        ];
        let now = 100 * 86_400;
        let rule = |f: &dyn Fn(&mut Rule)| {
            let mut r = Rule {
                name: "r".into(),
                pattern: "user/*".into(),
                ..Default::default()
            };
            f(&mut r);
            r
        };
        let sel = |r: Rule| select(&[&r], &items, now).into_iter().collect::<Vec<_>>();
        assert_eq!(sel(rule(&|r| r.message_days = Some(15))), [1, 2]);
        assert_eq!(sel(rule(&|r| r.message_count = Some(2))), [1, 2]);
        assert_eq!(sel(rule(&|r| r.deleted = true)), [3]);
        assert_eq!(sel(rule(&|r| r.folder_size = Some(300))), [1, 2]);
        assert_eq!(
            sel(rule(&|r| {
                r.message_size = Some(1000);
                r.message_size_days = Some(30);
            })),
            Vec::<u32>::new()
        );
        assert_eq!(sel(rule(&|r| r.message_size = Some(1000))), [2]);
    }
}
