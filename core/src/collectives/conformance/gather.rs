//! Allgatherv, broadcast and alltoallv checks.

use super::inputs::same;
use super::{Collectives, Seq, call_err, deadline, mix, pattern};

/// Allgatherv with ragged contributions: empty ranks, single bytes, primes, and past 1 MiB.
pub fn allgatherv_ragged(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    let layouts: [&dyn Fn(usize) -> usize; 4] = [
        &|r| (mix(r, 0, 1) % 40) as usize * usize::from(r % 3 != 1),
        &|r| [0, 1, 13, 4099, 61][r % 5],
        &|r| if r == np - 1 { 1 } else { 0 },
        &|r| if r == 0 { 0 } else { (1 << 20) + 7919 * r },
    ];
    for (k, layout) in layouts.iter().enumerate() {
        let sizes: Vec<usize> = (0..np).map(layout).collect();
        let mine = pattern(me + 100 * k, sizes[me]);
        let mut out = vec![0xEE; sizes.iter().sum()];
        let what = format!("allgatherv of {sizes:?} bytes");
        c.allgatherv(&mine, &mut out, &sizes, seq.take(), deadline())
            .map_err(|e| call_err(&what, e))?;
        let want: Vec<u8> = (0..np)
            .flat_map(|r| pattern(r + 100 * k, sizes[r]))
            .collect();
        same(&what, &out, &want, 1)?;
    }
    Ok(())
}

/// Broadcast from every root, of 0, 1, prime and past-1-MiB lengths.
pub fn broadcast_from_every_root(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    for len in [0usize, 1, 13, 4099, (1 << 20) + 5] {
        for root in 0..np {
            let want = pattern(root * 7 + len, len);
            let mut buf = if me == root {
                want.clone()
            } else {
                vec![0xEE; len]
            };
            let what = format!("broadcast of {len} bytes from root {root}");
            c.broadcast(&mut buf, root, seq.take(), deadline())
                .map_err(|e| call_err(&what, e))?;
            same(&what, &buf, &want, 1)?;
        }
    }
    Ok(())
}

/// Alltoallv with uneven splits: about a third of the pairs exchange nothing; the last
/// layout moves about 1 MiB per rank.
pub fn alltoallv_uneven(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    for salt in 0..4usize {
        let split = |s: usize, d: usize| -> usize {
            if salt == 3 {
                if (s + d).is_multiple_of(3) {
                    0
                } else {
                    (256 << 10) + 4099 * s + 61 * d
                }
            } else {
                let x = mix(s, d, salt) % 60;
                if x < 20 { 0 } else { x as usize }
            }
        };
        let part = |s: usize, d: usize| pattern(1000 * s + d + 7 * salt, split(s, d));
        let send: Vec<usize> = (0..np).map(|d| split(me, d)).collect();
        let recv: Vec<usize> = (0..np).map(|s| split(s, me)).collect();
        let inp: Vec<u8> = (0..np).flat_map(|d| part(me, d)).collect();
        let mut out = vec![0xEE; recv.iter().sum()];
        let what = format!("alltoallv sending {send:?} receiving {recv:?}");
        c.alltoallv(&inp, &send, &mut out, &recv, seq.take(), deadline())
            .map_err(|e| call_err(&what, e))?;
        let want: Vec<u8> = (0..np).flat_map(|s| part(s, me)).collect();
        same(&what, &out, &want, 1)?;
    }
    Ok(())
}
