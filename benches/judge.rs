//! Judge pipeline throughput against a local OpenAI-compatible stub with a fixed 100 ms latency.
//!
//! `cargo bench --bench judge` prints one table: live runs of N judge calls at concurrency 32
//! and 64 (wall time against the ideal N × latency ÷ concurrency, client CPU per case) and warm
//! cache re-runs (runner construction + cache load + scoring, no HTTP). The stub runs in a child
//! process (this binary re-executed with `--stub`), so the CPU figures are the client's alone.
//! `VLMTEST_BENCH_CALLS` overrides N (default 1000).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vlmtest::case::{Case, CaseId, Message, Origin, Role};
use vlmtest::judge::stub::{StubConfig, StubServer};
use vlmtest::judge::{JudgeItem, JudgeRunner, JudgeSettings};

const LATENCY: Duration = Duration::from_millis(100);

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass; RUSAGE_SELF is always valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn run_stub() {
    let config = StubConfig {
        latency: LATENCY,
        lifetime: Duration::from_secs(1800),
        ..StubConfig::default()
    };
    let server = StubServer::start(config).expect("stub");
    println!("{}", server.url());
    // Serve until the parent closes our stdin.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn cases(n: usize, salt: &str) -> (Vec<Case>, Vec<String>) {
    let cs = (0..n)
        .map(|i| Case {
            id: CaseId::new("bench", "judge", &format!("c{i}")),
            tags: vec![],
            messages: vec![Message::text(
                Role::User,
                format!("What is the torque for bolt {i} ({salt})?"),
            )],
            reference: Some(format!("{} Nm", 20 + i % 50)),
            context: None,
            expect: vec![],
            metadata: BTreeMap::new(),
            ignored: false,
            origin: Origin {
                file: PathBuf::from("bench"),
                line: Some(i),
            },
        })
        .collect();
    let answers = (0..n)
        .map(|i| format!("Tighten it to {} Nm.", 20 + i % 47))
        .collect();
    (cs, answers)
}

fn main() {
    if std::env::args().any(|a| a == "--stub") {
        return run_stub();
    }
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists benchmarks; we have one, not a test.
        return;
    }
    let n: usize = std::env::var("VLMTEST_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe)
        .arg("--stub")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn stub");
    let mut url = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut url)
        .expect("stub url");
    let url = url.trim().to_owned();
    let judges = Path::new(env!("CARGO_MANIFEST_DIR")).join("judges");
    let tmp = tempfile::tempdir().expect("tmp");

    println!(
        "judge pipeline, stub latency {} ms, calls = cases × 1 rubric (correctness)",
        LATENCY.as_millis()
    );
    println!(
        "{:<28} {:>6} {:>11} {:>9} {:>8} {:>12}",
        "run", "cases", "wall (s)", "ideal (s)", "× ideal", "CPU/case (ms)"
    );
    for conc in [32usize, 64] {
        let (cs, ans) = cases(n, &format!("c{conc}"));
        let items: Vec<JudgeItem<'_>> = cs
            .iter()
            .zip(&ans)
            .map(|(c, a)| JudgeItem {
                case: c,
                answer: a,
                rubric: "correctness",
                threshold: None,
            })
            .collect();
        let settings = JudgeSettings {
            url: url.clone(),
            model: "stub".into(),
            concurrency: conc,
            ..JudgeSettings::default()
        };
        let cache_dir = tmp.path().join(format!("c{conc}"));
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let runner = JudgeRunner::new(settings.clone(), &judges, &cache_dir).expect("runner");
        let scores = runner.score(&items);
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let st = runner.stats();
        assert_eq!(st.errors, 0, "{st:?}");
        assert_eq!(scores.len(), n);
        let ideal = n as f64 * LATENCY.as_secs_f64() / conc as f64;
        println!(
            "{:<28} {:>6} {:>11.3} {:>9.3} {:>8.2} {:>12.3}",
            format!("live, concurrency {conc}"),
            n,
            wall,
            ideal,
            wall / ideal,
            cpu * 1e3 / n as f64
        );
        drop(runner);
        for m in [n, n / 2] {
            let cpu0 = cpu_seconds();
            let t0 = Instant::now();
            let runner = JudgeRunner::new(settings.clone(), &judges, &cache_dir).expect("runner");
            let again = runner.score(&items[..m]);
            let wall = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            assert_eq!(runner.stats().http_calls, 0);
            assert_eq!(again.len(), m);
            println!(
                "{:<28} {:>6} {:>11.3} {:>9} {:>8} {:>12.3}",
                format!("cached re-run (c{conc} cache)"),
                m,
                wall,
                "-",
                "-",
                cpu * 1e3 / m as f64
            );
        }
    }
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"\n");
    }
    let _ = child.wait();
}
