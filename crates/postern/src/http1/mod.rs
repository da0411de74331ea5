//! HTTP/1.x wire format (RFC 9112): strict parsing of message heads, message
//! framing, streaming of bodies, and serialisation of forwarded heads.
//!
//! Parsing is deliberately stricter than most servers: anything that two parsers
//! could read differently (the root of request smuggling) is refused rather than
//! guessed at.

pub mod body;
pub mod fields;
pub mod head;

pub use body::BodyKind;
pub use head::{HeadError, RequestHead};
