//! Reconstruction metrics: PSNR and SSIM on images in [0, 1].

/// Peak signal-to-noise ratio in dB of `b` against `a` (both in [0, 1]); capped at 100 dB.
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64;
    if mse <= 1e-10 {
        100.0
    } else {
        -10.0 * mse.log10()
    }
}

/// Structural similarity of two single-channel `h` x `w` images in [0, 1], averaged over
/// every 7x7 window (uniform weights, sample covariance: scikit-image's `structural_similarity`
/// defaults), with C1 = (0.01)^2 and C2 = (0.03)^2.
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize) -> f64 {
    const WIN: usize = 7;
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    if h < WIN || w < WIN {
        return if psnr(a, b) >= 100.0 { 1.0 } else { 0.0 };
    }
    let n = (WIN * WIN) as f64;
    let cov_norm = n / (n - 1.0);
    let mut total = 0.0;
    let mut count = 0usize;
    for y in 0..=h - WIN {
        for x in 0..=w - WIN {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for dy in 0..WIN {
                for dx in 0..WIN {
                    let i = (y + dy) * w + x + dx;
                    let (p, q) = (a[i] as f64, b[i] as f64);
                    sa += p;
                    sb += q;
                    saa += p * p;
                    sbb += q * q;
                    sab += p * q;
                }
            }
            let (ma, mb) = (sa / n, sb / n);
            let va = cov_norm * (saa / n - ma * ma);
            let vb = cov_norm * (sbb / n - mb * mb);
            let cab = cov_norm * (sab / n - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cab + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            count += 1;
        }
    }
    total / count as f64
}

/// SSIM of (C, H, W) images: the mean over channels.
pub fn ssim_chw(a: &[f32], b: &[f32], c: usize, h: usize, w: usize) -> f64 {
    let plane = h * w;
    (0..c)
        .map(|k| {
            ssim(
                &a[k * plane..(k + 1) * plane],
                &b[k * plane..(k + 1) * plane],
                h,
                w,
            )
        })
        .sum::<f64>()
        / c.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_are_perfect() {
        let a: Vec<f32> = (0..28 * 28).map(|i| (i % 17) as f32 / 17.0).collect();
        assert_eq!(psnr(&a, &a), 100.0);
        // Exactly 1: with a == b every window's numerator and denominator are the same f64
        // operations on the same values (2 * ma * mb is ma^2 + mb^2 to the bit, 2 cab is
        // va + vb), so each window is x / x = 1, and the mean of 1s is 1.
        assert_eq!(ssim(&a, &a, 28, 28), 1.0);
    }

    #[test]
    fn known_values() {
        // A uniform error of 0.1 gives MSE 0.01: PSNR 20 dB, up to 0.6f32 not being 0.6
        // (the error is 0.10000002, 2e-6 dB off). Against that exact value: the MSE is 64
        // copies of one square summed in f64 (<= 63 * 2^-53 relative, 3e-14 dB) and log10
        // adds an ulp, so 1e-12 dB.
        let a = vec![0.5f32; 64];
        let b = vec![0.6f32; 64];
        let err = (0.6f32 - 0.5f32) as f64;
        let exact = -10.0 * (err * err).log10();
        assert!(
            (psnr(&a, &b) - exact).abs() < 1e-12,
            "{} vs {exact}",
            psnr(&a, &b)
        );
        // 0.6f32 is within 2^-25 of 0.6: the error within 3e-7 of 0.1 relative, the MSE 6e-7,
        // 10 log10(e) * 6e-7 = 2.6e-6 dB.
        assert!((exact - 20.0).abs() < 1e-5);
        // Flat images of different brightness: SSIM is the luminance term alone.
        let s = ssim(&a, &b, 8, 8);
        let (ma, mb, c1) = (0.5f64, 0.6000000238418579f64, 1e-4);
        let expected = (2.0 * ma * mb + c1) / (ma * ma + mb * mb + c1);
        // What is left of the structure term is f64 roundoff: the windows' variances and
        // covariance come out as ~49 * 2^-53 * 0.36 ~ 2e-15 instead of 0, against
        // C2 = 9e-4, i.e. ~2e-11 relative; 1e-9 leaves 50x of that.
        assert!((s - expected).abs() < 1e-9, "{s} vs {expected}");
        // Inverting a textured image destroys structure: SSIM well below zero.
        let t: Vec<f32> = (0..64)
            .map(|i| if (i / 8 + i % 8) % 2 == 0 { 0.0 } else { 1.0 })
            .collect();
        let inv: Vec<f32> = t.iter().map(|v| 1.0 - v).collect();
        // Per window ma + mb = 1 and va = vb = -cab ~ 0.255: luminance ~ 0.9992, structure
        // (C2 - 2 va) / (C2 + 2 va) ~ -0.9965, so SSIM ~ -0.996; -0.9 asks only for "far
        // below zero" with room to spare.
        assert!(ssim(&t, &inv, 8, 8) < -0.9);
    }
}
