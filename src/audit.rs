//! Audit stage: one JSON line per shown verdict, appended and flushed per record.
//!
//! Each record is serialised into a reused buffer and written with a single `write` on a file
//! opened in append mode, then (by default) synced to disk. A crash or power cut can therefore
//! only ever leave the last line incomplete; every earlier record stays parseable, and on
//! re-open a missing final newline is added so the next record starts on its own line. Records
//! hold the ROI's hash and coordinates, never pixels: nothing identifying leaves the screen.
//!
//! Rotation: before a record would take `audit.jsonl` past `max_bytes`, the file is renamed to
//! `audit.1.jsonl` (older ones shift up to `audit.<keep>.jsonl`, the oldest is dropped) and a
//! new `audit.jsonl` is started; renames are atomic and the directory is synced after them.
//!
//! A failed write (full SD card, I/O error, file removed) is an error from [`AuditLog::append`]:
//! the record, and every later one, waits in a bounded in-memory backlog (oldest dropped only when
//! it is full, counted and logged) and [`AuditLog::retry`] writes them, in order, once the disk
//! takes them again. A short write is cut off again (or, failing that, closed with a newline) so
//! a retried record always starts on its own line. While [`AuditLog::is_failing`] the pipeline
//! shows FAULT.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};

use crate::geometry::Rect;

pub const AUDIT_FILE: &str = "audit.jsonl";
/// `[audit] max_bytes` default: rotate before `audit.jsonl` would pass 16 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// `[audit] keep` default: rotated files kept (`audit.1.jsonl` .. `audit.8.jsonl`).
pub const DEFAULT_KEEP: usize = 8;
/// Records held in memory while the disk refuses them.
pub const DEFAULT_BACKLOG: usize = 256;

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

/// How the log is written (`[audit]` in the board profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditOptions {
    /// fdatasync after every record.
    pub sync: bool,
    /// Rotate before a record would take `audit.jsonl` past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept: `audit.1.jsonl` (newest) .. `audit.<keep>.jsonl` (oldest).
    pub keep: usize,
    /// Records held in memory while writes fail.
    pub backlog: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self { sync: true, max_bytes: DEFAULT_MAX_BYTES, keep: DEFAULT_KEEP, backlog: DEFAULT_BACKLOG }
    }
}

impl AuditOptions {
    /// The profile's `[audit] sync`, `max_bytes` and `keep`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self { sync: config.audit_sync, max_bytes: config.audit_max_bytes, keep: config.audit_keep, ..Self::default() }
    }
}

/// Name of the `n`th rotated file (1 = newest).
pub fn rotated_name(n: usize) -> String {
    format!("audit.{n}.jsonl")
}

/// The audit files in `dir`, oldest first: `audit.<n>.jsonl` down to `audit.1.jsonl`, then
/// `audit.jsonl`.
pub fn log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut rotated: Vec<(usize, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list audit directory {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let n = name.strip_prefix("audit.").and_then(|r| r.strip_suffix(".jsonl")).and_then(|n| n.parse().ok());
        if let Some(n) = n {
            rotated.push((n, entry.path()));
        }
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let current = dir.join(AUDIT_FILE);
    if current.exists() {
        files.push(current);
    }
    Ok(files)
}

/// Every record of every file in `dir`, oldest first, and the number of torn lines skipped.
pub fn read_dir_records(dir: &Path) -> Result<(Vec<AuditRecord>, usize)> {
    let mut all = Vec::new();
    let mut torn = 0;
    for file in log_files(dir)? {
        let (records, skipped) = read_records(&file)?;
        all.extend(records);
        torn += skipped;
    }
    Ok((all, torn))
}

/// The file under the log. A trait so tests can give the log a disk that fills up.
trait Storage {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize>;
    fn sync_data(&mut self) -> std::io::Result<()>;
    fn set_len(&mut self, len: u64) -> std::io::Result<()>;
}

impl Storage for File {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Write::write(self, buf)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        File::set_len(self, len)
    }
}

