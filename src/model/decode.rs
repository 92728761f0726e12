//! The one generation loop. Every local model decodes through it: `Model::generate` of the GGUF,
//! GGUF-with-adapter and Qwen3-VL models, the trainer's snapshots (which are those models) and
//! `vlmtest serve`.
//!
//! A model meets the loop in one of two shapes. `Decoder` is one conversation at a time: prompt
//! ids from messages (pixels prepared on the side), next-token logits of tokens fed at a position,
//! its end tokens and its vocabulary's bytes. `StepLogits` is a batch of sequences decoded in
//! lockstep (Qwen3-VL prefills a left-padded batch); `OneSequence` puts a `Decoder` behind it, so
//! `decode` — greedy, optionally under a JSON constraint, with optional logprobs — is written once.

use std::sync::Arc;

use super::constrain::{allowed_by_rank, pick, JsonConstraint, Schema};
use super::ModelError;
use crate::case::Message;

/// A model that decodes one conversation at a time.
pub trait Decoder: Send {
    /// The prompt ids of `messages`: rendered with the model's chat template, ending with the
    /// assistant generation prompt, and tokenized. A model that reads images prepares their pixels
    /// here, for the prefill (`forward_logits` at position 0) that follows.
    fn prompt(&mut self, messages: &[Message]) -> Result<Vec<u32>, ModelError>;
    /// Logits of the last position after feeding `tokens` at position `pos` (the number of
    /// tokens the cache holds; 0 clears it).
    fn forward_logits(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, ModelError>;
    /// The ids that end a generation.
    fn eos_tokens(&self) -> &[u32];
    /// Each token id's bytes; `None` for special tokens. Only constrained decoding and logprobs
    /// read it.
    fn vocab_bytes(&self) -> &[Option<Vec<u8>>];
    /// Whether image parts can be used; a text-only model answers HTTP 400 to them in `serve`.
    fn accepts_images(&self) -> bool {
        false
    }
}

/// A batch of sequences decoded in lockstep: the loop's view of a model.
pub trait StepLogits {
    /// How many sequences the batch holds.
    fn rows(&self) -> usize;
    /// Feeds every row's prompt (the cache cleared first); each row's next-token logits.
    fn prefill(&mut self) -> Result<Vec<Vec<f32>>, ModelError>;
    /// Feeds one token per row after what the cache holds; each row's next-token logits.
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, ModelError>;
    /// The ids that end a row.
    fn eos_tokens(&self) -> &[u32];
    /// Each token id's bytes (see `Decoder::vocab_bytes`).
    fn vocab_bytes(&self) -> &[Option<Vec<u8>>];
}

/// One `Decoder` conversation as a batch of one row.
pub struct OneSequence<'a> {
    model: &'a mut dyn Decoder,
    prompt: &'a [u32],
    pos: usize,
}

impl<'a> OneSequence<'a> {
    /// The sequence that continues `prompt` (ids from `model.prompt`).
    pub fn new(model: &'a mut dyn Decoder, prompt: &'a [u32]) -> Self {
        Self {
            model,
            prompt,
            pos: 0,
        }
    }
}

impl StepLogits for OneSequence<'_> {
    fn rows(&self) -> usize {
        1
    }

    fn prefill(&mut self) -> Result<Vec<Vec<f32>>, ModelError> {
        self.pos = self.prompt.len();
        Ok(vec![self.model.forward_logits(self.prompt, 0)?])
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, ModelError> {
        let logits = self.model.forward_logits(&tokens[..1], self.pos)?;
        self.pos += 1;
        Ok(vec![logits])
    }

    fn eos_tokens(&self) -> &[u32] {
        self.model.eos_tokens()
    }

    fn vocab_bytes(&self) -> &[Option<Vec<u8>>] {
        self.model.vocab_bytes()
    }
}

/// Decoding settings of one call of the loop.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// The most tokens a row generates (a constrained row may overrun it to close its JSON, by
    /// up to `CLOSE_OVERRUN`).
    pub max_tokens: usize,
    /// Masks every row's choices to prefixes of JSON texts matching this schema.
    pub schema: Option<Arc<Schema>>,
    /// `Some(k)`: record each token's logprob and the `k` best alternatives (`k` may be 0).
    pub top_logprobs: Option<usize>,
}

impl DecodeOptions {
    /// Plain greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            ..Self::default()
        }
    }
}

