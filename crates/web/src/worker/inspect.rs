//! The worker's side of the Inspect area: a vector projected over texts (`tiller inspect
//! project`), what steering changed along a steered completion (`tiller inspect diff`), and
//! the prompt layer by layer (`tiller inspect norms` with the logit lens).

use tiller_core::generate::Flow;
use tiller_core::steer::{self, LayerVector, TextEncoding};
use tiller_core::{inspect, Backend, Recipe, Site, TillerError, Tokenizer};

use super::engine::{user_error, with_backend, Yielding};
use super::{post, state, Lease};
use crate::protocol::{
    ChangeView, ErrorKind, FromWorker, LensLayerView, LensSteeringView, PositionChangeView, ProbeVector, ProjectedText, ProjectionView,
    UserError, VocabEntryView,
};

use crate::inspect::MAX_TEXTS;

/// One token decoded alone (its vocabulary text where it is not whole UTF-8 by itself).
fn piece(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id]).unwrap_or_else(|_| tok.token_text(id))
}

/// The recipe's prompt tokens and steering vectors, as a run computes them.
async fn recipe_vectors<B: Backend>(b: &mut B, tok: &Tokenizer, recipe: &Recipe) -> Result<(Vec<u32>, Vec<LayerVector>), TillerError> {
    let cfg = *b.config();
    let prompt = steer::prompt_tokens(tok, &Recipe { max_new_tokens: 0, ..recipe.clone() }, cfg.n_positions)?;
    let mut vectors = steer::steering_vectors(b, tok, &recipe.terms, TextEncoding::of_terms(recipe), recipe.site).await?;
    vectors.extend(steer::vector_terms(&recipe.vectors));
    Ok((prompt, vectors))
}

/// The vector a probe names, on this engine.
async fn probe_values<B: Backend>(b: &mut B, tok: &Tokenizer, probe: &ProbeVector) -> Result<Vec<f32>, TillerError> {
    match probe {
        ProbeVector::Values(v) => Ok(v.clone()),
        ProbeVector::Steering { recipe, layer } => {
            let (_, vectors) = recipe_vectors(b, tok, recipe).await?;
            let at: Vec<&LayerVector> = vectors.iter().filter(|v| v.layer == *layer && v.head.is_none()).collect();
            let Some(first) = at.first() else {
                return Err(TillerError::input(format!("the recipe steers nothing at layer {layer}")));
            };
            let mut sum = vec![0.0f32; first.last.len()];
            for v in &at {
                sum.iter_mut().zip(&v.last).for_each(|(s, x)| *s += x);
            }
            Ok(sum)
        }
    }
}

