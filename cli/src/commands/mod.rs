//! The command tree, as docker's: top-level shortcuts and the `image`, `container`, `volume`
//! and `system` groups.

mod container;
mod image;
mod registry;
mod run;
mod system;
mod volume;

use clap::Subcommand;

use crate::client::Client;

pub use run::RunArgs;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and run a new container from an image.
    Run(RunArgs),
    /// Create a new container.
    Create(RunArgs),
    /// Start one or more stopped containers.
    Start(container::StartArgs),
    /// Stop one or more running containers.
    Stop(container::StopArgs),
    /// Restart one or more containers.
    Restart(container::StopArgs),
    /// Kill one or more running containers.
    Kill(container::KillArgs),
    /// Remove one or more containers.
    Rm(container::RmArgs),
    /// List containers.
    Ps(container::PsArgs),
    /// Fetch the logs of a container.
    Logs(container::LogsArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(container::NamesArgs),
    /// Return low-level information on objects.
    Inspect(container::InspectArgs),
    /// Create a new image from a container's changes.
    Commit(image::CommitArgs),
    /// List images.
    Images(image::ImagesArgs),
    /// Load an image from a tar archive or STDIN.
    Load(image::LoadArgs),
    /// Download an image from a registry.
    Pull(registry::PullArgs),
    /// Upload an image to a registry.
    Push(registry::PushArgs),
    /// Log in to a registry.
    Login(registry::LoginArgs),
    /// Log out from a registry.
    Logout(registry::LogoutArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default).
    Save(image::SaveArgs),
    /// Import the contents from a tarball to create a filesystem image.
    Import(image::ImportArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(image::TagArgs),
    /// Remove one or more images.
    Rmi(image::RmiArgs),
    /// Show the history of an image.
    History(image::HistoryArgs),
    /// Build an image from a Dockerfile.
    Build(image::BuildArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Manage containers.
    #[command(subcommand)]
    Container(container::ContainerCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Manage Strata.
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Display system-wide information.
    Info(system::FormatArgs),
    /// Show the Strata version information.
    Version(system::FormatArgs),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs a command; returns the process exit code.
pub async fn run(client: &Client, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run(a) => run::run(client, a).await,
        Command::Create(a) => run::create_cmd(client, a).await,
        Command::Start(a) => container::start(client, a).await,
        Command::Stop(a) => container::stop(client, a, "stop").await,
        Command::Restart(a) => container::stop(client, a, "restart").await,
        Command::Kill(a) => container::kill(client, a).await,
        Command::Rm(a) => container::rm(client, a).await,
        Command::Ps(a) => container::ps(client, a).await,
        Command::Logs(a) => container::logs(client, a).await,
        Command::Wait(a) => container::wait(client, a).await,
        Command::Inspect(a) => container::inspect(client, a).await,
        Command::Commit(a) => image::commit(client, a).await,
        Command::Images(a) => image::images(client, a).await,
        Command::Load(a) => image::load(client, a).await,
        Command::Pull(a) => registry::pull(client, a).await,
        Command::Push(a) => registry::push(client, a).await,
        Command::Login(a) => registry::login(client, a).await,
        Command::Logout(a) => registry::logout(a).await,
        Command::Save(a) => image::save(client, a).await,
        Command::Import(a) => image::import(client, a).await,
        Command::Tag(a) => image::tag(client, a).await,
        Command::Rmi(a) => image::rmi(client, a).await,
        Command::History(a) => image::history(client, a).await,
        Command::Build(a) => image::build(client, a).await,
        Command::Image(c) => image::dispatch(client, c).await,
        Command::Container(c) => container::dispatch(client, c).await,
        Command::Volume(c) => volume::dispatch(client, c).await,
        Command::System(c) => system::dispatch(client, c).await,
        Command::Info(a) => system::info(client, a).await,
        Command::Version(a) => system::version(client, a).await,
        Command::Completion { .. } => Ok(0),
    }
}
