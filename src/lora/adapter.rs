//! A LoRA adapter on disk, in PEFT's layout: a folder with `adapter_config.json` and
//! `adapter_model.safetensors`, tensors named `base_model.model.<module>.lora_A.weight` (r, in)
//! and `…lora_B.weight` (out, r); `modules_to_save` copies stored as
//! `base_model.model.<module>.<param>`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::Linear;

use super::config::AdapterConfig;
use super::linear::LoraLinear;
use super::LoraError;

pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// PEFT's prefix: the `PeftModel` wraps a `LoraModel` (`base_model`) that wraps the HF model.
pub const KEY_PREFIX: &str = "base_model.model.";

/// One module's LoRA pair.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    /// (r, in).
    pub a: Tensor,
    /// (out, r).
    pub b: Tensor,
}

impl LoraWeights {
    pub fn rank(&self) -> usize {
        self.a.dims().first().copied().unwrap_or(0)
    }

    /// (out, in) of the base layer this pair fits.
    pub fn base_shape(&self) -> (usize, usize) {
        (
            self.b.dims().first().copied().unwrap_or(0),
            self.a.dims().get(1).copied().unwrap_or(0),
        )
    }
}

/// A loaded (or freshly trained) adapter.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub config: AdapterConfig,
    /// Keyed by the module's full name in the base model, e.g. `model.layers.0.self_attn.q_proj`.
    pub modules: BTreeMap<String, LoraWeights>,
    /// Full replacements for `modules_to_save`, keyed by parameter name (`lm_head.weight`).
    pub saved_params: BTreeMap<String, Tensor>,
}

/// What a safetensors key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    A(String),
    B(String),
    Other(String),
}

/// Parses a PEFT tensor name. Accepts the adapter-name form PEFT uses in memory
/// (`lora_A.default.weight`) as well as the saved form (`lora_A.weight`).
pub fn parse_key(key: &str) -> KeyKind {
    let rest = key.strip_prefix(KEY_PREFIX).unwrap_or(key);
    for (marker, is_a) in [(".lora_A.", true), (".lora_B.", false)] {
        if let Some(pos) = rest.find(marker) {
            let module = &rest[..pos];
            let tail = &rest[pos + marker.len()..];
            let ok = tail == "weight"
                || tail
                    .strip_suffix(".weight")
                    .is_some_and(|n| !n.contains('.'));
            if ok && !module.is_empty() {
                return if is_a {
                    KeyKind::A(module.to_owned())
                } else {
                    KeyKind::B(module.to_owned())
                };
            }
        }
    }
    KeyKind::Other(rest.to_owned())
}

