//! A communicator handle and the blocking MPI collectives hora's engine runs natively.
//!
//! Collectives here are MPI's own blocking calls: they are as fast as the library makes them,
//! but cannot be interrupted, so they do not honour deadlines. A rank that dies makes `mpirun`
//! end the whole job, so none of them can wait forever on a dead peer.

use std::ffi::{c_int, c_void};

use hora_transport::TransportError;
use mpi::ffi;

use crate::init::{error_string, state};

/// Largest element count passed to one MPI call (counts are C ints).
const MAX_COUNT: usize = 1 << 30;

/// Element types MPI reduces natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpiType {
    /// `MPI_UINT8_T`.
    U8,
    /// `MPI_INT8_T`.
    I8,
    /// `MPI_INT32_T`.
    I32,
    /// `MPI_INT64_T`.
    I64,
    /// `MPI_FLOAT`.
    F32,
    /// `MPI_DOUBLE`.
    F64,
}

impl MpiType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::I32 | Self::F32 => 4,
            Self::I64 | Self::F64 => 8,
        }
    }

    fn raw(self) -> ffi::MPI_Datatype {
        // SAFETY: reading link-time constants of the MPI library.
        unsafe {
            match self {
                Self::U8 => ffi::RSMPI_UINT8_T,
                Self::I8 => ffi::RSMPI_INT8_T,
                Self::I32 => ffi::RSMPI_INT32_T,
                Self::I64 => ffi::RSMPI_INT64_T,
                Self::F32 => ffi::RSMPI_FLOAT,
                Self::F64 => ffi::RSMPI_DOUBLE,
            }
        }
    }
}

/// Reductions MPI has built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpiOp {
    /// `MPI_SUM`.
    Sum,
    /// `MPI_MIN`.
    Min,
    /// `MPI_MAX`.
    Max,
    /// `MPI_PROD`.
    Prod,
}

impl MpiOp {
    fn raw(self) -> ffi::MPI_Op {
        // SAFETY: reading link-time constants of the MPI library.
        unsafe {
            match self {
                Self::Sum => ffi::RSMPI_SUM,
                Self::Min => ffi::RSMPI_MIN,
                Self::Max => ffi::RSMPI_MAX,
                Self::Prod => ffi::RSMPI_PROD,
            }
        }
    }
}

/// An MPI communicator: its own matching context, errors returned as codes.
///
/// Communicators are never freed: `MPI_Comm_free` must be called by every member, and a
/// failing job could hang in it. A job creates a handful.
#[derive(Debug)]
pub struct Comm {
    raw: ffi::MPI_Comm,
    rank: usize,
    size: usize,
}

// SAFETY: MPI was initialised with MPI_THREAD_MULTIPLE (checked in `initialize`), so any thread
// may use a communicator; the handle itself is an immutable pointer or integer.
unsafe impl Send for Comm {}
// SAFETY: as above.
unsafe impl Sync for Comm {}

pub(crate) fn check(rc: c_int, what: &str) -> Result<(), TransportError> {
    if rc == ffi::MPI_SUCCESS as c_int {
        Ok(())
    } else {
        Err(mpi_error(format!("{what} failed: {}", error_string(rc))))
    }
}

pub(crate) fn mpi_error(detail: String) -> TransportError {
    TransportError::Io {
        peer: None,
        source: std::io::Error::other(detail),
    }
}

fn count(n: usize, what: &str) -> Result<c_int, TransportError> {
    c_int::try_from(n).map_err(|_| mpi_error(format!("{what}: {n} does not fit an MPI count")))
}

impl Comm {
    /// `MPI_COMM_WORLD` (duplicated, so hora's traffic has its own context), initialising MPI.
    pub fn world() -> Result<Self, TransportError> {
        crate::init::initialize().map_err(mpi_error)?;
        // SAFETY: MPI is initialised.
        Self::wrap(unsafe { ffi::RSMPI_COMM_WORLD })?.dup()
    }

    fn wrap(raw: ffi::MPI_Comm) -> Result<Self, TransportError> {
        let (mut rank, mut size): (c_int, c_int) = (0, 0);
        // SAFETY: `raw` is a valid communicator; plain out-parameters.
        unsafe {
            check(ffi::MPI_Comm_rank(raw, &mut rank), "MPI_Comm_rank")?;
            check(ffi::MPI_Comm_size(raw, &mut size), "MPI_Comm_size")?;
            check(
                ffi::MPI_Comm_set_errhandler(raw, ffi::RSMPI_ERRORS_RETURN),
                "MPI_Comm_set_errhandler",
            )?;
        }
        Ok(Self {
            raw,
            rank: rank as usize,
            size: size as usize,
        })
    }

