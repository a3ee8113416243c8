//! The strata command line client (see DESIGN.md).
