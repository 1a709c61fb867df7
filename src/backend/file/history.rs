//! Reading the leader history: a line scanner that never holds more than [`MAX_LINE`] bytes of
//! a line, and the term floor as an incremental index (only lines appended since the last scan
//! are read).

use super::MAX_LINE;
use crate::election::Term;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

/// How far the history has been scanned for the term floor.
#[derive(Clone, Copy, Default)]
pub(super) struct FloorCache {
    /// (device, inode) of the scanned file.
    pub(super) file: Option<(u64, u64)>,
    /// Offset after the last complete line counted.
    pub(super) offset: u64,
    /// Lines counted.
    pub(super) lines: u64,
    /// The highest term seen.
    pub(super) max: Term,
}

/// Scans the history from where `from` stopped: the new cache and the floor (which also
/// counts a whole last line that lacks its newline). Any unreadable line is an error.
pub(super) fn scan_floor(f: &mut File, from: &FloorCache) -> Result<(FloorCache, Term), String> {
    f.seek(SeekFrom::Start(from.offset))
        .map_err(|e| e.to_string())?;
    let mut max = from.max;
    let mut lines = from.lines;
    let mut torn = Term(0);
    let end = scan_lines(&*f, from.offset, &mut |off, line| {
        match line {
            Line::Complete(b) => {
                lines += 1;
                if !b.iter().all(u8::is_ascii_whitespace) {
                    let t =
                        term_of(b).map_err(|why| format!("line {lines} (byte {off}): {why}"))?;
                    max = max.max(t);
                }
            }
            Line::TooLong => {
                return Err(format!(
                    "line {} (byte {off}) is over {MAX_LINE} bytes",
                    lines + 1
                ));
            }
            Line::Torn(b) => {
                // A last line without its newline: counted if it is whole.
                torn = term_of(b).map_err(|why| {
                    format!("it ends with an incomplete line (byte {off}): {why}")
                })?;
            }
        }
        Ok(())
    })?;
    let next = FloorCache {
        file: from.file,
        offset: end,
        lines,
        max,
    };
    Ok((next, max.max(torn)))
}

/// The term of one history line, or why it cannot be read.
pub(super) fn term_of(line: &[u8]) -> Result<Term, String> {
    #[derive(serde::Deserialize)]
    struct TermOnly {
        term: Term,
    }
    let text = std::str::from_utf8(line).map_err(|e| format!("not valid UTF-8 ({e})"))?;
    serde_json::from_str::<TermOnly>(text)
        .map(|t| t.term)
        .map_err(|e| format!("not a grant ({e})"))
}

/// One line of a scan.
pub(super) enum Line<'a> {
    /// A line ended by `\n` (without it).
    Complete(&'a [u8]),
    /// A line longer than [`MAX_LINE`] (not kept).
    TooLong,
    /// The last bytes, without a `\n`.
    Torn(&'a [u8]),
}

/// Reads `r` (positioned at byte `start`) line by line, never holding more than
/// [`MAX_LINE`] bytes of one line; `f` gets each line's offset. Returns the offset just after
/// the last complete line.
pub(super) fn scan_lines(
    r: impl Read,
    start: u64,
    f: &mut dyn FnMut(u64, Line<'_>) -> Result<(), String>,
) -> Result<u64, String> {
    let mut br = BufReader::with_capacity(64 * 1024, r);
    let mut line: Vec<u8> = Vec::new();
    let mut too_long = false;
    let (mut off, mut pos) = (start, start);
    loop {
        let buf = br.fill_buf().map_err(|e| e.to_string())?;
        if buf.is_empty() {
            break;
        }
        let (chunk, ends) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let n = chunk.len() + usize::from(ends);
        br.consume(n);
        pos += n as u64;
        if ends {
            f(
                off,
                if too_long {
                    Line::TooLong
                } else {
                    Line::Complete(&line)
                },
            )?;
            line.clear();
            too_long = false;
            off = pos;
        }
    }
    if pos > off {
        f(
            off,
            if too_long {
                Line::TooLong
            } else {
                Line::Torn(&line)
            },
        )?;
    }
    Ok(off)
}
