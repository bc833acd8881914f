//! Mailbox/get, /changes, /query, /set (RFC 8621 2): the user's folders, `/`-separated.

use serde_json::{json, Map, Value};
use store_client::ClientError;

use super::ids::{self, parse_state};
use super::{
    arg_bool, arg_ids, arg_props, arg_str, set_error, store_set_error, Folder, MResult,
    MethodError, Req,
};

const PROPERTIES: &[&str] = &[
    "id",
    "name",
    "parentId",
    "role",
    "sortOrder",
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
    "myRights",
    "isSubscribed",
];

fn role(f: &Folder) -> Option<String> {
    if f.name == "INBOX" {
        return Some("inbox".into());
    }
    let su = f.special_use.as_deref()?;
    let r = su.trim_start_matches('\\').to_ascii_lowercase();
    matches!(
        r.as_str(),
        "sent" | "drafts" | "trash" | "junk" | "archive" | "flagged" | "all" | "important"
    )
    .then_some(r)
}

fn leaf(name: &str) -> &str {
    name.rsplit_once('/').map(|(_, l)| l).unwrap_or(name)
}

fn parent_name(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(p, _)| p)
}

fn sort_order(f: &Folder) -> u32 {
    match role(f).as_deref() {
        Some("inbox") => 1,
        Some("drafts") => 2,
        Some("sent") => 3,
        Some("archive") => 4,
        Some("junk") => 5,
        Some("trash") => 6,
        _ => 10,
    }
}

async fn to_json(req: &mut Req<'_>, f: &Folder, all: &[Folder], props: &[String]) -> MResult {
    let mut o = Map::new();
    let needs_counts = props.iter().any(|p| {
        matches!(
            p.as_str(),
            "totalEmails" | "unreadEmails" | "totalThreads" | "unreadThreads"
        )
    });
    let (mut total, mut unread, mut threads, mut unread_threads) = (0u64, 0u64, 0u64, 0u64);
    if needs_counts {
        let snap = req.snapshot(f).await?;
        let live: Vec<_> = snap.messages.iter().filter(|m| !m.expunged).collect();
        total = live.len() as u64;
        unread = live.iter().filter(|m| !m.flags.is_seen()).count() as u64;
        if props
            .iter()
            .any(|p| p == "totalThreads" || p == "unreadThreads")
        {
            let uids = live.iter().map(|m| m.uid).collect();
            let st = req.session.message_structures(&f.name, uids).await?;
            let mut all_t = std::collections::HashSet::new();
            let mut unread_t = std::collections::HashSet::new();
            let seen: std::collections::HashMap<u32, bool> =
                live.iter().map(|m| (m.uid, m.flags.is_seen())).collect();
            for (uid, s) in &st {
                let t = ids::thread_of(s).unwrap_or_else(|| format!("#{uid}"));
                if seen.get(uid) == Some(&false) {
                    unread_t.insert(t.clone());
                }
                all_t.insert(t);
            }
            threads = all_t.len() as u64;
            unread_threads = unread_t.len() as u64;
        }
    }
    for p in props {
        let v = match p.as_str() {
            "id" => json!(f.id()),
            "name" => json!(leaf(&f.name)),
            "parentId" => match parent_name(&f.name) {
                Some(pn) => all
                    .iter()
                    .find(|x| x.name == pn)
                    .map(|x| json!(x.id()))
                    .unwrap_or(Value::Null),
                None => Value::Null,
            },
            "role" => json!(role(f)),
            "sortOrder" => json!(sort_order(f)),
            "totalEmails" => json!(total),
            "unreadEmails" => json!(unread),
            "totalThreads" => json!(threads),
            "unreadThreads" => json!(unread_threads),
            "myRights" => json!({
                "mayReadItems": true, "mayAddItems": true, "mayRemoveItems": true,
                "maySetSeen": true, "maySetKeywords": true, "mayCreateChild": true,
                "mayRename": f.name != "INBOX", "mayDelete": f.name != "INBOX", "maySubmit": true,
            }),
            "isSubscribed" => json!(f.subscribed),
            _ => continue,
        };
        o.insert(p.clone(), v);
    }
    Ok(Value::Object(o))
}

