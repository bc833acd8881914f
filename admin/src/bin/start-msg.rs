//! start-msg: start the message store's services, stored first, as the seed's start-msg does.
//!
//! On first run it prepares the instance (configuration, data directories, a first user with
//! their folders). Then it starts `stored` and waits for its readiness file: if stored does
//! not come up, nothing else starts and start-msg exits 1 with stored's message (for example
//! "Fatal error: Cannot find group in name service"). Then the mailbox database is used to
//! provision users, and `imapd`, `popd`, `mshttpd` and `lmtpd` are started, each whose binary
//! is installed next to start-msg, on the ports of msg.conf. Each service gets a pid file
//! `data/run/<service>.pid` and its output in `data/run/<service>.out`; `stop-msg` stops them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use msg_admin::{instance_root, parse_args, run};
use msgconf::registry::names;
use msgstore::{Store, UserName};
use stored::control;
use userdb::{Secret, UserDb};

/// Prepare the instance at the root directory and start its services (stored first).
#[derive(Parser)]
#[command(
    name = "start-msg",
    version,
    after_help = "Exit status: 0 every installed service is running, 1 failure, 64 usage error."
)]
struct Cli {
    /// Instance root holding config/ and data/ (default: $MSG_ROOT, else ./msg).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The first user to create when there is none yet.
    #[arg(long, default_value = "admin", value_name = "USERID")]
    user: String,
    /// Read the first user's password from this file (default: generate one and print it).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Only prepare the instance (configuration, directories, database, first user) and
    /// start nothing: for scripts and tests that run the services themselves.
    #[arg(long)]
    prepare_only: bool,
    /// Seconds to wait for stored's startup analysis and recovery.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    stored_timeout: u64,
}

fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A new msg.conf. Without root the standard ports below 1024 cannot be bound, so the
/// services get unprivileged ones.
fn new_config(root_user: bool) -> String {
    let mut s = String::from(
        "# Message store configuration: manage with configutil (configutil -o NAME -v VALUE).\n\
         # Every parameter not set here has its default; `configutil` lists them all.\n",
    );
    if !root_user {
        s.push_str(
            "# Not started as root: unprivileged ports instead of 143, 110, 993, 995 and 24.\n\
             service.imap.port = 1143\n\
             service.imap.sslport = 1993\n\
             service.pop.port = 1110\n\
             service.pop.sslport = 1995\n\
             service.lmtp.port = 2424\n",
        );
    }
    s
}

