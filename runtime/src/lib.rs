//! Containers, image operations and the Engine API server (see DESIGN.md).
