//! The training loop: evaluate before, train with AdamW (accumulation, clipping, schedule), evaluate
//! every `eval_every` steps and after each epoch (best checkpoint, early stopping on any report
//! metric), evaluate after, and write the adapter, the summaries and `run_metadata.json`. Every
//! evaluation goes through `train::eval`, the pipeline `vlmtest run` uses.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::batch::{epoch_batches, plan};
use super::checkpoint::{
    adapter_from_vars, load_into_vars, load_last, named_vars, save_json, save_last, save_merged,
    TrainerState,
};
use super::config::TrainConfig;
use super::data::Example;
use super::eval::{side_by_side, EvalSummary, Objective, Validation};
use super::model::TrainableModel;
use super::optim::{AdamW, AdamWParams, GradAccumulator};
use super::schedule::{lr_at, warmup_steps};
use super::TrainError;
use crate::case::Case;
use crate::lora::{LoraAdapter, LoraRng};
use crate::run_store;

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub before: Option<EvalSummary>,
    pub after: Option<EvalSummary>,
    /// The evaluations made during training (every `eval_every` steps and at epoch ends).
    pub evals: Vec<EvalSummary>,
    pub state: TrainerState,
    pub adapter_dir: PathBuf,
    pub adapted_modules: usize,
    pub trainable_params: usize,
    pub total_steps: usize,
    pub resumed_from_step: Option<usize>,
}

#[derive(Serialize)]
struct RunMetadata<'a> {
    config: &'a TrainConfig,
    base_model: String,
    seed: u64,
    train_rows: usize,
    train_tokens: usize,
    train_target_tokens: usize,
    val_rows: usize,
    adapted_modules: usize,
    trainable_params: usize,
    total_steps: usize,
    steps_done: usize,
    stopped_early: bool,
    best_step: Option<usize>,
    resumed_from_step: Option<usize>,
    train_seconds: f64,
    seconds_per_step: f64,
    tokens_per_second: f64,
    eval_seconds: f64,
    final_loss: Option<f32>,
    metric: &'a str,
    best_metric: Option<f64>,
    before: Option<Headline<'a>>,
    after: Option<Headline<'a>>,
    evals: Vec<Headline<'a>>,
    threads: usize,
    vlmtest_version: &'static str,
}

/// One evaluation's line in `run_metadata.json` and `evals.jsonl`.
#[derive(Serialize)]
struct Headline<'a> {
    label: &'a str,
    step: usize,
    seconds: f64,
    metrics: &'a std::collections::BTreeMap<String, f64>,
}

fn headline(s: &EvalSummary) -> Headline<'_> {
    Headline {
        label: &s.label,
        step: s.step,
        seconds: s.seconds,
        metrics: &s.metrics,
    }
}

/// The run's evaluations: runs each through the validation pipeline and records it as a summary
/// file, a line of `evals.jsonl` and a stored run under `evals/<label>/` (so `vlmtest compare`
/// reads any two of them), and keeps the best metric.
struct Evaluations<'a> {
    val: &'a Validation,
    examples: Vec<Example>,
    objective: Objective,
    run_dir: &'a Path,
    progress: bool,
    seconds: f64,
    /// The evaluations made during training, in order.
    during: Vec<EvalSummary>,
}

