//! JMAP ids and state strings, derived from what the store already keeps.

use std::collections::BTreeMap;

use store_client::{EmailId, MessageStructure, ThreadId};

use super::Folder;

/// Mailbox id: `M` and the folder's UIDVALIDITY in hex (unique in the instance, kept by
/// renames).
pub(crate) fn mailbox_id(uidvalidity: u32) -> String {
    format!("M{uidvalidity:x}")
}

pub(crate) fn parse_mailbox_id(id: &str) -> Option<u32> {
    u32::from_str_radix(id.strip_prefix('M')?, 16).ok()
}

/// Email id: the message's content id (RFC 8474 EMAILID, `M` and 24 hex digits), the same
/// for every copy in every folder and kept across moves.
pub(crate) fn parse_email_id(id: &str) -> Option<EmailId> {
    EmailId::parse(id)
}

/// What a blob id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BlobRef {
    /// A whole stored message.
    Message { uidvalidity: u32, uid: u32 },
    /// One MIME part of a stored message (mail-parser's part index), decoded.
    Part {
        uidvalidity: u32,
        uid: u32,
        part: u32,
    },
    /// An upload.
    Upload(String),
    /// The content of an Email, wherever a copy of it is (the whole message, or one MIME part
    /// by mail-parser's index): the same id while copies move, as RFC 8621 wants an Email's
    /// blobId immutable.
    Email { email: EmailId, part: Option<u32> },
}

/// Blob id of an Email's raw message: `G` and the hex digits of its Email id.
pub(crate) fn email_blob_id(email: &EmailId) -> String {
    let id = email.to_string();
    format!("G{}", id.strip_prefix('M').unwrap_or(&id))
}

/// Blob id of one MIME part of an Email.
pub(crate) fn email_part_blob_id(email: &EmailId, part: u32) -> String {
    format!("{}_{part:x}", email_blob_id(email))
}

/// The older `B` forms, written now only by tests of their parsing.
#[cfg(test)]
pub(crate) fn message_blob_id(uidvalidity: u32, uid: u32) -> String {
    format!("B{uidvalidity:x}_{uid:x}")
}

#[cfg(test)]
pub(crate) fn part_blob_id(uidvalidity: u32, uid: u32, part: u32) -> String {
    format!("B{uidvalidity:x}_{uid:x}_{part:x}")
}

pub(crate) fn parse_blob_id(id: &str) -> Option<BlobRef> {
    if let Some(rest) = id.strip_prefix('U') {
        let ok = !rest.is_empty()
            && rest.len() <= 64
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        return ok.then(|| BlobRef::Upload(rest.to_owned()));
    }
    if let Some(rest) = id.strip_prefix('G') {
        let (digits, part) = match rest.split_once('_') {
            Some((d, p)) => (d, Some(u32::from_str_radix(p, 16).ok()?)),
            None => (rest, None),
        };
        let email = EmailId::parse(&format!("M{digits}"))?;
        return Some(BlobRef::Email { email, part });
    }
    // `B<uidvalidity>_<uid>[_<part>]`: the form before Email ids were content ids, still
    // read for clients that kept one.
    let mut it = id.strip_prefix('B')?.split('_');
    let uidvalidity = u32::from_str_radix(it.next()?, 16).ok()?;
    let uid = u32::from_str_radix(it.next()?, 16).ok()?;
    let r = match it.next() {
        None => BlobRef::Message { uidvalidity, uid },
        Some(p) => BlobRef::Part {
            uidvalidity,
            uid,
            part: u32::from_str_radix(p, 16).ok()?,
        },
    };
    if it.next().is_some() {
        return None;
    }
    Some(r)
}

/// The base subject (RFC 5256 2.1, simplified): without leading `Re:`, `Fwd:`, `Fw:` and
/// `[tag]` prefixes and a trailing `(fwd)`, whitespace collapsed, lower case.
pub(crate) fn base_subject(subject: &str) -> String {
    let mut s = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    loop {
        let before = s.len();
        // Prefixes are ASCII: compare bytes, so slicing stays on character boundaries.
        for p in ["re:", "fwd:", "fw:", "aw:", "sv:"] {
            if s.len() >= p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes()) {
                s = s.get(p.len()..).unwrap_or("").trim_start().to_owned();
                break;
            }
        }
        if s.starts_with('[') {
            if let Some(end) = s.find(']') {
                s = s.get(end + 1..).unwrap_or("").trim_start().to_owned();
            }
        }
        let n = s.len();
        if n >= 5 && s.as_bytes()[n - 5..].eq_ignore_ascii_case(b"(fwd)") {
            s = s.get(..n - 5).unwrap_or("").trim_end().to_owned();
        }
        if s.len() == before {
            break;
        }
    }
    s.to_lowercase()
}

/// Thread id (RFC 8474 THREADID) of a message from its structure: None only for a cache
/// entry written before ids existed whose message names no Message-ID (its thread is then
/// its own, named by a content id the structure does not carry).
pub(crate) fn thread_of(st: &MessageStructure) -> Option<String> {
    match st.object_ids() {
        Some((_, t)) => Some(t.to_string()),
        None => st
            .thread_root()
            .map(|root| ThreadId::of_root(&root).to_string()),
    }
}

