//! AdamW (decoupled weight decay) over named `Var`s, with global-norm gradient clipping and
//! gradient accumulation. Its state (moments and step) can be saved and restored, which candle's
//! own `AdamW` does not allow, so an interrupted run resumes exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::TrainError;
use crate::ops::adamw::{adamw_update, AdamStep};

/// AdamW hyper-parameters (PyTorch's defaults for betas and eps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWParams {
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }
}

/// Gradients summed over micro-batches, by variable name, and the factor global-norm clipping
/// chose for them (applied inside the optimizer's update, not as one more pass per tensor).
#[derive(Debug, Default)]
pub struct GradAccumulator {
    sums: BTreeMap<String, Tensor>,
    clip_scale: Option<f64>,
}

impl GradAccumulator {
    /// Adds the gradients of `vars` found in `grads`.
    pub fn add(
        &mut self,
        vars: &BTreeMap<String, Var>,
        grads: &GradStore,
    ) -> Result<(), TrainError> {
        for (name, var) in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.detach();
                let sum = match self.sums.remove(name) {
                    Some(s) => (s + g)?,
                    None => g,
                };
                self.sums.insert(name.clone(), sum);
            }
        }
        Ok(())
    }

    /// The global L2 norm of the accumulated gradients (clipping included), read from the device
    /// once.
    pub fn norm(&self) -> Result<f64, TrainError> {
        if self.sums.is_empty() {
            return Ok(0.0);
        }
        let squares = self
            .sums
            .values()
            .map(|g| g.sqr()?.sum_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let sq = Tensor::stack(&squares, 0)?.sum_all()?.to_scalar::<f32>()? as f64;
        Ok(sq.sqrt() * self.grad_scale())
    }

    /// Scales all gradients so their global norm is at most `max_norm`; returns the norm before.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64, TrainError> {
        let norm = self.norm()?;
        if norm > max_norm {
            self.clip_scale = Some(self.grad_scale() * max_norm / (norm + 1e-6));
        }
        Ok(norm)
    }

    /// The accumulated gradient of `name`, before the clipping factor.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.sums.get(name)
    }

    /// The factor every gradient is multiplied by (below 1 after clipping).
    pub fn grad_scale(&self) -> f64 {
        self.clip_scale.unwrap_or(1.0)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.sums.keys()
    }
}

/// AdamW with saveable state. Each variable's moments live in one `(2, n)` tensor (`m` then `v`)
/// that the fused update (`ops::adamw`) changes in place.
pub struct AdamW {
    pub params: AdamWParams,
    vars: BTreeMap<String, Var>,
    moments: BTreeMap<String, Tensor>,
    pub step: usize,
}

impl AdamW {
    pub fn new(vars: BTreeMap<String, Var>, params: AdamWParams) -> Result<Self, TrainError> {
        let mut moments = BTreeMap::new();
        for (n, var) in &vars {
            let zeros = Tensor::zeros((2, var.elem_count()), var.dtype(), var.device())?;
            moments.insert(n.clone(), zeros);
        }
        Ok(Self {
            params,
            vars,
            moments,
            step: 0,
        })
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// One update with the accumulated gradients (variables without a gradient are left alone).
    pub fn step(&mut self, grads: &GradAccumulator) -> Result<(), TrainError> {
        self.step += 1;
        let p = self.params;
        let step = AdamStep {
            lr: p.lr,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
            step: self.step,
            grad_scale: grads.grad_scale(),
        };
        for (name, var) in &self.vars {
            let (Some(g), Some(mv)) = (grads.get(name), self.moments.get(name)) else {
                continue;
            };
            adamw_update(var.as_tensor(), mv, g, step)?;
        }
        Ok(())
    }

    /// `m` or `v` (`which` 0 or 1) of a variable, in its shape.
    fn moment(&self, name: &str, which: usize) -> Result<Tensor, TrainError> {
        let (Some(mv), Some(var)) = (self.moments.get(name), self.vars.get(name)) else {
            return Err(candle_core::Error::Msg(format!("no moments for `{name}`")).into());
        };
        Ok(mv.get(which)?.reshape(var.shape())?)
    }

    /// Writes the moments to `path` (safetensors, `m.<name>` and `v.<name>` in the variables'
    /// shapes); the step goes into the trainer state.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut t: HashMap<String, Tensor> = HashMap::new();
        for n in self.moments.keys() {
            t.insert(format!("m.{n}"), self.moment(n, 0)?);
            t.insert(format!("v.{n}"), self.moment(n, 1)?);
        }
        Ok(candle_core::safetensors::save(&t, path)?)
    }

