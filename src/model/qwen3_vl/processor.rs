//! The Qwen3-VL processor: a conversation into model input. It renders the chat template (the
//! checkpoint's own, else Qwen3-VL's format), loads and preprocesses the images, tokenizes and
//! expands each image's placeholder to its patch count. Inference (`Qwen3VlModel`) and training
//! (`train::qwen`) both prepare prompts here, so they see the same tokens and pixels.

use tokenizers::Tokenizer;

use super::config::Config;
use super::prompt;
use super::template::ChatTemplate;
use crate::case::{ImageSource, Message};
use crate::image::{self, Pixels, PreprocessorConfig};
use crate::model::checkpoint::CheckpointFiles;
use crate::model::corrupt;
use crate::model::ModelError;

/// One request turned into model input: token ids with expanded image placeholders, and the
/// preprocessed pixels of its images in prompt order.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub ids: Vec<u32>,
    pub images: Vec<Pixels>,
}

/// Why a conversation could not be prepared, by step.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProcessorError {
    /// The chat template failed to render the conversation.
    #[error("{0}")]
    Template(String),
    /// An image could not be read or preprocessed.
    #[error("{0}")]
    Image(String),
    /// The tokenizer failed on the rendered prompt.
    #[error("{0}")]
    Tokenizer(String),
    /// The prompt's image placeholders do not match its images.
    #[error("{0}")]
    Placeholders(String),
}

impl From<ProcessorError> for ModelError {
    fn from(e: ProcessorError) -> Self {
        match e {
            ProcessorError::Tokenizer(m) => ModelError::Tokenizer(m),
            ProcessorError::Template(m)
            | ProcessorError::Image(m)
            | ProcessorError::Placeholders(m) => ModelError::Other(m),
        }
    }
}

/// The tokenizer, image settings and chat template of one checkpoint.
pub struct Processor {
    tokenizer: Tokenizer,
    image: PreprocessorConfig,
    /// The checkpoint's own chat template; `None` renders Qwen3-VL's format (`prompt::render`).
    template: Option<ChatTemplate>,
    image_token_id: u32,
}

impl Processor {
    /// Reads the processor files of a checkpoint and checks them against its `config.json`: the
    /// patch settings, and the special tokens the prompt format needs.
    pub fn load(files: &CheckpointFiles, cfg: &Config) -> Result<Self, ModelError> {
        let image = match &files.preprocessor {
            Some(p) => PreprocessorConfig::from_file(p).map_err(|e| corrupt(p, e))?,
            None => {
                return Err(ModelError::Missing {
                    path: files.dir.join("preprocessor_config.json"),
                    hint: " (Qwen3-VL needs the image processor settings)".into(),
                })
            }
        };
        if image.patch_size != cfg.vision.patch_size
            || image.merge_size != cfg.vision.spatial_merge_size
            || image.temporal_patch_size != cfg.vision.temporal_patch_size
        {
            return Err(corrupt(
                files.preprocessor.as_deref().unwrap_or(&files.dir),
                "patch_size/merge_size/temporal_patch_size differ from config.json's vision_config",
            ));
        }
        let tokenizer =
            Tokenizer::from_file(&files.tokenizer).map_err(|e| corrupt(&files.tokenizer, e))?;
        for special in [
            prompt::IMAGE_PAD,
            prompt::VISION_START,
            prompt::VISION_END,
            prompt::IM_START,
            prompt::IM_END,
        ] {
            if tokenizer.token_to_id(special).is_none() {
                return Err(corrupt(
                    &files.tokenizer,
                    format!("has no `{special}` token"),
                ));
            }
        }
        if tokenizer.token_to_id(prompt::IMAGE_PAD) != Some(cfg.image_token_id) {
            return Err(corrupt(
                &files.tokenizer,
                format!(
                    "`<|image_pad|>` is not config.json's image_token_id {}",
                    cfg.image_token_id
                ),
            ));
        }
        let template = ChatTemplate::from_dir(&files.dir).map_err(ModelError::Other)?;
        Ok(Self {
            tokenizer,
            image,
            template,
            image_token_id: cfg.image_token_id,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The image preprocessing settings (`preprocessor_config.json`).
    pub fn image_config(&self) -> &PreprocessorConfig {
        &self.image
    }

    /// Renders, tokenizes and preprocesses one conversation.
    pub fn prepare(&self, messages: &[Message]) -> Result<Prepared, ProcessorError> {
        let (text, sources) = self.render(messages)?;
        let images = self.load_images(&sources)?;
        self.prepare_pixels(&text, images)
    }

    /// The prompt text of a conversation (with the generation prompt) and its images in order:
    /// the checkpoint's chat template when it has one, else Qwen3-VL's format.
    pub fn render<'m>(
        &self,
        messages: &'m [Message],
    ) -> Result<(String, Vec<&'m ImageSource>), ProcessorError> {
        match &self.template {
            Some(t) => t.render(messages).map_err(ProcessorError::Template),
            None => Ok(prompt::render(messages)),
        }
    }

    /// Loads and preprocesses images for the vision tower.
    pub fn load_images(&self, sources: &[&ImageSource]) -> Result<Vec<Pixels>, ProcessorError> {
        sources
            .iter()
            .map(|s| {
                let img = image::load(s).map_err(|e| ProcessorError::Image(e.to_string()))?;
                image::preprocess(&img, &self.image)
                    .map_err(|e| ProcessorError::Image(e.to_string()))
            })
            .collect()
    }

    /// Tokenizes text as the prompt format writes it (special tokens are in the text).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ProcessorError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ProcessorError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokenizes a rendered prompt and expands its image placeholders for `images`.
    pub fn prepare_pixels(
        &self,
        text: &str,
        images: Vec<Pixels>,
    ) -> Result<Prepared, ProcessorError> {
        let counts: Vec<usize> = images
            .iter()
            .map(|p| p.tokens(self.image.merge_size))
            .collect();
        let ids = prompt::expand_image_tokens(&self.encode(text)?, self.image_token_id, &counts)
            .map_err(ProcessorError::Placeholders)?;
        Ok(Prepared { ids, images })
    }

    /// Decodes generated ids to text, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }
}