impl LoraAdapter {
    /// Loads `dir/adapter_config.json` and `dir/adapter_model.safetensors` onto `device` as f32.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, LoraError> {
        let config = AdapterConfig::load(&dir.join(ADAPTER_CONFIG_FILE))?;
        let wpath = dir.join(ADAPTER_WEIGHTS_FILE);
        if !wpath.exists() {
            return Err(LoraError::Read {
                path: wpath,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let tensors =
            candle_core::safetensors::load(&wpath, device).map_err(|e| LoraError::Weights {
                path: wpath.clone(),
                reason: e.to_string(),
            })?;
        Self::from_tensors(config, tensors, &wpath)
    }

    /// Builds an adapter from PEFT-named tensors; `source` names the file in errors.
    pub fn from_tensors(
        config: AdapterConfig,
        tensors: HashMap<String, Tensor>,
        source: &Path,
    ) -> Result<Self, LoraError> {
        let mut a_map = BTreeMap::new();
        let mut b_map = BTreeMap::new();
        let mut saved_params = BTreeMap::new();
        let to_save = config.modules_to_save.clone().unwrap_or_default();
        for (key, t) in tensors {
            let t = t.to_dtype(DType::F32)?;
            match parse_key(&key) {
                KeyKind::A(m) => {
                    a_map.insert(m, t);
                }
                KeyKind::B(m) => {
                    b_map.insert(m, t);
                }
                KeyKind::Other(name) => {
                    let owner = name.rsplit_once('.').map(|(m, _)| m).unwrap_or(&name);
                    let listed = to_save
                        .iter()
                        .any(|s| owner == s || owner.ends_with(&format!(".{s}")));
                    if !listed {
                        return Err(LoraError::UnexpectedTensor {
                            path: source.to_owned(),
                            key,
                        });
                    }
                    saved_params.insert(name, t);
                }
            }
        }
        let mut modules = BTreeMap::new();
        for (m, a) in a_map {
            let b = b_map.remove(&m).ok_or(LoraError::IncompletePair {
                module: m.clone(),
                present: "lora_A",
                missing: "lora_B",
            })?;
            check_pair(&m, &a, &b)?;
            modules.insert(m, LoraWeights { a, b });
        }
        if let Some(m) = b_map.into_keys().next() {
            return Err(LoraError::IncompletePair {
                module: m,
                present: "lora_B",
                missing: "lora_A",
            });
        }
        if modules.is_empty() && saved_params.is_empty() {
            return Err(LoraError::Empty);
        }
        Ok(Self {
            config,
            modules,
            saved_params,
        })
    }

    /// The PEFT-named tensors of this adapter.
    pub fn peft_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (m, w) in &self.modules {
            out.insert(format!("{KEY_PREFIX}{m}.lora_A.weight"), w.a.clone());
            out.insert(format!("{KEY_PREFIX}{m}.lora_B.weight"), w.b.clone());
        }
        for (name, t) in &self.saved_params {
            out.insert(format!("{KEY_PREFIX}{name}"), t.clone());
        }
        out
    }

    /// Writes the adapter folder (created if needed). The safetensors header carries PEFT's
    /// `{"format": "pt"}` metadata.
    pub fn save(&self, dir: &Path) -> Result<(), LoraError> {
        std::fs::create_dir_all(dir).map_err(|source| LoraError::Write {
            path: dir.to_owned(),
            source,
        })?;
        self.config.save(&dir.join(ADAPTER_CONFIG_FILE))?;
        let wpath = dir.join(ADAPTER_WEIGHTS_FILE);
        let tensors: Vec<(String, Tensor)> = self
            .peft_tensors()
            .into_iter()
            .map(|(k, t)| Ok((k, t.contiguous()?)))
            .collect::<Result<_, candle_core::Error>>()?;
        let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        safetensors::serialize_to_file(tensors, Some(meta), &wpath).map_err(|e| {
            LoraError::Weights {
                path: wpath.clone(),
                reason: e.to_string(),
            }
        })
    }

    /// Checks every adapter module against the base model's linear layers (name → (out, in)).
    pub fn check_against(&self, base: &BTreeMap<String, (usize, usize)>) -> Result<(), LoraError> {
        for (m, w) in &self.modules {
            let Some(&shape) = base.get(m) else {
                let example = base.keys().next().cloned().unwrap_or_default();
                return Err(LoraError::UnknownModule {
                    module: m.clone(),
                    example,
                });
            };
            if shape != w.base_shape() {
                return Err(LoraError::ShapeMismatch {
                    module: m.clone(),
                    base: shape,
                    adapter: w.base_shape(),
                });
            }
        }
        Ok(())
    }

    /// `s·B·A` (out, in) for one module, if the adapter has it.
    pub fn delta(&self, module: &str) -> Result<Option<Tensor>, LoraError> {
        let Some(w) = self.modules.get(module) else {
            return Ok(None);
        };
        let s = self.config.scale_for(module, w.rank());
        Ok(Some((w.b.matmul(&w.a)? * s)?))
    }

    /// Wraps `base` with this adapter's pair for `module` (a frozen layer when the adapter has
    /// none). The result is unmerged; call `merge` for the fast path.
    pub fn apply(&self, module: &str, base: Linear) -> Result<LoraLinear, LoraError> {
        match self.modules.get(module) {
            None => Ok(LoraLinear::frozen(base)),
            Some(w) => {
                let s = self.config.scale_for(module, w.rank());
                let dev = base.weight().device().clone();
                LoraLinear::new(
                    base,
                    module,
                    w.a.to_device(&dev)?,
                    w.b.to_device(&dev)?,
                    s,
                    0.0,
                )
            }
        }
    }
}

fn check_pair(module: &str, a: &Tensor, b: &Tensor) -> Result<(), LoraError> {
    let ok = a.rank() == 2 && b.rank() == 2 && a.dims()[0] == b.dims()[1];
    if ok {
        Ok(())
    } else {
        Err(LoraError::RankMismatch {
            module: module.to_owned(),
            a: a.dims().to_vec(),
            b: b.dims().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use candle_nn::Module;
    use proptest::prelude::*;

    use super::*;
    use crate::lora::config::TargetModules;
    use crate::lora::linear::{random_linear, LoraRng};

    fn sample(rng: &mut LoraRng) -> LoraAdapter {
        let dev = Device::Cpu;
        let mut modules = BTreeMap::new();
        for m in [
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.self_attn.q_proj",
        ] {
            let a = Tensor::from_vec(rng.uniform(3 * 8, 1.0), (3, 8), &dev).unwrap();
            let b = Tensor::from_vec(rng.uniform(6 * 3, 1.0), (6, 3), &dev).unwrap();
            modules.insert(m.to_owned(), LoraWeights { a, b });
        }
        let config = AdapterConfig::new(3, 6.0, 0.0, TargetModules::List(vec!["q_proj".into()]));
        LoraAdapter {
            config,
            modules,
            saved_params: BTreeMap::new(),
        }
    }

    fn shapes() -> BTreeMap<String, (usize, usize)> {
        BTreeMap::from([
            ("model.layers.0.self_attn.q_proj".to_owned(), (6, 8)),
            ("model.layers.1.self_attn.q_proj".to_owned(), (6, 8)),
        ])
    }

    #[test]
    fn save_then_load_gives_identical_tensors_and_peft_names() {
        let mut rng = LoraRng::new(5);
        let ad = sample(&mut rng);
        let dir = tempfile::tempdir().unwrap();
        ad.save(dir.path()).unwrap();
        let raw =
            candle_core::safetensors::load(dir.path().join(ADAPTER_WEIGHTS_FILE), &Device::Cpu)
                .unwrap();
        assert!(raw.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
        assert!(raw.contains_key("base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"));
        let back = LoraAdapter::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(back.config, ad.config);
        for (m, w) in &ad.modules {
            let v = &back.modules[m];
            let d = (&w.a - &v.a)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0);
        }
        back.check_against(&shapes()).unwrap();
    }

    #[test]
    fn applied_layer_equals_base_plus_delta() {
        let mut rng = LoraRng::new(6);
        let ad = sample(&mut rng);
        let base = random_linear(6, 8, &mut rng, &Device::Cpu).unwrap();
        let m = "model.layers.0.self_attn.q_proj";
        let l = ad.apply(m, base.clone()).unwrap();
        let x = Tensor::from_vec(rng.uniform(16, 1.0), (2, 8), &Device::Cpu).unwrap();
        let w = (base.weight() + ad.delta(m).unwrap().unwrap()).unwrap();
        let want = Linear::new(w, None).forward(&x).unwrap();
        let d = (want - l.forward(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_keepdim(1)
            .unwrap();
        assert!(
            d.flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                < 1e-5
        );
        assert!(ad
            .apply("model.layers.0.mlp.up_proj", base)
            .unwrap()
            .lora_tensors()
            .is_none());
    }

    #[test]
    fn disagreement_with_the_base_is_a_clear_error() {
        let mut rng = LoraRng::new(7);
        let ad = sample(&mut rng);
        let mut s = shapes();
        s.remove("model.layers.1.self_attn.q_proj");
        let err = ad.check_against(&s).unwrap_err().to_string();
        assert!(
            err.contains("model.layers.1.self_attn.q_proj") && err.contains("does not exist"),
            "{err}"
        );
        let mut s = shapes();
        s.insert("model.layers.1.self_attn.q_proj".into(), (6, 9));
        let err = ad.check_against(&s).unwrap_err().to_string();
        assert!(err.contains("(6, 9)") && err.contains("(6, 8)"), "{err}");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let mut rng = LoraRng::new(8);
        let ad = sample(&mut rng);
        let cfg = ad.config.clone();
        let dev = Device::Cpu;
        let p = PathBuf::from("w.safetensors");
        let mut t: HashMap<String, Tensor> = ad.peft_tensors().into_iter().collect();
        t.remove("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
        let err = LoraAdapter::from_tensors(cfg.clone(), t, &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no lora_B"), "{err}");
        let mut t: HashMap<String, Tensor> = ad.peft_tensors().into_iter().collect();
        t.insert(
            "base_model.model.model.norm.weight".into(),
            Tensor::zeros(8, DType::F32, &dev).unwrap(),
        );
        let err = LoraAdapter::from_tensors(cfg.clone(), t, &p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("w.safetensors") && err.contains("model.norm.weight"),
            "{err}"
        );
        let err = LoraAdapter::from_tensors(cfg, HashMap::new(), &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no LoRA tensors"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ADAPTER_CONFIG_FILE), "{}").unwrap();
        let err = LoraAdapter::load(dir.path(), &dev).unwrap_err().to_string();
        assert!(err.contains(ADAPTER_WEIGHTS_FILE), "{err}");
    }

    #[test]
    fn modules_to_save_round_trip() {
        let mut rng = LoraRng::new(9);
        let mut ad = sample(&mut rng);
        ad.config.modules_to_save = Some(vec!["lm_head".into()]);
        ad.saved_params.insert(
            "lm_head.weight".into(),
            Tensor::ones((4, 8), DType::F32, &Device::Cpu).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        ad.save(dir.path()).unwrap();
        let back = LoraAdapter::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(back.saved_params["lm_head.weight"].dims(), &[4, 8]);
    }

    proptest! {
        #[test]
        fn keys_round_trip(module in "[a-z_]{1,8}(\\.[0-9a-z_]{1,8}){0,5}") {
            prop_assert_eq!(parse_key(&format!("{KEY_PREFIX}{module}.lora_A.weight")), KeyKind::A(module.clone()));
            prop_assert_eq!(parse_key(&format!("{KEY_PREFIX}{module}.lora_B.default.weight")), KeyKind::B(module.clone()));
            prop_assert_eq!(parse_key(&format!("{KEY_PREFIX}{module}.weight")), KeyKind::Other(format!("{module}.weight")));
        }

        #[test]
        fn parse_key_never_panics(key in "\\PC{0,60}") {
            let _ = parse_key(&key);
        }
    }
}
