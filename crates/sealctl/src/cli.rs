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
66 input missing or unreadable (or an empty repository), 71 OS failure, 73 output cannot be \
created, 74 store failure, 75 --if-version conflict; `run` exits with the command's status.\n\
Where a flag and an environment variable both say where something comes from, the flag wins."
)]
pub struct Cli {
    /// error|warn|info|debug|trace|off, to stderr
    #[arg(long, global = true, env = "SEALCTL_LOG", default_value = "warn", value_parser = parse_level)]
    pub log_level: tracing::level_filters::LevelFilter,

    /// Work against the secrets service at URL instead of a local store
    /// (secrets, repos, seal --repo, run, audit); several URLs
    /// (comma-separated or repeated) are instances of one service, tried in
    /// order when one cannot be reached or answers 503
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "SEALCTL_SERVER",
        value_delimiter = ','
    )]
    pub server: Vec<String>,
    /// The service token, from this file [default: $SEALCTL_TOKEN]
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Trust this PEM CA for the service's certificate instead of the web's roots
    #[arg(long, global = true, value_name = "PATH")]
    pub server_ca: Option<PathBuf>,

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
    /// List repositories with their number of secrets, create or remove one
    Repos {
        #[command(subcommand)]
        command: Option<ReposCommand>,
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// The egress proxy for one launch's proxy part (`seal --proxy-out`):
    /// its placeholders become values only in HTTPS requests to their hosts
    Proxy(sealctl::proxy::ProxyOptions),
    /// Run COMMAND under sealinit with a repository's secrets (fresh key, per-launch bundle)
    Run(RunArgs),
    /// Print the audit trail: every change and every seal, never a value;
    /// `audit export` and `audit prune` keep it bounded
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        action: Option<AuditCommand>,
        #[command(flatten)]
        store: StoreArgs,
        /// Only this repository
        #[arg(long, value_name = "OWNER/NAME")]
        repo: Option<String>,
        /// Only records since: Unix seconds, or a duration ago (30m, 2h, 7d)
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only one launch's records: its seal and its requests through the
        /// egress proxy (the launch's label)
        #[arg(long, value_name = "LABEL")]
        launch: Option<String>,
        /// JSON lines, for export
        #[arg(long)]
        json: bool,
    },
    /// Serve the secrets API and the Secrets page over HTTP
    Serve(ServeArgs),
    /// Create, list and revoke the service's API tokens
    #[command(subcommand)]
    Tokens(TokensCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// ADDRESS:PORT or unix:/path
    #[arg(
        long,
        value_name = "ADDR",
        env = "SEALCTL_LISTEN",
        default_value = "127.0.0.1:8700"
    )]
    pub listen: String,
    /// PEM certificate chain (reloaded on SIGHUP)
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (reloaded on SIGHUP)
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (behind a TLS proxy)
    #[arg(long)]
    pub insecure_no_tls: bool,
    /// Proxies in front of this server whose Forwarded / X-Forwarded-For /
    /// X-Forwarded-Proto headers are believed (client address for the
    /// limiter; https for secure cookies): CIDR blocks or addresses,
    /// comma-separated or repeated, or `unix` for the Unix socket's peers
    #[arg(long, value_name = "CIDR", num_args = 1..)]
    pub trusted_proxy: Vec<String>,
    /// human or json
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,
    /// Open store connections (requests served against the database at once)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: u16,
    /// Longest a request may take
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = sealinit_core::time::parse_duration)]
    pub request_timeout: Duration,
    /// Print a one-time link that signs one browser in to the Secrets page
    /// as admin (within 15 minutes of the start)
    #[arg(long)]
    pub login_link: bool,
    /// The longest lifetime a minted bundle may have (a bundle opens for
    /// whoever holds it and its key until it expires)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = sealinit_core::time::parse_duration)]
    pub max_bundle_ttl: Duration,
    /// On SIGTERM, how long requests in flight may still take
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = sealinit_core::time::parse_duration)]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write audit records as JSON lines to stdout (`> audit.ndjson`), and
    /// remember how far the trail is exported, for `audit prune`
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// Only records at or after: RFC 3339, Unix seconds, or a duration
        /// ago (7d)
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only records before: RFC 3339, Unix seconds, or a duration ago
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
    },
    /// Delete the audit records before a time; refused for records no
    /// `audit export` has written out, unless --force
    Prune {
        #[command(flatten)]
        store: StoreArgs,
        /// RFC 3339, Unix seconds, or a duration ago (90d)
        #[arg(long, value_name = "WHEN")]
        before: String,
        /// Prune even what was never exported
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; it is printed once, alone on stdout
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// What the token is for (shown in the audit trail)
        #[arg(long, value_name = "NAME")]
        name: String,
        /// admin, or ACTION:PATTERN (write:acme/*, launch:acme/api, audit:*); repeatable
        #[arg(long, value_name = "SCOPE", required = true)]
        scope: Vec<String>,
        /// Expire after this long (30d, 12h); default: never
        #[arg(long, value_name = "DURATION", value_parser = sealinit_core::time::parse_duration)]
        ttl: Option<Duration>,
        /// The token may name the person it acts for (a web app writing
        /// for its users) with the X-Sealinit-Actor header; the audit trail
        /// then records "PERSON via token NAME (ID)"
        #[arg(long)]
        may_act_for: bool,
    },
    /// List tokens: id, name, scopes, created, expires, last used; never the token
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: its next use is refused
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// Where a secret goes. Not given: as it is now (env for a new secret);
/// with a file, for each entry that does not say (a JSON entry may).
#[derive(Debug, Clone, Args)]
pub struct RouteArgs {
    /// env: a variable of the setup steps and the agent; setup: of the
    /// --setup steps only (wiped before the agent starts); proxy: the agent
    /// gets a placeholder, the egress proxy puts the value into requests to
    /// --host only
    #[arg(long, value_name = "DELIVERY", value_parser = ["env", "setup", "proxy"])]
    pub delivery: Option<String>,
    /// With --delivery proxy: a host the value may be sent to
    /// (api.stripe.com, *.example.com, with an optional :port); repeatable
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// With --delivery proxy: random, or keep-prefix (the placeholder keeps
    /// the value's prefix, sk_test_, ghp_, and its length, for SDKs that
    /// check a key's shape)
    #[arg(long, value_name = "STYLE", value_parser = ["random", "keep-prefix"])]
    pub placeholder: Option<String>,
    /// With --delivery proxy: also replace the placeholder in request
    /// bodies sent to --host (JSON APIs, form posts, OAuth token requests);
    /// --in-body=false turns it off
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub in_body: Option<bool>,
    /// With --org: the owner's repositories it reaches: all (private, GitHub's
    /// default, is the same here) or selected (--selected-repo)
    #[arg(long, value_name = "VISIBILITY", value_parser = ["all", "private", "selected"])]
    pub visibility: Option<String>,
    /// With --org: a repository of the owner it reaches; repeatable
    #[arg(long = "selected-repo", value_name = "OWNER/NAME")]
    pub selected_repos: Vec<String>,
}

