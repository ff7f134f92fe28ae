//! Inference-Time Intervention (Li et al., "Inference-Time Intervention: Eliciting Truthful
//! Answers from a Language Model", 2023): a linear probe per attention head on labelled
//! statements, the heads whose probes read truth best, and steering that shifts each chosen
//! head's output along its direction (docs/SEMANTICS.md, "ITI").
//!
//! - Activations: `z[l, h]` (head h's slice of the attention's merged heads, the output
//!   projection's input) at each statement's last token.
//! - Split: the statements shuffled with the seed (or in file order), the last `val` fraction
//!   held out for validation.
//! - Probe: L2-regularised logistic regression with an unpenalised intercept, scikit-learn's
//!   `LogisticRegression(C=1)` objective, ½‖w‖² + C Σ log(1 + exp(−y (w·x + b))), solved to
//!   convergence by Newton's method in f64; its accuracy on the validation split (a head of
//!   label `true` when w·x + b > 0).
//! - Direction per chosen head: the probe's w, or the mass-mean difference (mean of the true
//!   statements' activations − the false ones', on the training split), as a unit vector; σ the
//!   standard deviation (population) of the training activations projected on it.
//! - Steering: α · σ · direction added to the head's output at every position of every step:
//!   one [`VectorTerm`] per head, coefficient α.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::{Backend, Capture, LogitRows, RowSelect, SeqStep, Site, StepRequest};
use crate::error::{Result, TillerError};
use crate::fv::Head;
use crate::generate::Flow;
use crate::pairs::{dataset_items, kind};
use crate::recipe::{Positions, VectorTerm};
use crate::sample::Rng;

/// One labelled statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub text: String,
    pub label: bool,
}

fn bad(msg: String) -> TillerError {
    TillerError::input(msg)
}

/// Parses JSON lines (or a JSON list) of `{"text": "...", "label": true|false}`.
pub fn parse_statements(bytes: &[u8]) -> Result<Vec<Statement>> {
    let mut out = Vec::new();
    for (at, v) in dataset_items(bytes, "the statements file")? {
        let obj = v.as_object().ok_or_else(|| {
            bad(format!("{at}: expected an object such as {{\"text\": \"Paris is in France.\", \"label\": true}}, found {}", kind(&v)))
        })?;
        let text = match obj.get("text") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(bad(format!("{at}: \"text\" is empty"))),
            Some(other) => return Err(bad(format!("{at}: \"text\" should be a string, found {}", kind(other)))),
            None => return Err(bad(format!("{at}: \"text\" is missing"))),
        };
        let label = match obj.get("label") {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => n.as_u64() == Some(1),
            Some(other) => return Err(bad(format!("{at}: \"label\" should be true or false, found {}", kind(other)))),
            None => return Err(bad(format!("{at}: \"label\" is missing"))),
        };
        out.push(Statement { text, label });
    }
    let trues = out.iter().filter(|s| s.label).count();
    if trues == 0 || trues == out.len() {
        return Err(bad(format!(
            "the statements need both labels: {trues} of {} are true; a probe learns from true and false ones",
            out.len()
        )));
    }
    Ok(out)
}

/// How the statements split into training and validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitOrder {
    /// File order: the last `val` fraction is the validation split.
    InOrder,
    /// Shuffled with the seed first.
    Seeded(u64),
}

/// (training indices, validation indices): the last `val` fraction (at least one of each).
pub fn split(n: usize, val: f64, order: SplitOrder) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(val.is_finite() && val > 0.0 && val < 1.0) {
        return Err(bad(format!("the validation fraction {val} must be in (0, 1)")));
    }
    if n < 2 {
        return Err(bad("a probe needs at least two statements, one to train on and one to check".into()));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    if let SplitOrder::Seeded(seed) = order {
        let mut rng = Rng::new(seed, u64::MAX);
        for i in 0..n {
            let j = i + (rng.next_u64() % (n - i) as u64) as usize;
            idx.swap(i, j);
        }
    }
    let held = ((n as f64 * val).round() as usize).clamp(1, n - 1);
    let val_idx = idx.split_off(n - held);
    Ok((idx, val_idx))
}