/// One folder's entry in a state string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FolderState {
    pub generation: u64,
    pub modseq: u64,
    pub uidnext: u32,
    pub name_sum: u32,
}

fn name_sum(name: &str) -> u32 {
    crc32fast::hash(name.as_bytes())
}

pub(crate) fn folder_state(f: &Folder) -> FolderState {
    FolderState {
        generation: f.status.change_token.0,
        modseq: f.status.highest_modseq,
        uidnext: f.status.uidnext,
        name_sum: name_sum(&f.name) ^ u32::from(f.subscribed),
    }
}

fn encode(map: &BTreeMap<u32, FolderState>) -> String {
    let mut out = String::from("s");
    for (i, (uv, st)) in map.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(&format!(
            "{uv:x}.{:x}.{:x}.{:x}.{:x}",
            st.generation, st.modseq, st.uidnext, st.name_sum
        ));
    }
    out
}

/// The account state: every folder's counters.
pub(crate) fn state_of(folders: &[Folder]) -> String {
    encode(&state_map(folders))
}

pub(crate) fn state_map(folders: &[Folder]) -> BTreeMap<u32, FolderState> {
    folders
        .iter()
        .map(|f| (f.uidvalidity, folder_state(f)))
        .collect()
}

pub(crate) fn encode_state(map: &BTreeMap<u32, FolderState>) -> String {
    encode(map)
}

pub(crate) fn parse_state(s: &str) -> Option<BTreeMap<u32, FolderState>> {
    let rest = s.strip_prefix('s')?;
    let mut map = BTreeMap::new();
    if rest.is_empty() {
        return Some(map);
    }
    for entry in rest.split('-') {
        let f: Vec<&str> = entry.split('.').collect();
        if f.len() != 5 {
            return None;
        }
        map.insert(
            u32::from_str_radix(f[0], 16).ok()?,
            FolderState {
                generation: u64::from_str_radix(f[1], 16).ok()?,
                modseq: u64::from_str_radix(f[2], 16).ok()?,
                uidnext: u32::from_str_radix(f[3], 16).ok()?,
                name_sum: u32::from_str_radix(f[4], 16).ok()?,
            },
        );
    }
    Some(map)
}

/// RFC 3339 UTC date (`2026-11-29T16:45:28Z`).
pub(crate) fn utc_date(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// Parses an RFC 3339 date (`UTCDate` or `Date`) to Unix seconds.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let oh: i64 = tz.get(1..3)?.parse().ok()?;
            let om: i64 = tz.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if tz.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // days-from-civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_mailbox_id(&mailbox_id(0xdead)), Some(0xdead));
        let e = EmailId::of_message(b"Subject: x\r\n\r\n");
        assert_eq!(parse_email_id(&e.to_string()), Some(e));
        assert_eq!(
            parse_blob_id(&part_blob_id(7, 42, 3)),
            Some(BlobRef::Part {
                uidvalidity: 7,
                uid: 42,
                part: 3
            })
        );
        assert_eq!(
            parse_blob_id(&message_blob_id(7, 42)),
            Some(BlobRef::Message {
                uidvalidity: 7,
                uid: 42
            })
        );
        assert_eq!(parse_blob_id("B1_2_3_4"), None);
        assert_eq!(
            parse_blob_id(&email_blob_id(&e)),
            Some(BlobRef::Email {
                email: e,
                part: None
            })
        );
        assert_eq!(
            parse_blob_id(&email_part_blob_id(&e, 0x1f)),
            Some(BlobRef::Email {
                email: e,
                part: Some(0x1f)
            })
        );
        assert_eq!(parse_blob_id("Gzz"), None);
        assert_eq!(parse_blob_id("G_1"), None);
        assert_eq!(parse_blob_id(&format!("{}_x", email_blob_id(&e))), None);
        assert_eq!(parse_email_id("Ezz_1"), None);
        assert_eq!(parse_email_id("E1_2"), None);
        assert_eq!(parse_mailbox_id("../etc"), None);
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(1_796_000_000), "2026-11-30T00:53:20Z");
        assert_eq!(parse_date("2026-11-30T00:53:20Z"), Some(1_796_000_000));
        assert_eq!(parse_date("2026-11-30T01:53:20+01:00"), Some(1_796_000_000));
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn base_subjects_group_replies() {
        assert_eq!(base_subject("Re: [list] Fwd: Lunch (fwd)"), "lunch");
        // Non-ASCII subjects never split a character.
        for t in ["Ꮢe: é(fwd)", "K(FWD)", "[ü] Fwd: ß", "re:", "(fwd)", "]["] {
            let _ = base_subject(t);
        }
    }

    #[test]
    fn state_round_trips() {
        let mut m = BTreeMap::new();
        m.insert(
            5,
            FolderState {
                generation: 1,
                modseq: 9,
                uidnext: 3,
                name_sum: 77,
            },
        );
        assert_eq!(parse_state(&encode_state(&m)), Some(m));
        assert_eq!(parse_state("garbage"), None);
    }
}