impl Evaluations<'_> {
    fn run(
        &mut self,
        model: &dyn TrainableModel,
        label: &str,
        step: usize,
    ) -> Result<EvalSummary, TrainError> {
        let s = self
            .val
            .evaluate(model, label, step, &self.examples, self.progress)?;
        self.seconds += s.seconds;
        self.record(&s, model)?;
        Ok(s)
    }

    fn summary_path(&self, label: &str) -> PathBuf {
        let name = match label {
            "before" | "after" => format!("prebench_{label}_training_summary.json"),
            other => format!("eval_{}_summary.json", other.replace('-', "_")),
        };
        self.run_dir.join(name)
    }

    fn record(&self, s: &EvalSummary, model: &dyn TrainableModel) -> Result<(), TrainError> {
        save_json(&self.summary_path(&s.label), s)?;
        let log = self.run_dir.join("evals.jsonl");
        let line = serde_json::to_string(&headline(s)).map_err(|e| TrainError::Io {
            path: log.clone(),
            source: std::io::Error::other(e),
        })?;
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(TrainError::io(&log))?;
        let folder = self.run_dir.join("evals").join(&s.label);
        run_store::save_at(
            &folder,
            self.val.root(),
            &format!("{}-{}", model.label(), s.label),
            None,
            std::slice::from_ref(&s.report),
        )
        .map_err(|e| TrainError::Io {
            path: folder.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(())
    }

    /// Evaluates during training and judges the result: a new best saves `best/` (through
    /// `save_best`), else the patience count grows; returns whether training should stop.
    fn during_training(
        &mut self,
        model: &dyn TrainableModel,
        label: &str,
        cfg: &TrainConfig,
        state: &mut TrainerState,
        save_best: &dyn Fn() -> Result<(), TrainError>,
        pb: &ProgressBar,
    ) -> Result<bool, TrainError> {
        let s = self.run(model, label, state.step)?;
        let value = self.objective.value(&s)?;
        pb.println(format!(
            "{} (step {}): {} = {value:.4}",
            s.label, s.step, self.objective.name
        ));
        let mut stop = false;
        if self
            .objective
            .improves(value, state.best_metric, cfg.min_delta)
        {
            state.best_metric = Some(value);
            state.best_step = Some(state.step);
            state.bad_evals = 0;
            save_best()?;
        } else {
            state.bad_evals += 1;
            if cfg.patience > 0 && state.bad_evals >= cfg.patience {
                state.stopped_early = true;
                stop = true;
                pb.println(format!(
                    "early stop: no improvement of {} in {} evaluations",
                    self.objective.name, state.bad_evals
                ));
            }
        }
        self.during.push(s);
        Ok(stop)
    }
}

/// Encodes cases, naming the first bad row; an empty list is an error.
pub fn encode_all(
    model: &dyn TrainableModel,
    cases: &[Case],
    max_seq_len: usize,
    what: &str,
) -> Result<Vec<Example>, TrainError> {
    if cases.is_empty() {
        return Err(TrainError::NoData(format!("the {what} files hold no rows")));
    }
    cases.iter().map(|c| model.encode(c, max_seq_len)).collect()
}

fn progress(total: usize, start_at: usize) -> ProgressBar {
    let pb = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_position(start_at as u64);
    pb
}

/// Runs the whole training on the loaded `train_cases`, evaluating on `val` (capped by
/// `eval_max_samples`); `show_progress` draws the bar.
pub fn train(
    cfg: &TrainConfig,
    model: &mut dyn TrainableModel,
    train_cases: &[Case],
    val: Validation,
    show_progress: bool,
) -> Result<RunReport, TrainError> {
    let run_dir = cfg.output_dir.as_path();
    std::fs::create_dir_all(run_dir).map_err(TrainError::io(run_dir))?;
    let mut examples = encode_all(&*model, train_cases, cfg.max_seq_len, "training")?;
    if cfg.max_train_samples > 0 {
        examples.truncate(cfg.max_train_samples);
    }
    let val = val.limit(cfg.eval_max_samples, cfg.eval_max_new_tokens);
    // The loss is measured on the validation cases that have a reference answer.
    let val_examples: Vec<Example> = val
        .cases()
        .into_iter()
        .filter(|c| c.reference.is_some())
        .map(|c| model.encode(c, cfg.max_seq_len))
        .collect::<Result<_, _>>()?;
    let has_val = !val.is_empty();
    let objective = Objective::parse(&cfg.metric).map_err(|reason| TrainError::Config {
        field: "metric",
        reason,
    })?;
    let mut evals = Evaluations {
        val: &val,
        examples: val_examples,
        objective,
        run_dir,
        progress: show_progress,
        seconds: 0.0,
        during: Vec::new(),
    };

    let adapter_cfg = cfg.adapter_config();
    let varmap = VarMap::new();
    let mut init_rng = LoraRng::new(cfg.seed);
    let modules = model.attach_trainable(&adapter_cfg, &varmap, &mut init_rng)?;
    let vars = named_vars(&varmap);
    let trainable_params: usize = vars.values().map(|v| v.elem_count()).sum();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWParams::new(cfg.learning_rate, cfg.weight_decay),
    )?;

    let lengths: Vec<usize> = examples.iter().map(Example::len).collect();
    let n_batches = lengths.len().div_ceil(cfg.batch_size);
    let steps_per_epoch = n_batches.div_ceil(cfg.grad_accum);
    let total = if cfg.max_steps > 0 {
        cfg.max_steps
    } else {
        cfg.epochs * steps_per_epoch
    };
    let n_epochs = total.div_ceil(steps_per_epoch);
    let warmup = warmup_steps(total, cfg.warmup_ratio);

    let mut state = TrainerState::default();
    let mut resumed_from_step = None;
    if cfg.resume {
        if let Some((adapter, opt_path, saved)) = load_last(run_dir)? {
            load_into_vars(&adapter, &vars, run_dir)?;
            opt.load(&opt_path, saved.step)?;
            resumed_from_step = Some(saved.step);
            state = saved;
        }
    }
    let before_path = evals.summary_path("before");
    let before = if cfg.eval_before && has_val {
        if resumed_from_step.is_some() && before_path.is_file() {
            std::fs::read_to_string(&before_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        } else {
            Some(evals.run(&*model, "before", 0)?)
        }
    } else {
        None
    };

    let pb = if show_progress {
        progress(total, state.step)
    } else {
        ProgressBar::hidden()
    };
    let save_best = || -> Result<(), TrainError> {
        Ok(adapter_from_vars(&adapter_cfg, &vars)?.save(&run_dir.join("best"))?)
    };
    let started = Instant::now() - std::time::Duration::from_secs_f64(state.train_seconds);
    // Evaluations inside the loop are not training time; the "before" one ran before `started`.
    let mut eval_in_loop = 0.0;
    let mut epoch = state.epoch;
    'epochs: while epoch < n_epochs && state.step < total && !state.stopped_early {
        let order = epoch_batches(&lengths, cfg.batch_size, cfg.seed, epoch);
        for (gi, group) in order
            .chunks(cfg.grad_accum)
            .enumerate()
            .skip(state.group_in_epoch)
        {
            if state.step >= total {
                break 'epochs;
            }
            let lr = lr_at(cfg.schedule, cfg.learning_rate, state.step, total, warmup);
            opt.set_lr(lr);
            let plans: Vec<_> = group
                .iter()
                .map(|b| {
                    plan(
                        &b.iter().map(|&i| &examples[i]).collect::<Vec<_>>(),
                        model.pad_id(),
                    )
                })
                .collect();
            let n_targets: usize = plans.iter().map(|p| p.targets.len()).sum();
            // Dropout masks depend only on (seed, step): a resumed run draws the same ones.
            let mut rng = LoraRng::new(
                cfg.seed
                    .wrapping_add(1)
                    .wrapping_mul(1_000_003)
                    .wrapping_add(state.step as u64),
            );
            let mut acc = GradAccumulator::default();
            let mut loss_sum = 0f64;
            let mut tokens = 0usize;
            let model_ref: &dyn TrainableModel = model;
            // On the CPU, inside candle's own thread pool: its matmuls and our fused kernels then
            // start without handing each job over from this thread (with `tune_allocator`, 12 % of
            // a SmolLM2 step's wall time).
            model_ref.device().with_context(|| {
                for p in &plans {
                    let batch = p.to_batch(model_ref.device())?;
                    let loss = (model_ref.loss_sum(&batch, &mut rng)? / n_targets.max(1) as f64)?;
                    loss_sum += loss.to_scalar::<f32>()? as f64;
                    acc.add(&vars, &loss.backward()?)?;
                    tokens += batch.n_tokens;
                }
                let loss = loss_sum as f32;
                if !loss.is_finite() {
                    return Err(TrainError::Diverged(loss, state.step));
                }
                acc.clip(cfg.max_grad_norm)?;
                opt.step(&acc)
            })?;
            let loss = loss_sum as f32;
            state.step += 1;
            state.group_in_epoch = gi + 1;
            state.losses.push((state.step, loss));
            state.tokens_seen += tokens;
            state.train_seconds = started.elapsed().as_secs_f64() - eval_in_loop;
            let tps = state.tokens_seen as f64 / state.train_seconds.max(1e-9);
            pb.set_position(state.step as u64);
            pb.set_message(format!(
                "epoch {} loss {loss:.4} lr {lr:.2e} {tps:.0} tok/s",
                epoch + 1
            ));
            if pb.is_hidden() && show_progress {
                eprintln!(
                    "step {}/{total} epoch {} loss {loss:.4} lr {lr:.2e} {tps:.0} tok/s",
                    state.step,
                    epoch + 1
                );
            }
            if cfg.save_every > 0 && state.step % cfg.save_every == 0 {
                save_last(
                    run_dir,
                    &adapter_from_vars(&adapter_cfg, &vars)?,
                    &opt,
                    &state,
                )?;
            }
            if has_val && cfg.eval_every > 0 && state.step % cfg.eval_every == 0 {
                let t = Instant::now();
                let label = format!("step-{}", state.step);
                let stop =
                    evals.during_training(&*model, &label, cfg, &mut state, &save_best, &pb)?;
                eval_in_loop += t.elapsed().as_secs_f64();
                if stop {
                    save_last(
                        run_dir,
                        &adapter_from_vars(&adapter_cfg, &vars)?,
                        &opt,
                        &state,
                    )?;
                    break 'epochs;
                }
            }
        }
        epoch += 1;
        state.epoch = epoch;
        state.group_in_epoch = 0;
        let evaluated_here = evals.during.last().is_some_and(|e| e.step == state.step);
        if cfg.eval_each_epoch && has_val && !evaluated_here {
            let t = Instant::now();
            let label = format!("epoch-{epoch}");
            // A stop here ends the epoch loop through `state.stopped_early`.
            evals.during_training(&*model, &label, cfg, &mut state, &save_best, &pb)?;
            eval_in_loop += t.elapsed().as_secs_f64();
        }
        save_last(
            run_dir,
            &adapter_from_vars(&adapter_cfg, &vars)?,
            &opt,
            &state,
        )?;
    }
    pb.finish_and_clear();
    // A run cut short by max_steps mid-epoch resumes from here.
    save_last(
        run_dir,
        &adapter_from_vars(&adapter_cfg, &vars)?,
        &opt,
        &state,
    )?;

    // As transformers' `load_best_model_at_end`: the final adapter is the best evaluated one.
    let best_dir = run_dir.join("best");
    if state.best_step.is_some_and(|b| b != state.step) && best_dir.is_dir() {
        let best = LoraAdapter::load(&best_dir, &Device::Cpu)?;
        load_into_vars(&best, &vars, &best_dir)?;
    }
    let adapter_dir = run_dir.join("adapter");
    let mut final_adapter = adapter_from_vars(&adapter_cfg, &vars)?;
    final_adapter.config.base_model_name_or_path = Some(cfg.base.clone());
    final_adapter.save(&adapter_dir)?;
    if cfg.save_merged {
        let merged_dir = run_dir.join("merged");
        save_merged(&merged_dir, &model.merged_state_dict()?)?;
        for f in model.merged_files() {
            if let Some(name) = f.file_name() {
                std::fs::copy(&f, merged_dir.join(name)).map_err(TrainError::io(&f))?;
            }
        }
    }
    let final_step = state.best_step.unwrap_or(state.step);
    let reusable = evals
        .during
        .iter()
        .rev()
        .find(|e| e.step == final_step)
        .cloned();
    let after = if let Some(mut s) = reusable {
        // The final adapter was already evaluated at its step: same weights, same answers.
        s.label = "after".into();
        evals.record(&s, &*model)?;
        Some(s)
    } else if has_val {
        Some(evals.run(&*model, "after", final_step)?)
    } else {
        None
    };
    let steps_run = state.step - resumed_from_step.unwrap_or(0);
    let meta = RunMetadata {
        config: cfg,
        base_model: model.label(),
        seed: cfg.seed,
        train_rows: examples.len(),
        train_tokens: lengths.iter().sum(),
        train_target_tokens: examples.iter().map(|e| e.target.len()).sum(),
        val_rows: val.cases().len(),
        adapted_modules: modules.len(),
        trainable_params,
        total_steps: total,
        steps_done: state.step,
        stopped_early: state.stopped_early,
        best_step: state.best_step,
        resumed_from_step,
        train_seconds: state.train_seconds,
        seconds_per_step: state.train_seconds / steps_run.max(1) as f64,
        tokens_per_second: state.tokens_seen as f64 / state.train_seconds.max(1e-9),
        eval_seconds: evals.seconds,
        final_loss: state.losses.last().map(|l| l.1),
        metric: &cfg.metric,
        best_metric: state.best_metric,
        before: before.as_ref().map(headline),
        after: after.as_ref().map(headline),
        evals: evals.during.iter().map(headline).collect(),
        threads: candle_core::utils::get_num_threads(),
        vlmtest_version: env!("CARGO_PKG_VERSION"),
    };
    save_json(&run_dir.join("run_metadata.json"), &meta)?;
    Ok(RunReport {
        before,
        after,
        evals: evals.during.clone(),
        state,
        adapter_dir,
        adapted_modules: modules.len(),
        trainable_params,
        total_steps: total,
        resumed_from_step,
    })
}

/// The before/after table, or a note when one side is missing.
pub fn summary_table(report: &RunReport) -> String {
    match (&report.before, &report.after) {
        (Some(b), Some(a)) => side_by_side(b, a),
        (None, Some(a)) => side_by_side(a, a),
        _ => "no validation rows: nothing evaluated\n".into(),
    }
}

/// The run folder's final adapter.
pub fn adapter_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("adapter")
}
