//! Threads as ranks: an in-process transport for fast, deterministic algorithm tests.
//!
//! Every rank's mailbox lives in one shared hub behind a mutex; a send copies the message into
//! the receiver's mailbox, a receive takes it out. It is simple rather than fast: its job is to
//! let algorithms be tested with many ranks in one process, and to define the reference
//! behaviour the conformance suite expects of real transports.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::{Op, OpKind, Rank, Tag, Transport, TransportError, Waker};

type Mailbox = BTreeMap<(Tag, Rank), VecDeque<Vec<u8>>>;

#[derive(Debug)]
struct HubState {
    /// `mail[dst]` holds messages waiting for rank `dst`, keyed by (tag, source).
    mail: Vec<Mailbox>,
    /// `dead[r]` is set once rank `r` aborted; its peers then fail instead of waiting.
    dead: Vec<Option<String>>,
    woken: Vec<bool>,
}

#[derive(Debug)]
struct Hub {
    state: Mutex<HubState>,
    conds: Vec<Condvar>,
}

impl Hub {
    fn notify_all(&self) {
        for c in &self.conds {
            c.notify_all();
        }
    }
}

/// One rank of an in-process job; create a whole job with [`LocalTransport::create`].
#[derive(Debug, Clone)]
pub struct LocalTransport {
    rank: Rank,
    size: usize,
    hub: Arc<Hub>,
}

impl LocalTransport {
    /// Creates the `size` ranks of one in-process job, in rank order.
    pub fn create(size: usize) -> Vec<Self> {
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState {
                mail: (0..size).map(|_| Mailbox::new()).collect(),
                dead: vec![None; size],
                woken: vec![false; size],
            }),
            conds: (0..size).map(|_| Condvar::new()).collect(),
        });
        (0..size)
            .map(|rank| Self {
                rank,
                size,
                hub: hub.clone(),
            })
            .collect()
    }

    fn check_peer(&self, peer: Rank) -> Result<(), TransportError> {
        if peer >= self.size || peer == self.rank {
            return Err(TransportError::InvalidPeer {
                peer,
                size: self.size,
                me: self.rank,
            });
        }
        Ok(())
    }

    fn check_alive(&self, st: &HubState, peer: Option<Rank>) -> Result<(), TransportError> {
        if let Some(reason) = &st.dead[self.rank] {
            return Err(TransportError::Aborted {
                reason: reason.clone(),
            });
        }
        let dead_peer = match peer {
            Some(p) => st.dead[p].as_ref().map(|r| (p, r)),
            None => st
                .dead
                .iter()
                .enumerate()
                .find_map(|(p, r)| r.as_ref().map(|r| (p, r))),
        };
        if let Some((peer, reason)) = dead_peer {
            return Err(TransportError::ConnectionLost {
                peer,
                detail: format!("peer aborted: {reason}"),
            });
        }
        Ok(())
    }

    /// Moves what can move; returns whether all ops are complete.
    fn progress_locked(
        &self,
        st: &mut HubState,
        ops: &mut [Op<'_>],
    ) -> Result<bool, TransportError> {
        let mut all = true;
        for op in ops.iter_mut() {
            if op.is_complete() {
                continue;
            }
            self.check_peer(op.peer())?;
            match op.kind() {
                OpKind::Send => {
                    if let Some(reason) = &st.dead[op.peer()] {
                        return Err(TransportError::ConnectionLost {
                            peer: op.peer(),
                            detail: format!("peer aborted: {reason}"),
                        });
                    }
                    let msg = op.remaining_send().to_vec();
                    st.mail[op.peer()]
                        .entry((op.tag(), self.rank))
                        .or_default()
                        .push_back(msg);
                    op.mark_started();
                    op.advance(op.len());
                    self.hub.conds[op.peer()].notify_all();
                }
                OpKind::Recv => {
                    let key = (op.tag(), op.peer());
                    let queue = st.mail[self.rank].get_mut(&key);
                    match queue.and_then(|q| q.pop_front()) {
                        Some(msg) => {
                            if msg.len() != op.len() {
                                return Err(TransportError::Protocol {
                                    peer: op.peer(),
                                    detail: format!(
                                        "message {:?} is {} bytes, receive expected {}",
                                        op.tag(),
                                        msg.len(),
                                        op.len()
                                    ),
                                });
                            }
                            op.remaining_recv().copy_from_slice(&msg);
                            op.mark_started();
                            op.advance(msg.len());
                        }
                        None => all = false,
                    }
                }
            }
        }
        Ok(all)
    }
}

