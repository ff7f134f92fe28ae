//! Reading a vector against text: where in a corpus its direction is present. Each token's
//! activation x at (layer, site) is projected onto the vector v (`x · v`, and the cosine
//! `x · v / (‖x‖ ‖v‖)`), computed in the engine by a projecting capture
//! ([`Capture::project`]) so a step reads back two floats per token, not the activations.

use serde::Serialize;

use crate::backend::{Backend, Capture, LogitRows, SeqStep, Site, StepRequest};
use crate::contrast::{check_texts, step_batches};
use crate::error::{Result, TillerError};
use crate::generate::Flow;

/// One text's projections, a value per token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextProjection {
    /// `x · v` at each token.
    pub dot: Vec<f32>,
    /// `x · v / (‖x‖ ‖v‖)` at each token (0 where either norm is 0).
    pub cosine: Vec<f32>,
}

/// Which projection ranks texts and tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    #[default]
    Dot,
    Cosine,
}

impl TextProjection {
    pub fn values(&self, by: Measure) -> &[f32] {
        match by {
            Measure::Dot => &self.dot,
            Measure::Cosine => &self.cosine,
        }
    }

    /// The largest value by `by` and its token's position.
    pub fn max(&self, by: Measure) -> (f32, usize) {
        self.values(by).iter().enumerate().fold((f32::NEG_INFINITY, 0), |(m, at), (i, &x)| if x > m { (x, i) } else { (m, at) })
    }

    /// The mean value by `by`, in f64.
    pub fn mean(&self, by: Measure) -> f64 {
        let v = self.values(by);
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64
    }
}

/// Projects every token of every text onto `v` at (layer, site), texts batched into capture
/// steps that stop at the layer. `progress(done, total)` counts texts; `Stop` ends with
/// `Ok(None)`.
pub async fn project<B: Backend>(
    backend: &mut B,
    texts: &[Vec<u32>],
    layer: usize,
    site: Site,
    v: &[f32],
    progress: &mut dyn FnMut(usize, usize) -> Flow,
) -> Result<Option<Vec<TextProjection>>> {
    let spec = *backend.config();
    if layer >= spec.n_layer {
        return Err(TillerError::input(format!("layer {layer} is out of range: this model has layers 0..{}", spec.n_layer - 1)));
    }
    crate::recipe::check_site(site)?;
    if v.len() != site.width(&spec) {
        return Err(TillerError::input(format!(
            "the vector is {} wide but this model's {} is {}: it was made on another model",
            v.len(),
            site.as_str(),
            site.width(&spec)
        )));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(TillerError::input("the vector holds a value that is not a finite number".to_string()));
    }
    check_texts(texts, &spec)?;
    let v_norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let mut out = Vec::with_capacity(texts.len());
    for range in step_batches(texts.iter().map(Vec::len)) {
        let batch = &texts[range.clone()];
        backend.reset(batch.len(), batch.iter().map(Vec::len).max().unwrap_or(1))?;
        let req = StepRequest {
            seqs: batch.iter().enumerate().map(|(slot, t)| SeqStep { slot, tokens: t.clone() }).collect(),
            injections: Vec::new(),
            captures: vec![Capture::project(layer, site, v.to_vec())],
            logits: LogitRows::None,
        };
        let pairs = backend.step(&req).await?.captured.swap_remove(0); // [rows, 2]
        let mut at = 0;
        for t in batch {
            let rows = &pairs[2 * at..2 * (at + t.len())];
            let dot: Vec<f32> = rows.iter().step_by(2).copied().collect();
            let cosine = rows
                .chunks_exact(2)
                .map(|p| {
                    let d = p[1] as f64 * v_norm;
                    if d > 0.0 {
                        (p[0] as f64 / d) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            out.push(TextProjection { dot, cosine });
            at += t.len();
        }
        if progress(range.end, texts.len()) == Flow::Stop {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// The indices of the `k` texts with the largest max by `by`, largest first (ties: the
/// earlier text first).
pub fn top_texts(projections: &[TextProjection], by: Measure, k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..projections.len()).collect();
    order.sort_by(|&a, &b| projections[b].max(by).0.total_cmp(&projections[a].max(by).0).then(a.cmp(&b)));
    order.truncate(k);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_mean_and_top_texts() {
        let p = |dot: &[f32]| TextProjection { dot: dot.to_vec(), cosine: dot.iter().map(|x| x / 10.0).collect() };
        let ps = [p(&[1.0, 3.0, 2.0]), p(&[-1.0]), p(&[3.0, 0.0]), p(&[5.0, -5.0])];
        assert_eq!(ps[0].max(Measure::Dot), (3.0, 1));
        assert!((ps[0].mean(Measure::Dot) - 2.0).abs() < 1e-12);
        assert_eq!(top_texts(&ps, Measure::Dot, 3), vec![3, 0, 2]);
        assert_eq!(top_texts(&ps, Measure::Cosine, 10), vec![3, 0, 2, 1]);
    }
}
