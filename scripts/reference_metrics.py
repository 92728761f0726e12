#!/usr/bin/env python3
"""Reference values for vlmtest's task metrics, computed with scikit-learn.

Reads the stored prediction files in fixtures/tasks/reference/ and writes
fixtures/tasks/reference/expected.json; the Rust test `task_reference` asserts that vlmtest's
numbers equal these to 1e-9 (the TF-IDF + logistic-regression baseline to the solver's tolerance),
and `export_bundle` that `vlmtest export`'s classification_report.json equals scikit-learn's
`classification_report(output_dict=True)`.

    python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-reference.txt
    .venv/bin/python scripts/reference_metrics.py

Conventions shared with vlmtest (docs/tasks.md): a malformed spam answer predicts "not spam" with
spam probability 0; macro F1 averages over the fixed labels [0, 1] with zero_division=0; ECE uses
calibration_curve's 10 uniform bins over the spam probability; an unparseable price is 200% SMAPE.
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    average_precision_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
)

warnings.simplefilter("ignore")  # sklearn warns on the edge cases we test on purpose.
ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "tasks" / "reference"
GRID = [i / 20 for i in range(21)]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def binary(y, p):
    return {
        "accuracy": accuracy_score(y, p),
        "precision": precision_score(y, p, labels=[0, 1], zero_division=0),
        "recall": recall_score(y, p, labels=[0, 1], zero_division=0),
        "f1": f1_score(y, p, labels=[0, 1], zero_division=0),
        "macro_f1": f1_score(y, p, labels=[0, 1], average="macro", zero_division=0),
        "micro_f1": f1_score(y, p, labels=[0, 1], average="micro", zero_division=0),
    }


def ece_and_bins(y, prob, n_bins=10):
    prob_true, prob_pred = calibration_curve(y, prob, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], prob)
    counts = np.bincount(ids, minlength=n_bins)
    nonzero = np.nonzero(counts)[0]
    ece = float(np.sum(counts[nonzero] / len(y) * np.abs(prob_true - prob_pred)))
    bins = [
        {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(counts[b]),
         "mean_prob": float(mp), "frac_pos": float(fp)}
        for b, mp, fp in zip(nonzero, prob_pred, prob_true)
    ]
    return ece, bins


def policy_point(y, pred, review, demote):
    decisions = ["demote" if s and c >= demote else "review" if s and c >= review else "keep" for s, c in pred]
    flagged = [int(d != "keep") for d in decisions]
    m = binary(y, flagged)
    n = len(y)
    demoted = [t for d, t in zip(decisions, y) if d == "demote"]
    return {
        "review_threshold": review, "demote_threshold": demote, "macro_f1": m["macro_f1"],
        "demote_rate": len(demoted) / n, "review_rate": decisions.count("review") / n,
        "demote_precision": (sum(demoted) / len(demoted)) if demoted else 0.0,
    }


def spam_metrics(rows):
    if not rows:
        return None
    y = [r["label"] for r in rows]
    pred = [(r["pred"]["is_spam"], r["pred"]["confidence"]) if r["pred"] else (False, 0.0) for r in rows]
    yp = [int(s) for s, _ in pred]
    prob = [(c if s else 1 - c) if r["pred"] else 0.0 for (s, c), r in zip(pred, rows)]
    m = binary(y, yp)
    m["malformed_rate"] = sum(r["pred"] is None for r in rows) / len(rows)
    m["auprc"] = float(average_precision_score(y, prob)) if any(y) else 0.0
    m["ece"], bins = ece_and_bins(y, prob)
    conf = policy_point(y, pred, 0.5, 0.7)
    m["policy.macro_f1"], m["policy.review_rate"], m["policy.demote_rate"] = (
        conf["macro_f1"], conf["review_rate"], conf["demote_rate"])
    table = [policy_point(y, pred, r, d) for r in GRID for d in GRID if d >= r]
    best = table[0]
    for p in table[1:]:
        if (p["macro_f1"], p["demote_precision"], -p["review_rate"]) > (
                best["macro_f1"], best["demote_precision"], -best["review_rate"]):
            best = p
    m["sweep.macro_f1"] = best["macro_f1"]
    m["sweep.review_threshold"] = best["review_threshold"]
    m["sweep.demote_threshold"] = best["demote_threshold"]
    if all(r.get("baseline") for r in rows):
        bp = [int(r["baseline"]["is_spam"]) for r in rows]
        bs = [r["baseline"]["p_spam"] for r in rows]
        bm = binary(y, bp)
        m["baseline.accuracy"], m["baseline.f1"], m["baseline.macro_f1"] = bm["accuracy"], bm["f1"], bm["macro_f1"]
        m["baseline.auprc"] = float(average_precision_score(y, bs)) if any(y) else 0.0
        m["uplift.macro_f1"] = m["macro_f1"] - bm["macro_f1"]
        m["uplift.accuracy"] = m["accuracy"] - bm["accuracy"]
        m["uplift.auprc"] = m["auprc"] - m["baseline.auprc"]
    extra = {
        "confusion": confusion_matrix(y, yp, labels=[0, 1]).tolist(),
        "bins": bins,
        "sweep": {"chosen": best, "macro_f1": {
            f'{p["review_threshold"]:.2f}/{p["demote_threshold"]:.2f}': p["macro_f1"] for p in table}},
    }
    return m, extra


def price_metrics(rows):
    if not rows:
        return None
    t = np.array([r["target"] for r in rows], dtype=float)
    parsed = [r["pred"] is not None for r in rows]
    p = np.array([r["pred"] if r["pred"] is not None else np.nan for r in rows], dtype=float)
    den = np.abs(p) + np.abs(t)
    with np.errstate(invalid="ignore", divide="ignore"):
        row = np.where(den == 0, 0.0, 200.0 * np.abs(p - t) / den)
    row = np.where(parsed, row, 200.0)
    m = {"smape": float(np.mean(row)), "parse_failure_rate": 1 - sum(parsed) / len(rows)}
    m["malformed_rate"] = m["parse_failure_rate"]
    if any(parsed):
        idx = np.array(parsed)
        m["mae"] = float(mean_absolute_error(t[idx], p[idx]))
    return m, {}


def labels_metrics(rows):
    if not rows:
        return None
    none = "(none)"
    truth = [r["truth"] for r in rows]
    pred = [r["pred"] or {"scene": None, "attributes": {}, "objects": []} for r in rows]
    primary = [t["scene"][0] for t in truth]
    ps = [p["scene"] if p["scene"] is not None else none for p in pred]
    labels = sorted(set(primary) | set(ps))
    m = {"scene_accuracy": float(np.mean([p["scene"] in t["scene"] for t, p in zip(truth, pred)]))}
    obj_rows = [(t, p) for t, p in zip(truth, pred) if t["objects"]]
    if obj_rows:
        m["object_top1"] = float(np.mean([any(o in t["objects"] for o in p["objects"][:1]) for t, p in obj_rows]))
        m["object_top3"] = float(np.mean([any(o in t["objects"] for o in p["objects"][:3]) for t, p in obj_rows]))
    keys = sorted({k for t in truth for k in t["attributes"]})
    f1s = []
    for k in keys:
        yt = [int(t["attributes"][k]) for t in truth if k in t["attributes"]]
        yp = [int(p["attributes"].get(k, False)) for t, p in zip(truth, pred) if k in t["attributes"]]
        pr, rc, f1, _ = precision_recall_fscore_support(yt, yp, labels=[0, 1], average="binary", zero_division=0)
        m[f"{k}.precision"], m[f"{k}.recall"], m[f"{k}.f1"] = float(pr), float(rc), float(f1)
        f1s.append(float(f1))
    if f1s:
        m["attr_macro_f1"] = float(np.mean(f1s))
    m["malformed_rate"] = sum(r["pred"] is None for r in rows) / len(rows)
    cm = confusion_matrix(primary, ps, labels=labels).tolist()
    return m, {"scene_confusion": {"labels": labels, "counts": cm}}


def json_ready(report):
    """classification_report's supports are numpy integers; JSON wants Python ones."""
    return json.loads(json.dumps(report, default=lambda o: o.item()))


