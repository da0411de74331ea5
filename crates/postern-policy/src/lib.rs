//! Postern's policy: pure, synchronous decisions shared by every protocol.
//!
//! Owns the "decide" stage of the request's path. Nothing here does I/O, so every
//! branch can be tested exhaustively and fuzzed.

pub mod addr;
pub mod cidr;
pub mod rules;

pub use addr::{AddressClass, classify};
pub use cidr::{Cidr, CidrError};
pub use rules::{Action, Decision, Request, Rule, RuleSet};
