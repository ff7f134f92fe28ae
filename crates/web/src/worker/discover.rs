//! The worker's side of the Discover area: MELBO (`tiller melbo`'s computation,
//! `tiller_core::melbo::train`) on the loaded engine's tape (the CPU reference's or the GPU's),
//! one vector at a time, each sent with its completions and decoded vocabulary as soon as it is
//! done; and completions with a vector at another coefficient.

use tiller_core::generate::Flow;
use tiller_core::melbo::{self, CpuTape, Differentiable, MelboSettings, Objective, Progress};
use tiller_core::recipe::Sampling;
use tiller_core::steer::encode_with_bos;
use tiller_core::{Backend, Result, Tokenizer};
use tiller_gpu::GpuTape;

use super::engine::{user_error, yield_now, Engine};
use super::{post, state, Lease};
use crate::protocol::{FromWorker, MelboSpec, MelboSteerSpec, MelboVectorView, UserError, VocabEntryView};

/// A [`Differentiable`] that gives the worker's event loop a turn before each forward, so Stop
/// can arrive while a CPU tape (which never awaits) trains.
struct YieldingTape<D>(D);

impl<D: Differentiable> Differentiable for YieldingTape<D> {
    fn width(&self) -> usize {
        self.0.width()
    }
    async fn forward(&mut self, theta: &[f32]) -> Result<Vec<Vec<f32>>> {
        yield_now().await;
        self.0.forward(theta).await
    }
    async fn backward(&mut self, dh: &[Vec<f32>]) -> Result<Vec<f32>> {
        self.0.backward(dh).await
    }
}

fn settings(spec: &MelboSpec) -> MelboSettings {
    MelboSettings {
        source: spec.source,
        target: spec.target,
        radius: Some(spec.radius),
        vectors: spec.vectors,
        steps: spec.steps,
        objective: Objective { p: spec.p, q: spec.q, tokens: spec.target_tokens },
        orthogonal: spec.orthogonal,
        seed: spec.seed,
        init: Vec::new(),
    }
}

/// A finished vector's view: its completions of the first prompt and its decoded vocabulary.
async fn describe<B: Backend>(
    b: &mut B,
    tok: &Tokenizer,
    first: &[u32],
    spec: &MelboSpec,
    index: usize,
    v: melbo::MelboVector,
) -> Result<MelboVectorView> {
    let completions = melbo::completions(b, tok, first, &v.vector, spec.source, 1.0, spec.new_tokens, Sampling::greedy(), 0).await?;
    let (top, bottom) = tiller_core::vocab::decode_vector(b, tok, &v.vector, 10, true).await?;
    let view = |e: &[tiller_core::vocab::VocabEntry]| e.iter().map(VocabEntryView::from).collect();
    Ok(MelboVectorView {
        index,
        vector: v.vector,
        objective: v.objective,
        losses: v.losses,
        completions,
        top_tokens: view(&top),
        bottom_tokens: view(&bottom),
    })
}

/// Trains vector `k` of the run on the engine's tape, orthogonal to `learned` when asked,
/// posting each step's f; None when Stop arrived.
async fn train_vector(
    engine: &mut Engine,
    acts: &[melbo::PromptActs],
    prompts: &[Vec<u32>],
    s: &MelboSettings,
    learned: &[Vec<f32>],
    k: usize,
    run_id: u64,
) -> Result<Option<melbo::MelboVector>> {
    let st = state();
    let mut on_step = |p: Progress| {
        post(&FromWorker::MelboProgress { run_id, vector: k, vectors: s.vectors, step: p.step, steps: p.steps, loss: p.loss });
        if st.stop.get() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    };
    match engine {
        Engine::Cpu(m) => {
            let mut tape = YieldingTape(CpuTape::new(m.weights(), acts, s.source, s.target));
            melbo::train_one(&mut tape, acts, s, learned, k, &mut on_step).await
        }
        Engine::Gpu(g) => {
            let mut tape = YieldingTape(GpuTape::new(g, prompts.to_vec(), s.source, s.target));
            melbo::train_one(&mut tape, acts, s, learned, k, &mut on_step).await
        }
    }
}

/// The run's prompts as tokens, its settings checked against the engine, and each prompt's
/// unsteered activations.
async fn prepare(engine: &mut Engine, tok: &Tokenizer, spec: &MelboSpec) -> Result<(Vec<Vec<u32>>, MelboSettings, Vec<melbo::PromptActs>)> {
    let prompts: Vec<Vec<u32>> = spec.prompts.iter().map(|p| encode_with_bos(tok, p, spec.bos)).collect::<Result<_>>()?;
    let s = settings(spec);
    let n_layer = match engine {
        Engine::Cpu(m) => m.config().n_layer,
        Engine::Gpu(g) => g.config().n_layer,
    };
    s.check(with_width(engine), n_layer)?;
    let acts = match engine {
        Engine::Cpu(m) => melbo::prepare(m, &prompts, s.source, s.target).await?,
        Engine::Gpu(g) => melbo::prepare(g, &prompts, s.source, s.target).await?,
    };
    Ok((prompts, s, acts))
}

