//! Training examples from `Case`s: the prompt (the case's messages in the model's chat template)
//! and the target (the reference answer plus the end-of-turn token), as token ids. Only target
//! tokens carry loss.

use std::sync::Arc;

use crate::case::Case;
use crate::image::Pixels;

use super::TrainError;

/// One tokenized training row.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The case's test name, for errors and logs.
    pub name: String,
    pub prompt: Vec<u32>,
    /// The answer tokens, ending with the end-of-turn token.
    pub target: Vec<u32>,
    /// The preprocessed images of the prompt, in prompt order (vision-language bases only; the
    /// prompt already holds their expanded placeholder tokens).
    pub images: Vec<Arc<Pixels>>,
}

impl Example {
    pub fn len(&self) -> usize {
        self.prompt.len() + self.target.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a case came from, as `file:line`.
pub fn origin_of(case: &Case) -> String {
    match case.origin.line {
        Some(l) => format!("{}:{l}", case.origin.file.display()),
        None => case.origin.file.display().to_string(),
    }
}

/// An error about one case.
pub fn data_error(case: &Case, reason: impl Into<String>) -> TrainError {
    TrainError::Data {
        origin: origin_of(case),
        case: case.id.test_name(),
        reason: reason.into(),
    }
}

/// The training target of a case: its reference answer, which must be present and non-blank.
pub fn target_text(case: &Case) -> Result<&str, TrainError> {
    match case.reference.as_deref() {
        None => Err(data_error(
            case,
            "has no reference answer to train on (add an assistant turn or `answer`)",
        )),
        Some(r) if r.trim().is_empty() => Err(data_error(case, "the reference answer is empty")),
        Some(r) => Ok(r),
    }
}

/// Checks a case can be a training row: messages present, a user turn, a reference answer.
pub fn check_case(case: &Case) -> Result<(), TrainError> {
    if case.messages.is_empty() {
        return Err(data_error(case, "has no messages"));
    }
    if case.question().trim().is_empty() && !case.has_images() {
        return Err(data_error(case, "the user turn is empty"));
    }
    target_text(case).map(|_| ())
}

/// Fits an example into `max_len` tokens by dropping tokens from the start of the prompt (the
/// answer and the question's end matter most); an answer that alone does not fit is an error, and
/// so is a prompt with images that does not fit.
pub fn fit(mut ex: Example, max_len: usize, case: &Case) -> Result<Example, TrainError> {
    if ex.target.len() + 1 > max_len {
        return Err(data_error(
            case,
            format!(
                "the answer is {} tokens, more than max_seq_len {max_len} allows",
                ex.target.len()
            ),
        ));
    }
    if ex.len() > max_len && !ex.images.is_empty() {
        // Cutting into an image's placeholder run would leave tokens without features.
        return Err(data_error(
            case,
            format!(
                "the prompt with its images is {} tokens, more than max_seq_len {max_len} allows (raise max_seq_len or use smaller images)",
                ex.len()
            ),
        ));
    }
    if ex.len() > max_len {
        let cut = ex.len() - max_len;
        ex.prompt.drain(..cut);
    }
    Ok(ex)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::case::{CaseId, Message, Origin, Role};

    fn case(reference: Option<&str>, user: &str) -> Case {
        Case {
            id: CaseId::new("s", "c", "1"),
            tags: vec![],
            messages: vec![Message::text(Role::User, user)],
            reference: reference.map(str::to_owned),
            context: None,
            expect: vec![],
            metadata: BTreeMap::new(),
            ignored: false,
            origin: Origin {
                file: PathBuf::from("cases/x.jsonl"),
                line: Some(3),
            },
        }
    }

    #[test]
    fn rows_without_answers_or_questions_are_named_errors() {
        let err = check_case(&case(None, "hi")).unwrap_err().to_string();
        assert!(
            err.contains("cases/x.jsonl:3")
                && err.contains("s::c::1")
                && err.contains("no reference"),
            "{err}"
        );
        let err = check_case(&case(Some("  "), "hi")).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let err = check_case(&case(Some("a"), " ")).unwrap_err().to_string();
        assert!(err.contains("user turn is empty"), "{err}");
        check_case(&case(Some("a"), "q")).unwrap();
    }

    #[test]
    fn fit_cuts_the_prompt_start_and_rejects_long_answers() {
        let c = case(Some("a"), "q");
        let ex = Example {
            name: "n".into(),
            prompt: vec![1, 2, 3, 4],
            target: vec![5, 6],
            images: Vec::new(),
        };
        let f = fit(ex.clone(), 4, &c).unwrap();
        assert_eq!(f.prompt, vec![3, 4]);
        assert!(fit(ex, 2, &c)
            .unwrap_err()
            .to_string()
            .contains("max_seq_len 2"));
    }
}
