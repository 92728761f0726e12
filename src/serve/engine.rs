//! The generation loop behind `vlmtest serve`: greedy decoding over any model that yields
//! next-token logits, optionally masked by a JSON constraint, with per-token logprobs.

use std::sync::Arc;

use super::constrain::{allowed_by_rank, pick, JsonConstraint, Schema};
use crate::case::Message;
use crate::model::ModelError;

/// What the engine needs from a model: a chat template, a tokenizer and next-token logits.
pub trait LogitsModel: Send {
    /// The prompt text for `messages`, ending with the assistant generation prompt.
    fn render(&self, messages: &[Message]) -> Result<String, ModelError>;
    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError>;
    /// The prompt ids of `messages` (rendered and encoded). A model that takes images prepares
    /// them here, for the prefill (`forward_logits` at position 0) that follows.
    fn prompt(&mut self, messages: &[Message]) -> Result<Vec<u32>, ModelError> {
        let text = self.render(messages)?;
        self.encode(&text)
    }
    /// Logits of the last position after feeding `tokens` at position `pos` (0 clears the cache).
    fn forward_logits(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, ModelError>;
    fn eos_tokens(&self) -> &[u32];
    /// Each token id's bytes; `None` for special tokens.
    fn vocab_bytes(&self) -> &[Option<Vec<u8>>];
    /// Whether image parts can be used; a text-only model answers HTTP 400 to them.
    fn accepts_images(&self) -> bool {
        false
    }
}

/// Decoding request.
#[derive(Debug, Clone, Default)]
pub struct GenOptions {
    pub max_tokens: usize,
    pub schema: Option<Arc<Schema>>,
    /// `Some(k)`: record each token's logprob and the `k` best alternatives (`k` may be 0).
    pub top_logprobs: Option<usize>,
}

/// One generated token with its log-probability (log-softmax over the full vocabulary).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(Vec<u8>, f32)>,
}

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
    model: &mut dyn LogitsModel,
    messages: &[Message],
    opts: &GenOptions,
) -> Result<Generation, ModelError> {
    let prompt_ids = model.prompt(messages)?;
    if prompt_ids.is_empty() {
        return Err(ModelError::Other("empty prompt".into()));
    }
    let eos: Vec<u32> = model.eos_tokens().to_vec();
    let mut constraint = opts.schema.clone().map(JsonConstraint::new);
    let mut logits = model.forward_logits(&prompt_ids, 0)?;
    let mut pos = prompt_ids.len();
    let mut out: Vec<u8> = Vec::new();
    let mut lps: Option<Vec<TokenLogprob>> = opts.top_logprobs.map(|_| Vec::new());
    let mut finish = "length";
    let mut generated = 0;
    // Tokens kept back so a constrained answer can always close its JSON.
    let reserve = (opts.max_tokens / 4).min(32);
    while generated < opts.max_tokens {
        if generated + reserve >= opts.max_tokens {
            if let Some(c) = constraint.as_mut() {
                c.tighten();
            }
        }
        let vocab = model.vocab_bytes();
        let id = match &constraint {
            Some(c) => match pick(c, &logits, vocab, &eos) {
                Some(id) => id,
                None => {
                    return Err(ModelError::Other(
                        "no token of the vocabulary continues the JSON".into(),
                    ))
                }
            },
            None => argmax(&logits),
        };
        if eos.contains(&id) {
            finish = "stop";
            break;
        }
        let bytes = vocab
            .get(id as usize)
            .cloned()
            .flatten()
            .unwrap_or_default();
        if let (Some(lps), Some(k)) = (lps.as_mut(), opts.top_logprobs) {
            let lse = log_sum_exp(&logits);
            let top_ids = match &constraint {
                Some(c) => allowed_by_rank(c, &logits, vocab, k),
                None => top_k(&logits, k),
            };
            let top = top_ids
                .iter()
                .filter_map(|&t| {
                    vocab
                        .get(t as usize)
                        .cloned()
                        .flatten()
                        .map(|b| (b, logits[t as usize] - lse))
                })
                .collect();
            lps.push(TokenLogprob {
                bytes: bytes.clone(),
                logprob: logits[id as usize] - lse,
                top,
            });
        }
        if let Some(c) = constraint.as_mut() {
            c.advance(&bytes)
                .map_err(|_| ModelError::Other("constraint rejected its own pick".into()))?;
        }
        out.extend_from_slice(&bytes);
        generated += 1;
        if constraint.as_ref().is_some_and(JsonConstraint::is_complete) {
            finish = "stop";
            break;
        }
        if generated >= opts.max_tokens {
            break;
        }
        logits = model.forward_logits(&[id], pos)?;
        pos += 1;
    }
    Ok(Generation {
        text: String::from_utf8_lossy(&out).into_owned(),
        prompt_tokens: prompt_ids.len(),
        completion_tokens: generated,
        finish_reason: finish,
        logprobs: lps,
    })
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in logits.iter().enumerate() {
        if *x > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn top_k(logits: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, desc);
    }
    idx.truncate(k);
    idx.sort_unstable_by(desc);
    idx
}

fn log_sum_exp(logits: &[f32]) -> f32 {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m + logits.iter().map(|x| (x - m).exp()).sum::<f32>().ln()
}

/// The GPT-2 byte-level alphabet: the char each byte is written as in a byte-level BPE vocab.
pub fn byte_level_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + extra).unwrap_or('\0');
            extra += 1;
            c
        };
    }
    table
}

/// Token bytes for a byte-level BPE tokenizer: each token string mapped back through the
/// byte-level alphabet; special (added) tokens are `None`.
pub fn byte_level_vocab(tokenizer: &tokenizers::Tokenizer) -> Vec<Option<Vec<u8>>> {
    let table = byte_level_chars();
    let inverse: std::collections::HashMap<char, u8> = table
        .iter()
        .enumerate()
        .map(|(b, c)| (*c, b as u8))
        .collect();
    let specials: std::collections::HashSet<u32> = tokenizer
        .get_added_tokens_decoder()
        .iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| *id)
        .collect();
    let n = tokenizer.get_vocab_size(true);
    (0..n as u32)
        .map(|id| {
            if specials.contains(&id) {
                return None;
            }
            let s = tokenizer.id_to_token(id)?;
            s.chars()
                .map(|c| inverse.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Role;

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

    impl LogitsModel for Scripted {
        fn render(&self, messages: &[Message]) -> Result<String, ModelError> {
            Ok(messages.iter().map(Message::joined_text).collect())
        }
        fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
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
            &GenOptions {
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
        let opts = GenOptions {
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
    fn byte_level_alphabet_is_a_bijection() {
        let t = byte_level_chars();
        let set: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
    }
}
