//! Rank output: every line a rank writes is prefixed with `[<rank>]<stdout>:` or
//! `[<rank>]<stderr>:` (Horovod's format), with `--prefix-output-with-timestamp` preceded by the
//! local time as Horovod writes it (`Tue Dec  8 10:11:12 2026[0]<stdout>:...`), and written
//! whole, so lines from different ranks never interleave mid-line. One reader thread per pipe.
//! `--output-filename DIR` also writes each rank's lines, unprefixed, to
//! `DIR/rank.<N>/stdout|stderr`, N zero-padded to the width of the largest rank (Horovod's
//! layout, so the directories sort in rank order); under `--mpi` [`demux`] sorts mpirun's
//! tagged lines into the same files.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::thread::{self, JoinHandle};

/// Lines longer than this are emitted in pieces, so a rank printing without newlines cannot make
/// the launcher buffer without bound.
const MAX_LINE: usize = 1 << 20;

/// Which of a rank's streams a pipe carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// The prefix put before each line, e.g. `[3]<stderr>:`.
pub(crate) fn prefix(rank: u32, stream: Stream) -> Vec<u8> {
    let name = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    format!("[{rank}]<{name}>:").into_bytes()
}

/// Copies `input` to `emit` line by line, each line prefixed; a partial last line is completed
/// with a newline at EOF. Returns when the input closes or fails.
pub(crate) fn pump<R: Read>(input: R, prefix: &[u8], mut emit: impl FnMut(&[u8])) {
    let mut reader = BufReader::new(input);
    let mut line = prefix.to_vec();
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => break,
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if complete || line.len() - prefix.len() >= MAX_LINE {
            if !complete {
                line.push(b'\n');
            }
            emit(&line);
            line.truncate(prefix.len());
        }
    }
    if line.len() > prefix.len() {
        line.push(b'\n');
        emit(&line);
    }
}

/// The directory of one rank's files: `rank.<rank>`, zero-padded to the digits of `np - 1`.
pub(crate) fn rank_dir(rank: u32, np: u32) -> String {
    let width = np.saturating_sub(1).max(1).to_string().len();
    format!("rank.{rank:0width$}")
}

/// Starts a thread pumping one rank pipe to the launcher's own stdout or stderr (and, without
/// the prefix, to `file` if given: `--output-filename`); `timestamps` puts the local time
/// before each line on the terminal.
pub(crate) fn spawn<R: Read + Send + 'static>(
    input: R,
    rank: u32,
    stream: Stream,
    mut file: Option<std::fs::File>,
    timestamps: bool,
) -> io::Result<JoinHandle<()>> {
    let p = prefix(rank, stream);
    thread::Builder::new()
        .name(format!("rank{rank}-{stream:?}"))
        .spawn(move || {
            pump(input, &p, |line| {
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(&line[p.len()..]);
                }
                emit(stream, line, timestamps);
            });
        })
}

/// Writes one whole line to our stdout or stderr. Holding the lock for one write_all keeps the
/// line whole. Write errors (say, our stdout is a closed pipe) are ignored: the caller keeps
/// draining so the rank never blocks.
fn emit(stream: Stream, line: &[u8], timestamps: bool) {
    let stamped;
    let line = if timestamps {
        stamped = [crate::sys::asctime_now().as_bytes(), line].concat();
        &stamped[..]
    } else {
        line
    };
    let _ = match stream {
        Stream::Stdout => write_line(&mut io::stdout().lock(), line),
        Stream::Stderr => write_line(&mut io::stderr().lock(), line),
    };
}

fn write_line(w: &mut impl Write, line: &[u8]) -> io::Result<()> {
    w.write_all(line)?;
    w.flush()
}

/// The rank and the text of one line of mpirun's output, if the line carries a rank tag:
/// Open MPI's `--tag-output` (`[1,3]<stdout>:text`) or Hydra's `-prepend-rank` (`[3] text`).
pub(crate) fn rank_tag(line: &[u8]) -> Option<(u32, &[u8])> {
    let rest = line.strip_prefix(b"[")?;
    let close = rest.iter().position(|&b| b == b']')?;
    let inside = std::str::from_utf8(&rest[..close]).ok()?;
    let after = &rest[close + 1..];
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match inside.split_once(',') {
        // Open MPI: `[job,rank]<stream>:`
        Some((job, rank)) if digits(job) && digits(rank) => {
            let after = after.strip_prefix(b"<")?;
            let gt = after.iter().position(|&b| b == b'>')?;
            let text = after[gt + 1..].strip_prefix(b":")?;
            Some((rank.parse().ok()?, text))
        }
        // Hydra: `[rank] `
        None if digits(inside) => Some((inside.parse().ok()?, after.strip_prefix(b" ")?)),
        _ => None,
    }
}

/// Copies one of mpirun's streams to ours (with the time first, if `timestamps`) and, where
/// `files` has one for the line's rank, the line's text to that rank's file.
pub(crate) fn demux<R: Read + Send + 'static>(
    input: R,
    stream: Stream,
    mut files: Vec<std::fs::File>,
    timestamps: bool,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("mpirun-{stream:?}"))
        .spawn(move || {
            pump(input, b"", |line| {
                if let Some((rank, text)) = rank_tag(line)
                    && let Some(f) = files.get_mut(rank as usize)
                {
                    let _ = f.write_all(text);
                }
                emit(stream, line, timestamps);
            });
        })
}

#[cfg(test)]
mod tests;
