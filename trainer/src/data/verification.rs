//! Verification pair files (`lfw.bin`, `agedb_30.bin`, ...; METHODS §9) and the minimal pickle
//! codec they need.
//!
//! A `.bin` is a pickled 2-tuple `(bins, issame)`: `2N` encoded images and `N` bools; pair `k` is
//! `(bins[2k], bins[2k+1])`. The reader understands exactly the opcodes such files use (Python 2
//! `str` and Python 3 `bytes`, including protocol 2's `_codecs.encode(..., 'latin1')` form of
//! bytes) and names any other opcode with its byte offset instead of guessing. The writer emits
//! protocol 3 (`BINBYTES`), which every Python 3 reads with or without `encoding='bytes'`.
//!
//! maskgate's masked-probe convention: a file named `*_masked.bin` holds the same pairs as its
//! unmasked sibling with the FIRST image of every pair synthetically masked (the probe) and the
//! second left unmasked (the enrolled reference) — the door case of METHODS §6.

use super::DataError;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

/// Verification pairs: `images[2k]` and `images[2k+1]` form pair `k`, `issame[k]` says whether
/// they show one person.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PairSet {
    pub images: Vec<Vec<u8>>,
    pub issame: Vec<bool>,
}

impl PairSet {
    pub fn len(&self) -> usize {
        self.issame.len()
    }
    pub fn is_empty(&self) -> bool {
        self.issame.is_empty()
    }
    /// The two encoded images of pair `k`.
    pub fn pair(&self, k: usize) -> Option<(&[u8], &[u8])> {
        Some((self.images.get(2 * k)?, self.images.get(2 * k + 1)?))
    }

    /// Decode every image (in parallel) as an aligned 112x112 RGB face; errors name the pair.
    pub fn decode_all(&self) -> Result<Vec<image::RgbImage>, DataError> {
        use rayon::prelude::*;
        self.images
            .par_iter()
            .enumerate()
            .map(|(i, b)| super::decode_face(b, &format!("pair {} image {}", i / 2, i % 2)))
            .collect()
    }

    /// Read a `.bin` file.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Self::from_pickle(&bytes).map_err(|d| DataError::format(path, d))
    }

    /// Parse pickle bytes; `Err` describes the problem (the caller adds the file name).
    pub fn from_pickle(bytes: &[u8]) -> Result<Self, String> {
        let value = unpickle(bytes)?;
        let Value::Tuple(mut parts) = value else {
            return Err(format!(
                "expected a (bins, issame) tuple, found {}",
                value.kind()
            ));
        };
        if parts.len() != 2 {
            return Err(format!(
                "expected a 2-tuple (bins, issame), found a {}-tuple",
                parts.len()
            ));
        }
        let issame = parts.pop().unwrap_or(Value::Mark);
        let bins = parts.pop().unwrap_or(Value::Mark);
        let (Value::List(bins), Value::List(issame)) = (bins, issame) else {
            return Err("expected (list of images, list of bools)".to_string());
        };
        let images = bins
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Bytes(b) => Ok(Rc::try_unwrap(b).unwrap_or_else(|shared| (*shared).clone())),
                other => Err(format!("bins[{i}] is a {}, expected bytes", other.kind())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let issame = issame
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Bool(b) => Ok(b),
                other => Err(format!(
                    "issame[{i}] is a {}, expected a bool",
                    other.kind()
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if images.len() != 2 * issame.len() {
            return Err(format!(
                "{} images for {} pairs: need exactly two per pair",
                images.len(),
                issame.len()
            ));
        }
        Ok(Self { images, issame })
    }

    /// Serialise as a protocol-3 pickle.
    pub fn to_pickle(&self) -> Vec<u8> {
        let total: usize = self.images.iter().map(|b| b.len() + 9).sum();
        let mut out = Vec::with_capacity(total + self.issame.len() + 64);
        out.extend_from_slice(&[op::PROTO, 3]);
        out.push(op::EMPTY_LIST);
        for chunk in self.images.chunks(1000) {
            out.push(op::MARK);
            for img in chunk {
                if img.len() < 256 {
                    out.extend_from_slice(&[op::SHORT_BINBYTES, img.len() as u8]);
                } else {
                    out.push(op::BINBYTES);
                    out.extend_from_slice(&(img.len() as u32).to_le_bytes());
                }
                out.extend_from_slice(img);
            }
            out.push(op::APPENDS);
        }
        out.push(op::EMPTY_LIST);
        for chunk in self.issame.chunks(1000) {
            out.push(op::MARK);
            out.extend(
                chunk
                    .iter()
                    .map(|&s| if s { op::NEWTRUE } else { op::NEWFALSE }),
            );
            out.push(op::APPENDS);
        }
        out.extend_from_slice(&[op::TUPLE2, op::STOP]);
        out
    }

    /// Write atomically.
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        shared::atomic_write(path, &self.to_pickle()).map_err(|e| DataError::io(path, e))
    }
}

mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const EMPTY_LIST: u8 = b']';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES8: u8 = 0x8e;
    pub const BINUNICODE: u8 = b'X';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const GLOBAL: u8 = b'c';
    pub const REDUCE: u8 = b'R';
}

