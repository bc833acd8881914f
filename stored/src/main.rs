//! stored: the message store daemon.
//!
//! `stored --root DIR` analyses and, if needed, recovers the mailbox database, writes
//! `data/run/stored.ready` (and sends READY=1 to systemd) once the other services may start,
//! then runs the periodic work until SIGTERM or SIGINT. It logs to `data/log/default` in the
//! seed's format. A fatal start error (a bad msg.conf value, the group of `local.servergid`
//! missing when started as root, a database it cannot open) exits 1 with the message on
//! stderr and in the log, and the readiness file is never written.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use msgconf::registry::names;
use service_runtime::log::{self, LogSettings};
use stored::periodic::{self, inc, Stats};
use stored::recovery::{self, Resync};
use stored::{erase, metrics, ready, snapshot, Intervals, Paths};
use tracing::{debug, error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "stored",
    version,
    about = "The message store daemon: database recovery, snapshots, checkpoints, cleanup"
)]
struct Cli {
    /// Instance root holding config/ and data/ (default: $MSG_ROOT, else ./msg).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Seconds between snapshots, overriding local.store.snapshotinterval (minutes); for tests
    /// and drills.
    #[arg(long, value_name = "SECONDS")]
    snapshot_interval_secs: Option<u64>,
    /// Compare every folder with the database before readiness up to this many folders;
    /// beyond, a sample, and the full comparison in the background.
    #[arg(long, value_name = "FOLDERS", default_value_t = recovery::FULL_CHECK_LIMIT)]
    full_check_limit: u64,
    /// Analyse and recover the database, print what was found, and exit (no readiness, no
    /// periodic work): what the benchmark times.
    #[arg(long)]
    analyse_only: bool,
}

