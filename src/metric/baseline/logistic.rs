//! Binary logistic regression with scikit-learn's objective (`C · Σ log-loss + ½‖w‖²`, intercept
//! not penalised), minimised with L-BFGS to a much tighter tolerance than scikit-learn's default,
//! so both land on the same optimum up to scikit-learn's own tolerance.

use super::tfidf::SparseRow;

#[derive(Debug, Clone)]
pub struct Logistic {
    pub weights: Vec<f64>,
    pub intercept: f64,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^{-m})`, stable for large |m|.
fn log1p_exp_neg(m: f64) -> f64 {
    if m > 0.0 {
        (-m).exp().ln_1p()
    } else {
        -m + m.exp().ln_1p()
    }
}

fn dot(row: &SparseRow, w: &[f64]) -> f64 {
    row.iter().map(|&(c, v)| v * w[c]).sum()
}

/// Objective and gradient at `theta = [w..., b]`.
fn objective(x: &[SparseRow], y: &[bool], c: f64, theta: &[f64], grad: &mut [f64]) -> f64 {
    let d = theta.len() - 1;
    let (w, b) = (&theta[..d], theta[d]);
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut loss = 0.0;
    for (row, &yi) in x.iter().zip(y) {
        let s = if yi { 1.0 } else { -1.0 };
        let m = s * (dot(row, w) + b);
        loss += log1p_exp_neg(m);
        let coef = -s * sigmoid(-m) * c;
        for &(col, v) in row {
            grad[col] += coef * v;
        }
        grad[d] += coef;
    }
    let mut reg = 0.0;
    for k in 0..d {
        reg += theta[k] * theta[k];
        grad[k] += theta[k];
    }
    c * loss + 0.5 * reg
}

impl Logistic {
    /// Fits on sparse rows of width `dim` with inverse regularisation strength `c`.
    pub fn fit(x: &[SparseRow], y: &[bool], dim: usize, c: f64) -> Self {
        const HISTORY: usize = 10;
        let n = dim + 1;
        let mut theta = vec![0.0; n];
        let mut grad = vec![0.0; n];
        let mut f = objective(x, y, c, &theta, &mut grad);
        let mut mem: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
        let mut new_grad = vec![0.0; n];
        for _ in 0..5000 {
            if grad.iter().fold(0.0f64, |m, g| m.max(g.abs())) < 1e-10 {
                break;
            }
            // Two-loop recursion: direction = −H·g.
            let mut q = grad.clone();
            let mut alphas = Vec::with_capacity(mem.len());
            for (s, yv, rho) in mem.iter().rev() {
                let a = rho * s.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>();
                q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
                alphas.push(a);
            }
            if let Some((s, yv, _)) = mem.last() {
                let gamma = s.iter().zip(yv).map(|(a, b)| a * b).sum::<f64>()
                    / yv.iter().map(|v| v * v).sum::<f64>();
                q.iter_mut().for_each(|v| *v *= gamma);
            }
            for ((s, yv, rho), a) in mem.iter().zip(alphas.iter().rev()) {
                let b = rho * yv.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>();
                q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
            }
            let dir: Vec<f64> = q.iter().map(|v| -v).collect();
            let slope: f64 = dir.iter().zip(&grad).map(|(a, b)| a * b).sum();
            if slope >= 0.0 {
                mem.clear();
                continue;
            }
            // Backtracking line search (Armijo).
            let mut step = 1.0;
            let mut next;
            let mut f_next;
            loop {
                next = theta
                    .iter()
                    .zip(&dir)
                    .map(|(t, d)| t + step * d)
                    .collect::<Vec<_>>();
                f_next = objective(x, y, c, &next, &mut new_grad);
                if f_next <= f + 1e-4 * step * slope || step < 1e-20 {
                    break;
                }
                step *= 0.5;
            }
            let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
            let yv: Vec<f64> = new_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
            let sy: f64 = s.iter().zip(&yv).map(|(a, b)| a * b).sum();
            theta = next;
            std::mem::swap(&mut grad, &mut new_grad);
            let converged = (f - f_next).abs() <= 1e-15 * f.abs().max(1.0);
            f = f_next;
            if sy > 1e-300 {
                mem.push((s, yv, 1.0 / sy));
                if mem.len() > HISTORY {
                    mem.remove(0);
                }
            }
            if converged {
                break;
            }
        }
        let intercept = theta[dim];
        theta.truncate(dim);
        Self {
            weights: theta,
            intercept,
        }
    }

    /// Probability of the positive class.
    pub fn predict_proba(&self, row: &SparseRow) -> f64 {
        sigmoid(dot(row, &self.weights) + self.intercept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gradient_vanishes_at_optimum() {
        let x: Vec<SparseRow> = vec![
            vec![(0, 1.0)],
            vec![(1, 1.0)],
            vec![(0, 0.6), (1, 0.8)],
            vec![(1, 0.9)],
        ];
        let y = [true, false, true, false];
        let m = Logistic::fit(&x, &y, 2, 1.0);
        let mut theta = m.weights.clone();
        theta.push(m.intercept);
        let mut g = vec![0.0; 3];
        objective(&x, &y, 1.0, &theta, &mut g);
        assert!(g.iter().all(|v| v.abs() < 1e-8), "{g:?}");
        assert!(m.predict_proba(&vec![(0, 1.0)]) > 0.5);
        assert!(m.predict_proba(&vec![(1, 1.0)]) < 0.5);
    }

    proptest! {
        #[test]
        fn probabilities_in_range(rows in prop::collection::vec((0usize..4, 0.0f64..1.0, any::<bool>()), 2..20)) {
            let x: Vec<SparseRow> = rows.iter().map(|r| vec![(r.0, r.1)]).collect();
            let y: Vec<bool> = rows.iter().map(|r| r.2).collect();
            let m = Logistic::fit(&x, &y, 4, 1.0);
            for r in &x { let p = m.predict_proba(r); prop_assert!((0.0..=1.0).contains(&p)); }
        }
    }
}