/// Every head's activation at each text's last token: `[texts][L · NH · HD]`, layer-major.
pub async fn head_activations<B: Backend>(
    backend: &mut B,
    texts: &[Vec<u32>],
    progress: &mut dyn FnMut(usize, usize) -> Flow,
) -> Result<Option<Vec<Vec<f32>>>> {
    let spec = *backend.config();
    crate::contrast::check_texts(texts, &spec)?;
    let w = spec.q_width();
    crate::contrast::check_capture_budget(texts.len(), spec.n_layer * w, 4, "statements")?;
    let mut out = vec![Vec::with_capacity(spec.n_layer * w); texts.len()];
    for range in crate::contrast::step_batches(texts.iter().map(Vec::len)) {
        let batch = &texts[range.clone()];
        backend.reset(batch.len(), batch.iter().map(Vec::len).max().unwrap_or(1))?;
        let req = StepRequest {
            seqs: batch.iter().enumerate().map(|(slot, t)| SeqStep { slot, tokens: t.clone() }).collect(),
            injections: Vec::new(),
            captures: (0..spec.n_layer).map(|l| Capture::rows(l, Site::Z, None, RowSelect::Last)).collect(),
            logits: LogitRows::None,
        };
        let captured = backend.step(&req).await?.captured;
        for layer in &captured {
            for (k, row) in layer.chunks_exact(w).enumerate() {
                out[range.start + k].extend_from_slice(row);
            }
        }
        if progress(range.end, texts.len()) == Flow::Stop {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// A fitted probe: `w · x + b > 0` reads "true".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub w: Vec<f64>,
    pub b: f64,
}

impl Probe {
    pub fn says_true(&self, x: &[f32]) -> bool {
        self.w.iter().zip(x).map(|(w, &x)| w * x as f64).sum::<f64>() + self.b > 0.0
    }

    /// The fraction of `(x, label)` it gets right.
    pub fn accuracy<'a>(&self, items: impl Iterator<Item = (&'a [f32], bool)>) -> f64 {
        let (mut right, mut n) = (0usize, 0usize);
        for (x, y) in items {
            right += usize::from(self.says_true(x) == y);
            n += 1;
        }
        if n == 0 {
            0.0
        } else {
            right as f64 / n as f64
        }
    }
}

/// log(1 + exp(t)) without overflow.
fn softplus(t: f64) -> f64 {
    if t > 0.0 {
        t + (-t).exp().ln_1p()
    } else {
        t.exp().ln_1p()
    }
}

fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// Solves `a x = g` for a symmetric positive-definite `a` (`n × n`, row-major) by Cholesky.
fn cholesky_solve(a: &mut [f64], g: &[f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    let mut y = g.to_vec();
    for i in 0..n {
        for k in 0..i {
            y[i] -= a[i * n + k] * y[k];
        }
        y[i] /= a[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            y[i] -= a[k * n + i] * y[k];
        }
        y[i] /= a[i * n + i];
    }
    Some(y)
}

/// Fits scikit-learn's `LogisticRegression(C=c)` (L2 on w, not on the intercept) by Newton's
/// method with a backtracking line search, in f64, to a gradient below 1e-10.
pub fn fit_probe(xs: &[&[f32]], ys: &[bool], c: f64) -> Probe {
    let d = xs.first().map_or(0, |x| x.len());
    let n = d + 1; // w, then b
    let mut theta = vec![0.0f64; n];
    let objective = |theta: &[f64]| -> f64 {
        let reg: f64 = theta[..d].iter().map(|w| w * w).sum::<f64>() / 2.0;
        let loss: f64 = xs
            .iter()
            .zip(ys)
            .map(|(x, &y)| {
                let z = x.iter().zip(&theta[..d]).map(|(&x, w)| x as f64 * w).sum::<f64>() + theta[d];
                softplus(if y { -z } else { z })
            })
            .sum();
        reg + c * loss
    };
    let mut f = objective(&theta);
    for _ in 0..200 {
        let mut grad = vec![0.0f64; n];
        let mut hess = vec![0.0f64; n * n];
        grad[..d].copy_from_slice(&theta[..d]);
        for j in 0..d {
            hess[j * n + j] = 1.0;
        }
        for (x, &y) in xs.iter().zip(ys) {
            let z = x.iter().zip(&theta[..d]).map(|(&x, w)| x as f64 * w).sum::<f64>() + theta[d];
            let p = sigmoid(z);
            let r = c * (p - f64::from(u8::from(y)));
            let s = c * p * (1.0 - p);
            let xe = |i: usize| if i < d { x[i] as f64 } else { 1.0 };
            for i in 0..n {
                grad[i] += r * xe(i);
                let si = s * xe(i);
                for k in 0..=i {
                    hess[i * n + k] += si * xe(k);
                }
            }
        }
        if grad.iter().map(|g| g * g).sum::<f64>().sqrt() < 1e-10 {
            break;
        }
        for i in 0..n {
            for k in 0..i {
                hess[k * n + i] = hess[i * n + k];
            }
        }
        // The intercept's curvature can vanish when the data are nearly separated: a tiny
        // ridge keeps the step defined without moving the optimum.
        hess[d * n + d] += 1e-12;
        let Some(step) = cholesky_solve(&mut hess, &grad, n) else { break };
        let mut t = 1.0;
        let mut moved = false;
        for _ in 0..60 {
            let cand: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a - t * s).collect();
            let fc = objective(&cand);
            if fc <= f {
                theta = cand;
                f = fc;
                moved = true;
                break;
            }
            t /= 2.0;
        }
        if !moved {
            break;
        }
    }
    Probe { w: theta[..d].to_vec(), b: theta[d] }
}

