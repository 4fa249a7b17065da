//! Configuration: the INI dialect shared by all files, and `NAME[opts]`
//! references. Meaning is given to options by the readers that use them.

pub mod ini;
pub mod options;
