//! Process-wide MPI start-up: `MPI_Init_thread(MPI_THREAD_MULTIPLE)` once, `MPI_Finalize` at
//! exit, and the facts about the library the rest of the crate needs.

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use mpi::ffi;

/// What start-up found out.
#[derive(Debug)]
pub(crate) struct Init {
    /// `MPI_IN_PLACE` as the library defines it (a macro, so the bindings lack it): 1 in Open
    /// MPI, -1 in MPICH and its derivatives; `None` for a library we do not recognise, where
    /// in-place collectives copy their input instead.
    pub(crate) in_place: Option<usize>,
    /// The largest tag value (`MPI_TAG_UB`).
    pub(crate) tag_ub: c_int,
    /// `MPI_Get_library_version`.
    pub(crate) version: String,
    /// MPICH (4.0.2 as Debian ships it) compares `MPI_UINT8_T` as signed in `MPI_MAX` and
    /// `MPI_MIN` (max(172, 0) = 0), so those go to hora's own reduction.
    pub(crate) signed_u8_minmax: bool,
}

static INIT: OnceLock<Result<Init, String>> = OnceLock::new();

/// Set once any transport of this process aborted: the job has failed.
static ABORTED: AtomicBool = AtomicBool::new(false);

/// Records that this process's job failed, so exit skips `MPI_Finalize` (see
/// `finalize_at_exit`).
pub(crate) fn mark_aborted() {
    ABORTED.store(true, Ordering::Release);
}

/// Finalises MPI now, if it is initialised and not finalised yet; for programs that abort a
/// transport on purpose and still end cleanly (tests). Nothing may use MPI afterwards.
pub fn finalize() {
    let (mut init, mut done): (c_int, c_int) = (0, 0);
    // SAFETY: both calls may be made at any time.
    unsafe {
        ffi::MPI_Initialized(&mut init);
        ffi::MPI_Finalized(&mut done);
        if init != 0 && done == 0 {
            ffi::MPI_Finalize();
        }
    }
}

/// Initialises MPI with `MPI_THREAD_MULTIPLE` (once per process; a library that someone else
/// initialised is used as it is, if it provides that level). MPI is finalised at process exit
/// when this call initialised it.
pub fn initialize() -> Result<(), String> {
    state().map(|_| ())
}

/// The MPI library's version string.
pub fn library_version() -> Result<String, String> {
    state().map(|s| s.version.clone())
}

pub(crate) fn state() -> Result<&'static Init, String> {
    INIT.get_or_init(init).as_ref().map_err(Clone::clone)
}

/// At exit, a process whose job failed skips `MPI_Finalize`: it would wait for peers that may
/// be stuck in a blocking collective, hanging the job. The MPI launcher sees a process end
/// without finalising and ends the whole job.
extern "C" fn finalize_at_exit() {
    if !ABORTED.load(Ordering::Acquire) {
        finalize();
    }
}

fn init() -> Result<Init, String> {
    // SAFETY: reading a link-time constant of the MPI library.
    let multiple = unsafe { ffi::RSMPI_THREAD_MULTIPLE };
    let mut initialised: c_int = 0;
    // SAFETY: plain out-parameters; these calls are allowed before MPI_Init.
    unsafe { ffi::MPI_Initialized(&mut initialised) };
    let mut provided: c_int = 0;
    if initialised == 0 {
        // SAFETY: null argc/argv are allowed by MPI-2 and later.
        let rc = unsafe {
            ffi::MPI_Init_thread(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                multiple,
                &mut provided,
            )
        };
        if rc != ffi::MPI_SUCCESS as c_int {
            return Err(format!("MPI_Init_thread failed with error code {rc}"));
        }
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(finalize_at_exit) };
    } else {
        // SAFETY: MPI is initialised.
        unsafe { ffi::MPI_Query_thread(&mut provided) };
    }
    if provided < multiple {
        return Err(format!(
            "the MPI library provides thread level {provided}, but hora needs \
             MPI_THREAD_MULTIPLE ({multiple}): its engine thread and the caller's threads both use MPI"
        ));
    }
    // SAFETY: MPI is initialised; errors on our communicators come back as codes from now on.
    unsafe {
        ffi::MPI_Comm_set_errhandler(ffi::RSMPI_COMM_WORLD, ffi::RSMPI_ERRORS_RETURN);
    }
    let version = version_string();
    let in_place = if version.contains("Open MPI") {
        Some(1)
    } else if version.contains("MPICH")
        || version.contains("Intel(R) MPI")
        || version.contains("MVAPICH")
    {
        Some(usize::MAX)
    } else {
        None
    };
    let mut ub: *mut c_int = std::ptr::null_mut();
    let mut flag: c_int = 0;
    // SAFETY: MPI_TAG_UB's attribute value is a pointer to an int owned by the library.
    unsafe {
        ffi::MPI_Comm_get_attr(
            ffi::RSMPI_COMM_WORLD,
            ffi::MPI_TAG_UB as c_int,
            (&mut ub as *mut *mut c_int).cast::<c_void>(),
            &mut flag,
        );
    }
    // The standard guarantees at least 32767.
    let tag_ub = if flag != 0 && !ub.is_null() {
        // SAFETY: the MPI call above succeeded, so it wrote this handle (or value).
        unsafe { *ub }
    } else {
        32767
    };
    let signed_u8_minmax = version.contains("MPICH");
    Ok(Init {
        in_place,
        tag_ub,
        version,
        signed_u8_minmax,
    })
}

fn version_string() -> String {
    let mut buf = vec![0 as c_char; 8192];
    let mut len: c_int = 0;
    // SAFETY: the buffer is larger than MPI_MAX_LIBRARY_VERSION_STRING in both MPIs.
    unsafe { ffi::MPI_Get_library_version(buf.as_mut_ptr(), &mut len) };
    let bytes: Vec<u8> = buf[..len.clamp(0, 8192) as usize]
        .iter()
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes)
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('\0')
        .to_string()
}

/// The text of an MPI error code.
pub(crate) fn error_string(code: c_int) -> String {
    let mut buf = vec![0 as c_char; 1024];
    let mut len: c_int = 0;
    // SAFETY: the buffer is larger than MPI_MAX_ERROR_STRING.
    let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr(), &mut len) };
    if rc != ffi::MPI_SUCCESS as c_int {
        return format!("MPI error {code}");
    }
    let bytes: Vec<u8> = buf[..len.clamp(0, 1024) as usize]
        .iter()
        .map(|&c| c as u8)
        .collect();
    format!("{} (MPI error {code})", String::from_utf8_lossy(&bytes))
}

/// The error class of an MPI error code.
pub(crate) fn error_class(code: c_int) -> c_int {
    let mut class: c_int = code;
    // SAFETY: plain out-parameter.
    unsafe { ffi::MPI_Error_class(code, &mut class) };
    class
}
