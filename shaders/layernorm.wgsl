// Twins of `ops::layernorm`: out[r, :] = (inp[r, :] - mean) / sqrt(var + eps) * weight + bias,
// and of `ops::rmsnorm` (`rms` = 1): out[r, :] = inp[r, :] / sqrt(mean(inp²) + eps) * weight.
// One workgroup per row; mean first, then the variance of (x - mean), as the reference does
// (the one-pass E[x²] - mean² form loses digits on GPT-2's large residual channels).

struct Params {
    rows: u32,
    c: u32,
    eps: f32,
    /// 1: RMSNorm (no mean, no bias; `bias` is bound but not read).
    rms: u32,
}

/// Small workgroups and a flat reduction: on CPU-backed adapters every barrier switches between
/// the workgroup's SIMD groups, so a few barriers over few groups beat a 7-level tree over 128.
const WG: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(1) @binding(0) var<storage, read_write> out: array<f32>;   // [R, C]
@group(1) @binding(1) var<storage, read> inp: array<f32>;         // [R, C]
@group(1) @binding(2) var<storage, read> weight: array<f32>;      // [C]
@group(1) @binding(3) var<storage, read> bias: array<f32>;        // [C]

var<workgroup> partial: array<f32, WG>;

// Sum of `v` over the workgroup; every invocation gets the result (adding the partials in the
// same order, so all agree).
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < WG; i++) {
        total += partial[i];
    }
    workgroupBarrier(); // `partial` is reused by the next call
    return total;
}

@compute @workgroup_size(WG)
fn layernorm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x;
    if (r >= p.rows) {
        return; // uniform per workgroup: the whole group leaves together
    }
    let base = r * p.c;
    var mean = 0.0;
    if (p.rms == 0u) { // uniform
        var s = 0.0;
        for (var i = lid; i < p.c; i += WG) {
            s += inp[base + i];
        }
        mean = workgroup_sum(s, lid) / f32(p.c);
    }
    var sq = 0.0;
    for (var i = lid; i < p.c; i += WG) {
        let d = inp[base + i] - mean;
        sq += d * d;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(sq, lid) / f32(p.c) + p.eps);
    if (p.rms == 0u) {
        for (var i = lid; i < p.c; i += WG) {
            out[base + i] = (inp[base + i] - mean) * rstd * weight[i] + bias[i];
        }
    } else {
        for (var i = lid; i < p.c; i += WG) {
            out[base + i] = inp[base + i] * rstd * weight[i];
        }
    }
}
