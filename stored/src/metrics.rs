//! Prometheus figures on `127.0.0.1:<local.store.metricsport>` at `GET /metrics` (text format
//! 0.0.4). One request per connection, answered and closed: a scraper needs nothing more, so a
//! small HTTP/1.1 responder replaces a framework. The request head is bounded (8 KB) and must
//! arrive within 5 seconds.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::health;
use crate::periodic::Stats;
use crate::{Paths, STAMP_CHECKPOINT, STAMP_LOG_CLEANUP, STAMP_PERUSER};

const MAX_HEAD: usize = 8192;

/// What the endpoint reads figures from.
pub struct Source {
    pub root: PathBuf,
    pub config: msgconf::Config,
    pub paths: Paths,
    pub stats: Arc<Stats>,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics page.
pub fn render(src: &Source) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: &[(String, f64)]| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let s = &src.stats;
    let one = |v: f64| vec![(String::new(), v)];
    let ld = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
    metric("msg_stored_up", "1 while stored runs.", "gauge", &one(1.0));
    metric(
        "msg_stored_start_time_seconds",
        "When stored started (Unix time).",
        "gauge",
        &one(s.started.load(Ordering::Relaxed) as f64),
    );
    metric(
        "msg_stored_startup_analysis_seconds",
        "Duration of the startup analysis and recovery.",
        "gauge",
        &one(s.startup_millis.load(Ordering::Relaxed) as f64 / 1000.0),
    );
    metric(
        "msg_stored_recoveries_total",
        "Database recoveries made at startup (snapshot restore, rebuild, log removal, resync).",
        "counter",
        &one(ld(&s.recoveries)),
    );
    metric(
        "msg_stored_resync_pending",
        "1 while the database is being brought up to date from the folders.",
        "gauge",
        &one(ld(&s.resync_pending)),
    );
    metric(
        "msg_stored_checkpoints_total",
        "Database checkpoints done.",
        "counter",
        &one(ld(&s.checkpoints)),
    );
    metric(
        "msg_stored_checkpoint_failures_total",
        "Database checkpoints that failed.",
        "counter",
        &one(ld(&s.checkpoint_failures)),
    );
    metric(
        "msg_stored_log_cleanups_total",
        "Database log cleanups done.",
        "counter",
        &one(ld(&s.log_cleanups)),
    );
    metric(
        "msg_stored_peruser_writeouts_total",
        "Per-user data write-outs done.",
        "counter",
        &one(ld(&s.peruser_writeouts)),
    );
    metric(
        "msg_stored_erased_messages_total",
        "Files of expunged messages erased after the grace period.",
        "counter",
        &one(ld(&s.erased_messages)),
    );
    metric(
        "msg_stored_erased_bytes_total",
        "Bytes of expunged messages erased.",
        "counter",
        &one(ld(&s.erased_bytes)),
    );
    metric(
        "msg_stored_snapshots_total",
        "Database snapshots taken and verified.",
        "counter",
        &one(ld(&s.snapshots)),
    );
    metric(
        "msg_stored_snapshot_failures_total",
        "Database snapshots that failed or did not verify.",
        "counter",
        &one(ld(&s.snapshot_failures)),
    );
    let check = s
        .folder_check
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    metric(
        "msg_reconstruct_check_time_seconds",
        "When stored's last periodic reconstruct -r -n ended (Unix time; 0 = none yet).",
        "gauge",
        &one(check.as_ref().map_or(0.0, |c| c.at as f64)),
    );
    if let Some(c) = &check {
        metric(
            "msg_reconstruct_check_duration_seconds",
            "How long the last periodic reconstruct -r -n took.",
            "gauge",
            &one(c.millis as f64 / 1000.0),
        );
        metric(
            "msg_reconstruct_check_status",
            "Exit status of the last periodic reconstruct -r -n: 0 clean, 1 damage found, 2 failed or could not run.",
            "gauge",
            &one(c.result.as_ref().map_or(2.0, |r| f64::from(r.code))),
        );
        if let Some(r) = &c.result {
            metric(
                "msg_reconstruct_folders_checked",
                "Folders the last periodic reconstruct -r -n checked.",
                "gauge",
                &one(r.checked as f64),
            );
            metric(
                "msg_reconstruct_findings",
                "Folders with findings in the last periodic reconstruct -r -n, by kind (damaged: reconstruct -r would repair; unrepairable: could not be checked or repaired).",
                "gauge",
                &[
                    ("{kind=\"damaged\"}".to_owned(), r.damaged as f64),
                    ("{kind=\"unrepairable\"}".to_owned(), r.unrepairable as f64),
                ],
            );
        }
    }
    let snaps = crate::snapshot::list(&src.paths.snapshots).unwrap_or_default();
    metric(
        "msg_store_snapshots",
        "Database snapshots on disk.",
        "gauge",
        &one(snaps.len() as f64),
    );
    metric(
        "msg_store_snapshot_newest_time_seconds",
        "When the newest snapshot was taken (Unix time; 0 = none).",
        "gauge",
        &one(snaps.iter().map(|s| s.taken).max().unwrap_or(0) as f64),
    );
    let stamps: Vec<(String, f64)> = [STAMP_CHECKPOINT, STAMP_LOG_CLEANUP, STAMP_PERUSER]
        .iter()
        .filter_map(|n| {
            health::age_secs(&src.paths.stamp(n)).map(|a| (format!("{{stamp=\"{n}\"}}"), a as f64))
        })
        .collect();
    metric(
        "msg_store_stamp_age_seconds",
        "Age of each stamp file stored touches (table 20-12).",
        "gauge",
        &stamps,
    );
    let logs = health::db_logs(&src.paths);
    metric(
        "msg_store_db_log_files",
        "Database log files in mboxlist/.",
        "gauge",
        &one(logs.len() as f64),
    );
    metric(
        "msg_store_db_log_bytes",
        "Bytes of database log files in mboxlist/.",
        "gauge",
        &one(logs.iter().map(|(_, n)| *n as f64).sum()),
    );
    let mut free = Vec::new();
    let mut total = Vec::new();
    for (what, dir) in health::watched_dirs(&src.paths, &src.config, &src.root) {
        if let Ok(sp) = health::space(&what, &dir) {
            let l = format!(
                "{{what=\"{}\",path=\"{}\"}}",
                esc(&what),
                esc(&dir.display().to_string())
            );
            free.push((l.clone(), sp.free_bytes as f64));
            total.push((l, sp.total_bytes as f64));
        }
    }
    metric(
        "msg_store_fs_free_bytes",
        "Free bytes on the filesystem of each store directory.",
        "gauge",
        &free,
    );
    metric(
        "msg_store_fs_size_bytes",
        "Size of the filesystem of each store directory.",
        "gauge",
        &total,
    );
    let running: Vec<(String, f64)> = health::SERVICES
        .iter()
        .map(|s| {
            (
                format!("{{service=\"{s}\"}}"),
                f64::from(u8::from(
                    health::pid_alive(&src.paths.pid_file(s)).is_some(),
                )),
            )
        })
        .collect();
    metric(
        "msg_service_running",
        "1 when the service's pid file names a live process.",
        "gauge",
        &running,
    );
    metric(
        "msg_store_core_files",
        "Core files in the instance root.",
        "gauge",
        &one(health::core_files(&src.root).len() as f64),
    );
    o
}