/// An opened `audit.jsonl`.
struct Opened {
    file: File,
    len: u64,
    /// The file ends in a torn record and the newline could not be added yet.
    needs_newline: bool,
    identity: Option<(u64, u64)>,
}

fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Opens (creating) the log file and closes a torn last record with a newline.
fn open_file(path: &Path) -> Result<Opened> {
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .with_context(|| format!("cannot open audit log {}", path.display()))?;
    let meta = file.metadata().with_context(|| format!("cannot stat audit log {}", path.display()))?;
    let mut len = meta.len();
    let mut needs_newline = false;
    if len > 0 && meta.is_file() {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            log::warn!("audit log {} ends in an incomplete record (crash?); starting a new line", path.display());
            match file.write_all(b"\n") {
                Ok(()) => len += 1,
                // A full disk: the newline goes in front of the next record that gets written.
                Err(e) => {
                    log::error!("cannot close the incomplete record of {}: {e}", path.display());
                    needs_newline = true;
                }
            }
        }
    }
    if !existed && let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(Opened { file, len, needs_newline, identity: identity(&meta) })
}

/// Makes renames and new files in `dir` durable (best effort: logged, not fatal).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        log::warn!("cannot sync audit directory {}: {e}", dir.display());
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Append-only, crash-safe JSON-lines writer with rotation and a backlog for failed writes.
pub struct AuditLog {
    dir: PathBuf,
    path: PathBuf,
    file: Box<dyn Storage>,
    identity: Option<(u64, u64)>,
    options: AuditOptions,
    line: Vec<u8>,
    /// Bytes in `audit.jsonl` that hold whole records (what a torn write is cut back to).
    len: u64,
    needs_newline: bool,
    /// Written but not yet synced (a sync failed).
    unsynced: bool,
    /// Serialised records waiting for the disk, oldest first.
    pending: VecDeque<Vec<u8>>,
    failing: bool,
    written: u64,
    dropped: u64,
    rotations: u64,
}

impl AuditLog {
    /// Opens (creating) `dir/audit.jsonl` with the default rotation. `sync`: fdatasync after
    /// every record.
    pub fn open(dir: &Path, sync: bool) -> Result<Self> {
        Self::open_with(dir, AuditOptions { sync, ..AuditOptions::default() })
    }

    /// Opens (creating) `dir/audit.jsonl`.
    pub fn open_with(dir: &Path, options: AuditOptions) -> Result<Self> {
        ensure!(options.max_bytes > 0, "audit max_bytes must be positive");
        ensure!(options.keep >= 1, "audit keep must be at least 1");
        ensure!(options.backlog >= 1, "audit backlog must be at least 1");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create audit directory {}", dir.display()))?;
        let path = dir.join(AUDIT_FILE);
        let opened = open_file(&path)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            file: Box::new(opened.file),
            identity: opened.identity,
            options,
            line: Vec::with_capacity(512),
            len: opened.len,
            needs_newline: opened.needs_newline,
            unsynced: false,
            pending: VecDeque::new(),
            failing: false,
            written: 0,
            dropped: 0,
            rotations: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records written to disk by this log (backlog included once written).
    pub fn records_written(&self) -> u64 {
        self.written
    }

    /// Records waiting in memory for the disk.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Records lost because the backlog was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Rotations done by this log.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// True from a failed write or sync until everything waiting is on disk.
    pub fn is_failing(&self) -> bool {
        self.failing
    }

    /// Writes one record (after any waiting ones). An error means it is not on disk yet: it
    /// waits in the backlog for [`AuditLog::retry`] or the next append.
    pub fn append(&mut self, record: &AuditRecord) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        if !self.failing && self.pending.is_empty() {
            // The usual path: one write (and sync) of the reused buffer, no allocation.
            let line = std::mem::take(&mut self.line);
            let written = self.write_line(&line);
            self.line = line;
            return match written {
                Ok(()) => self.sync(),
                Err(e) => {
                    self.enqueue(self.line.clone());
                    Err(self.fail(e))
                }
            };
        }
        self.enqueue(self.line.clone());
        self.flush()
    }

