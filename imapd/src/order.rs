//! SORT (RFC 5256, with RFC 5957 DISPLAYFROM/DISPLAYTO) and THREAD (ORDEREDSUBJECT and
//! REFERENCES) over the structure cache's sort keys.

use std::collections::HashMap;

use store_client::{MessageMeta, MessageStructure};

use crate::parse::{SortKey, ThreadAlgorithm};

/// What sorting and threading need of one message.
#[derive(Debug, Clone)]
pub struct Item {
    pub uid: u32,
    pub arrival: i64,
    /// Sent date, else the internal date (RFC 5256 DATE).
    pub date: i64,
    pub size: u64,
    pub subject: String,
    pub from: String,
    pub to: String,
    pub cc: String,
    pub display_from: String,
    pub display_to: String,
    pub message_id: Option<String>,
    /// References, else In-Reply-To.
    pub references: Vec<String>,
    /// The subject had a reply or forward marker (RFC 5256 step 5 prefers the original).
    pub is_reply: bool,
}

impl Item {
    pub fn new(m: &MessageMeta, st: &MessageStructure) -> Item {
        let s = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let mut references: Vec<String> = st
            .references
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        if references.is_empty() {
            if let Some(irt) = s(&st.envelope.in_reply_to) {
                if let Some(first) = irt.split_whitespace().find(|x| x.starts_with('<')) {
                    references.push(first.to_owned());
                }
            }
        }
        let to_display = st
            .envelope
            .to
            .iter()
            .find(|a| a.is_mailbox())
            .map(|a| {
                a.name
                    .as_deref()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| {
                        format!(
                            "{}@{}",
                            String::from_utf8_lossy(a.mailbox.as_deref().unwrap_or_default()),
                            String::from_utf8_lossy(a.host.as_deref().unwrap_or_default())
                        )
                    })
            })
            .unwrap_or_default();
        let raw = st.subject_decoded.as_deref().unwrap_or("");
        let subject = base_subject(raw);
        Item {
            uid: m.uid,
            arrival: m.internal_date,
            date: st.date_parsed.unwrap_or(m.internal_date),
            size: m.size,
            is_reply: is_reply(raw, &subject),
            subject,
            from: st.from_sort_key.clone().unwrap_or_default(),
            to: st.to_sort_key.clone().unwrap_or_default(),
            cc: st.cc_sort_key.clone().unwrap_or_default(),
            display_from: st.display_from.clone().unwrap_or_default().to_lowercase(),
            display_to: to_display.to_lowercase(),
            message_id: s(&st.envelope.message_id).map(|x| x.trim().to_owned()),
            references,
        }
    }
}

/// Did extracting the base subject remove a `Re:`/`Fwd:` or `(fwd)`?
fn is_reply(raw: &str, base: &str) -> bool {
    let plain = raw
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    plain != base && (plain.contains("re") || plain.contains("fw"))
}

/// RFC 5256 base subject: without `Re:`/`Fwd:` prefixes, `[blob]`s, `(fwd)` trailers and
/// surrounding whitespace, case folded.
pub fn base_subject(s: &str) -> String {
    let mut s = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    loop {
        let before = s.clone();
        while let Some(t) = s.strip_suffix("(fwd)") {
            s = t.trim_end().to_owned();
        }
        loop {
            let t = s.trim_start();
            let mut rest = None;
            for p in ["re", "fwd", "fw"] {
                if let Some(r) = t.strip_prefix(p) {
                    let r = r.trim_start();
                    let r = if r.starts_with('[') {
                        match r.find(']') {
                            Some(i) => r[i + 1..].trim_start(),
                            None => r,
                        }
                    } else {
                        r
                    };
                    if let Some(r) = r.strip_prefix(':') {
                        rest = Some(r.to_owned());
                        break;
                    }
                }
            }
            if rest.is_none() && t.starts_with('[') {
                if let Some(i) = t.find(']') {
                    let r = t[i + 1..].trim_start();
                    if !r.is_empty() {
                        rest = Some(r.to_owned());
                    }
                }
            }
            match rest {
                Some(r) => s = r,
                None => {
                    s = t.to_owned();
                    break;
                }
            }
        }
        if let Some(inner) = s.strip_prefix("[fwd:").and_then(|x| x.strip_suffix(']')) {
            s = inner.trim().to_owned();
        }
        if s == before {
            return s;
        }
    }
}