def spam_classification_report(rows):
    """Malformed answers predict 0, as in spam_metrics."""
    y = [r["label"] for r in rows]
    yp = [int(r["pred"]["is_spam"]) if r["pred"] else 0 for r in rows]
    return json_ready(classification_report(y, yp, labels=[0, 1], output_dict=True, zero_division=0))


def scene_classification_report(rows):
    """The primary (first) true scene against the predicted one, "(none)" when missing."""
    truth = [r["truth"]["scene"][0] for r in rows]
    pred = [(r["pred"] or {}).get("scene") or "(none)" for r in rows]
    return json_ready(classification_report(truth, pred, output_dict=True, zero_division=0))


def complements(m):
    """Gates are minimums: lower-is-better metrics get a higher-is-better twin, as in vlmtest."""
    for low, high, scale in [("malformed_rate", "parsed_rate", 1.0), ("ece", "calibration", 1.0), ("smape", "smape_score", 200.0)]:
        if low in m:
            m[high] = 1.0 - m[low] / scale
    return m


def sliced(rows, compute, fields, always):
    out = {}
    for field in fields:
        key = (lambda r: "present" if r["image"] else "missing") if field == "image" else (lambda r: r[field])
        groups = {g: [] for g in always.get(field, [])}
        for r in rows:
            groups.setdefault(key(r), []).append(r)
        out[field] = {}
        for g, sub in sorted(groups.items()):
            res = compute(sub)
            out[field][g] = {"n": len(sub), "metrics": complements(res[0]) if res else {}}
    return out


