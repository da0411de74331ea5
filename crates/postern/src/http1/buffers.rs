//! Read buffers for the responses of servers, kept between exchanges on the
//! same thread. Every exchange needs one, and a block of this size is past
//! the allocator's fast path: taking it from a short per-thread list costs a
//! tenth of allocating it.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use bytes::BytesMut;

/// What one read of a response head usually needs.
const SIZE: usize = 8 * 1024;
/// Buffers kept per thread; more only while more exchanges run at once.
const KEPT: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer that goes back to its thread's list when dropped.
pub struct ReadBuffer(BytesMut);

impl ReadBuffer {
    pub fn take() -> ReadBuffer {
        let kept = SPARE.with_borrow_mut(Vec::pop);
        ReadBuffer(kept.unwrap_or_else(|| BytesMut::with_capacity(SIZE)))
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        // Only a whole block held by nobody else (a response head cut from it
        // may still be alive) is kept; anything else is simply freed.
        if buf.try_reclaim(SIZE) && buf.capacity() <= 2 * SIZE {
            SPARE.with_borrow_mut(|spare| {
                if spare.len() < KEPT {
                    spare.push(buf);
                }
            });
        }
    }
}

impl Deref for ReadBuffer {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.0
    }
}

impl DerefMut for ReadBuffer {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> usize {
        SPARE.with_borrow(Vec::len)
    }

    #[test]
    fn a_buffer_comes_back_empty_and_whole() {
        let kept_before = kept();
        {
            let mut buf = ReadBuffer::take();
            buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\nleftover");
            buf.advance_past_head();
        }
        assert_eq!(kept(), kept_before + 1);
        let buf = ReadBuffer::take();
        assert_eq!(kept(), kept_before);
        assert!(buf.is_empty());
        assert!(buf.capacity() >= SIZE);
    }

    #[test]
    fn a_buffer_still_shared_is_not_kept() {
        let kept_before = kept();
        let head = {
            let mut buf = ReadBuffer::take();
            buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
            buf.split_to(19).freeze()
        };
        assert_eq!(kept(), kept_before);
        assert_eq!(&head[..], b"HTTP/1.1 200 OK\r\n\r\n");
    }

    impl ReadBuffer {
        /// What an exchange does with a head: cut it off, then drop it.
        fn advance_past_head(&mut self) {
            drop(self.split_to(19).freeze());
        }
    }
}
