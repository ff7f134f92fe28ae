//! Contrast pair datasets, the input of CAA and PCA vectors ([`crate::contrast`]).
//!
//! A dataset is JSON lines (or one JSON array) of either form:
//! - `{"positive": "...", "negative": "..."}`: two texts that differ in the concept;
//! - CAA's multiple-choice items, `{"question": "...", "answer_matching_behavior": "(A)",
//!   "answer_not_matching_behavior": "(B)"}`: the positive text is the question answered with
//!   the matching answer, the negative with the other ([`Pair::texts`] says how they are joined).
//!
//! Two pasted lists (one text per line, the i-th positive against the i-th negative) make the
//! first form. Every line that is not blank must be a pair: a bad line is an error naming its
//! line number, never skipped.

use serde_json::Value;

use crate::error::{Result, TillerError};
use crate::steer::TextEncoding;
use crate::tokenizer::Tokenizer;

/// The largest dataset read: CAA's datasets are about 1 MB; a file this large is a mistake.
pub const MAX_DATASET_BYTES: usize = 16 << 20;

/// One contrast pair.
#[derive(Debug, Clone, PartialEq)]
pub enum Pair {
    Texts {
        positive: String,
        negative: String,
    },
    /// A multiple-choice item: the answers are short strings such as `(A)`.
    Choice {
        question: String,
        matching: String,
        not_matching: String,
    },
}

/// The prompt CAA puts before an answer on a base (non-chat) model: `Input: {question}\nResponse:`
/// (the CAA authors' `tokenize_llama_base`). The answer follows after a space.
pub fn base_choice_prompt(question: &str) -> String {
    format!("Input: {}\nResponse:", question.trim())
}

impl Pair {
    /// The positive and negative token sequences. Texts go through `encoding` as steering texts
    /// do (BOS when on; through the chat template as the user message when chat is on). A
    /// choice item's question is the prompt and its answer the reply: with chat, the rendered
    /// template (which ends in the assistant's header) followed by the answer's tokens; without,
    /// [`base_choice_prompt`] (BOS first when on) followed by the tokens of " " + answer.
    pub fn tokens(&self, tok: &Tokenizer, encoding: &TextEncoding) -> Result<(Vec<u32>, Vec<u32>)> {
        match self {
            Pair::Texts { positive, negative } => Ok((encoding.encode(tok, positive)?, encoding.encode(tok, negative)?)),
            Pair::Choice { question, matching, not_matching } => {
                let (prompt, a, b) = choice_tokens(tok, encoding, question, matching, not_matching)?;
                Ok(([prompt.as_slice(), &a].concat(), [prompt.as_slice(), &b].concat()))
            }
        }
    }
}

/// How a dataset's texts become tokens: `texts` for positive/negative pairs, `choices` for
/// multiple-choice items.
#[derive(Debug, Clone, PartialEq)]
pub struct PairEncoding {
    pub texts: TextEncoding,
    pub choices: TextEncoding,
}

impl PairEncoding {
    /// `chat`: pair texts go through the chat template as the user message (as steering texts
    /// do with chat terms on); `choice_chat`: choice items go through it (question as the user
    /// message, answer as the assistant's) when the tokenizer has a template, else CAA's base
    /// form. `system` is the chat template's system message (empty: none).
    pub fn new(tok: &Tokenizer, bos: bool, chat: bool, choice_chat: bool, system: &str) -> Result<Self> {
        if chat && !tok.has_chat_template() {
            return Err(bad("this model's tokenizer_config.json has no chat template, so texts cannot go through one".into()));
        }
        Ok(Self {
            texts: TextEncoding { bos, chat: chat.then(|| system.to_string()) },
            choices: TextEncoding { bos, chat: (choice_chat && tok.has_chat_template()).then(|| system.to_string()) },
        })
    }

    /// Every pair's (positive, negative) tokens; an error names the pair (1-based).
    pub fn tokens(&self, tok: &Tokenizer, pairs: &[Pair]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let enc = if matches!(p, Pair::Choice { .. }) { &self.choices } else { &self.texts };
                p.tokens(tok, enc).map_err(|e| bad(format!("pair {}: {e}", i + 1)))
            })
            .collect()
    }
}

/// A choice item's prompt tokens and each answer's tokens (see [`Pair::tokens`]).
pub fn choice_tokens(
    tok: &Tokenizer,
    encoding: &TextEncoding,
    question: &str,
    matching: &str,
    not_matching: &str,
) -> Result<(Vec<u32>, Vec<u32>, Vec<u32>)> {
    match &encoding.chat {
        Some(system) => {
            let prompt = tok.encode(&tok.render_chat(Some(system.as_str()).filter(|s| !s.is_empty()), question.trim())?)?;
            Ok((prompt, tok.encode(matching.trim())?, tok.encode(not_matching.trim())?))
        }
        None => {
            let prompt = crate::steer::encode_with_bos(tok, &base_choice_prompt(question), encoding.bos)?;
            Ok((prompt, tok.encode(&format!(" {}", matching.trim()))?, tok.encode(&format!(" {}", not_matching.trim()))?))
        }
    }
}

