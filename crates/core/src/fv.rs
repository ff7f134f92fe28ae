//! Function vectors (Todd et al., "Function Vectors in Large Language Models", 2024): the mean
//! output of a few attention heads, found by causal mediation over in-context-learning
//! prompts, carries a task; added to the residual stream of a zero-shot prompt it makes the
//! model do the task (docs/SEMANTICS.md, "Function vectors").
//!
//! - An ICL prompt is K demonstrations `"Q: {input}\nA: {output}\n\n"` and a query
//!   `"Q: {query}\nA:"`, tokenized whole (BOS first when on); its answer is the first token of
//!   `" {output}"`.
//! - The mean head outputs: for every layer l and head h, the mean of `z[l, h]` (head h's slice
//!   of the attention's merged heads, the output projection's input) at the last token over the
//!   clean prompts.
//! - The corrupted prompts show each demonstration with another demonstration's output (a
//!   seeded shuffle; in order: demonstration j shows the output of demonstration (j+1) mod K).
//! - The average indirect effect of head (l, h): the mean over prompts of
//!   P(answer | corrupted, `z[l, h]` at the last token set to its mean) − P(answer | corrupted).
//! - The function vector: Σ over chosen heads of mean `z[l, h]` through head h's rows of layer
//!   l's output projection, without its bias: `[C]`.
//!
//! Every patched pass changes only the last token, so each prompt's other tokens run once and
//! their keys and values are copied ([`Backend::fork_slot`]) to as many slots as the step has
//! patched passes: a pass costs one token, not the prompt.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::{Backend, Capture, Injection, LogitRows, Mode, RowSelect, SeqStep, Site, StepRequest};
use crate::error::{Result, TillerError};
use crate::generate::{token_probability, Flow};
use crate::pairs::{dataset_items, kind};
use crate::sample::Rng;
use crate::steer::encode_with_bos;
use crate::tokenizer::Tokenizer;

/// One input → output pair of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IclPair {
    pub input: String,
    pub output: String,
}

fn bad(msg: String) -> TillerError {
    TillerError::input(msg)
}

/// Parses a task file: JSON lines (or one JSON list) of `{"input": "...", "output": "..."}`.
pub fn parse_task(bytes: &[u8]) -> Result<Vec<IclPair>> {
    let mut pairs = Vec::new();
    for (at, v) in dataset_items(bytes, "the task file")? {
        let obj = v.as_object().ok_or_else(|| {
            bad(format!("{at}: expected an object such as {{\"input\": \"hot\", \"output\": \"cold\"}}, found {}", kind(&v)))
        })?;
        let field = |key: &str| -> Result<String> {
            match obj.get(key) {
                Some(Value::String(s)) if s.trim().is_empty() => Err(bad(format!("{at}: \"{key}\" is empty"))),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(bad(format!("{at}: \"{key}\" should be a string, found {}", kind(other)))),
                None => Err(bad(format!("{at}: \"{key}\" is missing (each line is {{\"input\": \"...\", \"output\": \"...\"}})"))),
            }
        };
        pairs.push(IclPair { input: field("input")?, output: field("output")? });
    }
    if pairs.is_empty() {
        return Err(bad(
            "the task file has no pairs: give one JSON object per line, such as {\"input\": \"hot\", \"output\": \"cold\"}".into()
        ));
    }
    Ok(pairs)
}

/// Pasted pairs, one per line as `input -> output` (or a tab between them).
pub fn parse_pasted(text: &str) -> Result<Vec<IclPair>> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (input, output) = line
            .split_once("->")
            .or_else(|| line.split_once('\t'))
            .ok_or_else(|| bad(format!("line {}: write each pair as `input -> output`, such as `hot -> cold`", i + 1)))?;
        let (input, output) = (input.trim(), output.trim());
        if input.is_empty() || output.is_empty() {
            return Err(bad(format!("line {}: both sides of `->` need text", i + 1)));
        }
        pairs.push(IclPair { input: input.into(), output: output.into() });
    }
    if pairs.is_empty() {
        return Err(bad("no pairs: write one per line, as `hot -> cold`".into()));
    }
    Ok(pairs)
}

/// Each pair followed by its flip (output → input): the symmetric task (country ↔ capital).
pub fn both_directions(pairs: &[IclPair]) -> Vec<IclPair> {
    pairs.iter().flat_map(|p| [p.clone(), IclPair { input: p.output.clone(), output: p.input.clone() }]).collect()
}

/// A demonstration, as Todd et al. write it.
pub fn demonstration(input: &str, output: &str) -> String {
    format!("Q: {input}\nA: {output}\n\n")
}

/// The query that ends a prompt (and a zero-shot prompt on its own).
pub fn query(input: &str) -> String {
    format!("Q: {input}\nA:")
}

