//! `adapter_config.json`: PEFT's `LoraConfig`, with PEFT's field names and matching rules.
//!
//! Fields vlmtest does not use are kept verbatim in `extra` and written back, so a config written
//! by PEFT survives a load/save round trip. Features vlmtest cannot apply faithfully (DoRA, bias
//! training, GPT-2 style `fan_in_fan_out`, `layers_to_transform`) are rejected by `validate`
//! instead of being silently ignored.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::LoraError;

/// PEFT's `target_modules`: a list of module-name suffixes, or one regular expression that must
/// match a module's full name. `"all-linear"` means every linear layer except the output head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Pattern(String),
}

impl TargetModules {
    /// The PEFT special value for "every linear layer but the output head".
    pub const ALL_LINEAR: &'static str = "all-linear";

    fn describe(&self) -> String {
        match self {
            TargetModules::List(l) => format!("{l:?}"),
            TargetModules::Pattern(p) => format!("`{p}`"),
        }
    }
}

/// A compiled `TargetModules`, ready to test module names.
#[derive(Debug, Clone)]
pub struct TargetMatcher {
    kind: MatcherKind,
}

#[derive(Debug, Clone)]
enum MatcherKind {
    Suffixes(Vec<String>),
    Regex(Regex),
    AllLinear,
}

impl TargetMatcher {
    pub fn new(targets: &TargetModules) -> Result<Self, LoraError> {
        let kind = match targets {
            TargetModules::List(list) => {
                if list.is_empty() {
                    return Err(LoraError::InvalidConfig {
                        field: "target_modules",
                        reason: "the list is empty".into(),
                    });
                }
                if let Some(bad) = list.iter().find(|s| s.trim().is_empty()) {
                    return Err(LoraError::InvalidConfig {
                        field: "target_modules",
                        reason: format!("entry {bad:?} is blank"),
                    });
                }
                MatcherKind::Suffixes(list.clone())
            }
            TargetModules::Pattern(p) if p == TargetModules::ALL_LINEAR => MatcherKind::AllLinear,
            // PEFT uses `re.fullmatch`: anchor both ends.
            TargetModules::Pattern(p) => {
                MatcherKind::Regex(Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    LoraError::InvalidConfig {
                        field: "target_modules",
                        reason: format!("invalid regular expression `{p}`: {e}"),
                    }
                })?)
            }
        };
        Ok(Self { kind })
    }

    /// Whether the module with this full name (`model.layers.0.self_attn.q_proj`) is targeted.
    /// `is_output_head` marks the layer that `all-linear` leaves out.
    pub fn matches(&self, name: &str, is_output_head: bool) -> bool {
        match &self.kind {
            MatcherKind::Suffixes(list) => list.iter().any(|t| {
                name == t
                    || (name.ends_with(t.as_str()) && name[..name.len() - t.len()].ends_with('.'))
            }),
            MatcherKind::Regex(re) => re.is_match(name),
            MatcherKind::AllLinear => !is_output_head,
        }
    }
}

fn default_peft_type() -> String {
    "LORA".into()
}

fn default_bias() -> String {
    "none".into()
}

fn default_alpha() -> f64 {
    8.0
}

fn default_r() -> usize {
    8
}

