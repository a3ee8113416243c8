//! The fuse-overlay layer driver (see DESIGN.md).
