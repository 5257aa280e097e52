//! One send or receive, with its own progress counter.

use crate::{Rank, Tag};

/// Whether an [`Op`] sends or receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Bytes leave this rank.
    Send,
    /// Bytes arrive at this rank.
    Recv,
}

#[derive(Debug)]
enum Buf<'a> {
    Send(&'a [u8]),
    Recv(&'a mut [u8]),
}

/// A send or receive of one whole message, borrowing the caller's buffer.
///
/// The op records how far it has got, so it can be driven across several
/// [`Transport::progress`](crate::Transport::progress) calls.
#[derive(Debug)]
pub struct Op<'a> {
    peer: Rank,
    tag: Tag,
    buf: Buf<'a>,
    done: usize,
    /// Transport-private: set once the op's header is on the wire or matched.
    started: bool,
}

impl<'a> Op<'a> {
    /// Sends `data` to `peer` as one message with `tag`.
    pub fn send(peer: Rank, tag: Tag, data: &'a [u8]) -> Self {
        Self {
            peer,
            tag,
            buf: Buf::Send(data),
            done: 0,
            started: false,
        }
    }

    /// Receives one message from `peer` with `tag` into `buf`; the message must be exactly
    /// `buf.len()` bytes long.
    pub fn recv(peer: Rank, tag: Tag, buf: &'a mut [u8]) -> Self {
        Self {
            peer,
            tag,
            buf: Buf::Recv(buf),
            done: 0,
            started: false,
        }
    }

    /// The other rank.
    pub fn peer(&self) -> Rank {
        self.peer
    }

    /// The message tag.
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// Send or receive.
    pub fn kind(&self) -> OpKind {
        match self.buf {
            Buf::Send(_) => OpKind::Send,
            Buf::Recv(_) => OpKind::Recv,
        }
    }

    /// The message length in bytes.
    pub fn len(&self) -> usize {
        match &self.buf {
            Buf::Send(b) => b.len(),
            Buf::Recv(b) => b.len(),
        }
    }

    /// True for a zero-length message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes moved so far.
    pub fn done(&self) -> usize {
        self.done
    }

    /// True once the whole message has moved (and, for a zero-length message, once it was
    /// matched or sent).
    pub fn is_complete(&self) -> bool {
        self.started && self.done == self.len()
    }

    /// Transport-side: whether the op has been started (header sent or message matched).
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Redirects the op to another rank: a view of a subset of the job's ranks (hierarchical
    /// collectives) renumbers its ops' peers onto the job's ranks before handing them on.
    pub fn set_peer(&mut self, peer: Rank) {
        self.peer = peer;
    }

    /// Transport-side: marks the op started.
    pub fn mark_started(&mut self) {
        self.started = true;
    }

    /// Transport-side: records `n` more bytes moved.
    ///
    /// # Panics
    /// If that would move past the end of the buffer (a transport bug).
    pub fn advance(&mut self, n: usize) {
        assert!(
            self.done + n <= self.len(),
            "transport advanced an op past its end"
        );
        self.done += n;
    }

    /// Transport-side: the bytes of a send op not yet sent (empty for a receive).
    pub fn remaining_send(&self) -> &[u8] {
        match &self.buf {
            Buf::Send(b) => &b[self.done..],
            Buf::Recv(_) => &[],
        }
    }

    /// Transport-side: the part of a receive op's buffer not yet filled (empty for a send).
    pub fn remaining_recv(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Buf::Recv(b) => &mut b[self.done..],
            Buf::Send(_) => &mut [],
        }
    }
}