/// UIDs in the order the criteria give (ties in UID order).
pub fn sort(mut items: Vec<Item>, criteria: &[(bool, SortKey)]) -> Vec<u32> {
    items.sort_by(|a, b| {
        for &(reverse, k) in criteria {
            let o = match k {
                SortKey::Arrival => a.arrival.cmp(&b.arrival),
                SortKey::Date => a.date.cmp(&b.date),
                SortKey::Size => a.size.cmp(&b.size),
                SortKey::Subject => a.subject.cmp(&b.subject),
                SortKey::From => a.from.cmp(&b.from),
                SortKey::To => a.to.cmp(&b.to),
                SortKey::Cc => a.cc.cmp(&b.cc),
                SortKey::DisplayFrom => a.display_from.cmp(&b.display_from),
                SortKey::DisplayTo => a.display_to.cmp(&b.display_to),
            };
            let o = if reverse { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        a.uid.cmp(&b.uid)
    });
    items.into_iter().map(|i| i.uid).collect()
}

/// Deepest thread tree built (see `references`).
const MAX_THREAD_DEPTH: usize = 200;

/// A thread tree node; `uid` is `None` for a placeholder (a referenced message not here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub uid: Option<u32>,
    pub children: Vec<Node>,
}

pub fn thread(items: Vec<Item>, algorithm: ThreadAlgorithm) -> Vec<Node> {
    match algorithm {
        ThreadAlgorithm::OrderedSubject => ordered_subject(items),
        ThreadAlgorithm::References => references(items),
    }
}

fn ordered_subject(mut items: Vec<Item>) -> Vec<Node> {
    items.sort_by(|a, b| (&a.subject, a.date, a.uid).cmp(&(&b.subject, b.date, b.uid)));
    let mut threads: Vec<(i64, u32, Node)> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let mut j = i + 1;
        while j < items.len() && items[j].subject == items[i].subject {
            j += 1;
        }
        let children = items[i + 1..j]
            .iter()
            .map(|x| Node {
                uid: Some(x.uid),
                children: vec![],
            })
            .collect();
        threads.push((
            items[i].date,
            items[i].uid,
            Node {
                uid: Some(items[i].uid),
                children,
            },
        ));
        i = j;
    }
    threads.sort_by_key(|t| (t.0, t.1));
    threads.into_iter().map(|t| t.2).collect()
}

