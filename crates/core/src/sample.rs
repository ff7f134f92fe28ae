//! Seeded, platform-independent sampling. The same logits, seed and settings give the same token
//! natively and in wasm: the PRNG is xoshiro256** seeded through SplitMix64, probabilities are
//! computed in f64 with `libm` (not the platform's libm), and every sort breaks ties by id.
//!
//! Order of operations for one step: repetition penalty (Hugging Face: positive logits divided
//! by r, negative multiplied, for tokens in the prompt or generated so far) → frequency penalty
//! (subtract `penalty × count` of the token in the generated text, as in the ActAdd post) →
//! greedy argmax, or: temperature → top-k → top-p (smallest set of most likely tokens whose
//! probability reaches p) → draw.

use std::collections::HashMap;

use crate::recipe::Sampling;

/// xoshiro256** (Blackman & Vigna), seeded by SplitMix64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The stream for comparison `stream` of a run seeded with `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut st = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let s = [splitmix64(&mut st), splitmix64(&mut st), splitmix64(&mut st), splitmix64(&mut st)];
        Self { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Per-sequence sampling state: the PRNG and the counts the penalties need.
#[derive(Debug, Clone)]
pub struct Sampler {
    settings: Sampling,
    rng: Rng,
    /// Occurrences in the generated text.
    generated: HashMap<u32, u32>,
    /// Tokens in the prompt or generated text (for the repetition penalty).
    seen: HashMap<u32, ()>,
}

impl Sampler {
    pub fn new(settings: Sampling, seed: u64, stream: u64, prompt: &[u32]) -> Self {
        Self { settings, rng: Rng::new(seed, stream), generated: HashMap::new(), seen: prompt.iter().map(|&t| (t, ())).collect() }
    }

    /// Records a chosen token.
    pub fn observe(&mut self, token: u32) {
        *self.generated.entry(token).or_insert(0) += 1;
        self.seen.insert(token, ());
    }

    /// Picks the next token from one row of logits and records it.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let s = self.settings;
        let mut l: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
        if s.rep_penalty != 1.0 {
            let r = s.rep_penalty as f64;
            for &t in self.seen.keys() {
                if let Some(x) = l.get_mut(t as usize) {
                    *x = if *x > 0.0 { *x / r } else { *x * r };
                }
            }
        }
        if s.freq_penalty != 0.0 {
            for (&t, &n) in &self.generated {
                if let Some(x) = l.get_mut(t as usize) {
                    *x -= s.freq_penalty as f64 * n as f64;
                }
            }
        }
        let token = if s.greedy { argmax(&l) } else { self.draw(&l) };
        self.observe(token);
        token
    }

    fn draw(&mut self, l: &[f64]) -> u32 {
        let s = self.settings;
        let t = s.temperature as f64;
        // Candidates sorted by logit, descending, ties by lower id.
        let mut idx: Vec<u32> = (0..l.len() as u32).filter(|&i| l[i as usize].is_finite()).collect();
        if idx.is_empty() {
            return 0;
        }
        idx.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b)));
        if s.top_k > 0 && s.top_k < idx.len() {
            idx.truncate(s.top_k);
        }
        let max = l[idx[0] as usize] / t;
        let mut probs: Vec<f64> = idx.iter().map(|&i| libm::exp(l[i as usize] / t - max)).collect();
        let total: f64 = probs.iter().sum();
        for p in &mut probs {
            *p /= total;
        }
        if (s.top_p as f64) < 1.0 {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (k, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= s.top_p as f64 {
                    keep = k + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let u = self.rng.next_f64() * total;
        let mut cum = 0.0;
        for (k, p) in probs.iter().enumerate() {
            cum += p;
            if u < cum {
                return idx[k];
            }
        }
        idx[idx.len() - 1]
    }
}

/// Index of the largest value; the lowest index wins ties.
pub fn argmax(l: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &x) in l.iter().enumerate() {
        if x > l[best] {
            best = i;
        }
    }
    best as u32
}

/// Indices of the k largest values (descending, ties by lower index).
pub fn top_k_indices(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(values.len());
    if k == 0 {
        return Vec::new();
    }
    let cmp = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_streams_differ() {
        let a: Vec<u64> = (0..4).scan(Rng::new(7, 0), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..4).scan(Rng::new(7, 0), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..4).scan(Rng::new(7, 1), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn frequency_penalty_subtracts_per_occurrence() {
        let settings = Sampling { greedy: true, freq_penalty: 1.5, ..Sampling::default() };
        let mut s = Sampler::new(settings, 0, 0, &[]);
        // token 0 leads by 2; after two occurrences it is penalised by 3 and loses to token 1.
        let logits = [3.0f32, 1.0, 0.0];
        assert_eq!(s.sample(&logits), 0);
        assert_eq!(s.sample(&logits), 0);
        assert_eq!(s.sample(&logits), 1);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let settings = Sampling { greedy: true, rep_penalty: 4.0, freq_penalty: 0.0, ..Sampling::default() };
        // Token 0 (in the prompt) goes 2.0 -> 0.5 and loses to token 1 (1.0).
        assert_eq!(Sampler::new(settings, 0, 0, &[0]).sample(&[2.0, 1.0, -5.0]), 1);
        // Token 1 (in the prompt) goes -0.5 -> -2.0 and loses to token 2 (-1.0).
        assert_eq!(Sampler::new(settings, 0, 0, &[0, 1]).sample(&[-9.0, -0.5, -1.0]), 2);
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        let settings = Sampling { top_p: 1e-6, freq_penalty: 0.0, ..Sampling::default() };
        let mut s = Sampler::new(settings, 42, 0, &[]);
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.1, 2.0, 1.9, -1.0]), 1);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let settings = Sampling { top_p: 1.0, freq_penalty: 0.0, ..Sampling::default() };
        let mut s = Sampler::new(settings, 3, 0, &[]);
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let ones = (0..4000).filter(|_| s.sample(&logits) == 1).count();
        assert!((2850..3150).contains(&ones), "{ones} of 4000 draws were token 1; expected about 3000");
    }

    #[test]
    fn top_k_restricts_candidates() {
        let settings = Sampling { top_p: 1.0, top_k: 2, freq_penalty: 0.0, ..Sampling::default() };
        let mut s = Sampler::new(settings, 5, 0, &[]);
        for _ in 0..200 {
            let t = s.sample(&[1.0, 3.0, 2.9, 2.8]);
            assert!(t == 1 || t == 2, "token {t} is outside the top 2");
        }
    }

    #[test]
    fn top_k_indices_orders_and_breaks_ties_by_index() {
        assert_eq!(top_k_indices(&[1.0, 5.0, 5.0, -2.0, 3.0], 3), vec![1, 2, 4]);
    }
}
