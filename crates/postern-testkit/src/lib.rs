//! Test support for driving the real `postern` binary: in-process HTTP/1.1
//! origins (plain, TLS and raw TCP), a throwaway certificate authority, a
//! raw TCP client, and a harness that starts the binary with a generated
//! config. Everything listens on and connects to `127.0.0.1` only.

mod origin;
mod proxy;
mod raw;
mod tls;

pub use origin::{Origin, SeenRequest, pattern_bytes, text_bytes};
pub use proxy::{ListenerInfo, TestProxy, check_config};
pub use raw::{RawOrigin, RawReply, raw_exchange};
pub use tls::{TestCa, TlsOrigin};

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<crate::Origin>();
        send_sync::<crate::TlsOrigin>();
        send_sync::<crate::RawOrigin>();
        send_sync::<crate::TestCa>();
        send_sync::<crate::TestProxy>();
        send_sync::<crate::RawReply>();
    }
}
