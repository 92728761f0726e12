//! Qwen3-VL on CPU with the tiny seeded fixture: preprocessing images/s, prompt (prefill)
//! tokens/s and decode tokens/s, single stream and batched.
//!
//! `cargo bench --bench qwen3_vl` (set `RAYON_NUM_THREADS` to pin the thread count).

use std::path::Path;

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vlmtest::case::{ImageSource, Message, Part, Role};
use vlmtest::image::{self, PreprocessorConfig};
use vlmtest::model::qwen3_vl::fixture::{self, Spec};
use vlmtest::model::qwen3_vl::{Prepared, Qwen3VlModel};

fn setup(dir: &Path) -> Qwen3VlModel {
    let ckpt = dir.join("tiny");
    fixture::write_checkpoint(&ckpt, &Spec::tiny(), 7, DType::F32).unwrap();
    Qwen3VlModel::load(&ckpt, None, &Device::Cpu).unwrap()
}

fn preprocessing(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("qwen3_vl_preprocess");
    // The real Qwen3-VL limits (up to 16M pixels) on a 640x480 photo-sized image.
    let cfg = PreprocessorConfig::from_json(
        r#"{"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2,
            "size": {"shortest_edge": 65536, "longest_edge": 16777216}}"#,
    )
    .unwrap();
    for (w, h) in [(640u32, 480u32), (64, 96)] {
        let path = dir.path().join(format!("{w}x{h}.png"));
        fixture::write_image(&path, w, h, 3).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        g.throughput(Throughput::Elements(1));
        g.bench_function(
            BenchmarkId::new("decode+preprocess", format!("{w}x{h}")),
            |b| {
                b.iter(|| {
                    let img = image::decode(&bytes, "bench").unwrap();
                    image::preprocess(&img, &cfg).unwrap()
                })
            },
        );
    }
    g.finish();
}

fn generation(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut m = setup(dir.path());
    let path = dir.path().join("img.png");
    fixture::write_image(&path, 64, 96, 5).unwrap();
    let msgs = vec![Message {
        role: Role::User,
        parts: vec![
            Part::Image {
                image: ImageSource::Path(path),
            },
            Part::Text {
                text: "Describe the picture, with as many details as you can see.".into(),
            },
        ],
    }];
    let p: Prepared = m.prepare(&msgs).unwrap();
    let mut g = c.benchmark_group("qwen3_vl_tiny");
    for batch in [1usize, 8] {
        let rows: Vec<&Prepared> = std::iter::repeat_n(&p, batch).collect();
        g.throughput(Throughput::Elements((p.ids.len() * batch) as u64));
        g.bench_function(BenchmarkId::new("prompt_tokens", batch), |b| {
            b.iter(|| m.network().generate(&rows, 1, &[], 0).unwrap())
        });
        // 33 tokens = prefill + 32 decode steps; decode tokens/s = 32·batch / (t33 - t1).
        g.throughput(Throughput::Elements((32 * batch) as u64));
        g.bench_function(
            BenchmarkId::new("prefill_plus_32_decode_tokens", batch),
            |b| b.iter(|| m.network().generate(&rows, 33, &[], 0).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, preprocessing, generation);
criterion_main!(benches);
