use super::*;

fn lines(input: &[u8], rank: u32, stream: Stream) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    pump(input, &prefix(rank, stream), |l| out.push(l.to_vec()));
    out
}

#[test]
fn each_line_is_prefixed_and_partial_last_line_completed() {
    let got = lines(b"hello\n\nworld", 2, Stream::Stdout);
    assert_eq!(
        got,
        vec![
            b"[2]<stdout>:hello\n".to_vec(),
            b"[2]<stdout>:\n".to_vec(),
            b"[2]<stdout>:world\n".to_vec()
        ]
    );
    assert_eq!(
        lines(b"oops\n", 0, Stream::Stderr),
        vec![b"[0]<stderr>:oops\n".to_vec()]
    );
    assert!(lines(b"", 0, Stream::Stdout).is_empty());
}

#[test]
fn bytes_that_are_not_utf8_pass_through() {
    assert_eq!(
        lines(b"\xff\xfe\n", 1, Stream::Stdout),
        vec![b"[1]<stdout>:\xff\xfe\n".to_vec()]
    );
}

#[test]
fn lines_arriving_in_small_reads_stay_whole() {
    /// Hands out one byte per read, like a slow pipe.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((&b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }
    let mut out = Vec::new();
    pump(Trickle(b"ab\ncd\n"), b">", |l| out.push(l.to_vec()));
    assert_eq!(out, vec![b">ab\n".to_vec(), b">cd\n".to_vec()]);
}

#[test]
fn huge_lines_are_split_not_buffered_forever() {
    let input = vec![b'x'; MAX_LINE * 2 + 10];
    let got = lines(&input, 0, Stream::Stdout);
    assert_eq!(got.len(), 3);
    assert!(
        got.iter()
            .all(|l| l.starts_with(b"[0]<stdout>:") && l.ends_with(b"\n"))
    );
    let payload: usize = got
        .iter()
        .map(|l| l.len() - b"[0]<stdout>:".len() - 1)
        .sum();
    assert_eq!(payload, input.len());
}

#[test]
fn rank_directories_are_zero_padded_like_horovods() {
    assert_eq!(rank_dir(0, 1), "rank.0");
    assert_eq!(rank_dir(9, 10), "rank.9");
    assert_eq!(rank_dir(3, 11), "rank.03");
    assert_eq!(rank_dir(10, 11), "rank.10");
    assert_eq!(rank_dir(7, 101), "rank.007");
    assert_eq!(rank_dir(99, 100), "rank.99");
}

#[test]
fn mpirun_rank_tags_are_read() {
    assert_eq!(
        rank_tag(b"[1,3]<stdout>:hello\n"),
        Some((3, &b"hello\n"[..]))
    );
    assert_eq!(rank_tag(b"[2,12]<stderr>:"), Some((12, &b""[..])));
    assert_eq!(
        rank_tag(b"[5] hydra line\n"),
        Some((5, &b"hydra line\n"[..]))
    );
    for untagged in [
        &b"mpirun noticed that process rank 2 ...\n"[..],
        b"[node1:1234] oob message\n",
        b"[1,x]<stdout>:no",
        b"[3]no space",
        b"",
    ] {
        assert_eq!(
            rank_tag(untagged),
            None,
            "{:?}",
            String::from_utf8_lossy(untagged)
        );
    }
}
