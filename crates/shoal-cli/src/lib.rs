//! Shoal's command line: the `shoal` verbs that talk to a daemon through the
//! Docker Engine API (`swarm`, `node`, `service`, `network`, `secret`, `config`,
//! `stack`, `login`, `logout`, `info`, `version`) and print
//! what the docker CLI v28 prints. `daemon` and `shim` are not run here: [`run`]
//! hands their arguments back to the binary.

pub mod client;
pub mod config;
pub mod format;
pub mod login;
pub mod logs;
pub mod network;
pub mod node;
pub mod opts;
pub mod progress;
pub mod secret;
pub mod service;
pub mod service_refs;
pub mod stack;
pub mod stack_plan;
pub mod swarm;
pub mod system;
pub mod template;
pub mod tls;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

pub use client::CliError;

/// What the binary must do after [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// The verb ran; exit with this code.
    Done(i32),
    /// `shoal daemon ...`: run the daemon with these arguments (those after `daemon`).
    Daemon(Vec<OsString>),
    /// `shoal shim ...`: run the shim with these arguments (those after `shim`).
    Shim(Vec<OsString>),
    /// `shoal machine ...`: run the machine verbs with these arguments (those after `machine`).
    Machine(Vec<OsString>),
}

/// Exit code docker uses for usage (flag) errors.
pub const USAGE_EXIT_CODE: i32 = 125;

/// Shoal's command line.
#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    about = "Docker swarm mode, rebuilt in Rust",
    version,
    disable_version_flag = true,
    disable_help_subcommand = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Daemon socket to connect to (default: $SHOAL_HOST, $DOCKER_HOST, unix:///run/shoal/shoal.sock)
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: Option<String>,
    /// Use TLS; implied by --tlsverify (default: $DOCKER_TLS)
    #[arg(
        long = "tls",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub tls: Option<bool>,
    /// Use TLS and verify the remote (default: $DOCKER_TLS_VERIFY)
    #[arg(
        long = "tlsverify",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub tlsverify: Option<bool>,
    /// Trust certs signed only by this CA (default: $DOCKER_CERT_PATH/ca.pem, ~/.docker/ca.pem)
    #[arg(long = "tlscacert", value_name = "PATH")]
    pub tlscacert: Option<PathBuf>,
    /// Path to TLS certificate file (default: $DOCKER_CERT_PATH/cert.pem, ~/.docker/cert.pem)
    #[arg(long = "tlscert", value_name = "PATH")]
    pub tlscert: Option<PathBuf>,
    /// Path to TLS key file (default: $DOCKER_CERT_PATH/key.pem, ~/.docker/key.pem)
    #[arg(long = "tlskey", value_name = "PATH")]
    pub tlskey: Option<PathBuf>,
    /// Set the logging level
    #[arg(
        short = 'l',
        long = "log-level",
        value_name = "LEVEL",
        default_value = "info",
        value_parser = ["debug", "info", "warn", "error", "fatal"]
    )]
    pub log_level: String,
    /// Print version information and quit
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level verbs.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage Swarm
    #[command(subcommand_required = true, arg_required_else_help = true)]
    Swarm {
        #[command(subcommand)]
        cmd: swarm::SwarmCommand,
    },
    /// Manage Swarm nodes
    #[command(subcommand_required = true, arg_required_else_help = true)]
    Node {
        #[command(subcommand)]
        cmd: node::NodeCommand,
    },
    /// Manage Swarm services
    #[command(subcommand_required = true, arg_required_else_help = true)]
    Service {
        #[command(subcommand)]
        cmd: service::ServiceCommand,
    },
    /// Manage networks
    #[command(subcommand_required = true, arg_required_else_help = true)]
    Network {
        #[command(subcommand)]
        cmd: network::NetworkCommand,
    },
    /// Manage Swarm secrets
    #[command(subcommand_required = true, arg_required_else_help = true)]
    Secret {
        #[command(subcommand)]
        cmd: secret::SecretCommand,
    },
    /// Manage Swarm configs
    #[command(subcommand_required = true, arg_required_else_help = true)]
    Config {
        #[command(subcommand)]
        cmd: config::ConfigCommand,
    },
    /// Manage Swarm stacks
    #[command(subcommand_required = true, arg_required_else_help = true)]
    Stack {
        #[command(subcommand)]
        cmd: stack::StackCommand,
    },
    /// Log in to a registry
    Login(login::LoginArgs),
    /// Log out from a registry
    Logout(login::LogoutArgs),
    /// Display system-wide information
    Info(system::InfoArgs),
    /// Show the Shoal version information
    Version(system::VersionArgs),
    /// Run the Shoal daemon
    #[command(disable_help_flag = true)]
    Daemon {
        /// Arguments for the daemon
        #[arg(
            num_args = 0..,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_parser = clap::value_parser!(OsString)
        )]
        args: Vec<OsString>,
    },
    /// Manage machines (network namespaces on this host, each running shoal)
    #[command(disable_help_flag = true)]
    Machine {
        /// Arguments for the machine verbs
        #[arg(
            num_args = 0..,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_parser = clap::value_parser!(OsString)
        )]
        args: Vec<OsString>,
    },
    /// Run a container shim (internal)
    #[command(hide = true, disable_help_flag = true)]
    Shim {
        /// Arguments for the shim
        #[arg(
            num_args = 0..,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_parser = clap::value_parser!(OsString)
        )]
        args: Vec<OsString>,
    },
}

