//! Next-token choice: argmax at temperature 0, else temperature and nucleus (top-p) sampling
//! from a seeded generator, so a seed reproduces a generation.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::GenerateParams;

pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: &GenerateParams) -> Self {
        Self {
            temperature: params.temperature,
            top_p: params.top_p,
            rng: StdRng::seed_from_u64(params.seed),
        }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, (((l - max) / self.temperature) as f64).exp()))
            .collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Smallest prefix of the sorted distribution whose mass reaches top_p.
        let mut kept = 0;
        let mut mass = 0.0;
        for (_, p) in &probs {
            kept += 1;
            mass += p / total;
            if mass >= self.top_p as f64 {
                break;
            }
        }
        probs.truncate(kept);
        let kept_mass: f64 = probs.iter().map(|p| p.1).sum();
        let mut u = self.rng.gen::<f64>() * kept_mass;
        for (id, p) in &probs {
            if u < *p {
                return *id;
            }
            u -= p;
        }
        probs.last().map_or(0, |p| p.0)
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_sampling_respects_seed_and_top_p() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut greedy = Sampler::new(&GenerateParams::greedy(1));
        assert_eq!(greedy.sample(&logits), 1);
        let params = GenerateParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: 7,
            ..GenerateParams::default()
        };
        // top_p 0.5 keeps only the two near-equal leaders.
        for _ in 0..50 {
            assert!(matches!(Sampler::new(&params).sample(&logits), 1 | 3));
        }
        let a: Vec<u32> = {
            let mut s = Sampler::new(&params);
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(&params);
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
    }
}
