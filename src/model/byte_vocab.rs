//! Token bytes of a byte-level BPE vocabulary (GPT-2's alphabet, used by SmolLM2 and Qwen):
//! what constrained decoding and logprobs read a token as.

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