/// How many tokens past `max_tokens` constrained decoding may spend closing its JSON.
pub const CLOSE_OVERRUN: usize = 64;

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end token, or a complete JSON text under a schema.
    Stop,
    /// The token limit.
    Length,
}

/// One generated token with its log-probability (log-softmax over the full vocabulary).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The best alternatives (allowed ones, under a schema), best first.
    pub top: Vec<(Vec<u8>, f32)>,
}

/// What one row generated.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The generated ids, the end token excluded.
    pub ids: Vec<u32>,
    pub finish: Finish,
    /// Per generated token, when `top_logprobs` asked for them.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

impl Decoded {
    /// The generated bytes, token by token through `vocab` (special tokens write nothing).
    pub fn bytes(&self, vocab: &[Option<Vec<u8>>]) -> Vec<u8> {
        self.ids
            .iter()
            .filter_map(|&id| vocab.get(id as usize).cloned().flatten())
            .flatten()
            .collect()
    }
}

/// Prompts `model` with `messages` and decodes one answer: the prompt length and what was
/// generated.
pub fn generate(
    model: &mut dyn Decoder,
    messages: &[Message],
    opts: &DecodeOptions,
) -> Result<(usize, Decoded), ModelError> {
    let prompt = model.prompt(messages)?;
    if prompt.is_empty() {
        return Err(ModelError::Other("empty prompt".into()));
    }
    let mut rows = decode(&mut OneSequence::new(model, &prompt), opts)?;
    let one = rows
        .pop()
        .ok_or_else(|| ModelError::Other("the decoder returned no row".into()))?;
    Ok((prompt.len(), one))
}

/// The generation loop: prefills every row, then picks each row's next token (the greedy choice,
/// masked by the schema when there is one) and feeds it until every row has stopped. A row stops
/// at an end token, a complete JSON text or its token limit; rows that stopped are still fed
/// (their greedy choice) while others go on, and their picks are dropped.
pub fn decode(
    model: &mut dyn StepLogits,
    opts: &DecodeOptions,
) -> Result<Vec<Decoded>, ModelError> {
    let limit = if opts.schema.is_some() {
        opts.max_tokens + CLOSE_OVERRUN
    } else {
        opts.max_tokens
    };
    let mut rows: Vec<Row> = (0..model.rows())
        .map(|_| Row::new(opts, limit == 0))
        .collect();
    if limit == 0 || rows.is_empty() {
        return Ok(rows.into_iter().map(Row::finish).collect());
    }
    let eos = model.eos_tokens().to_vec();
    let mut logits = model.prefill()?;
    if logits.len() != rows.len() {
        return Err(ModelError::Other(format!(
            "{} rows of logits for {} sequences",
            logits.len(),
            rows.len()
        )));
    }
    loop {
        let vocab = model.vocab_bytes();
        let mut next = Vec::with_capacity(rows.len());
        for (row, l) in rows.iter_mut().zip(&logits) {
            next.push(match row.finish {
                Some(_) => argmax(l),
                None => row.advance(l, vocab, &eos, opts, limit)?,
            });
        }
        if rows.iter().all(|r| r.finish.is_some()) {
            break;
        }
        logits = model.step(&next)?;
    }
    Ok(rows.into_iter().map(Row::finish).collect())
}

/// One row's state in the loop.
struct Row {
    constraint: Option<JsonConstraint>,
    ids: Vec<u32>,
    logprobs: Option<Vec<TokenLogprob>>,
    finish: Option<Finish>,
}

impl Row {
    fn new(opts: &DecodeOptions, exhausted: bool) -> Self {
        Self {
            constraint: opts.schema.clone().map(JsonConstraint::new),
            ids: Vec::new(),
            logprobs: opts.top_logprobs.map(|_| Vec::new()),
            finish: exhausted.then_some(Finish::Length),
        }
    }

