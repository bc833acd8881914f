//! QRESYNC's `VANISHED (EARLIER)` (RFC 7162 3.2.5.1, 3.2.6) over what the store still knows.
//!
//! The store keeps an expunged message's record, with the modseq of its expunge, until the
//! folder is compacted; compaction drops every expunged record at once. A client whose
//! modseq is older than the last compaction may therefore have missed expunges the store
//! can no longer name. RFC 7162 lets VANISHED (EARLIER) also carry UIDs that were never
//! assigned or were expunged earlier, so in that case every UID of the client's range that
//! is neither live nor still recorded is reported too.

/// The UID ranges to announce, ascending and merged.
///
/// * `uidnext`: UIDs at or above it are never reported.
/// * `known`: the client's known UIDs (or the FETCH's UID set), if it gave any.
/// * `present`: every UID the folder still records, live or expunged, ascending.
/// * `expunged_after`: recorded expunges with a modseq above the client's.
/// * `gaps_possible`: no recorded expunge is at or below the client's modseq, so the last
///   compaction may have dropped expunges the client has not seen.
pub fn vanished_ranges(
    uidnext: u32,
    known: Option<&[(u32, u32)]>,
    present: &[u32],
    expunged_after: &[u32],
    gaps_possible: bool,
) -> Vec<(u32, u32)> {
    let top = uidnext.saturating_sub(1);
    let mut ranges: Vec<(u32, u32)> = expunged_after
        .iter()
        .filter(|&&u| u >= 1 && u <= top)
        .map(|&u| (u, u))
        .collect();
    if gaps_possible && top >= 1 {
        let mut next = 1u32;
        for &p in present.iter().filter(|&&p| p >= 1 && p <= top) {
            if p > next {
                ranges.push((next, p - 1));
            }
            next = next.max(p.saturating_add(1));
        }
        if next <= top {
            ranges.push((next, top));
        }
    }
    let merged = merge(ranges);
    match known {
        None => merged,
        Some(k) => intersect(&merged, &merge(k.to_vec())),
    }
}

fn merge(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    for r in v.iter_mut() {
        if r.0 > r.1 {
            *r = (r.1, r.0);
        }
    }
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Intersection of two ascending, merged range lists.
fn intersect(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo <= hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Ranges as a sequence set (`1:3,7`).
pub fn format_ranges(r: &[(u32, u32)]) -> String {
    r.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_only_when_no_gap_is_possible() {
        // UIDs 1..=10 assigned; 2 and 3 compacted away; 5 expunged and recorded.
        let present = [1, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(
            vanished_ranges(11, None, &present, &[5], false),
            vec![(5, 5)]
        );
        assert_eq!(
            vanished_ranges(11, None, &present, &[5], true),
            vec![(2, 3), (5, 5)]
        );
        // Gaps at the end (expunged then compacted, highest UIDs).
        assert_eq!(
            vanished_ranges(14, None, &present, &[], true),
            vec![(2, 3), (11, 13)]
        );
        // Within the client's known UIDs only; a huge range costs nothing.
        assert_eq!(
            vanished_ranges(11, Some(&[(3, 4_000_000_000)]), &present, &[5], true),
            vec![(3, 3), (5, 5)]
        );
        assert_eq!(
            vanished_ranges(11, Some(&[(9, 9), (1, 2)]), &present, &[5], true),
            vec![(2, 2)]
        );
        assert_eq!(vanished_ranges(1, None, &[], &[], true), vec![]);
        assert_eq!(format_ranges(&[(2, 3), (5, 5)]), "2:3,5");
    }
}