    /// A new communicator over the same ranks with its own matching context (collective).
    pub fn dup(&self) -> Result<Self, TransportError> {
        let mut out = std::mem::MaybeUninit::<ffi::MPI_Comm>::uninit();
        // SAFETY: valid communicator; MPI writes the new handle.
        check(
            unsafe { ffi::MPI_Comm_dup(self.raw, out.as_mut_ptr()) },
            "MPI_Comm_dup",
        )?;
        Self::wrap(unsafe { out.assume_init() })
    }

    /// A communicator of this one's first `n` ranks; `None` on the others (collective).
    pub fn first(&self, n: usize) -> Result<Option<Self>, TransportError> {
        let color = if self.rank < n {
            0
        } else {
            // SAFETY: reading a link-time constant.
            unsafe { ffi::RSMPI_UNDEFINED }
        };
        let mut out = std::mem::MaybeUninit::<ffi::MPI_Comm>::uninit();
        // SAFETY: valid communicator; MPI writes the new handle (MPI_COMM_NULL for UNDEFINED).
        check(
            unsafe { ffi::MPI_Comm_split(self.raw, color, self.rank as c_int, out.as_mut_ptr()) },
            "MPI_Comm_split",
        )?;
        if self.rank < n {
            Self::wrap(unsafe { out.assume_init() }).map(Some)
        } else {
            Ok(None)
        }
    }