impl RouteArgs {
    /// The route change these flags ask for.
    pub fn change(&self) -> sealinit_store::RouteChange {
        sealinit_store::RouteChange {
            delivery: self
                .delivery
                .as_deref()
                .and_then(sealinit_store::Delivery::parse),
            hosts: (!self.hosts.is_empty()).then(|| self.hosts.clone()),
            placeholder: self
                .placeholder
                .as_deref()
                .and_then(sealinit_store::Placeholder::parse),
            in_body: self.in_body,
            repos: match (self.visibility.as_deref(), self.selected_repos.is_empty()) {
                (Some("all" | "private"), _) => Some(None),
                (Some(_), _) | (None, false) => Some(Some(self.selected_repos.clone())),
                (None, true) => None,
            },
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ReposCommand {
    /// Create a repository (secrets are set, imported and sealed only in
    /// one that exists)
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// The repository
        #[arg(value_name = "OWNER/NAME")]
        repo: String,
        /// Print what was done as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show, or set, what the egress proxy does with a launch's requests
    /// that carry no secret: --default allow|deny, --allow HOST...
    Egress {
        #[command(flatten)]
        store: StoreArgs,
        /// The repository
        #[arg(value_name = "OWNER/NAME")]
        repo: String,
        /// allow (every host) or deny (only --allow hosts and those of
        /// its proxy secrets)
        #[arg(long, value_name = "allow|deny", value_parser = ["allow", "deny"])]
        default: Option<String>,
        /// A host allowed (api.example.com, *.example.com, optional :port);
        /// repeatable; replaces the list
        #[arg(long = "allow", value_name = "HOST")]
        allow: Vec<String>,
        /// Print the policy as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a whole repository (every secret) in one transaction
    Rm {
        #[command(flatten)]
        store: StoreArgs,
        /// The repository
        #[arg(value_name = "OWNER/NAME")]
        repo: String,
        /// Print what was done as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store database [default: $XDG_DATA_HOME/sealinit/store.db]
    #[arg(long, value_name = "PATH", env = "SEALCTL_STORE")]
    pub store: Option<PathBuf>,
    /// A master key file (32 bytes, mode 0600) or a directory of them;
    /// repeat it for a keyring (during a rotation: the old key and the new
    /// one) [env: SEALCTL_MASTER_KEY]
    #[arg(long, value_name = "PATH")]
    pub master_key: Vec<PathBuf>,
    /// Read a master key from this inherited descriptor; repeatable [env:
    /// SEALCTL_MASTER_KEY_FD]; a flag wins over either variable
    #[arg(long, value_name = "N")]
    pub master_key_fd: Vec<i32>,
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
        /// How many versions of each secret keep their value for rollback
        /// (older ones keep only their history entry)
        #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=255))]
        keep: i64,
    },
    /// Bring the store's schema up to what this sealctl knows (any command
    /// does it on first use; this says so explicitly)
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make a new master key primary: every repository's data key is
    /// wrapped under it too (no value is re-encrypted); the old keys keep
    /// working until retired
    RotateMasterKey {
        #[command(flatten)]
        store: StoreArgs,
        /// The new master key: a key file to use, or where to create one
        #[arg(long, value_name = "PATH")]
        new: PathBuf,
        /// Print what was done as JSON
        #[arg(long)]
        json: bool,
    },
    /// Forget a master key that is no longer primary, and every data key
    /// wrapped under it: processes holding only that key stop working
    RetireMasterKey {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's id (`mk-...`, see `sealctl store master-keys`)
        #[arg(value_name = "ID")]
        id: String,
        /// Print what was done as JSON
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt one repository's values (current and history) under a
    /// fresh data key, in one transaction
    RotateDataKey {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_name = "OWNER/NAME")]
        repo: String,
        /// Print what was done as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the store's master keys: id, primary, added, given to this
    /// command
    MasterKeys {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON lines
        #[arg(long)]
        json: bool,
    },
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set NAME from stdin (never argv), or many from --from-env-file or
    /// --from-json (all or nothing). What the store accepts always seals:
    /// names, code-loading names, sizes and the repository's totals are
    /// checked as sealing checks them.
    Set {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        at: Holder,
        /// The secret's name; its value is read from stdin (one trailing newline is dropped)
        #[arg(
            required_unless_present_any = ["from_env_file", "from_json"],
            conflicts_with_all = ["from_env_file", "from_json"]
        )]
        name: Option<String>,
        /// Import every NAME=value of a dotenv file (values taken literally)
        #[arg(long, value_name = "FILE", conflicts_with = "from_json")]
        from_env_file: Option<PathBuf>,
        /// Import a JSON object of string values
        #[arg(long, value_name = "FILE")]
        from_json: Option<PathBuf>,
        /// With --from-env-file: expand ${NAME} from earlier lines of the
        /// same file (never from the environment)
        #[arg(long, requires = "from_env_file")]
        expand: bool,
        /// Allow a name that changes how programs load code (LD_*, BASH_ENV,
        /// NODE_OPTIONS, ...); recorded on the secret, so later seals honour
        /// it; repeatable
        #[arg(long, value_name = "NAME")]
        allow_name: Vec<String>,
        /// Accept an empty value on stdin (refused by default: a forgotten pipe)
        #[arg(long)]
        allow_empty: bool,
        /// Store NAME even though its value looks like a live or production
        /// credential (recorded in the audit trail); repeatable
        #[arg(long, value_name = "NAME")]
        allow_production: Vec<String>,
        /// Compare-and-set: change NAME only if it is at version N now (0: it
        /// must not exist yet); exit 75 and change nothing otherwise
        #[arg(long, value_name = "N", requires = "name")]
        if_version: Option<i64>,
        #[command(flatten)]
        route: RouteArgs,
        /// Print what was done as JSON lines, one per secret
        #[arg(long)]
        json: bool,
    },
    /// Report stored secrets that look like live or production
    /// credentials: repository, name and rule, never values; exit 1 if any
    Scan {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this repository (default: every one)
        #[arg(long, value_name = "OWNER/NAME")]
        repo: Option<String>,
        /// Print JSON lines
        #[arg(long)]
        json: bool,
    },
    /// List a secret's versions with time, size and who; never values
    History {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        at: Holder,
        name: String,
        /// Print JSON lines instead of text
        #[arg(long)]
        json: bool,
    },
    /// Make a new version of NAME with the value version N had (a write:
    /// no value leaves the store)
    Rollback {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        at: Holder,
        name: String,
        /// The version whose value to restore
        #[arg(long, value_name = "N")]
        to: i64,
        /// Print what was done as JSON
        #[arg(long)]
        json: bool,
    },
    /// List names, sizes and update times; never values
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        at: Holder,
        /// List the deleted secrets instead: when, by whom, and the version
        /// `secrets rollback --to` restores
        #[arg(long)]
        deleted: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove secrets (all or nothing)
    Rm {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        at: Holder,
        #[arg(required = true)]
        names: Vec<String>,
        /// Print what was done as JSON lines, one per secret
        #[arg(long)]
        json: bool,
    },
}

/// Whose secrets: a repository (`--repo`), one of its environments
/// (`--repo --env`), or an owner's, an organisation's (`--org`).
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("holder").required(true).args(["repo", "org"])))]
pub struct Holder {
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// An environment of --repo: its secrets win over the repository's in a
    /// launch that names it (seal/run --environment)
    #[arg(long, value_name = "ENV", requires = "repo")]
    pub env: Option<String>,
    /// An owner's (organisation's) secrets: every repository of the owner
    /// receives them (or those of --selected-repo), unless it has a secret
    /// of the same name
    #[arg(long, value_name = "OWNER", conflicts_with = "repo")]
    pub org: Option<String>,
}

