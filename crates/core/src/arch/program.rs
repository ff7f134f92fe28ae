//! One block of each family as a list of ops over named activation slots. The CPU reference
//! (`model.rs`) runs the list eagerly; the GPU engine records each op as a pipeline dispatch.
//! Hooks are ops too ([`Op::Hook`]): where a site's injections are added and its captures read,
//! so both engines steer and capture at exactly the same point of the same program.
//!
//! Slots hold `[R, width]` rows of the step (R rows, widths from [`Slot::width`]).

use super::{Activation, ModelSpec, Residual};
use crate::backend::Site;

/// A named activation buffer of the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The residual stream [R, C].
    X,
    /// A norm's output [R, C].
    H,
    /// Fused q | k | v [R, (NH + 2·NKV)·HD].
    Qkv,
    /// The attention's merged heads before the output projection [R, NH·HD].
    Z,
    /// The attention sublayer's output [R, C].
    Attn,
    /// The MLP's hidden activations [R, F] (SwiGLU's up, then the product).
    Fc,
    /// SwiGLU's gate [R, F].
    Gate,
    /// The MLP sublayer's output [R, C].
    Mlp,
}

impl Slot {
    pub const ALL: [Slot; 8] = [Slot::X, Slot::H, Slot::Qkv, Slot::Z, Slot::Attn, Slot::Fc, Slot::Gate, Slot::Mlp];

    pub fn width(self, s: &ModelSpec) -> usize {
        match self {
            Slot::X | Slot::H | Slot::Attn | Slot::Mlp => s.n_embd,
            Slot::Qkv => s.qkv_width(),
            Slot::Z => s.q_width(),
            Slot::Fc | Slot::Gate => s.n_inner,
        }
    }

    /// Whether the family's program uses this slot.
    pub fn used(self, s: &ModelSpec) -> bool {
        self != Slot::Gate || s.act == Activation::SwiGlu
    }
}

/// Which norm of the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormParam {
    /// `ln_1` (`input_layernorm`)
    Ln1,
    /// `ln_2` (`post_attention_layernorm`)
    Ln2,
}

/// Which projection of the block (Tiller's weight names, see `arch::weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearParam {
    /// `attn.c_attn`: C → (NH + 2·NKV)·HD
    Qkv,
    /// `attn.c_proj`: NH·HD → C
    O,
    /// `mlp.c_fc` (SwiGLU's up): C → F
    Up,
    /// `mlp.gate`: C → F
    Gate,
    /// `mlp.c_proj`: F → C
    Down,
}

impl LinearParam {
    /// Tiller's weight name without the `h.N.` prefix and `.weight`/`.bias` suffix.
    pub fn name(self) -> &'static str {
        match self {
            LinearParam::Qkv => "attn.c_attn",
            LinearParam::O => "attn.c_proj",
            LinearParam::Up => "mlp.c_fc",
            LinearParam::Gate => "mlp.gate",
            LinearParam::Down => "mlp.c_proj",
        }
    }
}

impl NormParam {
    pub fn name(self) -> &'static str {
        match self {
            NormParam::Ln1 => "ln_1",
            NormParam::Ln2 => "ln_2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The interventions at this site of this layer change its slot, then its captures read
    /// it; a capture-only step may stop here.
    Hook(Site),
    /// dst = norm(src) with the layer's `param` (LayerNorm or RMSNorm, from the spec).
    Norm { src: Slot, dst: Slot, param: NormParam },
    /// dst = src · W + b (W `[in, out]`), with `gelu` applied after when the family's MLP is
    /// GELU and this is its up projection.
    Linear { src: Slot, dst: Slot, param: LinearParam, gelu: bool },
    /// Rotates the q and k parts of [`Slot::Qkv`] in place by each row's position.
    Rope,
    /// Writes the k and v parts of [`Slot::Qkv`] into the layer's cache at each row's position.
    KvWrite,
    /// [`Slot::Z`] = causal attention of q over the cache (grouped-query: query head h reads
    /// key/value head h / (NH / NKV)).
    Attention,
    /// [`Slot::Fc`] = silu([`Slot::Gate`]) · [`Slot::Fc`].
    SwiGlu,
    /// dst += src
    Add { dst: Slot, src: Slot },
}

/// The ops of one block of this model, in order.
pub fn block(s: &ModelSpec) -> Vec<Op> {
    use Op::*;
    use Slot::*;
    let gelu = s.act != Activation::SwiGlu;
    let mut ops = vec![
        Hook(Site::ResidPre),
        Norm { src: X, dst: H, param: NormParam::Ln1 },
        Linear { src: H, dst: Qkv, param: LinearParam::Qkv, gelu: false },
    ];
    if s.rope().is_some() {
        ops.push(Rope);
    }
    ops.extend([KvWrite, Attention, Hook(Site::Z), Linear { src: Z, dst: Attn, param: LinearParam::O, gelu: false }, Hook(Site::AttnOut)]);
    if s.residual == Residual::Sequential {
        ops.push(Add { dst: X, src: Attn });
    }
    // Parallel residual: the MLP reads the block's input, not x + attn.
    ops.push(Norm { src: X, dst: H, param: NormParam::Ln2 });
    if s.act == Activation::SwiGlu {
        ops.push(Linear { src: H, dst: Gate, param: LinearParam::Gate, gelu: false });
        ops.push(Linear { src: H, dst: Fc, param: LinearParam::Up, gelu: false });
        ops.push(SwiGlu);
    } else {
        ops.push(Linear { src: H, dst: Fc, param: LinearParam::Up, gelu });
    }
    ops.extend([Linear { src: Fc, dst: Mlp, param: LinearParam::Down, gelu: false }, Hook(Site::MlpOut)]);
    if s.residual == Residual::Parallel {
        ops.push(Add { dst: X, src: Attn });
    }
    ops.push(Add { dst: X, src: Mlp });
    ops
}

/// The slot a hook site reads and writes.
pub fn site_slot(site: Site) -> Slot {
    match site {
        Site::ResidPre => Slot::X,
        Site::Z => Slot::Z,
        Site::AttnOut => Slot::Attn,
        Site::MlpOut => Slot::Mlp,
    }
}
