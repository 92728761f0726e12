//! The report's plots, drawn as inline SVG by a few small functions.
//!
//! Why our own code and not a plotting crate: the plots are few and simple (bars, a heat map, a
//! grid of counts, a histogram, boxes over an image), and the page must be one file with no
//! external request. `plotters`' SVG backend would work but brings its own text layout and font
//! handling, draws every mark as an anonymous path (the browser test finds marks by class), and
//! compiles for a while on a 2-core machine; `charming` renders through ECharts, a JavaScript
//! library the page would have to embed. A hundred lines of `format!` give SVG that scales with
//! the page, takes its colours from the page's CSS (so the dark theme works), carries a
//! `<title>` tooltip on every mark, and a `class="mark"` the test can count.
//!
//! Every function returns a complete `<svg class="plot">` element; data values are numbers, and
//! every label goes through [`escape`].

use std::fmt::Write;

use super::escape::escape;

/// Plot size in SVG user units (the element scales to its container's width).
const W: f64 = 360.0;
const H: f64 = 260.0;
/// Margins: left (axis labels), right, top (title), bottom (tick labels).
const ML: f64 = 46.0;
const MR: f64 = 12.0;
const MT: f64 = 26.0;
const MB: f64 = 40.0;

fn open(out: &mut String, w: f64, h: f64, label: &str) {
    let _ = write!(
        out,
        r#"<svg class="plot" viewBox="0 0 {w} {h}" role="img" aria-label="{l}"><title>{l}</title><text class="ptitle" x="{x}" y="16" text-anchor="middle">{l}</text>"#,
        l = escape(label),
        x = w / 2.0
    );
}

/// A rectangle mark with a hover tooltip.
fn rect(out: &mut String, class: &str, x: f64, y: f64, w: f64, h: f64, tip: &str) {
    let _ = write!(
        out,
        r#"<rect class="mark {class}" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
        w.max(0.0),
        h.max(0.0),
        escape(tip)
    );
}

fn text(out: &mut String, class: &str, x: f64, y: f64, anchor: &str, s: &str) {
    let _ = write!(
        out,
        r#"<text class="{class}" x="{x:.1}" y="{y:.1}" text-anchor="{anchor}">{}</text>"#,
        escape(s)
    );
}

/// Axes of a unit-square plot area with ticks at 0, 0.5, 1 on both axes.
fn unit_axes(out: &mut String, xlabel: &str, ylabel: &str) {
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let _ = write!(
        out,
        r#"<rect class="frame" x="{ML}" y="{MT}" width="{pw}" height="{ph}"/>"#
    );
    for t in [0.0, 0.5, 1.0] {
        text(
            out,
            "tick",
            ML + t * pw,
            H - MB + 14.0,
            "middle",
            &format!("{t}"),
        );
        text(
            out,
            "tick",
            ML - 5.0,
            MT + (1.0 - t) * ph + 4.0,
            "end",
            &format!("{t}"),
        );
    }
    text(out, "axis", ML + pw / 2.0, H - 8.0, "middle", xlabel);
    let _ = write!(
        out,
        r#"<text class="axis" transform="translate(12 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        MT + ph / 2.0,
        escape(ylabel)
    );
}

/// One reliability bin: probability range, count, mean predicted probability, observed rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    pub mean_prob: f64,
    pub frac_pos: f64,
}

/// Reliability diagram: per bin, a bar of the observed spam rate over the bin's range, a dot at
/// (mean predicted, observed), and the diagonal of perfect calibration.
pub fn reliability(bins: &[Bin], ece: f64) -> String {
    let mut out = String::new();
    open(&mut out, W, H, &format!("Reliability (ECE {ece:.3})"));
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    unit_axes(&mut out, "predicted spam probability", "observed spam rate");
    let _ = write!(
        out,
        r#"<line class="diag" x1="{ML}" y1="{:.1}" x2="{:.1}" y2="{MT}"/>"#,
        MT + ph,
        ML + pw
    );
    for b in bins {
        let tip = format!(
            "{:.1}-{:.1}: {} cases, mean predicted {:.3}, observed {:.3}",
            b.lo, b.hi, b.count, b.mean_prob, b.frac_pos
        );
        let x = ML + b.lo * pw;
        let top = MT + (1.0 - b.frac_pos) * ph;
        rect(
            &mut out,
            "bar",
            x + 1.0,
            top,
            (b.hi - b.lo) * pw - 2.0,
            MT + ph - top,
            &tip,
        );
        let _ = write!(
            out,
            r#"<circle class="mark dot" cx="{:.1}" cy="{:.1}" r="3.5"><title>{}</title></circle>"#,
            ML + b.mean_prob * pw,
            top,
            escape(&tip)
        );
    }
    out.push_str("</svg>");
    out
}