fn fatal(msg: &str) -> std::process::ExitCode {
    error!(severity = "Critical", "{msg}");
    eprintln!("stored: {msg}");
    std::process::ExitCode::FAILURE
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let root = service_runtime::instance_root(cli.root.clone());
    let config = match msgconf::Config::load(root.join("config").join("msg.conf")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stored: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let settings = LogSettings::from_config(&config, "default", "stored", &root);
    let (layer, log) = match log::open(&settings, log::system_clock()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("stored: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    log::install(layer);
    for w in config.warnings() {
        warn!("msg.conf: {w}");
    }
    let code = run(cli, root, config);
    log.flush(Duration::from_secs(2));
    code
}

fn run(cli: Cli, root: PathBuf, config: msgconf::Config) -> std::process::ExitCode {
    let paths = Paths::new(&root, &config);
    let mut iv = Intervals::from_config(&config);
    if let Some(s) = cli.snapshot_interval_secs {
        iv.snapshot = Duration::from_secs(s.max(1));
    }
    info!("stored starting on {}", root.display());

    // Bind before dropping privileges (the port may be privileged), as every service does.
    let metrics_port = u16::try_from(config.get_int(names::METRICS_PORT)).unwrap_or(0);
    let metrics_listener = if metrics_port > 0 && !cli.analyse_only {
        match std::net::TcpListener::bind(("127.0.0.1", metrics_port)) {
            Ok(l) => Some(l),
            Err(e) => {
                return fatal(&format!(
                    "cannot listen on 127.0.0.1:{metrics_port} for metrics ({}): {e}",
                    names::METRICS_PORT
                ))
            }
        }
    } else {
        None
    };
    if let Err(e) = drop_privileges(&root, &config) {
        return fatal(&e);
    }
    let _lock = match ready::InstanceLock::acquire(&paths.run) {
        Ok(l) => l,
        Err(e) => return fatal(&e),
    };
    let pid_file = paths.pid_file("stored");
    if let Err(e) =
        msgstore::fsutil::write_atomic(&pid_file, format!("{}\n", std::process::id()).as_bytes())
    {
        return fatal(&format!("cannot write {}: {e}", pid_file.display()));
    }
    let partitions = match msgstore::StoreConfig::load(&paths.layout) {
        Ok(c) => c.partitions,
        Err(e) => return fatal(&e.to_string()),
    };
    for p in partitions.values() {
        if let Err(e) = std::fs::create_dir_all(p) {
            return fatal(&format!("cannot create partition {}: {e}", p.display()));
        }
    }

    let stats = Arc::new(Stats::default());
    stats.started.store(stored::now_secs(), Ordering::Relaxed);
    let running = recovery::running_services(&paths);
    let (db, outcome) = match recovery::startup(&paths, &partitions, cli.full_check_limit, &running)
    {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&pid_file);
            return fatal(&e.to_string());
        }
    };
    stats
        .startup_millis
        .store(outcome.elapsed.as_millis() as u64, Ordering::Relaxed);
    if outcome.damage.is_some() || outcome.resync.is_some() || outcome.resynced.is_some() {
        inc(&stats.recoveries, 1);
    }
    if cli.analyse_only {
        let r = outcome.resync.clone().map(|why| {
            let t = Instant::now();
            let r = recovery::resync(&db, &partitions, since(&why), None);
            (r, t.elapsed())
        });
        println!(
            "analysis {} ms: damage {:?}, restored {:?}, rebuilt {}, resync {:?}{}",
            outcome.elapsed.as_millis(),
            outcome.damage,
            outcome.restored,
            outcome.rebuilt,
            outcome.resync,
            r.map(|(r, t)| format!(", resync {} ms ({} changes)", t.as_millis(), r.changes))
                .unwrap_or_default()
        );
        let _ = std::fs::remove_file(&pid_file);
        return std::process::ExitCode::SUCCESS;
    }

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("cannot start the async runtime: {e}")),
    };
    let conn = match periodic::open(&paths.db) {
        Ok(c) => Arc::new(Mutex::new(c)),
        Err(e) => return fatal(&format!("cannot open the mailbox database: {e}")),
    };
    // Handlers first: a SIGTERM right after readiness must stop stored cleanly.
    let (mut term, mut int) = {
        let _rt = rt.enter();
        (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        )
    };
    // Services already running (stored restarted alone) started before this one.
    let servers_started = running
        .iter()
        .map(|r| r.since)
        .min()
        .unwrap_or_else(std::time::SystemTime::now);
    let ready = match ready::Ready::signal(&paths.ready_file()) {
        Ok(r) => r,
        Err(e) => {
            return fatal(&format!(
                "cannot write {}: {e}",
                paths.ready_file().display()
            ))
        }
    };
    info!(
        "stored ready: mailbox database open, other services may start (pid {})",
        std::process::id()
    );

    let db = Arc::new(db);
    let partitions = Arc::new(partitions);
    rt.block_on(async {
        if let Some(l) = metrics_listener {
            let _ = l.set_nonblocking(true);
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    info!("metrics on http://127.0.0.1:{metrics_port}/metrics");
                    let src = Arc::new(metrics::Source {
                        root: root.clone(),
                        config: config.clone(),
                        paths: paths.clone(),
                        stats: stats.clone(),
                    });
                    tokio::spawn(metrics::serve(l, src));
                }
                Err(e) => warn!("metrics endpoint: {e}"),
            }
        }
        if let Some(why) = outcome.resync.clone() {
            stats.resync_pending.store(1, Ordering::Relaxed);
            let (db, partitions, stats) = (db.clone(), partitions.clone(), stats.clone());
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let r = recovery::resync(&db, &partitions, since(&why), Some(servers_started));
                recovery::log_resync_done(&r, t.elapsed());
                stats.resync_pending.store(0, Ordering::Relaxed);
            });
        }
        if outcome.full_check_pending {
            let (db, partitions) = (db.clone(), partitions.clone());
            tokio::task::spawn_blocking(move || {
                recovery::full_check(&db, &partitions, servers_started)
            });
        }
        spawn_jobs(&paths, &iv, conn.clone(), partitions.clone(), stats.clone());

        match (&mut term, &mut int) {
            (Ok(t), Ok(i)) => {
                tokio::select! {
                    _ = t.recv() => info!("stored: SIGTERM received, stopping"),
                    _ = i.recv() => info!("stored: SIGINT received, stopping"),
                }
            }
            _ => {
                error!("cannot install signal handlers; stopping");
            }
        }
    });
    let _ = ready::sd_notify("STOPPING=1");
    drop(ready);
    {
        let c = conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = periodic::checkpoint(&c, "PASSIVE") {
            warn!("final checkpoint failed: {e}");
        }
    }
    let _ = std::fs::remove_file(&pid_file);
    info!("stored stopped");
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::ExitCode::SUCCESS
}

