// Twins of `ops::kv_write` and `ops::attention`: each row's keys and values go into its slot's
// cache at its position, then its query attends causally over that slot's positions 0..=pos.
// Prompt passes and one-token decode are the same dispatch: a row only knows (slot, pos).
//
// Caches are [S, TM, C] f32 per layer; head h occupies channels h*HD..(h+1)*HD.

struct Params {
    rows: u32,
    c: u32,
    n_head: u32,
    /// Cache length per slot (TM).
    tm: u32,
}

struct RowMeta {
    slot: u32,
    pos: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- kv_write: k_cache[slot, pos, :] = qkv[r, C..2C]; v_cache[slot, pos, :] = qkv[r, 2C..3C]

@group(1) @binding(0) var<storage, read_write> k_cache: array<f32>;  // [S, TM, C]
@group(1) @binding(1) var<storage, read_write> v_cache: array<f32>;  // [S, TM, C]
@group(1) @binding(2) var<storage, read> qkv_w: array<f32>;          // [R, 3C]
@group(1) @binding(3) var<storage, read> rows_w: array<RowMeta>;     // [R]

@compute @workgroup_size(64)
fn kv_write(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let r = gid.y;
    if (i >= p.c || r >= p.rows) {
        return;
    }
    let m = rows_w[r];
    let dst = (m.slot * p.tm + m.pos) * p.c + i;
    let src = r * 3u * p.c;
    k_cache[dst] = qkv_w[src + p.c + i];
    v_cache[dst] = qkv_w[src + 2u * p.c + i];
}

// ---- attention: one workgroup per (head, row); keys are visited in tiles of WG with an
// online (running-max) softmax, so the cache length has no bound from workgroup memory and
// exp never sees a positive argument.

const WG: u32 = 64u;
/// Head sizes up to MAX_HD (GPT-2 uses 64); an invocation owns channels lid, lid + WG, ….
const MAX_HD: u32 = 256u;
const DIMS_PER_THREAD: u32 = MAX_HD / WG;

@group(1) @binding(0) var<storage, read_write> out: array<f32>;      // [R, C]
@group(1) @binding(1) var<storage, read> qkv: array<f32>;            // [R, 3C]
@group(1) @binding(2) var<storage, read> k_cache_r: array<f32>;      // [S, TM, C]
@group(1) @binding(3) var<storage, read> v_cache_r: array<f32>;      // [S, TM, C]
@group(1) @binding(4) var<storage, read> rows: array<RowMeta>;       // [R]

var<workgroup> q_s: array<f32, MAX_HD>;
var<workgroup> weights_s: array<f32, WG>;

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let r = wg.y;
    if (r >= p.rows || h >= p.n_head) {
        return; // uniform per workgroup
    }
    let hd = p.c / p.n_head;
    let scale = 1.0 / sqrt(f32(hd));
    let m = rows[r];
    let len = m.pos + 1u;
    let base = m.slot * p.tm * p.c + h * hd;
    for (var d = lid; d < hd; d += WG) {
        q_s[d] = qkv[r * 3u * p.c + h * hd + d];
    }
    workgroupBarrier();

    var run_max = -3.0e38; // below any score; exp(run_max - finite) is 0
    var run_sum = 0.0;
    var acc: array<f32, DIMS_PER_THREAD>;
    for (var t0 = 0u; t0 < len; t0 += WG) {
        let n = min(WG, len - t0);
        var s = -3.0e38;
        if (lid < n) {
            let k_row = base + (t0 + lid) * p.c;
            var dot = 0.0;
            for (var d = 0u; d < hd; d++) {
                dot += q_s[d] * k_cache_r[k_row + d];
            }
            s = dot * scale;
        }
        weights_s[lid] = s;
        workgroupBarrier();
        var tile_max = weights_s[0];
        for (var t = 1u; t < n; t++) {
            tile_max = max(tile_max, weights_s[t]);
        }
        let new_max = max(run_max, tile_max);
        workgroupBarrier(); // everyone has read the scores before they become weights
        if (lid < n) {
            weights_s[lid] = exp(s - new_max);
        }
        workgroupBarrier();
        let correction = exp(run_max - new_max);
        run_sum *= correction;
        for (var i = 0u; i < DIMS_PER_THREAD; i++) {
            acc[i] *= correction;
        }
        for (var t = 0u; t < n; t++) {
            let w = weights_s[t];
            run_sum += w;
            let v_row = base + (t0 + t) * p.c;
            for (var i = 0u; i < DIMS_PER_THREAD; i++) {
                let d = lid + i * WG;
                if (d < hd) {
                    acc[i] += w * v_cache_r[v_row + d];
                }
            }
        }
        run_max = new_max;
        workgroupBarrier(); // weights_s is overwritten by the next tile
    }
    for (var i = 0u; i < DIMS_PER_THREAD; i++) {
        let d = lid + i * WG;
        if (d < hd) {
            out[r * p.c + h * hd + d] = acc[i] / run_sum;
        }
    }
}