impl Holder {
    /// The store's key for these secrets (a repository's name for a
    /// repository).
    pub fn key(&self) -> String {
        use sealinit_store::holder::{env_key, org_key};
        match (&self.org, &self.repo, &self.env) {
            (Some(o), _, _) => org_key(o),
            (None, Some(r), Some(e)) => env_key(r, e),
            (None, Some(r), None) => r.clone(),
            (None, None, _) => unreachable!("clap requires --repo or --org"),
        }
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["from_env_file", "from_json", "repo"])))]
#[command(group(clap::ArgGroup::new("key_dest").args(["key_out", "key_out_fd"])))]
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
    /// (written by --key-out or --key-out-fd)
    #[arg(long, value_name = "OWNER/NAME", requires = "key_dest")]
    pub repo: Option<String>,
    /// With --repo: an environment whose secrets win over the repository's
    /// (which win over its organisation's)
    #[arg(long, value_name = "ENV", requires = "repo")]
    pub environment: Option<String>,
    /// With --repo: where to write the fresh key: a new file (mode 0600),
    /// or `-` for stdout (refused on a terminal)
    #[arg(
        long,
        value_name = "PATH|-",
        requires = "repo",
        conflicts_with = "key_out_fd"
    )]
    pub key_out: Option<PathBuf>,
    /// With --repo: write the fresh key to this inherited descriptor (3 or
    /// above), e.g. a pipe the orchestrator hands to the runtime
    #[arg(long, value_name = "N", requires = "repo")]
    pub key_out_fd: Option<i32>,
    /// With --repo, for a repository with proxy secrets: where to write the
    /// egress proxy's part (their values, hosts and placeholders; never
    /// give it to the sandbox)
    #[arg(long, value_name = "PATH", requires = "repo")]
    pub proxy_out: Option<PathBuf>,
    /// With --proxy-out: where to write its fresh key (a new file, mode
    /// 0600, or `-` for stdout)
    #[arg(
        long,
        value_name = "PATH|-",
        requires = "proxy_out",
        conflicts_with = "proxy_key_out_fd"
    )]
    pub proxy_key_out: Option<PathBuf>,
    /// With --proxy-out: write its fresh key to this inherited descriptor
    #[arg(long, value_name = "N", requires = "proxy_out")]
    pub proxy_key_out_fd: Option<i32>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Free text bound into the bundle, e.g. the repository (default with --repo: the repository)
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Allow a name that changes how programs load code (LD_*, BASH_ENV,
    /// ENV, NODE_OPTIONS, ...); repeatable (names allowed at `secrets set`
    /// are allowed already)
    #[arg(long, value_name = "NAME")]
    pub allow_name: Vec<String>,
    /// Lifetime: the bundle is refused after it (30s, 15m, 2h, 7d), or
    /// `none` [default: 5m with --repo, as `run`; none from files]
    #[arg(long, value_name = "DURATION|none", value_parser = parse_ttl)]
    pub ttl: Option<Ttl>,
    /// With --from-env-file: expand ${NAME} from earlier lines of the same
    /// file (never from the environment)
    #[arg(long, requires = "from_env_file")]
    pub expand: bool,
    /// With --from-env-file/--from-json: refuse (exit 65) a value that looks
    /// like a live or production credential, instead of warning
    #[arg(long, conflicts_with = "repo")]
    pub strict: bool,
    /// With --repo: seal an empty bundle when the repository has no
    /// secrets (refused by default: a typo must not give an empty sandbox)
    #[arg(long, requires = "repo")]
    pub allow_empty: bool,
    /// Print what was sealed (names, sizes, label, expiry; never a value)
    /// as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// A bundle's lifetime: `none`, or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Never,
    After(Duration),
}

