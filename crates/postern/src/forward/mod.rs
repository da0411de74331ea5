//! Forward proxying: absolute-URI HTTP requests, CONNECT tunnels, and the page the
//! proxy serves about itself.

pub mod connect;
pub mod ftp;
pub mod http;
pub mod page;
pub mod plan;
pub mod target;
