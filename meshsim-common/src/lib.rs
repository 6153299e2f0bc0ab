//! Types shared by the tc classifier and user space, and the pure shaping arithmetic both run.
//!
//! Everything that crosses the map boundary is `#[repr(C)]`, explicitly padded, without
//! `bool`, and its size is asserted at compile time so both sides agree on the layout.
#![no_std]

pub mod config;
pub mod edt;
pub mod jitter;
pub mod link;

pub use config::*;
pub use edt::{Verdict, schedule};
pub use jitter::jitter_phase_q32;
pub use link::*;