/// How prompts pick their pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Prompt i takes pairs `i·(K+1) … i·(K+1)+K` of the file, the last as its query; the
    /// corrupted prompt rotates the outputs; the pairs after the prompts' are held out.
    InOrder,
    /// Pairs shuffled with the seed, the last `held_out` fraction kept for evaluation, each
    /// prompt K+1 distinct pairs of the rest, the corrupted outputs a shuffle.
    Seeded(u64),
}

/// One ICL prompt: pair indices of its demonstrations and query, and which pair's output each
/// demonstration shows when corrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IclPrompt {
    pub demos: Vec<usize>,
    pub query: usize,
    pub corrupted: Vec<usize>,
}

impl IclPrompt {
    /// The prompt's text, clean or corrupted.
    pub fn text(&self, pairs: &[IclPair], corrupted: bool) -> String {
        let mut s = String::new();
        for (j, &d) in self.demos.iter().enumerate() {
            let shown = if corrupted { self.corrupted[j] } else { d };
            s += &demonstration(&pairs[d].input, &pairs[shown].output);
        }
        s + &query(&pairs[self.query].input)
    }
}

/// The prompts of a run and the pairs held out for evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskPlan {
    pub prompts: Vec<IclPrompt>,
    /// Indices of pairs no prompt uses.
    pub held_out: Vec<usize>,
    /// Indices of the pairs prompts are drawn from.
    pub train: Vec<usize>,
}