    /// Restores the moments saved by `save` and the step count.
    pub fn load(&mut self, path: &Path, step: usize) -> Result<(), TrainError> {
        let err = |reason: String| TrainError::Resume {
            path: path.to_owned(),
            reason,
        };
        let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .map_err(|e| err(e.to_string()))?;
        for (n, var) in &self.vars {
            let get = |kind: &str| {
                let m = t
                    .get(&format!("{kind}.{n}"))
                    .ok_or_else(|| err(format!("no moment for `{n}`")))?;
                if m.elem_count() != var.elem_count() || m.dtype() != var.dtype() {
                    return Err(err(format!(
                        "moment `{kind}.{n}` is {:?} {:?}, the variable {:?} {:?}",
                        m.dtype(),
                        m.dims(),
                        var.dtype(),
                        var.dims()
                    )));
                }
                Ok(m.flatten_all()?)
            };
            let mv = Tensor::stack(&[get("m")?, get("v")?], 0)?;
            // Moments live on the variables' device (a CUDA run resumes on the GPU).
            self.moments.insert(n.clone(), mv.to_device(var.device())?);
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn adamw_minimises_a_quadratic_and_matches_the_formula() {
        let x = Var::from_tensor(&Tensor::new(&[3f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let vars = BTreeMap::from([("x".to_owned(), x.clone())]);
        let mut opt = AdamW::new(vars.clone(), AdamWParams::new(0.1, 0.0)).unwrap();
        // First step of Adam moves each coordinate by lr·sign(g).
        let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
        let mut acc = GradAccumulator::default();
        acc.add(&vars, &loss.backward().unwrap()).unwrap();
        opt.step(&acc).unwrap();
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - 2.9).abs() < 1e-5 && (v[1] + 1.9).abs() < 1e-5,
            "{v:?}"
        );
        for _ in 0..200 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            let mut acc = GradAccumulator::default();
            acc.add(&vars, &loss.backward().unwrap()).unwrap();
            opt.step(&acc).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|c| c.abs() < 0.2), "{v:?}");
    }

    #[test]
    fn clipping_bounds_the_global_norm_and_accumulation_sums() {
        let x = Var::from_tensor(&Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap()).unwrap();
        let vars = BTreeMap::from([("x".to_owned(), x.clone())]);
        let mut acc = GradAccumulator::default();
        for _ in 0..2 {
            // d/dx of sum(x·x)/2 is x; twice gives 2x = (6, 8), norm 10.
            let loss = (x.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            acc.add(&vars, &loss.backward().unwrap()).unwrap();
        }
        assert!((acc.norm().unwrap() - 10.0).abs() < 1e-4);
        assert!((acc.clip(1.0).unwrap() - 10.0).abs() < 1e-4);
        assert!((acc.norm().unwrap() - 1.0).abs() < 1e-4);
    }

    #[test]
    fn state_round_trips() {
        let x = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap()).unwrap();
        let vars = BTreeMap::from([("x".to_owned(), x.clone())]);
        let mut opt = AdamW::new(vars.clone(), AdamWParams::new(0.1, 0.01)).unwrap();
        let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
        let mut acc = GradAccumulator::default();
        acc.add(&vars, &loss.backward().unwrap()).unwrap();
        opt.step(&acc).unwrap();
        let dir = tempfile::tempdir().unwrap();
        opt.save(&dir.path().join("o.safetensors")).unwrap();
        let mut other = AdamW::new(vars, AdamWParams::new(0.1, 0.01)).unwrap();
        other.load(&dir.path().join("o.safetensors"), 1).unwrap();
        for which in [0, 1] {
            assert_eq!(
                other.moment("x", which).unwrap().to_vec1::<f32>().unwrap(),
                opt.moment("x", which).unwrap().to_vec1::<f32>().unwrap()
            );
        }
        assert_eq!(other.step, 1);
    }

    /// PyTorch's AdamW (decoupled decay) in f64 on plain vectors: the reference.
    fn reference_adamw(p: &mut [f64], grads: &[Vec<f64>], lr: f64, wd: f64, scales: &[f64]) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let mut m = vec![0f64; p.len()];
        let mut v = vec![0f64; p.len()];
        for (t, (g, k)) in grads.iter().zip(scales).enumerate() {
            let t = t as i32 + 1;
            for i in 0..p.len() {
                let g = g[i] * k;
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let m_hat = m[i] / (1.0 - b1.powi(t));
                let v_hat = v[i] / (1.0 - b2.powi(t));
                p[i] = p[i] * (1.0 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        #[test]
        fn fused_adamw_with_clipping_matches_the_reference(
            p0 in proptest::collection::vec(-2.0f64..2.0, 1..40),
            steps in 1usize..6,
            seed: u64,
            wd in 0.0f64..0.1,
            max_norm in 0.1f64..5.0,
        ) {
            let n = p0.len();
            let mut rng = crate::lora::LoraRng::new(seed);
            let grads: Vec<Vec<f64>> = (0..steps)
                .map(|_| rng.uniform(n, 3.0).into_iter().map(f64::from).collect())
                .collect();
            let p32: Vec<f32> = p0.iter().map(|x| *x as f32).collect();
            let x = Var::from_tensor(&Tensor::from_vec(p32, n, &Device::Cpu).unwrap()).unwrap();
            let vars = BTreeMap::from([("x".to_owned(), x.clone())]);
            let mut opt = AdamW::new(vars, AdamWParams::new(0.05, wd)).unwrap();
            let mut scales = vec![];
            for g in &grads {
                let g32: Vec<f32> = g.iter().map(|x| *x as f32).collect();
                let mut acc = GradAccumulator::default();
                acc.sums.insert("x".into(), Tensor::from_vec(g32, n, &Device::Cpu).unwrap());
                let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
                let before = acc.clip(max_norm).unwrap();
                proptest::prop_assert!((before - norm).abs() < 1e-4 * norm.max(1.0));
                scales.push(if norm > max_norm { max_norm / (norm + 1e-6) } else { 1.0 });
                opt.step(&acc).unwrap();
            }
            let mut expect = p0.clone();
            reference_adamw(&mut expect, &grads, 0.05, wd, &scales);
            let got = x.as_tensor().to_vec1::<f32>().unwrap();
            for (g, e) in got.iter().zip(&expect) {
                proptest::prop_assert!((*g as f64 - e).abs() < 1e-4, "{got:?} vs {expect:?}");
            }
        }
    }
}
