//! The AFL++ harness: `TILLER_FUZZ_TARGET=<target> cargo afl fuzz -i fuzz/corpus/<target> -o
//! <out> target/afl/release/tiller-afl` (scripts/fuzz.sh runs every target).

fn main() {
    let name = std::env::var("TILLER_FUZZ_TARGET").unwrap_or_default();
    let Some(run) = tiller_fuzz::target(&name) else {
        let names: Vec<&str> = tiller_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("set TILLER_FUZZ_TARGET to one of {}", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| run(data));
}
