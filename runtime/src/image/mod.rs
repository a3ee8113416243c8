//! Image operations over the core layer and image stores: `load`, `save`, `import`,
//! `history`, `tag`, `rmi`, `image prune` and `commit`. Every operation works on any layer
//! driver: they use only the stores and the driver contract.
//!
//! The daemon opens the stores once (`LayerStore::open`, then `ImageStore::open`, then
//! `LayerStore::release_unreferenced` to sweep layers an interrupted load left) and calls:
//! - [`load::load`] with the request body and a progress callback,
//! - [`save::save`] for `GET /images/get` (a tar stream),
//! - [`import::import`] for `POST /images/create?fromSrc=`,
//! - [`history::history`], [`manage::tag`], [`manage::remove`], [`manage::prune`],
//! - [`commit::commit`] with the container's read-write layer id,
//! - [`pull::resolve`] then [`pull::PullPlan::fetch`] for `POST /images/create?fromImage=`,
//!   and [`push::push`] for `POST /images/{name}/push` (registry access is the
//!   `strata-distribution` crate).
//!
//! `POST /build` is `crate::build` (it runs RUN steps through the daemon's containers and
//! commits them with [`commit::commit`]).

pub mod changes;
pub mod commit;
pub mod history;
pub mod import;
pub mod load;
pub mod manage;
pub mod manifest;
mod outer;
mod partial;
pub mod pull;
pub mod push;
pub mod save;
mod spool;

#[cfg(test)]
mod tests;

pub use commit::{commit, CommitOptions};
pub use history::{history, HistoryItem};
pub use import::{import, ImportOptions};
pub use load::{load, LoadOptions, LoadProgress, LoadedImage};
pub use manage::{prune, remove, tag, DeleteItem, ImageUser, PruneReport};
pub use save::save;
