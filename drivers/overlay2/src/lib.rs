//! The overlay2 layer driver (see DESIGN.md).
