//! The last lines of a JSON-lines log, read from the end (the logs rotate by size, so the
//! current file is bounded; only its last 1 MiB is read).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::de::DeserializeOwned;

const WINDOW: u64 = 1 << 20;

/// Up to `limit` entries, oldest first. A missing file is an empty log; a line that is not
/// JSON (a torn write at the end) is skipped.
pub(crate) fn jsonl<T: DeserializeOwned>(path: &Path, limit: usize) -> std::io::Result<Vec<T>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(WINDOW);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut bytes)?;
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if start > 0 && !lines.is_empty() {
        // The window began mid-line.
        lines.remove(0);
    }
    let mut entries: Vec<T> = lines
        .iter()
        .rev()
        .filter(|l| !l.is_empty())
        // A line this build cannot read as `T` (torn by a crash, or an event kind a newer hub
        // on this home writes) is skipped: the tail shows what it understands, the file keeps
        // everything.
        .filter_map(|l| serde_json::from_slice(l).ok())
        .take(limit)
        .collect();
    entries.reverse();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_entries_oldest_first_skipping_torn_lines() {
        let dir = std::env::temp_dir().join(format!("sheratan-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.jsonl");
        std::fs::write(&path, "{\"n\":1}\n{\"n\":2}\nnot json\n{\"n\":3}\n{\"n\":4").unwrap();
        let got: Vec<serde_json::Value> = jsonl(&path, 2).unwrap();
        assert_eq!(
            got,
            vec![serde_json::json!({"n":2}), serde_json::json!({"n":3})]
        );
        assert!(
            jsonl::<serde_json::Value>(&dir.join("missing"), 5)
                .unwrap()
                .is_empty()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