/// Heat map of the policy sweep: one cell per `(review, demote)` pair (review on x, demote on
/// y), shaded by macro F1 between the table's minimum and maximum, with the chosen pair outlined.
pub fn sweep_heatmap(
    cells: &[(f64, f64, f64)],
    chosen: Option<(f64, f64)>,
    steps: usize,
) -> String {
    let mut out = String::new();
    open(&mut out, W, H, "Threshold sweep: macro F1");
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    unit_axes(&mut out, "review threshold", "demote threshold");
    let n = steps.max(1) as f64 + 1.0;
    let (cw, ch) = (pw / n, ph / n);
    let lo = cells.iter().map(|c| c.2).fold(f64::INFINITY, f64::min);
    let hi = cells.iter().map(|c| c.2).fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    // Cell i covers [i/(steps+1), (i+1)/(steps+1)) of the axis, centred near the threshold value.
    let pos = |t: f64| (t * steps as f64).round();
    for &(r, d, v) in cells {
        let x = ML + pos(r) * cw;
        let y = MT + ph - (pos(d) + 1.0) * ch;
        let shade = (v - lo) / span;
        let _ = write!(
            out,
            r#"<rect class="mark cell" x="{x:.1}" y="{y:.1}" width="{cw:.2}" height="{ch:.2}" style="fill-opacity:{:.3}"><title>review {r:.2}, demote {d:.2}: macro F1 {v:.3}</title></rect>"#,
            0.08 + 0.92 * shade
        );
    }
    if let Some((r, d)) = chosen {
        let x = ML + pos(r) * cw;
        let y = MT + ph - (pos(d) + 1.0) * ch;
        let _ = write!(
            out,
            r#"<rect class="mark chosen" x="{x:.1}" y="{y:.1}" width="{cw:.2}" height="{ch:.2}"><title>chosen: review {r:.2}, demote {d:.2}</title></rect>"#
        );
        text(
            &mut out,
            "note",
            W - MR - 4.0,
            H - MB - 22.0,
            "end",
            &format!("chosen: review {r:.2}, demote {d:.2}"),
        );
    }
    text(
        &mut out,
        "note",
        W - MR - 4.0,
        H - MB - 8.0,
        "end",
        &format!("F1 {lo:.2} (light) to {hi:.2} (dark)"),
    );
    out.push_str("</svg>");
    out
}

