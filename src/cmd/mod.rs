//! Offline commands: `test-filter` (the conformance interface) and `regex`
//! (the counterpart of `fail2ban-regex`). They read files and print; the
//! engine they drive is the same one the daemon uses.

pub mod regex;
pub mod test_filter;

use std::io::Read;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("cannot read log file {path}: {cause}")]
    ReadLog { path: String, cause: std::io::Error },
    #[error(transparent)]
    Filter(Box<crate::filter::FilterError>),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Write(#[from] std::io::Error),
}

impl From<crate::filter::FilterError> for CmdError {
    fn from(e: crate::filter::FilterError) -> Self {
        CmdError::Filter(Box::new(e))
    }
}

/// Reads a whole log file (or stdin for `-`).
pub fn read_log(path: &str) -> Result<Vec<u8>, CmdError> {
    let err = |cause| CmdError::ReadLog {
        path: path.to_string(),
        cause,
    };
    if path == "-" {
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v).map_err(err)?;
        return Ok(v);
    }
    std::fs::read(Path::new(path)).map_err(err)
}

/// Opens a log for streaming (`-` is standard input).
pub fn open_log(path: &str) -> Result<Box<dyn Read + Send>, CmdError> {
    if path == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    std::fs::File::open(path)
        .map(|f| Box::new(f) as Box<dyn Read + Send>)
        .map_err(|cause| CmdError::ReadLog {
            path: path.to_string(),
            cause,
        })
}

/// Streams a log through [`for_each_line`] in fixed-size chunks, so memory
/// stays bounded by the longest line, not the file. A last line without its
/// `\n` is given to `f` if `partial_last` is set (a tailing daemon would wait
/// for the rest of it); returns whether such a line was left out.
pub fn for_each_line_in(
    mut input: impl Read,
    path: &str,
    partial_last: bool,
    mut f: impl FnMut(&str),
) -> Result<bool, CmdError> {
    const CHUNK: usize = 256 * 1024;
    // one buffer, read into directly: the complete lines are split where
    // they are and the partial line after them moves to the front; a line
    // longer than the buffer doubles it
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(cause) => {
                return Err(CmdError::ReadLog {
                    path: path.to_string(),
                    cause,
                })
            }
        };
        // a newline can only be in what was just read
        let old = filled;
        filled += n;
        if let Some(nl) = memchr::memrchr(b'\n', &buf[old..filled]) {
            let end = old + nl + 1;
            for_each_line(&buf[..end], &mut f);
            buf.copy_within(end..filled, 0);
            filled -= end;
        }
    }
    let rest = &buf[..filled];
    if !rest.is_empty() && partial_last {
        for_each_line(rest, &mut f);
        return Ok(false);
    }
    Ok(!rest.is_empty())
}

/// Splits log bytes into lines as Fail2Ban reads them: at `\n` only, every
/// trailing `\r`/`\n` removed, invalid UTF-8 replaced by U+FFFD; a final
/// line without `\n` is a line, the empty rest after a final `\n` is not.
pub fn for_each_line(data: &[u8], mut f: impl FnMut(&str)) {
    let mut start = 0;
    let mut owned = String::new();
    for end in memchr::memchr_iter(b'\n', data).chain(std::iter::once(data.len())) {
        if end == data.len() && start >= data.len() {
            break;
        }
        let mut raw = &data[start..end];
        while let [rest @ .., b'\r' | b'\n'] = raw {
            raw = rest;
        }
        if raw.is_ascii() {
            // SAFETY: ASCII bytes are valid UTF-8 (the `if` checked; a
            // word-at-a-time check, cheaper than full validation, and log
            // lines are nearly always ASCII)
            f(unsafe { std::str::from_utf8_unchecked(raw) });
        } else {
            match std::str::from_utf8(raw) {
                Ok(s) => f(s),
                Err(_) => {
                    owned.clear();
                    owned.push_str(&String::from_utf8_lossy(raw));
                    f(&owned);
                }
            }
        }
        start = end + 1;
    }
}

/// The current time in epoch seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8]) -> Vec<String> {
        let mut v = Vec::new();
        for_each_line(data, |l| v.push(l.to_string()));
        v
    }

    #[test]
    fn line_splitting() {
        assert_eq!(lines(b"a\nb\r\n\nc"), ["a", "b", "", "c"]);
        assert_eq!(lines(b"a\n"), ["a"]);
        assert!(lines(b"").is_empty());
        assert_eq!(lines(b"x\ry\n"), ["x\ry"]);
        assert_eq!(lines(b"bad \xff byte\n"), ["bad \u{fffd} byte"]);
        assert_eq!(lines(b"\n"), [""]);
    }

    /// A reader that hands out its data a few bytes at a time, sometimes
    /// interrupted, as a pipe can.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        calls: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls % 7 == 0 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            // 1 to 300,000 bytes: pieces of lines and reads past the buffer
            let want = [1, 2, 3, 300_000, 5][self.calls % 5];
            let n = want.min(out.len()).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Streaming gives the lines that splitting the whole text gives, with
    /// reads that end anywhere, a line longer than the buffer (which must
    /// grow) and a last line without its newline.
    #[test]
    fn streamed_lines_are_the_lines_of_the_whole_text() {
        let long = "x".repeat(600_000);
        let text = format!("a\nbb\r\n\n{long}\nc\u{e9}\nlast");
        for partial_last in [true, false] {
            let mut got = Vec::new();
            let input = Trickle {
                data: text.clone().into_bytes(),
                at: 0,
                calls: 0,
            };
            let left_out =
                for_each_line_in(input, "t", partial_last, |l| got.push(l.to_string())).unwrap();
            let mut want = lines(text.as_bytes());
            if !partial_last {
                want.pop();
            }
            assert_eq!(left_out, !partial_last);
            assert_eq!(got.len(), want.len());
            assert!(got == want, "lines differ (partial_last {partial_last})");
        }
    }
}
