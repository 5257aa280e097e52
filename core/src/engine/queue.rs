//! The tensor queue: every operation of this rank from `submit` until its handle completes.
//!
//! It has two ends, like a channel. [`Submitter`] is the callers' end (held by the `Engine`,
//! used from any thread): it checks that a name is not already in flight, refuses work once the
//! engine is shut down or dead, and wakes the background thread. [`TensorQueue`] is the
//! background thread's end: it takes the newly submitted entries, keeps them by name while the
//! coordinator decides, hands them out when a response names them, completes their handles and,
//! when the engine stops, fails everything still queued.
//!
//! Cost per operation is what the engine had before this type existed: one lock by the caller,
//! one lock per batch to take new entries, one lock to free the name at completion, and the
//! same name strings (the in-flight set and the waiting table use `crate::fasthash`).

use std::sync::Arc;

use hora_transport::{AdaptiveSpin, Waker};
use parking_lot::Mutex;

use crate::coordinator::{GroupTag, Request};
use crate::error::Error;
use crate::fasthash::{FastMap, FastSet};
use crate::handle::{Completion, Handle, HandleState, TensorData};
use crate::process_set::SetView;

#[cfg(test)]
mod tests;

/// One operation taken from the queue for a response: its name, the caller's tensor (none for
/// barrier and join), and the handle to complete.
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) data: Option<Box<dyn TensorData>>,
    pub(crate) handle: Arc<HandleState>,
}

/// A submitted operation not yet taken by the background thread.
struct Submitted {
    req: Request,
    data: Option<Box<dyn TensorData>>,
    handle: Arc<HandleState>,
}

/// An operation sent to the coordinator and waiting for its response (its name is the key).
struct Waiting {
    data: Option<Box<dyn TensorData>>,
    handle: Arc<HandleState>,
}

/// What callers and the background thread share, under one lock.
#[derive(Default)]
struct State {
    new: Vec<Submitted>,
    /// Names submitted and not yet completed: a second submit of one of them is refused.
    in_flight: FastSet<String>,
    shutdown: bool,
    /// A timeline start (path, mark cycles) or stop (`None`) for the background thread.
    timeline: Option<Option<(std::path::PathBuf, bool)>>,
    /// Set once the background thread has stopped; later submits fail with it.
    dead: Option<Error>,
    /// The id of the next group this rank submits.
    next_group: u64,
}

struct Shared {
    state: Mutex<State>,
    waker: Waker,
    /// Spin budget of callers waiting on handles, shared by all of this rank's handles.
    spin: Arc<AdaptiveSpin>,
    /// For a process set's engine: how its errors are told in global ranks.
    view: Option<SetView>,
}

impl Shared {
    /// Completes `handle`, with an error told in the job's ranks when this is a set's queue.
    fn finish(&self, handle: &HandleState, result: Result<Completion, Error>) {
        match (&self.view, result) {
            (Some(view), Err(e)) => handle.complete(Err(view.renumber(e))),
            (_, result) => handle.complete(result),
        }
    }
}

/// Makes a queue whose callers wake the background thread through `waker`; handles spin up to
/// `spin` before sleeping.
/// `view` is set for a process set's engine.
pub(crate) fn new(
    rank: usize,
    waker: Waker,
    spin: Arc<AdaptiveSpin>,
    view: Option<SetView>,
) -> (Submitter, TensorQueue) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        waker,
        spin,
        view,
    });
    (
        Submitter {
            rank,
            shared: shared.clone(),
        },
        TensorQueue {
            shared,
            new: Vec::new(),
            waiting: FastMap::default(),
        },
    )
}

/// The callers' end of the queue.
pub(crate) struct Submitter {
    rank: usize,
    shared: Arc<Shared>,
}

impl Submitter {
    /// Why nothing can be queued any more: the engine died, or it was shut down.
    fn closed(&self, s: &State) -> Option<Error> {
        if let Some(err) = &s.dead {
            return Some(err.clone());
        }
        s.shutdown.then_some(Error::ShutDown {
            rank: self.rank,
            reason: None,
        })
    }

    /// Queues `req` (already checked against the job) and returns its handle; a name already
    /// in flight, a shut-down or a dead engine give a handle that has already failed.
    pub(crate) fn push(&self, req: Request, data: Option<Box<dyn TensorData>>) -> Handle {
        let state = HandleState::new(req.name.clone(), self.shared.spin.clone());
        let handle = Handle::new(state.clone());
        {
            let mut s = self.shared.state.lock();
            let refused = if let Some(err) = self.closed(&s) {
                Some(err)
            } else if !s.in_flight.insert(req.name.clone()) {
                Some(Error::InvalidArgument {
                    rank: self.rank,
                    tensor: req.name.clone(),
                    detail: duplicate_name(req.kind),
                })
            } else {
                None
            };
            if let Some(err) = refused {
                drop(s);
                self.shared.finish(&state, Err(err));
                return handle;
            }
            s.new.push(Submitted {
                req,
                data,
                handle: state,
            });
        }
        self.shared.waker.wake();
        handle
    }

