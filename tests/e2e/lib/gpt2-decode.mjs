// Decodes GPT-2 token ids with a Hugging Face tokenizer.json (byte-level BPE): token strings
// are mapped back through GPT-2's bytes_to_unicode table, then read as UTF-8 (invalid
// sequences become U+FFFD, as TextDecoder does by default).

import fs from 'node:fs';

function bytesToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n += 1;
    }
  }
  const map = new Map();
  bs.forEach((b, i) => map.set(String.fromCodePoint(cs[i]), b));
  return map;
}

export function loadDecoder(tokenizerJsonPath) {
  const tok = JSON.parse(fs.readFileSync(tokenizerJsonPath, 'utf8'));
  const vocab = tok.model.vocab;
  const byId = new Map();
  for (const [s, id] of Object.entries(vocab)) byId.set(id, s);
  for (const t of tok.added_tokens || []) byId.set(t.id, t.content);
  const u2b = bytesToUnicode();
  return (ids) => {
    const bytes = [];
    for (const id of ids) {
      const s = byId.get(id);
      if (s === undefined) throw new Error(`token id ${id} is not in the vocabulary`);
      for (const ch of s) {
        const b = u2b.get(ch);
        if (b === undefined) throw new Error(`token ${id} has a character outside the byte map`);
        bytes.push(b);
      }
    }
    return new TextDecoder('utf-8').decode(Uint8Array.from(bytes));
  };
}