/// The directory holding this program, where the other binaries are installed.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the start-msg executable")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Start stored and wait for its readiness file; on failure, its own words.
fn start_stored(
    bin: &Path,
    root: &Path,
    run_dir: &Path,
    timeout: Duration,
) -> anyhow::Result<String> {
    let pid_file = run_dir.join("stored.pid");
    let ready = run_dir.join("stored.ready");
    if let Some(pid) = control::running(&pid_file, "stored") {
        // Running, perhaps still analysing the database: wait for it, never start a second.
        let t = Instant::now();
        while !ready.exists() {
            if !control::alive(pid) {
                bail!("stored (pid {pid}) stopped before it was ready; nothing else is started");
            }
            if t.elapsed() > timeout {
                bail!(
                    "stored (pid {pid}) is not ready after {} s; nothing else is started",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        return Ok(format!("already running (pid {pid})"));
    }
    let exe = bin.join("stored");
    if !exe.exists() {
        bail!(
            "{} is not installed: nothing can start without stored",
            exe.display()
        );
    }
    // A readiness file left by a stored that was killed says nothing about the new one.
    let _ = std::fs::remove_file(&ready);
    let out = control::out_file(run_dir, "stored");
    let from = file_len(&out);
    let mut child = control::spawn(&exe, &["--root".into(), root.display().to_string()], &out)
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let pid = child.id() as i32;
    let t = Instant::now();
    loop {
        if std::fs::read_to_string(&ready).is_ok_and(|s| s.trim() == pid.to_string()) {
            std::fs::write(&pid_file, format!("{pid}\n"))
                .with_context(|| format!("cannot write {}", pid_file.display()))?;
            return Ok(format!(
                "running (pid {pid}), ready in {} ms",
                t.elapsed().as_millis()
            ));
        }
        if let Some(status) = child.try_wait().context("waiting for stored")? {
            bail!(
                "stored did not start ({status}); nothing else is started:\n{}",
                control::tail(&out, from, 10)
            );
        }
        if t.elapsed() > timeout {
            bail!(
                "stored is not ready after {} s (still analysing the database?); nothing else is started. See the default log and {}",
                timeout.as_secs(),
                out.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How one front end's start went.
enum Started {
    Running(String),
    AlreadyRunning(i32),
    NotInstalled(PathBuf),
    Failed(String),
}

fn start_service(
    bin: &Path,
    svc: &str,
    root: &Path,
    run_dir: &Path,
    config: &msgconf::Config,
) -> Started {
    let pid_file = run_dir.join(format!("{svc}.pid"));
    if let Some(pid) = control::running(&pid_file, svc) {
        return Started::AlreadyRunning(pid);
    }
    let exe = bin.join(svc);
    if !exe.exists() {
        return Started::NotInstalled(exe);
    }
    let mut args = vec!["--root".to_owned(), root.display().to_string()];
    if svc == "lmtpd" {
        // lmtpd's own default is port 24; msg.conf decides here. LMTP is for the local MTA.
        args.push("--listen".into());
        args.push(format!("127.0.0.1:{}", config.get_int(names::LMTP_PORT)));
    }
    let out = control::out_file(run_dir, svc);
    let from = file_len(&out);
    let mut child = match control::spawn(&exe, &args, &out) {
        Ok(c) => c,
        Err(e) => return Started::Failed(format!("cannot start {}: {e}", exe.display())),
    };
    let pid = child.id() as i32;
    if let Err(e) = std::fs::write(&pid_file, format!("{pid}\n")) {
        return Started::Failed(format!("cannot write {}: {e}", pid_file.display()));
    }
    let t = Instant::now();
    loop {
        let lines = control::listening_lines(&out, from);
        if !lines.is_empty() {
            return Started::Running(format!("running (pid {pid}) on {}", lines.join(", ")));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let _ = std::fs::remove_file(&pid_file);
            return Started::Failed(format!(
                "exited ({status}): {}",
                control::tail(&out, from, 5)
            ));
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Started::Running(format!(
                "started (pid {pid}) but has not said where it listens after 30 s; see {}",
                out.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let cli: Cli = parse_args();
    let root = instance_root(cli.root.clone());
    run("start-msg", || {
        let config_dir = root.join("config");
        std::fs::create_dir_all(&config_dir)
            .with_context(|| format!("cannot create {}", config_dir.display()))?;
        let conf_path = config_dir.join("msg.conf");
        if !conf_path.exists() {
            std::fs::write(&conf_path, new_config(is_root()))
                .with_context(|| format!("cannot write {}", conf_path.display()))?;
        }
        // A bad value stops startup with a message naming the parameter, value and range.
        let conf = msgconf::Config::load(&conf_path)
            .with_context(|| format!("invalid configuration in {}", conf_path.display()))?;
        for w in conf.warnings() {
            eprintln!("start-msg: warning: {w}");
        }
        let layout = msgstore::layout::Layout::new(&root);
        let run_dir = layout.data_dir().join("run");
        for d in [layout.log_dir(), layout.telemetry_dir(), run_dir.clone()] {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
        let root_abs = std::fs::canonicalize(&root).unwrap_or(root.clone());
        let bin = bin_dir()?;

        // stored first: it checks and, if need be, repairs the database before anyone opens it.
        let stored_state = if cli.prepare_only {
            "not started (--prepare-only)".to_owned()
        } else {
            start_stored(
                &bin,
                &root_abs,
                &run_dir,
                Duration::from_secs(cli.stored_timeout),
            )?
        };

        let store = Store::open(&root)
            .with_context(|| format!("cannot open the store at {}", root.display()))?;
        if cli.prepare_only {
            // Without stored's analysis, at least refuse a database that fails its check.
            store
                .db()
                .quick_check()
                .context("mailbox database check failed (start stored to recover it)")?;
        }
        let users = UserDb::open(layout.passwd_file()).context("cannot open the user database")?;
        let mut created = None;
        if users.list()?.is_empty() {
            let password = match &cli.password_file {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
                None => random_password()?,
            };
            users.add(&cli.user, &Secret::new(password.clone()))?;
            created = Some((cli.user.clone(), password, cli.password_file.is_none()));
        }
        let mut provisioned = 0;
        for u in users.list()? {
            let name = UserName::new(u.as_str())?;
            provisioned += store.provision_user(&name)?.len();
        }
        let db_path = store.db().path().to_path_buf();
        let partitions = store.config().partitions;
        drop(store);

        let mut failed = 0;
        let mut states = vec![("stored", stored_state)];
        for svc in &control::SERVICES[1..] {
            if cli.prepare_only {
                states.push((svc, "not started (--prepare-only)".to_owned()));
                continue;
            }
            let text = match start_service(&bin, svc, &root_abs, &run_dir, &conf) {
                Started::Running(s) => s,
                Started::AlreadyRunning(pid) => format!("already running (pid {pid})"),
                Started::NotInstalled(p) => format!("not installed ({} not found)", p.display()),
                Started::Failed(why) => {
                    failed += 1;
                    format!("FAILED: {why}")
                }
            };
            states.push((svc, text));
        }

        println!("Message store at {}", root_abs.display());
        println!("  configuration   {}", conf_path.display());
        println!("  mailbox db      {}", db_path.display());
        for (name, path) in &partitions {
            println!("  partition {name:<6} {}", path.display());
        }
        println!(
            "  users           {} ({} folders created now)",
            users.list()?.len(),
            provisioned
        );
        println!("Services:");
        for (svc, state) in &states {
            println!("  {svc:<8} {state}");
        }
        if let Some((user, password, generated)) = created {
            if generated {
                println!("\nFirst user created: {user}, password: {password}");
                println!(
                    "(shown once; change it with: msuser --root {} passwd {user})",
                    root_abs.display()
                );
            } else {
                println!("\nFirst user created: {user}");
            }
        }
        println!("\nNext steps:");
        println!(
            "  msuser --root {} add <userid>     add a user (password on stdin)",
            root_abs.display()
        );
        println!(
            "  msgcheck --root {}                check the store's health",
            root_abs.display()
        );
        println!(
            "  stop-msg --root {}                stop every service, stored last",
            root_abs.display()
        );
        if failed > 0 {
            bail!("{failed} service(s) failed to start (see above and data/run/*.out)");
        }
        Ok(())
    });
}
