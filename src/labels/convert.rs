//! `vlmtest labels convert`: annotation lines to label ground truth (`{"image_id", "scene":
//! [..], "attributes": {..}, "objects": [..]}` per line, what `vlmtest import labels` reads),
//! through a [`Mapping`] and an object confidence cut, with a report of every count: labels
//! written, values that fell back or were dropped, lines skipped and why.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::jsonl::{self, Torn};
use super::mapping::Mapping;
use super::record::parse_line;
use super::LabelsError;

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub mapping: Mapping,
    pub min_object_confidence: f64,
    pub include_non_main: bool,
}

/// One ground-truth record, in the importer's field order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TruthRecord {
    pub image_id: String,
    pub scene: Vec<String>,
    pub attributes: BTreeMap<String, bool>,
    pub objects: Vec<String>,
}

/// Every count of a conversion.
#[derive(Debug, Default, Serialize)]
pub struct ConvertReport {
    /// Lines read (annotations and error lines).
    pub lines: usize,
    pub written: usize,
    /// Error lines of `annotate` (no annotation to convert).
    pub error_lines: usize,
    /// Lines that are not JSON, or not an annotate line, with why.
    pub bad_lines: Vec<(usize, String)>,
    /// Annotated lines dropped, with why (no usable scene, …).
    pub dropped: Vec<(usize, String)>,
    /// Later lines of an image id already converted (the first wins).
    pub duplicate_ids: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub torn: Option<(usize, usize)>,
    pub scenes: BTreeMap<String, usize>,
    /// label → (true, false) counts.
    pub attributes: BTreeMap<String, (usize, usize)>,
    pub objects: BTreeMap<String, usize>,
    /// Scene values not in the mapping (mapped to the fallback, or dropped).
    pub unmapped_scenes: BTreeMap<String, usize>,
    /// Coarse types not in the mapping (objects dropped).
    pub unmapped_object_types: BTreeMap<String, usize>,
    /// Annotation fields the mapping does not use (`has_text`: 40).
    pub unused_fields: BTreeMap<String, usize>,
    /// Objects passed over: not the main subject, under the confidence cut, malformed.
    pub objects_not_main: usize,
    pub objects_low_confidence: usize,
    pub objects_malformed: usize,
}

fn bump(m: &mut BTreeMap<String, usize>, k: &str) {
    *m.entry(k.to_owned()).or_insert(0) += 1;
}

impl ConvertReport {
    fn add(&mut self, r: &TruthRecord) {
        for s in &r.scene {
            bump(&mut self.scenes, s);
        }
        for (k, &v) in &r.attributes {
            let e = self.attributes.entry(k.clone()).or_insert((0, 0));
            if v {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        for o in &r.objects {
            bump(&mut self.objects, o);
        }
    }

    /// The human report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "convert: {} lines: {} records written, {} error lines, {} bad lines, {} dropped, {} duplicate ids\n",
            self.lines,
            self.written,
            self.error_lines,
            self.bad_lines.len(),
            self.dropped.len(),
            self.duplicate_ids
        );
        if let Some((line, len)) = self.torn {
            s.push_str(&format!(
                "warning: the last line ({line}, {len} bytes) is unfinished (an interrupted annotate run?): skipped; `labels annotate --resume` redoes it\n"
            ));
        }
        let table = |s: &mut String, title: &str, m: &BTreeMap<String, usize>| {
            if m.is_empty() {
                return;
            }
            s.push_str(&format!("{title}:\n"));
            for (k, n) in m {
                s.push_str(&format!("  {k:<44} {n:>7}\n"));
            }
        };
        table(&mut s, "scene labels", &self.scenes);
        if !self.attributes.is_empty() {
            s.push_str("attribute labels (true / false):\n");
            for (k, (t, f)) in &self.attributes {
                s.push_str(&format!("  {k:<44} {t:>7} / {f}\n"));
            }
        }
        table(&mut s, "object labels", &self.objects);
        table(&mut s, "unmapped scene values", &self.unmapped_scenes);
        table(
            &mut s,
            "unmapped object types (dropped)",
            &self.unmapped_object_types,
        );
        table(
            &mut s,
            "annotation fields the mapping does not use",
            &self.unused_fields,
        );
        s.push_str(&format!(
            "objects passed over: {} not the main subject, {} under the confidence cut, {} malformed\n",
            self.objects_not_main, self.objects_low_confidence, self.objects_malformed
        ));
        for (line, why) in self.bad_lines.iter().chain(&self.dropped).take(20) {
            s.push_str(&format!("  line {line}: {why}\n"));
        }
        s
    }
}