/// `n` distinct indices of `0..len` drawn with `rng` (a partial Fisher–Yates shuffle).
fn draw(rng: &mut Rng, len: usize, n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    for i in 0..n.min(len) {
        let j = i + (rng.next_u64() % (len - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(n);
    idx
}

/// A random permutation of `0..n` with no fixed point (uniform over those, by rejection; for
/// n < 2 there is none, and the identity is returned).
fn derangement(rng: &mut Rng, n: usize) -> Vec<usize> {
    loop {
        let p = draw(rng, n, n);
        if n < 2 || p.iter().enumerate().all(|(i, &k)| i != k) {
            return p;
        }
    }
}

/// Plans `n_prompts` prompts of `shots` demonstrations over `n_pairs` pairs.
pub fn plan(n_pairs: usize, shots: usize, n_prompts: usize, order: Order, held_out: f64) -> Result<TaskPlan> {
    if shots < 2 {
        return Err(bad(format!(
            "{shots} demonstration{} per prompt is too few: the corrupted prompts give each demonstration another one's output, \
             which takes at least 2 (--shots 2)",
            if shots == 1 { "" } else { "s" }
        )));
    }
    if n_prompts == 0 {
        return Err(bad("--prompts must be at least 1".into()));
    }
    if !(held_out.is_finite() && (0.0..1.0).contains(&held_out)) {
        return Err(bad(format!("the held-out fraction {held_out} must be in [0, 1)")));
    }
    let per = shots + 1;
    match order {
        Order::InOrder => {
            let need = n_prompts.saturating_mul(per);
            if need > n_pairs {
                return Err(bad(format!(
                    "{n_prompts} prompts of {shots} demonstrations and a query take {need} pairs in order, and the task has {n_pairs}: \
                     lower --prompts or --shots"
                )));
            }
            let prompts = (0..n_prompts)
                .map(|i| {
                    let demos: Vec<usize> = (i * per..i * per + shots).collect();
                    let corrupted = (0..shots).map(|j| demos[(j + 1) % shots]).collect();
                    IclPrompt { demos, query: i * per + shots, corrupted }
                })
                .collect();
            Ok(TaskPlan { prompts, held_out: (need..n_pairs).collect(), train: (0..need).collect() })
        }
        Order::Seeded(seed) => {
            let shuffled = draw(&mut Rng::new(seed, u64::MAX), n_pairs, n_pairs);
            let held =
                if n_pairs < 2 || held_out == 0.0 { 0 } else { ((n_pairs as f64 * held_out).round() as usize).clamp(1, n_pairs - 1) };
            let (train, held_out) = shuffled.split_at(n_pairs - held);
            if train.len() < per {
                return Err(bad(format!(
                    "a prompt of {shots} demonstrations and a query takes {per} different pairs, and {} are left after holding out {held}: \
                     lower --shots or give more pairs",
                    train.len()
                )));
            }
            let prompts = (0..n_prompts)
                .map(|i| {
                    let mut rng = Rng::new(seed, i as u64);
                    let picked: Vec<usize> = draw(&mut rng, train.len(), per).into_iter().map(|k| train[k]).collect();
                    let demos = picked[..shots].to_vec();
                    let corrupted = derangement(&mut rng, shots).into_iter().map(|k| demos[k]).collect();
                    IclPrompt { demos, query: picked[shots], corrupted }
                })
                .collect();
            Ok(TaskPlan { prompts, held_out: held_out.to_vec(), train: train.to_vec() })
        }
    }
}

/// The answer token of an output: the first token of `" {output}"`.
pub fn answer_token(tok: &Tokenizer, output: &str) -> Result<u32> {
    tok.encode(&format!(" {output}"))?.first().copied().ok_or_else(|| bad(format!("the output {output:?} has no tokens")))
}

/// A prompt's tokens, refused when past the context.
pub fn prompt_tokens(tok: &Tokenizer, text: &str, bos: bool, n_positions: usize) -> Result<Vec<u32>> {
    let t = encode_with_bos(tok, text, bos)?;
    if t.len() > n_positions {
        return Err(bad(format!(
            "an ICL prompt is {} tokens, past the model's context of {n_positions}: lower --shots or use shorter pairs",
            t.len()
        )));
    }
    if t.is_empty() {
        return Err(bad("an ICL prompt has no tokens".into()));
    }
    Ok(t)
}

/// Per layer, head and channel: `[L, NH, HD]` flattened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadMeans {
    pub n_layer: usize,
    pub n_head: usize,
    pub head_dim: usize,
    pub values: Vec<f32>,
}

impl HeadMeans {
    pub fn head(&self, layer: usize, head: usize) -> &[f32] {
        let at = (layer * self.n_head + head) * self.head_dim;
        &self.values[at..at + self.head_dim]
    }
}

/// A change to the last token of a patched pass.
#[derive(Debug, Clone, PartialEq)]
pub struct LastPatch {
    pub layer: usize,
    pub site: Site,
    pub head: Option<usize>,
    pub mode: Mode,
    pub values: Vec<f32>,
}

/// Bytes of keys and values the patched passes of one step may hold, beyond the prompt's own.
const FORK_BUDGET: usize = 256 << 20;
/// At most this many patched passes in one step.
const MAX_PASSES: usize = 64;

/// How many patched passes of a prompt of `len` tokens one step runs.
fn passes_per_step(spec: &crate::ModelSpec, len: usize) -> usize {
    let per_slot = len.max(1) * spec.n_layer * 2 * spec.kv_width() * 4;
    (FORK_BUDGET / per_slot.max(1)).clamp(1, MAX_PASSES)
}

/// Runs `prompt` once per job, each job's patches applied at its last token, and hands each
/// job's last logits to `out(job, logits)`. The tokens before the last run once (slot 0) and
/// are copied to each pass's slot. `progress(passes done)` after every step; `Stop` ends it
/// with `Ok(false)`.
pub async fn last_token_passes<B: Backend>(
    backend: &mut B,
    prompt: &[u32],
    jobs: &[Vec<LastPatch>],
    out: &mut dyn FnMut(usize, &[f32]),
    progress: &mut dyn FnMut(usize) -> Flow,
) -> Result<bool> {
    let spec = *backend.config();
    let Some((&last, prefix)) = prompt.split_last() else {
        return Err(bad("a patched pass needs a prompt with tokens".into()));
    };
    let per_step = passes_per_step(&spec, prompt.len()).min(jobs.len().max(1));
    backend.reset(1 + per_step, prompt.len())?;
    if !prefix.is_empty() {
        let req = StepRequest {
            seqs: vec![SeqStep { slot: 0, tokens: prefix.to_vec() }],
            injections: Vec::new(),
            captures: Vec::new(),
            logits: LogitRows::None,
        };
        backend.step(&req).await?;
    }
    let v = spec.vocab_size;
    for (c, chunk) in jobs.chunks(per_step).enumerate() {
        for k in 0..chunk.len() {
            backend.fork_slot(0, 1 + k)?;
        }
        let rows = chunk.len();
        let injections = chunk
            .iter()
            .enumerate()
            .flat_map(|(k, patches)| {
                patches.iter().map(move |p| {
                    let mut row_map = vec![u32::MAX; rows];
                    row_map[k] = 0;
                    Injection { layer: p.layer, site: p.site, head: p.head, mode: p.mode, table: p.values.clone(), row_map }
                })
            })
            .collect();
        let req = StepRequest {
            seqs: (0..rows).map(|k| SeqStep { slot: 1 + k, tokens: vec![last] }).collect(),
            injections,
            captures: Vec::new(),
            logits: LogitRows::Last,
        };
        let logits = backend.step(&req).await?.logits;
        if !crate::generate::all_finite(&logits) {
            return Err(crate::generate::non_finite_error("in a patched pass", crate::generate::Traced::NotTraced));
        }
        for (k, row) in logits.chunks_exact(v).enumerate() {
            out(c * per_step + k, row);
        }
        if progress(c * per_step + rows) == Flow::Stop {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The mean of `z[l, h]` at the last token over `prompts`, and the mean P(answer) on them.
pub async fn mean_head_outputs<B: Backend>(
    backend: &mut B,
    prompts: &[Vec<u32>],
    answers: &[u32],
    progress: &mut dyn FnMut(usize, usize) -> Flow,
) -> Result<Option<(HeadMeans, f64)>> {
    let spec = *backend.config();
    crate::contrast::check_texts(prompts, &spec)?;
    let w = spec.q_width();
    let mut sums = vec![0.0f64; spec.n_layer * w];
    let mut prob = 0.0f64;
    for range in crate::contrast::step_batches(prompts.iter().map(Vec::len)) {
        let batch = &prompts[range.clone()];
        backend.reset(batch.len(), batch.iter().map(Vec::len).max().unwrap_or(1))?;
        let req = StepRequest {
            seqs: batch.iter().enumerate().map(|(slot, t)| SeqStep { slot, tokens: t.clone() }).collect(),
            injections: Vec::new(),
            captures: (0..spec.n_layer).map(|l| Capture::rows(l, Site::Z, None, RowSelect::Last)).collect(),
            logits: LogitRows::Last,
        };
        let out = backend.step(&req).await?;
        if !crate::generate::all_finite(&out.logits) {
            return Err(crate::generate::non_finite_error("on a clean ICL prompt", crate::generate::Traced::NotTraced));
        }
        for (l, cap) in out.captured.iter().enumerate() {
            for row in cap.chunks_exact(w) {
                for (s, &x) in sums[l * w..(l + 1) * w].iter_mut().zip(row) {
                    *s += x as f64;
                }
            }
        }
        for (row, &a) in out.logits.chunks_exact(spec.vocab_size).zip(&answers[range.clone()]) {
            prob += token_probability(row, a) as f64;
        }
        if progress(range.end, prompts.len()) == Flow::Stop {
            return Ok(None);
        }
    }
    let n = prompts.len().max(1) as f64;
    let values = sums.iter().map(|&s| (s / n) as f32).collect();
    Ok(Some((HeadMeans { n_layer: spec.n_layer, n_head: spec.n_head, head_dim: spec.head_dim, values }, prob / n)))
}

/// Every head's average indirect effect, `[L, NH]` flattened, and the mean P(answer) on the
/// corrupted prompts unpatched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndirectEffects {
    pub aie: Vec<f64>,
    pub corrupted_prob: f64,
}

/// The average indirect effect of every head over the corrupted prompts (module docs).
/// `progress(done, total)` counts patched passes.
pub async fn indirect_effects<B: Backend>(
    backend: &mut B,
    corrupted: &[Vec<u32>],
    answers: &[u32],
    means: &HeadMeans,
    progress: &mut dyn FnMut(usize, usize) -> Flow,
) -> Result<Option<IndirectEffects>> {
    let spec = *backend.config();
    crate::contrast::check_texts(corrupted, &spec)?;
    let heads = spec.n_layer * spec.n_head;
    // Job 0 is the unpatched pass; job 1 + l·NH + h patches head (l, h).
    let mut jobs = vec![Vec::new()];
    for l in 0..spec.n_layer {
        for h in 0..spec.n_head {
            jobs.push(vec![LastPatch { layer: l, site: Site::Z, head: Some(h), mode: Mode::Set, values: means.head(l, h).to_vec() }]);
        }
    }
    let total = corrupted.len() * jobs.len();
    let mut sums = vec![0.0f64; heads];
    let mut base = 0.0f64;
    for (p, (prompt, &answer)) in corrupted.iter().zip(answers).enumerate() {
        let mut probs = vec![0.0f64; jobs.len()];
        let done = p * jobs.len();
        let went_on =
            last_token_passes(backend, prompt, &jobs, &mut |j, logits| probs[j] = token_probability(logits, answer) as f64, &mut |k| {
                progress(done + k, total)
            })
            .await?;
        if !went_on {
            return Ok(None);
        }
        base += probs[0];
        for (s, &pr) in sums.iter_mut().zip(&probs[1..]) {
            *s += pr - probs[0];
        }
    }
    let n = corrupted.len().max(1) as f64;
    Ok(Some(IndirectEffects { aie: sums.iter().map(|s| s / n).collect(), corrupted_prob: base / n }))
}

/// One head of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Head {
    pub layer: usize,
    pub head: usize,
}

impl Head {
    /// Parses `L.H` (`9.8`).
    pub fn parse(s: &str) -> Option<Self> {
        let (l, h) = s.trim().split_once('.')?;
        Some(Head { layer: l.trim().parse().ok()?, head: h.trim().parse().ok()? })
    }

    /// Parses a comma-separated list of `L.H`, checked against the model.
    pub fn parse_list(s: &str, spec: &crate::ModelSpec) -> Result<Vec<Head>> {
        let mut heads: Vec<Head> = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let h = Head::parse(part).ok_or_else(|| bad(format!("{part:?} is not a head: write LAYER.HEAD, such as 9.8")))?;
            if h.layer >= spec.n_layer || h.head >= spec.n_head {
                return Err(bad(format!(
                    "head {}.{} is not in this model: it has layers 0..{} and heads 0..{} per layer",
                    h.layer,
                    h.head,
                    spec.n_layer - 1,
                    spec.n_head - 1
                )));
            }
            if !heads.contains(&h) {
                heads.push(h);
            }
        }
        if heads.is_empty() {
            return Err(bad("no heads given: write a list such as 9.8,10.3".into()));
        }
        Ok(heads)
    }
}

/// The `k` heads of largest AIE (ties: the earlier head), largest first.
pub fn top_heads(aie: &[f64], n_head: usize, k: usize) -> Vec<Head> {
    let mut idx: Vec<usize> = (0..aie.len()).collect();
    idx.sort_by(|&a, &b| aie[b].total_cmp(&aie[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.into_iter().map(|i| Head { layer: i / n_head, head: i % n_head }).collect()
}

/// Σ over `heads` of mean `z[l, h]` through head h's rows of layer l's output projection,
/// without the bias: `[C]`. The engine computes it: per layer, one pass sets z to the layer's
/// chosen heads' means (zeros elsewhere) and one to zeros, and the attention outputs'
/// difference is the projection without its bias.
pub async fn function_vector<B: Backend>(backend: &mut B, means: &HeadMeans, heads: &[Head], token: u32) -> Result<Vec<f32>> {
    let spec = *backend.config();
    let (c, w, hd) = (spec.n_embd, spec.q_width(), spec.head_dim);
    let mut layers: Vec<usize> = heads.iter().map(|h| h.layer).collect();
    layers.sort_unstable();
    layers.dedup();
    let mut fv = vec![0.0f64; c];
    if layers.is_empty() {
        return Ok(vec![0.0; c]);
    }
    let slots = 2 * layers.len();
    backend.reset(slots, 1)?;
    let mut injections = Vec::new();
    let mut captures = Vec::new();
    for (i, &l) in layers.iter().enumerate() {
        let mut table = vec![0.0f32; 2 * w];
        for h in heads.iter().filter(|h| h.layer == l) {
            table[h.head * hd..(h.head + 1) * hd].copy_from_slice(means.head(l, h.head));
        }
        let mut row_map = vec![u32::MAX; slots];
        row_map[2 * i] = 0;
        row_map[2 * i + 1] = 1;
        injections.push(Injection { layer: l, site: Site::Z, head: None, mode: Mode::Set, table, row_map });
        captures.push(Capture::rows(l, Site::AttnOut, None, RowSelect::Positions(vec![(2 * i, 0), (2 * i + 1, 0)])));
    }
    let req = StepRequest {
        seqs: (0..slots).map(|slot| SeqStep { slot, tokens: vec![token] }).collect(),
        injections,
        captures,
        logits: LogitRows::None,
    };
    let out = backend.step(&req).await?;
    for cap in &out.captured {
        let (with, zero) = cap.split_at(c);
        for (f, (&a, &b)) in fv.iter_mut().zip(with.iter().zip(zero)) {
            *f += a as f64 - b as f64;
        }
    }
    Ok(fv.iter().map(|&x| x as f32).collect())
}

/// Accuracy of the first token with and without the vector added at one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAccuracy {
    pub layer: usize,
    pub zero_shot: f64,
    pub shuffled: f64,
}

/// The evaluation on held-out pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Evaluation {
    /// Held-out pairs evaluated.
    pub pairs: usize,
    /// Without the vector.
    pub zero_shot: f64,
    pub shuffled: f64,
    /// With the vector added to resid_pre of each layer at the last position.
    pub layers: Vec<LayerAccuracy>,
}

/// A held-out pair's prompts: zero-shot `"Q: {input}\nA:"`, and shuffled-label ICL (K
/// demonstrations of training pairs, their outputs rotated, then the query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalPrompt {
    pub zero_shot: Vec<u32>,
    pub shuffled: Vec<u32>,
    pub answer: u32,
}

/// The held-out prompts to evaluate on, at most `max_pairs`.
pub fn eval_prompts(
    tok: &Tokenizer,
    pairs: &[IclPair],
    plan: &TaskPlan,
    shots: usize,
    bos: bool,
    n_positions: usize,
    max_pairs: usize,
) -> Result<Vec<EvalPrompt>> {
    let n_train = plan.train.len();
    plan.held_out
        .iter()
        .take(max_pairs)
        .enumerate()
        .map(|(i, &q)| {
            let demos: Vec<usize> = (0..shots.min(n_train)).map(|j| plan.train[(i * shots + j) % n_train]).collect();
            let k = demos.len();
            let corrupted = (0..k).map(|j| demos[(j + 1) % k]).collect();
            let shuffled = IclPrompt { demos, query: q, corrupted }.text(pairs, true);
            Ok(EvalPrompt {
                zero_shot: prompt_tokens(tok, &query(&pairs[q].input), bos, n_positions)?,
                shuffled: prompt_tokens(tok, &shuffled, bos, n_positions)?,
                answer: answer_token(tok, &pairs[q].output)?,
            })
        })
        .collect()
}

/// First-token accuracy of `prompts` without `fv` and with it
/// added to resid_pre of each layer at the last token.
pub async fn evaluate<B: Backend>(
    backend: &mut B,
    prompts: &[EvalPrompt],
    fv: &[f32],
    progress: &mut dyn FnMut(usize, usize) -> Flow,
) -> Result<Option<Evaluation>> {
    let spec = *backend.config();
    let n_layer = spec.n_layer;
    let mut jobs = vec![Vec::new()];
    jobs.extend((0..n_layer).map(|l| vec![LastPatch { layer: l, site: Site::ResidPre, head: None, mode: Mode::Add, values: fv.to_vec() }]));
    // Per job: hits on zero-shot prompts, on shuffled ones.
    let mut hits = vec![[0usize; 2]; jobs.len()];
    let total = prompts.len() * 2 * jobs.len();
    let mut done = 0;
    for EvalPrompt { zero_shot, shuffled, answer } in prompts {
        for (kind, prompt) in [zero_shot, shuffled].into_iter().enumerate() {
            let at = done;
            let went_on = last_token_passes(
                backend,
                prompt,
                &jobs,
                &mut |j, logits| {
                    if crate::sample::top_k_indices(logits, 1).first() == Some(&(*answer as usize)) {
                        hits[j][kind] += 1;
                    }
                },
                &mut |k| progress(at + k, total),
            )
            .await?;
            if !went_on {
                return Ok(None);
            }
            done += jobs.len();
        }
    }
    let n = prompts.len().max(1) as f64;
    let acc = |j: usize, kind: usize| hits[j][kind] as f64 / n;
    Ok(Some(Evaluation {
        pairs: prompts.len(),
        zero_shot: acc(0, 0),
        shuffled: acc(0, 1),
        layers: (0..n_layer).map(|l| LayerAccuracy { layer: l, zero_shot: acc(l + 1, 0), shuffled: acc(l + 1, 1) }).collect(),
    }))
}

/// What a function-vector run is asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FvSettings {
    pub shots: usize,
    pub prompts: usize,
    pub order: Order,
    /// With a seed: the fraction of the pairs held out.
    pub held_out: f64,
    /// The vector is the sum of this many heads of largest AIE…
    pub top_heads: usize,
    /// …or of these.
    pub heads: Option<Vec<Head>>,
    pub bos: bool,
    /// At most this many held-out pairs evaluated (0: none).
    pub eval_pairs: usize,
}

impl Default for FvSettings {
    fn default() -> Self {
        Self { shots: 10, prompts: 25, order: Order::Seeded(0), held_out: 0.3, top_heads: 10, heads: None, bos: false, eval_pairs: 50 }
    }
}

/// Which part of a run a progress report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Clean prompts run (counted in prompts).
    Clean,
    /// Patched passes for the indirect effects.
    Patched,
    /// Evaluation passes.
    Eval,
}