/// The services' policy (service-runtime's `Runtime::drop_privileges`): started as root with
/// `local.serveruid` or `local.servergid` set, switch to them, refusing a store the server user
/// does not own; with neither set, stay root and say so; not root, nothing to do.
fn drop_privileges(root: &std::path::Path, config: &msgconf::Config) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    if !config.is_set(names::SERVER_UID) && !config.is_set(names::SERVER_GID) {
        warn!(
            "running as root: set {} and {} in msg.conf to run as an unprivileged user",
            names::SERVER_UID,
            names::SERVER_GID
        );
        return Ok(());
    }
    let user = config.get_str(names::SERVER_UID);
    let group = config.get_str(names::SERVER_GID);
    let detail = |e: service_runtime::PrivilegeError| match e.detail() {
        Some(d) => format!("{e} ({d})"),
        None => e.to_string(),
    };
    let (Some(uid), true) = (lookup_uid(&user), group_exists(&group)) else {
        return service_runtime::drop_privileges(config)
            .map(drop)
            .map_err(detail);
    };
    let store = root.join("data").join("store");
    if let Ok(m) = std::fs::metadata(&store) {
        if m.uid() != uid {
            return Err(format!(
                "Fatal error: the store {} is owned by uid {}, not by {user}: run chown -R {user}:{group} {}",
                store.display(),
                m.uid(),
                store.display()
            ));
        }
    }
    // data/, the log directory and the default log (made by this process, as root, a moment
    // ago) go to the server user, who must write and rotate them; as the services do.
    let log = config.get_path(
        &msgconf::names::logfile("default", "logdir"),
        root.join("data"),
    );
    for p in [root.join("data"), log.clone(), log.join("default")] {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.uid() == 0) {
            if let Err(e) = std::os::unix::fs::lchown(&p, Some(uid), None) {
                warn!("cannot give {} to {user}: {e}", p.display());
            }
        }
    }
    service_runtime::drop_privileges(config)
        .map(drop)
        .map_err(detail)
}

/// The uid of a user name (or a numeric uid). Called before any thread that could race the
/// name service's static buffer exists.
fn lookup_uid(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let p = unsafe { libc::getpwnam(c.as_ptr()) };
    (!p.is_null()).then(|| unsafe { (*p).pw_uid })
}

fn group_exists(name: &str) -> bool {
    if name.parse::<u32>().is_ok() {
        return true;
    }
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: getgrnam with a valid C string.
    !unsafe { libc::getgrnam(c.as_ptr()) }.is_null()
}

/// The time after which per-user write-outs are newer than the database.
fn since(why: &Resync) -> Option<i64> {
    match why {
        Resync::FromSnapshot { taken } => Some(*taken),
        // The database is current but for what the log or the disagreement lost: per-user
        // files are only newer when written after the last checkpoint; leave them.
        Resync::LogRemoved | Resync::Disagreement { .. } => Some(i64::MAX),
    }
}

type Conn = Arc<Mutex<rusqlite::Connection>>;

fn lock(c: &Conn) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

fn every<F>(name: &'static str, period: Duration, f: F)
where
    F: Fn() + Send + Sync + 'static,
{
    let f = Arc::new(f);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let f = f.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || f()).await {
                error!("{name} job failed: {e}");
            }
        }
    });
}

