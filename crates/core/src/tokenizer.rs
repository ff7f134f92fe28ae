//! A model's tokenizer (`tokenizer.json`, through Hugging Face `tokenizers`) with what the recipe
//! needs to know about it: whether and which BOS its post-processor adds (Llama 3 adds
//! `<|begin_of_text|>`, GPT-2 nothing), the padding token ActAdd pads steering texts with (the
//! single token of `" "`: 220 for GPT-2 and Llama 3), and the chat template of an instruct
//! model (`chat_template` of `tokenizer_config.json`, rendered by minijinja as Hugging Face's
//! `apply_chat_template(..., add_generation_prompt=True)` does).
//!
//! `encode` adds no special tokens; BOS is prepended by the recipe when it is on. Special tokens
//! written in the text (`<|start_header_id|>` of a rendered template) are still recognised.

use serde_json::Value;

use crate::arch::ModelSpec;
use crate::error::{Result, TillerError};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The token the post-processor puts first, if it adds one.
    default_bos: Option<u32>,
    /// The BOS id to prepend when BOS is on.
    bos: Option<u32>,
    /// End-of-sequence ids (a completion stops at one when asked).
    eos: Vec<u32>,
    pad: u32,
    chat_template: Option<String>,
    bos_text: String,
    eos_text: String,
}

fn tok_err(e: impl std::fmt::Display) -> TillerError {
    TillerError::Tokenizer(e.to_string())
}

/// A special token's text in tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    let v = v?;
    v.as_str().map(str::to_string).or_else(|| v.get("content").and_then(Value::as_str).map(str::to_string))
}

/// `tokenizers` slices each merge's second token past the `continuing_subword_prefix` without
/// checking its length, and panics on a shorter one (found by AFL++): refused here first.
fn check_bpe_merges(text: &str) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Probe {
        model: Option<ModelProbe>,
    }
    #[derive(serde::Deserialize)]
    struct ModelProbe {
        continuing_subword_prefix: Option<String>,
        merges: Option<Vec<Value>>,
    }
    let Ok(Probe { model: Some(ModelProbe { continuing_subword_prefix: Some(prefix), merges: Some(merges) }) }) =
        serde_json::from_str::<Probe>(text)
    else {
        return Ok(());
    };
    if prefix.is_empty() {
        return Ok(());
    }
    for m in &merges {
        let second = match m {
            Value::String(s) => s.split_once(' ').map(|(_, b)| b.to_string()),
            Value::Array(parts) => parts.get(1).and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        if let Some(b) = second {
            if !b.is_char_boundary(prefix.len().min(b.len())) || b.len() < prefix.len() {
                return Err(TillerError::Tokenizer(format!(
                    "the merge {m} has a second token shorter than the continuing_subword_prefix {prefix:?}"
                )));
            }
        }
    }
    Ok(())
}

/// A tokenizer that cannot be the model's: not byte-level BPE (every family Tiller runs uses
/// one), or token ids past the model's embedding (a vocabulary smaller than the embedding is
/// normal: Qwen2 and Pythia pad it).
fn check_against(inner: &tokenizers::Tokenizer, spec: &ModelSpec) -> Result<()> {
    use tokenizers::models::ModelWrapper;
    let kind = match inner.get_model() {
        ModelWrapper::BPE(_) => None,
        ModelWrapper::WordLevel(_) => Some("WordLevel"),
        ModelWrapper::WordPiece(_) => Some("WordPiece"),
        ModelWrapper::Unigram(_) => Some("Unigram"),
    };
    let family = spec.family.model_type();
    if let Some(kind) = kind {
        return Err(TillerError::TokenizerMismatch(format!("it is a {kind} tokenizer, and {family} models use a BPE tokenizer")));
    }
    if let Some((token, &id)) = inner.get_vocab(true).iter().max_by_key(|(_, &id)| id) {
        if id as usize >= spec.vocab_size {
            return Err(TillerError::TokenizerMismatch(format!(
                "its token {token:?} has id {id}, past the model's {} embedding rows (vocab_size)",
                spec.vocab_size
            )));
        }
    }
    Ok(())
}

