//! A libFuzzer-free harness for the same target: runs every corpus file, then
//! mutates corpus entries at random (bit flips, byte writes, inserts, deletes,
//! chunk copies, splices, truncation) for a given time, catching panics and
//! timing every run. Works on the stable toolchain with no sanitizer.
//!
//! `cargo run --release --bin judge-loop -- [--seconds N] [--seed S] DIR...`
//! (defaults: 60 s, seed 1, `corpus/judge`). Panicking inputs are written to
//! `artifacts/judge-loop/`; inputs slower than one second are reported as hangs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x02, 0x04, 0x05, 0x30, 0x31, 0x7f, 0x80, 0x81, 0x82, 0x84, 0xa0, 0xff, b'\r',
    b'\n', b'-', b'=', b':', b';', b'"',
];

fn mutate(rng: &mut XorShift, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(8) {
            0 if len > 1 => {
                // Keep the mode byte most of the time: flip a bit after it.
                let i = 1 + rng.below(len - 1);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 1 => {
                let i = 1 + rng.below(len - 1);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                for _ in 0..n {
                    input.insert(i.min(input.len()), rng.next() as u8);
                }
            }
            3 if len > 1 => {
                let i = 1 + rng.below(len - 1);
                let n = 1 + rng.below((len - i).min(64));
                input.drain(i..(i + n).min(input.len()));
            }
            4 if len > 2 => {
                // Copy a chunk elsewhere (duplicated TLVs, repeated headers).
                let a = rng.below(len);
                let n = 1 + rng.below((len - a).min(256));
                let chunk = input[a..a + n].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, chunk);
            }
            5 if !corpus.is_empty() => {
                // Splice the tail of another corpus entry.
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(input.len() + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            6 if len > 1 => {
                let keep = 1 + rng.below(len);
                input.truncate(keep);
            }
            _ if len > 1 => {
                // Length bytes: bump a byte up or down by a little.
                let i = 1 + rng.below(len - 1);
                let d = rng.below(5) as u8;
                input[i] = if rng.next() & 1 == 0 {
                    input[i].wrapping_add(d)
                } else {
                    input[i].wrapping_sub(d)
                };
            }
            _ => input.push(rng.next() as u8),
        }
    }
}

fn main() {
    let mut seconds = 60u64;
    let mut seed = 1u64;
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).unwrap_or(seed),
            _ => dirs.push(PathBuf::from(a)),
        }
    }
    if dirs.is_empty() {
        dirs.push(PathBuf::from("corpus/judge"));
    }
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for d in &dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if let Ok(bytes) = std::fs::read(&path) {
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
                {
                    let code = directmail_smime_fuzz::verdict_code(&bytes);
                    println!("{}: {code:?}", path.display());
                }
                corpus.push(bytes);
            }
        }
    }
    if directmail_smime_fuzz::world().is_none() {
        eprintln!("the fixtures under fixtures/ do not load");
        std::process::exit(2);
    }
    // Quiet the default panic message; panics are counted and saved instead.
    std::panic::set_hook(Box::new(|_| {}));
    let artifacts = PathBuf::from("artifacts/judge-loop");
    let mut rng = XorShift(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let start = Instant::now();
    let deadline = Duration::from_secs(seconds);
    let (mut execs, mut crashes, mut hangs) = (0u64, 0u64, 0u64);
    let mut slowest = Duration::ZERO;
    let mut i = 0usize;
    loop {
        let input = if i < corpus.len() {
            corpus[i].clone()
        } else if corpus.is_empty() {
            (0..rng.below(512)).map(|_| rng.next() as u8).collect()
        } else {
            let mut m = corpus[rng.below(corpus.len())].clone();
            mutate(&mut rng, &mut m, &corpus);
            m
        };
        i += 1;
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| directmail_smime_fuzz::run(&input)));
        let took = t.elapsed();
        execs += 1;
        slowest = slowest.max(took);
        let name = format!(
            "{:016x}",
            input
                .iter()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b))
                    .wrapping_mul(0x100_0000_01b3))
        );
        if result.is_err() || took > Duration::from_secs(1) {
            let kind = if result.is_err() {
                crashes += 1;
                "crash"
            } else {
                hangs += 1;
                "slow"
            };
            let _ = std::fs::create_dir_all(&artifacts);
            let path = artifacts.join(format!("{kind}-{name}"));
            let _ = std::fs::write(&path, &input);
            eprintln!(
                "{kind}: {} ({} bytes, {took:?})",
                path.display(),
                input.len()
            );
        }
        if execs % 5000 == 0 {
            eprintln!(
                "#{execs} {:.0} exec/s crashes {crashes} slow {hangs}",
                execs as f64 / start.elapsed().as_secs_f64()
            );
        }
        if start.elapsed() >= deadline && i >= corpus.len() {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "judge-loop: {execs} execs in {secs:.0} s ({:.0} exec/s), {} corpus inputs, {crashes} crashes, {hangs} inputs over 1 s, slowest {slowest:?}",
        execs as f64 / secs,
        corpus.len()
    );
    if crashes > 0 {
        std::process::exit(1);
    }
}
