//! insightface / MXNet RecordIO: `.rec` records addressed by a text `.idx` (METHODS §8).
//!
//! Physical layer: `magic u32, (cflag << 29 | length) u32, bytes, zero pad to 4`. A writer splits
//! a payload wherever the magic occurs at a 4-byte-aligned offset (dropping those 4 bytes, cflag
//! 1 = first, 2 = middle, 3 = last) so a scanner can always resynchronise on the magic; the reader
//! re-joins the parts and re-inserts the magic. Logical layer: a 24-byte header
//! `flag u32, label f32, id u64, id2 u64`, `flag` extra f32 labels when `flag > 0`, then the image.
//! Reads use positioned I/O (`pread`), so one open file serves every loader thread.

use super::{DataError, EncodedFace, FaceSource};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Marks the start of every physical record.
pub const MAGIC: u32 = 0xCED7_230A;
const LENGTH_MASK: u32 = (1 << 29) - 1;
const HEADER_LEN: usize = 24;

/// The logical record header (`IRHeader` in MXNet) plus its label array.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordHeader {
    /// 0: scalar `label`; n > 0: `labels` holds n values.
    pub flag: u32,
    pub label: f32,
    pub id: u64,
    pub id2: u64,
    pub labels: Vec<f32>,
}

impl RecordHeader {
    /// A header with a single scalar label.
    pub fn scalar(label: f32, id: u64) -> Self {
        Self {
            flag: 0,
            label,
            id,
            id2: 0,
            labels: Vec::new(),
        }
    }
    /// A header with a label array (`flag = labels.len()`, scalar label 0).
    pub fn array(labels: Vec<f32>, id: u64) -> Self {
        Self {
            flag: labels.len() as u32,
            label: 0.0,
            id,
            id2: 0,
            labels,
        }
    }
    /// The class label: the first array entry for multi-label records, else the scalar.
    pub fn class_label(&self) -> f32 {
        self.labels.first().copied().unwrap_or(self.label)
    }
}

/// Serialise header + payload into one logical record.
pub fn pack_record(header: &RecordHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4 * header.labels.len() + payload.len());
    let flag = if header.labels.is_empty() {
        header.flag
    } else {
        header.labels.len() as u32
    };
    out.extend_from_slice(&flag.to_le_bytes());
    out.extend_from_slice(&header.label.to_le_bytes());
    out.extend_from_slice(&header.id.to_le_bytes());
    out.extend_from_slice(&header.id2.to_le_bytes());
    for l in &header.labels {
        out.extend_from_slice(&l.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Split a logical record into header and payload; `Err` says what is wrong.
pub fn unpack_record(record: &[u8]) -> Result<(RecordHeader, &[u8]), String> {
    if record.len() < HEADER_LEN {
        return Err(format!(
            "record is {} bytes, shorter than the {HEADER_LEN}-byte header",
            record.len()
        ));
    }
    let u32_at =
        |i: usize| u32::from_le_bytes([record[i], record[i + 1], record[i + 2], record[i + 3]]);
    let u64_at = |i: usize| (u32_at(i) as u64) | ((u32_at(i + 4) as u64) << 32);
    let flag = u32_at(0);
    let label = f32::from_bits(u32_at(4));
    let (id, id2) = (u64_at(8), u64_at(16));
    let n = flag as usize;
    let need = HEADER_LEN + 4 * n;
    if record.len() < need {
        return Err(format!(
            "header announces {n} labels but the record is only {} bytes",
            record.len()
        ));
    }
    let labels = (0..n)
        .map(|k| f32::from_bits(u32_at(HEADER_LEN + 4 * k)))
        .collect();
    Ok((
        RecordHeader {
            flag,
            label,
            id,
            id2,
            labels,
        },
        &record[need..],
    ))
}

/// Write one logical record as physical chunks; returns the number of bytes written.
pub fn write_physical(w: &mut impl Write, record: &[u8]) -> std::io::Result<u64> {
    if record.len() > LENGTH_MASK as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "record of {} bytes exceeds the RecordIO limit of 2^29 - 1",
                record.len()
            ),
        ));
    }
    let magic = MAGIC.to_le_bytes();
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 4 <= record.len() {
        if record[i..i + 4] == magic {
            chunks.push(&record[start..i]);
            start = i + 4;
        }
        i += 4;
    }
    chunks.push(&record[start..]);
    let last = chunks.len() - 1;
    let mut written = 0u64;
    for (k, chunk) in chunks.iter().enumerate() {
        let cflag: u32 = match (last, k) {
            (0, _) => 0,
            (_, 0) => 1,
            (l, k) if k == l => 3,
            _ => 2,
        };
        w.write_all(&magic)?;
        w.write_all(&((cflag << 29) | chunk.len() as u32).to_le_bytes())?;
        w.write_all(chunk)?;
        let pad = (4 - chunk.len() % 4) % 4;
        w.write_all(&[0u8; 3][..pad])?;
        written += 8 + chunk.len() as u64 + pad as u64;
    }
    Ok(written)
}