fn parse_ttl(s: &str) -> Result<Ttl, String> {
    if s == "none" {
        return Ok(Ttl::Never);
    }
    sealinit_core::time::parse_duration(s).map(Ttl::After)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: String,
    /// An environment of the repository whose secrets win over the
    /// repository's (which win over its organisation's)
    #[arg(long, value_name = "ENV")]
    pub environment: Option<String>,
    /// Run sealinit as PID 1 of a new PID namespace
    #[arg(long, conflicts_with = "sandbox")]
    pub pid_namespace: bool,
    /// Run in a bubblewrap sandbox that holds nothing of this machine's but
    /// /usr (read-only): new namespaces, loopback-only network, a fresh
    /// /proc, /dev, /tmp and /run, a cleared environment, sealinit as PID 1
    #[arg(long)]
    pub sandbox: bool,
    /// With --sandbox: keep the host's network
    #[arg(long, requires = "sandbox")]
    pub share_net: bool,
    /// With --sandbox: bind this host directory read-write at the same path
    /// (repeatable); the command starts in the first
    #[arg(long, value_name = "DIR", requires = "sandbox")]
    pub bind: Vec<PathBuf>,
    /// With --sandbox and proxy secrets: reach HOST:PORT at ADDR (as
    /// curl's --resolve), for tests and private networks
    #[arg(
        long = "proxy-resolve",
        value_name = "HOST:PORT:ADDR",
        requires = "sandbox"
    )]
    pub proxy_resolve: Vec<String>,
    /// With --sandbox and proxy secrets: also trust these CA certificates
    /// (PEM) for upstream servers
    #[arg(long = "proxy-upstream-ca", value_name = "PEM", requires = "sandbox")]
    pub proxy_upstream_ca: Vec<PathBuf>,
    /// With --sandbox and proxy secrets: hand the launch to the host's
    /// egress proxy (`sealctl proxy --control PATH`) instead of running one
    /// in this process
    #[arg(
        long = "proxy-control",
        value_name = "PATH",
        env = "SEALCTL_PROXY_CONTROL"
    )]
    pub proxy_control: Option<PathBuf>,
    /// The sealinit binary [default: next to sealctl, else on PATH]
    #[arg(long, value_name = "PATH")]
    pub sealinit: Option<PathBuf>,
    /// Lifetime of the per-launch bundle
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = sealinit_core::time::parse_duration)]
    pub ttl: Duration,
    /// Allow a code-loading name (see `seal --allow-name`); repeatable
    #[arg(long, value_name = "NAME")]
    pub allow_name: Vec<String>,
    /// Run with no secrets when the repository has none (refused by default)
    #[arg(long)]
    pub allow_empty: bool,
    /// Have sealinit report on this inherited descriptor (4 and above):
    /// `ready` once the command runs, or `error CODE REASON`
    #[arg(long, value_name = "N")]
    pub ready_fd: Option<i32>,
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