/// RFC 5256 REFERENCES: link by References/In-Reply-To, prune placeholders, gather root
/// threads by base subject, sort siblings and threads by date.
fn references(items: Vec<Item>) -> Vec<Node> {
    struct C {
        item: Option<usize>,
        parent: Option<usize>,
        children: Vec<usize>,
    }
    let mut cs: Vec<C> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    fn get(cs: &mut Vec<C>, by_id: &mut HashMap<String, usize>, id: &str) -> usize {
        *by_id.entry(id.to_owned()).or_insert_with(|| {
            cs.push(C {
                item: None,
                parent: None,
                children: vec![],
            });
            cs.len() - 1
        })
    }
    let is_ancestor = |cs: &Vec<C>, a: usize, mut b: usize| -> bool {
        let mut steps = 0;
        loop {
            if a == b {
                return true;
            }
            match cs[b].parent {
                Some(p) if steps < 10_000 => {
                    b = p;
                    steps += 1;
                }
                _ => return false,
            }
        }
    };
    for (idx, it) in items.iter().enumerate() {
        let me = match &it.message_id {
            Some(id) if by_id.get(id).is_none_or(|&c| cs[c].item.is_none()) => {
                get(&mut cs, &mut by_id, id)
            }
            _ => {
                cs.push(C {
                    item: None,
                    parent: None,
                    children: vec![],
                });
                cs.len() - 1
            }
        };
        cs[me].item = Some(idx);
        let mut prev: Option<usize> = None;
        for r in &it.references {
            let c = get(&mut cs, &mut by_id, r);
            if let Some(p) = prev {
                if cs[c].parent.is_none() && !is_ancestor(&cs, c, p) {
                    cs[c].parent = Some(p);
                }
            }
            prev = Some(c);
        }
        // The message's parent is the last reference, replacing any guess.
        match prev {
            Some(p) if !is_ancestor(&cs, me, p) => cs[me].parent = Some(p),
            _ => cs[me].parent = None,
        }
    }
    // Bound the depth (mail is written by strangers: a reply chain of a million messages must
    // not overflow the stack of the recursive steps below); deeper messages start threads.
    for i in 0..cs.len() {
        let mut depth = 0;
        let mut at = cs[i].parent;
        while let Some(p) = at {
            depth += 1;
            if depth > MAX_THREAD_DEPTH {
                cs[i].parent = None;
                break;
            }
            at = cs[p].parent;
        }
    }
    for i in 0..cs.len() {
        if let Some(p) = cs[i].parent {
            cs[p].children.push(i);
        }
    }
    fn build(cs: &Vec<C>, i: usize, items: &[Item]) -> Vec<Node> {
        let mut kids: Vec<Node> = cs[i]
            .children
            .iter()
            .flat_map(|&c| build(cs, c, items))
            .collect();
        match cs[i].item {
            Some(it) => vec![Node {
                uid: Some(items[it].uid),
                children: std::mem::take(&mut kids),
            }],
            // A placeholder without children vanishes; with one child it is replaced by it.
            None if kids.len() <= 1 => kids,
            None => vec![Node {
                uid: None,
                children: kids,
            }],
        }
    }
    let date_of = |n: &Node| -> (i64, u32) {
        fn first(n: &Node) -> Option<u32> {
            n.uid.or_else(|| n.children.iter().find_map(first))
        }
        let u = first(n).unwrap_or(0);
        let d = items
            .iter()
            .find(|i| i.uid == u)
            .map(|i| i.date)
            .unwrap_or(0);
        (d, u)
    };
    fn sort_tree(n: &mut Node, key: &dyn Fn(&Node) -> (i64, u32)) {
        for c in &mut n.children {
            sort_tree(c, key);
        }
        n.children.sort_by_key(|c| key(c));
    }
    let roots: Vec<Node> = (0..cs.len())
        .filter(|&i| cs[i].parent.is_none())
        .flat_map(|i| build(&cs, i, &items))
        .collect();
    let roots = gather_by_subject(roots, &items);
    // A root placeholder with children stays (RFC 5256 shows it as "((a)(b))").
    let mut roots = roots;
    for r in &mut roots {
        sort_tree(r, &date_of);
    }
    roots.sort_by_key(|r| date_of(r));
    roots
}

/// RFC 5256 REFERENCES step 5: root threads with the same base subject are gathered, the
/// original preferred over replies as the thread's top.
fn gather_by_subject(roots: Vec<Node>, items: &[Item]) -> Vec<Node> {
    let by_uid: HashMap<u32, &Item> = items.iter().map(|i| (i.uid, i)).collect();
    let info = |n: &Node| -> Option<(String, bool)> {
        let u = n.uid.or_else(|| n.children.first().and_then(|c| c.uid))?;
        by_uid.get(&u).map(|i| (i.subject.clone(), i.is_reply))
    };
    let mut table: HashMap<String, usize> = HashMap::new();
    for (i, r) in roots.iter().enumerate() {
        let Some((subject, reply)) = info(r) else {
            continue;
        };
        if subject.is_empty() {
            continue;
        }
        match table.get(&subject) {
            None => {
                table.insert(subject, i);
            }
            Some(&j) => {
                let other = &roots[j];
                let other_reply = info(other).is_some_and(|x| x.1);
                if (other.uid.is_none() && r.uid.is_some()) || (other_reply && !reply) {
                    table.insert(subject, i);
                }
            }
        }
    }
    let mut slots: Vec<Option<Node>> = roots.into_iter().map(Some).collect();
    for i in 0..slots.len() {
        let Some((subject, reply)) = slots[i].as_ref().and_then(&info) else {
            continue;
        };
        let Some(&j) = table.get(&subject) else {
            continue;
        };
        if j == i {
            continue;
        }
        let Some(this) = slots[i].take() else {
            continue;
        };
        let target_reply = slots[j].as_ref().and_then(&info).is_some_and(|x| x.1);
        let Some(target) = slots[j].as_mut() else {
            slots[i] = Some(this);
            continue;
        };
        match (target.uid.is_none(), this.uid.is_none()) {
            (true, true) => target.children.extend(this.children),
            (true, false) => target.children.push(this),
            _ if reply && !target_reply => target.children.push(this),
            _ => {
                let old = std::mem::replace(
                    target,
                    Node {
                        uid: None,
                        children: Vec::new(),
                    },
                );
                target.children = vec![old, this];
            }
        }
    }
    slots.into_iter().flatten().collect()
}