fn spawn_jobs(
    paths: &Paths,
    iv: &Intervals,
    conn: Conn,
    partitions: Arc<std::collections::BTreeMap<String, PathBuf>>,
    stats: Arc<Stats>,
) {
    {
        let (conn, stats, stamp) = (
            conn.clone(),
            stats.clone(),
            paths.stamp(stored::STAMP_CHECKPOINT),
        );
        every("checkpoint", iv.checkpoint, move || {
            let _ = stored::touch(&stamp);
            match periodic::checkpoint(&lock(&conn), "PASSIVE") {
                Ok((busy, log, done)) => {
                    inc(&stats.checkpoints, 1);
                    debug!("checkpoint: {done} of {log} log frames copied (busy {busy})");
                }
                Err(e) => {
                    inc(&stats.checkpoint_failures, 1);
                    warn!(facility = "Store", "Database checkpoint failed: {e}");
                }
            }
        });
    }
    {
        let (conn, stats, stamp) = (
            conn.clone(),
            stats.clone(),
            paths.stamp(stored::STAMP_LOG_CLEANUP),
        );
        every("log cleanup", iv.log_cleanup, move || {
            let _ = stored::touch(&stamp);
            let c = lock(&conn);
            // TRUNCATE waits for readers while holding off writers: wait briefly, and leave
            // the log for the next cleanup rather than stall deliveries.
            let _ = c.busy_timeout(Duration::from_millis(100));
            let r = periodic::checkpoint(&c, "TRUNCATE");
            let _ = c.busy_timeout(Duration::from_secs(5));
            drop(c);
            match r {
                Ok((0, _, _)) => inc(&stats.log_cleanups, 1),
                // Readers still in the log: the next cleanup empties it.
                Ok(_) => debug!("log cleanup: readers active, log kept"),
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                    debug!("log cleanup: database busy, log kept")
                }
                Err(e) => warn!(facility = "Store", "Database log cleanup failed: {e}"),
            }
        });
    }
    {
        let (conn, stats, stamp, parts) = (
            conn.clone(),
            stats.clone(),
            paths.stamp(stored::STAMP_PERUSER),
            partitions.clone(),
        );
        every("per-user write-out", iv.peruser, move || {
            let _ = stored::touch(&stamp);
            match periodic::write_peruser(&lock(&conn), &parts) {
                Ok(n) => {
                    inc(&stats.peruser_writeouts, 1);
                    if n > 0 {
                        debug!("per-user data written out for {n} user(s)");
                    }
                }
                Err(e) => warn!(facility = "Store", "Per-user data write-out failed: {e}"),
            }
        });
    }
    if let Some(period) = iv.reconstruct_check {
        // reconstruct -r -n reads every folder: on its own schedule (first a minute after
        // startup, or sooner on a short interval), never per scrape.
        let (stats, root) = (stats.clone(), paths.layout.root.clone());
        tokio::spawn(async move {
            tokio::time::sleep(period.min(Duration::from_secs(60))).await;
            loop {
                let root = root.clone();
                let t = Instant::now();
                let r =
                    tokio::task::spawn_blocking(move || stored::health::run_folder_check(&root))
                        .await;
                let result = match r {
                    Ok(Ok(c)) => {
                        if c.code != 0 {
                            warn!(
                                facility = "Store",
                                "Periodic folder check: {}; first: {}; run reconstruct -r",
                                c.summary,
                                c.first.as_deref().unwrap_or("")
                            );
                        }
                        Some(c)
                    }
                    Ok(Err(e)) => {
                        warn!(
                            facility = "Store",
                            "Periodic folder check could not run: {e}"
                        );
                        None
                    }
                    Err(e) => {
                        error!("folder check job failed: {e}");
                        None
                    }
                };
                *stats.folder_check.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(periodic::FolderCheckStat {
                        at: stored::now_secs(),
                        millis: t.elapsed().as_millis() as u64,
                        result,
                    });
                tokio::time::sleep(period).await;
            }
        });
    }
    {
        // Aging policies once a day at store.expirestart (local time), looked for at every
        // erase pass but at least once a minute so the hour is not missed; a rule file that
        // does not parse is tried again within the hour.
        let (config_dir, root) = (paths.layout.config_dir(), paths.layout.root.clone());
        let start = iv.expire_start;
        let last_day = Mutex::new(None::<i64>);
        info!(
            facility = "Store",
            "Aging policies (config/store.expirerule) run daily at {start:02}:00 local time (store.expirestart)"
        );
        every("aging", iv.erase.min(Duration::from_secs(60)), move || {
            let now = stored::now_secs();
            let mut last = last_day.lock().unwrap_or_else(|p| p.into_inner());
            if !stored::aging::due(now, start, *last) {
                return;
            }
            match stored::aging::load(&config_dir) {
                Ok(rules) if rules.is_empty() => {}
                Ok(rules) => match msgstore::Store::open(&root) {
                    Ok(store) => {
                        let (o, errors) = stored::aging::run(&store, &rules, now);
                        info!(
                            facility = "Store",
                            "Aging policies expunged {} message(s), {} bytes, in {} folder(s)",
                            o.expunged,
                            o.bytes,
                            o.folders
                        );
                        for e in errors.iter().take(10) {
                            warn!(facility = "Store", "Aging policies: {e}");
                        }
                    }
                    Err(e) => {
                        error!(
                            facility = "Store",
                            "Aging policies: cannot open the store: {e}"
                        );
                        return;
                    }
                },
                Err(e) => {
                    error!(facility = "Store", "Aging policies not applied: {e}");
                    return;
                }
            }
            *last = Some(stored::aging::local_hour_and_day(now).1);
        });
    }
    {
        let (stats, parts) = (stats.clone(), partitions.clone());
        let grace = iv.expunge_grace.as_secs() as i64;
        every("erase", iv.erase, move || {
            let (o, errors) = erase::erase_all(&parts, grace);
            inc(&stats.erased_messages, o.erased as u64);
            inc(&stats.erased_bytes, o.bytes);
            if o.erased > 0 {
                info!(
                    facility = "Store",
                    "Erased {} expunged message file(s), {} bytes, in {} folder(s); {} wait for the grace period",
                    o.erased, o.bytes, o.folders, o.pending
                );
            }
            for e in errors.iter().take(10) {
                warn!(facility = "Store", "Cannot erase expunged messages in {e}");
            }
        });
    }
    {
        let (db, dir, keep, period) = (
            paths.db.clone(),
            paths.snapshots.clone(),
            iv.snapshots_kept,
            iv.snapshot,
        );
        tokio::spawn(async move {
            let newest = snapshot::list(&dir)
                .ok()
                .and_then(|l| l.iter().map(|s| s.taken).max())
                .unwrap_or(0);
            let age = (stored::now_secs() - newest).max(0) as u64;
            let mut wait = period.saturating_sub(Duration::from_secs(age));
            loop {
                tokio::time::sleep(wait).await;
                let (db, dir) = (db.clone(), dir.clone());
                let t = Instant::now();
                let r = tokio::task::spawn_blocking(move || snapshot::take(&db, &dir, keep)).await;
                match r {
                    Ok(Ok(s)) => {
                        inc(&stats.snapshots, 1);
                        stats.last_snapshot.store(s.taken, Ordering::Relaxed);
                        info!(
                            facility = "Store",
                            "Snapshot {} taken and verified in {} ms ({} kept)",
                            s.name,
                            t.elapsed().as_millis(),
                            keep
                        );
                        wait = period;
                    }
                    Ok(Err(e)) => {
                        inc(&stats.snapshot_failures, 1);
                        error!(
                            facility = "Store",
                            "Snapshot failed: {e}; the earlier snapshots are kept"
                        );
                        // Retry sooner than a whole interval: a full disk may be freed.
                        wait = period.min(Duration::from_secs(600));
                    }
                    Err(e) => {
                        inc(&stats.snapshot_failures, 1);
                        error!(facility = "Store", "Snapshot job failed: {e}");
                        wait = period;
                    }
                }
            }
        });
    }
}