    /// While failing: reopens the file if it was removed or replaced, then writes what waits.
    /// Ok once everything is on disk (at once when nothing is failing).
    pub fn retry(&mut self) -> Result<()> {
        if !self.failing {
            return Ok(());
        }
        self.flush()
    }

    fn enqueue(&mut self, line: Vec<u8>) {
        if self.pending.len() >= self.options.backlog {
            self.pending.pop_front();
            self.dropped += 1;
            log::error!(
                "audit backlog full ({} records waiting for {}): oldest record dropped ({} dropped in all)",
                self.options.backlog,
                self.path.display(),
                self.dropped
            );
        }
        self.pending.push_back(line);
    }

    fn flush(&mut self) -> Result<()> {
        self.reopen_if_replaced();
        while let Some(line) = self.pending.pop_front() {
            if let Err(e) = self.write_line(&line) {
                self.pending.push_front(line);
                return Err(self.fail(e));
            }
        }
        self.sync()
    }

    fn sync(&mut self) -> Result<()> {
        if self.options.sync || self.unsynced {
            if let Err(e) = self.file.sync_data() {
                self.unsynced = true;
                return Err(self.fail(e).context("sync failed"));
            }
            self.unsynced = false;
        }
        if self.failing {
            self.failing = false;
            log::info!("audit log {} is writable again", self.path.display());
        }
        Ok(())
    }

    fn fail(&mut self, e: std::io::Error) -> anyhow::Error {
        self.failing = true;
        anyhow::Error::new(e).context(format!(
            "cannot write audit log {} ({} records waiting)",
            self.path.display(),
            self.pending.len()
        ))
    }

    /// One record: rotation if due, then a single write.
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.len > 0
            && self.len + line.len() as u64 > self.options.max_bytes
            && let Err(e) = self.rotate()
        {
            log::error!("cannot rotate audit log {}: {e:#}; appending to it", self.path.display());
        }
        if self.needs_newline {
            self.write_raw(b"\n")?;
            self.needs_newline = false;
        }
        self.write_raw(line)?;
        self.written += 1;
        Ok(())
    }

    /// Writes all of `bytes` (one `write` unless the kernel takes less); on failure the file is
    /// cut back to its last whole record, or, if that fails too, marked to get a newline first.
    fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == bytes.len() {
                break Ok(());
            }
            match self.file.write(&bytes[done..]) {
                Ok(0) => break Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the disk took no bytes")),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                self.len += done as u64;
                Ok(())
            }
            Err(e) => {
                if done > 0
                    && let Err(cut) = self.file.set_len(self.len)
                {
                    log::error!("cannot cut a torn audit record from {}: {cut}", self.path.display());
                    self.len += done as u64;
                    self.needs_newline = true;
                }
                Err(e)
            }
        }
    }

    /// audit.jsonl -> audit.1.jsonl -> ... -> audit.<keep>.jsonl (dropped), new audit.jsonl.
    fn rotate(&mut self) -> Result<()> {
        if self.unsynced || !self.options.sync {
            self.file.sync_data().context("sync before rotation")?;
            self.unsynced = false;
        }
        // Shift only while audit.jsonl is still this log's file: after a failed open below it is
        // gone, and shifting again would drop rotated files for nothing.
        let ours = match std::fs::metadata(&self.path) {
            Ok(meta) => self.identity.is_none() || identity(&meta) == self.identity,
            Err(_) => false,
        };
        let first = self.dir.join(rotated_name(1));
        if ours {
            for n in (1..self.options.keep).rev() {
                let from = self.dir.join(rotated_name(n));
                if from.exists() {
                    std::fs::rename(&from, self.dir.join(rotated_name(n + 1)))
                        .with_context(|| format!("cannot rename {}", from.display()))?;
                }
            }
            std::fs::rename(&self.path, &first)
                .with_context(|| format!("cannot rename {} to {}", self.path.display(), first.display()))?;
            self.rotations += 1;
        }
        // From here on the old file is safe under its new name; a failure to open the new one
        // leaves the old handle in place (records keep going to audit.1.jsonl) and `retry`
        // opens audit.jsonl later.
        let opened = open_file(&self.path)?;
        sync_dir(&self.dir);
        self.file = Box::new(opened.file);
        self.identity = opened.identity;
        self.len = opened.len;
        self.needs_newline = opened.needs_newline;
        log::info!("audit log rotated: {} -> {}", self.path.display(), first.display());
        Ok(())
    }

    /// A removed or replaced audit.jsonl (SD card swapped or remounted, file deleted) is opened
    /// afresh; records already on disk in the old one stay there.
    fn reopen_if_replaced(&mut self) {
        let replaced = match std::fs::metadata(&self.path) {
            Ok(meta) => self.identity.is_some() && identity(&meta) != self.identity,
            Err(_) => true,
        };
        if !replaced {
            return;
        }
        match open_file(&self.path) {
            Ok(opened) => {
                log::warn!("audit log {} was removed or replaced: opened it again", self.path.display());
                self.file = Box::new(opened.file);
                self.identity = opened.identity;
                self.len = opened.len;
                self.needs_newline = opened.needs_newline;
                self.unsynced = false;
            }
            Err(e) => log::debug!("audit log still unavailable: {e:#}"),
        }
    }
}

