//! Transmit buffers the driver gave back ([`super::Server::recycle_transmit`]),
//! reused for later frames instead of allocating a fresh buffer per
//! `Output::Transmit`.
//!
//! Bounded both ways: at most [`MAX_BUFFERS`] buffers of at most
//! [`MAX_CAPACITY`] bytes each are kept (anything else is dropped), and a
//! connection takes one only when it has a frame to encode and no buffer of
//! its own, so idle connections hold none.

/// Spare buffers kept at most.
pub(super) const MAX_BUFFERS: usize = 32;

/// Largest buffer kept (a bigger one, grown by a large frame, is freed).
pub(super) const MAX_CAPACITY: usize = 64 * 1024;

/// Empty buffers with capacity, ready to encode frames into.
#[derive(Debug, Default)]
pub(super) struct SpareTx {
    buffers: Vec<Vec<u8>>,
}

impl SpareTx {
    /// Keeps `buffer` (emptied) for reuse, if there is room and it is worth
    /// keeping.
    pub(super) fn give(&mut self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if capacity == 0 || capacity > MAX_CAPACITY || self.buffers.len() >= MAX_BUFFERS {
            return;
        }
        buffer.clear();
        self.buffers.push(buffer);
    }

    /// Gives `tx` a spare buffer if it has no capacity of its own.
    #[inline]
    pub(super) fn fill(&mut self, tx: &mut Vec<u8>) {
        if tx.capacity() == 0
            && let Some(buffer) = self.buffers.pop()
        {
            *tx = buffer;
        }
    }

    /// Bytes held.
    pub(super) fn memory(&self) -> usize {
        self.buffers.iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test;

    #[test]
    fn a_given_buffer_is_reused_empty() {
        let mut spare = SpareTx::default();
        let mut used = Vec::with_capacity(512);
        used.extend_from_slice(b"written");
        spare.give(used);
        assert_eq!(spare.memory(), 512);
        let mut tx = Vec::new();
        spare.fill(&mut tx);
        assert!(tx.is_empty());
        assert_eq!(tx.capacity(), 512);
        assert_eq!(spare.memory(), 0);
    }

    #[test]
    fn a_buffer_with_capacity_is_not_replaced() {
        let mut spare = SpareTx::default();
        spare.give(Vec::with_capacity(512));
        let mut tx = Vec::with_capacity(8);
        tx.push(1);
        spare.fill(&mut tx);
        assert_eq!(tx, [1]);
        assert_eq!(spare.memory(), 512);
    }

    #[test]
    fn empty_oversized_and_surplus_buffers_are_dropped() {
        let mut spare = SpareTx::default();
        spare.give(Vec::new());
        spare.give(Vec::with_capacity(MAX_CAPACITY + 1));
        assert_eq!(spare.memory(), 0);
        for _ in 0..MAX_BUFFERS + 5 {
            spare.give(Vec::with_capacity(100));
        }
        assert_eq!(spare.buffers.len(), MAX_BUFFERS);
    }
}
