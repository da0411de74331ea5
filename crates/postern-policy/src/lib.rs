//! Postern's policy: pure, synchronous decisions shared by every protocol.
//!
//! Owns the "decide" stage of the request's path. Nothing here does I/O, so every
//! branch can be tested exhaustively and fuzzed.

pub mod addr;
pub mod blocklist;
pub mod cidr;
pub mod headers;
pub mod host;
pub mod htpasswd;
pub mod matchers;
pub mod rules;
pub mod url;

pub use addr::{AddressClass, classify};
pub use cidr::{Cidr, CidrError};
pub use rules::{Action, Decision, Request, Rule, RuleSet, Verdict};
