//! The worker's side of the Heads area: a function vector from an ICL task (`tiller fv`'s
//! pipeline, `tiller_core::fv::run`), with its decoded vocabulary; and ITI's per-head probes
//! (`tiller iti`'s computation).

use tiller_core::fv::{self, Phase};
use tiller_core::generate::Flow;

use super::engine::{user_error, with_backend, Yielding};
use super::{post, state, Lease};
use crate::protocol::{FromWorker, FvSpec, FvView, ItiSpec, ItiView, UserError, VocabEntryView};

pub async fn function_vector(run_id: u64, spec: FvSpec) {
    let fail = |error: UserError| post(&FromWorker::FvFailed { run_id, error });
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return fail(error),
    };
    let tok = lease.tok.clone();
    let st = state();
    st.stop.set(false);
    let result = with_backend!(lease.engine(), |b| {
        let mut y = Yielding(b);
        let mut progress = |phase: Phase, done: usize, total: usize| {
            post(&FromWorker::FvProgress { run_id, phase, done, total });
            if st.stop.get() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        match fv::run(&mut y, &tok, &spec.pairs, &spec.settings, &mut progress).await {
            Ok(Some(r)) => {
                let layer = fv::best_layer(r.eval.as_ref(), tiller_core::Backend::config(&y).n_layer);
                let shown = fv::completions(&mut y, &tok, &spec.pairs, &r.plan, &r.vector, layer, spec.settings.bos, 4, 6).await;
                match shown {
                    Ok(c) => tiller_core::vocab::decode_vector(&mut y, &tok, &r.vector, 12, true).await.map(|voc| Some((r, voc, c))),
                    Err(e) => Err(e),
                }
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    });
    let n_layer = with_backend!(lease.engine(), |b| tiller_core::Backend::config(b).n_layer);
    drop(lease);
    let found = match result {
        Ok(Some(found)) => found,
        Ok(None) => return post(&FromWorker::FvDone { run_id, result: None }),
        Err(e) => return fail(user_error(&e)),
    };
    let (r, (top, bottom), completions) = found;
    let text = |ids: &[u32]| tok.decode(ids).unwrap_or_default();
    let view = |e: &[tiller_core::vocab::VocabEntry]| e.iter().map(VocabEntryView::from).collect();
    let n_head = r.effects.aie.len() / n_layer.max(1);
    post(&FromWorker::FvDone {
        run_id,
        result: Some(FvView {
            n_layer,
            n_head,
            best_layer: fv::best_layer(r.eval.as_ref(), n_layer),
            aie: r.effects.aie.clone(),
            top: r.top.clone(),
            vector_heads: r.vector_heads.clone(),
            norm: r.norm,
            clean_prob: r.clean_prob,
            corrupted_prob: r.effects.corrupted_prob,
            prompts: r.plan.prompts.len(),
            held_out: r.plan.held_out.len(),
            example: (text(&r.clean[0]), text(&r.corrupted[0])),
            top_tokens: view(&top),
            bottom_tokens: view(&bottom),
            eval: r.eval,
            vector: r.vector,
            completions,
        }),
    });
}

pub async fn probes(run_id: u64, spec: ItiSpec) {
    let fail = |error: UserError| post(&FromWorker::ItiFailed { run_id, error });
    let (train, val) = match tiller_core::iti::split(spec.statements.len(), spec.val, tiller_core::iti::SplitOrder::Seeded(spec.seed)) {
        Ok(s) => s,
        Err(e) => return fail(user_error(&e)),
    };
    let mut lease = match Lease::take().await {
        Ok(l) => l,
        Err(error) => return fail(error),
    };
    let tok = lease.tok.clone();
    let texts =
        match spec.statements.iter().map(|s| tiller_core::steer::encode_with_bos(&tok, &s.text, spec.bos)).collect::<Result<Vec<_>, _>>() {
            Ok(t) => t,
            Err(e) => return fail(user_error(&e)),
        };
    let labels: Vec<bool> = spec.statements.iter().map(|s| s.label).collect();
    let st = state();
    st.stop.set(false);
    let result = with_backend!(lease.engine(), |b| {
        let mut y = Yielding(b);
        let spec_m = *tiller_core::Backend::config(&y);
        tiller_core::iti::head_activations(&mut y, &texts, &mut |done, total| {
            post(&FromWorker::ItiProgress { run_id, done, total });
            if st.stop.get() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .await
        .map(|acts| acts.map(|acts| (spec_m, acts)))
    });
    drop(lease);
    let (m, acts) = match result {
        Ok(Some(r)) => r,
        Ok(None) => return post(&FromWorker::ItiDone { run_id, result: None }),
        Err(e) => return fail(user_error(&e)),
    };
    let k = spec.top_heads.clamp(1, m.n_layer * m.n_head);
    let r = tiller_core::iti::probe_heads(&m, &acts, &labels, &train, &val, k, spec.direction);
    post(&FromWorker::ItiDone {
        run_id,
        result: Some(ItiView { n_layer: m.n_layer, n_head: m.n_head, heads: r.heads, top: r.top, train: train.len(), val: val.len() }),
    });
}
