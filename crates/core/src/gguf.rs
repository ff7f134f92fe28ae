//! GGUF control vectors, the steering format llama.cpp loads with `--control-vector`
//! (`src/llama-adapter.cpp`, `common/common.cpp`): `general.architecture` = `controlvector`,
//! `controlvector.model_hint`, `controlvector.layer_count`, and one 1-D tensor `direction.N`
//! (N ≥ 1) per steered block, added to block N's output at every position.
//!
//! The file: magic `GGUF`, u32 version (2 and 3 share this layout; 1 used 32-bit counts),
//! u64 tensor count, u64 key/value count, the key/values, the tensor infos (name, dims, ggml
//! type, offset within the data), padding to the alignment (`general.alignment`, else 32),
//! then the data. Little endian throughout. The reader checks every length against the bytes
//! left, so a truncated or hostile file is an error, never a panic or a huge allocation.

use crate::error::{Result, TillerError};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
const ARCH: &str = "controlvector";
const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
/// Value types.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;
/// Arrays of arrays deeper than this are refused.
const MAX_DEPTH: usize = 8;

/// A control vector read from a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlVector {
    pub model_hint: String,
    /// (N, values), ascending in N.
    pub directions: Vec<(usize, Vec<f32>)>,
    /// Every other string key/value, in file order.
    pub metadata: Vec<(String, String)>,
}

fn bad(msg: impl Into<String>) -> TillerError {
    TillerError::input(msg.into())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn pad_to(out: &mut Vec<u8>, align: usize) {
    while out.len() % align != 0 {
        out.push(0);
    }
}

/// Writes a GGUF v3 control vector: `directions` (N ≥ 1, any order; written ascending), and
/// `extra` string key/values after the standard ones.
pub fn write_control_vector(model_hint: &str, directions: &[(usize, Vec<f32>)], extra: &[(String, String)]) -> Result<Vec<u8>> {
    if directions.is_empty() {
        return Err(bad("a control vector needs at least one direction"));
    }
    let mut dirs: Vec<&(usize, Vec<f32>)> = directions.iter().collect();
    dirs.sort_by_key(|d| d.0);
    let width = dirs[0].1.len();
    for (i, (n, v)) in dirs.iter().map(|d| (d.0, &d.1)).enumerate() {
        if n == 0 {
            return Err(bad("direction.0 cannot be written: llama.cpp never steers before block 1's output"));
        }
        if i > 0 && dirs[i - 1].0 == n {
            return Err(bad(format!("direction.{n} is given twice")));
        }
        if v.is_empty() || v.len() != width {
            return Err(bad(format!(
                "direction.{n} has {} values but direction.{} has {width}: all must be one width",
                v.len(),
                dirs[0].0
            )));
        }
        if let Some(j) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("direction.{n} holds {} at index {j}", v[j])));
        }
    }
    let mut kvs: Vec<(&str, u32, Vec<u8>)> = Vec::new();
    let string = |s: &str| {
        let mut b = Vec::new();
        put_str(&mut b, s);
        b
    };
    kvs.push(("general.architecture", T_STRING, string(ARCH)));
    kvs.push(("controlvector.model_hint", T_STRING, string(model_hint)));
    kvs.push(("controlvector.layer_count", T_U32, (dirs.len() as u32).to_le_bytes().to_vec()));
    for (k, v) in extra {
        kvs.push((k, T_STRING, string(v)));
    }
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(dirs.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, t, v) in &kvs {
        put_str(&mut out, k);
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(v);
    }
    let bytes_per = (width * 4) as u64;
    let stride = bytes_per.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    for (i, (n, _)) in dirs.iter().map(|d| (d.0, &d.1)).enumerate() {
        put_str(&mut out, &format!("direction.{n}"));
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(width as u64).to_le_bytes());
        out.extend_from_slice(&GGML_F32.to_le_bytes());
        out.extend_from_slice(&(i as u64 * stride).to_le_bytes());
    }
    pad_to(&mut out, DEFAULT_ALIGNMENT as usize);
    for (_, v) in &dirs {
        let start = out.len();
        out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        debug_assert_eq!((out.len() - start) as u64, bytes_per);
        pad_to(&mut out, DEFAULT_ALIGNMENT as usize);
    }
    Ok(out)
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(bad(format!("the file ends inside {what} (byte {}): it is truncated or not a GGUF file", self.pos)));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8 text")))
    }
    fn left(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }
}