/// A `.rec` file opened with its `.idx`: random access to logical records by key.
#[derive(Debug)]
pub struct RecordFile {
    file: File,
    path: PathBuf,
    idx_path: PathBuf,
    file_len: u64,
    /// Keys in `.idx` order.
    keys: Vec<u64>,
    offsets: HashMap<u64, u64>,
}

impl RecordFile {
    /// Open `rec` and the `.idx` beside it (same stem).
    pub fn open(rec: &Path) -> Result<Self, DataError> {
        Self::open_with_index(rec, &rec.with_extension("idx"))
    }

    pub fn open_with_index(rec: &Path, idx: &Path) -> Result<Self, DataError> {
        let file = File::open(rec).map_err(|e| DataError::io(rec, e))?;
        let file_len = file.metadata().map_err(|e| DataError::io(rec, e))?.len();
        let text = std::fs::read_to_string(idx).map_err(|e| DataError::io(idx, e))?;
        let mut keys = Vec::new();
        let mut offsets = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let parse = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
            let (Some(key), Some(offset), None) =
                (parse(parts.next()), parse(parts.next()), parts.next())
            else {
                return Err(DataError::format(
                    idx,
                    format!("line {}: expected '<key>\\t<offset>', got {line:?}", n + 1),
                ));
            };
            if offsets.insert(key, offset).is_some() {
                return Err(DataError::format(
                    idx,
                    format!("line {}: key {key} appears twice", n + 1),
                ));
            }
            keys.push(key);
        }
        Ok(Self {
            file,
            path: rec.to_path_buf(),
            idx_path: idx.to_path_buf(),
            file_len,
            keys,
            offsets,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Keys in `.idx` order.
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }
    pub fn contains(&self, key: u64) -> bool {
        self.offsets.contains_key(&key)
    }

    /// The logical record stored under `key`, split parts re-joined.
    pub fn read(&self, key: u64) -> Result<Vec<u8>, DataError> {
        let Some(&offset) = self.offsets.get(&key) else {
            return Err(DataError::format(
                &self.idx_path,
                format!("no key {key} in the index"),
            ));
        };
        self.read_at(offset).map_err(|detail| {
            DataError::format(
                &self.path,
                format!(
                    "key {key} (offset {offset} from {}): {detail}",
                    self.idx_path.display()
                ),
            )
        })
    }

    /// Only the logical header of `key` (a few small reads instead of the whole image), for
    /// scanning labels of shuffled packs.
    pub fn read_header(&self, key: u64) -> Result<RecordHeader, DataError> {
        let Some(&offset) = self.offsets.get(&key) else {
            return Err(DataError::format(
                &self.idx_path,
                format!("no key {key} in the index"),
            ));
        };
        let context = |detail: String| {
            DataError::format(
                &self.path,
                format!(
                    "key {key} (offset {offset} from {}): {detail}",
                    self.idx_path.display()
                ),
            )
        };
        let mut head = [0u8; 8 + HEADER_LEN];
        self.read_exact_at(&mut head[..8], offset)
            .map_err(context)?;
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let lrec = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let first_len = (lrec & LENGTH_MASK) as usize;
        if magic == MAGIC && lrec >> 29 <= 1 && first_len >= HEADER_LEN {
            self.read_exact_at(&mut head[8..], offset + 8)
                .map_err(context)?;
            let flag = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
            let need = HEADER_LEN + 4 * flag;
            if first_len >= need {
                let mut buf = vec![0u8; need];
                self.read_exact_at(&mut buf, offset + 8).map_err(context)?;
                return unpack_record(&buf).map(|(h, _)| h).map_err(context);
            }
        }
        // Split inside the header, or broken: the full read re-joins or reports it.
        let record = self.read(key)?;
        unpack_record(&record).map(|(h, _)| h).map_err(context)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), String> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or("offset overflows")?;
        if end > self.file_len {
            return Err(format!(
                "truncated: needs bytes {offset}..{end} but the file has {} bytes",
                self.file_len
            ));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| format!("read failed at byte {offset}: {e}"))
    }