/// The clap command tree (for help output from within verbs).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Prints the help of a nested subcommand, e.g. `["swarm", "update"]`.
pub(crate) fn print_help(path: &[&str]) {
    let mut cmd = command();
    cmd.build();
    for name in path {
        match cmd.find_subcommand(name) {
            Some(sub) => cmd = sub.clone(),
            None => break,
        }
    }
    format::out(&cmd.render_help().to_string());
}

/// Names of the flags given on the command line for the innermost subcommand.
pub(crate) fn changed_flags(m: &ArgMatches) -> Vec<String> {
    let mut cur = m;
    while let Some((_, sub)) = cur.subcommand() {
        cur = sub;
    }
    cur.ids()
        .filter(|id| cur.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// Parses argv (argv[0] included) and runs the verb. `daemon ...` and `shim ...` are not run here:
/// they are returned (with the arguments after the verb) for the binary to handle.
pub fn run(argv: Vec<OsString>) -> Dispatch {
    let matches = match command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => return Dispatch::Done(clap_exit(&e)),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return Dispatch::Done(clap_exit(&e)),
    };
    match cli.command {
        Command::Daemon { args } => return Dispatch::Daemon(args),
        Command::Shim { args } => return Dispatch::Shim(args),
        Command::Machine { args } => return Dispatch::Machine(args),
        _ => {}
    }
    let changed = changed_flags(&matches);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            format::err(&format!("failed to start runtime: {e}\n"));
            return Dispatch::Done(1);
        }
    };
    let result = runtime.block_on(execute(cli, changed));
    // Do not wait for stray connection tasks (e.g. an interrupted log stream).
    runtime.shutdown_background();
    match result {
        Ok(()) => Dispatch::Done(0),
        Err(e) => {
            let text = e.to_string();
            if !text.is_empty() {
                format::err(&format!("{text}\n"));
            }
            Dispatch::Done(e.exit_code())
        }
    }
}

fn clap_exit(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
        _ => USAGE_EXIT_CODE,
    }
}