/// A confusion matrix, truth in rows and prediction in columns, each cell shaded by its share of
/// the row (so a small class's errors still show).
pub fn confusion(title: &str, labels: &[String], counts: &[Vec<u64>]) -> String {
    let k = labels.len().max(1) as f64;
    let left = 12.0
        + 6.5
            * labels
                .iter()
                .map(|l| l.chars().count())
                .max()
                .unwrap_or(4)
                .min(24) as f64;
    // The same width as the other plots, so every plot's text has the same size on the page.
    let cell = ((W - left - 10.0) / k).min(190.0 / k).min(60.0);
    let left = left.max((W - cell * k) / 2.0);
    let (w, h) = (W, MT + 18.0 + cell * k + 24.0);
    let mut out = String::new();
    open(&mut out, w, h, title);
    let top = MT + 18.0;
    text(
        &mut out,
        "axis",
        left + cell * k / 2.0,
        MT + 8.0,
        "middle",
        "predicted",
    );
    for (j, l) in labels.iter().enumerate() {
        let x = left + (j as f64 + 0.5) * cell;
        let _ = write!(
            out,
            r#"<text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top + cell * k + 14.0,
            escape(&short(l, (cell / 6.0) as usize))
        );
    }
    for (i, row) in counts.iter().enumerate() {
        let y = top + i as f64 * cell;
        let truth = labels.get(i).map_or("?", String::as_str);
        text(
            &mut out,
            "tick",
            left - 4.0,
            y + cell / 2.0 + 4.0,
            "end",
            &short(truth, 24),
        );
        let total: u64 = row.iter().sum();
        for (j, &c) in row.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                c as f64 / total as f64
            };
            let pred = labels.get(j).map_or("?", String::as_str);
            let class = if i == j {
                "cell diag-cell"
            } else {
                "cell off-cell"
            };
            let _ = write!(
                out,
                r#"<rect class="mark {class}" x="{:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" style="fill-opacity:{:.3}"><title>truth {}, predicted {}: {c} ({:.0}% of the row)</title></rect>"#,
                left + j as f64 * cell,
                0.06 + 0.94 * share,
                escape(truth),
                escape(pred),
                share * 100.0
            );
            if cell >= 22.0 {
                let cls = if share > 0.55 { "count inv" } else { "count" };
                text(
                    &mut out,
                    cls,
                    left + (j as f64 + 0.5) * cell,
                    y + cell / 2.0 + 4.0,
                    "middle",
                    &c.to_string(),
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

fn short(s: &str, max: usize) -> String {
    let max = max.max(3);
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// One bar: label, value in 0..=1, optional interval, group size.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub ci: Option<(f64, f64)>,
    pub n: usize,
}

/// Horizontal bars of a 0..=1 metric per group, with interval whiskers where given.
pub fn bars(title: &str, metric: &str, items: &[Bar]) -> String {
    let row = 24.0;
    let left = 14.0
        + 6.5
            * items
                .iter()
                .map(|b| b.label.chars().count())
                .max()
                .unwrap_or(4)
                .min(22) as f64;
    let pw = W - left - 60.0;
    let h = MT + 8.0 + row * items.len() as f64 + 30.0;
    let mut out = String::new();
    open(&mut out, W, h, title);
    for (i, b) in items.iter().enumerate() {
        let y = MT + 8.0 + i as f64 * row;
        text(
            &mut out,
            "tick",
            left - 4.0,
            y + 15.0,
            "end",
            &short(&b.label, 22),
        );
        let v = b.value.clamp(0.0, 1.0);
        let tip = match b.ci {
            Some((lo, hi)) => format!(
                "{}: {metric} {:.3} (95% CI {lo:.3}-{hi:.3}), n = {}",
                b.label, b.value, b.n
            ),
            None => format!("{}: {metric} {:.3}, n = {}", b.label, b.value, b.n),
        };
        rect(&mut out, "bar", left, y + 4.0, v * pw, row - 8.0, &tip);
        if let Some((lo, hi)) = b.ci {
            let _ = write!(
                out,
                r#"<line class="whisker" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/>"#,
                left + lo.clamp(0.0, 1.0) * pw,
                y + row / 2.0,
                left + hi.clamp(0.0, 1.0) * pw,
                y + row / 2.0
            );
        }
        text(
            &mut out,
            "count",
            left + pw + 4.0,
            y + 15.0,
            "start",
            &format!("{:.2} n={}", b.value, b.n),
        );
    }
    let base = MT + 8.0 + row * items.len() as f64;
    let _ = write!(
        out,
        r#"<line class="axisline" x1="{left:.1}" y1="{MT}" x2="{left:.1}" y2="{base:.1}"/>"#
    );
    text(
        &mut out,
        "axis",
        left + pw / 2.0,
        base + 18.0,
        "middle",
        &format!("{metric} (0 to 1)"),
    );
    out.push_str("</svg>");
    out
}

/// Histogram of `values` over `[lo, hi]` in `n_bins` equal bins (values outside are clamped), with
/// an optional vertical marker (e.g. the pass threshold).
pub fn histogram(
    title: &str,
    xlabel: &str,
    values: &[f64],
    (lo, hi): (f64, f64),
    n_bins: usize,
    marker: Option<(f64, &str)>,
) -> String {
    let n_bins = n_bins.max(1);
    let mut counts = vec![0usize; n_bins];
    let width = (hi - lo) / n_bins as f64;
    for &v in values.iter().filter(|v| v.is_finite()) {
        let b = (((v - lo) / width).floor().max(0.0) as usize).min(n_bins - 1);
        counts[b] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let mut out = String::new();
    open(&mut out, W, H, title);
    let _ = write!(
        out,
        r#"<rect class="frame" x="{ML}" y="{MT}" width="{pw}" height="{ph}"/>"#
    );
    let bw = pw / n_bins as f64;
    for (i, &c) in counts.iter().enumerate() {
        let bh = c as f64 / max * ph;
        let a = lo + i as f64 * width;
        rect(
            &mut out,
            "bar",
            ML + i as f64 * bw + 0.5,
            MT + ph - bh,
            bw - 1.0,
            bh,
            &format!("{a:.0}-{:.0}: {c} cases", a + width),
        );
    }
    for t in [lo, (lo + hi) / 2.0, hi] {
        text(
            &mut out,
            "tick",
            ML + (t - lo) / (hi - lo) * pw,
            H - MB + 14.0,
            "middle",
            &format!("{t:.0}"),
        );
    }
    text(
        &mut out,
        "tick",
        ML - 5.0,
        MT + 4.0,
        "end",
        &format!("{}", max as usize),
    );
    text(&mut out, "tick", ML - 5.0, MT + ph + 4.0, "end", "0");
    text(&mut out, "axis", ML + pw / 2.0, H - 8.0, "middle", xlabel);
    if let Some((m, label)) = marker {
        let x = ML + ((m - lo) / (hi - lo)).clamp(0.0, 1.0) * pw;
        let _ = write!(
            out,
            r#"<line class="marker" x1="{x:.1}" y1="{MT}" x2="{x:.1}" y2="{:.1}"/>"#,
            MT + ph
        );
        text(&mut out, "note", x + 3.0, MT + 12.0, "start", label);
    }
    out.push_str("</svg>");
    out
}

/// A box drawn over a page image: `[x0, y0, x1, y1]` in image pixels, its label, and whether it
/// was matched.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledBox {
    pub bbox: [f64; 4],
    pub label: String,
    pub matched: bool,
}

/// The ground-truth boxes (solid) and predicted boxes (dashed) of a page in its pixel
/// coordinates (`width` × `height` user units), unmatched boxes coloured as errors; over the page
/// image when `href` (a data URI) is given, else transparent, to lie over an `<img>`.
pub fn boxes_overlay(
    title: &str,
    href: Option<&str>,
    (width, height): (f64, f64),
    truth: &[LabeledBox],
    pred: &[LabeledBox],
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="plot boxes" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" aria-label="{l}"><title>{l}</title>"#,
        l = escape(title)
    );
    // Without an image the SVG is transparent, to be laid over an `<img>` of the page.
    if let Some(h) = href {
        let _ = write!(
            out,
            r#"<image class="page" href="{}" x="0" y="0" width="{width}" height="{height}"/>"#,
            escape(h)
        );
    }
    let stroke = (width.max(height) / 300.0).max(1.0);
    for (kind, boxes) in [("gt", truth), ("pred", pred)] {
        for b in boxes {
            let [x0, y0, x1, y1] = b.bbox;
            let class = format!("box {kind} {}", if b.matched { "ok" } else { "miss" });
            let what = if kind == "gt" { "truth" } else { "predicted" };
            let state = if b.matched { "matched" } else { "unmatched" };
            let _ = write!(
                out,
                r#"<rect class="mark {class}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" style="stroke-width:{stroke:.1}"><title>{what} ({state}): {}</title></rect>"#,
                x0.min(x1),
                y0.min(y1),
                (x1 - x0).abs(),
                (y1 - y0).abs(),
                escape(&b.label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(svg: &str) -> usize {
        svg.matches("class=\"mark ").count()
    }

    #[test]
    fn every_plot_is_one_svg_with_its_marks() {
        let bins = [
            Bin {
                lo: 0.0,
                hi: 0.1,
                count: 3,
                mean_prob: 0.05,
                frac_pos: 0.0,
            },
            Bin {
                lo: 0.9,
                hi: 1.0,
                count: 5,
                mean_prob: 0.95,
                frac_pos: 0.8,
            },
        ];
        let r = reliability(&bins, 0.0812);
        assert!(r.starts_with("<svg") && r.ends_with("</svg>"));
        assert_eq!(marks(&r), 4, "a bar and a dot per bin");
        assert!(r.contains("ECE 0.081"));

        let cells = [(0.0, 0.0, 0.5), (0.0, 1.0, 0.7), (1.0, 1.0, 0.6)];
        let h = sweep_heatmap(&cells, Some((0.0, 1.0)), 20);
        assert_eq!(marks(&h), 4, "three cells and the chosen point");
        assert!(h.contains("chosen: review 0.00, demote 1.00"));

        let c = confusion(
            "Spam",
            &["not spam".into(), "spam".into()],
            &[vec![9, 1], vec![2, 8]],
        );
        assert_eq!(marks(&c), 4);
        assert!(c.contains("truth spam, predicted not spam: 2 (20% of the row)"));

        let b = bars(
            "By image",
            "macro F1",
            &[Bar {
                label: "<present>".into(),
                value: 0.9,
                ci: Some((0.8, 0.95)),
                n: 12,
            }],
        );
        assert!(b.contains("&lt;present&gt;") && !b.contains("<present>"));
        assert_eq!(marks(&b), 1);

        let hist = histogram(
            "SMAPE",
            "SMAPE %",
            &[0.0, 10.0, 199.0, 200.0, f64::NAN],
            (0.0, 200.0),
            10,
            Some((20.0, "pass")),
        );
        assert_eq!(marks(&hist), 10);
        assert!(
            hist.contains("180-200: 2 cases"),
            "200 falls in the last bin: {hist}"
        );
        assert!(hist.contains("0-20: 2 cases"));

        let o = boxes_overlay(
            "page",
            Some("data:image/png;base64,AAAA"),
            (400.0, 300.0),
            &[LabeledBox {
                bbox: [10.0, 10.0, 50.0, 40.0],
                label: "COLA".into(),
                matched: true,
            }],
            &[LabeledBox {
                bbox: [50.0, 40.0, 10.0, 10.0],
                label: "cola".into(),
                matched: false,
            }],
        );
        assert_eq!(marks(&o), 2);
        assert!(
            o.contains(r#"x="10.0" y="10.0" width="40.0" height="30.0""#),
            "corners in any order"
        );
        assert!(o.contains("box pred miss"));
    }
}
