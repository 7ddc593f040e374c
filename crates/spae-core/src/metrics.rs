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
        assert!((ssim(&a, &a, 28, 28) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn known_values() {
        // A uniform error of 0.1 gives MSE 0.01: PSNR exactly 20 dB.
        let a = vec![0.5f32; 64];
        let b = vec![0.6f32; 64];
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-4);
        // Flat images of different brightness: SSIM is the luminance term alone.
        let s = ssim(&a, &b, 8, 8);
        let (ma, mb, c1) = (0.5f64, 0.6000000238418579f64, 1e-4);
        let expected = (2.0 * ma * mb + c1) / (ma * ma + mb * mb + c1);
        assert!((s - expected).abs() < 1e-6, "{s} vs {expected}");
        // Inverting a textured image destroys structure: SSIM well below zero.
        let t: Vec<f32> = (0..64)
            .map(|i| if (i / 8 + i % 8) % 2 == 0 { 0.0 } else { 1.0 })
            .collect();
        let inv: Vec<f32> = t.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&t, &inv, 8, 8) < -0.9);
    }
}
