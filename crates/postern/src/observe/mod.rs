//! The "log" stage: what happened to each request or tunnel, written from the
//! context gathered along the path.

pub mod access_log;
pub mod log_template;
pub mod metrics;
pub mod syslog;
pub mod time;

pub use access_log::AccessLog;