fn props_of(args: &Map<String, Value>) -> MResult<Vec<String>> {
    let props = arg_props(args, "properties")?
        .unwrap_or_else(|| PROPERTIES.iter().map(|s| s.to_string()).collect());
    if let Some(bad) = props.iter().find(|p| !PROPERTIES.contains(&p.as_str())) {
        return Err(MethodError::InvalidArguments(format!(
            "unknown property {bad}"
        )));
    }
    let mut props = props;
    if !props.iter().any(|p| p == "id") {
        props.insert(0, "id".into());
    }
    Ok(props)
}

/// Mailbox/get.
pub(crate) async fn get(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let props = props_of(&args)?;
    let folders = req.folders().await?;
    let state = req.state().await?;
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    match arg_ids(&args, "ids")? {
        None => {
            for f in &folders {
                list.push(to_json(req, f, &folders, &props).await?);
            }
        }
        Some(ids) => {
            if ids.len() > super::MAX_OBJECTS_IN_GET {
                return Err(MethodError::RequestTooLarge);
            }
            for id in super::unique_ids(ids) {
                match req.folder_by_id(&id).await? {
                    Some(f) => list.push(to_json(req, &f, &folders, &props).await?),
                    None => not_found.push(id),
                }
            }
        }
    }
    Ok(json!({
        "accountId": req.user, "state": state, "list": list, "notFound": not_found,
    }))
}

/// Mailbox/changes: folders whose UIDVALIDITY appeared, vanished or whose counters moved.
pub(crate) async fn changes(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let since = arg_str(&args, "sinceState")?
        .ok_or_else(|| MethodError::InvalidArguments("sinceState is required".into()))?;
    let old = parse_state(since).ok_or(MethodError::CannotCalculateChanges)?;
    let folders = req.folders().await?;
    let now = ids::state_map(&folders);
    let mut created = Vec::new();
    let mut updated = Vec::new();
    let mut counts_only = true;
    for (uv, st) in &now {
        match old.get(uv) {
            None => created.push(ids::mailbox_id(*uv)),
            Some(o) if o != st => {
                if o.name_sum != st.name_sum {
                    counts_only = false;
                }
                updated.push(ids::mailbox_id(*uv));
            }
            _ => {}
        }
    }
    let destroyed: Vec<String> = old
        .keys()
        .filter(|uv| !now.contains_key(uv))
        .map(|uv| ids::mailbox_id(*uv))
        .collect();
    let updated_props = if counts_only && !updated.is_empty() {
        json!([
            "totalEmails",
            "unreadEmails",
            "totalThreads",
            "unreadThreads"
        ])
    } else {
        Value::Null
    };
    Ok(json!({
        "accountId": req.user,
        "oldState": since,
        "newState": ids::state_of(&folders),
        "hasMoreChanges": false,
        "created": created,
        "updated": updated,
        "destroyed": destroyed,
        "updatedProperties": updated_props,
    }))
}