fn bad(msg: String) -> TillerError {
    TillerError::input(msg)
}

/// Refuses data too large to be a pair set, with its size in the sentence.
fn check_size(len: usize, what: &str) -> Result<()> {
    if len > MAX_DATASET_BYTES {
        return Err(bad(format!(
            "{what} is {:.1} MB; Tiller reads pair datasets up to {} MB: keep a sample of the pairs, or split the file",
            len as f64 / 1e6,
            MAX_DATASET_BYTES >> 20
        )));
    }
    Ok(())
}

/// The text of `bytes`, or an error naming the line of the first byte that is not UTF-8.
fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        bad(format!("{what} is not UTF-8 text (line {line} holds bytes that are not): save it as UTF-8"))
    })
}

/// One item (a JSON object) as a pair; `at` names it in errors ("line 3").
fn pair_of(value: &Value, at: &str) -> Result<Pair> {
    let obj = value.as_object().ok_or_else(|| {
        bad(format!("{at}: expected an object such as {{\"positive\": \"...\", \"negative\": \"...\"}}, found {}", kind(value)))
    })?;
    let text = |key: &str| -> Result<Option<String>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Err(bad(format!("{at}: \"{key}\" is empty"))),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(bad(format!("{at}: \"{key}\" should be a string, found {}", kind(v)))),
        }
    };
    if obj.contains_key("question") {
        let question = text("question")?.ok_or_else(|| bad(format!("{at}: \"question\" is missing")))?;
        let matching = text("answer_matching_behavior")?;
        let not_matching = text("answer_not_matching_behavior")?;
        return match (matching, not_matching) {
            (Some(matching), Some(not_matching)) => Ok(Pair::Choice { question, matching, not_matching }),
            (None, _) => Err(bad(format!("{at}: a question needs \"answer_matching_behavior\" (for example \"(A)\")"))),
            (_, None) => Err(bad(format!("{at}: a question needs \"answer_not_matching_behavior\" (for example \"(B)\")"))),
        };
    }
    match (text("positive")?, text("negative")?) {
        (Some(positive), Some(negative)) => Ok(Pair::Texts { positive, negative }),
        (None, None) => Err(bad(format!(
            "{at}: expected \"positive\" and \"negative\" (or CAA's \"question\" with \"answer_matching_behavior\" and \
             \"answer_not_matching_behavior\"); found the keys {:?}",
            obj.keys().collect::<Vec<_>>()
        ))),
        (Some(_), None) => Err(bad(format!("{at}: \"negative\" is missing"))),
        (None, Some(_)) => Err(bad(format!("{at}: \"positive\" is missing"))),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Parses a dataset file: JSON lines, or one JSON array of items (as CAA's datasets ship).
pub fn parse_dataset(bytes: &[u8]) -> Result<Vec<Pair>> {
    let pairs = dataset_items(bytes, "the dataset")?.iter().map(|(at, v)| pair_of(v, at)).collect::<Result<Vec<_>>>()?;
    if pairs.is_empty() {
        return Err(bad(
            "the dataset has no pairs: give one JSON object per line, such as {\"positive\": \"...\", \"negative\": \"...\"}".into()
        ));
    }
    Ok(pairs)
}

/// The items of a JSON-lines file (blank lines skipped) or of one JSON array, each with where
/// it is ("line 3", "item 3") for errors; at most [`MAX_DATASET_BYTES`], UTF-8 (a BOM is
/// dropped). Every dataset format of the project (pairs, ICL tasks, labelled statements) is
/// read through this.
pub(crate) fn dataset_items(bytes: &[u8], what: &str) -> Result<Vec<(String, Value)>> {
    check_size(bytes.len(), what)?;
    let text = utf8(bytes, what)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('[') {
        let items: Value = serde_json::from_str(text)
            .map_err(|e| bad(format!("{what} starts with `[` but is not a JSON list (line {}, column {}: {e})", e.line(), e.column())))?;
        let items = match items {
            Value::Array(items) => items,
            _ => Vec::new(), // a JSON text that starts with `[` is a list
        };
        Ok(items.into_iter().enumerate().map(|(i, v)| (format!("item {}", i + 1), v)).collect())
    } else {
        let mut items = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("line {}", i + 1);
            let value: Value = serde_json::from_str(line).map_err(|e| bad(format!("{at} is not JSON ({e})")))?;
            items.push((at, value));
        }
        Ok(items)
    }
}

/// Pairs from two lists of texts, one per line (blank lines are not texts): the i-th positive
/// against the i-th negative.
pub fn from_lists(positive: &str, negative: &str) -> Result<Vec<Pair>> {
    check_size(positive.len() + negative.len(), "the two lists")?;
    let lines = |s: &str| s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect::<Vec<_>>();
    let (p, n) = (lines(positive), lines(negative));
    if p.len() != n.len() {
        return Err(bad(format!(
            "the positive list has {} texts and the negative list {}: give one negative text for each positive one, line by line",
            p.len(),
            n.len()
        )));
    }
    if p.is_empty() {
        return Err(bad("both lists are empty: write one text per line in each".into()));
    }
    Ok(p.into_iter().zip(n).map(|(positive, negative)| Pair::Texts { positive, negative }).collect())
}

/// Splits off the last `fraction` of the pairs (at least one when there are two or more) as a
/// held-out set for evaluation: (training, held out).
pub fn split_held_out(pairs: &[Pair], fraction: f64) -> (&[Pair], &[Pair]) {
    if pairs.len() < 2 || fraction <= 0.0 {
        return (pairs, &[]);
    }
    let held = ((pairs.len() as f64 * fraction.min(1.0)).round() as usize).clamp(1, pairs.len() - 1);
    pairs.split_at(pairs.len() - held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_and_an_array_parse() {
        let jsonl = "{\"positive\": \"I love it\", \"negative\": \"I hate it\"}\n\n\
                     {\"question\": \"Do you agree?\\n (A) Yes\\n (B) No\", \"answer_matching_behavior\": \"(A)\", \
                     \"answer_not_matching_behavior\": \"(B)\", \"extra\": 1}\n";
        let pairs = parse_dataset(jsonl.as_bytes()).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0], Pair::Texts { positive: "I love it".into(), negative: "I hate it".into() });
        assert!(matches!(&pairs[1], Pair::Choice { matching, .. } if matching == "(A)"));
        let array = "[{\"positive\": \"a\", \"negative\": \"b\"}, {\"positive\": \"c\", \"negative\": \"d\"}]";
        assert_eq!(parse_dataset(array.as_bytes()).unwrap().len(), 2);
        // A byte-order mark is not a bad line.
        assert_eq!(parse_dataset("\u{feff}{\"positive\": \"a\", \"negative\": \"b\"}".as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn bad_lines_name_their_line() {
        let err = |s: &[u8]| parse_dataset(s).unwrap_err().to_string();
        assert!(err(b"{\"positive\": \"a\", \"negative\": \"b\"}\n{\"positive\": \"a\"}\n").contains("line 2: \"negative\" is missing"));
        assert!(err(b"\n\n{\"negative\": \"b\"}").contains("line 3: \"positive\" is missing"));
        assert!(err(b"{\"positive\": \"a\", \"negative\": \"b\"}\nnot json").contains("line 2 is not JSON"));
        assert!(err(b"{\"positive\": \"a\", \"negative\": \"  \"}").contains("line 1: \"negative\" is empty"));
        assert!(err(b"{\"positive\": 3, \"negative\": \"b\"}").contains("should be a string, found a number"));
        assert!(err(b"[1, 2]").contains("line 1") || err(b"[1, 2]").contains("item 1"));
        assert!(err(b"{\"question\": \"q\", \"answer_matching_behavior\": \"(A)\"}").contains("answer_not_matching_behavior"));
        assert!(err(b"{\"text\": \"a\"}").contains("found the keys [\"text\"]"));
        assert!(err(b"").contains("no pairs"));
        assert!(err(b" \n\n ").contains("no pairs"));
        assert!(err(b"{\"positive\": \"a\", \"negative\": \"b\"}\n\xff\xfe").contains("line 2 holds bytes that are not"));
        assert!(err(&vec![b' '; MAX_DATASET_BYTES + 1]).contains("MB; Tiller reads pair datasets up to 16 MB"));
    }

    #[test]
    fn lists_pair_line_by_line() {
        let pairs = from_lists("Love\n\nJoy\n", "Hate\nSorrow").unwrap();
        assert_eq!(pairs[1], Pair::Texts { positive: "Joy".into(), negative: "Sorrow".into() });
        assert!(from_lists("a\nb", "c").unwrap_err().to_string().contains("has 2 texts and the negative list 1"));
        assert!(from_lists("", "").is_err());
    }

    #[test]
    fn held_out_split_keeps_both_sides_nonempty() {
        let pairs: Vec<Pair> = (0..10).map(|i| Pair::Texts { positive: format!("p{i}"), negative: format!("n{i}") }).collect();
        let (train, held) = split_held_out(&pairs, 0.2);
        assert_eq!((train.len(), held.len()), (8, 2));
        assert_eq!(split_held_out(&pairs[..2], 0.9).1.len(), 1);
        assert_eq!(split_held_out(&pairs[..1], 0.5).1.len(), 0);
    }
}