/// PEFT's `LoraConfig` as stored in `adapter_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "default_r")]
    pub r: usize,
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub inference_mode: bool,
    /// Per-module rank overrides, keyed by a module-name pattern.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides, keyed by a module-name pattern.
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    /// Every other PEFT field, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl AdapterConfig {
    /// A causal-LM LoRA config with PEFT's defaults for everything not given.
    pub fn new(r: usize, lora_alpha: f64, lora_dropout: f64, targets: TargetModules) -> Self {
        Self {
            peft_type: default_peft_type(),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: None,
            r,
            lora_alpha,
            lora_dropout,
            target_modules: Some(targets),
            modules_to_save: None,
            bias: default_bias(),
            fan_in_fan_out: false,
            use_rslora: false,
            use_dora: false,
            inference_mode: true,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            layers_to_transform: None,
            extra: BTreeMap::new(),
        }
    }

    /// Reads and validates `adapter_config.json`.
    pub fn load(path: &Path) -> Result<Self, LoraError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoraError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses and validates config text; `path` names the source in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, LoraError> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| LoraError::ConfigSyntax {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes the config as pretty JSON, the way PEFT does.
    pub fn save(&self, path: &Path) -> Result<(), LoraError> {
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| LoraError::InvalidConfig {
                field: "adapter_config",
                reason: e.to_string(),
            })?;
        text.push('\n');
        std::fs::write(path, text).map_err(|source| LoraError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// Rejects values vlmtest cannot apply faithfully, naming the field.
    pub fn validate(&self) -> Result<(), LoraError> {
        let bad = |field, reason: String| Err(LoraError::InvalidConfig { field, reason });
        if self.peft_type != "LORA" {
            return bad(
                "peft_type",
                format!("{:?} is not supported, only \"LORA\"", self.peft_type),
            );
        }
        if self.r == 0 {
            return bad("r", "the rank must be at least 1".into());
        }
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            return bad(
                "lora_alpha",
                format!("{} is not a positive number", self.lora_alpha),
            );
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad(
                "lora_dropout",
                format!("{} is not in [0, 1)", self.lora_dropout),
            );
        }
        if self.bias != "none" {
            return bad(
                "bias",
                format!("{:?} is not supported, only \"none\"", self.bias),
            );
        }
        if self.fan_in_fan_out {
            return bad(
                "fan_in_fan_out",
                "GPT-2 style Conv1D weights are not supported".into(),
            );
        }
        if self.use_dora {
            return bad("use_dora", "DoRA adapters are not supported".into());
        }
        if self
            .layers_to_transform
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return bad(
                "layers_to_transform",
                "restricting layers is not supported; use a target_modules regex".into(),
            );
        }
        if let Some((k, _)) = self.rank_pattern.iter().find(|(_, r)| **r == 0) {
            return bad("rank_pattern", format!("rank for {k:?} must be at least 1"));
        }
        for key in self.rank_pattern.keys().chain(self.alpha_pattern.keys()) {
            pattern_regex(key)?;
        }
        if let Some(t) = &self.target_modules {
            TargetMatcher::new(t)?;
        }
        Ok(())
    }

    /// The compiled target matcher; a config without `target_modules` is an error here because
    /// vlmtest has no per-architecture default list.
    pub fn matcher(&self) -> Result<TargetMatcher, LoraError> {
        let t = self
            .target_modules
            .as_ref()
            .ok_or(LoraError::InvalidConfig {
                field: "target_modules",
                reason: "missing; list the module names to adapt, e.g. [\"q_proj\", \"v_proj\"]"
                    .into(),
            })?;
        TargetMatcher::new(t)
    }

    /// The base linear layers this config targets, in the order given. `output_head` names the
    /// layer `all-linear` leaves out. An error when nothing matches: a misspelt target must not
    /// train an empty adapter.
    pub fn select_modules<'a>(
        &self,
        base_linears: impl IntoIterator<Item = &'a str>,
        output_head: Option<&str>,
    ) -> Result<Vec<String>, LoraError> {
        let matcher = self.matcher()?;
        let all: Vec<&str> = base_linears.into_iter().collect();
        let picked: Vec<String> = all
            .iter()
            .filter(|n| matcher.matches(n, Some(**n) == output_head))
            .map(|n| (*n).to_owned())
            .collect();
        if picked.is_empty() {
            let mut leaves: Vec<&str> = all
                .iter()
                .map(|n| n.rsplit('.').next().unwrap_or(n))
                .collect();
            leaves.sort_unstable();
            leaves.dedup();
            return Err(LoraError::NoTargetMatched {
                targets: self
                    .target_modules
                    .as_ref()
                    .map(TargetModules::describe)
                    .unwrap_or_default(),
                available: leaves.join(", "),
            });
        }
        if let Some(TargetModules::List(list)) = &self.target_modules {
            // PEFT accepts a list where only some entries match; a typo in one entry would then
            // silently train fewer layers, so every entry must match something.
            for t in list {
                let single = TargetMatcher::new(&TargetModules::List(vec![t.clone()]))?;
                if !all.iter().any(|n| single.matches(n, false)) {
                    let mut leaves: Vec<&str> = all
                        .iter()
                        .map(|n| n.rsplit('.').next().unwrap_or(n))
                        .collect();
                    leaves.sort_unstable();
                    leaves.dedup();
                    return Err(LoraError::NoTargetMatched {
                        targets: format!("[{t:?}]"),
                        available: leaves.join(", "),
                    });
                }
            }
        }
        Ok(picked)
    }

    /// The rank for one module: `rank_pattern` overrides `r`.
    pub fn rank_for(&self, module: &str) -> usize {
        lookup_pattern(&self.rank_pattern, module)
            .copied()
            .unwrap_or(self.r)
    }

    /// The LoRA scale `alpha / r` (or `alpha / sqrt(r)` with rsLoRA) for one module, with
    /// `alpha_pattern` and `rank_pattern` applied as PEFT does.
    pub fn scale_for(&self, module: &str, rank: usize) -> f64 {
        let alpha = lookup_pattern(&self.alpha_pattern, module)
            .copied()
            .unwrap_or(self.lora_alpha);
        if self.use_rslora {
            alpha / (rank as f64).sqrt()
        } else {
            alpha / rank as f64
        }
    }
}

/// PEFT matches pattern keys with `re.match(rf"(.*\.)?{key}$", module)`.
fn pattern_regex(key: &str) -> Result<Regex, LoraError> {
    Regex::new(&format!(r"^(?:.*\.)?(?:{key})$")).map_err(|e| LoraError::InvalidConfig {
        field: "rank_pattern/alpha_pattern",
        reason: format!("invalid pattern `{key}`: {e}"),
    })
}

