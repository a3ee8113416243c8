//! The vfs layer driver (see DESIGN.md).