/// Everything a run finds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FvRun {
    pub plan: TaskPlan,
    pub clean: Vec<Vec<u32>>,
    pub corrupted: Vec<Vec<u32>>,
    pub answers: Vec<u32>,
    pub clean_prob: f64,
    pub effects: IndirectEffects,
    /// The `top_heads` heads of largest AIE, largest first.
    pub top: Vec<Head>,
    /// The heads the vector sums (`top`, or the ones given).
    pub vector_heads: Vec<Head>,
    /// `[C]`
    pub vector: Vec<f32>,
    pub norm: f64,
    pub eval: Option<Evaluation>,
}

/// The whole pipeline on `pairs`: prompts, mean head outputs, every head's AIE, the vector and
/// its evaluation on held-out pairs. `Ok(None)` when `progress` answers `Stop`.
pub async fn run<B: Backend>(
    backend: &mut B,
    tok: &Tokenizer,
    pairs: &[IclPair],
    s: &FvSettings,
    progress: &mut dyn FnMut(Phase, usize, usize) -> Flow,
) -> Result<Option<FvRun>> {
    let spec = *backend.config();
    let plan = plan(pairs.len(), s.shots, s.prompts, s.order, s.held_out)?;
    if let Some(heads) = &s.heads {
        if let Some(h) = heads.iter().find(|h| h.layer >= spec.n_layer || h.head >= spec.n_head) {
            return Err(bad(format!("head {}.{} is not in this model", h.layer, h.head)));
        }
    }
    let (mut clean, mut corrupted, mut answers) = (Vec::new(), Vec::new(), Vec::new());
    for p in &plan.prompts {
        clean.push(prompt_tokens(tok, &p.text(pairs, false), s.bos, spec.n_positions)?);
        corrupted.push(prompt_tokens(tok, &p.text(pairs, true), s.bos, spec.n_positions)?);
        answers.push(answer_token(tok, &pairs[p.query].output)?);
    }
    let eval_set = eval_prompts(tok, pairs, &plan, s.shots, s.bos, spec.n_positions, s.eval_pairs)?;
    let Some((means, clean_prob)) = mean_head_outputs(backend, &clean, &answers, &mut |d, t| progress(Phase::Clean, d, t)).await? else {
        return Ok(None);
    };
    let Some(effects) = indirect_effects(backend, &corrupted, &answers, &means, &mut |d, t| progress(Phase::Patched, d, t)).await? else {
        return Ok(None);
    };
    let top = top_heads(&effects.aie, spec.n_head, s.top_heads);
    let vector_heads = s.heads.clone().unwrap_or_else(|| top.clone());
    let vector = function_vector(backend, &means, &vector_heads, clean[0][0]).await?;
    let eval = if eval_set.is_empty() {
        None
    } else {
        match evaluate(backend, &eval_set, &vector, &mut |d, t| progress(Phase::Eval, d, t)).await? {
            Some(e) => Some(e),
            None => return Ok(None),
        }
    };
    let norm = crate::library::norm(&vector);
    Ok(Some(FvRun { plan, clean, corrupted, answers, clean_prob, effects, top, vector_heads, vector, norm, eval }))
}

