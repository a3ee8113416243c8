//! Containers, image operations and the Engine API server (see DESIGN.md).
#![recursion_limit = "256"]

pub mod api;
pub mod build;
pub mod cgroups;
pub mod container;
pub mod daemon;
#[cfg(test)]
mod fuzz;
pub mod image;