/// Where a chosen head is shifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The probe's weights (Li et al.'s "probe weight direction").
    Probe,
    /// Mean of the true statements' activations − the false ones' (the paper's best).
    #[default]
    MassMean,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "probe" => Some(Self::Probe),
            "mass_mean" | "mass-mean" => Some(Self::MassMean),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::MassMean => "mass_mean",
        }
    }
}

/// A head's probe, read on both splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadProbe {
    pub layer: usize,
    pub head: usize,
    pub accuracy: f64,
    pub train_accuracy: f64,
}

/// A chosen head's shift: the unit direction and σ along it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadShift {
    pub layer: usize,
    pub head: usize,
    pub accuracy: f64,
    pub direction: Vec<f32>,
    pub sigma: f64,
}

/// Everything ITI finds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItiResult {
    /// Every head, layer-major.
    pub heads: Vec<HeadProbe>,
    /// The `k` of best validation accuracy (ties: the earlier head), best first.
    pub top: Vec<HeadShift>,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// Probes every head on `acts` (`[texts][L · NH · HD]`, [`head_activations`]) and shifts the
/// `k` best along `direction`.
pub fn probe_heads(
    spec: &crate::ModelSpec,
    acts: &[Vec<f32>],
    labels: &[bool],
    train: &[usize],
    val: &[usize],
    k: usize,
    direction: Direction,
) -> ItiResult {
    let (hd, nh) = (spec.head_dim, spec.n_head);
    let slice = |t: usize, l: usize, h: usize| &acts[t][(l * nh + h) * hd..(l * nh + h + 1) * hd];
    let mut heads = Vec::with_capacity(spec.n_layer * nh);
    let mut probes = Vec::with_capacity(spec.n_layer * nh);
    for l in 0..spec.n_layer {
        for h in 0..nh {
            let xs: Vec<&[f32]> = train.iter().map(|&t| slice(t, l, h)).collect();
            let ys: Vec<bool> = train.iter().map(|&t| labels[t]).collect();
            let p = fit_probe(&xs, &ys, 1.0);
            let accuracy = p.accuracy(val.iter().map(|&t| (slice(t, l, h), labels[t])));
            let train_accuracy = p.accuracy(train.iter().map(|&t| (slice(t, l, h), labels[t])));
            heads.push(HeadProbe { layer: l, head: h, accuracy, train_accuracy });
            probes.push(p);
        }
    }
    let mut order: Vec<usize> = (0..heads.len()).collect();
    order.sort_by(|&a, &b| heads[b].accuracy.total_cmp(&heads[a].accuracy).then(a.cmp(&b)));
    let top = order
        .into_iter()
        .take(k)
        .map(|i| {
            let (l, h) = (heads[i].layer, heads[i].head);
            let raw: Vec<f64> = match direction {
                Direction::Probe => probes[i].w.clone(),
                Direction::MassMean => {
                    let mean = |want: bool| {
                        let members: Vec<usize> = train.iter().copied().filter(|&t| labels[t] == want).collect();
                        let mut m = vec![0.0f64; hd];
                        for &t in &members {
                            for (m, &x) in m.iter_mut().zip(slice(t, l, h)) {
                                *m += x as f64;
                            }
                        }
                        m.iter_mut().for_each(|m| *m /= members.len().max(1) as f64);
                        m
                    };
                    mean(true).iter().zip(mean(false)).map(|(a, b)| a - b).collect()
                }
            };
            let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
            let unit: Vec<f64> = raw.iter().map(|x| if norm > 0.0 { x / norm } else { 0.0 }).collect();
            let proj: Vec<f64> = train.iter().map(|&t| slice(t, l, h).iter().zip(&unit).map(|(&x, u)| x as f64 * u).sum()).collect();
            let mean = proj.iter().sum::<f64>() / proj.len().max(1) as f64;
            let sigma = (proj.iter().map(|p| (p - mean) * (p - mean)).sum::<f64>() / proj.len().max(1) as f64).sqrt();
            HeadShift { layer: l, head: h, accuracy: heads[i].accuracy, direction: unit.iter().map(|&x| x as f32).collect(), sigma }
        })
        .collect();
    ItiResult { heads, top, train: train.to_vec(), val: val.to_vec() }
}

