//! Encoding and decoding of store requests and responses (the format is in the module docs of
//! [`super`]). Each message is assembled into one buffer so it leaves in one write.

use std::io::{self, Read, Write};
use std::time::Duration;

use super::{MAX_KEY_LEN, MAX_VALUE_LEN};

pub(super) const OP_SET: u8 = 1;
pub(super) const OP_GET: u8 = 2;
pub(super) const OP_ADD: u8 = 3;

/// Response status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Status {
    Ok = 0,
    Timeout = 1,
    TooLarge = 2,
    NotCounter = 3,
    BadRequest = 4,
    ShutDown = 5,
}

impl Status {
    pub(super) fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Ok,
            1 => Self::Timeout,
            2 => Self::TooLarge,
            3 => Self::NotCounter,
            4 => Self::BadRequest,
            5 => Self::ShutDown,
            _ => return None,
        })
    }
}

/// A decoded request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request {
    Set { key: String, value: Vec<u8> },
    Get { key: String, wait: Duration },
    Add { key: String, delta: i64 },
}

/// Why a request could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The connection failed.
    Io(io::Error),
    /// The request is malformed or over the limits; answer with this status, then hang up
    /// (the rest of the stream cannot be trusted to be in step).
    Reject(Status, String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn encode_key(buf: &mut Vec<u8>, op: u8, key: &str) {
    buf.push(op);
    // Callers have checked the key against MAX_KEY_LEN, which fits in u32.
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
}

pub(super) fn encode_set(key: &str, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + key.len() + value.len());
    encode_key(&mut b, OP_SET, key);
    b.extend_from_slice(&(value.len() as u32).to_le_bytes());
    b.extend_from_slice(value);
    b
}

pub(super) fn encode_get(key: &str, wait: Duration) -> Vec<u8> {
    let mut b = Vec::with_capacity(13 + key.len());
    encode_key(&mut b, OP_GET, key);
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    b.extend_from_slice(&ms.to_le_bytes());
    b
}

pub(super) fn encode_add(key: &str, delta: i64) -> Vec<u8> {
    let mut b = Vec::with_capacity(13 + key.len());
    encode_key(&mut b, OP_ADD, key);
    b.extend_from_slice(&delta.to_le_bytes());
    b
}

fn read_array<const N: usize, R: Read>(r: &mut R) -> io::Result<[u8; N]> {
    let mut a = [0u8; N];
    r.read_exact(&mut a)?;
    Ok(a)
}

fn read_len<R: Read>(r: &mut R, what: &str, limit: usize) -> Result<usize, ReadError> {
    let len = u32::from_le_bytes(read_array(r)?) as usize;
    if len > limit {
        return Err(ReadError::Reject(
            Status::TooLarge,
            format!("{what} is {len} bytes, over the limit of {limit} bytes"),
        ));
    }
    Ok(len)
}

fn read_bytes<R: Read>(r: &mut R, len: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; len];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// Reads one request; `Ok(None)` means the client hung up cleanly between requests.
pub(super) fn read_request<R: Read>(r: &mut R) -> Result<Option<Request>, ReadError> {
    let mut op = [0u8; 1];
    match r.read(&mut op) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    let op = op[0];
    if !matches!(op, OP_SET | OP_GET | OP_ADD) {
        return Err(ReadError::Reject(
            Status::BadRequest,
            format!("unknown operation {op}"),
        ));
    }
    let key_len = read_len(r, "key", MAX_KEY_LEN)?;
    let key = String::from_utf8(read_bytes(r, key_len)?)
        .map_err(|_| ReadError::Reject(Status::BadRequest, "key is not UTF-8".into()))?;
    Ok(Some(match op {
        OP_SET => {
            let len = read_len(r, "value", MAX_VALUE_LEN)?;
            Request::Set {
                key,
                value: read_bytes(r, len)?,
            }
        }
        OP_GET => Request::Get {
            key,
            wait: Duration::from_millis(u64::from_le_bytes(read_array(r)?)),
        },
        _ => Request::Add {
            key,
            delta: i64::from_le_bytes(read_array(r)?),
        },
    }))
}

/// Writes one response as a single write.
pub(super) fn write_response<W: Write>(
    w: &mut W,
    status: Status,
    payload: &[u8],
) -> io::Result<()> {
    let mut b = Vec::with_capacity(5 + payload.len());
    b.push(status as u8);
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(payload);
    w.write_all(&b)?;
    w.flush()
}

/// Reads one response. Payloads are bounded by the value limit so a confused peer cannot make
/// us allocate gigabytes.
pub(super) fn read_response<R: Read>(r: &mut R) -> io::Result<(Result<Status, u8>, Vec<u8>)> {
    let [status] = read_array::<1, _>(r)?;
    let len = u32::from_le_bytes(read_array(r)?) as usize;
    if len > MAX_VALUE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response payload of {len} bytes is over the limit"),
        ));
    }
    let payload = read_bytes(r, len)?;
    Ok((Status::from_u8(status).ok_or(status), payload))
}
