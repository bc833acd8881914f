//! configutil: read and write config/msg.conf parameters with type and range checks.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use msg_admin::{instance_root, parse_args, run, usage_error};
use msgconf::Config;

/// List, read and set configuration parameters (config/msg.conf).
///
///   configutil                         list every parameter and its value
///   configutil -o NAME                 print one value
///   configutil -o NAME -v VALUE        set it (checked against its type and range)
///   configutil -o NAME -v ""           remove it from msg.conf (back to the default)
///   configutil -H -o NAME              describe a parameter
#[derive(Parser)]
#[command(
    name = "configutil",
    version,
    after_help = "Exit status: 0 success, 1 failure (including an invalid value), 64 usage error."
)]
struct Cli {
    /// Instance root holding config/ and data/ (default: $MSG_ROOT, else ./msg).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The parameter.
    #[arg(short = 'o', value_name = "NAME")]
    option: Option<String>,
    /// The new value (with -o).
    #[arg(
        short = 'v',
        value_name = "VALUE",
        requires = "option",
        allow_hyphen_values = true
    )]
    value: Option<String>,
    /// Describe the parameter named with -o: type, valid range, default.
    #[arg(short = 'H', requires = "option")]
    describe: bool,
}

fn main() {
    let cli: Cli = parse_args();
    let root = instance_root(cli.root.clone());
    let path = root.join("config").join("msg.conf");
    if cli.describe && cli.value.is_some() {
        usage_error("configutil", "-H and -v cannot be used together");
    }
    run("configutil", || {
        let mut conf =
            Config::load(&path).with_context(|| format!("cannot read {}", path.display()))?;
        for w in conf.warnings() {
            eprintln!("configutil: warning: {w}");
        }
        match (&cli.option, &cli.value) {
            (None, _) => {
                for (name, value, is_default) in conf.list() {
                    if is_default {
                        println!("{name} = {value}    # default");
                    } else {
                        println!("{name} = {value}");
                    }
                }
            }
            (Some(name), None) if cli.describe => match conf.describe(name) {
                Some(d) => println!("{d}"),
                None => anyhow::bail!("unknown parameter {name}"),
            },
            (Some(name), None) => println!("{}", conf.get(name)?),
            (Some(name), Some(v)) if v.is_empty() => {
                if conf.unset(name) {
                    conf.save(&path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
            }
            (Some(name), Some(v)) => {
                conf.set(name, v)?;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                conf.save(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        Ok(())
    });
}
