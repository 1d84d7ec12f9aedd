//! `shoal config ...`: create, ls, inspect and rm, as docker's config commands (the shared
//! code is in [`crate::secret`]).

use clap::{Args, Subcommand};

use crate::client::{CliError, Client, Endpoint};
use crate::opts;
use crate::secret::{self, InspectArgs, Kind, ListArgs, RmArgs};

/// `config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Create a config from a file or STDIN
    Create(ConfigCreateArgs),
    /// Display detailed information on one or more configs
    Inspect(InspectArgs),
    /// List configs
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove one or more configs
    #[command(alias = "remove")]
    Rm(RmArgs),
}

/// `config create` flags.
#[derive(Args, Debug, Clone)]
pub struct ConfigCreateArgs {
    /// Config labels
    #[arg(short = 'l', long, value_name = "list", value_parser = opts::validate_label)]
    pub label: Vec<String>,
    /// Template driver
    #[arg(long = "template-driver", value_name = "string")]
    pub template_driver: Option<String>,
    /// Config name
    #[arg(value_name = "CONFIG")]
    pub name: String,
    /// File with the config's content, or - for standard input
    #[arg(value_name = "file|-")]
    pub file: String,
}

/// Runs a `config` subcommand.
pub async fn run(host: &Endpoint, cmd: ConfigCommand) -> Result<(), CliError> {
    let client = Client::connect(host).await?;
    match cmd {
        ConfigCommand::Create(a) => {
            let data = secret::read_content(&a.file)?;
            let body = secret::spec_body(&a.name, &a.label, &data, a.template_driver.as_deref());
            secret::create(&client, Kind::Config, &body).await
        }
        ConfigCommand::Ls(a) => secret::list(&client, Kind::Config, a).await,
        ConfigCommand::Inspect(a) => secret::inspect(&client, Kind::Config, a).await,
        ConfigCommand::Rm(a) => secret::remove(&client, Kind::Config, a).await,
    }
}
