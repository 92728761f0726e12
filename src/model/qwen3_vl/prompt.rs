//! The Qwen3-VL chat format and multimodal position ids.
//!
//! The prompt is ChatML as Qwen3-VL's chat template writes it (no default system prompt; each
//! image as `<|vision_start|><|image_pad|><|vision_end|>` where it appears in the message, text
//! parts appended as they are), ending with the assistant header. Each `<|image_pad|>` is then
//! expanded to the image's token count, and `rope_index` computes the (t, h, w) positions the
//! reference `get_rope_index` computes.

use crate::case::{ImageSource, Message, Part};

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const VISION_START: &str = "<|vision_start|>";
pub const VISION_END: &str = "<|vision_end|>";
pub const IMAGE_PAD: &str = "<|image_pad|>";

/// Renders the conversation; returns the text and the images in the order they appear.
pub fn render(messages: &[Message]) -> (String, Vec<&ImageSource>) {
    let mut text = String::new();
    let mut images = Vec::new();
    for m in messages {
        text.push_str(IM_START);
        text.push_str(m.role.as_str());
        text.push('\n');
        for part in &m.parts {
            match part {
                Part::Text { text: t } => text.push_str(t),
                Part::Image { image } => {
                    text.push_str(VISION_START);
                    text.push_str(IMAGE_PAD);
                    text.push_str(VISION_END);
                    images.push(image);
                }
            }
        }
        text.push_str(IM_END);
        text.push('\n');
    }
    text.push_str(IM_START);
    text.push_str("assistant\n");
    (text, images)
}

/// Replaces the `i`-th `image_token` of `ids` with `counts[i]` copies of it.
pub fn expand_image_tokens(
    ids: &[u32],
    image_token: u32,
    counts: &[usize],
) -> Result<Vec<u32>, String> {
    let found = ids.iter().filter(|&&t| t == image_token).count();
    if found != counts.len() {
        return Err(format!(
            "prompt has {found} image placeholders for {} images",
            counts.len()
        ));
    }
    let mut out = Vec::with_capacity(ids.len() + counts.iter().sum::<usize>());
    let mut next = counts.iter();
    for &t in ids {
        if t == image_token {
            let n = next.next().copied().unwrap_or(0);
            out.extend(std::iter::repeat_n(image_token, n));
        } else {
            out.push(t);
        }
    }
    Ok(out)
}

/// Positions `[t, h, w]` for each token of one unpadded sequence, and `max + 1 - len` (the
/// offset decode steps add to their cache position).
///
/// Text tokens advance all three rows together; an image's tokens share the start position
/// `s`, with rows `s + frame`, `s + row`, `s + column` of the merged grid, and the text after
/// it continues from the largest of them plus one.
pub fn rope_index(
    ids: &[u32],
    grids: &[[usize; 3]],
    merge: usize,
    image_token: u32,
) -> Result<([Vec<i64>; 3], i64), String> {
    let mut pos: [Vec<i64>; 3] = Default::default();
    let mut next: i64 = 0;
    let mut i = 0;
    let mut images = grids.iter();
    while i < ids.len() {
        if ids[i] != image_token {
            for row in &mut pos {
                row.push(next);
            }
            next += 1;
            i += 1;
            continue;
        }
        let &[t, h, w] = images
            .next()
            .ok_or_else(|| "more image token runs than images".to_string())?;
        let (gh, gw) = (h / merge, w / merge);
        let count = t * gh * gw;
        if i + count > ids.len() || ids[i..i + count].iter().any(|&x| x != image_token) {
            return Err(format!(
                "image at token {i} needs {count} placeholder tokens"
            ));
        }
        for ft in 0..t {
            for y in 0..gh {
                for x in 0..gw {
                    pos[0].push(next + ft as i64);
                    pos[1].push(next + y as i64);
                    pos[2].push(next + x as i64);
                }
            }
        }
        next += t.max(gh).max(gw) as i64;
        i += count;
    }
    if images.next().is_some() {
        return Err("fewer image token runs than images".into());
    }
    let delta = next - ids.len() as i64;
    Ok((pos, delta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Role;
    use proptest::prelude::*;

    #[test]
    fn renders_chatml_with_vision_tokens() {
        let msgs = vec![
            Message::text(Role::System, "Be brief."),
            Message {
                role: Role::User,
                parts: vec![
                    Part::Image {
                        image: ImageSource::Path("a.png".into()),
                    },
                    Part::Text {
                        text: "What is this?".into(),
                    },
                ],
            },
        ];
        let (text, images) = render(&msgs);
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>\
             <|vision_end|>What is this?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(images.len(), 1);
    }

    #[test]
    fn rope_index_matches_reference_layout() {
        // text(2) + image 1x4x6 patches (merge 2 -> 2x3 = 6 tokens) + text(3)
        let img = 9;
        let ids = [1, 2, img, img, img, img, img, img, 3, 4, 5];
        let (pos, delta) = rope_index(&ids, &[[1, 4, 6]], 2, img).unwrap();
        assert_eq!(pos[0], vec![0, 1, 2, 2, 2, 2, 2, 2, 5, 6, 7]);
        assert_eq!(pos[1], vec![0, 1, 2, 2, 2, 3, 3, 3, 5, 6, 7]);
        assert_eq!(pos[2], vec![0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7]);
        assert_eq!(delta, 8 - 11);
    }

    #[test]
    fn mismatched_placeholders_are_errors() {
        assert!(rope_index(&[9, 9, 1], &[[1, 4, 4]], 2, 9).is_err());
        assert!(rope_index(&[1], &[[1, 2, 2]], 2, 9).is_err());
        assert!(expand_image_tokens(&[1, 9, 9], 9, &[4]).is_err());
        assert_eq!(
            expand_image_tokens(&[1, 9, 2], 9, &[3]).unwrap(),
            vec![1, 9, 9, 9, 2]
        );
    }

    proptest! {
        #[test]
        fn text_only_positions_are_sequential(ids in proptest::collection::vec(0u32..8, 0..50)) {
            let (pos, delta) = rope_index(&ids, &[], 2, 9).unwrap();
            let expect: Vec<i64> = (0..ids.len() as i64).collect();
            prop_assert_eq!(&pos[0], &expect);
            prop_assert_eq!(&pos[2], &expect);
            prop_assert_eq!(delta, 0);
        }
    }
}
