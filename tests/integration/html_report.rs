//! The HTML report of the example suites answered by their recorded replays, checked as text and,
//! where Chromium is installed, in the browser: every case row exists, every image decodes, every
//! plot has marks, the filters change the visible rows, sorting orders by score, a click opens the
//! full image, and nothing logs an error or asks for the network.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vlmtest::case::Case;
use vlmtest::report::html::{self, HtmlMeta, Status};
use vlmtest::report::Report;
use vlmtest::session::{Overrides, Session};

/// The replay-backed suites of `vlmtest.toml`, evaluated and reported.
fn example_reports() -> (Vec<Report>, HtmlMeta, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let session = Session::open(root, &Overrides::default()).expect("the project loads");
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
    assert!(suites.len() >= 4, "the four task suites are replay-backed");
    let cases: Vec<&Case> = suites
        .iter()
        .flat_map(|s| &s.cases)
        .filter(|c| !c.ignored)
        .collect();
    let images = cases
        .iter()
        .flat_map(|c| &c.messages)
        .flat_map(|m| m.images())
        .count();
    let eval = session.evaluate(&cases, false);
    let reports: Vec<Report> = suites.iter().map(|s| session.report(s, &eval)).collect();
    let meta = HtmlMeta {
        run_id: Some("test-run".into()),
        ..HtmlMeta::default()
    }
    .with_cases(cases.iter().copied());
    (reports, meta, images)
}

#[test]
fn the_page_holds_every_case_image_and_plot_and_asks_for_no_network() {
    let (reports, meta, images) = example_reports();
    let page = html::render(&reports, &meta);
    let cases: usize = reports.iter().map(|r| r.verdicts.len()).sum();
    assert_eq!(page.matches("<article class=\"case ").count(), cases);
    assert!(
        page.matches("<img class=\"thumb\"").count() >= images,
        "every case image (and the gallery's) is embedded"
    );
    assert!(
        !page.contains("image could not be embedded"),
        "every example image reads"
    );
    for v in reports.iter().flat_map(|r| &r.verdicts) {
        assert!(
            page.contains(&*html::escape::escape(&v.name)),
            "{} is on the page",
            v.name
        );
    }
    // Plots: every one has marks.
    for svg in page.split("<svg class=\"plot").skip(1) {
        let body = &svg[..svg.find("</svg>").expect("closed")];
        assert!(
            body.contains("class=\"mark "),
            "a plot without marks: {}",
            &body[..body.len().min(200)]
        );
    }
    for plot in [
        "Reliability (ECE",
        "Threshold sweep",
        "Confusion: model",
        "Scene confusion",
        "SMAPE per case",
        "spam by image",
        "deal boxes",
    ] {
        assert!(page.contains(plot), "the page draws {plot}");
    }
    // No attribute points anywhere but this page or a data URI.
    let re = regex::Regex::new(r#"(?i)\s(src|href|action|poster)\s*=\s*"([^"]*)""#).unwrap();
    for cap in re.captures_iter(&page) {
        let url = &cap[2];
        assert!(
            url.starts_with("data:") || url.starts_with('#'),
            "external reference {url}"
        );
    }
    assert!(!page.contains("@import") && !page.contains("url(http"));
    assert!(page.contains("Content-Security-Policy"));
    assert!(page.contains("Gallery") && page.contains("False positives"));
}

/// Runs in the page before its own script: records errors and CSP violations, then on load
/// decodes every image, counts plot marks, drives the filters, sort and lightbox, and writes the
/// findings as JSON into `<pre id="vlmtest-check">` for `--dump-dom` to carry out.
const CHECK: &str = r##"<script>
window.__errs = [];
window.addEventListener("error", function (e) { __errs.push("error: " + e.message); });
window.addEventListener("securitypolicyviolation", function (e) { __errs.push("csp: " + e.blockedURI + " " + e.violatedDirective); });
var __ce = console.error;
console.error = function () { __errs.push("console: " + Array.prototype.join.call(arguments, " ")); __ce.apply(console, arguments); };
window.addEventListener("load", async function () {
  var out = {}, $ = function (id) { return document.getElementById(id); };
  var cards = Array.from(document.querySelectorAll("article.case"));
  var visible = function () { return cards.filter(function (c) { return !c.hidden; }).length; };
  var set = function (el, v, ev) { el.value = v; el.dispatchEvent(new Event(ev)); };
  out.names = cards.map(function (c) { return c.querySelector(".name").textContent; });
  var imgs = Array.from(document.querySelectorAll("img"));
  out.lazy = document.querySelectorAll("img[data-src]").length;
  out.loadedBeforeScroll = imgs.filter(function (i) { return i.getAttribute("src"); }).length;
  var last = imgs[imgs.length - 1];
  last.scrollIntoView();
  // Headless Chromium under a virtual-time budget renders no frames, so neither scroll events
  // nor IntersectionObserver callbacks arrive by themselves: send the scroll event the browser
  // would, and let the page's own handler decide what to load.
  window.dispatchEvent(new Event("scroll"));
  await new Promise(function (r) { setTimeout(r, 500); });
  out.loadedOnScroll = !!last.getAttribute("src");
  window.scrollTo(0, 0);
  imgs.forEach(function (i) { if (!i.getAttribute("src")) i.src = $(i.dataset.src).textContent.trim(); });
  await Promise.all(imgs.map(function (i) { return i.decode().catch(function () {}); }));
  out.images = imgs.length;
  out.decoded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var plots = Array.from(document.querySelectorAll("svg.plot"));
  out.plots = plots.length;
  out.plotsWithMarks = plots.filter(function (p) { return p.querySelector(".mark"); }).length;
  out.overlayImages = document.querySelectorAll(".overlay img").length;
  out.visibleAll = visible();
  set($("f-status"), "fail", "change"); out.visibleFail = visible();
  set($("f-status"), "pass", "change"); out.visiblePass = visible();
  set($("f-status"), "", "change");
  set($("f-slice"), "image=missing", "change"); out.visibleImageMissing = visible();
  set($("f-slice"), "", "change");
  set($("f-text"), out.names[0], "input"); out.visibleSearch = visible();
  set($("f-text"), "", "input");
  set($("f-sort"), "score-asc", "change");
  var scores = Array.from(document.querySelectorAll("article.case")).map(function (c) { return parseFloat(c.dataset.score); });
  out.sortedAsc = scores.every(function (s, i) { return i === 0 || scores[i - 1] <= s; });
  var thumb = document.querySelector("img.thumb[data-full]");
  thumb.click();
  var big = document.querySelector("#lightbox img");
  if (big) await big.decode().catch(function () {});
  out.lightboxOpen = !$("lightbox").hidden;
  out.lightboxDecoded = big ? big.naturalWidth : 0;
  out.errors = window.__errs;
  var pre = document.createElement("pre");
  pre.id = "vlmtest-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"##;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

fn headless(browser: &Path, args: &[&str]) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
        ])
        .args(args)
        .output()
        .expect("chromium runs")
}

