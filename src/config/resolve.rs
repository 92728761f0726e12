//! The merge: `vlmtest.toml` (checked with file, line and key), then the environment's typed
//! overrides, then CLI flags; then the rubrics; then warnings for unknown `VLMTEST_*` variables.

use std::path::{Path, PathBuf};

use super::env::{self, Env, EnvOverrides};
use super::error::{ConfigError, ConfigWarning, TomlError};
use super::file::{check_threshold, ConfigFile};
use super::locate::{key_at, line_of, offset_of};
use super::{rubrics, Config, Overrides, CONFIG_FILE};
use crate::judge::JudgeSettings;

impl Config {
    /// Reads and checks `vlmtest.toml` from `root` alone (no environment, no flags); a missing
    /// file means all defaults.
    pub fn load(root: &Path) -> Result<Self, ConfigError> {
        let path = root.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let file: ConfigFile = toml::from_str(&text).map_err(|e| {
            let offset = e.span().map(|s| s.start);
            TomlError {
                file: path.clone(),
                line: offset.map(|o| line_of(&text, o)),
                key: offset.and_then(|o| key_at(&text, o)),
                message: e.message().to_owned(),
            }
        })?;
        if let Some(judge) = &file.judge {
            judge.validate().map_err(|e| TomlError {
                file: path.clone(),
                line: offset_of(&text, &["judge", e.key()]).map(|o| line_of(&text, o)),
                key: Some(format!("judge.{}", e.key())),
                message: e.to_string(),
            })?;
        }
        for (suite, cfg) in &file.suites {
            for (name, &value) in &cfg.thresholds {
                check_threshold(name, value).map_err(|message| {
                    let at = offset_of(&text, &["suites", suite, "thresholds", name]);
                    TomlError {
                        file: path.clone(),
                        line: at.map(|o| line_of(&text, o)),
                        key: Some(format!("suites.{suite}.thresholds.{name}")),
                        message,
                    }
                })?;
            }
        }
        Ok(Self {
            model: file.model,
            judge: file.judge,
            suites: file.suites,
            ..Self::default()
        })
    }

    /// The whole stage for the project at `root`, with environment `env` and flags `flags`.
    pub fn resolve(root: &Path, env: &Env, flags: &Overrides) -> Result<Self, ConfigError> {
        let mut config = Self::load(root)?;
        config.apply_env(EnvOverrides::from_env(env)?);
        config.apply_flags(flags);
        rubrics::check_all(root)?;
        config.warnings = env
            .unknown()
            .into_iter()
            .map(ConfigWarning::UnknownVariable)
            .collect();
        Ok(config)
    }

    /// [`Config::resolve`] with the process environment.
    pub fn from_process(root: &Path, flags: &Overrides) -> Result<Self, ConfigError> {
        Self::resolve(root, &Env::from_process(), flags)
    }

    fn apply_env(&mut self, o: EnvOverrides) {
        if let Some(spec) = o.model {
            self.model.spec = spec;
            self.model_forced = true;
        }
        if let Some(adapter) = o.adapter {
            self.model.adapter = adapter;
        }
        if let Some(n) = o.max_samples {
            self.model.max_samples = Some(n);
        }
        if let Some(n) = o.max_new_tokens {
            self.model.max_new_tokens = n;
        }
        self.strict = o.strict;
        self.answer_cache = o.answer_cache;
        // The URL alone configures a judge; the model and cache mode only adjust one.
        if self.judge.is_none() && o.judge_url.is_some() {
            self.judge = Some(JudgeSettings::default());
        }
        if let Some(judge) = &mut self.judge {
            if let Some(url) = o.judge_url {
                judge.url = url;
            }
            if let Some(model) = o.judge_model {
                judge.model = model;
            }
            if let Some(mode) = o.judge_cache {
                judge.cache = mode;
            }
        }
    }

    fn apply_flags(&mut self, flags: &Overrides) {
        if let Some(m) = &flags.model {
            self.model.spec = m.clone();
            self.model_forced = true;
        }
        if let Some(a) = &flags.adapter {
            self.model.adapter = Some(a.clone());
        }
        if let Some(n) = flags.max_samples {
            self.model.max_samples = Some(n);
        }
        if let Some(n) = flags.max_new_tokens {
            self.model.max_new_tokens = n;
        }
        if let Some(mode) = flags.cache {
            self.answer_cache_mode = mode;
        }
    }
}

