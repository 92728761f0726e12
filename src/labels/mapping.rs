//! The label mapping of `convert`: annotation values to label keys, read from a TOML file
//! (`[scene]` with `map` and an optional `fallback`, `[attributes]`, `[objects]`). The default is
//! the seed's mapping, shipped as `src/labels/mapping.toml` and printed by
//! `vlmtest labels mapping`. Keys match case-insensitively; unknown tables or keys are errors.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::LabelsError;

/// The seed's mapping, as shipped.
pub const DEFAULT_MAPPING: &str = include_str!("mapping.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneMap {
    /// The label of a scene value not in `map`; `None` drops such records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub map: BTreeMap<String, String>,
}

/// A checked mapping; keys are lowercase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub scene: SceneMap,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub objects: BTreeMap<String, String>,
}

impl Mapping {
    /// The shipped default.
    pub fn seed() -> Self {
        Self::parse(DEFAULT_MAPPING, Path::new("src/labels/mapping.toml"))
            .expect("the shipped mapping parses")
    }

    /// Reads a mapping file.
    pub fn read(path: &Path) -> Result<Self, LabelsError> {
        let text = std::fs::read_to_string(path).map_err(|e| LabelsError::read(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses mapping text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, LabelsError> {
        let raw: Mapping = toml::from_str(text)
            .map_err(|e| LabelsError::file(path, format!("invalid mapping: {e}")))?;
        let lower = |table: &str, m: BTreeMap<String, String>| {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let key = k.trim().to_lowercase();
                if key.is_empty() {
                    return Err(LabelsError::file(path, format!("[{table}]: an empty key")));
                }
                if v.trim().is_empty() {
                    return Err(LabelsError::file(
                        path,
                        format!("[{table}] `{k}`: an empty label"),
                    ));
                }
                if let Some(prev) = out.insert(key, v.clone()) {
                    return Err(LabelsError::file(
                        path,
                        format!("[{table}] `{k}`: the key appears twice (ignoring case), labels `{prev}` and `{v}`"),
                    ));
                }
            }
            Ok(out)
        };
        if raw
            .scene
            .fallback
            .as_deref()
            .is_some_and(|f| f.trim().is_empty())
        {
            return Err(LabelsError::file(path, "[scene] fallback: an empty label"));
        }
        Ok(Mapping {
            scene: SceneMap {
                fallback: raw.scene.fallback,
                map: lower("scene.map", raw.scene.map)?,
            },
            attributes: lower("attributes", raw.attributes)?,
            objects: lower("objects", raw.objects)?,
        })
    }

    /// The label of a scene value: `(label, mapped)`, `mapped` false for the fallback; `None` when
    /// there is no fallback.
    pub fn scene(&self, value: &str) -> Option<(&str, bool)> {
        match self.scene.map.get(&value.trim().to_lowercase()) {
            Some(l) => Some((l, true)),
            None => self.scene.fallback.as_deref().map(|f| (f, false)),
        }
    }

    /// The label of an object's coarse type.
    pub fn object(&self, coarse_type: &str) -> Option<&str> {
        self.objects
            .get(&coarse_type.trim().to_lowercase())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_seed_mapping() {
        let m = Mapping::seed();
        assert_eq!(m.scene("Selfie"), Some(("scene.people", true)));
        assert_eq!(m.scene("landscape"), Some(("scene.other", false)));
        assert_eq!(
            m.object(" Keyboard"),
            Some("object.electronics.peripheral.keyboard")
        );
        assert_eq!(m.object("chair"), None);
        assert_eq!(m.attributes["has_person"], "attr.has_person");
        assert_eq!(m.scene.map.len(), 8);
        assert_eq!(m.objects.len(), 9);
    }

    #[test]
    fn mistakes_name_the_file() {
        let p = Path::new("labels.toml");
        let e = Mapping::parse("[scene]\nmap = {}\n[colours]\n", p).unwrap_err();
        assert!(
            e.to_string().starts_with("labels.toml: invalid mapping:"),
            "{e}"
        );
        let e = Mapping::parse("[scene.map]\nFood = \"a\"\nfood = \"b\"\n", p).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        let e = Mapping::parse("[scene.map]\nfood = \" \"\n", p).unwrap_err();
        assert!(e.to_string().contains("an empty label"), "{e}");
        let m = Mapping::parse("[scene.map]\nfood = \"scene.food\"\n", p).unwrap();
        assert_eq!(m.scene("cat"), None);
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-z][a-z_]{0,8}"
    }

    fn mapping() -> impl Strategy<Value = Mapping> {
        let table = || prop::collection::btree_map(key(), "[a-z][a-z.]{0,12}", 0..6);
        (
            table(),
            proptest::option::of("[a-z][a-z.]{0,12}"),
            table(),
            table(),
        )
            .prop_map(|(map, fallback, attributes, objects)| Mapping {
                scene: SceneMap { fallback, map },
                attributes,
                objects,
            })
    }

    proptest! {
        /// A mapping written as TOML reads back as itself.
        #[test]
        fn round_trips(m in mapping()) {
            let text = toml::to_string(&m).unwrap();
            prop_assert_eq!(Mapping::parse(&text, Path::new("m.toml")).unwrap(), m);
        }

        /// Any text is a mapping or an error naming the file, never a panic.
        #[test]
        fn any_text_parses_or_names_the_file(text in "(\\[scene(\\.map)?\\]|\\[objects\\]|[a-z]{1,5} = \"[a-z.]{0,5}\"|fallback = \"x\"|\n){0,12}") {
            match Mapping::parse(&text, Path::new("m.toml")) {
                Ok(m) => prop_assert!(m.scene.map.keys().all(|k| k == &k.to_lowercase())),
                Err(e) => prop_assert!(e.to_string().starts_with("m.toml: "), "{}", e),
            }
        }
    }
}
