//! The driver conformance suite (see DESIGN.md).