impl Tokenizer {
    /// A tokenizer from `tokenizer.json` alone (no chat template; BOS and EOS from the
    /// tokenizer's own special tokens).
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        Self::from_files(json, None, None)
    }

    /// `tokenizer.json`, the optional `tokenizer_config.json`, and the model's spec (whose
    /// config.json names BOS and EOS ids).
    pub fn from_files(json: &[u8], tokenizer_config: Option<&[u8]>, spec: Option<&ModelSpec>) -> Result<Self> {
        // Checked first: `tokenizers` panics (instead of failing) on some JSON that stops short
        // inside a part (found by the fuzzer: a decoder cut off mid-key).
        let text = std::str::from_utf8(json).map_err(|e| TillerError::Tokenizer(format!("it is not UTF-8 text ({e})")))?;
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| TillerError::Tokenizer(format!("it is not valid JSON ({e})")))?;
        check_bpe_merges(text)?;
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(tok_err)?;
        if let Some(spec) = spec {
            check_against(&inner, spec)?;
        }
        let cfg: Option<Value> = match tokenizer_config {
            None => None,
            Some(bytes) => Some(
                serde_json::from_slice(bytes)
                    .map_err(|e| TillerError::Tokenizer(format!("tokenizer_config.json is not valid JSON ({e})")))?,
            ),
        };
        let id_of = |text: &Option<String>| text.as_deref().and_then(|t| inner.token_to_id(t));
        let bos_text = token_text(cfg.as_ref().and_then(|c| c.get("bos_token")));
        let eos_text = token_text(cfg.as_ref().and_then(|c| c.get("eos_token")));
        let default_bos = {
            let empty = inner.encode("", true).map_err(tok_err)?;
            empty.get_ids().first().copied()
        };
        let fallback = ["<|endoftext|>", "<|begin_of_text|>", "<s>", "<|im_start|>"].iter().find_map(|t| inner.token_to_id(t));
        let bos = default_bos.or(spec.and_then(|s| s.bos_token_id)).or(id_of(&bos_text)).or(fallback);
        let mut eos: Vec<u32> = Vec::new();
        for id in [id_of(&eos_text), spec.and_then(|s| s.eos_token_id), inner.token_to_id("<|endoftext|>")].into_iter().flatten() {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        let space = inner.encode(" ", false).map_err(tok_err)?;
        let pad = space.get_ids().first().copied().or(eos.first().copied()).unwrap_or(0);
        let chat_template = match cfg.as_ref().and_then(|c| c.get("chat_template")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            Some(other) => return Err(TillerError::Tokenizer(format!("chat_template is {other}, not a string"))),
        };
        let name = |id: Option<u32>| id.and_then(|i| inner.id_to_token(i)).unwrap_or_default();
        Ok(Self {
            bos_text: bos_text.unwrap_or_else(|| name(bos)),
            eos_text: eos_text.unwrap_or_else(|| name(eos.first().copied())),
            inner,
            default_bos,
            bos,
            eos,
            pad,
            chat_template,
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text, joining byte-level pieces (a multi-byte character split across
    /// tokens decodes whole once all its tokens are present).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// One token as display text (partial UTF-8 shown with U+FFFD).
    pub fn token_text(&self, id: u32) -> String {
        self.inner.decode(&[id], false).unwrap_or_else(|_| format!("<{id}>"))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether the tokenizer's own post-processor adds a BOS (the default for `--bos`).
    pub fn bos_by_default(&self) -> bool {
        self.default_bos.is_some()
    }

    /// The token prepended when BOS is on.
    pub fn bos_id(&self) -> Result<u32> {
        self.bos.ok_or_else(|| TillerError::recipe("this tokenizer has no BOS token: turn BOS off"))
    }

    /// ActAdd's padding token: the token the tokenizer gives a single space.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// Tokens that end a completion.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The chat template rendered for one user message (after a system message when given),
    /// with the generation prompt added.
    pub fn render_chat(&self, system: Option<&str>, user: &str) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| TillerError::recipe("this model has no chat template (tokenizer_config.json): turn chat off"))?;
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(serde_json::json!({"role": "system", "content": s}));
        }
        messages.push(serde_json::json!({"role": "user", "content": user}));
        render_template(template, &messages, &self.bos_text, &self.eos_text)
    }
}

/// The most instructions a chat template may run for one rendering.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// Renders a Hugging Face chat template as `apply_chat_template(messages,
/// add_generation_prompt=True)` does.
pub fn render_template(template: &str, messages: &[Value], bos_token: &str, eos_token: &str) -> Result<String> {
    let bad = |e: minijinja::Error| TillerError::recipe(format!("the chat template could not be rendered: {e}"));
    let mut env = minijinja::Environment::new();
    // A template is data from the model's files: bounded, so a loop cannot run (or print)
    // without end. Real templates take a few thousand instructions a conversation.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // Hugging Face renders with trim_blocks and lstrip_blocks.
    let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(bad)?;
    env.set_syntax(syntax);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| -> String { strftime_today(&fmt) });
    env.add_template("chat", template).map_err(bad)?;
    let tmpl = env.get_template("chat").map_err(bad)?;
    tmpl.render(minijinja::context! {
        messages => minijinja::Value::from(minijinja::value::Serde(messages)),
        add_generation_prompt => true,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(bad)
}

/// Today's date (UTC) in a strftime format, for templates that print it (`%d`, `%b`, `%B`,
/// `%Y`, `%m` and `%%`; other directives are kept as written). Without a clock (wasm32), the
/// Unix epoch.
fn strftime_today(fmt: &str) -> String {
    #[cfg(not(target_arch = "wasm32"))]
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86400).unwrap_or(0) as i64;
    #[cfg(target_arch = "wasm32")]
    let days = 0i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}