async fn execute(cli: Cli, changed: Vec<String>) -> Result<(), CliError> {
    let tls = tls::TlsFlags {
        tls: cli.tls,
        tlsverify: cli.tlsverify,
        tlscacert: cli.tlscacert.clone(),
        tlscert: cli.tlscert.clone(),
        tlskey: cli.tlskey.clone(),
    };
    let host = client::Endpoint {
        host: client::resolve_host(cli.host.as_deref()),
        tls: tls.resolve_from_env(),
    };
    match cli.command {
        Command::Swarm { cmd } => swarm::run(&host, cmd).await,
        Command::Node { cmd } => node::run(&host, cmd).await,
        Command::Service { cmd } => service::run(&host, cmd, &changed).await,
        Command::Network { cmd } => network::run(&host, cmd).await,
        Command::Secret { cmd } => secret::run(&host, cmd).await,
        Command::Config { cmd } => config::run(&host, cmd).await,
        Command::Stack { cmd } => stack::run(&host, cmd).await,
        Command::Login(args) => login::login(&args),
        Command::Logout(args) => login::logout(&args),
        Command::Info(args) => system::info(&host, args).await,
        Command::Version(args) => system::version(&host, args).await,
        Command::Daemon { .. } | Command::Shim { .. } | Command::Machine { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn daemon_and_shim_are_handed_back() {
        assert_eq!(
            run(argv(&["shoal", "daemon", "--help"])),
            Dispatch::Daemon(argv(&["--help"]))
        );
        assert_eq!(
            run(argv(&["shoal", "daemon", "--data-root", "/x", "-D"])),
            Dispatch::Daemon(argv(&["--data-root", "/x", "-D"]))
        );
        assert_eq!(run(argv(&["shoal", "daemon"])), Dispatch::Daemon(vec![]));
        assert_eq!(
            run(argv(&[
                "shoal",
                "-H",
                "unix:///x.sock",
                "shim",
                "--id",
                "abc"
            ])),
            Dispatch::Shim(argv(&["--id", "abc"]))
        );
    }

    #[test]
    fn usage_errors_exit_125() {
        assert_eq!(
            run(argv(&["shoal", "node", "ls", "--bogus"])),
            Dispatch::Done(USAGE_EXIT_CODE)
        );
        assert_eq!(
            run(argv(&["shoal", "--log-level", "loud", "info"])),
            Dispatch::Done(USAGE_EXIT_CODE)
        );
        assert_eq!(run(argv(&["shoal", "--help"])), Dispatch::Done(0));
        assert_eq!(run(argv(&["shoal"])), Dispatch::Done(0));
        assert_eq!(run(argv(&["shoal", "swarm"])), Dispatch::Done(0));
        assert_eq!(
            run(argv(&["shoal", "service", "bogus"])),
            Dispatch::Done(USAGE_EXIT_CODE)
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn changed_flags_reports_command_line_flags_only() {
        let m = command()
            .try_get_matches_from(argv(&["shoal", "service", "update", "--image", "x", "web"]))
            .unwrap();
        let changed = changed_flags(&m);
        assert!(changed.contains(&"image".to_string()));
        assert!(!changed.contains(&"detach".to_string()));
    }

    #[test]
    fn tls_flags_parse_like_docker() {
        let parse = |args: &[&str]| Cli::try_parse_from(argv(args));
        let c = parse(&["shoal", "--tlsverify", "info"]).unwrap();
        assert_eq!((c.tls, c.tlsverify), (None, Some(true)));
        let c = parse(&["shoal", "--tls", "--tlsverify=false", "info"]).unwrap();
        assert_eq!((c.tls, c.tlsverify), (Some(true), Some(false)));
        let c = parse(&[
            "shoal",
            "--tlscacert",
            "/c/ca.pem",
            "--tlscert=/c/cert.pem",
            "--tlskey",
            "/c/key.pem",
            "-H",
            "tcp://10.0.0.2",
            "version",
        ])
        .unwrap();
        assert_eq!(c.tlscacert, Some(PathBuf::from("/c/ca.pem")));
        assert_eq!(c.tlscert, Some(PathBuf::from("/c/cert.pem")));
        assert_eq!(c.tlskey, Some(PathBuf::from("/c/key.pem")));
        // `--tlsverify info` must not take `info` as the flag's value.
        assert!(matches!(
            parse(&["shoal", "--tlsverify", "info"]).unwrap().command,
            Command::Info(_)
        ));
        assert!(parse(&["shoal", "--tlsverify=maybe", "info"]).is_err());
    }
}