/// The THREAD response body: `(1 2 (3)(4))(5)`.
pub fn format_threads(threads: &[Node], map: &dyn Fn(u32) -> u32) -> String {
    fn chain(n: &Node, map: &dyn Fn(u32) -> u32, out: &mut String) {
        if let Some(u) = n.uid {
            out.push_str(&map(u).to_string());
        }
        match n.children.len() {
            0 => {}
            1 => {
                if n.uid.is_some() {
                    out.push(' ');
                }
                chain(&n.children[0], map, out);
            }
            _ => {
                if n.uid.is_some() {
                    out.push(' ');
                }
                for c in &n.children {
                    out.push('(');
                    chain(c, map, out);
                    out.push(')');
                }
            }
        }
    }
    let mut out = String::new();
    for t in threads {
        out.push('(');
        chain(t, map, &mut out);
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(uid: u32, subject: &str, id: &str, refs: &[&str], date: i64) -> Item {
        Item {
            uid,
            arrival: date,
            date,
            size: 0,
            subject: base_subject(subject),
            from: String::new(),
            to: String::new(),
            cc: String::new(),
            display_from: String::new(),
            display_to: String::new(),
            message_id: Some(id.into()),
            references: refs.iter().map(|s| s.to_string()).collect(),
            is_reply: is_reply(subject, &base_subject(subject)),
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(base_subject("Re: RE: [list] Fwd: Hello (fwd)"), "hello");
        assert_eq!(base_subject("[fwd: Topic]"), "topic");
        assert_eq!(base_subject("  Plain   text "), "plain text");
    }

    #[test]
    fn threads() {
        let items = vec![
            item(1, "A", "<a>", &[], 10),
            item(2, "Re: A", "<b>", &["<a>"], 20),
            item(3, "B", "<c>", &[], 15),
            item(4, "Re: A", "<d>", &["<a>"], 30),
            item(5, "Re: X", "<e>", &["<missing>"], 5),
        ];
        let id = |u: u32| u;
        let r = thread(items.clone(), ThreadAlgorithm::References);
        assert_eq!(format_threads(&r, &id), "(5)(1 (2)(4))(3)");
        // Step 5: a reply without references joins its original's thread by subject; two
        // originals with one subject go under a placeholder.
        let mut more = items.clone();
        more.push(item(6, "Re: B", "<f>", &[], 40));
        more.push(item(7, "X", "<g>", &[], 50));
        let r = thread(more, ThreadAlgorithm::References);
        assert_eq!(format_threads(&r, &id), "(1 (2)(4))(3 6)(7 5)");
        let mut twins = vec![
            item(1, "Same", "<a>", &[], 1),
            item(2, "Same", "<b>", &[], 2),
        ];
        twins.push(item(3, "Other", "<c>", &[], 3));
        let r = thread(twins, ThreadAlgorithm::References);
        assert_eq!(format_threads(&r, &id), "((1)(2))(3)");
        let o = thread(items, ThreadAlgorithm::OrderedSubject);
        assert_eq!(format_threads(&o, &id), "(5)(1 (2)(4))(3)");
    }

    #[test]
    fn deep_reply_chains_are_cut() {
        let items: Vec<Item> = (1..=5000u32)
            .map(|i| {
                let prev = format!("<{}>", i - 1);
                let refs: Vec<&str> = if i > 1 { vec![prev.as_str()] } else { vec![] };
                item(i, &format!("s{i}"), &format!("<{i}>"), &refs, i as i64)
            })
            .collect();
        let t = thread(items, ThreadAlgorithm::References);
        assert!(t.len() > 1 && t.len() < 100, "{}", t.len());
        let s = format_threads(&t, &|u| u);
        assert!(s.starts_with("(1 2 3 "), "{}", &s[..20]);
    }

    #[test]
    fn sorting() {
        let items = vec![
            item(1, "b", "<1>", &[], 3),
            item(2, "a", "<2>", &[], 2),
            item(3, "a", "<3>", &[], 1),
        ];
        assert_eq!(
            sort(items.clone(), &[(false, SortKey::Subject)]),
            vec![2, 3, 1]
        );
        assert_eq!(sort(items.clone(), &[(true, SortKey::Date)]), vec![1, 2, 3]);
        assert_eq!(
            sort(items, &[(false, SortKey::Subject), (false, SortKey::Date)]),
            vec![3, 2, 1]
        );
    }
}