fn scalar_size(t: u32) -> Option<u64> {
    match t {
        T_U8 | T_I8 | T_BOOL => Some(1),
        T_U16 | T_I16 => Some(2),
        T_U32 | T_I32 | T_F32 => Some(4),
        T_U64 | T_I64 | T_F64 => Some(8),
        _ => None,
    }
}

/// A value the reader keeps: strings and the unsigned integers `general.alignment` may be.
enum Value {
    Str(String),
    Uint(u64),
    Other,
}

fn read_value(r: &mut Reader<'_>, t: u32, key: &str, depth: usize) -> Result<Value> {
    if let Some(size) = scalar_size(t) {
        let b = r.take(size, key)?;
        return Ok(match t {
            T_U8 => Value::Uint(b[0] as u64),
            T_U16 => Value::Uint(u16::from_le_bytes([b[0], b[1]]) as u64),
            T_U32 => Value::Uint(u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64),
            T_U64 => Value::Uint(u64::from_le_bytes(b.try_into().expect("8 bytes"))),
            _ => Value::Other,
        });
    }
    match t {
        T_STRING => Ok(Value::Str(r.string(key)?)),
        T_ARRAY => {
            if depth >= MAX_DEPTH {
                return Err(bad(format!("the value of `{key}` nests arrays deeper than {MAX_DEPTH}")));
            }
            let et = r.u32(key)?;
            let count = r.u64(key)?;
            match scalar_size(et) {
                Some(size) => {
                    let total = count.checked_mul(size).ok_or_else(|| bad(format!("the array `{key}` claims {count} elements")))?;
                    r.take(total, key)?;
                }
                None => {
                    // Every string or array element takes at least 8 bytes.
                    if count > r.left() / 8 {
                        return Err(bad(format!("the array `{key}` claims {count} elements, more than the file holds")));
                    }
                    for _ in 0..count {
                        read_value(r, et, key, depth + 1)?;
                    }
                }
            }
            Ok(Value::Other)
        }
        _ => Err(bad(format!("`{key}` has value type {t}, which GGUF does not define: the file is corrupt"))),
    }
}

/// Decodes an IEEE half.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * (2.0f32).powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * (2.0f32).powi(e as i32 - 15),
    }
}