/// Reads every complete record. A torn line (a crash or power cut mid-write: a prefix of a
/// record, or the zero bytes a filesystem can leave after a power cut) is skipped and counted;
/// any other bad line is an error naming the line.
pub fn read_records(path: &Path) -> Result<(Vec<AuditRecord>, usize)> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("cannot read audit log {}", path.display()))?;
    let mut records = Vec::with_capacity(bytes.len() / 300);
    let mut skipped = 0;
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(r) => records.push(r),
            // A torn write is a prefix of a record: it ends early, and it is followed only by the
            // newline added on re-open and later complete records.
            Err(e) if e.is_eof() || line.contains(&0) => skipped += 1,
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

    #[test]
    fn a_line_torn_after_a_nested_object_or_zero_filled_is_skipped_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let full = serde_json::to_string(&record(1)).unwrap();
        let cut = full.find("},").unwrap() + 1; // just after the nested `roi` object
        std::fs::write(&path, format!("{full}\n{}\n\0\0\0\0\n{full}\n", &full[..cut])).unwrap();
        let (records, skipped) = read_records(&path).unwrap();
        assert_eq!((records.len(), skipped), (2, 2));
        std::fs::write(&path, format!("{full}\n{{\"bogus\": 1}}\n")).unwrap();
        let err = format!("{:#}", read_records(&path).unwrap_err());
        assert!(err.contains(":2: bad audit record"), "{err}");
    }

    fn options(max_bytes: u64, keep: usize, backlog: usize) -> AuditOptions {
        AuditOptions { sync: false, max_bytes, keep, backlog }
    }

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let line_len = serde_json::to_vec(&record(1)).unwrap().len() as u64 + 1;
        let max = line_len * 4 + 10; // four records a file
        let mut log = AuditLog::open_with(dir.path(), options(max, 3, 8)).unwrap();
        for seq in 1..=30 {
            log.append(&record(seq)).unwrap();
        }
        drop(log);
        let names: Vec<String> =
            log_files(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
        assert_eq!(names, ["audit.3.jsonl", "audit.2.jsonl", "audit.1.jsonl", "audit.jsonl"]);
        for name in &names {
            assert!(std::fs::metadata(dir.path().join(name)).unwrap().len() <= max, "{name}");
        }
        // 30 records: seven full files of four, the last file holds 29 and 30; three rotated
        // files are kept, the oldest four files were dropped.
        let (records, torn) = read_dir_records(dir.path()).unwrap();
        assert_eq!(torn, 0);
        assert_eq!(records.iter().map(|r| r.sequence).collect::<Vec<_>>(), (17..=30).collect::<Vec<_>>());
        // Re-opening a full file rotates before the next record.
        let mut log = AuditLog::open_with(dir.path(), options(line_len * 2, 3, 8)).unwrap();
        log.append(&record(31)).unwrap();
        assert_eq!(log.rotations(), 1);
        assert_eq!(read_records(&dir.path().join(AUDIT_FILE)).unwrap().0.len(), 1);
    }

    /// A disk with `left` bytes free: writes what fits (a short write), then ENOSPC.
    struct SmallDisk {
        file: File,
        left: std::rc::Rc<std::cell::Cell<u64>>,
        truncate_fails: bool,
    }

    impl Storage for SmallDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = (self.left.get() as usize).min(buf.len());
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.left.set(self.left.get() - n as u64);
            Write::write(&mut self.file, &buf[..n])
        }

        fn sync_data(&mut self) -> std::io::Result<()> {
            Ok(())
        }

        fn set_len(&mut self, len: u64) -> std::io::Result<()> {
            if self.truncate_fails {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            let freed = self.file.metadata()?.len().saturating_sub(len);
            self.left.set(self.left.get() + freed);
            self.file.set_len(len)
        }
    }

    fn small_disk(log: &mut AuditLog, left: u64, truncate_fails: bool) -> std::rc::Rc<std::cell::Cell<u64>> {
        let left = std::rc::Rc::new(std::cell::Cell::new(left));
        let file = OpenOptions::new().append(true).open(&log.path).unwrap();
        log.file = Box::new(SmallDisk { file, left: left.clone(), truncate_fails });
        left
    }

    fn sequences(path: &Path) -> (Vec<u64>, usize) {
        let (records, torn) = read_records(path).unwrap();
        (records.iter().map(|r| r.sequence).collect(), torn)
    }

    #[test]
    fn a_full_disk_keeps_records_waiting_and_writes_them_in_order_when_space_returns() {
        for truncate_fails in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = AuditLog::open_with(dir.path(), options(DEFAULT_MAX_BYTES, 2, 16)).unwrap();
            let line_len = serde_json::to_vec(&record(1)).unwrap().len() as u64 + 1;
            let left = small_disk(&mut log, line_len + line_len / 2, truncate_fails);
            log.append(&record(1)).unwrap();
            assert!(!log.is_failing());
            // Record 2 only half fits: a short write, then ENOSPC.
            let err = format!("{:#}", log.append(&record(2)).unwrap_err());
            assert!(err.contains("audit.jsonl") && err.contains("1 records waiting"), "{err}");
            assert!(log.is_failing());
            assert!(log.append(&record(3)).is_err());
            assert!(log.retry().is_err());
            assert_eq!(log.pending(), 2);
            // What is on disk still parses; the torn half was cut off again where it could be.
            let (seqs, torn) = sequences(log.path());
            assert_eq!((seqs, torn), (vec![1], usize::from(truncate_fails)));
            // Space returns: the backlog goes out in order, the next record after it.
            left.set(u64::MAX);
            log.retry().unwrap();
            assert!(!log.is_failing());
            log.append(&record(4)).unwrap();
            assert_eq!(sequences(log.path()), (vec![1, 2, 3, 4], usize::from(truncate_fails)));
            assert_eq!((log.pending(), log.dropped(), log.records_written()), (0, 0, 4));
        }
    }

    #[test]
    fn a_full_backlog_drops_the_oldest_records_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open_with(dir.path(), options(DEFAULT_MAX_BYTES, 2, 4)).unwrap();
        let left = small_disk(&mut log, 0, false);
        for seq in 1..=10 {
            assert!(log.append(&record(seq)).is_err());
        }
        assert_eq!((log.pending(), log.dropped()), (4, 6));
        left.set(u64::MAX);
        log.retry().unwrap();
        assert_eq!(sequences(log.path()), (vec![7, 8, 9, 10], 0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_log_on_dev_full_fails_and_recovers_once_the_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let mut log = AuditLog::open(dir.path(), true).unwrap();
        let err = format!("{:#}", log.append(&record(1)).unwrap_err());
        assert!(err.contains("No space left on device"), "{err}");
        assert!(log.append(&record(2)).is_err() && log.retry().is_err());
        assert!(log.is_failing());
        // The card is swapped: audit.jsonl is a new file, opened on the next retry.
        std::fs::remove_file(&path).unwrap();
        log.retry().unwrap();
        assert!(!log.is_failing());
        assert_eq!(sequences(&path), (vec![1, 2], 0));
    }
}
