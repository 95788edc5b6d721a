//! labels.csv: `file,label` plus optional `reader_*` columns (scores or 0/1 labels),
//! a patient/study id column and a `fold` column.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub file: PathBuf,
    pub label: bool,
    pub readers: Vec<f64>,
    pub patient: Option<String>,
    pub fold: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub rows: Vec<Row>,
    pub reader_names: Vec<String>,
    pub has_patient: bool,
    pub has_fold: bool,
}

const PATIENT_COLUMNS: [&str; 4] = ["patient_id", "patient", "study_id", "id"];

fn parse_label(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "esrd" | "1" | "positive" => Some(true),
        "normal" | "0" | "negative" => Some(false),
        _ => None,
    }
}

fn parse_reader(s: &str) -> Option<f64> {
    let s = s.trim();
    parse_label(s).map(|b| if b { 1.0 } else { 0.0 }).or_else(|| s.parse::<f64>().ok().filter(|v| v.is_finite()))
}

impl Dataset {
    /// Reads `labels` and resolves files relative to `data` (or the CSV's directory).
    pub fn load(labels: &Path, data: Option<&Path>) -> Result<Self> {
        let base =
            data.map(Path::to_path_buf).unwrap_or_else(|| labels.parent().unwrap_or(Path::new(".")).to_path_buf());
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(labels)
            .with_context(|| format!("cannot read labels {}", labels.display()))?;
        let headers = reader.headers().with_context(|| format!("{}: no header row", labels.display()))?.clone();
        let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let (Some(file_col), Some(label_col)) = (col("file"), col("label")) else {
            bail!("{}: the header must have `file` and `label` columns (got {:?})", labels.display(), headers);
        };
        let reader_cols: Vec<(usize, String)> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.to_ascii_lowercase().starts_with("reader"))
            .map(|(i, h)| (i, h.to_string()))
            .collect();
        let patient_col = PATIENT_COLUMNS.iter().find_map(|c| col(c));
        let fold_col = col("fold");
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record = record.with_context(|| format!("{}:{line}: malformed CSV row", labels.display()))?;
            let field = |c: usize| record.get(c).unwrap_or("");
            let file = base.join(field(file_col));
            ensure!(file.is_file(), "{}:{line}: file {:?} not found", labels.display(), field(file_col));
            let label = parse_label(field(label_col)).with_context(|| {
                format!("{}:{line}: unknown label {:?} (esrd/normal or 1/0)", labels.display(), field(label_col))
            })?;
            let readers = reader_cols
                .iter()
                .map(|(c, name)| {
                    parse_reader(field(*c)).with_context(|| {
                        format!("{}:{line}: {name} = {:?} is not a score or esrd/normal", labels.display(), field(*c))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            rows.push(Row {
                file,
                label,
                readers,
                patient: patient_col.map(|c| field(c).to_string()).filter(|s| !s.is_empty()),
                fold: fold_col.map(|c| field(c).to_string()).filter(|s| !s.is_empty()),
            });
        }
        ensure!(!rows.is_empty(), "{}: no rows", labels.display());
        Ok(Self {
            rows,
            reader_names: reader_cols.into_iter().map(|(_, n)| n).collect(),
            has_patient: patient_col.is_some(),
            has_fold: fold_col.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_row() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        let csv = dir.path().join("labels.csv");
        std::fs::write(&csv, "file,label\na.png,esrd\na.png,maybe\n").unwrap();
        let err = format!("{:#}", Dataset::load(&csv, None).unwrap_err());
        assert!(err.contains("labels.csv:3") && err.contains("maybe"), "{err}");
        std::fs::write(&csv, "file,label\nmissing.png,esrd\n").unwrap();
        let err = format!("{:#}", Dataset::load(&csv, None).unwrap_err());
        assert!(err.contains("labels.csv:2") && err.contains("not found"), "{err}");
        std::fs::write(&csv, "file,label,reader_1,patient_id,fold\na.png,1,0.7,p1,2\n").unwrap();
        let d = Dataset::load(&csv, None).unwrap();
        assert_eq!(d.reader_names, vec!["reader_1"]);
        assert_eq!(d.rows[0].readers, vec![0.7]);
        assert_eq!(d.rows[0].patient.as_deref(), Some("p1"));
    }
}