fn lookup_pattern<'a, V>(patterns: &'a BTreeMap<String, V>, module: &str) -> Option<&'a V> {
    patterns
        .iter()
        .find(|(k, _)| pattern_regex(k).is_ok_and(|re| re.is_match(module)))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEFT_WRITTEN: &str = r#"{
  "alpha_pattern": {},
  "auto_mapping": null,
  "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
  "bias": "none",
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "layers_pattern": null,
  "layers_to_transform": null,
  "lora_alpha": 32,
  "lora_dropout": 0.05,
  "modules_to_save": null,
  "peft_type": "LORA",
  "r": 16,
  "rank_pattern": {},
  "revision": null,
  "target_modules": ["v_proj", "q_proj"],
  "task_type": "CAUSAL_LM",
  "use_dora": false,
  "use_rslora": false
}"#;

    fn names() -> Vec<String> {
        let mut v = Vec::new();
        for l in 0..2 {
            for m in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "mlp.up_proj",
            ] {
                v.push(format!("model.layers.{l}.{m}"));
            }
        }
        v.push("lm_head".into());
        v
    }

    #[test]
    fn reads_a_peft_config_and_keeps_unknown_fields() {
        let cfg = AdapterConfig::from_json(PEFT_WRITTEN, Path::new("a.json")).unwrap();
        assert_eq!(cfg.r, 16);
        assert_eq!(cfg.lora_alpha, 32.0);
        assert_eq!(cfg.scale_for("model.layers.0.self_attn.q_proj", 16), 2.0);
        assert_eq!(
            cfg.extra.get("init_lora_weights"),
            Some(&serde_json::Value::Bool(true))
        );
        let back: AdapterConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn list_targets_match_suffixes_on_dot_boundaries() {
        let cfg = AdapterConfig::new(
            4,
            8.0,
            0.0,
            TargetModules::List(vec!["q_proj".into(), "v_proj".into()]),
        );
        let n = names();
        let picked = cfg
            .select_modules(n.iter().map(String::as_str), Some("lm_head"))
            .unwrap();
        assert_eq!(picked.len(), 4);
        assert!(picked
            .iter()
            .all(|p| p.ends_with(".q_proj") || p.ends_with(".v_proj")));
        let m = cfg.matcher().unwrap();
        assert!(!m.matches("model.layers.0.self_attn.xq_proj", false));
    }

    #[test]
    fn regex_targets_use_full_match() {
        let cfg = AdapterConfig::new(
            4,
            8.0,
            0.0,
            TargetModules::Pattern(r"model\.layers\.1\..*(q|k)_proj".into()),
        );
        let n = names();
        let picked = cfg
            .select_modules(n.iter().map(String::as_str), None)
            .unwrap();
        assert_eq!(
            picked,
            vec![
                "model.layers.1.self_attn.q_proj",
                "model.layers.1.self_attn.k_proj"
            ]
        );
        let partial = TargetMatcher::new(&TargetModules::Pattern("q_proj".into())).unwrap();
        assert!(!partial.matches("model.layers.0.self_attn.q_proj", false));
    }

    #[test]
    fn all_linear_leaves_out_the_head() {
        let cfg = AdapterConfig::new(4, 8.0, 0.0, TargetModules::Pattern("all-linear".into()));
        let n = names();
        let picked = cfg
            .select_modules(n.iter().map(String::as_str), Some("lm_head"))
            .unwrap();
        assert_eq!(picked.len(), 8);
    }

    #[test]
    fn unknown_target_is_a_clear_error() {
        let cfg = AdapterConfig::new(
            4,
            8.0,
            0.0,
            TargetModules::List(vec!["q_proj".into(), "qproj".into()]),
        );
        let n = names();
        let err = cfg
            .select_modules(n.iter().map(String::as_str), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"qproj\"") && err.contains("q_proj, up_proj"),
            "{err}"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        for (patch, field) in [
            (r#""r": 0"#, "`r`"),
            (r#""lora_dropout": 1.5"#, "`lora_dropout`"),
            (r#""peft_type": "IA3""#, "`peft_type`"),
            (r#""use_dora": true"#, "`use_dora`"),
            (r#""bias": "all""#, "`bias`"),
            (r#""target_modules": "(unclosed""#, "`target_modules`"),
            (r#""target_modules": []"#, "`target_modules`"),
        ] {
            let text = format!("{{{patch}}}");
            let err = AdapterConfig::from_json(&text, Path::new("c.json"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{patch}: {err}");
        }
        let err = AdapterConfig::from_json("{\n \"r\": \"x\"}", Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.json, line 2"), "{err}");
    }

    #[test]
    fn patterns_override_rank_and_alpha() {
        let mut cfg = AdapterConfig::new(8, 16.0, 0.0, TargetModules::List(vec!["q_proj".into()]));
        cfg.rank_pattern
            .insert(r"layers\.1\.self_attn\.q_proj".into(), 4);
        cfg.alpha_pattern.insert("q_proj".into(), 4.0);
        cfg.use_rslora = true;
        assert_eq!(cfg.rank_for("model.layers.1.self_attn.q_proj"), 4);
        assert_eq!(cfg.rank_for("model.layers.0.self_attn.q_proj"), 8);
        assert_eq!(cfg.scale_for("model.layers.1.self_attn.q_proj", 4), 2.0);
    }
}