    /// This process's rank in the communicator.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn raw(&self) -> ffi::MPI_Comm {
        self.raw
    }

    /// `MPI_Barrier`.
    pub fn barrier(&self) -> Result<(), TransportError> {
        // SAFETY: valid communicator.
        check(unsafe { ffi::MPI_Barrier(self.raw) }, "MPI_Barrier")
    }

    /// Whether this MPI library reduces `ty` with `op` correctly; when not, use another
    /// reduction (MPICH's `MPI_MAX`/`MPI_MIN` treat `MPI_UINT8_T` as signed).
    pub fn reduces_natively(ty: MpiType, op: MpiOp) -> bool {
        let broken_u8 = state().is_ok_and(|s| s.signed_u8_minmax);
        !(broken_u8 && ty == MpiType::U8 && matches!(op, MpiOp::Min | MpiOp::Max))
    }

    /// In-place `MPI_Allreduce` of `buf`, whole elements of `ty`.
    pub fn allreduce(&self, buf: &mut [u8], ty: MpiType, op: MpiOp) -> Result<(), TransportError> {
        let esize = ty.size();
        if !buf.len().is_multiple_of(esize) {
            return Err(mpi_error(format!(
                "allreduce of {} bytes is not whole {ty:?} elements",
                buf.len()
            )));
        }
        let in_place = state().map_err(mpi_error)?.in_place;
        let mut copy = Vec::new();
        for chunk in buf.chunks_mut(MAX_COUNT * esize) {
            let n = count(chunk.len() / esize, "allreduce")?;
            let send: *const c_void = match in_place {
                Some(p) => p as *const c_void,
                None => {
                    copy.clear();
                    copy.extend_from_slice(chunk);
                    copy.as_ptr().cast()
                }
            };
            // SAFETY: `chunk` holds `n` elements of `ty`; the send side is MPI_IN_PLACE or a
            // copy of the same length.
            check(
                unsafe {
                    ffi::MPI_Allreduce(
                        send,
                        chunk.as_mut_ptr().cast(),
                        n,
                        ty.raw(),
                        op.raw(),
                        self.raw,
                    )
                },
                "MPI_Allreduce",
            )?;
        }
        Ok(())
    }

    /// `MPI_Bcast` of `buf` from `root`.
    pub fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<(), TransportError> {
        for chunk in buf.chunks_mut(MAX_COUNT) {
            let n = count(chunk.len(), "broadcast")?;
            // SAFETY: `chunk` is `n` bytes; every rank passes the same length.
            check(
                unsafe {
                    ffi::MPI_Bcast(
                        chunk.as_mut_ptr().cast(),
                        n,
                        ffi::RSMPI_UINT8_T,
                        root as c_int,
                        self.raw,
                    )
                },
                "MPI_Bcast",
            )?;
        }
        Ok(())
    }

    /// `MPI_Allgatherv` of bytes: rank r contributes `counts[r]` bytes; `output` holds them all
    /// in rank order. Totals beyond 2 GiB are refused (the caller falls back to its ring).
    pub fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        counts: &[usize],
    ) -> Result<(), TransportError> {
        let total: usize = counts.iter().sum();
        if counts.len() != self.size || total != output.len() || counts[self.rank] != input.len() {
            return Err(mpi_error(format!(
                "allgatherv: {} counts summing to {total} for {} ranks, input {} bytes, output {}",
                counts.len(),
                self.size,
                input.len(),
                output.len()
            )));
        }
        count(total, "allgatherv total")?;
        let (c, d) = counts_displs(counts)?;
        // SAFETY: counts and displacements lie within `output`; `input` is counts[rank] bytes.
        check(
            unsafe {
                ffi::MPI_Allgatherv(
                    sbuf(input),
                    input.len() as c_int,
                    ffi::RSMPI_UINT8_T,
                    rbuf(output),
                    c.as_ptr(),
                    d.as_ptr(),
                    ffi::RSMPI_UINT8_T,
                    self.raw,
                )
            },
            "MPI_Allgatherv",
        )
    }

    /// `MPI_Alltoallv` of bytes, blocks consecutive in rank order on both sides.
    pub fn alltoallv(
        &self,
        input: &[u8],
        send: &[usize],
        output: &mut [u8],
        recv: &[usize],
    ) -> Result<(), TransportError> {
        if send.len() != self.size
            || recv.len() != self.size
            || send.iter().sum::<usize>() != input.len()
            || recv.iter().sum::<usize>() != output.len()
        {
            return Err(mpi_error(
                "alltoallv: counts do not match the buffers or the job size".into(),
            ));
        }
        count(input.len(), "alltoallv input")?;
        count(output.len(), "alltoallv output")?;
        let (sc, sd) = counts_displs(send)?;
        let (rc, rd) = counts_displs(recv)?;
        // SAFETY: counts and displacements lie within the buffers (checked above).
        check(
            unsafe {
                ffi::MPI_Alltoallv(
                    sbuf(input),
                    sc.as_ptr(),
                    sd.as_ptr(),
                    ffi::RSMPI_UINT8_T,
                    rbuf(output),
                    rc.as_ptr(),
                    rd.as_ptr(),
                    ffi::RSMPI_UINT8_T,
                    self.raw,
                )
            },
            "MPI_Alltoallv",
        )
    }

    /// `MPI_Reduce_scatter`: reduces `input` across ranks and leaves block r (`counts[r]`
    /// elements) on rank r in `output`.
    pub fn reduce_scatter(
        &self,
        input: &[u8],
        output: &mut [u8],
        counts: &[usize],
        ty: MpiType,
        op: MpiOp,
    ) -> Result<(), TransportError> {
        let esize = ty.size();
        let total: usize = counts.iter().sum();
        if counts.len() != self.size
            || total * esize != input.len()
            || counts[self.rank] * esize != output.len()
        {
            return Err(mpi_error(
                "reduce_scatter: counts do not match the buffers or the job size".into(),
            ));
        }
        count(total, "reduce_scatter total")?;
        let c: Vec<c_int> = counts.iter().map(|&n| n as c_int).collect();
        // SAFETY: buffer lengths checked against the counts above.
        check(
            unsafe {
                ffi::MPI_Reduce_scatter(
                    sbuf(input),
                    rbuf(output),
                    c.as_ptr(),
                    ty.raw(),
                    op.raw(),
                    self.raw,
                )
            },
            "MPI_Reduce_scatter",
        )
    }
}

/// Stands in for the buffer of an empty slice, whose dangling address (1) is Open MPI's
/// `MPI_IN_PLACE`: passing it would change what the call means. MPI never touches it (count 0).
static EMPTY: [u8; 8] = [0; 8];

/// The send-side address of `b` for MPI.
pub(crate) fn sbuf(b: &[u8]) -> *const c_void {
    if b.is_empty() {
        EMPTY.as_ptr().cast()
    } else {
        b.as_ptr().cast()
    }
}

/// The receive-side address of `b` for MPI.
pub(crate) fn rbuf(b: &mut [u8]) -> *mut c_void {
    if b.is_empty() {
        // Never written: MPI moves no bytes for an empty buffer.
        EMPTY.as_ptr().cast_mut().cast()
    } else {
        b.as_mut_ptr().cast()
    }
}

fn counts_displs(counts: &[usize]) -> Result<(Vec<c_int>, Vec<c_int>), TransportError> {
    let mut c = Vec::with_capacity(counts.len());
    let mut d = Vec::with_capacity(counts.len());
    let mut at = 0usize;
    for &n in counts {
        c.push(count(n, "count")?);
        d.push(count(at, "displacement")?);
        at += n;
    }
    Ok((c, d))
}