/// Trains one vector at a time (a one-vector run per vector, with the earlier ones as the
/// orthogonality constraint, which is exactly `train`'s loop), describing each as it is done.
pub async fn melbo(run_id: u64, spec: MelboSpec) {
    let fail = |error: UserError| post(&FromWorker::MelboFailed { run_id, error });
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return fail(error),
    };
    let tok = lease.tok.clone();
    let st = state();
    st.stop.set(false);
    let result: Result<()> = async {
        let engine = lease.engine();
        let (prompts, s, acts) = prepare(engine, &tok, &spec).await?;
        let mut learned: Vec<Vec<f32>> = Vec::new();
        for k in 0..s.vectors {
            let Some(v) = train_vector(engine, &acts, &prompts, &s, &learned, k, run_id).await? else { break };
            learned.push(v.vector.clone());
            let view = match engine {
                Engine::Cpu(m) => describe(m, &tok, &prompts[0], &spec, k, v).await?,
                Engine::Gpu(g) => describe(g, &tok, &prompts[0], &spec, k, v).await?,
            };
            post(&FromWorker::MelboVector { run_id, vector: view });
            if st.stop.get() {
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(lease);
    match result {
        Ok(()) => post(&FromWorker::MelboDone { run_id, stopped: st.stop.get() }),
        Err(e) => fail(user_error(&e)),
    }
}

/// A sweep over R (`tiller melbo-sweep`'s computation): at each R the run's K vectors, then
/// their completions judged by the unsteered model, one point posted per R.
pub async fn sweep(run_id: u64, spec: MelboSpec, radii: Vec<f64>) {
    let fail = |error: UserError| post(&FromWorker::MelboFailed { run_id, error });
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return fail(error),
    };
    let tok = lease.tok.clone();
    let st = state();
    st.stop.set(false);
    let result: Result<()> = async {
        let engine = lease.engine();
        let (prompts, base, acts) = prepare(engine, &tok, &spec).await?;
        'radii: for &r in &radii {
            let s = MelboSettings { radius: Some(r), ..base.clone() };
            let n_layer = match engine {
                Engine::Cpu(m) => m.config().n_layer,
                Engine::Gpu(g) => g.config().n_layer,
            };
            s.check(with_width(engine), n_layer)?;
            let mut trained: Vec<melbo::MelboVector> = Vec::with_capacity(s.vectors);
            for k in 0..s.vectors {
                let learned: Vec<Vec<f32>> = trained.iter().map(|v| v.vector.clone()).collect();
                let Some(v) = train_vector(engine, &acts, &prompts, &s, &learned, k, run_id).await? else { break 'radii };
                trained.push(v);
            }
            let point = match engine {
                Engine::Cpu(m) => melbo::sweep::judge(m, &tok, &prompts, r, &trained, s.source, spec.new_tokens).await?,
                Engine::Gpu(g) => melbo::sweep::judge(g, &tok, &prompts, r, &trained, s.source, spec.new_tokens).await?,
            };
            post(&FromWorker::MelboSweepPoint { run_id, point });
            if st.stop.get() {
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(lease);
    match result {
        Ok(()) => post(&FromWorker::MelboDone { run_id, stopped: st.stop.get() }),
        Err(e) => fail(user_error(&e)),
    }
}

fn with_width(engine: &Engine) -> usize {
    match engine {
        Engine::Cpu(m) => m.config().n_embd,
        Engine::Gpu(g) => g.config().n_embd,
    }
}

/// Completions of the spec's prompt with ±coeff·θ ("Redo at c"), greedy or sampled.
pub async fn steer(id: u64, spec: MelboSteerSpec) {
    let answer = |result| post(&FromWorker::MelboSteered { id, result });
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return answer(Err(error)),
    };
    let tok = lease.tok.clone();
    let MelboSteerSpec { prompt, bos, vector, source, coeff, new_tokens, sampling, seed } = spec;
    let r = async {
        let tokens = encode_with_bos(&tok, &prompt, bos)?;
        match lease.engine() {
            Engine::Cpu(m) => melbo::completions(m, &tok, &tokens, &vector, source, coeff, new_tokens, sampling, seed).await,
            Engine::Gpu(g) => melbo::completions(g, &tok, &tokens, &vector, source, coeff, new_tokens, sampling, seed).await,
        }
    }
    .await;
    drop(lease);
    answer(r.map_err(|e| user_error(&e)));
}
