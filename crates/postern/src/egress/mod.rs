//! The "egress" stage: from a destination name to a connected socket, with the
//! SSRF guard applied to the resolved address and idle connections kept for reuse.

pub mod connect;
pub mod parent;
pub mod pool;
pub mod resolve;
pub mod senders;
pub mod stream;

pub use connect::{AddressPermit, Connector, Destination};
pub use pool::UpstreamPool;
pub use resolve::Resolver;
pub use stream::Upstream;
