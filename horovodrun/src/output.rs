//! Rank output: every line a rank writes is prefixed with `[<rank>]<stdout>:` or
//! `[<rank>]<stderr>:` (Horovod's format) and written whole, so lines from different ranks never
//! interleave mid-line. One reader thread per pipe.

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

/// Starts a thread pumping one rank pipe to the launcher's own stdout or stderr (and, without
/// the prefix, to `file` if given: `--output-filename`).
pub(crate) fn spawn<R: Read + Send + 'static>(
    input: R,
    rank: u32,
    stream: Stream,
    mut file: Option<std::fs::File>,
) -> io::Result<JoinHandle<()>> {
    let p = prefix(rank, stream);
    thread::Builder::new()
        .name(format!("rank{rank}-{stream:?}"))
        .spawn(move || {
            pump(input, &p, |line| {
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(&line[p.len()..]);
                }
                // Holding the lock for one write_all keeps the line whole. Write errors (say, our
                // stdout is a closed pipe) are ignored: we keep draining so the rank never blocks.
                let _ = match stream {
                    Stream::Stdout => write_line(&mut io::stdout().lock(), line),
                    Stream::Stderr => write_line(&mut io::stderr().lock(), line),
                };
            });
        })
}

fn write_line(w: &mut impl Write, line: &[u8]) -> io::Result<()> {
    w.write_all(line)?;
    w.flush()
}

#[cfg(test)]
mod tests;