async fn respond(mut s: TcpStream, src: Arc<Source>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await;
    let (status, body, ctype) = match complete {
        Ok(Ok(true)) => {
            let line = String::from_utf8_lossy(&head);
            let mut parts = line.lines().next().unwrap_or("").split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("GET"), Some(path), Some(v)) if v.starts_with("HTTP/1.") => {
                    if path == "/metrics" || path.starts_with("/metrics?") {
                        let src2 = src.clone();
                        let body = tokio::task::spawn_blocking(move || render(&src2))
                            .await
                            .unwrap_or_else(|_| String::new());
                        ("200 OK", body, "text/plain; version=0.0.4; charset=utf-8")
                    } else {
                        (
                            "404 Not Found",
                            "only /metrics is served\n".into(),
                            "text/plain",
                        )
                    }
                }
                (Some(_), Some(_), Some(v)) if v.starts_with("HTTP/1.") => (
                    "405 Method Not Allowed",
                    "only GET is served\n".into(),
                    "text/plain",
                ),
                _ => ("400 Bad Request", "bad request\n".into(), "text/plain"),
            }
        }
        Ok(Ok(false)) if head.len() > MAX_HEAD => (
            "431 Request Header Fields Too Large",
            "request head too large\n".into(),
            "text/plain",
        ),
        Ok(Ok(false)) | Ok(Err(_)) => return Ok(()),
        Err(_) => ("408 Request Timeout", "timeout\n".into(), "text/plain"),
    };
    let extra = if status.starts_with("405") {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

/// Serve until the listener fails; each connection on its own task.
pub async fn serve(listener: TcpListener, src: Arc<Source>) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let src = src.clone();
                tokio::spawn(async move {
                    let _ = respond(s, src).await;
                });
            }
            Err(e) => {
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
