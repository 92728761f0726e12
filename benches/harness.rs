//! Harness overhead per case (10,000 cases answered by the replay model) and decode speed of the
//! default model. `cargo bench --bench harness`; criterion prints time per iteration and
//! throughput (cases/s, tokens/s).

use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vlmtest::case::{Message, Role};
use vlmtest::model::fetch::ensure_default_model;
use vlmtest::model::gguf::GgufModel;
use vlmtest::session::{Overrides, Session};

const CASES: usize = 10_000;

/// A project with CASES validation rows and a replay file answering all of them.
fn project(dir: &Path) {
    std::fs::create_dir_all(dir.join("cases")).expect("mkdir");
    let mut rows = String::new();
    let mut answers = String::new();
    for i in 0..CASES {
        let nm = 10 + i % 90;
        rows.push_str(&format!(
            "{{\"id\": \"row_{i}\", \"conversations\": [{{\"role\": \"user\", \"content\": \"Manual excerpt: bolt {i} takes {nm} Nm. What torque does bolt {i} need?\"}}, {{\"role\": \"assistant\", \"content\": \"Bolt {i} takes {nm} Nm.\"}}], \"metadata\": {{\"category\": \"torque\"}}}}\n"
        ));
        let said = if i % 3 == 0 { nm + 1 } else { nm };
        answers.push_str(&format!(
            "{{\"name\": \"bench::torque::row_{i}\", \"answer\": \"It needs {said} N·m.\"}}\n"
        ));
    }
    std::fs::write(dir.join("cases/bench.jsonl"), rows).expect("write");
    std::fs::write(dir.join("answers.jsonl"), answers).expect("write");
    std::fs::write(
        dir.join("vlmtest.toml"),
        "[model]\nspec = \"replay:answers.jsonl\"\n[suites.bench]\nrow_scorers = [\"numbers\", \"token_f1\"]\n",
    )
    .expect("write");
}

fn harness_overhead(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    project(dir.path());
    let mut group = c.benchmark_group("harness_10k_cases");
    group.sample_size(10);
    group.throughput(Throughput::Elements(CASES as u64));
    group.bench_function("load_suites", |b| {
        b.iter(|| Session::open(dir.path(), &Overrides::default()).expect("open"));
    });
    let session = Session::open(dir.path(), &Overrides::default()).expect("open");
    let cases: Vec<_> = session.suites.iter().flat_map(|s| &s.cases).collect();
    assert_eq!(cases.len(), CASES);
    // Fill the answer cache once; every later run of a suite reads it.
    let _ = session.evaluate(&cases, false);
    group.bench_function("evaluate_cached_and_score", |b| {
        b.iter(|| session.evaluate(&cases, false));
    });
    let eval = session.evaluate(&cases, false);
    group.bench_function("report", |b| {
        b.iter(|| session.report(&session.suites[0], &eval));
    });
    group.bench_function("evaluate_uncached_replay", |b| {
        b.iter_batched(
            || std::fs::remove_dir_all(dir.path().join("target")).ok(),
            |_| session.evaluate(&cases, false),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn default_model_decode(c: &mut Criterion) {
    let path = ensure_default_model().expect("default model");
    let mut model = GgufModel::load(&path).expect("load");
    let msgs = vec![
        Message::text(Role::System, "You are a service assistant."),
        Message::text(
            Role::User,
            "Write a short paragraph about checking the oil level of a car engine.",
        ),
    ];
    const NEW: usize = 32;
    let mut group = c.benchmark_group("smollm2_135m_q8_0");
    group.sample_size(10);
    group.throughput(Throughput::Elements(NEW as u64));
    group.bench_function("greedy_32_tokens", |b| {
        b.iter(|| {
            let a = model.generate_one(&msgs, NEW).expect("generate");
            assert_eq!(
                a.generated_tokens, NEW,
                "the prompt must not stop early: {}",
                a.text
            );
        });
    });
    let prompt = model.encode(&model.render_chat(&msgs)).expect("encode");
    group.throughput(Throughput::Elements(prompt.len() as u64));
    group.bench_function("prompt_prefill", |b| {
        b.iter(|| model.forward_logits(&prompt, 0).expect("prefill"))
    });
    group.finish();
}

criterion_group!(benches, harness_overhead, default_model_decode);
criterion_main!(benches);
