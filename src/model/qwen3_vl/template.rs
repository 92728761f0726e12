//! The checkpoint's own chat template (Jinja), rendered the way transformers'
//! `apply_chat_template` renders it: messages with list content (`{"type": "image"}`,
//! `{"type": "text", "text": …}`), `add_generation_prompt = true`, the tokenizer's special tokens
//! as variables, Python string methods (`strip`, `startswith`, …) and `raise_exception`.
//!
//! Where a checkpoint carries no template, `prompt::render` (Qwen3-VL's format) is used.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

use super::prompt::IMAGE_PAD;
use crate::case::{ImageSource, Message, Part};

/// Where transformers keeps a chat template, in the order it looks: `chat_template.jinja`
/// (written by transformers ≥ 4.52), `chat_template.json` (processor templates), then the
/// `chat_template` key of `tokenizer_config.json` (a string, or named templates: `default`).
const TEMPLATE_FILES: [&str; 3] = [
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer_config.json",
];

/// A checkpoint's chat template, compiled.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The file it came from, for error messages.
    pub file: PathBuf,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

#[derive(Serialize)]
struct ContentPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct JinjaMessage<'a> {
    role: &'static str,
    content: Vec<ContentPart<'a>>,
}

impl ChatTemplate {
    /// Finds and compiles the template of the checkpoint in `dir`; `Ok(None)` when it has none.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, String> {
        let tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?;
        let special = |key: &str| -> Option<String> {
            let v = tokenizer_config.as_ref()?.get(key)?;
            // A plain string, or an AddedToken object with `content`.
            v.as_str()
                .or_else(|| v.get("content").and_then(|c| c.as_str()))
                .map(str::to_owned)
        };
        let (bos_token, eos_token) = (special("bos_token"), special("eos_token"));
        for name in TEMPLATE_FILES {
            let file = dir.join(name);
            if !file.is_file() {
                continue;
            }
            let source = match name {
                "chat_template.jinja" => Some(
                    std::fs::read_to_string(&file)
                        .map_err(|e| format!("{}: {e}", file.display()))?,
                ),
                "chat_template.json" => read_json(&file)?
                    .and_then(|v| template_field(&v, &file).transpose())
                    .transpose()?,
                _ => match &tokenizer_config {
                    Some(v) => template_field(v, &file)?,
                    None => None,
                },
            };
            if let Some(source) = source {
                return Self::compile(source, file, bos_token, eos_token).map(Some);
            }
        }
        Ok(None)
    }

    /// Compiles `source`; a syntax error names the file and line.
    pub fn compile(
        source: String,
        file: PathBuf,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Templates raise errors on conversations they cannot format (e.g. roles out of order).
        env.add_function("raise_exception", |msg: String| -> Result<Value, _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source)
            .map_err(|e| describe(&file, &e))?;
        Ok(Self {
            env,
            file,
            bos_token,
            eos_token,
        })
    }

    /// Renders the conversation with the generation prompt; returns the text and the images in
    /// the order their parts appear. The template must place one `<|image_pad|>` per image.
    pub fn render<'m>(
        &self,
        messages: &'m [Message],
    ) -> Result<(String, Vec<&'m ImageSource>), String> {
        let mut images = Vec::new();
        let msgs: Vec<JinjaMessage<'_>> = messages
            .iter()
            .map(|m| JinjaMessage {
                role: m.role.as_str(),
                content: m
                    .parts
                    .iter()
                    .map(|p| match p {
                        Part::Text { text } => ContentPart {
                            kind: "text",
                            text: Some(text),
                        },
                        Part::Image { image } => {
                            images.push(image);
                            ContentPart {
                                kind: "image",
                                text: None,
                            }
                        }
                    })
                    .collect(),
            })
            .collect();
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| describe(&self.file, &e))?;
        let text = tmpl
            .render(minijinja::context! {
                messages => msgs,
                add_generation_prompt => true,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
            })
            .map_err(|e| describe(&self.file, &e))?;
        let pads = text.matches(IMAGE_PAD).count();
        if pads != images.len() {
            return Err(format!(
                "{}: the chat template wrote {pads} `{IMAGE_PAD}` placeholders for {} images",
                self.file.display(),
                images.len()
            ));
        }
        Ok((text, images))
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, String> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))
}