/// Converts one annotation; `Err` drops the record with a reason.
pub fn convert_annotation(
    id: &str,
    a: &Value,
    o: &ConvertOptions,
    report: &mut ConvertReport,
) -> Result<TruthRecord, String> {
    let obj = a.as_object().ok_or("the annotation is not an object")?;
    let scene_value = obj
        .get("scene")
        .and_then(Value::as_str)
        .ok_or("field `annotation.scene` is missing or not a string")?;
    let scene = match o.mapping.scene(scene_value) {
        Some((label, mapped)) => {
            if !mapped {
                bump(&mut report.unmapped_scenes, scene_value);
            }
            label.to_owned()
        }
        None => {
            bump(&mut report.unmapped_scenes, scene_value);
            return Err(format!(
                "scene `{scene_value}` is not in the mapping, which has no fallback"
            ));
        }
    };
    let mut attributes = BTreeMap::new();
    for (field, label) in &o.mapping.attributes {
        match obj.get(field.as_str()) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => {
                attributes.insert(label.clone(), *b);
            }
            Some(other) => {
                return Err(format!(
                    "field `annotation.{field}` is {other}, not a boolean"
                ))
            }
        }
    }
    for k in obj.keys() {
        if k != "scene" && k != "objects" && !o.mapping.attributes.contains_key(k) {
            bump(&mut report.unused_fields, k);
        }
    }
    let mut objects: Vec<String> = Vec::new();
    let items = match obj.get("objects") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => &a[..],
        Some(_) => return Err("field `annotation.objects` is not a list".into()),
    };
    for it in items {
        let (Some(t), Some(main), Some(conf)) = (
            it.get("coarse_type").and_then(Value::as_str),
            it.get("is_main").and_then(Value::as_bool),
            it.get("confidence").and_then(Value::as_f64),
        ) else {
            report.objects_malformed += 1;
            continue;
        };
        if !main && !o.include_non_main {
            report.objects_not_main += 1;
            continue;
        }
        if conf < o.min_object_confidence {
            report.objects_low_confidence += 1;
            continue;
        }
        match o.mapping.object(t) {
            Some(label) => {
                if !objects.iter().any(|x| x == label) {
                    objects.push(label.to_owned());
                }
            }
            None => bump(&mut report.unmapped_object_types, &t.trim().to_lowercase()),
        }
    }
    Ok(TruthRecord {
        image_id: id.to_owned(),
        scene: vec![scene],
        attributes,
        objects,
    })
}

/// Writes `text` to `path` through a temporary file beside it, so a crash never leaves half a file.
pub(crate) fn write_atomic(path: &Path, text: &[u8]) -> Result<(), LabelsError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| LabelsError::write(dir, e))?;
    }
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("out")
    ));
    let mut f = std::fs::File::create(&tmp).map_err(|e| LabelsError::write(&tmp, e))?;
    f.write_all(text).map_err(|e| LabelsError::write(&tmp, e))?;
    f.sync_all().map_err(|e| LabelsError::write(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LabelsError::write(path, e))
}

/// Runs the conversion and writes the output.
pub fn convert(o: &ConvertOptions) -> Result<ConvertReport, LabelsError> {
    if !(0.0..=1.0).contains(&o.min_object_confidence) {
        return Err(LabelsError::Option(format!(
            "--min-object-confidence {} is not within 0..1",
            o.min_object_confidence
        )));
    }
    let bytes = std::fs::read(&o.input).map_err(|e| LabelsError::read(&o.input, e))?;
    let parsed = jsonl::parse(&bytes);
    let mut report = ConvertReport {
        torn: parsed.torn.map(|Torn { line, len, .. }| (line, len)),
        bad_lines: parsed.bad.clone(),
        ..ConvertReport::default()
    };
    report.lines = parsed.lines.len() + parsed.bad.len();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for l in &parsed.lines {
        let raw = match parse_line(&o.input, l.line, &l.value) {
            Ok(r) => r,
            Err(e) => {
                report.bad_lines.push((l.line, e.to_string()));
                continue;
            }
        };
        let annotation = match &raw.outcome {
            Ok(a) => a,
            Err(_) => {
                report.error_lines += 1;
                continue;
            }
        };
        let Some(id) = raw.image_id.as_deref() else {
            continue;
        };
        if !seen.insert(id.to_owned()) {
            report.duplicate_ids += 1;
            continue;
        }
        match convert_annotation(id, annotation, o, &mut report) {
            Ok(rec) => {
                report.add(&rec);
                report.written += 1;
                let line = serde_json::to_string(&rec)
                    .map_err(|e| LabelsError::write(&o.output, std::io::Error::other(e)))?;
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            Err(why) => report.dropped.push((l.line, why)),
        }
    }
    report.bad_lines.sort();
    write_atomic(&o.output, &out)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> ConvertOptions {
        ConvertOptions {
            input: PathBuf::new(),
            output: PathBuf::new(),
            mapping: Mapping::seed(),
            min_object_confidence: 0.7,
            include_non_main: false,
        }
    }

    #[test]
    fn the_seed_example_converts_as_the_seed_says() {
        let a = json!({"scene": "product", "has_person": false, "is_document": false, "is_screenshot": false,
            "objects": [
                {"name_free": "mechanical keyboard", "coarse_type": "keyboard", "is_main": true, "confidence": 0.92},
                {"name_free": "mug", "coarse_type": "mug", "is_main": true, "confidence": 0.95},
                {"name_free": "mouse", "coarse_type": "mouse", "is_main": false, "confidence": 0.9},
                {"name_free": "phone", "coarse_type": "phone", "is_main": true, "confidence": 0.5}]});
        let mut r = ConvertReport::default();
        let t =
            convert_annotation("8f14e45fceea167a5a36dedd4bea2543", &a, &opts(), &mut r).unwrap();
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"image_id": "8f14e45fceea167a5a36dedd4bea2543", "scene": ["scene.product"],
                   "attributes": {"attr.has_person": false, "attr.is_document": false, "attr.is_screenshot": false},
                   "objects": ["object.electronics.peripheral.keyboard"]})
        );
        assert_eq!(r.unmapped_object_types["mug"], 1);
        assert_eq!((r.objects_not_main, r.objects_low_confidence), (1, 1));
        let mut o = opts();
        o.include_non_main = true;
        let t = convert_annotation("x", &a, &o, &mut ConvertReport::default()).unwrap();
        assert_eq!(t.objects.len(), 2);
        let t = convert_annotation("x", &json!({"scene": "Landscape"}), &o, &mut r).unwrap();
        assert_eq!(t.scene, ["scene.other"]);
        assert_eq!(r.unmapped_scenes["Landscape"], 1);
        let e = convert_annotation(
            "x",
            &json!({"scene": "food", "has_person": "yes"}),
            &o,
            &mut r,
        );
        assert_eq!(
            e.unwrap_err(),
            "field `annotation.has_person` is \"yes\", not a boolean"
        );
    }
}