/// The project root: `$VLMTEST_ROOT`, else the directory of the crate under test
/// (`$CARGO_MANIFEST_DIR`, set by cargo for test processes), else the current directory.
pub fn project_root() -> PathBuf {
    for var in [&env::ROOT, &env::CARGO_MANIFEST_DIR] {
        if let Some(dir) = env::process_var(var).filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
    }
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::super::{GateBound, RowScorer};
    use super::*;
    use crate::judge::CacheMode;

    fn project(toml: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CONFIG_FILE), toml).expect("write");
        dir
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn resolve(toml: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = project(toml);
        Config::resolve(dir.path(), &env(pairs), &Overrides::default())
    }

    #[test]
    fn unknown_keys_name_the_file_and_line() {
        let dir = project("[model]\nspec = \"x\"\n\n[suites.a]\npromt = \"oops\"\n");
        let err = Config::load(dir.path()).expect_err("unknown field");
        let msg = err.to_string();
        assert!(msg.contains("vlmtest.toml:5"), "{msg}");
        assert!(msg.contains("promt"), "{msg}");
        assert!(msg.contains("key `suites.a.promt`"), "{msg}");
    }

    #[test]
    fn defaults_without_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = Config::load(dir.path()).expect("defaults");
        assert_eq!(cfg.model.spec, "smollm2");
        assert_eq!(cfg.suite("any").row_scorers, vec![RowScorer::Numbers]);
    }

    /// Each of these was accepted silently before: a gate bound with a misspelt key (which then
    /// always passed), a typo in `[judge]` that only surfaced once a judged case ran, a zero batch
    /// size, a threshold for a scorer that does not exist, a negative tolerance.
    #[test]
    fn every_bad_key_or_value_names_file_line_and_key() {
        for (toml, line, key) in [
            (
                "[suites.a.gates]\npass_rate = 0.5\n\"price.smape\" = { maximum = 0.1 }\n",
                3,
                "suites.a.gates.\"price.smape\"`: unknown field `maximum`",
            ),
            ("[judge]\nmodle = \"m\"\n", 2, "judge.modle"),
            (
                "[judge]\nmodel = \"m\"\nconcurrency = 0\n",
                3,
                "judge.concurrency",
            ),
            ("[judge]\nurl = \"localhost:8080\"\n", 2, "judge.url"),
            ("[model]\nbatch_size = 0\n", 2, "model.batch_size"),
            (
                "[model]\nmax_new_tokens = \"many\"\n",
                2,
                "model.max_new_tokens",
            ),
            (
                "[suites.a.thresholds]\nnumerci = 0.5\n",
                2,
                "suites.a.thresholds",
            ),
            (
                "[suites.a.thresholds]\ntoken_f1 = 5.0\n",
                2,
                "suites.a.thresholds",
            ),
            (
                "[suites.a]\nrow_tolerance = -0.1\n",
                2,
                "suites.a.row_tolerance",
            ),
        ] {
            let msg = resolve(toml, &[]).expect_err(toml).to_string();
            assert!(
                msg.contains(&format!("vlmtest.toml:{line}")) && msg.contains(key),
                "{toml}: {msg}"
            );
        }
    }

    #[test]
    fn precedence_is_file_then_environment_then_flags() {
        let dir = project(
            "[model]\nspec = \"file\"\nmax_new_tokens = 10\nmax_samples = 5\nadapter = \"ad\"\n",
        );
        let e = env(&[("VLMTEST_MODEL", "env"), ("VLMTEST_MAX_NEW_TOKENS", "20")]);
        let cfg = Config::resolve(dir.path(), &e, &Overrides::default()).expect("valid");
        assert_eq!(
            (
                cfg.model.spec.as_str(),
                cfg.model.max_new_tokens,
                cfg.model.max_samples
            ),
            ("env", 20, Some(5))
        );
        assert!(cfg.model_forced);
        let flags = Overrides {
            model: Some("flag".into()),
            max_new_tokens: Some(30),
            ..Overrides::default()
        };
        let cfg = Config::resolve(dir.path(), &e, &flags).expect("valid");
        assert_eq!(
            (cfg.model.spec.as_str(), cfg.model.max_new_tokens),
            ("flag", 30)
        );
        let cleared = env(&[("VLMTEST_ADAPTER", "")]);
        let cfg = Config::resolve(dir.path(), &cleared, &Overrides::default()).expect("valid");
        assert_eq!(cfg.model.adapter, None);
    }

    #[test]
    fn the_judge_from_the_table_the_environment_or_nothing() {
        assert!(resolve("", &[]).expect("valid").judge.is_none());
        let url = [("VLMTEST_JUDGE_URL", "http://127.0.0.1:1/v1")];
        let s = resolve("", &url).expect("valid").judge.expect("configured");
        assert_eq!(s.url, "http://127.0.0.1:1/v1");
        let s = resolve(
            "[judge]\nmodel = \"m\"\nconcurrency = 3\n",
            &[
                ("VLMTEST_JUDGE_MODEL", "judge-x"),
                ("VLMTEST_JUDGE_CACHE", "replay"),
            ],
        )
        .expect("valid")
        .judge
        .expect("configured");
        assert_eq!(
            (s.model.as_str(), s.concurrency, s.cache),
            ("judge-x", 3, CacheMode::Replay)
        );
        // The model alone configures no judge.
        assert!(resolve("", &[("VLMTEST_JUDGE_MODEL", "m")])
            .expect("valid")
            .judge
            .is_none());
    }

    #[test]
    fn a_bad_variable_is_an_error_and_an_unknown_one_a_warning() {
        let msg = resolve("", &[("VLMTEST_STRICT", "maybe")])
            .expect_err("bad flag")
            .to_string();
        assert!(msg.contains("VLMTEST_STRICT=`maybe`"), "{msg}");
        let cfg =
            resolve("", &[("VLMTEST_MODLE", "x"), ("VLMTEST_STRICT", "true")]).expect("valid");
        assert!(cfg.strict);
        assert_eq!(cfg.warnings.len(), 1);
        assert!(cfg.warnings[0]
            .to_string()
            .contains("did you mean VLMTEST_MODEL?"));
    }

    #[test]
    fn gate_bounds_parse() {
        let cfg = resolve(
            "[suites.a.gates]\npass_rate = 0.5\n\"price.smape\" = { max = 55.0 }\n",
            &[],
        )
        .expect("valid");
        let gates = &cfg.suite("a").gates;
        assert_eq!(gates["pass_rate"], GateBound::Min(0.5));
        assert_eq!(gates["price.smape"].bounds(), (None, Some(55.0)));
    }
}