/// The values a verification pickle is built from.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Mark,
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Shared so that a memoised image referenced twice costs no copy while parsing.
    Bytes(Rc<Vec<u8>>),
    Str(String),
    Bool(bool),
    Global(String, String),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Mark => "mark",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Bool(_) => "bool",
            Value::Global(..) => "global",
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated pickle: {what} at byte {} needs {n} bytes, {} left",
                    self.pos,
                    self.bytes.len() - self.pos
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<usize, String> {
        Ok(self.take(1, what)?[0] as usize)
    }
    fn u32(&mut self, what: &str) -> Result<usize, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self, what: &str) -> Result<usize, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a))
            .map_err(|_| format!("{what}: length does not fit in memory"))
    }
    fn line(&mut self, what: &str) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("truncated pickle: {what} has no newline"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
}

fn pop_mark(stack: &mut Vec<Value>, at: usize) -> Result<Vec<Value>, String> {
    let m = stack
        .iter()
        .rposition(|v| *v == Value::Mark)
        .ok_or_else(|| format!("no MARK on the stack at byte {at}"))?;
    let items = stack.split_off(m + 1);
    stack.pop();
    Ok(items)
}

fn unpickle(bytes: &[u8]) -> Result<Value, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<usize, Value> = HashMap::new();
    let underflow = |at: usize, name: &str| format!("stack underflow at byte {at} ({name})");
    loop {
        let at = c.pos;
        let code = c.take(1, "opcode")?[0];
        match code {
            op::PROTO => {
                let v = c.u8("PROTO")?;
                if v > 5 {
                    return Err(format!("unsupported pickle protocol {v}"));
                }
            }
            op::FRAME => {
                c.u64("FRAME")?;
            }
            op::STOP => return stack.pop().ok_or_else(|| underflow(at, "STOP")),
            op::MARK => stack.push(Value::Mark),
            op::EMPTY_LIST => stack.push(Value::List(Vec::new())),
            op::EMPTY_TUPLE => stack.push(Value::Tuple(Vec::new())),
            op::APPEND | op::APPENDS => {
                let items = if code == op::APPEND {
                    vec![stack.pop().ok_or_else(|| underflow(at, "APPEND"))?]
                } else {
                    pop_mark(&mut stack, at)?
                };
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => {
                        return Err(format!(
                            "APPEND(S) at byte {at} without a list to append to"
                        ))
                    }
                }
            }
            op::TUPLE => {
                let items = pop_mark(&mut stack, at)?;
                stack.push(Value::Tuple(items));
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = (code - op::TUPLE1 + 1) as usize;
                if stack.len() < n || stack[stack.len() - n..].contains(&Value::Mark) {
                    return Err(underflow(at, "TUPLEn"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            op::NEWTRUE => stack.push(Value::Bool(true)),
            op::NEWFALSE => stack.push(Value::Bool(false)),
            op::BINSTRING | op::BINBYTES => {
                let n = c.u32("string length")?;
                stack.push(Value::Bytes(Rc::new(c.take(n, "string")?.to_vec())));
            }
            op::SHORT_BINSTRING | op::SHORT_BINBYTES => {
                let n = c.u8("string length")?;
                stack.push(Value::Bytes(Rc::new(c.take(n, "string")?.to_vec())));
            }
            op::BINBYTES8 => {
                let n = c.u64("bytes length")?;
                stack.push(Value::Bytes(Rc::new(c.take(n, "bytes")?.to_vec())));
            }
            op::BINUNICODE | op::SHORT_BINUNICODE | op::BINUNICODE8 => {
                let n = match code {
                    op::BINUNICODE => c.u32("unicode length")?,
                    op::SHORT_BINUNICODE => c.u8("unicode length")?,
                    _ => c.u64("unicode length")?,
                };
                let s = std::str::from_utf8(c.take(n, "unicode")?)
                    .map_err(|_| format!("invalid UTF-8 in a unicode string at byte {at}"))?;
                stack.push(Value::Str(s.to_string()));
            }
            op::BINPUT | op::LONG_BINPUT | op::MEMOIZE => {
                let slot = match code {
                    op::BINPUT => c.u8("BINPUT")?,
                    op::LONG_BINPUT => c.u32("LONG_BINPUT")?,
                    _ => memo.len(),
                };
                let top = stack.last().ok_or_else(|| underflow(at, "PUT"))?;
                // Lists are memoised by Python but a .bin never refers back to one; images may
                // be (the same bytes object appended twice), so they are kept (shared, no copy).
                if matches!(
                    top,
                    Value::Str(_) | Value::Global(..) | Value::Bool(_) | Value::Bytes(_)
                ) {
                    memo.insert(slot, top.clone());
                } else {
                    memo.insert(slot, Value::Mark);
                }
            }
            op::BINGET | op::LONG_BINGET => {
                let slot = if code == op::BINGET {
                    c.u8("BINGET")?
                } else {
                    c.u32("LONG_BINGET")?
                };
                match memo.get(&slot) {
                    Some(Value::Mark) => {
                        return Err(format!(
                            "BINGET at byte {at} refers back to a list or tuple: not supported"
                        ))
                    }
                    Some(v) => stack.push(v.clone()),
                    None => return Err(format!("BINGET at byte {at}: memo slot {slot} is empty")),
                }
            }
            op::GLOBAL => {
                let module = c.line("GLOBAL module")?;
                let name = c.line("GLOBAL name")?;
                match (module.as_str(), name.as_str()) {
                    ("_codecs", "encode") | ("__builtin__", "bytes") | ("builtins", "bytes") => {
                        stack.push(Value::Global(module, name))
                    }
                    _ => return Err(format!("unsupported global {module}.{name} at byte {at}")),
                }
            }
            op::REDUCE => {
                let args = stack.pop().ok_or_else(|| underflow(at, "REDUCE"))?;
                let func = stack.pop().ok_or_else(|| underflow(at, "REDUCE"))?;
                stack.push(reduce(func, args).map_err(|e| format!("REDUCE at byte {at}: {e}"))?);
            }
            other => {
                let shown = if other.is_ascii_graphic() {
                    format!(" ('{}')", other as char)
                } else {
                    String::new()
                };
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x}{shown} at byte {at}: not part of a verification .bin"
                ));
            }
        }
    }
}