    /// Picks the next token from `logits`, records it, and marks the row finished when it ends.
    fn advance(
        &mut self,
        logits: &[f32],
        vocab: &[Option<Vec<u8>>],
        eos: &[u32],
        opts: &DecodeOptions,
        limit: usize,
    ) -> Result<u32, ModelError> {
        // Tokens kept back so a constrained answer can always close its JSON. The reserve is a
        // guess: when the JSON still is not closed at `max_tokens` (a long required key after the
        // last open string, say), tightened decoding goes on for up to `CLOSE_OVERRUN` more tokens,
        // so the reply is complete JSON rather than a truncated one.
        let reserve = (opts.max_tokens / 4).min(32);
        if self.ids.len() + reserve >= opts.max_tokens {
            if let Some(c) = self.constraint.as_mut() {
                c.tighten();
            }
        }
        let id = match &self.constraint {
            Some(c) => pick(c, logits, vocab, eos).ok_or_else(|| {
                ModelError::Other("no token of the vocabulary continues the JSON".into())
            })?,
            None => argmax(logits),
        };
        if eos.contains(&id) {
            self.finish = Some(Finish::Stop);
            return Ok(id);
        }
        let bytes = || {
            vocab
                .get(id as usize)
                .cloned()
                .flatten()
                .unwrap_or_default()
        };
        if let (Some(lps), Some(k)) = (self.logprobs.as_mut(), opts.top_logprobs) {
            let lse = log_sum_exp(logits);
            let top_ids = match &self.constraint {
                Some(c) => allowed_by_rank(c, logits, vocab, k),
                None => top_k(logits, k),
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
                bytes: bytes(),
                logprob: logits[id as usize] - lse,
                top,
            });
        }
        if let Some(c) = self.constraint.as_mut() {
            c.advance(&bytes())
                .map_err(|_| ModelError::Other("constraint rejected its own pick".into()))?;
        }
        self.ids.push(id);
        if self
            .constraint
            .as_ref()
            .is_some_and(JsonConstraint::is_complete)
        {
            self.finish = Some(Finish::Stop);
        } else if self.ids.len() >= limit {
            self.finish = Some(Finish::Length);
        }
        Ok(id)
    }

    fn finish(self) -> Decoded {
        Decoded {
            ids: self.ids,
            finish: self.finish.unwrap_or(Finish::Length),
            logprobs: self.logprobs,
        }
    }
}

/// Index of the largest logit; the first one on ties, so decoding is deterministic.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` highest logits' ids, best first.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch whose row `r` favours `scripts[r][step]` at each step (id 7 past its end), and
    /// which records the tokens each step was fed.
    struct Scripts {
        scripts: Vec<Vec<u32>>,
        fed: Vec<Vec<u32>>,
        eos: Vec<u32>,
    }

    impl Scripts {
        fn logits(&self) -> Vec<Vec<f32>> {
            let step = self.fed.len();
            self.scripts
                .iter()
                .map(|s| {
                    let mut l = vec![0.0f32; 8];
                    l[s.get(step).copied().unwrap_or(7) as usize] = 1.0;
                    l
                })
                .collect()
        }
    }

    impl StepLogits for Scripts {
        fn rows(&self) -> usize {
            self.scripts.len()
        }
        fn prefill(&mut self) -> Result<Vec<Vec<f32>>, ModelError> {
            self.fed.clear();
            Ok(self.logits())
        }
        fn step(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, ModelError> {
            self.fed.push(tokens.to_vec());
            Ok(self.logits())
        }
        fn eos_tokens(&self) -> &[u32] {
            &self.eos
        }
        fn vocab_bytes(&self) -> &[Option<Vec<u8>>] {
            &[]
        }
    }

    #[test]
    fn each_row_stops_on_its_own_and_finished_rows_are_fed_their_greedy_choice() {
        let mut m = Scripts {
            scripts: vec![vec![1, 2, 6], vec![3, 3, 3, 3, 3]],
            fed: Vec::new(),
            eos: vec![6],
        };
        let out = decode(&mut m, &DecodeOptions::greedy(4)).unwrap();
        assert_eq!(out[0].ids, [1, 2]);
        assert_eq!(out[0].finish, Finish::Stop);
        assert_eq!(out[1].ids, [3, 3, 3, 3]);
        assert_eq!(out[1].finish, Finish::Length);
        assert_eq!(m.fed, [vec![1, 3], vec![2, 3], vec![6, 3]]);
    }

    #[test]
    fn no_token_budget_decodes_nothing_and_runs_no_prefill() {
        let mut m = Scripts {
            scripts: vec![vec![1]],
            fed: vec![vec![0]],
            eos: vec![6],
        };
        let out = decode(&mut m, &DecodeOptions::greedy(0)).unwrap();
        assert!(out[0].ids.is_empty());
        assert_eq!(out[0].finish, Finish::Length);
        assert_eq!(m.fed, [vec![0]], "prefill would have cleared it");
    }

    #[test]
    fn argmax_takes_the_first_of_equal_logits() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -2.0]), 1);
        assert_eq!(argmax(&[0.5]), 0);
    }
}