    /// Queues a group as one unit: every member or none. The members get one group tag and sit
    /// next to each other in the queue, so the background thread takes them in one batch. When
    /// any member is refused (a name in flight or repeated in the group, a shut-down or dead
    /// engine), every member's handle fails with that member's error.
    pub(crate) fn push_group(
        &self,
        ops: Vec<(Request, Option<Box<dyn TensorData>>)>,
    ) -> Vec<Handle> {
        let states: Vec<Arc<HandleState>> = ops
            .iter()
            .map(|(req, _)| HandleState::new(req.name.clone(), self.shared.spin.clone()))
            .collect();
        let handles = states.iter().map(|s| Handle::new(s.clone())).collect();
        let size = u32::try_from(ops.len()).unwrap_or(u32::MAX);
        {
            let mut s = self.shared.state.lock();
            let refused = if let Some(err) = self.closed(&s) {
                Some(err)
            } else {
                let mut seen = FastSet::default();
                ops.iter().find_map(|(req, _)| {
                    let repeated = !seen.insert(req.name.as_str());
                    (repeated || s.in_flight.contains(&req.name)).then(|| Error::InvalidArgument {
                        rank: self.rank,
                        tensor: req.name.clone(),
                        detail: if repeated {
                            "this name appears twice in one group".to_string()
                        } else {
                            duplicate_name(req.kind)
                        },
                    })
                })
            };
            if let Some(err) = refused {
                drop(s);
                for state in &states {
                    self.shared.finish(state, Err(err.clone()));
                }
                return handles;
            }
            let tag = GroupTag {
                id: s.next_group,
                size,
            };
            s.next_group += 1;
            for ((mut req, data), handle) in ops.into_iter().zip(states) {
                s.in_flight.insert(req.name.clone());
                req.group = Some(tag);
                s.new.push(Submitted { req, data, handle });
            }
        }
        self.shared.waker.wake();
        handles
    }

    /// How many operations of this rank are submitted and not yet completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.state.lock().in_flight.len()
    }

    /// Fails `handle` right away with `err` (told in the job's ranks for a set's queue).
    pub(crate) fn refuse(&self, name: &str, err: Error) -> Handle {
        let state = HandleState::new(name.to_string(), self.shared.spin.clone());
        self.shared.finish(&state, Err(err));
        Handle::new(state)
    }

    /// Asks the background thread to start writing the timeline to `path` (rank 0), or to
    /// stop it (`None`).
    pub(crate) fn timeline(&self, to: Option<(std::path::PathBuf, bool)>) {
        self.shared.state.lock().timeline = Some(to);
        self.shared.waker.wake();
    }

    /// Asks the background thread to shut the job down; later submits fail with `ShutDown`.
    pub(crate) fn shutdown(&self) {
        self.shared.state.lock().shutdown = true;
        self.shared.waker.wake();
    }
}

/// The background thread's end of the queue.
pub(crate) struct TensorQueue {
    shared: Arc<Shared>,
    /// Swapped with the shared list of new entries, so neither side reallocates per batch.
    new: Vec<Submitted>,
    /// Entries whose requests went to the coordinator, by name, until a response names them.
    waiting: FastMap<String, Waiting>,
}

impl TensorQueue {
    /// Takes the newly submitted entries: each request goes to `sink` (for the coordinator) and
    /// its entry waits here for the response. Returns whether a shutdown was asked for.
    pub(crate) fn take_new(&mut self, mut sink: impl FnMut(Request)) -> bool {
        let shutdown = {
            let mut s = self.shared.state.lock();
            std::mem::swap(&mut s.new, &mut self.new);
            s.shutdown
        };
        for Submitted { req, data, handle } in self.new.drain(..) {
            self.waiting
                .insert(req.name.clone(), Waiting { data, handle });
            sink(req);
        }
        shutdown
    }

    /// A pending timeline start or stop, if one was asked for.
    pub(crate) fn take_timeline(&mut self) -> Option<Option<(std::path::PathBuf, bool)>> {
        self.shared.state.lock().timeline.take()
    }

    /// The entry a response names, if this rank submitted it (a joined rank has none).
    pub(crate) fn take(&mut self, name: &str) -> Option<Entry> {
        self.waiting.remove_entry(name).map(|(name, w)| Entry {
            name,
            data: w.data,
            handle: w.handle,
        })
    }

    /// The names waiting for a response, sorted (for error messages).
    pub(crate) fn waiting_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.waiting.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Completes an entry's handle and frees its name for reuse.
    pub(crate) fn complete(&self, entry: Entry, result: Result<Completion, Error>) {
        self.shared.state.lock().in_flight.remove(&entry.name);
        self.shared.finish(&entry.handle, result);
    }

    /// Fails every queued and future operation with `reason` (the engine has stopped).
    pub(crate) fn fail_everything(&mut self, reason: Error) {
        let mut s = self.shared.state.lock();
        s.dead = Some(reason.clone());
        let new = std::mem::take(&mut s.new);
        s.in_flight.clear();
        drop(s);
        for entry in new {
            self.shared.finish(&entry.handle, Err(reason.clone()));
        }
        for (_, entry) in self.waiting.drain() {
            self.shared.finish(&entry.handle, Err(reason.clone()));
        }
    }
}

/// Horovod's duplicate-name refusal, in our words: the name is taken until its handle completes.
fn duplicate_name(kind: crate::types::CollectiveKind) -> String {
    format!(
        "requested {kind} of a tensor with the same name as another tensor still being \
         processed on this rank; use a different name, or wait for the first handle"
    )
}
