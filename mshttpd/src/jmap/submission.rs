//! Identity and EmailSubmission (RFC 8621 6, 7): one identity per user; a submission hands
//! the stored message to the SMTP relay named by `local.service.http.smtprelay`, with the
//! Bcc header removed, and answers only after the relay accepted it.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mail_parser::MessageParser;
use serde_json::{json, Map, Value};

use super::email::{self, locate};
use super::{arg_ids, arg_str, set_error, MResult, MethodError, Req};

const IDENTITY_ID: &str = "I1";
/// The identity never changes: a constant state.
const IDENTITY_STATE: &str = "i1";
/// Recipients per submission, at most.
const MAX_RECIPIENTS: usize = 1000;

/// The mail domain for a user id without one: the host name.
pub(crate) fn local_domain(user: &str) -> String {
    if let Some((_, d)) = user.rsplit_once('@') {
        return d.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "localhost".into())
}

fn identity_email(user: &str) -> String {
    if user.contains('@') {
        user.to_owned()
    } else {
        format!("{user}@{}", local_domain(user))
    }
}

/// Identity/get.
pub(crate) async fn identity_get(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let identity = json!({
        "id": IDENTITY_ID, "name": req.user, "email": identity_email(&req.user),
        "replyTo": null, "bcc": null, "textSignature": "", "htmlSignature": "",
        "mayDelete": false,
    });
    let (list, not_found) = match arg_ids(&args, "ids")? {
        None => (vec![identity], vec![]),
        Some(ids) => {
            let (found, missing): (Vec<String>, Vec<String>) =
                ids.into_iter().partition(|i| i == IDENTITY_ID);
            (
                if found.is_empty() {
                    vec![]
                } else {
                    vec![identity]
                },
                missing,
            )
        }
    };
    Ok(json!({"accountId": req.user, "state": IDENTITY_STATE, "list": list, "notFound": not_found}))
}

/// Identity/changes: identities never change here.
pub(crate) async fn identity_changes(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let since = arg_str(&args, "sinceState")?.unwrap_or("");
    if since != IDENTITY_STATE {
        return Err(MethodError::CannotCalculateChanges);
    }
    Ok(json!({
        "accountId": req.user, "oldState": since, "newState": IDENTITY_STATE,
        "hasMoreChanges": false, "created": [], "updated": [], "destroyed": [],
    }))
}

/// EmailSubmission/get: submissions are final once the relay took them and are not kept.
pub(crate) async fn get(req: &mut Req<'_>, args: Map<String, Value>) -> MResult {
    req.account(&args)?;
    let not_found = arg_ids(&args, "ids")?.unwrap_or_default();
    Ok(json!({"accountId": req.user, "state": "s0", "list": [], "notFound": not_found}))
}

/// The message without its Bcc header field(s) (RFC 5322 3.6.3: Bcc recipients are not
/// disclosed to the others).
fn strip_bcc(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_bcc = false;
    let mut in_header = true;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if in_header {
            if line == b"\r\n" || line == b"\n" {
                in_header = false;
                out.extend_from_slice(line);
                continue;
            }
            let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
            if !continuation {
                in_bcc = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
            }
            if in_bcc {
                continue;
            }
        }
        out.extend_from_slice(line);
    }
    out
}

