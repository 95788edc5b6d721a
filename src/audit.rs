//! Audit stage: one JSON line per shown verdict, appended and flushed per record.
//!
//! Each record is serialised into a reused buffer and written with a single `write` on a file
//! opened in append mode, then (by default) synced to disk. A crash or power cut can therefore
//! only ever leave the last line incomplete; every earlier record stays parseable, and on
//! re-open a missing final newline is added so the next record starts on its own line. Records
//! hold the ROI's hash and coordinates, never pixels: nothing identifying leaves the screen.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::geometry::Rect;

pub const AUDIT_FILE: &str = "audit.jsonl";

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time.
    pub time: String,
    pub sequence: u64,
    pub source: String,
    pub model_id: String,
    pub model_sha256: String,
    /// sha256 of the model-sized ROI pixels the model saw.
    pub roi_sha256: Option<String>,
    pub roi: Option<Rect>,
    pub probability: Option<f32>,
    pub verdict: String,
    pub agreeing: u8,
    pub window: u8,
}

/// Append-only, crash-safe JSON-lines writer.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    sync: bool,
    line: Vec<u8>,
    written: u64,
}

impl AuditLog {
    /// Opens (creating) `dir/audit.jsonl`. `sync`: fdatasync after every record.
    pub fn open(dir: &Path, sync: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create audit directory {}", dir.display()))?;
        let path = dir.join(AUDIT_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .with_context(|| format!("cannot open audit log {}", path.display()))?;
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                log::warn!("audit log {} ends in an incomplete record (crash?); starting a new line", path.display());
                file.write_all(b"\n")?;
            }
        }
        Ok(Self { path, file, sync, line: Vec::with_capacity(512), written: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn records_written(&self) -> u64 {
        self.written
    }

    pub fn append(&mut self, record: &AuditRecord) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        self.file
            .write_all(&self.line)
            .with_context(|| format!("cannot append to audit log {}", self.path.display()))?;
        if self.sync {
            self.file.sync_data().with_context(|| format!("cannot sync audit log {}", self.path.display()))?;
        }
        self.written += 1;
        Ok(())
    }
}

/// Reads every complete record; an incomplete last line (a crash mid-write) is skipped and
/// counted, any other bad line is an error naming the line.
pub fn read_records(path: &Path) -> Result<(Vec<AuditRecord>, usize)> {
    let file = File::open(path).with_context(|| format!("cannot open audit log {}", path.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(file).lines().collect::<Result<_, _>>()?;
    let mut records = Vec::with_capacity(lines.len());
    let mut skipped = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(r) => records.push(r),
            // A torn write is a prefix of a record: it never parses, and it is followed only
            // by the newline added on re-open and later complete records.
            Err(_) if !line.ends_with('}') => skipped += 1,
            Err(e) => return Err(e).with_context(|| format!("{}:{}: bad audit record", path.display(), i + 1)),
        }
    }
    Ok((records, skipped))
}

/// RFC 3339 UTC time with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> AuditRecord {
        AuditRecord {
            time: now_rfc3339(),
            sequence: seq,
            source: "test".into(),
            model_id: "m".into(),
            model_sha256: "0".repeat(64),
            roi_sha256: Some("ab".repeat(32)),
            roi: Some(Rect::new(1, 2, 3, 4)),
            probability: Some(0.75),
            verdict: "ESRD_SUSPECTED".into(),
            agreeing: 4,
            window: 6,
        }
    }

    #[test]
    fn records_round_trip_and_survive_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = AuditLog::open(dir.path(), false).unwrap();
            log.append(&record(1)).unwrap();
            log.append(&record(2)).unwrap();
        }
        // Simulate a crash in the middle of the third record.
        let path = dir.path().join(AUDIT_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"time":"2026-01-01T00:00:00Z","sequence":3,"sou"#).unwrap();
        drop(f);
        let mut log = AuditLog::open(dir.path(), true).unwrap();
        log.append(&record(4)).unwrap();
        let (records, skipped) = read_records(&path).unwrap();
        assert_eq!(records.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![1, 2, 4]);
        assert_eq!(skipped, 1);
        assert_eq!(records[0], AuditRecord { time: records[0].time.clone(), ..record(1) });
    }
}