    fn read_at(&self, mut offset: u64) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut part = 0usize;
        loop {
            let mut head = [0u8; 8];
            self.read_exact_at(&mut head, offset)?;
            let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if magic != MAGIC {
                return Err(format!(
                    "no record starts at byte {offset} (found 0x{magic:08X}, expected magic 0x{MAGIC:08X}): bad offset or corrupt file"
                ));
            }
            let lrec = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let (cflag, len) = (lrec >> 29, (lrec & LENGTH_MASK) as usize);
            match (part, cflag) {
                (0, 0) | (0, 1) => {}
                (p, 2) | (p, 3) if p > 0 => out.extend_from_slice(&MAGIC.to_le_bytes()),
                _ => return Err(format!("chunk {part} at byte {offset} has continuation flag {cflag}: broken split record")),
            }
            // Check the claimed length against the file before allocating for it.
            if offset + 8 + len as u64 > self.file_len {
                return Err(format!(
                    "truncated: the record at byte {offset} claims {len} bytes but the file ends at {}",
                    self.file_len
                ));
            }
            let start = out.len();
            out.resize(start + len, 0);
            self.read_exact_at(&mut out[start..], offset + 8)?;
            offset += 8 + len as u64 + ((4 - len % 4) % 4) as u64;
            part += 1;
            if cflag == 0 || cflag == 3 {
                return Ok(out);
            }
        }
    }
}

/// Streams records into `<stem>.rec` + `<stem>.idx`; both appear only on [`RecordWriter::finish`]
/// (written to temporary names, fsynced and renamed), so a crash never leaves a half dataset.
pub struct RecordWriter {
    /// `None` once finished.
    rec: Option<BufWriter<File>>,
    idx: String,
    pos: u64,
    rec_path: PathBuf,
    idx_path: PathBuf,
    tmp_rec: PathBuf,
}

impl RecordWriter {
    pub fn create(rec_path: &Path) -> Result<Self, DataError> {
        let tmp_rec = tmp_name(rec_path);
        let file = File::create(&tmp_rec).map_err(|e| DataError::io(&tmp_rec, e))?;
        Ok(Self {
            rec: Some(BufWriter::with_capacity(1 << 20, file)),
            idx: String::new(),
            pos: 0,
            rec_path: rec_path.to_path_buf(),
            idx_path: rec_path.with_extension("idx"),
            tmp_rec,
        })
    }

    /// Append a record under `key`.
    pub fn write(
        &mut self,
        key: u64,
        header: &RecordHeader,
        payload: &[u8],
    ) -> Result<(), DataError> {
        let record = pack_record(header, payload);
        let rec = self
            .rec
            .as_mut()
            .ok_or_else(|| DataError::Config("record writer already finished".into()))?;
        let n = write_physical(rec, &record).map_err(|e| DataError::io(&self.tmp_rec, e))?;
        self.idx.push_str(&format!("{key}\t{}\n", self.pos));
        self.pos += n;
        Ok(())
    }

    /// Flush, fsync and move both files into place.
    pub fn finish(mut self) -> Result<(PathBuf, PathBuf), DataError> {
        let rec = self
            .rec
            .take()
            .ok_or_else(|| DataError::Config("record writer already finished".into()))?;
        let file = rec
            .into_inner()
            .map_err(|e| DataError::io(&self.tmp_rec, e.into_error()))?;
        file.sync_all()
            .map_err(|e| DataError::io(&self.tmp_rec, e))?;
        drop(file);
        std::fs::rename(&self.tmp_rec, &self.rec_path)
            .map_err(|e| DataError::io(&self.rec_path, e))?;
        shared::atomic_write(&self.idx_path, self.idx.as_bytes())
            .map_err(|e| DataError::io(&self.idx_path, e))?;
        Ok((self.rec_path.clone(), self.idx_path.clone()))
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        // After `finish` the temp file was renamed away and this is a no-op.
        let _ = std::fs::remove_file(&self.tmp_rec);
    }
}

fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Write a face dataset in the insightface convention: key 0 is a meta record with labels
/// `[A, B]`, images are keys `1..A` (label arrays `[class, aux]`; `aux` is free for the writer:
/// `trainer synth` stores the image's age-texture strength there, `pack` 0), keys `A..B` hold each identity's
/// `[first, end)` image-key range. `faces` must be grouped by class, classes `0..n` in order;
/// they are streamed (the first error stops the write and leaves no file behind).
pub fn write_insightface(
    rec_path: &Path,
    faces: impl IntoIterator<Item = Result<(u32, f32, Vec<u8>), DataError>>,
) -> Result<(PathBuf, PathBuf), DataError> {
    let mut writer = RecordWriter::create(rec_path)?;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut key = 1u64;
    let mut pending: Vec<(u64, RecordHeader, Vec<u8>)> = Vec::new();
    // Images are written first under their final keys; the meta record is key 0 but its offset
    // may come anywhere in the .rec, so it is written last (readers go through the .idx).
    for face in faces {
        let (label, aux, bytes) = face?;
        match ranges.len().checked_sub(1) {
            Some(last) if last as u32 == label => ranges[last].1 = key + 1,
            _ if label as usize == ranges.len() => ranges.push((key, key + 1)),
            _ => {
                return Err(DataError::Config(format!(
                    "faces must come grouped by class 0, 1, 2, ... in order; got class {label} after {} classes",
                    ranges.len()
                )))
            }
        }
        writer.write(
            key,
            &RecordHeader::array(vec![label as f32, aux], key),
            &bytes,
        )?;
        key += 1;
    }
    let a = key;
    for (c, (first, end)) in ranges.iter().enumerate() {
        pending.push((
            a + c as u64,
            RecordHeader::array(vec![*first as f32, *end as f32], a + c as u64),
            Vec::new(),
        ));
    }
    let b = a + ranges.len() as u64;
    pending.push((
        0,
        RecordHeader::array(vec![a as f32, b as f32], 0),
        Vec::new(),
    ));
    for (k, h, p) in pending {
        writer.write(k, &h, &p)?;
    }
    writer.finish()
}

/// A RecordIO face dataset: an ordered list of image keys and the number of classes.
#[derive(Debug)]
pub struct RecordDataset {
    file: RecordFile,
    image_keys: Vec<u64>,
    num_classes: usize,
    /// True when key 0 held the insightface meta record.
    pub has_meta: bool,
}