impl Transport for LocalTransport {
    fn rank(&self) -> Rank {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn progress(&self, ops: &mut [Op<'_>]) -> Result<bool, TransportError> {
        let mut st = self.hub.state.lock();
        self.check_alive(&st, Some(self.rank))?;
        self.progress_locked(&mut st, ops)
    }

    fn wait(&self, ops: &mut [Op<'_>], deadline: Instant) -> Result<(), TransportError> {
        let start = Instant::now();
        let mut st = self.hub.state.lock();
        loop {
            if let Some(reason) = &st.dead[self.rank] {
                return Err(TransportError::Aborted {
                    reason: reason.clone(),
                });
            }
            if self.progress_locked(&mut st, ops)? {
                return Ok(());
            }
            // Only peers we still wait on matter: a finished exchange with a dead rank is fine.
            for op in ops.iter().filter(|o| !o.is_complete()) {
                self.check_alive(&st, Some(op.peer()))?;
            }
            if self.hub.conds[self.rank]
                .wait_until(&mut st, deadline)
                .timed_out()
            {
                if self.progress_locked(&mut st, ops)? {
                    return Ok(());
                }
                let pending = ops.iter().find(|o| !o.is_complete());
                return Err(TransportError::Timeout {
                    peer: pending.map(|o| o.peer()),
                    after: start.elapsed(),
                    what: format!("{:?}", pending.map(|o| (o.kind(), o.tag()))),
                });
            }
        }
    }

    fn send_msg(&self, peer: Rank, tag: Tag, msg: &[u8]) -> Result<(), TransportError> {
        self.progress(&mut [Op::send(peer, tag, msg)]).map(|_| ())
    }

    fn recv_msg(
        &self,
        from: Option<Rank>,
        tag: Tag,
        deadline: Instant,
    ) -> Result<Option<(Rank, Vec<u8>)>, TransportError> {
        if let Some(p) = from {
            self.check_peer(p)?;
        }
        let start = Instant::now();
        let mut st = self.hub.state.lock();
        loop {
            let mailbox = &mut st.mail[self.rank];
            let found = match from {
                Some(p) => mailbox
                    .get_mut(&(tag, p))
                    .and_then(|q| q.pop_front())
                    .map(|m| (p, m)),
                None => mailbox
                    .range_mut((tag, 0)..=(tag, Rank::MAX))
                    .find_map(|(&(_, src), q)| q.pop_front().map(|m| (src, m))),
            };
            if let Some(found) = found {
                return Ok(Some(found));
            }
            if std::mem::take(&mut st.woken[self.rank]) {
                return Ok(None);
            }
            self.check_alive(&st, from)?;
            if self.hub.conds[self.rank]
                .wait_until(&mut st, deadline)
                .timed_out()
            {
                return Err(TransportError::Timeout {
                    peer: from,
                    after: start.elapsed(),
                    what: format!("a message with {tag:?}"),
                });
            }
        }
    }

    fn waker(&self) -> Waker {
        let hub = self.hub.clone();
        let rank = self.rank;
        Waker::new(move || {
            hub.state.lock().woken[rank] = true;
            hub.conds[rank].notify_all();
        })
    }

    fn abort(&self, reason: &str) {
        let mut st = self.hub.state.lock();
        if st.dead[self.rank].is_none() {
            st.dead[self.rank] = Some(reason.to_string());
        }
        drop(st);
        self.hub.notify_all();
    }
}
