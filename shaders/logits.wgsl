// Twin of `ops::logits`, the tied LM head: out[R, V] = inp[R, C] · wte[V, C]ᵀ.
//
// wte is stored as in the file, [V, C] along C, rows padded to C8 = ceil(C / 8) 16-byte words
// of eight f16, so here an invocation owns one vocabulary entry and walks its row eight
// channels per load; rows of `inp` are staged in workgroup memory and each weight word serves
// TILE_ROWS rows. wte arrives in vocab chunks that each fit one binding: a
// dispatch covers [vocab_start, vocab_start + vocab_len) and writes those columns of `out`.
// `row_index` picks which rows of `inp` to use (the engine's last-row-per-sequence selection;
// the identity for the plain twin).

struct Params {
    rows: u32,
    c: u32,
    vocab_start: u32,
    vocab_len: u32,
    /// Row stride of `out`: the full vocabulary size.
    v: u32,
}

const WG: u32 = 64u;
const KT: u32 = 64u; // a multiple of 8: weight words never straddle a tile
const MAX_TILE_ROWS: u32 = 8u;

override TILE_ROWS: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(1) @binding(0) var<storage, read_write> out: array<f32>;   // [R, V]
@group(1) @binding(1) var<storage, read> inp: array<f32>;         // [*, C]
@group(1) @binding(2) var<storage, read> row_index: array<u32>;   // [R]
@group(1) @binding(3) var<storage, read> wte: array<vec4<u32>>;   // [vocab_len, C8]

var<workgroup> a_tile: array<f32, MAX_TILE_ROWS * KT>;            // [TILE_ROWS, KT]

@compute @workgroup_size(WG)
fn logits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c8 = (p.c + 7u) / 8u;
    let j = wg.x * WG + lid; // vocab entry within the chunk
    let r0 = wg.y * TILE_ROWS;
    var acc: array<vec4<f32>, MAX_TILE_ROWS>;
    for (var k0 = 0u; k0 < p.c; k0 += KT) {
        for (var e = lid; e < TILE_ROWS * KT; e += WG) {
            let r = r0 + e / KT;
            let k = k0 + e % KT;
            var a = 0.0;
            if (r < p.rows && k < p.c) {
                a = inp[row_index[r] * p.c + k];
            }
            a_tile[e] = a;
        }
        workgroupBarrier();
        if (j < p.vocab_len) {
            let words = (min(KT, p.c - k0) + 7u) / 8u;
            let w_base = j * c8 + k0 / 8u;
            for (var kk = 0u; kk < words; kk++) {
                let q = wte[w_base + kk];
                let w_lo = vec4(unpack2x16float(q.x), unpack2x16float(q.y));
                let w_hi = vec4(unpack2x16float(q.z), unpack2x16float(q.w));
                for (var rr = 0u; rr < TILE_ROWS; rr++) {
                    let a = rr * KT + 8u * kk; // channels past C are zero in both
                    let a_lo = vec4(a_tile[a], a_tile[a + 1u], a_tile[a + 2u], a_tile[a + 3u]);
                    let a_hi = vec4(a_tile[a + 4u], a_tile[a + 5u], a_tile[a + 6u], a_tile[a + 7u]);
                    acc[rr] += a_lo * w_lo + a_hi * w_hi;
                }
            }
        }
        workgroupBarrier();
    }
    if (j >= p.vocab_len) {
        return;
    }
    for (var rr = 0u; rr < TILE_ROWS; rr++) {
        let r = r0 + rr;
        if (r < p.rows) {
            out[r * p.v + p.vocab_start + j] = dot(acc[rr], vec4(1.0));
        }
    }
}