/// Reads a GGUF control vector (version 2 or 3; F32 or F16 directions).
pub fn read_control_vector(bytes: &[u8]) -> Result<ControlVector> {
    let mut r = Reader { bytes, pos: 0 };
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
        return Err(bad("this is not a GGUF file (it does not start with `GGUF`)"));
    }
    r.pos = 4;
    let version = r.u32("the version")?;
    if version == 1 {
        return Err(bad("this is a GGUF version 1 file, which Tiller does not read: convert it with a newer llama.cpp"));
    }
    if version != 2 && version != 3 {
        return Err(bad(format!("this GGUF file is version {version}; Tiller reads versions 2 and 3")));
    }
    let n_tensors = r.u64("the tensor count")?;
    let n_kv = r.u64("the key/value count")?;
    // A key/value is at least 12 bytes, a tensor info at least 24.
    if n_kv > r.left() / 12 || n_tensors > r.left() / 24 {
        return Err(bad(format!("the header claims {n_kv} key/values and {n_tensors} tensors, more than the file holds: it is corrupt")));
    }
    let mut arch = None;
    let mut model_hint = String::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut metadata = Vec::new();
    for _ in 0..n_kv {
        let key = r.string("a key")?;
        let t = r.u32(&key)?;
        let value = read_value(&mut r, t, &key, 0)?;
        match (key.as_str(), value) {
            ("general.architecture", Value::Str(s)) => arch = Some(s),
            ("controlvector.model_hint", Value::Str(s)) => model_hint = s,
            ("general.alignment", Value::Uint(a)) => {
                if a == 0 || !a.is_power_of_two() || a > 1 << 20 {
                    return Err(bad(format!("general.alignment is {a}; it must be a power of two")));
                }
                alignment = a;
            }
            ("general.alignment", _) => return Err(bad("general.alignment is not an unsigned integer")),
            (_, Value::Str(s)) => metadata.push((key, s)),
            _ => {}
        }
    }
    match arch.as_deref() {
        Some(ARCH) => {}
        Some(other) => {
            return Err(bad(format!(
                "this GGUF file is a `{other}` model, not a control vector: Tiller imports GGUF control vectors \
                 (general.architecture = controlvector) only"
            )))
        }
        None => return Err(bad("this GGUF file has no general.architecture: it is not a control vector")),
    }
    let mut infos = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = r.string("a tensor name")?;
        let n_dims = r.u32(&name)?;
        if n_dims > 4 {
            return Err(bad(format!("the tensor `{name}` claims {n_dims} dimensions")));
        }
        let dims: Vec<u64> = (0..n_dims).map(|_| r.u64(&name)).collect::<Result<_>>()?;
        let ty = r.u32(&name)?;
        let offset = r.u64(&name)?;
        infos.push((name, dims, ty, offset));
    }
    let data_start = (r.pos as u64).div_ceil(alignment).checked_mul(alignment).ok_or_else(|| bad("the data offset overflows"))?;
    let mut directions: Vec<(usize, Vec<f32>)> = Vec::new();
    for (name, dims, ty, offset) in infos {
        let n = name
            .strip_prefix("direction.")
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| bad(format!("the tensor `{name}` is not a control vector's `direction.N`")))?;
        if n == 0 {
            return Err(bad("the file has direction.0, which llama.cpp refuses (it never steers before block 1's output)"));
        }
        let [len] = dims[..] else {
            return Err(bad(format!("direction.{n} has shape {dims:?}; a direction is one row of values")));
        };
        let elem = match ty {
            GGML_F32 => 4,
            GGML_F16 => 2,
            t => return Err(bad(format!("direction.{n} has ggml type {t}; Tiller reads F32 and F16 directions"))),
        };
        if offset % alignment != 0 {
            return Err(bad(format!("direction.{n} starts at offset {offset}, not a multiple of the alignment {alignment}")));
        }
        let start = data_start.checked_add(offset);
        let end = len.checked_mul(elem).and_then(|b| start?.checked_add(b));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(bad(format!("direction.{n} claims more bytes than a file can hold")));
        };
        if end > bytes.len() as u64 || len == 0 {
            return Err(bad(format!("direction.{n} runs past the end of the file ({end} > {} bytes): it is truncated", bytes.len())));
        }
        let raw = &bytes[start as usize..end as usize];
        let values: Vec<f32> = if elem == 4 {
            raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        } else {
            raw.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect()
        };
        if let Some(j) = values.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("direction.{n} holds {} at index {j}", values[j])));
        }
        if directions.iter().any(|d| d.0 == n) {
            return Err(bad(format!("direction.{n} appears twice")));
        }
        directions.push((n, values));
    }
    if directions.is_empty() {
        return Err(bad("the control vector has no direction.N tensors"));
    }
    directions.sort_by_key(|d| d.0);
    let width = directions[0].1.len();
    if let Some(d) = directions.iter().find(|d| d.1.len() != width) {
        return Err(bad(format!("direction.{} has {} values but direction.{} has {width}", d.0, d.1.len(), directions[0].0)));
    }
    Ok(ControlVector { model_hint, directions, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf")
    }

    type Directions = Vec<(usize, Vec<f32>)>;

    fn export_input() -> (Directions, Vec<(String, String)>) {
        let dirs = [1usize, 3].iter().map(|&n| (n, (0..8).map(|i| (i as f32 - 3.5) * 0.25 * n as f32).collect())).collect();
        (dirs, vec![("tiller.site".into(), "resid_pre".into()), ("tiller.method".into(), "mean_diff".into())])
    }

    #[test]
    fn round_trip_sorted_and_aligned() {
        let dirs = vec![(5, vec![1.0, 2.0, 3.0]), (2, vec![-1.0, 0.5, 0.25])];
        let bytes = write_control_vector("llama", &dirs, &[("k".into(), "v".into())]).unwrap();
        assert_eq!(&bytes[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
        assert_eq!(bytes.len() % 32, 0);
        let cv = read_control_vector(&bytes).unwrap();
        assert_eq!(cv.model_hint, "llama");
        assert_eq!(cv.directions, vec![(2, vec![-1.0, 0.5, 0.25]), (5, vec![1.0, 2.0, 3.0])]);
        assert_eq!(cv.metadata, vec![("k".to_string(), "v".to_string())]);
    }

    #[test]
    fn write_errors_say_what_is_wrong() {
        let e = |d: &[(usize, Vec<f32>)]| write_control_vector("x", d, &[]).unwrap_err().to_string();
        assert!(e(&[]).contains("at least one"));
        assert!(e(&[(0, vec![1.0])]).contains("direction.0"));
        assert!(e(&[(1, vec![1.0]), (1, vec![2.0])]).contains("twice"));
        assert!(e(&[(1, vec![1.0]), (2, vec![2.0, 3.0])]).contains("one width"));
        assert!(e(&[(1, vec![])]).contains("one width"));
        assert!(e(&[(1, vec![1.0, f32::NAN])]).contains("NaN at index 1"));
    }

    /// A version-2 file with F16 data, an array of u32s and an array of strings before the
    /// standard keys, and an alignment of 64.
    fn hand_built_v2() -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&5u64.to_le_bytes());
        put_str(&mut out, "some.list");
        out.extend_from_slice(&T_ARRAY.to_le_bytes());
        out.extend_from_slice(&T_U32.to_le_bytes());
        out.extend_from_slice(&3u64.to_le_bytes());
        (0..3u32).for_each(|i| out.extend_from_slice(&i.to_le_bytes()));
        put_str(&mut out, "some.names");
        out.extend_from_slice(&T_ARRAY.to_le_bytes());
        out.extend_from_slice(&T_STRING.to_le_bytes());
        out.extend_from_slice(&2u64.to_le_bytes());
        put_str(&mut out, "a");
        put_str(&mut out, "bc");
        put_str(&mut out, "general.alignment");
        out.extend_from_slice(&T_U32.to_le_bytes());
        out.extend_from_slice(&64u32.to_le_bytes());
        put_str(&mut out, "general.architecture");
        out.extend_from_slice(&T_STRING.to_le_bytes());
        put_str(&mut out, "controlvector");
        put_str(&mut out, "controlvector.model_hint");
        out.extend_from_slice(&T_STRING.to_le_bytes());
        put_str(&mut out, "qwen2");
        put_str(&mut out, "direction.7");
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&4u64.to_le_bytes());
        out.extend_from_slice(&GGML_F16.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        pad_to(&mut out, 64);
        // 1.0, -2.0, the smallest subnormal, 65504.
        for h in [0x3c00u16, 0xc000, 0x0001, 0x7bff] {
            out.extend_from_slice(&h.to_le_bytes());
        }
        out
    }

    #[test]
    fn reads_v2_f16_arrays_and_alignment() {
        let cv = read_control_vector(&hand_built_v2()).unwrap();
        assert_eq!(cv.model_hint, "qwen2");
        assert_eq!(cv.directions, vec![(7, vec![1.0, -2.0, 2f32.powi(-24), 65504.0])]);
        assert!(cv.metadata.is_empty());
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let (dirs, extra) = export_input();
        for bytes in [write_control_vector("gpt2", &dirs, &extra).unwrap(), hand_built_v2()] {
            // Neither file ends in padding, so every proper prefix lacks bytes it needs.
            for cut in 0..bytes.len() {
                assert!(read_control_vector(&bytes[..cut]).is_err(), "a prefix of {cut} bytes read");
            }
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] = 0xff;
                let _ = read_control_vector(&b);
            }
        }
        let mut huge = b"GGUF".to_vec();
        huge.extend_from_slice(&3u32.to_le_bytes());
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(read_control_vector(&huge).unwrap_err().to_string().contains("more than the file holds"));
        assert!(read_control_vector(b"PK\x03\x04").unwrap_err().to_string().contains("not a GGUF file"));
    }

    #[test]
    fn model_files_and_odd_tensors_are_refused() {
        let mut model = Vec::new();
        model.extend_from_slice(b"GGUF");
        model.extend_from_slice(&3u32.to_le_bytes());
        model.extend_from_slice(&0u64.to_le_bytes());
        model.extend_from_slice(&1u64.to_le_bytes());
        put_str(&mut model, "general.architecture");
        model.extend_from_slice(&T_STRING.to_le_bytes());
        put_str(&mut model, "llama");
        assert!(read_control_vector(&model).unwrap_err().to_string().contains("is a `llama` model, not a control vector"));
        let mut v1 = hand_built_v2();
        v1[4] = 1;
        assert!(read_control_vector(&v1).unwrap_err().to_string().contains("version 1"));
    }

    /// Writes tests/fixtures/gguf/tiller-export.gguf, which make_gguf_fixtures.py reads with
    /// the `gguf` package.
    #[test]
    #[ignore]
    fn write_export_fixture() {
        let (dirs, extra) = export_input();
        std::fs::create_dir_all(fixtures()).unwrap();
        std::fs::write(fixtures().join("tiller-export.gguf"), write_control_vector("gpt2", &dirs, &extra).unwrap()).unwrap();
    }

    #[test]
    fn export_is_the_committed_file_and_gguf_py_reads_it() {
        let (dirs, extra) = export_input();
        let bytes = write_control_vector("gpt2", &dirs, &extra).unwrap();
        assert_eq!(bytes, std::fs::read(fixtures().join("tiller-export.gguf")).unwrap(), "the export changed: rerun the fixture script");
        let seen: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixtures().join("tiller-export.read-by-gguf-py.json")).unwrap()).unwrap();
        assert_eq!(seen["architecture"], "controlvector");
        assert_eq!(seen["model_hint"], "gpt2");
        assert_eq!(seen["layer_count"], 2);
        assert_eq!(seen["kv"]["tiller.method"], "mean_diff");
        let tensors = seen["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), 2);
        for (t, (n, v)) in tensors.iter().zip(&dirs) {
            assert_eq!(t["name"], format!("direction.{n}"));
            assert_eq!(t["shape"], serde_json::json!([8]));
            assert_eq!(t["type"], "F32");
            let got: Vec<f32> = serde_json::from_value(t["values"].clone()).unwrap();
            assert_eq!(&got, v);
        }
    }

    #[test]
    fn files_written_by_gguf_py_import() {
        let want: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures().join("from-gguf-py.json")).unwrap()).unwrap();
        for (file, key) in [("from-gguf-py.gguf", "directions"), ("from-gguf-py-f16.gguf", "directions_f16")] {
            let cv = read_control_vector(&std::fs::read(fixtures().join(file)).unwrap()).unwrap();
            assert_eq!(cv.model_hint, want["model_hint"], "{file}");
            let expect = want[key].as_object().unwrap();
            assert_eq!(cv.directions.len(), expect.len(), "{file}");
            for (n, v) in &cv.directions {
                let e: Vec<f32> = serde_json::from_value(expect[&n.to_string()].clone()).unwrap();
                assert_eq!(v, &e, "{file} direction.{n}");
            }
        }
    }
}
