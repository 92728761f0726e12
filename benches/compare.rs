//! `vlmtest compare` on 10,000 paired cases with 2,000 paired-bootstrap resamples (the goal: under
//! 1 s on one core): a suite scored by two plain scorers (pass rate, scorer means, category rates,
//! McNemar), and a spam suite whose every task metric (macro F1, AUPRC, ECE, …) is recomputed on
//! every resample. `RAYON_NUM_THREADS=1 cargo bench --bench compare`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use vlmtest::compare::{compare_suite, Options};
use vlmtest::model::Answer;
use vlmtest::report::{Report, Tally};
use vlmtest::score::Score;
use vlmtest::verdict::Verdict;

const CASES: usize = 10_000;

fn verdict(i: usize, side: u64, spam: bool) -> Verdict {
    // A cheap deterministic hash, so the two sides disagree on some cases.
    let h =
        (i as u64 ^ side.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (h >> 11) as f64 / (1u64 << 53) as f64;
    let label = i.is_multiple_of(3);
    let mut scores = vec![
        Score::scored("numeric", x, 0.3, String::new()),
        Score::scored("token_f1", (x * 7.0).fract(), 0.2, String::new()),
    ];
    if spam {
        let text = json!({"is_spam": x > 0.5, "confidence": x, "reason": ""}).to_string();
        scores.push(vlmtest::task::score(
            "spam",
            &json!({"label": u8::from(label)}),
            &text,
        ));
    }
    Verdict {
        name: format!("bench::c{}::case_{i}", i % 7),
        category: format!("c{}", i % 7),
        tags: Vec::new(),
        passed: scores.iter().all(|s| s.passed),
        answer: Some(Answer {
            text: String::new(),
            prompt_tokens: 0,
            generated_tokens: 0,
            elapsed: Duration::ZERO,
        }),
        model_error: None,
        scores,
    }
}

fn report(side: u64, spam: bool) -> Report {
    let verdicts: Vec<Verdict> = (0..CASES).map(|i| verdict(i, side, spam)).collect();
    Report {
        suite: "bench".into(),
        model: format!("m{side}"),
        overall: Tally::default(),
        failed: 0,
        model_errors: 0,
        scorer_errors: 0,
        scorers: Default::default(),
        categories: Default::default(),
        slices: Default::default(),
        tasks: Default::default(),
        gates: Vec::new(),
        judge: None,
        baseline: None,
        load_errors: Vec::new(),
        verdicts,
    }
}

fn compare_10k(c: &mut Criterion) {
    let mut group = c.benchmark_group("compare_10k_paired_2000_resamples");
    group.sample_size(10);
    group.throughput(Throughput::Elements(CASES as u64));
    for (name, spam) in [("two_scorers", false), ("spam_task_metrics", true)] {
        let (a, b) = (report(1, spam), report(2, spam));
        group.bench_function(name, |bench| {
            bench.iter(|| compare_suite(&a, &b, Options::default()).expect("compare"));
        });
    }
    group.finish();
}

criterion_group!(benches, compare_10k);
criterion_main!(benches);