#[test]
fn in_headless_chromium_every_row_image_and_plot_shows_and_the_filters_work() {
    let Some(browser) = chromium() else {
        println!("SKIPPED: no chromium on PATH (apt-get install chromium); the page was not opened in a browser");
        return;
    };
    let (reports, meta, _) = example_reports();
    let page = html::render(&reports, &meta);
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("report.html");
    std::fs::write(&plain, &page).unwrap();
    let checked = dir.path().join("checked.html");
    std::fs::write(
        &checked,
        page.replacen("<head>", &format!("<head>{CHECK}"), 1),
    )
    .unwrap();

    let url = format!("file://{}", checked.display());
    // On a loaded 2-core machine headless Chromium sometimes ends its virtual-time budget before
    // the page's script has run at all (no check element in the DOM, nothing asserted yet): run
    // the browser again, at most three times. A check that ran is asserted as it is.
    let mut out = headless(
        &browser,
        &["--virtual-time-budget=20000", "--dump-dom", &url],
    );
    for _ in 0..2 {
        if String::from_utf8_lossy(&out.stdout).contains("<pre id=\"vlmtest-check\">") {
            break;
        }
        out = headless(
            &browser,
            &["--virtual-time-budget=20000", "--dump-dom", &url],
        );
    }
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("<pre id=\"vlmtest-check\">").unwrap_or_else(|| {
        panic!(
            "the check did not run; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let json = &dom[start + 24..];
    let json = &json[..json.find("</pre>").unwrap()];
    let r: Value = serde_json::from_str(
        &json
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
    .unwrap();
    println!("browser check: {r}");

    let verdicts: Vec<_> = reports.iter().flat_map(|r| &r.verdicts).collect();
    let names: Vec<&str> = r["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        verdicts.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        "one row per case, in order"
    );
    assert!(r["images"].as_u64().unwrap() > 20);
    assert_eq!(r["decoded"], r["images"], "every image decoded");
    assert_eq!(r["lazy"], r["images"], "every image loads lazily");
    assert!(
        r["loadedBeforeScroll"].as_u64().unwrap() < r["images"].as_u64().unwrap(),
        "only the images near the viewport load at first"
    );
    assert_eq!(r["loadedOnScroll"], true, "scrolling to an image loads it");
    assert!(
        r["overlayImages"].as_u64().unwrap() >= 5,
        "each deals page under its boxes"
    );
    assert!(r["plots"].as_u64().unwrap() >= 8);
    assert_eq!(r["plotsWithMarks"], r["plots"]);
    let fails = verdicts
        .iter()
        .filter(|v| Status::of(v, false) == Status::Fail)
        .count();
    let passes = verdicts.iter().filter(|v| v.passed).count();
    assert_eq!(r["visibleAll"].as_u64().unwrap() as usize, verdicts.len());
    assert_eq!(r["visibleFail"].as_u64().unwrap() as usize, fails);
    assert_eq!(r["visiblePass"].as_u64().unwrap() as usize, passes);
    let missing = meta.cases.values().filter(|c| c.images.is_empty()).count();
    assert_eq!(r["visibleImageMissing"].as_u64().unwrap() as usize, missing);
    assert!(missing > 0 && missing < verdicts.len());
    assert_eq!(
        r["visibleSearch"], 1,
        "searching a full name finds one case"
    );
    assert_eq!(r["sortedAsc"], true);
    assert_eq!(r["lightboxOpen"], true);
    assert!(
        r["lightboxDecoded"].as_u64().unwrap() > 0,
        "the full image decodes"
    );
    assert_eq!(
        r["errors"],
        serde_json::json!([]),
        "no error, no blocked request"
    );

    let shot = dir.path().join("shot.png");
    let out = headless(
        &browser,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,2000",
            &format!("file://{}", plain.display()),
        ],
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a screenshot with content ({} bytes)",
        png.len()
    );
}