/// The `chat_template` field: a string, or a list of `{name, template}` (the `default` one).
fn template_field(v: &serde_json::Value, file: &Path) -> Result<Option<String>, String> {
    match v.get("chat_template") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template").and_then(|s| s.as_str()))
            .map(|s| Some(s.to_owned()))
            .ok_or_else(|| {
                format!(
                    "{}: field `chat_template` lists named templates but none is named `default`",
                    file.display()
                )
            }),
        Some(_) => Err(format!(
            "{}: field `chat_template` must be a string or a list of named templates",
            file.display()
        )),
    }
}

fn describe(file: &Path, e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("{}: chat template, line {line}: {e}", file.display()),
        None => format!("{}: chat template: {e}", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Role;
    use crate::model::qwen3_vl::fixture::CHAT_TEMPLATE;
    use crate::model::qwen3_vl::prompt;

    fn msg(role: Role, parts: Vec<Part>) -> Message {
        Message { role, parts }
    }

    fn text(t: &str) -> Part {
        Part::Text { text: t.into() }
    }

    fn image(p: &str) -> Part {
        Part::Image {
            image: ImageSource::Path(PathBuf::from(p)),
        }
    }

    fn tmpl(source: &str) -> ChatTemplate {
        ChatTemplate::compile(source.into(), "t.jinja".into(), None, None).unwrap()
    }

    #[test]
    fn the_qwen_template_renders_as_the_built_in_format() {
        let t = tmpl(CHAT_TEMPLATE);
        let convs = [
            vec![msg(Role::User, vec![text("the weather is")])],
            vec![
                msg(Role::System, vec![text("Answer briefly.")]),
                msg(
                    Role::User,
                    vec![
                        text("Compare "),
                        image("a.png"),
                        text(" with "),
                        image("b.png"),
                    ],
                ),
            ],
            vec![
                msg(Role::User, vec![image("a.png"), text("What is it?")]),
                msg(Role::Assistant, vec![text("A cat.")]),
                msg(Role::User, vec![text("Sure?")]),
            ],
        ];
        for c in &convs {
            let (a, ia) = t.render(c).unwrap();
            let (b, ib) = prompt::render(c);
            assert_eq!(a, b);
            assert_eq!(ia, ib);
        }
    }

    #[test]
    fn a_template_of_its_own_is_honoured() {
        // A default system prompt and Python string methods, as real templates use them.
        let t = tmpl(
            "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}\
             {% for m in messages %}<|im_start|>{{ m.role }}\n{% for c in m.content %}{% if c.type == 'text' %}{{ c.text.strip() }}\
             {% else %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}{% endfor %}<|im_end|>\n{% endfor %}\
             {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        );
        let conv = [msg(Role::User, vec![image("x.png"), text("  hi  ")])];
        let (out, images) = t.render(&conv).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(images.len(), 1);
    }

    #[test]
    fn template_errors_name_the_file() {
        let syntax = ChatTemplate::compile("{% for %}".into(), "dir/c.jinja".into(), None, None)
            .unwrap_err();
        assert!(
            syntax.contains("dir/c.jinja") && syntax.contains("line 1"),
            "{syntax}"
        );
        let raised = tmpl("{{ raise_exception('roles must alternate') }}")
            .render(&[msg(Role::User, vec![text("x")])])
            .unwrap_err();
        assert!(raised.contains("roles must alternate"), "{raised}");
        let no_images = tmpl("{% for m in messages %}{{ m.role }}{% endfor %}")
            .render(&[msg(Role::User, vec![image("x.png")])])
            .unwrap_err();
        assert!(
            no_images.contains("0 `<|image_pad|>` placeholders for 1 images"),
            "{no_images}"
        );
    }

    #[test]
    fn the_template_is_found_where_transformers_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ChatTemplate::from_dir(dir.path()).unwrap().is_none());
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"eos_token": {"content": "<|im_end|>"}, "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ eos_token }}"}]}"#,
        )
        .unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
        assert_eq!(t.render(&[]).unwrap().0, "<|im_end|>");
        std::fs::write(dir.path().join("chat_template.jinja"), "jinja file").unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
        assert_eq!(t.render(&[]).unwrap().0, "jinja file");
        assert!(t.file.ends_with("chat_template.jinja"));
        std::fs::write(dir.path().join("tokenizer_config.json"), "{oops").unwrap();
        let e = ChatTemplate::from_dir(dir.path()).unwrap_err();
        assert!(
            e.contains("tokenizer_config.json") && e.contains("not valid JSON"),
            "{e}"
        );
    }
}