/// The layer to add the vector at when none is chosen: the first of best zero-shot accuracy,
/// else (no evaluation) a third of the depth.
pub fn best_layer(eval: Option<&Evaluation>, n_layer: usize) -> usize {
    match eval.and_then(|e| e.layers.iter().reduce(|best, l| if l.zero_shot > best.zero_shot { l } else { best })) {
        Some(l) => l.layer,
        None => n_layer / 3,
    }
}

/// A held-out pair's greedy completion of its zero-shot prompt, without and with the vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FvCompletion {
    pub input: String,
    pub expected: String,
    pub unsteered: String,
    pub steered: String,
}

/// Greedy completions (`max_new` tokens) of the first `k` held-out pairs' zero-shot prompts,
/// side by side, the vector added to resid_pre of `layer` at the last position of every step.
#[allow(clippy::too_many_arguments)]
pub async fn completions<B: Backend>(
    backend: &mut B,
    tok: &Tokenizer,
    pairs: &[IclPair],
    plan: &TaskPlan,
    vector: &[f32],
    layer: usize,
    bos: bool,
    k: usize,
    max_new: usize,
) -> Result<Vec<FvCompletion>> {
    use crate::recipe::{Positions, Recipe, Sampling};
    let spec = *backend.config();
    let recipe = Recipe {
        n: 1,
        max_new_tokens: max_new,
        sampling: Sampling { greedy: true, freq_penalty: 0.0, ..Sampling::default() },
        positions: Positions::Last,
        site: Site::ResidPre,
        bos,
        ..Recipe::default()
    };
    let vectors = [crate::steer::LayerVector::from_saved(layer, 1.0, vector, None, Site::ResidPre, Positions::Last)];
    let mut out = Vec::new();
    for &q in plan.held_out.iter().take(k) {
        let prompt = prompt_tokens(tok, &query(&pairs[q].input), bos, spec.n_positions.saturating_sub(max_new))?;
        let g = crate::generate::generate_with_vectors(backend, tok, &recipe, &prompt, &vectors, &mut |_| Flow::Continue).await?;
        out.push(FvCompletion {
            input: pairs[q].input.clone(),
            expected: pairs[q].output.clone(),
            unsteered: g.unsteered[0].text.clone(),
            steered: g.steered[0].text.clone(),
        });
    }
    Ok(out)
}

