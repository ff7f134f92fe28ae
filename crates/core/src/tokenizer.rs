//! GPT-2's byte-level BPE through Hugging Face `tokenizers`, read from `tokenizer.json`.
//! Encoding adds no special tokens (SPEC.md); BOS is prepended by the recipe when asked.

use crate::error::{Result, TillerError};

pub struct Gpt2Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Gpt2Tokenizer {
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| TillerError::Tokenizer(e.to_string()))?;
        Ok(Self { inner })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| TillerError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text, joining byte-level pieces (a multi-byte character split across
    /// tokens decodes whole once all its tokens are present).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| TillerError::Tokenizer(e.to_string()))
    }

    /// One token as display text (partial UTF-8 shown with U+FFFD).
    pub fn token_text(&self, id: u32) -> String {
        self.inner.decode(&[id], false).unwrap_or_else(|_| format!("<{id}>"))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
