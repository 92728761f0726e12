//! AdamW (decoupled weight decay) over named `Var`s, with global-norm gradient clipping and
//! gradient accumulation. Its state (moments and step) can be saved and restored, which candle's
//! own `AdamW` does not allow, so an interrupted run resumes exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::TrainError;

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

/// Gradients summed over micro-batches, by variable name.
#[derive(Debug, Default)]
pub struct GradAccumulator {
    sums: BTreeMap<String, Tensor>,
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

    /// The global L2 norm of the accumulated gradients.
    pub fn norm(&self) -> Result<f64, TrainError> {
        let mut sq = 0f64;
        for g in self.sums.values() {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        Ok(sq.sqrt())
    }

    /// Scales all gradients so their global norm is at most `max_norm`; returns the norm before.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64, TrainError> {
        let norm = self.norm()?;
        if norm > max_norm {
            let k = max_norm / (norm + 1e-6);
            for g in self.sums.values_mut() {
                *g = (&*g * k)?;
            }
        }
        Ok(norm)
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.sums.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.sums.keys()
    }
}

/// AdamW with saveable state.
pub struct AdamW {
    pub params: AdamWParams,
    vars: BTreeMap<String, Var>,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
    pub step: usize,
}

impl AdamW {
    pub fn new(vars: BTreeMap<String, Var>, params: AdamWParams) -> Result<Self, TrainError> {
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (n, var) in &vars {
            m.insert(n.clone(), var.zeros_like()?);
            v.insert(n.clone(), var.zeros_like()?);
        }
        Ok(Self {
            params,
            vars,
            m,
            v,
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
        let t = self.step as i32;
        let bc1 = 1.0 - p.beta1.powi(t);
        let bc2 = 1.0 - p.beta2.powi(t);
        for (name, var) in &self.vars {
            let Some(g) = grads.get(name) else { continue };
            let (Some(m), Some(v)) = (self.m.get_mut(name), self.v.get_mut(name)) else {
                continue;
            };
            *m = ((&*m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            *v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&*m / bc1)?;
            let v_hat = (&*v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let theta = ((var.as_tensor() * (1.0 - p.lr * p.weight_decay))? - (update * p.lr)?)?;
            var.set(&theta)?;
        }
        Ok(())
    }

    /// Writes the moments to `path` (safetensors); the step goes into the trainer state.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut t: HashMap<String, Tensor> = HashMap::new();
        for (n, m) in &self.m {
            t.insert(format!("m.{n}"), m.clone());
        }
        for (n, v) in &self.v {
            t.insert(format!("v.{n}"), v.clone());
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
            let m = t
                .get(&format!("m.{n}"))
                .ok_or_else(|| err(format!("no moment for `{n}`")))?;
            let v = t
                .get(&format!("v.{n}"))
                .ok_or_else(|| err(format!("no moment for `{n}`")))?;
            // Moments live on the variables' device (a CUDA run resumes on the GPU).
            self.m.insert(n.clone(), m.to_device(var.device())?);
            self.v.insert(n.clone(), v.to_device(var.device())?);
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
        assert_eq!(
            other.m["x"].to_vec1::<f32>().unwrap(),
            opt.m["x"].to_vec1::<f32>().unwrap()
        );
        assert_eq!(other.step, 1);
    }
}
