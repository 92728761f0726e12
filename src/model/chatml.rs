//! The ChatML chat template (`<|im_start|>role\n…<|im_end|>\n`) used by SmolLM2 and Qwen.

use crate::case::{Message, Part, Role};

/// Renders messages as ChatML and opens the assistant turn the model must complete. Images are
/// not representable in a text-only model: the caller decides whether they are an error.
pub fn render(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str("<|im_start|>");
        out.push_str(m.role.as_str());
        out.push('\n');
        let mut first = true;
        for p in &m.parts {
            if let Part::Text { text } = p {
                if !first {
                    out.push('\n');
                }
                out.push_str(text);
                first = false;
            }
        }
        out.push_str("<|im_end|>\n");
    }
    out.push_str("<|im_start|>");
    out.push_str(Role::Assistant.as_str());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_turns_and_opens_the_assistant_turn() {
        let msgs = vec![
            Message::text(Role::System, "Be brief."),
            Message::text(Role::User, "Hi?"),
        ];
        assert_eq!(
            render(&msgs),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