/// The shifts as recipe terms: on each head, σ · direction with coefficient α, every position.
pub fn terms(top: &[HeadShift], alpha: f32) -> Vec<VectorTerm> {
    top.iter()
        .map(|s| {
            let values: Vec<f32> = s.direction.iter().map(|&d| d * s.sigma as f32).collect();
            VectorTerm::on_head(&format!("iti {}.{}", s.layer, s.head), s.layer, s.head, alpha, Positions::All, &values)
        })
        .collect()
}

/// The heads of `top`.
pub fn heads_of(top: &[HeadShift]) -> Vec<Head> {
    top.iter().map(|s| Head { layer: s.layer, head: s.head }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_parse_and_need_both_labels() {
        let s = parse_statements(b"{\"text\": \"a\", \"label\": true}\n{\"text\": \"b\", \"label\": 0}\n").unwrap();
        assert_eq!(s[1], Statement { text: "b".into(), label: false });
        assert!(parse_statements(b"{\"text\": \"a\", \"label\": true}\n").unwrap_err().to_string().contains("both labels"));
        assert!(parse_statements(b"{\"text\": \"a\", \"label\": \"yes\"}\n").unwrap_err().to_string().contains("line 1"));
        assert!(parse_statements(b"{\"label\": true}\n").unwrap_err().to_string().contains("\"text\" is missing"));
    }

    #[test]
    fn splits_hold_out_the_last_fraction() {
        assert_eq!(split(10, 0.2, SplitOrder::InOrder).unwrap(), ((0..8).collect(), vec![8, 9]));
        let (t, v) = split(10, 0.3, SplitOrder::Seeded(4)).unwrap();
        assert_eq!((t.len(), v.len()), (7, 3));
        let mut all = [t, v].concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(split(1, 0.5, SplitOrder::InOrder).is_err());
        assert!(split(5, 1.0, SplitOrder::InOrder).is_err());
    }

    #[test]
    fn the_probe_is_the_regularised_optimum() {
        // Its gradient vanishes: w + C Σ (p − y) x = 0 and Σ (p − y) = 0.
        let xs: Vec<Vec<f32>> = (0..40).map(|i| vec![(i as f32 * 0.37).sin() * 2.0, (i as f32 * 0.91).cos(), 0.5]).collect();
        let ys: Vec<bool> = (0..40).map(|i| (i as f32 * 0.37).sin() + 0.3 * (i as f32 * 1.7).cos() > 0.0).collect();
        let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let p = fit_probe(&refs, &ys, 1.0);
        let mut g = p.w.clone();
        let mut gb = 0.0;
        for (x, &y) in refs.iter().zip(&ys) {
            let z = p.w.iter().zip(*x).map(|(w, &x)| w * x as f64).sum::<f64>() + p.b;
            let r = sigmoid(z) - f64::from(u8::from(y));
            for (g, &x) in g.iter_mut().zip(*x) {
                *g += r * x as f64;
            }
            gb += r;
        }
        assert!(g.iter().chain([&gb]).all(|g| g.abs() < 1e-8), "{g:?} {gb}");
        assert!(p.accuracy(refs.iter().copied().zip(ys.iter().copied())) > 0.8);
    }
}
