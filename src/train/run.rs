//! The training loop: evaluate before, train with AdamW (accumulation, clipping, schedule), evaluate
//! after each epoch (best checkpoint, early stopping), evaluate after, and write the adapter, the
//! summaries and `run_metadata.json`.

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
use super::eval::{improves, side_by_side, summarise, EvalSummary};
use super::model::TrainableModel;
use super::optim::{AdamW, AdamWParams, GradAccumulator};
use super::schedule::{lr_at, warmup_steps};
use super::TrainError;
use crate::case::Case;
use crate::lora::{LoraAdapter, LoraRng};

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub before: Option<EvalSummary>,
    pub after: Option<EvalSummary>,
    pub epochs: Vec<EvalSummary>,
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
    before: Option<Headline>,
    after: Option<Headline>,
    epochs: Vec<Headline>,
    threads: usize,
    vlmtest_version: &'static str,
}

#[derive(Serialize)]
struct Headline {
    label: String,
    step: usize,
    metrics: std::collections::BTreeMap<&'static str, f64>,
}

fn headline(s: &EvalSummary) -> Headline {
    Headline {
        label: s.label.clone(),
        step: s.step,
        metrics: s.headline().into_iter().collect(),
    }
}

/// Generates on `cases` and scores the answers; adds the teacher-forced validation loss.
pub fn evaluate(
    model: &dyn TrainableModel,
    label: &str,
    step: usize,
    cases: &[&Case],
    val_examples: &[Example],
    max_new_tokens: usize,
) -> Result<EvalSummary, TrainError> {
    let start = Instant::now();
    let mut snap = model.snapshot()?;
    let mut answers = Vec::with_capacity(cases.len());
    let options = crate::model::GenerationOptions { max_new_tokens };
    for c in cases {
        let req = crate::model::Request {
            name: c.id.test_name(),
            messages: &c.messages,
        };
        for a in snap.generate(&[req], &options) {
            answers.push(a?.text);
        }
    }
    drop(snap);
    let mut summary = summarise(label, step, cases, &answers, start);
    if !val_examples.is_empty() {
        let mut rng = LoraRng::new(0);
        let (mut sum, mut n) = (0f64, 0usize);
        for chunk in val_examples.chunks(4) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let b = plan(&refs, model.pad_id()).to_batch(model.device())?;
            sum += model.loss_sum(&b, &mut rng)?.detach().to_scalar::<f32>()? as f64;
            n += b.n_targets;
        }
        summary.val_loss = Some(sum / n.max(1) as f64);
    }
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
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

/// Runs the whole training. `train`/`val` are the loaded rows; `show_progress` draws the bar.
pub fn train(
    cfg: &TrainConfig,
    model: &mut dyn TrainableModel,
    train_cases: &[Case],
    val_cases: &[Case],
    show_progress: bool,
) -> Result<RunReport, TrainError> {
    let run_dir = cfg.output_dir.as_path();
    std::fs::create_dir_all(run_dir).map_err(TrainError::io(run_dir))?;
    let mut examples = encode_all(&*model, train_cases, cfg.max_seq_len, "training")?;
    if cfg.max_train_samples > 0 {
        examples.truncate(cfg.max_train_samples);
    }
    let val: Vec<&Case> = val_cases
        .iter()
        .take(if cfg.eval_max_samples > 0 {
            cfg.eval_max_samples
        } else {
            usize::MAX
        })
        .collect();
    let val_examples: Vec<Example> = val
        .iter()
        .map(|c| model.encode(c, cfg.max_seq_len))
        .collect::<Result<_, _>>()?;

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
    let mut eval_seconds = 0.0;
    let before_path = run_dir.join("prebench_before_training_summary.json");
    let before = if cfg.eval_before && !val.is_empty() {
        if resumed_from_step.is_some() && before_path.is_file() {
            std::fs::read_to_string(&before_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        } else {
            let s = evaluate(
                &*model,
                "before",
                0,
                &val,
                &val_examples,
                cfg.eval_max_new_tokens,
            )?;
            eval_seconds += s.seconds;
            save_json(&before_path, &s)?;
            Some(s)
        }
    } else {
        None
    };

    let pb = if show_progress {
        progress(total, state.step)
    } else {
        ProgressBar::hidden()
    };
    let mut epochs_evals: Vec<EvalSummary> = Vec::new();
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
        }
        epoch += 1;
        state.epoch = epoch;
        state.group_in_epoch = 0;
        if cfg.eval_each_epoch && !val.is_empty() {
            let s = evaluate(
                &*model,
                &format!("epoch-{epoch}"),
                state.step,
                &val,
                &val_examples,
                cfg.eval_max_new_tokens,
            )?;
            eval_seconds += s.seconds;
            eval_in_loop += s.seconds;
            save_json(
                &run_dir.join(format!("eval_epoch_{epoch}_summary.json")),
                &s,
            )?;
            let value = s.metric(cfg.metric).or(s.val_loss).unwrap_or(s.score);
            pb.println(format!("epoch {epoch}: {:?} = {value:.4}", cfg.metric));
            if improves(cfg.metric, value, state.best_metric) {
                state.best_metric = Some(value);
                state.best_step = Some(state.step);
                state.bad_evals = 0;
                adapter_from_vars(&adapter_cfg, &vars)?.save(&run_dir.join("best"))?;
            } else {
                state.bad_evals += 1;
                if cfg.patience > 0 && state.bad_evals >= cfg.patience {
                    state.stopped_early = true;
                    pb.println(format!(
                        "early stop: no improvement in {} evaluations",
                        state.bad_evals
                    ));
                }
            }
            epochs_evals.push(s);
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
    let reusable = epochs_evals
        .iter()
        .rev()
        .find(|e| e.step == final_step)
        .cloned();
    let after = if let Some(mut s) = reusable {
        // The final adapter was already evaluated after its epoch: same weights, same answers.
        s.label = "after".into();
        save_json(&run_dir.join("prebench_after_training_summary.json"), &s)?;
        Some(s)
    } else if !val.is_empty() {
        let s = evaluate(
            &*model,
            "after",
            state.best_step.unwrap_or(state.step),
            &val,
            &val_examples,
            cfg.eval_max_new_tokens,
        )?;
        eval_seconds += s.seconds;
        save_json(&run_dir.join("prebench_after_training_summary.json"), &s)?;
        Some(s)
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
        val_rows: val.len(),
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
        eval_seconds,
        final_loss: state.losses.last().map(|l| l.1),
        before: before.as_ref().map(headline),
        after: after.as_ref().map(headline),
        epochs: epochs_evals.iter().map(headline).collect(),
        threads: candle_core::utils::get_num_threads(),
        vlmtest_version: env!("CARGO_PKG_VERSION"),
    };
    save_json(&run_dir.join("run_metadata.json"), &meta)?;
    Ok(RunReport {
        before,
        after,
        epochs: epochs_evals,
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
