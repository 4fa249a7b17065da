//! banhammer: an intrusion-prevention daemon that reads Fail2Ban filters.
//!
//! Crate map:
//! - [`config`]: Fail2Ban's INI dialect, `NAME[opts]` references, daemon and jail settings.
//! - [`filter`]: the filter engine (regex translation, date detection, multi-line state).
//! - [`source`]: where lines come from (log files, the systemd journal, syslog).
//! - [`jail`]: failure windows, ban policy, the jail task.
//! - [`store`]: SQLite state (failures, bans, positions), owned by one thread.
//! - [`firewall`]: the action interface, native nftables, the actions that enforce bans.
//! - [`tls`]: TLS server settings shared by the listeners.
//! - [`web`]: the ban page (and, later, the admin view and API).
//! - [`control`]: the control socket protocol, server and client.
//! - [`daemon`]: starting, reloading and stopping everything.
//! - [`notify`]: webhooks from the durable outbox, StatsD.
//! - [`logging`]: the daemon's log in Fail2Ban's format.
//! - [`cmd`]: the offline commands `test-filter` and `regex`.

pub mod cmd;
pub mod config;
pub mod control;
pub mod daemon;
pub mod filter;
pub mod firewall;
pub mod jail;
pub mod logging;
pub mod notify;
pub mod random;
pub mod source;
pub mod store;
pub mod tls;
pub mod web;
