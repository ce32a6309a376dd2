//! sealctl's command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sealctl",
    version,
    about = "Seal secrets into bundles for sealinit, keep them in an encrypted store, run commands with them",
    after_help = "Exit status: 0 success, 64 usage, 65 bad input data, bundle or key, \
66 input missing or unreadable, 71 OS failure, 73 output cannot be created, 74 store failure; \
`run` exits with the command's status."
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
    /// Seal secrets from a dotenv or JSON file, or from the store, into a bundle
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
    /// Create or re-key the encrypted secret store
    #[command(subcommand)]
    Store(StoreCommand),
    /// Add, list and remove a repository's secrets
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// List repositories with their number of secrets
    Repos {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Run COMMAND under sealinit with a repository's secrets (fresh key, one-use bundle)
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store database [default: $XDG_DATA_HOME/sealinit/store.db]
    #[arg(long, value_name = "PATH", env = "SEALCTL_STORE")]
    pub store: Option<PathBuf>,
    /// The master key file (32 bytes, mode 0600)
    #[arg(
        long,
        value_name = "PATH",
        env = "SEALCTL_MASTER_KEY",
        conflicts_with = "master_key_fd"
    )]
    pub master_key: Option<PathBuf>,
    /// Read the master key from this inherited descriptor instead
    #[arg(long, value_name = "N", env = "SEALCTL_MASTER_KEY_FD")]
    pub master_key_fd: Option<i32>,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create the store database and a new master key file (refuses to overwrite either)
    Init {
        #[arg(long, value_name = "PATH", env = "SEALCTL_STORE")]
        store: Option<PathBuf>,
        /// Where to create the master key; must not exist yet
        #[arg(long, value_name = "PATH", env = "SEALCTL_MASTER_KEY")]
        master_key: PathBuf,
    },
    /// Re-encrypt every value under a new master key, in one transaction
    RotateMasterKey {
        #[command(flatten)]
        store: StoreArgs,
        /// Where to create the new master key; must not exist yet
        #[arg(long, value_name = "PATH")]
        new: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set NAME from stdin (never argv), or many from --from-env-file (all or nothing)
    Set {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_name = "OWNER/NAME")]
        repo: String,
        /// The secret's name; its value is read from stdin (one trailing newline is dropped)
        #[arg(
            required_unless_present = "from_env_file",
            conflicts_with = "from_env_file"
        )]
        name: Option<String>,
        /// Import every NAME=value of a dotenv file
        #[arg(long, value_name = "FILE")]
        from_env_file: Option<PathBuf>,
    },
    /// List names, sizes and update times; never values
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_name = "OWNER/NAME")]
        repo: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove secrets (all or nothing)
    Rm {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_name = "OWNER/NAME")]
        repo: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["from_env_file", "from_json", "repo"])))]
pub struct SealArgs {
    /// The 32-byte key file (from `sealctl keygen`); not with --repo
    #[arg(long, value_name = "PATH", conflicts_with = "repo")]
    pub key: Option<PathBuf>,
    /// Where to write the bundle (replaced atomically, mode 0600)
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Secrets in dotenv syntax (NAME=value lines)
    #[arg(long, value_name = "FILE")]
    pub from_env_file: Option<PathBuf>,
    /// Secrets as a JSON object of string values
    #[arg(long, value_name = "FILE")]
    pub from_json: Option<PathBuf>,
    /// Seal a repository's secrets from the store, under a fresh key
    #[arg(long, value_name = "OWNER/NAME", requires = "key_out")]
    pub repo: Option<String>,
    /// With --repo: where to write the fresh key (new file, mode 0600)
    #[arg(long, value_name = "PATH", requires = "repo")]
    pub key_out: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Free text bound into the bundle, e.g. the repository (default with --repo: the repository)
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Allow a name that changes how programs load code (LD_*, BASH_ENV,
    /// ENV, NODE_OPTIONS, ...); repeatable
    #[arg(long, value_name = "NAME")]
    pub allow_name: Vec<String>,
    /// Lifetime: the bundle is refused after it (30s, 15m, 2h, 7d)
    #[arg(long, value_name = "DURATION", value_parser = sealinit_core::time::parse_duration)]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: String,
    /// Run sealinit as PID 1 of a new PID namespace
    #[arg(long)]
    pub pid_namespace: bool,
    /// The sealinit binary [default: next to sealctl, else on PATH]
    #[arg(long, value_name = "PATH")]
    pub sealinit: Option<PathBuf>,
    /// Lifetime of the one-use bundle
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = sealinit_core::time::parse_duration)]
    pub ttl: Duration,
    /// Allow a code-loading name (see `seal --allow-name`); repeatable
    #[arg(long, value_name = "NAME")]
    pub allow_name: Vec<String>,
    /// An option for sealinit, e.g. --sealinit-arg=--grace=3 (repeatable)
    #[arg(long = "sealinit-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub sealinit_args: Vec<OsString>,
    /// The command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

fn parse_level(s: &str) -> Result<tracing::level_filters::LevelFilter, String> {
    sealinit::logging::parse_level(s)
        .ok_or_else(|| format!("{s:?} is not one of error, warn, info, debug, trace, off"))
}
