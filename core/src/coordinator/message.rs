//! The control vocabulary: what a rank asks for ([`Request`]), what the coordinator decides
//! ([`Response`]), the compact messages that carry them ([`UpMsg`], [`DownMsg`]) and the fully
//! resolved [`Plan`] a rank executes.

use serde::{Deserialize, Serialize};

use crate::types::{CollectiveKind, DataType, ReduceOp};

/// One tensor that is ready on the submitting rank, with everything the ranks must agree on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Name that identifies the tensor on every rank.
    pub name: String,
    /// Which collective to run.
    pub kind: CollectiveKind,
    /// Element type.
    pub dtype: DataType,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// Reduction (Allreduce/Reducescatter); ignored otherwise.
    pub op: ReduceOp,
    /// Broadcast root rank; ignored otherwise.
    pub root: u32,
    /// Factor applied to the input before reducing.
    pub prescale: f64,
    /// Factor applied to the result after reducing.
    pub postscale: f64,
    /// Alltoall: rows of dim 0 sent to each rank (len == size), or empty for an even split.
    pub splits: Vec<u64>,
    /// The group this request was submitted in, if any. Not encoded with the request: on the
    /// wire a group is one [`UpItem::Group`] around its members, so cached members keep
    /// travelling as ids; the coordinator restores the tag when it unpacks the group.
    #[serde(skip)]
    pub group: Option<GroupTag>,
}

/// Which group a request belongs to on its rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupTag {
    /// The submitting rank's own number for the group (unique per engine, never reused).
    pub id: u64,
    /// How many requests the group has.
    pub size: u32,
}

impl Request {
    /// A request with neutral defaults (sum, root 0, scales 1, even split).
    pub fn new(
        name: impl Into<String>,
        kind: CollectiveKind,
        dtype: DataType,
        shape: Vec<u64>,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            dtype,
            shape,
            op: ReduceOp::Sum,
            root: 0,
            prescale: 1.0,
            postscale: 1.0,
            splits: Vec::new(),
            group: None,
        }
    }

    /// A join request: this rank has no more tensors and takes part with neutral input.
    pub fn join() -> Self {
        Self::new("join", CollectiveKind::Join, DataType::U8, Vec::new())
    }
}

/// One collective to run, resolved so that every rank — including a joined rank that has no
/// tensor — can run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Which collective to run.
    pub kind: CollectiveKind,
    /// Element type of every tensor.
    pub dtype: DataType,
    /// Reduction for Allreduce/Reducescatter.
    pub op: ReduceOp,
    /// Broadcast: root rank. Join: the last rank that joined.
    pub root: u32,
    /// Factor applied to the input before reducing.
    pub prescale: f64,
    /// Factor applied to the result after reducing.
    pub postscale: f64,
    /// The tensors; more than one only for fused allreduces.
    pub tensors: Vec<TensorInfo>,
    /// Set when negotiation failed: every rank fails these names with it.
    pub error: Option<ResponseError>,
}

impl Response {
    /// The response to `req` alone, under `name`: its kind, dtype, op, root, scales and shape,
    /// with `error` if negotiation failed.
    pub fn for_request(
        name: impl Into<String>,
        req: &Request,
        error: Option<ResponseError>,
    ) -> Self {
        Self {
            kind: req.kind,
            dtype: req.dtype,
            op: req.op,
            root: req.root,
            prescale: req.prescale,
            postscale: req.postscale,
            tensors: vec![TensorInfo::new(name, req.shape.clone())],
            error,
        }
    }

    /// Total payload bytes of this response on a rank holding the agreed shapes.
    pub fn bytes(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |acc, t| acc.saturating_add(t.bytes(self.dtype)))
    }
}

/// One tensor inside a [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Agreed shape (Allgather/Alltoall: the first submitting rank's shape, rank 0's unless it
    /// joined).
    pub shape: Vec<u64>,
    /// Allgather: dim 0 of each rank (len == size, 0 for a joined rank); empty otherwise.
    pub first_dims: Vec<u64>,
    /// Alltoall: `splits[src][dst]` rows; empty otherwise.
    pub splits: Vec<Vec<u64>>,
}

impl TensorInfo {
    /// A tensor with only a name and shape.
    pub fn new(name: impl Into<String>, shape: Vec<u64>) -> Self {
        Self {
            name: name.into(),
            shape,
            first_dims: Vec::new(),
            splits: Vec::new(),
        }
    }

