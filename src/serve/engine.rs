//! `vlmtest serve`'s side of generation: the shared loop (`model::decode`) run for one chat
//! request, its output put in the shape of an OpenAI reply (text, finish reason, logprobs).

use crate::case::Message;
use crate::model::decode::{self, DecodeOptions, Decoder, Finish, TokenLogprob};
use crate::model::ModelError;

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// `stop` (end of sequence or complete JSON) or `length`.
    pub finish_reason: &'static str,
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// Greedy generation. Under a schema the output is a prefix of a matching JSON text, and a
/// complete one when it ends with `stop`.
pub fn generate(
    model: &mut dyn Decoder,
    messages: &[Message],
    opts: &DecodeOptions,
) -> Result<Generation, ModelError> {
    let (prompt_tokens, out) = decode::generate(model, messages, opts)?;
    Ok(Generation {
        text: String::from_utf8_lossy(&out.bytes(model.vocab_bytes())).into_owned(),
        prompt_tokens,
        completion_tokens: out.ids.len(),
        finish_reason: match out.finish {
            Finish::Stop => "stop",
            Finish::Length => "length",
        },
        logprobs: out.logprobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Role;
    use crate::model::constrain::Schema;
    use crate::model::decode::CLOSE_OVERRUN;
    use std::sync::Arc;

    /// A byte-level toy model: its vocabulary is the 256 bytes plus an end token, and its logits
    /// follow a fixed script of bytes (then favour `{` forever), so tests can drive the loop.
    struct Scripted {
        vocab: Vec<Option<Vec<u8>>>,
        script: Vec<u8>,
        eos: Vec<u32>,
    }

    impl Scripted {
        fn new(script: &str) -> Self {
            let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
            vocab.push(None);
            Self {
                vocab,
                script: script.as_bytes().to_vec(),
                eos: vec![256],
            }
        }
    }

    impl Decoder for Scripted {
        fn prompt(&mut self, messages: &[Message]) -> Result<Vec<u32>, ModelError> {
            let text: String = messages.iter().map(Message::joined_text).collect();
            Ok(text.bytes().map(u32::from).collect())
        }
        fn forward_logits(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, ModelError> {
            // The prompt below is 2 bytes long; step 0 is the first generated token.
            let step = (pos + tokens.len()).saturating_sub(2);
            let mut l = vec![0.0f32; 257];
            match self.script.get(step) {
                Some(&b) => l[b as usize] = 10.0,
                None => l[b'{' as usize] = 10.0,
            }
            l[b'}' as usize] = 5.0;
            Ok(l)
        }
        fn eos_tokens(&self) -> &[u32] {
            &self.eos
        }
        fn vocab_bytes(&self) -> &[Option<Vec<u8>>] {
            &self.vocab
        }
    }

    fn msgs() -> Vec<Message> {
        vec![Message::text(Role::User, "hi")]
    }

    #[test]
    fn free_form_runs_to_the_token_limit() {
        let mut m = Scripted::new("Sure! It is 4.");
        let g = generate(
            &mut m,
            &msgs(),
            &DecodeOptions {
                max_tokens: 8,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(g.text, "Sure! It");
        assert_eq!(g.finish_reason, "length");
        assert_eq!((g.prompt_tokens, g.completion_tokens), (2, 8));
    }

    #[test]
    fn a_schema_turns_prose_into_valid_json_with_logprobs() {
        let schema = Schema::compile(&serde_json::json!({
            "type": "object",
            "properties": {"score": {"type": "integer", "enum": [1, 2, 3]}},
            "required": ["score"],
        }))
        .unwrap();
        let mut m = Scripted::new("Sure! It is 4.");
        let opts = DecodeOptions {
            max_tokens: 200,
            schema: Some(Arc::new(schema)),
            top_logprobs: Some(3),
        };
        let g = generate(&mut m, &msgs(), &opts).unwrap();
        let v: serde_json::Value = serde_json::from_str(&g.text).unwrap();
        assert!(
            (1..=3).contains(&v["score"].as_i64().unwrap()),
            "{}",
            g.text
        );
        assert_eq!(g.finish_reason, "stop");
        let lps = g.logprobs.unwrap();
        assert_eq!(lps.len(), g.completion_tokens);
        let score_tok = lps.iter().find(|t| t.bytes[0].is_ascii_digit()).unwrap();
        assert!(score_tok
            .top
            .iter()
            .all(|(b, _)| matches!(b.as_slice(), b"1" | b"2" | b"3")));
        assert!(score_tok.logprob <= 0.0);
    }

    #[test]
    fn a_short_budget_still_closes_the_json() {
        // Byte-level tokens and two long required keys: the 4-token reserve cannot write them,
        // so the engine overruns `max_tokens` to close the object instead of cutting it off.
        let schema = Schema::compile(&serde_json::json!({
            "type": "object",
            "properties": {
                "an_unusually_long_first_key": {"type": "string"},
                "and_an_even_longer_second_key": {"type": "string"},
            },
            "required": ["an_unusually_long_first_key", "and_an_even_longer_second_key"],
        }))
        .unwrap();
        let mut m = Scripted::new("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        let opts = DecodeOptions {
            max_tokens: 16,
            schema: Some(Arc::new(schema)),
            top_logprobs: None,
        };
        let g = generate(&mut m, &msgs(), &opts).unwrap();
        let v: serde_json::Value = serde_json::from_str(&g.text).unwrap();
        assert!(v["and_an_even_longer_second_key"].is_string(), "{}", g.text);
        assert_eq!(g.finish_reason, "stop");
        assert!(g.completion_tokens > 16 && g.completion_tokens <= 16 + CLOSE_OVERRUN);
    }
}
