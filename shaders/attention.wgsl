// Twins of `ops::kv_write` and `ops::attention`: each row's keys and values go into its slot's
// cache at its position, then its query attends causally over that slot's positions 0..=pos.
// Prompt passes and one-token decode are the same dispatch: a row only knows (slot, pos).
//
// A qkv row is q | k | v, QKV = (NH + 2·NKV)·HD wide. Caches are [S, TM, KV] f32 per layer,
// KV = NKV·HD; query head h reads key/value head h / (NH / NKV) (grouped-query attention: the
// cache is not copied per query head).

struct Params {
    rows: u32,
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    /// Cache length per slot (TM).
    tm: u32,
}

struct RowMeta {
    slot: u32,
    pos: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- kv_write: k_cache[slot, pos, :] = qkv[r, Q..Q+KV]; v_cache[slot, pos, :] = qkv[r, Q+KV..]

@group(1) @binding(0) var<storage, read_write> k_cache: array<f32>;  // [S, TM, KV]
@group(1) @binding(1) var<storage, read_write> v_cache: array<f32>;  // [S, TM, KV]
@group(1) @binding(2) var<storage, read> qkv_w: array<f32>;          // [R, QKV]
@group(1) @binding(3) var<storage, read> rows_w: array<RowMeta>;     // [R]

override WG_KV: u32 = 64u;

@compute @workgroup_size(WG_KV)
fn kv_write(@builtin(global_invocation_id) gid: vec3<u32>) {
    let kv = p.n_kv_head * p.head_dim;
    let q_width = p.n_head * p.head_dim;
    let i = gid.x;
    let r = gid.y;
    if (i >= kv || r >= p.rows) {
        return;
    }
    let m = rows_w[r];
    let dst = (m.slot * p.tm + m.pos) * kv + i;
    let src = r * (q_width + 2u * kv) + q_width;
    k_cache[dst] = qkv_w[src + i];
    v_cache[dst] = qkv_w[src + kv + i];
}

// ---- attention: one workgroup per (head, row). Keys are visited in tiles of up to KT: every
// invocation scores keys lid, lid + WG, … of the tile into workgroup memory; after one barrier
// each invocation reads the tile's scores (the same address for the whole workgroup, cheap on
// CPU adapters), and accumulates its channels of the value rows with an online (running-max)
// softmax, so exp never sees a positive argument and the cache length is unbounded. A row of
// up to KT keys (every GPT-2 context) takes one barrier: barriers are costly on CPU-backed
// adapters (lavapipe and SwiftShader switch between the workgroup's SIMD groups at each).

/// 8 invocations: one SIMD group on lavapipe, two on SwiftShader. Each barrier switches
/// between a workgroup's SIMD groups, and with 64 invocations the two barriers per row were
/// half of the kernel's time on lavapipe (prompt pass: 252 ms with 64, 170 ms with 32, 118 ms
/// with 16, 110 ms with 8; SwiftShader: 354, -, 138 and 106 ms). Head sizes past 64 (Llama's
/// and Qwen's 128) take the 16-invocation pipeline (`kernels.rs`).
override WG: u32 = 8u;
/// Keys per tile: 8 KB of scores in workgroup memory.
const KT: u32 = 2048u;
// Head sizes up to 8·WG: an invocation owns channels lid + i·WG, i = 0..8, as the components
// of two vec4 accumulators (not an array: the CPU adapters' compilers keep a dynamically
// indexed array in memory). Invocations past the head size repeat its last channel and store
// nothing.

@group(1) @binding(0) var<storage, read_write> out: array<f32>;      // [R, NH·HD]
@group(1) @binding(1) var<storage, read> qkv: array<f32>;            // [R, QKV]
@group(1) @binding(2) var<storage, read> k_cache_r: array<f32>;      // [S, TM, KV]
@group(1) @binding(3) var<storage, read> v_cache_r: array<f32>;      // [S, TM, KV]
@group(1) @binding(4) var<storage, read> rows: array<RowMeta>;       // [R]

var<workgroup> scores_s: array<f32, KT>;

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let r = wg.y;
    if (r >= p.rows || h >= p.n_head) {
        return; // uniform per workgroup
    }
    let hd = p.head_dim;
    let kv = p.n_kv_head * hd;
    let q_width = p.n_head * hd;
    let scale = 1.0 / sqrt(f32(hd));
    let m = rows[r];
    let len = m.pos + 1u;
    let base = m.slot * p.tm * kv + (h / (p.n_head / p.n_kv_head)) * hd;
    let q = r * (q_width + 2u * kv) + h * hd;

    var run_max = -3.0e38; // below any score; exp(run_max - finite) is 0
    var run_sum = 0.0;
    var acc_lo = vec4(0.0); // channels lid + i·WG, i = 0..4
    var acc_hi = vec4(0.0); // i = 4..8
    for (var t0 = 0u; t0 < len; t0 += KT) {
        let n = min(KT, len - t0);
        if (t0 > 0u) {
            workgroupBarrier(); // everyone is done with the previous tile's scores (uniform)
        }
        for (var t = lid; t < n; t += WG) {
            let k_row = base + (t0 + t) * kv;
            var score = 0.0;
            var d = 0u;
            // Four channels a step, as vec4 products (fewer, wider operations), then the rest.
            for (; d + 4u <= hd; d += 4u) {
                let qd = vec4(qkv[q + d], qkv[q + d + 1u], qkv[q + d + 2u], qkv[q + d + 3u]);
                let kd = vec4(k_cache_r[k_row + d], k_cache_r[k_row + d + 1u], k_cache_r[k_row + d + 2u], k_cache_r[k_row + d + 3u]);
                score += dot(qd, kd);
            }
            for (; d < hd; d++) {
                score += qkv[q + d] * k_cache_r[k_row + d];
            }
            scores_s[t] = score * scale;
        }
        workgroupBarrier();
        var tile_max = scores_s[0];
        for (var t = 1u; t < n; t++) {
            tile_max = max(tile_max, scores_s[t]);
        }
        let new_max = max(run_max, tile_max);
        let correction = exp(run_max - new_max);
        run_sum *= correction;
        acc_lo *= correction;
        acc_hi *= correction;
        let ch_lo = min(vec4(lid) + vec4(0u, 1u, 2u, 3u) * WG, vec4(hd - 1u));
        let ch_hi = min(vec4(lid) + vec4(4u, 5u, 6u, 7u) * WG, vec4(hd - 1u));
        for (var t = 0u; t < n; t++) {
            let w = exp(scores_s[t] - new_max);
            run_sum += w;
            let v_row = base + (t0 + t) * kv;
            acc_lo.x += w * v_cache_r[v_row + ch_lo.x];
            if (hd > WG) { // uniform
                acc_lo.y += w * v_cache_r[v_row + ch_lo.y];
            }
            if (hd > 2u * WG) {
                acc_lo.z += w * v_cache_r[v_row + ch_lo.z];
                acc_lo.w += w * v_cache_r[v_row + ch_lo.w];
            }
            if (hd > 4u * WG) {
                acc_hi += w * vec4(v_cache_r[v_row + ch_hi.x], v_cache_r[v_row + ch_hi.y], v_cache_r[v_row + ch_hi.z], v_cache_r[v_row + ch_hi.w]);
            }
        }
        run_max = new_max;
    }
    for (var i = 0u; i < 8u; i++) {
        let d = lid + i * WG;
        if (d < hd) {
            out[r * q_width + h * hd + d] = select(acc_hi[i % 4u], acc_lo[i % 4u], i < 4u) / run_sum;
        }
    }
}
