//! Configuration: the INI dialect shared by all files, `NAME[opts]`
//! references, time spans, and the readers that give options their meaning
//! (daemon settings in `banhammer.conf` with its `[syslog]`, `[web]` and
//! `[firewall]` sections, jails
//! in `jail.conf` and friends).

pub mod daemon;
pub mod duration;
pub mod ini;
pub mod jail;
pub mod notify;
pub mod options;
pub mod syslog;
pub mod web;