/// Python 3 pickles `bytes` under protocol 2 as `_codecs.encode(latin1_text, 'latin1')`
/// (and empty bytes as `bytes()`); turn those back into bytes.
fn reduce(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = func else {
        return Err(format!("callable is a {}, expected a global", func.kind()));
    };
    let Value::Tuple(args) = args else {
        return Err("arguments are not a tuple".into());
    };
    match (name.as_str(), args.as_slice()) {
        ("encode", [Value::Str(text), Value::Str(enc)]) if enc == "latin1" || enc == "latin-1" => {
            text.chars()
                .map(|ch| {
                    u8::try_from(ch as u32).map_err(|_| format!("character {ch:?} is not latin-1"))
                })
                .collect::<Result<Vec<u8>, _>>()
                .map(|b| Value::Bytes(Rc::new(b)))
        }
        ("bytes", []) => Ok(Value::Bytes(Rc::new(Vec::new()))),
        _ => Err(format!(
            "unsupported call {module}.{name} with {} arguments",
            args.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PairSet {
        PairSet {
            images: vec![vec![1, 2, 3], vec![0xCE; 300], vec![], vec![255, 0]],
            issame: vec![true, false],
        }
    }

    #[test]
    fn writer_output_reads_back() {
        let s = sample();
        assert_eq!(PairSet::from_pickle(&s.to_pickle()).unwrap(), s);
        assert_eq!(s.pair(1).unwrap(), (&[][..], &[255u8, 0][..]));
    }

    #[test]
    fn python2_style_strings_and_memo_are_read() {
        // (['ab', 'c'], [True]) as Python 2 protocol 2 writes it, with BINPUT after each object.
        let mut p = vec![
            0x80, 2, b']', b'q', 0, b'(', b'U', 2, b'a', b'b', b'q', 1, b'T', 1, 0, 0, 0, b'c',
            b'q', 2, b'e',
        ];
        p.extend_from_slice(&[b']', b'q', 3, 0x88, b'a', 0x86, b'q', 4, b'.']);
        let s = PairSet::from_pickle(&p).unwrap();
        assert_eq!(s.images, vec![b"ab".to_vec(), b"c".to_vec()]);
        assert_eq!(s.issame, vec![true]);
    }

    #[test]
    fn unknown_opcodes_and_truncation_are_named() {
        let err = PairSet::from_pickle(&[0x80, 2, b'I', b'1', b'\n', b'.']).unwrap_err();
        assert!(err.contains("opcode 0x49 ('I') at byte 2"), "{err}");
        let mut p = sample().to_pickle();
        p.truncate(20);
        let err = PairSet::from_pickle(&p).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err = PairSet::from_pickle(&[
            0x80, 2, b'c', b'o', b's', b'\n', b's', b'y', b's', b't', b'e', b'm', b'\n',
        ])
        .unwrap_err();
        assert!(err.contains("unsupported global os.system"), "{err}");
        let odd = PairSet {
            images: vec![vec![1]],
            issame: vec![true],
        };
        let err = PairSet::from_pickle(&odd.to_pickle()).unwrap_err();
        assert!(err.contains("1 images for 1 pairs"), "{err}");
    }
}
