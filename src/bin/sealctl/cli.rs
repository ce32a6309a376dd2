//! sealctl's command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sealctl",
    version,
    about = "Seal secrets into bundles for sealinit, and inspect them",
    after_help = "Exit status: 0 success, 64 usage, 65 bad input data or bundle, \
66 input missing or unreadable, 71 OS failure, 73 output cannot be created."
)]
pub struct Cli {
    /// error|warn|info|debug|trace|off, to stderr
    #[arg(long, global = true, env = "SEALCTL_LOG", default_value = "warn", value_parser = parse_level)]
    pub log_level: tracing::level_filters::LevelFilter,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a 32-byte key from the OS CSPRNG into a new 0600 file
    Keygen {
        /// Where to write the key; must not exist yet
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
    /// Seal secrets from a dotenv or JSON file into a bundle
    Seal(SealArgs),
    /// Print a bundle's header; with --key, verify it and list names and sizes
    Inspect {
        /// The bundle
        path: PathBuf,
        /// Key to verify the bundle with (values are never printed)
        #[arg(long, value_name = "PATH")]
        key: Option<PathBuf>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["from_env_file", "from_json"])))]
pub struct SealArgs {
    /// The 32-byte key file (from `sealctl keygen`)
    #[arg(long, value_name = "PATH")]
    pub key: PathBuf,
    /// Where to write the bundle (replaced atomically, mode 0600)
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Secrets in dotenv syntax (NAME=value lines)
    #[arg(long, value_name = "FILE")]
    pub from_env_file: Option<PathBuf>,
    /// Secrets as a JSON object of string values
    #[arg(long, value_name = "FILE")]
    pub from_json: Option<PathBuf>,
    /// Free text bound into the bundle, e.g. the repository owner/name
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Allow a name that changes how programs load code (LD_*, BASH_ENV,
    /// ENV, NODE_OPTIONS, ...); repeatable
    #[arg(long, value_name = "NAME")]
    pub allow_name: Vec<String>,
    /// Lifetime: the bundle is refused after it (30s, 15m, 2h, 7d)
    #[arg(long, value_name = "DURATION", value_parser = sealinit::time::parse_duration)]
    pub ttl: Option<Duration>,
}

fn parse_level(s: &str) -> Result<tracing::level_filters::LevelFilter, String> {
    sealinit::logging::parse_level(s)
        .ok_or_else(|| format!("{s:?} is not one of error, warn, info, debug, trace, off"))
}
