//! Render time and size of the HTML report for the example suites and for a synthetic run of
//! many cases (issue 14's budget: 10,000 cases in under 2 s of CPU and under 50 MB).
//!
//!     cargo run --release --example html_scale -- [CASES] [--distinct-images]
//!
//! The synthetic run repeats the replay-backed example suites' cases and verdicts under new
//! names until it has CASES of them (default 10,000). Their images repeat too, so the page
//! embeds each once; `--distinct-images` gives every image-bearing case its own freshly written
//! 256×192 JPEG instead (written before the clock starts), the worst case for thumbnails.

use std::path::Path;
use std::time::Instant;

use vlmtest::case::{Case, CaseId, ImageSource, Part};
use vlmtest::report::html::{self, HtmlMeta};
use vlmtest::report::Report;
use vlmtest::session::{Overrides, Session};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn measure(label: &str, reports: &[Report], meta: &HtmlMeta) {
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let page = html::render(reports, meta);
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let cases: usize = reports.iter().map(|r| r.verdicts.len()).sum();
    println!(
        "{label}: {cases} cases, {:.2} MB, render {wall:.3} s wall, {cpu:.3} s CPU",
        page.len() as f64 / 1e6
    );
    if let Ok(path) = std::env::var("HTML_SCALE_OUT") {
        std::fs::write(format!("{path}-{cases}.html"), &page).expect("write the page");
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let distinct = args.iter().any(|a| a == "--distinct-images");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let session = Session::open(root, &Overrides::default())?;
    let suites: Vec<_> = session
        .suites
        .iter()
        .filter(|s| {
            session
                .config
                .model_spec_for(&s.name)
                .starts_with("replay:")
        })
        .collect();
    let cases: Vec<&Case> = suites
        .iter()
        .flat_map(|s| &s.cases)
        .filter(|c| !c.ignored)
        .collect();
    let eval = session.evaluate(&cases, false);
    let reports: Vec<Report> = suites.iter().map(|s| session.report(s, &eval)).collect();
    let meta = HtmlMeta::default().with_cases(cases.iter().copied());
    measure("example suites", &reports, &meta);

    // The synthetic run: one suite per example suite, each grown by copies in proportion.
    let total: usize = reports.iter().map(|r| r.verdicts.len()).sum();
    let dir = tempfile::tempdir()?;
    let mut big_reports = Vec::new();
    let mut big_cases: Vec<Case> = Vec::new();
    let mut image_no = 0usize;
    for r in &reports {
        let want = n * r.verdicts.len() / total;
        let mut big = r.clone();
        big.verdicts.clear();
        for i in 0..want {
            let mut v = r.verdicts[i % r.verdicts.len()].clone();
            let mut c = (*cases
                .iter()
                .find(|c| c.id.test_name() == v.name)
                .expect("case"))
            .clone();
            c.id = CaseId::new(&c.id.suite, &c.id.category, &format!("{}_{i}", c.id.id));
            v.name = c.id.test_name();
            if distinct && c.has_images() {
                let path = dir.path().join(format!("{image_no}.jpg"));
                let img = image::RgbImage::from_fn(256, 192, |x, y| {
                    image::Rgb([
                        (x + image_no as u32) as u8,
                        (y * 3) as u8,
                        (image_no * 7) as u8,
                    ])
                });
                img.save(&path)?;
                image_no += 1;
                for m in &mut c.messages {
                    for p in &mut m.parts {
                        if let Part::Image { image } = p {
                            *image = ImageSource::Path(path.clone());
                        }
                    }
                }
            }
            big.verdicts.push(v);
            big_cases.push(c);
        }
        big_reports.push(big);
    }
    let meta = HtmlMeta::default().with_cases(&big_cases);
    let label = if distinct {
        format!("synthetic, {image_no} distinct images")
    } else {
        "synthetic, example images repeated".to_owned()
    };
    measure(&label, &big_reports, &meta);
    Ok(())
}
