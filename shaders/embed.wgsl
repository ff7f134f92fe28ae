// Twin of `ops::embed`: out[r, :] = wte[tokens[r], :] + wpe[positions[r], :] (the wpe term only
// when `learned` is 1; rotary models bind any buffer as wpe and it is not read).
//
// wte may be split by vocab rows into chunks that each fit one storage binding; one dispatch
// per chunk fills the rows whose token lies in [vocab_start, vocab_start + vocab_len). Every
// token belongs to exactly one chunk, so every row is written once.
// Weights are f16 (`unpack2x16float`); the sum is f32. A wte chunk is stored transposed,
// [C, vocab_len] with rows padded to whole 16-byte words, for the logits kernel (matmul.wgsl),
// so a token's channels are a column here: one load per channel, a few hundred per row.

struct Params {
    rows: u32,
    c: u32,
    vocab_start: u32,
    vocab_len: u32,
    learned: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(1) @binding(0) var<storage, read_write> out: array<f32>;   // [R, C]
@group(1) @binding(1) var<storage, read> tokens: array<u32>;      // [R]
@group(1) @binding(2) var<storage, read> positions: array<u32>;   // [R]
@group(1) @binding(3) var<storage, read> wte: array<u32>;         // [C, L8 * 4] f16 pairs, L8 = ceil(vocab_len / 8)
@group(1) @binding(4) var<storage, read> wpe: array<u32>;         // [P, C/2] f16 pairs

fn wte_f16(index: u32) -> f32 {
    let pair = unpack2x16float(wte[index / 2u]);
    return select(pair.x, pair.y, (index & 1u) == 1u);
}

@compute @workgroup_size(64)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half_c = p.c / 2u;
    let i = gid.x; // channel pair
    let r = gid.y;
    if (i >= half_c || r >= p.rows) {
        return;
    }
    let tok = tokens[r];
    if (tok < p.vocab_start || tok - p.vocab_start >= p.vocab_len) {
        return;
    }
    let wte_row = (p.vocab_len + 7u) / 8u * 8u; // f16 per row of the chunk
    let t = tok - p.vocab_start;
    let w = vec2(wte_f16(2u * i * wte_row + t), wte_f16((2u * i + 1u) * wte_row + t));
    var e = vec2(0.0);
    if (p.learned != 0u) {
        e = unpack2x16float(wpe[positions[r] * half_c + i]);
    }
    out[r * p.c + 2u * i] = w.x + e.x;
    out[r * p.c + 2u * i + 1u] = w.y + e.y;
}