pub async fn project(run_id: u64, probe: ProbeVector, layer: usize, site: Site, texts: Vec<String>, bos: bool) {
    let fail = |error: UserError| post(&FromWorker::ProjectFailed { run_id, error });
    let texts: Vec<String> = texts.into_iter().filter(|t| !t.trim().is_empty()).collect();
    if texts.is_empty() {
        return fail(UserError::new(ErrorKind::Recipe, "there are no texts to read the vector against: put one text per line"));
    }
    if texts.len() > MAX_TEXTS {
        return fail(UserError::new(
            ErrorKind::Recipe,
            format!("{} texts is more than the {MAX_TEXTS} one reading takes: use fewer", texts.len()),
        ));
    }
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return fail(error),
    };
    let tok = lease.tok.clone();
    let context = with_backend!(lease.engine(), |b| b.config().n_positions);
    let mut cut = 0;
    let mut ids = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        match steer::encode_with_bos(&tok, t, bos) {
            Ok(mut t) => {
                if t.len() > context {
                    t.truncate(context);
                    cut += 1;
                }
                if t.is_empty() {
                    return fail(UserError::new(ErrorKind::Recipe, format!("text {} has no tokens: turn BOS on, or remove it", i + 1)));
                }
                ids.push(t)
            }
            Err(e) => return fail(UserError::new(ErrorKind::Recipe, format!("text {}: {}", i + 1, user_error(&e).message))),
        }
    }
    let st = state();
    st.stop.set(false);
    let result = with_backend!(lease.engine(), |b| {
        let mut y = Yielding(b);
        match probe_values(&mut y, &tok, &probe).await {
            Ok(v) => {
                let projected = inspect::project(&mut y, &ids, layer, site, &v, &mut |done, total| {
                    post(&FromWorker::ProjectProgress { run_id, done, total });
                    if st.stop.get() {
                        Flow::Stop
                    } else {
                        Flow::Continue
                    }
                })
                .await;
                let vocab = if v.len() == y.0.config().n_embd {
                    tiller_core::vocab::decode_vector(&mut y, &tok, &v, 10, false).await.map(Some)
                } else {
                    Ok(None)
                };
                projected.and_then(|p| vocab.map(|voc| (v, p, voc)))
            }
            Err(e) => Err(e),
        }
    });
    drop(lease);
    let (v, projected, vocab) = match result {
        Ok(r) => r,
        Err(e) => return fail(user_error(&e)),
    };
    let Some(projected) = projected else { return post(&FromWorker::ProjectDone { run_id, result: None }) };
    let mut out = Vec::with_capacity(ids.len());
    for (t, p) in ids.into_iter().zip(projected) {
        let tokens = t.iter().map(|&id| piece(&tok, id)).collect();
        out.push(ProjectedText { ids: t, tokens, dot: p.dot, cosine: p.cosine });
    }
    let (top, bottom) = vocab.unwrap_or_default();
    let view = |e: &[tiller_core::vocab::VocabEntry]| e.iter().map(VocabEntryView::from).collect();
    post(&FromWorker::ProjectDone {
        run_id,
        result: Some(ProjectionView {
            vector_norm: tiller_core::library::norm(&v),
            texts: out,
            cut,
            top: view(&top),
            bottom: view(&bottom),
        }),
    });
}

pub async fn changes(id: u64, recipe: Recipe, completion: Vec<u32>, top: usize) {
    let fail = |error: UserError| post(&FromWorker::ChangesFailed { id, error });
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return fail(error),
    };
    let tok = lease.tok.clone();
    let result = with_backend!(lease.engine(), |b| {
        let mut y = Yielding(b);
        match recipe_vectors(&mut y, &tok, &recipe).await {
            Ok((prompt, vectors)) => {
                inspect::token_changes(&mut y, &prompt, &completion, &vectors, recipe.site, recipe.positions, top.clamp(1, 50)).await
            }
            Err(e) => Err(e),
        }
    });
    drop(lease);
    let view =
        |c: &inspect::TokenChange| ChangeView { id: c.id, text: piece(&tok, c.id), p_steered: c.p_steered, p_unsteered: c.p_unsteered };
    match result {
        Ok(positions) => post(&FromWorker::Changes {
            id,
            positions: positions
                .iter()
                .map(|p| PositionChangeView {
                    token: view(&p.token),
                    kl: p.kl,
                    rose: p.rose.iter().map(view).collect(),
                    fell: p.fell.iter().map(view).collect(),
                })
                .collect(),
        }),
        Err(e) => fail(user_error(&e)),
    }
}

pub async fn lens(id: u64, recipe: Recipe, k: usize) {
    let fail = |error: UserError| post(&FromWorker::LensFailed { id, error });
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return fail(error),
    };
    let tok = lease.tok.clone();
    let result = with_backend!(lease.engine(), |b| {
        let mut y = Yielding(b);
        match recipe_vectors(&mut y, &tok, &recipe).await {
            Ok((prompt, vectors)) => inspect::prompt_lens(&mut y, &tok, &prompt, &vectors, recipe.site, recipe.positions, k)
                .await
                .map(|(layers, steering)| (prompt, layers, steering)),
            Err(e) => Err(e),
        }
    });
    drop(lease);
    match result {
        Ok((prompt, layers, steering)) => post(&FromWorker::Lens {
            id,
            tokens: prompt.iter().map(|&t| piece(&tok, t)).collect(),
            layers: layers.iter().map(LensLayerView::from).collect(),
            steering: steering.iter().map(LensSteeringView::from).collect(),
        }),
        Err(e) => fail(user_error(&e)),
    }
}