def run(name, compute, fields, always):
    rows = read_jsonl(ROOT / f"{name}.jsonl")
    m, extra = compute(rows)
    m = dict(complements(m), n=len(rows), scorer_errors=0)
    return dict(extra, metrics=m, slices=sliced(rows, compute, fields, always))


def baseline():
    data = json.loads((ROOT / "baseline_texts.json").read_text())
    texts = [t for t, _ in data["train"]]
    labels = [l for _, l in data["train"]]
    vec = TfidfVectorizer(max_features=10000)
    x = vec.fit_transform(texts)
    model = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(x, labels)
    xt = vec.transform(data["test"])
    vocab = vec.get_feature_names_out()
    rows = []
    for i in range(xt.shape[0]):
        r = xt.getrow(i)
        rows.append({str(vocab[j]): float(v) for j, v in zip(r.indices, r.data)})
    return {"tfidf": rows, "p_spam": model.predict_proba(xt)[:, 1].tolist()}


def main():
    expected = {}
    for name in sorted(p.stem for p in ROOT.glob("*.jsonl")):
        kind = name.split("_")[0]
        if kind == "spam":
            expected[name] = run(name, spam_metrics, ["category", "image"], {"image": ["present", "missing"]})
            expected[name]["classification_report"] = spam_classification_report(read_jsonl(ROOT / f"{name}.jsonl"))
        elif kind == "price":
            expected[name] = run(name, price_metrics, ["category"], {})
        elif kind == "labels":
            expected[name] = run(name, labels_metrics, ["category"], {})
            expected[name]["classification_report"] = scene_classification_report(read_jsonl(ROOT / f"{name}.jsonl"))
    expected["baseline"] = baseline()
    out = ROOT / "expected.json"
    out.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({len(expected)} sets)", file=sys.stderr)


if __name__ == "__main__":
    main()
