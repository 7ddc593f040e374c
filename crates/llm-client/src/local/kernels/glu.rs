//! The gated activations of the feed-forward blocks, `act(gate) * up`, over the output of one
//! matmul by the stacked `[gate; up]` weights. GeGLU (Gemma: GELU with the tanh
//! approximation, `gelu_pytorch_tanh`) and SwiGLU (Llama: SiLU).
//!
//! Both need exp: written out here (range reduction to 2^n * e^r, |r| <= ln2 / 2, and a
//! degree-6 polynomial; relative error under 2e-7, a couple of f32 ulps) instead of libm's
//! `expf`, so that the compiler vectorizes the loop. Every element is computed from its own
//! inputs alone, with the same operations (no fused multiply-add), so a row's outputs do not
//! depend on the other rows of the call.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

/// Which activation gates the up projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatedActivation {
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
    GeluTanh,
    /// `x / (1 + exp(-x))`.
    Silu,
}

impl GatedActivation {
    #[inline(always)]
    fn apply(self, x: f32) -> f32 {
        match self {
            GatedActivation::GeluTanh => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                let y = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
                // 0.5 (1 + tanh y) = 1 / (1 + exp(-2y)).
                x / (1.0 + exp(-2.0 * y))
            }
            GatedActivation::Silu => x / (1.0 + exp(-x)),
        }
    }

    /// `act(gate) * up` for rows of `2 * width` values: the gate half, then the up half.
    pub fn run(self, gate_up: &[f32], width: usize) -> Vec<f32> {
        let rows = gate_up.len() / (2 * width).max(1);
        let mut out = vec![0f32; rows * width];
        for (o, row) in out
            .chunks_exact_mut(width)
            .zip(gate_up.chunks_exact(2 * width))
        {
            let (gate, up) = row.split_at(width);
            for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                *o = self.apply(g) * u;
            }
        }
        out
    }
}

/// e^x for f32, vectorizable: x = n ln2 + r, e^x = 2^n e^r. Below about -87 the result is 0
/// (f32's smallest normal is e^-87.3), above 88 infinity, as `expf` gives.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E).round();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor coefficients 1/k! to degree 6: truncation error r^7 / 7! < 2e-8 at |r| = ln2/2.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n by the exponent bits; n is in [-126, 127] after the clamp.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// `act(gate) * up` as a candle op: `(.., 2 * width)` -> `(.., width)`.
#[derive(Debug, Clone, Copy)]
pub struct GatedLinearUnit(pub GatedActivation);

impl CustomOp1 for GatedLinearUnit {
    fn name(&self) -> &'static str {
        "gated-linear-unit"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (data, mut dims, both) = super::rows_of(storage, layout, self.name())?;
        if !both.is_multiple_of(2) {
            candle_core::bail!("gated-linear-unit: odd last dimension {both}");
        }
        dims.push(both / 2);
        let out = self.0.run(data, both / 2);
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 4 ulps (relative 2^-21) of f64's exp over the range the activations use.
    #[test]
    fn exp_is_within_a_few_ulps() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(
            worst < 4.0 * f32::EPSILON as f64 / 2.0,
            "worst relative error {worst:e}"
        );
        // Outside the range the input is clamped to [-87, 88]: the result is that end's
        // value, e^-87 ~ 1.65e-38 and e^88 ~ 1.65e38, to the same 4 ulps (never 0 or inf, so
        // the activations' divisions stay finite).
        for (x, end) in [(-200.0f32, -87.0f64), (200.0, 88.0)] {
            let (got, want) = (exp(x) as f64, end.exp());
            assert!(
                ((got - want) / want).abs() < 4.0 * f32::EPSILON as f64 / 2.0,
                "{x}: {got}"
            );
        }
    }

    /// Against the activations in f64. The argument `a` of exp (-2y for GELU, -x for SiLU)
    /// carries a few ulps of relative rounding (x^3, the sums), that is an absolute error of
    /// up to ~4 |a| 2^-24 in the exponent, which exp turns into that relative error of its
    /// result; exp itself, the division and the product add a few ulps more. So the bound is
    /// (8 + 4 |a|) 2^-24 relative, plus 1e-12 absolute near zero.
    #[test]
    fn activations_match_f64() {
        for act in [GatedActivation::GeluTanh, GatedActivation::Silu] {
            let width = 257;
            let gate_up: Vec<f32> = (0..2 * width * 3)
                .map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0)
                .collect();
            let out = act.run(&gate_up, width);
            for (r, row) in gate_up.chunks_exact(2 * width).enumerate() {
                for e in 0..width {
                    let (g, u) = (row[e] as f64, row[width + e] as f64);
                    let a = match act {
                        GatedActivation::GeluTanh => {
                            0.5 * g
                                * (1.0
                                    + ((2.0 / std::f64::consts::PI).sqrt()
                                        * (g + 0.044715 * g * g * g))
                                        .tanh())
                        }
                        GatedActivation::Silu => g / (1.0 + (-g).exp()),
                    };
                    let want = a * u;
                    let got = out[r * width + e] as f64;
                    let arg = match act {
                        GatedActivation::GeluTanh => 2.0 * 0.797_884_6 * (g + 0.044715 * g * g * g),
                        GatedActivation::Silu => g,
                    };
                    let rel = (8.0 + 4.0 * arg.abs()) * f32::EPSILON as f64 / 2.0;
                    assert!(
                        (got - want).abs() <= rel * want.abs() + 1e-12,
                        "{act:?} gate {g} up {u}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
