//! The custom libtest harness: every case is a trial named `suite::category::id`, and every suite
//! has a `suite::report` trial that checks its gates and its insta snapshot.
//!
//! Filter first, then infer, then assert: the libtest arguments select trials before any model
//! is touched; the selected cases are answered in one batched pass (from the answer cache when
//! possible); each trial then only reports its precomputed verdict. Under `--exact` (how nextest
//! runs one test per process) the whole suite of the named test is answered, so the first process
//! fills the cache and later ones find their answers there.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use libtest_mimic::{Arguments, Completion, Conclusion, Failed, Trial};

use crate::case::Case;
use crate::config::project_root;
use crate::report::{self, snapshot, table};
use crate::session::{Overrides, Session};

/// The name of a suite's aggregate trial.
pub fn report_trial_name(suite: &str) -> String {
    format!("{suite}::report")
}

/// The name of a suite's baseline-comparison trial (suites with `[suites.<name>.baseline]`).
pub fn compare_trial_name(suite: &str) -> String {
    format!("{suite}::compare")
}

/// The name of the trial that reports a suite's loading errors.
pub fn load_trial_name(suite: &str) -> String {
    format!("{suite}::load")
}

/// The suites whose report would run while `--skip` leaves out some of their cases: a report
/// needs every case, so it is ignored (with the reason) and the skipped cases are not answered.
/// A case is skipped when it would run without the `--skip` patterns and does not with them
/// (libtest's own matching decides both).
fn partly_skipped(args: &Arguments, session: &Session) -> BTreeSet<String> {
    let unskipped = Arguments {
        skip: Vec::new(),
        ..args.clone()
    };
    session
        .suites
        .iter()
        .filter(|s| {
            would_run(args, &report_trial_name(&s.name), false)
                && s.cases.iter().any(|c| {
                    let name = c.id.test_name();
                    !c.ignored
                        && would_run(&unskipped, &name, false)
                        && !would_run(args, &name, false)
                })
        })
        .map(|s| s.name.clone())
        .collect()
}

fn would_run(args: &Arguments, name: &str, ignored: bool) -> bool {
    let probe = Trial::test(name, || Ok(())).with_ignored_flag(ignored);
    !args.is_filtered_out(&probe) && (!args.is_ignored(&probe) || args.include_ignored)
}

/// Runs the harness with the process's arguments; returns the libtest conclusion.
pub fn run_from_env() -> Conclusion {
    crate::model::gguf::pin_portable_kernels();
    let args = Arguments::from_args();
    let root = project_root();
    if !crate::config::env::is_set(&crate::config::env::INSTA_WORKSPACE_ROOT) {
        // Snapshots live in the project under test, not in vlmtest's own source folder. No other
        // thread exists yet, so changing the environment is safe here.
        std::env::set_var("INSTA_WORKSPACE_ROOT", &root);
    }
    run_in(&root, &args)
}