    /// Number of elements of the agreed shape (saturating: garbage never overflows).
    pub fn elements(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Bytes of the agreed shape for `dtype`.
    pub fn bytes(&self, dtype: DataType) -> u64 {
        self.elements().saturating_mul(dtype.size() as u64)
    }
}

/// Why negotiation of a tensor failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseError {
    /// The field that disagreed: "kind", "dtype", "op", "root", "prescale", "postscale",
    /// "shape", "splits", "join" or "stall".
    pub field: String,
    /// Human-readable: names the tensor, the field and each rank's value.
    pub message: String,
    /// The ranks at fault: those whose value differs from the lowest submitting rank, those
    /// with invalid values, or those missing (stall).
    pub ranks: Vec<u32>,
}

/// What one rank executes after applying one [`DownMsg`], in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Collectives to run, in order.
    pub responses: Vec<Response>,
    /// The job is shutting down: pending names fail with ShutDown.
    pub shutdown: bool,
}

/// One submitted tensor inside an [`UpMsg`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UpItem {
    /// The request equals this rank's cache entry with this id.
    Cached(u32),
    /// A request sent in full (new name, changed params, or cache disabled).
    Full(Request),
    /// A group submitted as one unit: its members (never nested groups) in submission order.
    /// The coordinator answers it only once every member is ready on every rank, and every
    /// rank must have grouped the same names.
    Group {
        /// The rank's own number for the group (its size is the number of members).
        id: u64,
        /// The members, each cached or in full.
        items: Vec<Self>,
    },
}

/// A rank → coordinator message.
///
/// Cache hits travel as [`UpItem::Cached`] ids in the rank's submission order: a varint list
/// (postcard encodes `u32` as a varint), 2–4 bytes per hit. A bit-vector was rejected because ids
/// are never reused, so the id space grows with churn and a bit-vector would grow with it, and
/// because an interleaved list keeps the submission order, which decides the response order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpMsg {
    /// Number of [`DownMsg`]s the rank had applied when it encoded this message; it tells the
    /// coordinator which cache ids the rank could still be using.
    pub epoch: u64,
    /// Newly ready requests, in submission order.
    pub items: Vec<UpItem>,
    /// This rank asks the job to shut down.
    pub shutdown: bool,
}

/// A cache insertion announced by the coordinator, applied by every rank at the same point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInsert {
    /// The new, never-reused id of the entry.
    pub id: u32,
    /// Ids removed first (the name's previous entry and the least recently used victim).
    pub evict: Vec<u32>,
}

/// One unfused response inside a [`DownMsg`] group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DownItem {
    /// The response equals the cache entry with this id (which becomes most recently used).
    Cached(u32),
    /// A response sent in full, optionally stored in the cache.
    Full {
        /// The single-tensor response.
        response: Response,
        /// Where to store it, if the coordinator caches it.
        cache: Option<CacheInsert>,
    },
}

/// A coordinator → every rank message; every rank receives the same stream in the same order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DownMsg {
    /// Index of this message in the stream (0-based).
    pub seq: u64,
    /// Responses to run in order; each inner list is fused into one [`Response`].
    pub groups: Vec<Vec<DownItem>>,
    /// Shut the job down after these responses.
    pub shutdown: bool,
    /// Autotune: every rank switches to these values before running these responses.
    pub knobs: Option<Knobs>,
}

/// The values of the knobs autotune changes while the job runs, the same on every rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knobs {
    /// Largest fused allreduce, bytes (the coordinator's fusion).
    pub fusion_threshold: u64,
    /// Largest pipeline segment of the ring algorithms, bytes.
    pub segment_bytes: u64,
    /// Whether ranks and coordinator use the response cache.
    pub cache_enabled: bool,
}

/// A [`DownMsg`] a rank cannot apply: it is out of order or refers to state the rank lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The message is not the next one in the stream.
    #[error("coordinator message {got} arrived but {expected} was expected")]
    OutOfOrder {
        /// The sequence number expected next.
        expected: u64,
        /// The sequence number received.
        got: u64,
    },
    /// A cached response id this rank does not hold.
    #[error("coordinator referred to unknown cache id {0}")]
    UnknownCacheId(u32),
    /// A group that cannot be fused (not all allreduces with the same dtype, op and scales).
    #[error("coordinator sent an unfusable group: {0}")]
    BadGroup(String),
}
