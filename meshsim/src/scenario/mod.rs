//! Scenarios: experiments written down. A scenario file is a topology file with a
//! `[[step]]` list (`file`); `meshsim run` starts its topology, runs the steps at their
//! times against the Sim and the Matrix view (`run`), records everything as it happens
//! (`record`), and writes a report with plots from what it gathered (`report`).

pub mod desk;
pub mod file;
pub mod record;
pub mod report;
pub mod run;
pub mod session;
pub mod step;
pub mod write;

pub use file::{Scenario, ScenarioError, parse, read};