/// Runs the harness on the project at `root`.
pub fn run_in(root: &Path, args: &Arguments) -> Conclusion {
    let root = root.to_path_buf();
    let session = match Session::open(&root, &Overrides::default()) {
        Ok(s) => s,
        Err(e) => {
            // The whole chain, once, in the one trial that fails.
            let msg = format!("{:#}", anyhow::Error::new(e));
            return libtest_mimic::run(
                args,
                vec![Trial::test("vlmtest::config", move || {
                    Err(Failed::from(msg))
                })],
            );
        }
    };
    if args.list {
        return libtest_mimic::run(args, skeleton(&session));
    }
    for w in &session.config.warnings {
        eprintln!("vlmtest: warning: {w}");
    }

    // Select: cases whose trial would run, plus every case of a suite whose report would run
    // (unless `--skip` leaves out some of its cases: then only the cases that run).
    let partial = partly_skipped(args, &session);
    let mut selected: BTreeSet<String> = BTreeSet::new();
    for suite in &session.suites {
        let has_baseline = session.config.suite(&suite.name).baseline.is_some();
        let whole = !partial.contains(&suite.name)
            && (would_run(args, &report_trial_name(&suite.name), false)
                || (has_baseline && would_run(args, &compare_trial_name(&suite.name), false))
                || (args.exact
                    && suite
                        .cases
                        .iter()
                        .any(|c| would_run(args, &c.id.test_name(), c.ignored))));
        for c in &suite.cases {
            let take = would_run(args, &c.id.test_name(), c.ignored) || (whole && !c.ignored);
            if take {
                selected.insert(c.id.test_name());
            }
        }
    }
    let cases: Vec<&Case> = session
        .suites
        .iter()
        .flat_map(|s| &s.cases)
        .filter(|c| selected.contains(&c.id.test_name()))
        .collect();
    let eval = Arc::new(session.evaluate(&cases, !args.quiet));

    // Known failures of the accepted baseline are reported as ignored unless VLMTEST_STRICT=1.
    let strict = session.config.strict;
    let mut trials = Vec::new();
    let mut reports = Vec::new();
    for suite in &session.suites {
        if !suite.errors.is_empty() {
            let msg = suite
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            trials.push(Trial::test(load_trial_name(&suite.name), move || {
                Err(Failed::from(msg))
            }));
        }
        if suite.cases.is_empty() && suite.errors.is_empty() {
            let name = suite.name.clone();
            trials.push(Trial::test(report_trial_name(&suite.name), move || {
                Err(Failed::from(format!(
                    "suite `{name}` has no cases: an empty suite is an error, not a pass"
                )))
            }));
            continue;
        }
        let label = eval
            .model_labels
            .get(&suite.name)
            .cloned()
            .unwrap_or_default();
        let known = snapshot::known_failures(&root, &suite.name, &label).unwrap_or_default();
        for c in &suite.cases {
            let name = c.id.test_name();
            let verdict = eval.verdicts.get(&name).cloned();
            let is_known = known.contains(&name);
            let case = c.clone();
            trials.push(
                Trial::ignorable_test(name, move || match verdict {
                    Some(v) if v.passed => Ok(Completion::Completed),
                    Some(v)
                        if is_known
                            && !strict
                            && v.model_error.is_none()
                            && !v.has_scorer_error() =>
                    {
                        Ok(Completion::ignored_with(format!(
                            "known failure (accepted baseline): {}",
                            v.short_reason()
                        )))
                    }
                    Some(v) => Err(Failed::from(v.explain(&case))),
                    None => Err(Failed::from("not evaluated")),
                })
                .with_ignored_flag(c.ignored),
            );
        }
        let report_name = report_trial_name(&suite.name);
        let compare_name = compare_trial_name(&suite.name);
        let has_baseline = session.config.suite(&suite.name).baseline.is_some();
        if partial.contains(&suite.name) {
            let why = "--skip leaves out some of this suite's cases; its report and gates need all of them";
            trials.push(Trial::ignorable_test(report_name, move || {
                Ok(Completion::ignored_with(why))
            }));
            if has_baseline {
                trials.push(Trial::ignorable_test(compare_name, move || {
                    Ok(Completion::ignored_with(why))
                }));
            }
            continue;
        }
        let wants_compare = has_baseline && would_run(args, &compare_name, false);
        if would_run(args, &report_name, false) || wants_compare {
            let report = session.report(suite, &eval);
            if has_baseline {
                let check = report.baseline.clone();
                trials.push(Trial::test(compare_name, move || match check {
                    Some(b) if b.passed => Ok(()),
                    Some(b) => Err(Failed::from(baseline_failure(&b))),
                    None => Err(Failed::from("the baseline check did not run")),
                }));
            }
            let out_dir = report::output_dir(&root);
            if let Err(e) = report::write_json(&out_dir, &report) {
                eprintln!("vlmtest: could not write the report of {}: {e}", suite.name);
            }
            reports.push(report.clone());
            let project = root.clone();
            trials.push(Trial::test(report_name, move || {
                let failed: Vec<String> = report
                    .gates
                    .iter()
                    .filter(|g| !g.passed)
                    .map(|g| format!("gate {} = {}", g.name, g.failure()))
                    .collect();
                if !failed.is_empty() {
                    return Err(Failed::from(failed.join("\n")));
                }
                snapshot::assert_matches(&project, &report);
                Ok(())
            }));
        } else {
            trials.push(Trial::test(report_name, || Ok(())));
            if has_baseline {
                trials.push(Trial::test(compare_name, || Ok(())));
            }
        }
    }
    let conclusion = libtest_mimic::run(args, trials);
    if !reports.is_empty() && !args.quiet {
        let gen = &eval.stats;
        println!("\n{}", table::summary(&reports));
        println!(
            "answers: {} from cache, {} generated, {} failed",
            gen.from_cache, gen.generated, gen.failed
        );
    }
    conclusion
}

/// What a failed `suite::compare` trial prints: the broken rules, then the comparison table.
fn baseline_failure(b: &crate::compare::BaselineCheck) -> String {
    let mut out = format!("baseline {} failed its rules:\n", b.baseline);
    if let Some(e) = &b.error {
        out.push_str(&format!("  {e}\n"));
    }
    for r in b.rules.iter().filter(|r| !r.passed) {
        out.push_str(&format!("  {}: {}\n", r.rule, r.detail));
    }
    if let Some(c) = &b.comparison {
        let cmp = crate::compare::Comparison {
            sides: crate::compare::Sides {
                a: format!("baseline {}", b.baseline),
                b: "this run".into(),
            },
            suites: vec![c.clone()],
            unmatched_suites: Vec::new(),
        };
        out.push('\n');
        out.push_str(&crate::compare::render::table(&cmp));
    }
    out
}

/// Trials with names only, for `--list` (reads suite files, never the model).
fn skeleton(session: &Session) -> Vec<Trial> {
    let mut trials = Vec::new();
    for suite in &session.suites {
        if !suite.errors.is_empty() {
            trials.push(Trial::test(load_trial_name(&suite.name), || Ok(())));
        }
        for c in &suite.cases {
            trials.push(Trial::test(c.id.test_name(), || Ok(())).with_ignored_flag(c.ignored));
        }
        trials.push(Trial::test(report_trial_name(&suite.name), || Ok(())));
        if session.config.suite(&suite.name).baseline.is_some() {
            trials.push(Trial::test(compare_trial_name(&suite.name), || Ok(())));
        }
    }
    trials
}
