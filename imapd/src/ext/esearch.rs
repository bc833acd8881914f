//! ESEARCH (RFC 4731) and SEARCHRES (RFC 5182): `SEARCH RETURN (MIN MAX ALL COUNT SAVE)`
//! and the `* ESEARCH` response; ESORT (RFC 5267): the same for `SORT RETURN (...)`, in sort
//! order.

use crate::parse::{err, PResult, Parser};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnOptions {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    pub save: bool,
}

/// `RETURN (...)` before the search keys, if present. `RETURN ()` means `ALL`.
pub fn parse_return(p: &mut Parser) -> PResult<Option<ReturnOptions>> {
    if !p.keyword("RETURN") {
        return Ok(None);
    }
    p.sp()?;
    let mut r = ReturnOptions::default();
    p.list(|p| {
        let w = p.atom()?.to_ascii_uppercase();
        match w.as_str() {
            "MIN" => r.min = true,
            "MAX" => r.max = true,
            "ALL" => r.all = true,
            "COUNT" => r.count = true,
            "SAVE" => r.save = true,
            _ => return err(format!("unknown RETURN option {w}")),
        }
        Ok(())
    })?;
    if !(r.min || r.max || r.count || r.save) {
        r.all = true;
    }
    p.sp()?;
    Ok(Some(r))
}

/// Sorted, de-duplicated numbers as a compact sequence set (`1:3,7`).
pub fn compact_set(nums: &[u32]) -> String {
    let mut v: Vec<u32> = nums.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// The `* ESEARCH` line for `tag` (without CRLF). `nums` are UIDs or sequence numbers.
pub fn response(
    tag: &str,
    uid: bool,
    opts: &ReturnOptions,
    nums: &[u32],
    modseq: Option<u64>,
) -> String {
    let mut s = format!("* ESEARCH (TAG \"{tag}\")");
    if uid {
        s.push_str(" UID");
    }
    if !nums.is_empty() {
        if opts.min {
            s.push_str(&format!(" MIN {}", nums.iter().min().copied().unwrap_or(0)));
        }
        if opts.max {
            s.push_str(&format!(" MAX {}", nums.iter().max().copied().unwrap_or(0)));
        }
        if opts.all {
            s.push_str(&format!(" ALL {}", compact_set(nums)));
        }
    }
    if opts.count {
        s.push_str(&format!(" COUNT {}", nums.len()));
    }
    if let Some(m) = modseq.filter(|_| !nums.is_empty()) {
        s.push_str(&format!(" MODSEQ {m}"));
    }
    s
}

/// Numbers in the given order as a sequence set that keeps it: runs of consecutive
/// ascending numbers as `a:b`, descending as `b:a`, the rest one by one (RFC 5267 3.2).
pub fn ordered_set(nums: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut j = i;
        if nums.get(i + 1) == start.checked_add(1).as_ref() {
            while nums.get(j + 1).copied() == nums[j].checked_add(1) {
                j += 1;
            }
        } else if nums.get(i + 1) == start.checked_sub(1).as_ref() {
            while nums.get(j + 1).copied() == nums[j].checked_sub(1) {
                j += 1;
            }
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j == i {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{}", nums[j]));
        }
        i = j + 1;
    }
    out
}

/// The `* ESEARCH` line answering `SORT RETURN (...)` (RFC 5267 3.2): MIN and MAX are the
/// first and last in sort order, ALL keeps the sort order.
pub fn sort_response(tag: &str, uid: bool, opts: &ReturnOptions, sorted: &[u32]) -> String {
    let mut s = format!("* ESEARCH (TAG \"{tag}\")");
    if uid {
        s.push_str(" UID");
    }
    if let (Some(first), Some(last)) = (sorted.first(), sorted.last()) {
        if opts.min {
            s.push_str(&format!(" MIN {first}"));
        }
        if opts.max {
            s.push_str(&format!(" MAX {last}"));
        }
        if opts.all {
            s.push_str(&format!(" ALL {}", ordered_set(sorted)));
        }
    }
    if opts.count {
        s.push_str(&format!(" COUNT {}", sorted.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_options() {
        let mut p = Parser::new(b"RETURN (MIN COUNT) ALL");
        let r = parse_return(&mut p).unwrap().unwrap();
        assert!(r.min && r.count && !r.all && !r.max);
        let mut p = Parser::new(b"RETURN () ALL");
        assert!(parse_return(&mut p).unwrap().unwrap().all);
        let mut p = Parser::new(b"ALL");
        assert_eq!(parse_return(&mut p).unwrap(), None);
        let mut p = Parser::new(b"RETURN (BOGUS) ALL");
        assert!(parse_return(&mut p).is_err());
    }

    #[test]
    fn esearch_line() {
        let all = ReturnOptions {
            min: true,
            max: true,
            all: true,
            count: true,
            save: false,
        };
        assert_eq!(
            response("a1", true, &all, &[5, 1, 2, 3, 9], None),
            "* ESEARCH (TAG \"a1\") UID MIN 1 MAX 9 ALL 1:3,5,9 COUNT 5"
        );
        assert_eq!(
            response("t", false, &all, &[], None),
            "* ESEARCH (TAG \"t\") COUNT 0"
        );
        assert_eq!(compact_set(&[4, 2, 3, 3]), "2:4");
    }

    #[test]
    fn esort_line() {
        assert_eq!(ordered_set(&[5, 6, 7, 3, 2, 9, 1]), "5:7,3:2,9,1");
        assert_eq!(ordered_set(&[]), "");
        assert_eq!(ordered_set(&[4]), "4");
        let all = ReturnOptions {
            min: true,
            max: true,
            all: true,
            count: true,
            save: false,
        };
        assert_eq!(
            sort_response("s", true, &all, &[9, 3, 4, 1]),
            "* ESEARCH (TAG \"s\") UID MIN 9 MAX 1 ALL 9,3:4,1 COUNT 4"
        );
        assert_eq!(
            sort_response("s", false, &all, &[]),
            "* ESEARCH (TAG \"s\") COUNT 0"
        );
    }
}
