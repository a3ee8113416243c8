//! The btrfs layer driver (see DESIGN.md).
