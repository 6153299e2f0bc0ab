//! The mesh model (pure): see model/ files.
