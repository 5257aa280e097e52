//! A [`Transport`] view of a subset of the job's ranks, so the ring algorithms can run among
//! the ranks of one host or among one rank per host without a second set of connections.
//!
//! How it works. Members are numbered `0..members.len()` in the order given; every op handed
//! to [`Transport::wait`] or [`Transport::progress`] has its peer renumbered onto the job's rank
//! before the call and back after it, so errors from the underlying transport name the job's
//! ranks, which is what a user can act on.
//!
//! Tags are passed through unchanged. That is safe as long as two groups sharing a pair of
//! ranks never run at once with the same tag; hierarchical collectives only ever have one
//! collective in flight per rank, and a host's group and a cross-host group share no pair.

use std::sync::Arc;
use std::time::Instant;

use hora_transport::{Capabilities, Op, Rank, Tag, Transport, TransportError, Waker};

/// The ranks `members` of `inner`, renumbered `0..members.len()`.
#[derive(Debug)]
pub struct SubTransport {
    inner: Arc<dyn Transport>,
    members: Vec<Rank>,
    me: Rank,
}

impl SubTransport {
    /// A view of `members` (job ranks, distinct, including this rank) of `inner`.
    ///
    /// Returns `None` if this rank is not among `members` or a member is out of range.
    pub fn new(inner: Arc<dyn Transport>, members: Vec<Rank>) -> Option<Self> {
        let me = members.iter().position(|&r| r == inner.rank())?;
        if members.iter().any(|&r| r >= inner.size()) {
            return None;
        }
        Some(Self { inner, members, me })
    }

    /// The job's rank of member `sub`.
    pub fn job_rank(&self, sub: Rank) -> Option<Rank> {
        self.members.get(sub).copied()
    }

    fn member_of(&self, job_rank: Rank) -> Option<Rank> {
        self.members.iter().position(|&r| r == job_rank)
    }

    fn to_job(&self, peer: Rank) -> Result<Rank, TransportError> {
        self.job_rank(peer).ok_or(TransportError::InvalidPeer {
            peer,
            size: self.members.len(),
            me: self.me,
        })
    }

    /// Runs `f` with every op's peer renumbered onto the job's ranks, restoring them after.
    fn renumbered<R>(
        &self,
        ops: &mut [Op<'_>],
        f: impl FnOnce(&mut [Op<'_>]) -> Result<R, TransportError>,
    ) -> Result<R, TransportError> {
        let original: Vec<Rank> = ops.iter().map(Op::peer).collect();
        // Map every peer before renumbering any, so a bad one leaves the ops as given.
        let jobs = original
            .iter()
            .map(|&p| self.to_job(p))
            .collect::<Result<Vec<_>, _>>()?;
        for (op, job) in ops.iter_mut().zip(jobs) {
            op.set_peer(job);
        }
        let r = f(ops);
        for (op, &p) in ops.iter_mut().zip(&original) {
            op.set_peer(p);
        }
        r
    }
}

impl Transport for SubTransport {
    fn rank(&self) -> Rank {
        self.me
    }

    fn size(&self) -> usize {
        self.members.len()
    }

    fn progress(&self, ops: &mut [Op<'_>]) -> Result<bool, TransportError> {
        self.renumbered(ops, |ops| self.inner.progress(ops))
    }

    fn wait(&self, ops: &mut [Op<'_>], deadline: Instant) -> Result<(), TransportError> {
        self.renumbered(ops, |ops| self.inner.wait(ops, deadline))
    }

    fn send_msg(&self, peer: Rank, tag: Tag, msg: &[u8]) -> Result<(), TransportError> {
        self.inner.send_msg(self.to_job(peer)?, tag, msg)
    }

    fn recv_msg(
        &self,
        from: Option<Rank>,
        tag: Tag,
        deadline: Instant,
    ) -> Result<Option<(Rank, Vec<u8>)>, TransportError> {
        let from = from.map(|p| self.to_job(p)).transpose()?;
        match self.inner.recv_msg(from, tag, deadline)? {
            None => Ok(None),
            Some((job, msg)) => match self.member_of(job) {
                Some(sub) => Ok(Some((sub, msg))),
                None => Err(TransportError::Protocol {
                    peer: job,
                    detail: format!("message with tag {tag:?} from outside this group"),
                }),
            },
        }
    }

    fn waker(&self) -> Waker {
        self.inner.waker()
    }

    fn abort(&self, reason: &str) {
        self.inner.abort(reason);
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn register(&self, buf: &[u8]) -> Result<(), TransportError> {
        self.inner.register(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hora_transport::{LocalTransport, TransportError};

    #[test]
    fn a_bad_peer_leaves_every_op_as_given() {
        let job: Arc<dyn Transport> = Arc::new(LocalTransport::create(3).remove(0));
        let sub = SubTransport::new(job, vec![0, 2]).unwrap();
        let mut buf = [0u8; 4];
        let data = [1u8; 4];
        let mut ops = [
            Op::send(1, Tag::new(1, 0), &data),
            Op::recv(5, Tag::new(1, 0), &mut buf),
        ];
        let err = sub
            .wait(&mut ops, Instant::now() + std::time::Duration::from_secs(5))
            .unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::InvalidPeer {
                    peer: 5,
                    size: 2,
                    me: 0
                }
            ),
            "{err:?}"
        );
        assert_eq!(ops.iter().map(Op::peer).collect::<Vec<_>>(), [1, 5]);
    }
}
