//! ttmem's built-in alerts: rules read from the config ([`rules`]), and the engine that moves
//! each alert between pending, firing and resolved ([`engine`]) over what the collector sees
//! ([`Facts`]). Pure logic: no I/O and no clock (the caller passes the time). The daemon keeps
//! the states in its database and hands each transition to its notifiers.

#![deny(missing_docs)]

pub mod engine;
pub mod rules;

pub use engine::{ChipCategory, Engine, Facts, FreeSpace, ProcessFacts};
pub use rules::{Condition, Level, Rule, Severity, check_rules, default_rules};

#[cfg(test)]
mod tests;
