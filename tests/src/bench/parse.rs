//! Reading the figures the `trainer` and `edge` commands print (their tables are their
//! interface), so the report reuses their measurements instead of re-implementing them.

use anyhow::{bail, Context, Result};

/// The first markdown table in `text`: its header cells and its rows' cells.
pub fn markdown_table(text: &str) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let cells = |l: &str| -> Vec<String> {
        let l = l.trim().trim_start_matches('|').trim_end_matches('|');
        l.split('|').map(|c| c.trim().to_string()).collect()
    };
    let mut lines = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with('|'));
    let header = cells(lines.next()?);
    let sep = lines.next()?;
    if !sep.starts_with("|-") && !sep.starts_with("|:") && !sep.starts_with("| -") {
        return None;
    }
    let rows = lines
        .take_while(|l| l.starts_with('|'))
        .map(cells)
        .collect();
    Some((header, rows))
}

/// One 1:N search row of `edge bench`.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRow {
    pub people: usize,
    pub rows: usize,
    pub dim: usize,
    pub ms: f64,
}

/// What `edge bench` printed (milliseconds, mean over its runs).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeBench {
    pub load_detector: f64,
    pub load_recogniser: f64,
    /// "YuNet input 320" or "aligned crops".
    pub detector: String,
    pub detect: f64,
    pub align: f64,
    pub embed: f64,
    pub searches: Vec<SearchRow>,
    pub per_frame: f64,
    /// "unlocked after 3 agreeing frames".
    pub decision: String,
}

/// Parses `edge bench` output; a missing stage is an error naming it.
pub fn edge_bench(text: &str) -> Result<EdgeBench> {
    let (_, rows) = markdown_table(text).context("edge bench printed no table")?;
    let find = |prefix: &str| -> Result<(&str, f64)> {
        let row = rows
            .iter()
            .find(|r| r.first().is_some_and(|s| s.starts_with(prefix)))
            .with_context(|| format!("edge bench printed no `{prefix}` row"))?;
        let v = row
            .get(1)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("edge bench `{prefix}` row has no number: {row:?}"))?;
        Ok((row[0].as_str(), v))
    };
    let (det_label, load_detector) = find("load detector")?;
    let detector = inside_parens(det_label).unwrap_or_default().to_string();
    let (_, load_recogniser) = find("load recogniser")?;
    let (_, detect) = find("detect")?;
    let (_, align) = find("align")?;
    let (_, embed) = find("embed")?;
    let (e2e_label, per_frame) = find("end-to-end decision per frame")?;
    let decision = inside_parens(e2e_label)
        .and_then(|s| s.split_once("; ").map(|(_, d)| d.to_string()))
        .unwrap_or_default();
    let mut searches = Vec::new();
    for r in rows.iter().filter(|r| r[0].starts_with("1:N search")) {
        // "1:N search (1000 people, 2000 rows, dim 128)"
        let inner = inside_parens(&r[0]).with_context(|| format!("bad search row {r:?}"))?;
        let nums: Vec<usize> = inner
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        let [people, rows_n, dim] = nums[..] else {
            bail!("search row without people, rows and dim: {r:?}");
        };
        let ms = r
            .get(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("search row without a time: {r:?}"))?;
        searches.push(SearchRow {
            people,
            rows: rows_n,
            dim,
            ms,
        });
    }
    Ok(EdgeBench {
        load_detector,
        load_recogniser,
        detector,
        detect,
        align,
        embed,
        searches,
        per_frame,
        decision,
    })
}

fn inside_parens(s: &str) -> Option<&str> {
    let start = s.find('(')?;
    let end = s.rfind(')')?;
    (end > start).then(|| &s[start + 1..end])
}

/// One row of `trainer bench`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerStep {
    pub name: String,
    pub batch: usize,
    pub ms_per_step: f64,
    pub loss: f64,
    /// libtorch intra-op threads it ran with.
    pub threads: usize,
}

/// Parses `trainer bench` ("device Cpu, torch threads N", then "name batch ms/step ... loss").
pub fn trainer_bench(text: &str) -> Result<Vec<TrainerStep>> {
    let threads = text
        .lines()
        .find_map(|l| {
            l.split_once("torch threads ")
                .map(|(_, n)| n.trim().parse().ok())
        })
        .flatten()
        .context("trainer bench printed no `torch threads` line")?;
    let mut out = Vec::new();
    for l in text.lines().skip_while(|l| !l.starts_with("name")).skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let num = |i: usize| -> Result<f64> {
            f[i].parse()
                .with_context(|| format!("trainer bench row {l:?}: column {i} is not a number"))
        };
        out.push(TrainerStep {
            name: f[0].to_string(),
            batch: num(1)? as usize,
            ms_per_step: num(2)?,
            loss: num(4)?,
            threads,
        });
    }
    anyhow::ensure!(!out.is_empty(), "trainer bench printed no rows");
    Ok(out)
}

/// `trainer models`: backbone name -> parameters in millions (as printed, 3 decimals).
pub fn trainer_models(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .skip_while(|l| !l.starts_with("name"))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(1)?.parse().ok()?))
        })
        .collect()
}

/// One variant row of `trainer quantize`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeRow {
    pub variant: String,
    pub bytes: u64,
    pub cos_mean: f64,
    pub accuracy: f64,
    pub accuracy_delta: f64,
    pub tar: f64,
    pub tar_delta: f64,
    pub tract_ms: f64,
}

/// Parses the `trainer quantize` table by its column names.
pub fn quantize_table(text: &str) -> Result<Vec<QuantizeRow>> {
    let (header, rows) = markdown_table(text).context("trainer quantize printed no table")?;
    let col = |name: &str| -> Result<usize> {
        header
            .iter()
            .position(|h| h == name || h.starts_with(name))
            .with_context(|| format!("trainer quantize table has no `{name}` column: {header:?}"))
    };
    let (v, b, c, a, da, t, dt, ms) = (
        col("variant")?,
        col("bytes")?,
        col("cos mean")?,
        col("acc")?,
        col("d acc")?,
        col("TAR@FAR")?,
        col("d TAR")?,
        col("tract ms")?,
    );
    rows.iter()
        .map(|r| {
            let num = |i: usize| -> Result<f64> {
                r.get(i)
                    .and_then(|s| s.parse::<f64>().ok())
                    .with_context(|| {
                        format!(
                            "trainer quantize row {r:?}: `{}` is not a number",
                            header[i]
                        )
                    })
            };
            Ok(QuantizeRow {
                variant: r.get(v).cloned().unwrap_or_default(),
                bytes: num(b)? as u64,
                cos_mean: num(c)?,
                accuracy: num(a)?,
                accuracy_delta: num(da)?,
                tar: num(t)?,
                tar_delta: num(dt)?,
                tract_ms: num(ms)?,
            })
        })
        .collect()
}