fn filter_matches(f: &Folder, all: &[Folder], filter: &Map<String, Value>) -> MResult<bool> {
    if let Some(op) = filter.get("operator").and_then(Value::as_str) {
        let conds = filter
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| MethodError::InvalidArguments("conditions must be a list".into()))?;
        let mut results = Vec::new();
        for c in conds {
            let c = c.as_object().ok_or_else(|| {
                MethodError::InvalidArguments("a condition must be an object".into())
            })?;
            results.push(filter_matches(f, all, c)?);
        }
        return match op {
            "AND" => Ok(results.iter().all(|b| *b)),
            "OR" => Ok(results.iter().any(|b| *b)),
            "NOT" => Ok(!results.iter().any(|b| *b)),
            _ => Err(MethodError::UnsupportedFilter(format!("operator {op}"))),
        };
    }
    for (k, v) in filter {
        let ok = match k.as_str() {
            "parentId" => {
                let parent = parent_name(&f.name)
                    .and_then(|pn| all.iter().find(|x| x.name == pn))
                    .map(Folder::id);
                match v {
                    Value::Null => parent.is_none(),
                    Value::String(s) => parent.as_deref() == Some(s.as_str()),
                    _ => return Err(MethodError::InvalidArguments("parentId".into())),
                }
            }
            "name" => v
                .as_str()
                .is_some_and(|s| leaf(&f.name).to_lowercase().contains(&s.to_lowercase())),
            "role" => match v {
                Value::Null => role(f).is_none(),
                Value::String(s) => role(f).as_deref() == Some(s.as_str()),
                _ => return Err(MethodError::InvalidArguments("role".into())),
            },
            "hasAnyRole" => v.as_bool() == Some(role(f).is_some()),
            "isSubscribed" => v.as_bool() == Some(f.subscribed),
            other => {
                return Err(MethodError::UnsupportedFilter(format!(
                    "Mailbox filter {other}"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn filter_of(args: &Map<String, Value>) -> MResult<Map<String, Value>> {
    match args.get("filter") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o.clone()),
        Some(_) => Err(MethodError::InvalidArguments(
            "filter must be an object".into(),
        )),
    }
}

/// Whether a filter (at any depth) looks at `parentId`, which depends on other folders.
fn uses_parent(filter: &Map<String, Value>) -> bool {
    filter.contains_key("parentId")
        || filter
            .get("conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().filter_map(Value::as_object).any(uses_parent))
}

/// The folders a Mailbox/query selects, in its order (filter parentId, name, role,
/// hasAnyRole, isSubscribed; sort name, sortOrder).
fn query_list(folders: &[Folder], args: &Map<String, Value>) -> MResult<Vec<Folder>> {
    let filter = filter_of(args)?;
    let mut matched = Vec::new();
    for f in folders {
        if filter_matches(f, folders, &filter)? {
            matched.push(f.clone());
        }
    }
    if let Some(Value::Array(sorts)) = args.get("sort") {
        for s in sorts.iter().rev() {
            let prop = s.get("property").and_then(Value::as_str).unwrap_or("");
            let asc = s
                .get("isAscending")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            match prop {
                "name" => matched.sort_by(|a, b| leaf(&a.name).cmp(leaf(&b.name))),
                "sortOrder" => matched.sort_by_key(sort_order),
                other => return Err(MethodError::UnsupportedSort(other.to_owned())),
            }
            if !asc {
                matched.reverse();
            }
        }
    }
    Ok(matched)
}

/// Mailbox/query.
pub(crate) async fn query(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let folders = req.folders().await?;
    let matched = query_list(&folders, &args)?;
    let total = matched.len();
    let position = super::arg_uint(&args, "position")?.unwrap_or(0) as usize;
    let limit = super::arg_uint(&args, "limit")?.map(|l| l as usize);
    let ids: Vec<String> = matched
        .iter()
        .skip(position)
        .take(limit.unwrap_or(usize::MAX))
        .map(Folder::id)
        .collect();
    let mut out = json!({
        "accountId": req.user,
        "queryState": ids::state_of(&folders),
        "canCalculateChanges": true,
        "position": position.min(total),
        "ids": ids,
    });
    if arg_bool(&args, "calculateTotal")? {
        out["total"] = json!(total);
    }
    Ok(out)
}

/// Mailbox/queryChanges (RFC 8620 5.6). Every filter and sort here looks only at a folder's
/// name, role and subscription, which the state string carries a checksum of; so a folder
/// whose checksum is unchanged kept its place relative to the others, and only folders
/// created, destroyed, renamed or (un)subscribed since `sinceQueryState` are reported
/// (removed if they were there before, added with their index if they match now). A
/// `parentId` filter also depends on which folders exist, so when any was created or
/// destroyed, every folder with a parent is reported as well.
pub(crate) async fn query_changes(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let since = arg_str(&args, "sinceQueryState")?
        .ok_or_else(|| MethodError::InvalidArguments("sinceQueryState is required".into()))?
        .to_owned();
    let old = parse_state(&since).ok_or(MethodError::CannotCalculateChanges)?;
    let folders = req.folders().await?;
    let matched = query_list(&folders, &args)?;
    let now = ids::state_map(&folders);
    let mut changed: std::collections::HashSet<u32> = now
        .iter()
        .filter(|(uv, st)| old.get(uv).is_none_or(|o| o.name_sum != st.name_sum))
        .map(|(uv, _)| *uv)
        .collect();
    let appeared_or_vanished =
        now.keys().any(|uv| !old.contains_key(uv)) || old.keys().any(|uv| !now.contains_key(uv));
    if appeared_or_vanished && uses_parent(&filter_of(&args)?) {
        changed.extend(
            folders
                .iter()
                .filter(|f| f.name.contains('/'))
                .map(|f| f.uidvalidity),
        );
    }
    let removed: Vec<String> = old
        .keys()
        .filter(|uv| changed.contains(uv) || !now.contains_key(uv))
        .map(|uv| ids::mailbox_id(*uv))
        .collect();
    // upToId (RFC 8620 5.6 with erratum 6603): the client caches the results only as far
    // as that id, so what was added after it is left out. Safe here although every Mailbox
    // sort and filter is on mutable properties: a folder not reported keeps its order
    // relative to the others, so the client's list up to upToId comes out exact. Removals
    // stay whole (their old indexes are not known), as the erratum asks then.
    let up_to = match args.get("upToId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            let id = req.resolve_id(id);
            matched.iter().position(|f| f.id() == id)
        }
        Some(_) => return Err(MethodError::InvalidArguments("upToId must be an id".into())),
    };
    let added: Vec<Value> = matched
        .iter()
        .enumerate()
        .take(up_to.map_or(usize::MAX, |k| k + 1))
        .filter(|(_, f)| changed.contains(&f.uidvalidity))
        .map(|(i, f)| json!({"id": f.id(), "index": i}))
        .collect();
    if let Some(max) = super::arg_uint(&args, "maxChanges")? {
        if removed.len() + added.len() > max as usize {
            return Err(MethodError::TooManyChanges);
        }
    }
    let mut out = json!({
        "accountId": req.user,
        "oldQueryState": since,
        "newQueryState": ids::state_of(&folders),
        "removed": removed,
        "added": added,
    });
    if arg_bool(&args, "calculateTotal")? {
        out["total"] = json!(matched.len());
    }
    Ok(out)
}

/// Mailbox/set: create (name, parentId), update (name, parentId = rename; isSubscribed),
/// destroy (onDestroyRemoveEmails).
pub(crate) async fn set(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let old_state = req.state().await?;
    if let Some(s) = arg_str(&args, "ifInState")? {
        if s != old_state {
            return Err(MethodError::StateMismatch);
        }
    }
    let remove_emails = arg_bool(&args, "onDestroyRemoveEmails")?;
    let mut created = Map::new();
    let mut not_created = Map::new();
    let mut updated = Map::new();
    let mut not_updated = Map::new();
    let mut destroyed = Vec::new();
    let mut not_destroyed = Map::new();
    let count = [&args.get("create"), &args.get("update")]
        .iter()
        .filter_map(|v| v.and_then(Value::as_object).map(Map::len))
        .sum::<usize>()
        + args
            .get("destroy")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
    if count > super::MAX_OBJECTS_IN_SET {
        return Err(MethodError::RequestTooLarge);
    }

    if let Some(create) = args.get("create").and_then(Value::as_object) {
        for (cid, obj) in create {
            let r = create_one(req, obj).await;
            req.invalidate();
            match r {
                Ok(id) => {
                    req.created_ids.insert(cid.clone(), id.clone());
                    created.insert(cid.clone(), json!({"id": id, "totalEmails": 0, "unreadEmails": 0, "totalThreads": 0, "unreadThreads": 0, "isSubscribed": true, "myRights": {"mayReadItems": true, "mayAddItems": true, "mayRemoveItems": true, "maySetSeen": true, "maySetKeywords": true, "mayCreateChild": true, "mayRename": true, "mayDelete": true, "maySubmit": true}}));
                }
                Err(e) => {
                    not_created.insert(cid.clone(), e);
                }
            }
        }
    }
    if let Some(update) = args.get("update").and_then(Value::as_object) {
        for (id, patch) in update {
            let r = update_one(req, id, patch).await;
            req.invalidate();
            match r {
                Ok(()) => {
                    updated.insert(req.resolve_id(id), Value::Null);
                }
                Err(e) => {
                    not_updated.insert(id.clone(), e);
                }
            }
        }
    }
    if let Some(destroy) = arg_ids(&args, "destroy")? {
        for id in destroy {
            let r = destroy_one(req, &id, remove_emails).await;
            req.invalidate();
            match r {
                Ok(()) => destroyed.push(req.resolve_id(&id)),
                Err(e) => {
                    not_destroyed.insert(id, e);
                }
            }
        }
    }
    let new_state = req.state().await?;
    Ok(json!({
        "accountId": req.user,
        "oldState": old_state,
        "newState": new_state,
        "created": created, "notCreated": not_created,
        "updated": updated, "notUpdated": not_updated,
        "destroyed": destroyed, "notDestroyed": not_destroyed,
    }))
}

fn valid_leaf(name: &str) -> Result<(), Value> {
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(set_error(
            "invalidProperties",
            "name must be 1 to 255 characters without / or control characters",
        ));
    }
    Ok(())
}

async fn full_name(req: &mut Req<'_>, parent: Option<&Value>, leaf: &str) -> Result<String, Value> {
    match parent {
        None | Some(Value::Null) => Ok(leaf.to_owned()),
        Some(Value::String(pid)) => {
            let p = req
                .folder_by_id(pid)
                .await
                .map_err(|e| set_error("serverFail", format!("{e:?}")))?
                .ok_or_else(|| set_error("invalidProperties", "no such parentId"))?;
            Ok(format!("{}/{leaf}", p.name))
        }
        Some(_) => Err(set_error(
            "invalidProperties",
            "parentId must be an id or null",
        )),
    }
}

async fn create_one(req: &mut Req<'_>, obj: &Value) -> Result<String, Value> {
    let o = obj
        .as_object()
        .ok_or_else(|| set_error("invalidProperties", "not an object"))?;
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| set_error("invalidProperties", "name is required"))?;
    valid_leaf(name)?;
    for k in o.keys() {
        if !["name", "parentId", "isSubscribed", "sortOrder", "role"].contains(&k.as_str()) {
            return Err(set_error("invalidProperties", format!("{k} cannot be set")));
        }
    }
    let special = match o.get("role").and_then(Value::as_str) {
        Some(r @ ("sent" | "drafts" | "trash" | "junk" | "archive")) => {
            let mut c = r.chars();
            c.next()
                .map(|f| format!("\\{}{}", f.to_ascii_uppercase(), c.as_str()))
        }
        Some(_) => return Err(set_error("invalidProperties", "unsupported role")),
        None => None,
    };
    let full = full_name(req, o.get("parentId"), name).await?;
    req.session
        .create(&full, special.as_deref())
        .await
        .map_err(|e| match e {
            ClientError::MailboxExists(_) => set_error("alreadyExists", e.to_string()),
            other => store_set_error(&other),
        })?;
    if o.get("isSubscribed").and_then(Value::as_bool) != Some(false) {
        let _ = req.session.subscribe(&full).await;
    }
    let st = req
        .session
        .status(&full)
        .await
        .map_err(|e| store_set_error(&e))?;
    Ok(ids::mailbox_id(st.uidvalidity))
}

async fn update_one(req: &mut Req<'_>, id: &str, patch: &Value) -> Result<(), Value> {
    let f = req
        .folder_by_id(id)
        .await
        .map_err(|e| set_error("serverFail", format!("{e:?}")))?
        .ok_or_else(|| set_error("notFound", "no such mailbox"))?;
    let p = patch
        .as_object()
        .ok_or_else(|| set_error("invalidPatch", "not an object"))?;
    if let Some(sub) = p.get("isSubscribed") {
        let sub = sub
            .as_bool()
            .ok_or_else(|| set_error("invalidProperties", "isSubscribed must be a boolean"))?;
        let r = if sub {
            req.session.subscribe(&f.name).await
        } else {
            req.session.unsubscribe(&f.name).await
        };
        r.map_err(|e| store_set_error(&e))?;
    }
    if p.contains_key("name") || p.contains_key("parentId") {
        let leaf_name = match p.get("name") {
            Some(Value::String(n)) => {
                valid_leaf(n)?;
                n.clone()
            }
            Some(_) => return Err(set_error("invalidProperties", "name must be a string")),
            None => leaf(&f.name).to_owned(),
        };
        let parent = match p.get("parentId") {
            Some(v) => v.clone(),
            None => match parent_name(&f.name) {
                Some(pn) => req
                    .folders()
                    .await
                    .map_err(|e| set_error("serverFail", format!("{e:?}")))?
                    .iter()
                    .find(|x| x.name == pn)
                    .map(|x| json!(x.id()))
                    .unwrap_or(Value::Null),
                None => Value::Null,
            },
        };
        let target = full_name(req, Some(&parent), &leaf_name).await?;
        if target != f.name {
            if f.name == "INBOX" {
                return Err(set_error("forbidden", "INBOX cannot be renamed"));
            }
            if target.starts_with(&format!("{}/", f.name)) {
                return Err(set_error(
                    "invalidProperties",
                    "a mailbox cannot move under itself",
                ));
            }
            req.session
                .rename(&f.name, &target)
                .await
                .map_err(|e| match e {
                    ClientError::MailboxExists(_) => set_error("alreadyExists", e.to_string()),
                    other => store_set_error(&other),
                })?;
        }
    }
    for k in p.keys() {
        if !["name", "parentId", "isSubscribed", "sortOrder"].contains(&k.as_str()) {
            return Err(set_error(
                "invalidProperties",
                format!("{k} cannot be changed"),
            ));
        }
    }
    Ok(())
}

async fn destroy_one(req: &mut Req<'_>, id: &str, remove_emails: bool) -> Result<(), Value> {
    let folders = req
        .folders()
        .await
        .map_err(|e| set_error("serverFail", format!("{e:?}")))?;
    let f = req
        .folder_by_id(id)
        .await
        .map_err(|e| set_error("serverFail", format!("{e:?}")))?
        .ok_or_else(|| set_error("notFound", "no such mailbox"))?;
    if folders
        .iter()
        .any(|x| x.name.starts_with(&format!("{}/", f.name)))
    {
        return Err(set_error(
            "mailboxHasChild",
            "the mailbox has child mailboxes",
        ));
    }
    if f.name == "INBOX" {
        return Err(set_error("forbidden", "INBOX cannot be destroyed"));
    }
    if f.status.messages > 0 && !remove_emails {
        return Err(set_error("mailboxHasEmail", "the mailbox holds messages"));
    }
    req.session
        .delete(&f.name)
        .await
        .map_err(|e| store_set_error(&e))?;
    let _ = req.session.unsubscribe(&f.name).await;
    Ok(())
}
