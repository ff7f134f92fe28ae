//! The bounded, seeded mutation test of every fuzz target (issue 17): from each target's
//! committed seed corpus, a fixed number of inputs mutated as a fuzzer would (bit flips,
//! boundary bytes and integers, numbers in text made huge, cut, repeated and spliced spans),
//! each run under `catch_unwind`. A panic fails the test and writes the input to
//! `target/fuzz-failures/` to reproduce it; an abort or a runaway allocation fails the
//! test's process. Seconds per target, the same inputs every run; the long coverage-guided
//! runs are AFL++'s (scripts/fuzz.sh, RELIABILITY.md).

use std::path::{Path, PathBuf};

/// Mutated inputs per target.
const RUNS: usize = 5000;
/// The longest input a mutation makes.
const MAX_LEN: usize = 1 << 20;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.expect("corpus entry").path()).collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("seed")).collect();
    assert!(!seeds.is_empty(), "{target}: no seeds in {}", dir.display());
    seeds
}

const INTERESTING: [u64; 10] = [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

/// One to four mutations of `seed`, with `other` to splice from.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = INTERESTING[rng.below(5)] as u8;
            }
            2 if len >= 8 => {
                let i = rng.below(len - 7);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let w = if rng.below(2) == 0 { 4 } else { 8 };
                d[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            3 => {
                // a number in text made huge, negative, fractional or exponential
                let digits: Vec<usize> = (0..len).filter(|&i| d[i].is_ascii_digit()).collect();
                if !digits.is_empty() {
                    let i = digits[rng.below(digits.len())];
                    let with: &[&[u8]] = &[b"99999999999999999999", b"-1", b"0", b"1e308", b"4294967296", b"0.5", b"NaN"];
                    d.splice(i..i + 1, with[rng.below(with.len())].iter().copied());
                }
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                d.drain(a..b);
            }
            5 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(256)).min(len);
                let span = d[a..b].to_vec();
                let at = rng.below(len + 1);
                for _ in 0..1 + rng.below(8) {
                    d.splice(at..at, span.iter().copied());
                }
            }
            6 if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = (a + 1 + rng.below(512)).min(other.len());
                let at = rng.below(len + 1);
                d.splice(at..at, other[a..b].iter().copied());
            }
            7 => d.truncate(rng.below(len + 1)),
            _ => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                d.splice(at..at, bytes);
            }
        }
        d.truncate(MAX_LEN);
    }
    d
}

fn run_target(name: &str) {
    let target = tiller_fuzz::target(name).expect("a target");
    let seeds = corpus(name);
    let mut rng = Rng(0x5eed_0000 ^ name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)) | 1);
    for seed in &seeds {
        if let Err(p) = std::panic::catch_unwind(|| target(seed)) {
            panic!("{name}: a seed panicked: {p:?}");
        }
    }
    for i in 0..RUNS {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, other);
        if std::panic::catch_unwind(|| target(&input)).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
            std::fs::create_dir_all(&dir).expect("failures folder");
            let path = dir.join(format!("{name}-{i}"));
            std::fs::write(&path, &input).expect("failure");
            panic!("{name}: mutated input {i} panicked; it is in {} (TILLER_FUZZ_TARGET={name} to replay it)", path.display());
        }
    }
}

#[test]
fn every_target_has_a_test_and_a_corpus() {
    let names: Vec<&str> = tiller_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    let this = include_str!("mutation.rs");
    for n in names {
        assert!(this.contains(&format!("run_target(\"{n}\")")), "{n} has no mutation test");
        corpus(n);
    }
}

#[test]
fn safetensors_stream_loader() {
    run_target("safetensors");
}
#[test]
fn config_json() {
    run_target("config");
}
#[test]
fn tokenizer_json() {
    run_target("tokenizer");
}
#[test]
fn share_link() {
    run_target("share_link");
}
#[test]
fn recipe() {
    run_target("recipe");
}
#[test]
fn gguf() {
    run_target("gguf");
}
#[test]
fn vector_file() {
    run_target("vector_file");
}
#[test]
fn pairs() {
    run_target("pairs");
}
#[test]
fn fv_task() {
    run_target("fv_task");
}
#[test]
fn iti_statements() {
    run_target("iti_statements");
}
#[test]
fn melbo_init() {
    run_target("melbo_init");
}
