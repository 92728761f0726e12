//! Batching by length: examples sorted by length are cut into batches (so little padding is
//! needed), and the batch order is shuffled per epoch with a seeded generator, so a run and its
//! resumption see the same order.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::data::Example;
use crate::image::Pixels;

/// A padded batch ready for `loss_sum`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids (B, T), right-padded.
    pub ids: Tensor,
    /// Indices into the flattened (B·T) positions whose next token is a target token.
    pub positions: Tensor,
    /// The target token for each position.
    pub targets: Tensor,
    /// Number of target tokens (the loss normaliser).
    pub n_targets: usize,
    /// Real (non-pad) tokens fed, for tokens/s.
    pub n_tokens: usize,
    /// Each row's unpadded input ids (what `ids` holds before its padding), for models whose
    /// positions depend on the content (Qwen3-VL's multimodal rotary positions).
    pub row_ids: Vec<Vec<u32>>,
    /// Each row's images, in prompt order.
    pub images: Vec<Vec<Arc<Pixels>>>,
}

/// The ids, positions and targets of a batch, before they become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    pub rows: usize,
    pub width: usize,
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub targets: Vec<u32>,
    pub n_tokens: usize,
    pub row_lens: Vec<usize>,
    pub images: Vec<Vec<Arc<Pixels>>>,
}

/// Lays out examples as inputs `seq[..L-1]` predicting `seq[1..]`; loss positions are those whose
/// next token belongs to the answer.
pub fn plan(examples: &[&Example], pad: u32) -> BatchPlan {
    let width = examples
        .iter()
        .map(|e| e.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let mut ids = Vec::with_capacity(examples.len() * width);
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    let mut n_tokens = 0;
    let mut row_lens = Vec::with_capacity(examples.len());
    for (row, e) in examples.iter().enumerate() {
        let seq: Vec<u32> = e.prompt.iter().chain(&e.target).copied().collect();
        let input = &seq[..seq.len().saturating_sub(1)];
        n_tokens += input.len();
        row_lens.push(input.len());
        ids.extend_from_slice(input);
        ids.extend(std::iter::repeat_n(pad, width - input.len()));
        for j in e.prompt.len().saturating_sub(1)..input.len() {
            positions.push((row * width + j) as u32);
            targets.push(seq[j + 1]);
        }
    }
    BatchPlan {
        rows: examples.len(),
        width,
        ids,
        positions,
        targets,
        n_tokens,
        row_lens,
        images: examples.iter().map(|e| e.images.clone()).collect(),
    }
}

impl BatchPlan {
    pub fn to_batch(&self, device: &Device) -> candle_core::Result<Batch> {
        Ok(Batch {
            ids: Tensor::from_vec(self.ids.clone(), (self.rows, self.width), device)?,
            positions: Tensor::from_vec(self.positions.clone(), self.positions.len(), device)?,
            targets: Tensor::from_vec(self.targets.clone(), self.targets.len(), device)?,
            n_targets: self.targets.len(),
            n_tokens: self.n_tokens,
            row_ids: self
                .row_lens
                .iter()
                .enumerate()
                .map(|(r, &n)| self.ids[r * self.width..r * self.width + n].to_vec())
                .collect(),
            images: self.images.clone(),
        })
    }
}

/// Indices of `examples` grouped into batches of similar length, in the order of `epoch`.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Ties broken by index so the grouping is a pure function of the data.
    order.sort_by_key(|&i| (lengths[i], i));
    let mut batches: Vec<Vec<usize>> = order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    batches.shuffle(&mut rng);
    batches
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ex(p: &[u32], t: &[u32]) -> Example {
        Example {
            name: "e".into(),
            prompt: p.to_vec(),
            target: t.to_vec(),
            images: Vec::new(),
        }
    }

    #[test]
    fn loss_positions_cover_exactly_the_answer() {
        let a = ex(&[1, 2, 3], &[4, 5]);
        let b = ex(&[6], &[7]);
        let p = plan(&[&a, &b], 0);
        assert_eq!(p.width, 4);
        assert_eq!(p.ids, vec![1, 2, 3, 4, 6, 0, 0, 0]);
        // Row 0: position 2 (token 3) predicts 4, position 3 predicts 5. Row 1: position 0 predicts 7.
        assert_eq!(p.positions, vec![2, 3, 4]);
        assert_eq!(p.targets, vec![4, 5, 7]);
        assert_eq!(p.n_tokens, 5);
        let b = p.to_batch(&Device::Cpu).unwrap();
        assert_eq!(b.row_ids, vec![vec![1, 2, 3, 4], vec![6]]);
    }

    proptest! {
        #[test]
        fn batches_partition_the_data(lengths in proptest::collection::vec(1usize..50, 0..40), bs in 1usize..6, seed: u64, epoch in 0usize..4) {
            let b = epoch_batches(&lengths, bs, seed, epoch);
            let mut all: Vec<usize> = b.iter().flatten().copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..lengths.len()).collect::<Vec<_>>());
            prop_assert!(b.iter().all(|x| !x.is_empty() && x.len() <= bs));
            prop_assert_eq!(b, epoch_batches(&lengths, bs, seed, epoch));
        }

        #[test]
        fn every_target_token_is_predicted_once(p in proptest::collection::vec(1u32..9, 1..6), t in proptest::collection::vec(1u32..9, 1..6)) {
            let e = ex(&p, &t);
            let plan = plan(&[&e], 0);
            prop_assert_eq!(&plan.targets, &t);
        }
    }
}
