//! The one error type of the Tiller libraries. Every variant reads as a sentence a user can act on.

use thiserror::Error;

pub type Result<T, E = TillerError> = std::result::Result<T, E>;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum TillerError {
    #[error(
        "model.safetensors is malformed: {0} (download it again, or check that it is a Hugging Face checkpoint in safetensors format)"
    )]
    Safetensors(String),

    #[error("tensor `{tensor}` has shape {got:?}, but this model's configuration needs {expected:?}")]
    ShapeMismatch { tensor: String, expected: Vec<usize>, got: Vec<usize> },

    #[error("tensor `{0}` is missing from the checkpoint: is it a model of the family its config.json names (GPT-2, Llama, Qwen2 or GPT-NeoX), and complete?")]
    MissingTensor(String),

    #[error("tensor `{tensor}` has dtype {dtype}; Tiller reads F32, F16 and BF16")]
    UnsupportedDtype { tensor: String, dtype: String },

    #[error("config.json is invalid: {0}")]
    Config(String),

    #[error("tokenizer.json could not be read: {0}")]
    Tokenizer(String),

    #[error("tokenizer.json is not this model's: {0}; use the tokenizer that came with the weights")]
    TokenizerMismatch(String),

    #[error("the recipe is invalid: {0}")]
    Recipe(String),

    #[error("{0}")]
    Input(String),

    #[error("GPU error: {0}")]
    Gpu(String),
}

impl TillerError {
    pub fn recipe(msg: impl Into<String>) -> Self {
        Self::Recipe(msg.into())
    }
    pub fn input(msg: impl Into<String>) -> Self {
        Self::Input(msg.into())
    }
}

/// Whole MiB, rounded up: the unit of the memory budgets' messages (a budget is never shown
/// as smaller than what it refused).
pub fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}