/// Where a saved function vector came from, for its library entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance<'a> {
    pub name: &'a str,
    pub model: &'a str,
    pub task: &'a str,
    pub prompts: usize,
    pub shots: usize,
    pub created: &'a str,
}

/// A library entry holding `vector` at `layer` (site resid_pre), its provenance naming the
/// task, the prompts and the heads; it steers at the last position (`extra.positions`).
pub fn to_entry(vector: &[f32], heads: &[Head], layer: usize, p: &Provenance) -> crate::library::VectorEntry {
    let heads = heads.iter().map(|h| format!("{}.{}", h.layer, h.head)).collect::<Vec<_>>().join(",");
    crate::library::VectorEntry {
        name: p.name.into(),
        model: p.model.into(),
        site: Site::ResidPre,
        method: "function_vector".into(),
        source: format!("{} ({} prompts of {} shots; heads {heads})", p.task, p.prompts, p.shots),
        created: p.created.into(),
        formula: None,
        extra: [("heads".to_string(), heads), ("positions".to_string(), "last".to_string())].into_iter().collect(),
        layers: vec![crate::library::LayerEntry { layer, vector: vector.to_vec(), front: None }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_parse_and_bad_lines_are_named() {
        let pairs =
            parse_task(b"{\"input\": \"hot\", \"output\": \"cold\"}\n\n{\"input\": \"up\", \"output\": \"down\", \"x\": 1}\n").unwrap();
        assert_eq!(
            pairs,
            vec![IclPair { input: "hot".into(), output: "cold".into() }, IclPair { input: "up".into(), output: "down".into() }]
        );
        let e = parse_task(b"{\"input\": \"hot\"}\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("\"output\" is missing"), "{e}");
        let e = parse_task(b"{\"input\": \"hot\", \"output\": 3}\n").unwrap_err().to_string();
        assert!(e.contains("should be a string"), "{e}");
        assert!(parse_task(b"\n").is_err());
        assert_eq!(parse_pasted("hot -> cold\n\nup\tdown\n").unwrap().len(), 2);
        assert!(parse_pasted("hot cold").unwrap_err().to_string().contains("line 1"));
        let both = both_directions(&pairs);
        assert_eq!(both[1], IclPair { input: "cold".into(), output: "hot".into() });
        assert_eq!(both.len(), 4);
    }

    #[test]
    fn in_order_prompts_take_consecutive_pairs_and_rotate_outputs() {
        let p = plan(11, 3, 2, Order::InOrder, 0.3).unwrap();
        assert_eq!(p.prompts[0], IclPrompt { demos: vec![0, 1, 2], query: 3, corrupted: vec![1, 2, 0] });
        assert_eq!(p.prompts[1], IclPrompt { demos: vec![4, 5, 6], query: 7, corrupted: vec![5, 6, 4] });
        assert_eq!(p.held_out, vec![8, 9, 10]);
        let pairs: Vec<IclPair> = (0..11).map(|i| IclPair { input: format!("i{i}"), output: format!("o{i}") }).collect();
        assert_eq!(p.prompts[0].text(&pairs, false), "Q: i0\nA: o0\n\nQ: i1\nA: o1\n\nQ: i2\nA: o2\n\nQ: i3\nA:");
        assert_eq!(p.prompts[0].text(&pairs, true), "Q: i0\nA: o1\n\nQ: i1\nA: o2\n\nQ: i2\nA: o0\n\nQ: i3\nA:");
        assert!(plan(7, 3, 2, Order::InOrder, 0.0).unwrap_err().to_string().contains("take 8 pairs"));
    }

    #[test]
    fn seeded_prompts_are_distinct_pairs_of_the_training_part_and_repeat_with_the_seed() {
        let p = plan(40, 5, 10, Order::Seeded(7), 0.25).unwrap();
        assert_eq!(p.held_out.len(), 10);
        assert_eq!(p, plan(40, 5, 10, Order::Seeded(7), 0.25).unwrap());
        assert_ne!(p, plan(40, 5, 10, Order::Seeded(8), 0.25).unwrap());
        for pr in &p.prompts {
            let mut all = pr.demos.clone();
            all.push(pr.query);
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), 6);
            assert!(all.iter().all(|i| p.train.contains(i)));
            let mut shown = pr.corrupted.clone();
            shown.sort_unstable();
            let mut demos = pr.demos.clone();
            demos.sort_unstable();
            assert_eq!(shown, demos, "the corrupted outputs are a permutation of the demonstrations'");
            assert!(pr.demos.iter().zip(&pr.corrupted).all(|(d, c)| d != c), "every demonstration shows another's output");
        }
        assert!(plan(5, 5, 1, Order::Seeded(1), 0.3).is_err());
        assert!(plan(5, 0, 1, Order::Seeded(1), 0.3).is_err());
        assert!(plan(5, 1, 1, Order::InOrder, 0.0).unwrap_err().to_string().contains("at least 2"));
        assert!(plan(5, 1, 1, Order::Seeded(1), 1.0).is_err());
    }

    #[test]
    fn heads_parse_and_rank() {
        let spec = crate::ModelSpec::gpt2(2, 8, 2, 16, 10);
        assert_eq!(Head::parse_list("1.0, 0.1,1.0", &spec).unwrap(), vec![Head { layer: 1, head: 0 }, Head { layer: 0, head: 1 }]);
        assert!(Head::parse_list("2.0", &spec).unwrap_err().to_string().contains("layers 0..1"));
        assert!(Head::parse_list("x", &spec).is_err());
        assert_eq!(
            top_heads(&[0.1, 0.5, 0.5, -1.0], 2, 3),
            vec![Head { layer: 0, head: 1 }, Head { layer: 1, head: 0 }, Head { layer: 0, head: 0 }]
        );
    }
}