fn parse_relay(relay: &str) -> Option<(String, u16)> {
    let (host, port) = relay.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

async fn submit_one(req: &mut Req<'_>, o: &Map<String, Value>) -> Result<(Value, String), Value> {
    let identity = o
        .get("identityId")
        .and_then(Value::as_str)
        .ok_or_else(|| set_error("invalidProperties", "identityId is required"))?;
    if identity != IDENTITY_ID {
        return Err(set_error("invalidProperties", "no such identity"));
    }
    let email_id = o
        .get("emailId")
        .and_then(Value::as_str)
        .ok_or_else(|| set_error("invalidProperties", "emailId is required"))?;
    let loc = locate(req, email_id)
        .await
        .map_err(|e| set_error("serverFail", format!("{e:?}")))?
        .ok_or_else(|| set_error("invalidProperties", "no such email"))?;
    let Some(relay) = req.ctx.settings.smtp_relay.clone() else {
        return Err(set_error(
            "forbiddenToSend",
            "no SMTP relay is configured (local.service.http.smtprelay)",
        ));
    };
    let (host, port) = parse_relay(&relay).ok_or_else(|| {
        set_error(
            "forbiddenToSend",
            "local.service.http.smtprelay is not host:port",
        )
    })?;
    let raw = req
        .session
        .message_bytes(&loc.folder.name, loc.msg.uid)
        .await
        .map_err(|e| set_error("serverFail", e.to_string()))?;
    let msg = MessageParser::default()
        .parse(&raw)
        .ok_or_else(|| set_error("invalidEmail", "the email cannot be parsed"))?;
    let envelope = o.get("envelope").filter(|v| !v.is_null());
    let mail_from = envelope
        .and_then(|e| e.get("mailFrom"))
        .and_then(|m| m.get("email"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            msg.from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| identity_email(&req.user));
    let mut rcpts: Vec<String> = match envelope
        .and_then(|e| e.get("rcptTo"))
        .and_then(Value::as_array)
    {
        Some(list) => list
            .iter()
            .filter_map(|r| r.get("email").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        None => [msg.to(), msg.cc(), msg.bcc()]
            .into_iter()
            .flatten()
            .flat_map(|a| a.iter().filter_map(|x| x.address().map(str::to_owned)))
            .collect(),
    };
    rcpts.dedup();
    if rcpts.is_empty() {
        return Err(set_error("noRecipients", "the email has no recipients"));
    }
    if rcpts.len() > MAX_RECIPIENTS {
        return Err(set_error("tooManyRecipients", "too many recipients"));
    }
    let from = mail_from
        .parse()
        .map_err(|_| set_error("forbiddenMailFrom", format!("invalid sender {mail_from}")))?;
    let mut to = Vec::new();
    let mut invalid = Vec::new();
    for r in &rcpts {
        match r.parse() {
            Ok(a) => to.push(a),
            Err(_) => invalid.push(r.clone()),
        }
    }
    if !invalid.is_empty() {
        let mut e = set_error("invalidRecipients", "invalid recipient addresses");
        e["invalidRecipients"] = json!(invalid);
        return Err(e);
    }
    let env = Envelope::new(Some(from), to)
        .map_err(|e| set_error("invalidProperties", format!("envelope: {e}")))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(Duration::from_secs(30)))
        .build();
    let data = strip_bcc(&raw);
    transport.send_raw(&env, &data).await.map_err(|e| {
        tracing::warn!("submission for {} through {relay}: {e}", req.user);
        set_error(
            "forbiddenToSend",
            format!("the relay did not accept the message: {e}"),
        )
    })?;
    tracing::info!(
        "submission for {}: {} recipients through {relay}",
        req.user,
        rcpts.len()
    );
    let mut r = [0u8; 8];
    let _ = getrandom::getrandom(&mut r);
    let id = format!(
        "S{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok((
        json!({"id": id, "undoStatus": "final", "sendAt": super::ids::utc_date(now)}),
        loc.id(),
    ))
}

/// EmailSubmission/set: create only (sent submissions are final and cannot be changed);
/// onSuccessUpdateEmail and onSuccessDestroyEmail run as an implicit Email/set.
pub(crate) async fn set(
    req: &mut Req<'_>,
    args: Map<String, Value>,
    extra: &mut Vec<(String, Value)>,
) -> MResult {
    req.account(&args)?;
    let (mut created, mut not_created) = (Map::new(), Map::new());
    let mut sent: Map<String, Value> = Map::new();
    if let Some(create) = args.get("create") {
        let create = create
            .as_object()
            .ok_or_else(|| MethodError::InvalidArguments("create must be an object".into()))?;
        for (cid, obj) in create {
            let r = match obj.as_object() {
                Some(o) => submit_one(req, o).await,
                None => Err(set_error("invalidProperties", "not an object")),
            };
            match r {
                Ok((v, email_id)) => {
                    if let Some(id) = v.get("id").and_then(Value::as_str) {
                        req.created_ids.insert(cid.clone(), id.to_owned());
                    }
                    sent.insert(cid.clone(), Value::String(email_id));
                    created.insert(cid.clone(), v);
                }
                Err(e) => {
                    not_created.insert(cid.clone(), e);
                }
            }
        }
    }
    let mut not_updated = Map::new();
    if let Some(update) = args.get("update").and_then(Value::as_object) {
        for id in update.keys() {
            not_updated.insert(
                id.clone(),
                set_error("notFound", "submissions are not kept"),
            );
        }
    }
    let mut not_destroyed = Map::new();
    for id in arg_ids(&args, "destroy")?.unwrap_or_default() {
        not_destroyed.insert(id, set_error("notFound", "submissions are not kept"));
    }
    let out = json!({
        "accountId": req.user, "oldState": "s0", "newState": "s0",
        "created": created, "notCreated": not_created,
        "updated": {}, "notUpdated": not_updated,
        "destroyed": [], "notDestroyed": not_destroyed,
    });
    // The email a `#creationId` (or submission id) in onSuccess* names.
    let email_for = |k: &str| -> Option<String> {
        let cid = k.strip_prefix('#')?;
        sent.get(cid).and_then(Value::as_str).map(str::to_owned)
    };
    let mut update = Map::new();
    if let Some(u) = args.get("onSuccessUpdateEmail").and_then(Value::as_object) {
        for (k, patch) in u {
            if let Some(e) = email_for(k) {
                update.insert(e, patch.clone());
            }
        }
    }
    let mut destroy = Vec::new();
    if let Some(d) = args.get("onSuccessDestroyEmail").and_then(Value::as_array) {
        for k in d.iter().filter_map(Value::as_str) {
            if let Some(e) = email_for(k) {
                destroy.push(Value::String(e));
            }
        }
    }
    if !update.is_empty() || !destroy.is_empty() {
        let mut a = Map::new();
        a.insert("accountId".into(), Value::String(req.user.clone()));
        a.insert("update".into(), Value::Object(update));
        a.insert("destroy".into(), Value::Array(destroy));
        match email::set(req, a).await {
            Ok(v) => extra.push(("Email/set".into(), v)),
            Err(e) => extra.push(("error".into(), e.to_json())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcc_is_removed_with_continuations() {
        let m = b"From: a@b\r\nBcc: x@y,\r\n z@w\r\nTo: c@d\r\n\r\nBcc: body stays\r\n";
        assert_eq!(
            strip_bcc(m),
            b"From: a@b\r\nTo: c@d\r\n\r\nBcc: body stays\r\n".to_vec()
        );
    }

    #[test]
    fn relay_address() {
        assert_eq!(
            parse_relay("127.0.0.1:2525"),
            Some(("127.0.0.1".into(), 2525))
        );
        assert_eq!(parse_relay("nope"), None);
    }
}
