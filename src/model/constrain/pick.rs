//! Masking a decoding step's logits with the automaton: the best token that keeps the output
//! viable.

use super::automaton::JsonConstraint;

/// Picks the highest-logit token that keeps the output viable, or an end-of-sequence token once
/// the JSON is complete. `vocab[id]` is the token's bytes (`None` for special tokens).
/// Returns `None` only if no token fits (a vocabulary without the needed bytes).
pub fn pick(
    constraint: &JsonConstraint,
    logits: &[f32],
    vocab: &[Option<Vec<u8>>],
    eos: &[u32],
) -> Option<u32> {
    if constraint.is_complete() {
        return eos.first().copied();
    }
    allowed_by_rank(constraint, logits, vocab, 1)
        .first()
        .copied()
}

/// The `k` highest-logit tokens that keep the output viable, best first.
pub fn allowed_by_rank(
    constraint: &JsonConstraint,
    logits: &[f32],
    vocab: &[Option<Vec<u8>>],
    k: usize,
) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    let mut order: Vec<u32> = (0..logits.len().min(vocab.len()) as u32).collect();
    // Most steps are settled by the first few candidates: sort a prefix first, all only if needed.
    let mut out = Vec::new();
    let mut sorted_upto = 0;
    let mut cut = 256.min(order.len());
    loop {
        if cut > sorted_upto {
            let desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
            if cut < order.len() {
                order[sorted_upto..].select_nth_unstable_by(cut - sorted_upto - 1, desc);
            }
            order[sorted_upto..cut].sort_unstable_by(desc);
        }
        for &id in &order[sorted_upto..cut] {
            if let Some(bytes) = vocab[id as usize].as_deref() {
                if !bytes.is_empty() && constraint.accepts(bytes) {
                    out.push(id);
                    if out.len() >= k {
                        return out;
                    }
                }
            }
        }
        if cut >= order.len() {
            return out;
        }
        sorted_upto = cut;
        cut = (cut * 4).min(order.len());
    }
}