impl RecordDataset {
    /// Open `.rec` + `.idx`, following whichever key-0 convention the pack uses.
    pub fn open(rec: &Path) -> Result<Self, DataError> {
        let file = RecordFile::open(rec)?;
        let meta = if file.contains(0) {
            let record = file.read(0)?;
            let (header, _) = unpack_record(&record)
                .map_err(|d| DataError::format(rec, format!("key 0: {d}")))?;
            (header.flag > 0).then_some(header)
        } else {
            None
        };
        if let Some(h) = meta {
            if h.labels.len() < 2 {
                return Err(DataError::format(
                    rec,
                    "key 0 meta record needs labels [A, B]",
                ));
            }
            let (a, b) = (h.labels[0], h.labels[1]);
            if !(a >= 1.0 && b >= a && a.fract() == 0.0 && b.fract() == 0.0) {
                return Err(DataError::format(
                    rec,
                    format!("key 0 meta record has invalid range [{a}, {b}]"),
                ));
            }
            let (a, b) = (a as u64, b as u64);
            if let Some(missing) = (1..b).find(|k| !file.contains(*k)) {
                return Err(DataError::format(
                    rec,
                    format!(
                        "meta record says keys 1..{b} exist but key {missing} is not in the index"
                    ),
                ));
            }
            let num_classes = (b - a) as usize;
            let image_keys = (1..a).collect();
            Ok(Self {
                file,
                image_keys,
                num_classes,
                has_meta: true,
            })
        } else {
            // Shuffled pack: every key is an image with a scalar (or first-array) label; the class
            // count needs one header read per record.
            let image_keys: Vec<u64> = file.keys().to_vec();
            let mut max_label = -1i64;
            for &k in &image_keys {
                let h = file.read_header(k)?;
                max_label = max_label.max(label_of(&h, rec, k)? as i64);
            }
            Ok(Self {
                file,
                image_keys,
                num_classes: (max_label + 1) as usize,
                has_meta: false,
            })
        }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
    /// The full header (all labels) of dataset image `index`, without reading the image.
    pub fn header(&self, index: usize) -> Result<RecordHeader, DataError> {
        let key = self.key(index).ok_or_else(|| {
            DataError::Config(format!(
                "index {index} out of range for {} ({} images)",
                self.path().display(),
                self.len()
            ))
        })?;
        self.file.read_header(key)
    }

    /// The `.rec` key of dataset image `index`.
    pub fn key(&self, index: usize) -> Option<u64> {
        self.image_keys.get(index).copied()
    }
}

fn label_of(h: &RecordHeader, rec: &Path, key: u64) -> Result<u32, DataError> {
    let l = h.class_label();
    if !(l >= 0.0 && l.fract() == 0.0 && l < u32::MAX as f32) {
        return Err(DataError::format(
            rec,
            format!("key {key}: label {l} is not a class index"),
        ));
    }
    Ok(l as u32)
}

impl FaceSource for RecordDataset {
    fn len(&self) -> usize {
        self.image_keys.len()
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn read(&self, index: usize) -> Result<EncodedFace, DataError> {
        let key = self.key(index).ok_or_else(|| {
            DataError::Config(format!(
                "index {index} out of range for {} ({} images)",
                self.path().display(),
                self.len()
            ))
        })?;
        let record = self.file.read(key)?;
        let (h, payload) = unpack_record(&record)
            .map_err(|d| DataError::format(self.path(), format!("key {key}: {d}")))?;
        let label = label_of(&h, self.path(), key)?;
        if label as usize >= self.num_classes {
            return Err(DataError::format(
                self.path(),
                format!(
                    "key {key}: label {label} is outside the {} classes of the meta record",
                    self.num_classes
                ),
            ));
        }
        Ok(EncodedFace {
            label,
            bytes: payload.to_vec(),
            origin: format!("{} key {key}", self.path().display()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_at_aligned_offsets_is_split_and_rejoined() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("t.rec");
        let m = MAGIC.to_le_bytes();
        // Magic at payload offset 4 (record offset 28: aligned), twice in a row, at the very end,
        // and once unaligned (offset 41) where it must stay in place.
        let mut payload = vec![1u8, 2, 3, 4];
        payload.extend_from_slice(&m);
        payload.extend_from_slice(&m);
        payload.extend_from_slice(&[9, 9, 9, 9, 0]);
        payload.extend_from_slice(&m);
        payload.extend_from_slice(&[7, 7, 7]);
        payload.extend_from_slice(&m);
        let plain = b"no magic here, odd length".to_vec();
        let mut w = RecordWriter::create(&rec).unwrap();
        w.write(5, &RecordHeader::scalar(3.0, 5), &payload).unwrap();
        w.write(6, &RecordHeader::array(vec![1.0, 2.0, 3.0], 6), &plain)
            .unwrap();
        w.finish().unwrap();

        let bytes = std::fs::read(&rec).unwrap();
        let cflags: Vec<u32> = (0..bytes.len() / 4)
            .filter(|i| bytes[i * 4..i * 4 + 4] == m)
            .map(|i| u32::from_le_bytes(bytes[i * 4 + 4..i * 4 + 8].try_into().unwrap()) >> 29)
            .collect();
        assert!(
            cflags.starts_with(&[1, 2, 2]),
            "split chunks expected, got {cflags:?}"
        );
        assert_eq!(bytes.len() % 4, 0);

        let f = RecordFile::open(&rec).unwrap();
        let (h, p) = unpack_record(&f.read(5).unwrap())
            .map(|(h, p)| (h, p.to_vec()))
            .unwrap();
        assert_eq!((h.flag, h.label, h.id), (0, 3.0, 5));
        assert_eq!(p, payload);
        let r6 = f.read(6).unwrap();
        let (h, p) = unpack_record(&r6).unwrap();
        assert_eq!(h.labels, vec![1.0, 2.0, 3.0]);
        assert_eq!(h.class_label(), 1.0);
        assert_eq!(p, &plain[..]);
    }

    #[test]
    fn header_only_reads_match_full_reads_even_when_split_inside_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("h.rec");
        let mut w = RecordWriter::create(&rec).unwrap();
        // id = magic puts it at record offset 8: the header itself is split.
        let split = RecordHeader {
            flag: 0,
            label: 4.0,
            id: MAGIC as u64,
            id2: 0,
            labels: vec![],
        };
        w.write(1, &split, b"img").unwrap();
        w.write(2, &RecordHeader::array(vec![7.0, 1.0], 2), b"img2")
            .unwrap();
        w.finish().unwrap();
        let f = RecordFile::open(&rec).unwrap();
        assert_eq!(f.read_header(1).unwrap(), split);
        assert_eq!(
            f.read_header(2).unwrap(),
            RecordHeader::array(vec![7.0, 1.0], 2)
        );
        let ds = RecordDataset::open(&rec).unwrap();
        assert!(!ds.has_meta);
        assert_eq!(ds.num_classes(), 8);
    }

    #[test]
    fn truncated_and_misplaced_records_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("t.rec");
        let mut w = RecordWriter::create(&rec).unwrap();
        w.write(0, &RecordHeader::scalar(0.0, 0), &[0u8; 100])
            .unwrap();
        w.write(1, &RecordHeader::scalar(1.0, 1), &[0u8; 100])
            .unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&rec).unwrap();
        std::fs::write(&rec, &bytes[..bytes.len() - 10]).unwrap();
        let err = RecordFile::open(&rec)
            .unwrap()
            .read(1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.rec") && err.contains("key 1") && err.contains("truncated"),
            "{err}"
        );

        std::fs::write(dir.path().join("t.idx"), "0\t0\n1\t12\n").unwrap();
        let err = RecordFile::open(&rec)
            .unwrap()
            .read(1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no record starts at byte 12") && err.contains("bad offset"),
            "{err}"
        );

        // A corrupt length field is refused before anything is allocated for it.
        let mut huge = MAGIC.to_le_bytes().to_vec();
        huge.extend_from_slice(&(1u32 << 28).to_le_bytes());
        huge.extend_from_slice(&[0u8; 32]);
        std::fs::write(&rec, &huge).unwrap();
        std::fs::write(dir.path().join("t.idx"), "0\t0\n").unwrap();
        let err = RecordFile::open(&rec)
            .unwrap()
            .read(0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("claims 268435456 bytes but the file ends at 40"),
            "{err}"
        );

        std::fs::write(dir.path().join("t.idx"), "0\t0\nbanana\n").unwrap();
        let err = RecordFile::open(&rec).unwrap_err().to_string();
        assert!(err.contains("t.idx") && err.contains("line 2"), "{err}");
        let err = unpack_record(&[1, 2, 3]).unwrap_err();
        assert!(err.contains("shorter than the 24-byte header"), "{err}");
    }

    #[test]
    fn insightface_meta_convention_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("train.rec");
        let faces = vec![
            (0u32, vec![1u8]),
            (0, vec![2]),
            (1, vec![3]),
            (2, vec![4]),
            (2, vec![5]),
        ];
        write_insightface(&rec, faces.into_iter().map(|(l, b)| Ok((l, 0.5, b)))).unwrap();
        let ds = RecordDataset::open(&rec).unwrap();
        assert!(ds.has_meta);
        assert_eq!((ds.len(), ds.num_classes()), (5, 3));
        let labels: Vec<u32> = (0..5).map(|i| ds.read(i).unwrap().label).collect();
        assert_eq!(labels, vec![0, 0, 1, 2, 2]);
        assert_eq!(ds.read(4).unwrap().bytes, vec![5]);
        // Identity ranges [first, end) sit at keys A..B.
        let f = RecordFile::open(&rec).unwrap();
        let r8 = f.read(8).unwrap();
        assert_eq!(unpack_record(&r8).unwrap().0.labels, vec![4.0, 6.0]);
        let err = write_insightface(&dir.path().join("x.rec"), vec![Ok((1u32, 0.0, vec![0u8]))])
            .unwrap_err();
        assert!(err.to_string().contains("grouped by class"), "{err}");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any payload, with the magic planted at any set of 4-byte-aligned record offsets,
        /// comes back byte for byte.
        #[test]
        fn any_payload_round_trips(
            mut payload in proptest::collection::vec(any::<u8>(), 0..300),
            plant in proptest::collection::vec(0usize..80, 0..6),
            labels in proptest::collection::vec(-1e6f32..1e6, 0..4),
        ) {
            let header = RecordHeader::array(labels.clone(), 9);
            for p in plant {
                // The header is 24 + 4n bytes, so payload offset 4p is record-aligned too.
                let at = 4 * p;
                if at + 4 <= payload.len() {
                    payload[at..at + 4].copy_from_slice(&MAGIC.to_le_bytes());
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let rec = dir.path().join("p.rec");
            let mut w = RecordWriter::create(&rec).unwrap();
            w.write(1, &header, &payload).unwrap();
            w.write(2, &RecordHeader::scalar(1.0, 2), &payload).unwrap();
            w.finish().unwrap();
            let f = RecordFile::open(&rec).unwrap();
            for key in [1, 2] {
                let r = f.read(key).unwrap();
                let (h, p) = unpack_record(&r).unwrap();
                prop_assert_eq!(p, &payload[..]);
                if key == 1 { prop_assert_eq!(&h.labels, &labels); }
            }
        }
    }
}
