//! banhammer: an intrusion-prevention daemon that reads Fail2Ban filters.
//!
//! Crate map:
//! - [`config`]: Fail2Ban's INI dialect (includes, interpolation) and `NAME[opts]` references.
//! - [`filter`]: the filter engine (regex translation, date detection, multi-line state).
//! - [`cmd`]: the offline commands `test-filter` and `regex`.

pub mod cmd;
pub mod config;
pub mod filter;
