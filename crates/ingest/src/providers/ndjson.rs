//! `ndjson`: newline-delimited JSON in a file or behind an `http(s)://` URL, read `page_size`
//! lines at a time from the byte offset in the cursor (`{"offset": bytes, "line": n}`), so
//! memory holds one page. A URL is read with `Range: bytes=<offset>-` and the response dropped
//! once the page is full.
//!
//! Bounds, whatever the input (`/dev/zero`, a file without newlines): a line longer than
//! `max_line_bytes` is a failed item (its first 4 KiB reported) and only that much of it is
//! ever held; a page ends once it has read `max_page_bytes`, and a single line still going on
//! at that point fails the page. A file is read only under the allowed directories, checked on
//! its canonical path just before it is opened (and, on Linux, on the opened file itself).

use super::http::{reqwest_error, send, Home, HttpOptions};
use super::{FetchedPage, Provider};
use crate::error::FetchError;
use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tributary_core::source::kinds::NdjsonConfig;
use tributary_core::source::secrets::redact_url;
use tributary_core::source::MAX_ITEM_DATA_BYTES;

/// Bytes read from a file at a time.
const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct Ndjson {
    config: NdjsonConfig,
    http: HttpOptions,
}

impl Ndjson {
    pub(crate) fn new(config: NdjsonConfig, http: HttpOptions) -> Self {
        Self { config, http }
    }
}

/// A page being filled line by line from chunks of bytes, and where the next one starts.
struct Lines {
    page: FetchedPage,
    page_size: u64,
    max_line: usize,
    max_page_bytes: u64,
    read: u64,
    /// Byte offset of the end of the last whole line taken.
    offset: u64,
    line_no: u64,
    /// Bytes of the line under way (at most `max_line` of them), and its whole length so far.
    line: Vec<u8>,
    line_len: u64,
    /// Bytes taken by this page, the line under way included.
    page_bytes: u64,
}

impl Lines {
    fn at(cursor: Option<&Value>, page_size: u64, http: &HttpOptions) -> Self {
        let number = |key: &str| cursor.and_then(|c| c.get(key)).and_then(Value::as_u64);
        Self {
            page: FetchedPage::default(),
            page_size,
            max_line: http.max_line_bytes,
            max_page_bytes: http.max_page_bytes as u64,
            read: 0,
            offset: number("offset").unwrap_or(0),
            line_no: number("line").unwrap_or(0),
            line: Vec::new(),
            line_len: 0,
            page_bytes: 0,
        }
    }

    /// The page has its lines, or its bytes.
    fn full(&self) -> bool {
        self.read >= self.page_size
            || (self.line_len == 0 && self.page_bytes >= self.max_page_bytes)
    }

    /// Takes bytes until the page is full; returns how many were taken (the rest belongs to
    /// the next page). A line still going on past the page's byte budget is an error.
    fn feed(&mut self, mut data: &[u8]) -> Result<usize, FetchError> {
        let mut taken = 0;
        while !data.is_empty() && !self.full() {
            let (part, ends) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..=i], true),
                None => (data, false),
            };
            let room = self.max_line.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            self.line_len += part.len() as u64;
            self.page_bytes += part.len() as u64;
            taken += part.len();
            data = &data[part.len()..];
            if ends {
                self.end_line();
            } else if self.page_bytes > self.max_page_bytes {
                return Err(FetchError::new(format!(
                    "line {} has no end within {} bytes (ingest.max_page_bytes); is this NDJSON?",
                    self.line_no + 1,
                    self.max_page_bytes
                )));
            }
        }
        Ok(taken)
    }

    /// Takes the line under way (its bytes, newline included): blank lines are skipped, lines
    /// that are too long or not JSON are reported unreadable.
    fn end_line(&mut self) {
        let raw = std::mem::take(&mut self.line);
        let len = std::mem::take(&mut self.line_len);
        self.offset += len;
        self.line_no += 1;
        if len > self.max_line as u64 {
            self.read += 1;
            let head = &raw[..raw.len().min(MAX_ITEM_DATA_BYTES)];
            self.page.unreadable.push((
                String::from_utf8_lossy(head).into_owned(),
                format!(
                    "line {} is {len} bytes long, longer than {} bytes (ingest.max_line_bytes)",
                    self.line_no, self.max_line
                ),
            ));
            return;
        }
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.read += 1;
        match serde_json::from_str::<Value>(text) {
            Ok(item) => self.page.items.push(item),
            Err(e) => self.page.unreadable.push((
                text.to_owned(),
                format!("line {} is not JSON: {e}", self.line_no),
            )),
        }
    }

    /// The page at the end of the input: a last line without a newline is taken too.
    fn finish_at_end(mut self) -> FetchedPage {
        if self.line_len > 0 {
            self.end_line();
        }
        self.finish(true)
    }

    fn finish(mut self, done: bool) -> FetchedPage {
        self.page.done = done;
        self.page.next_cursor = json!({"offset": self.offset, "line": self.line_no});
        self.page
    }
}

impl Ndjson {
    async fn read_file(&self, path: &str, mut lines: Lines) -> Result<FetchedPage, FetchError> {
        let real = self
            .http
            .allowed_dirs
            .resolve(path)
            .map_err(FetchError::new)?;
        let file = tokio::fs::File::open(&real)
            .await
            .map_err(|e| FetchError::new(format!("opening {path}: {e}")))?;
        let metadata = file
            .metadata()
            .await
            .map_err(|e| FetchError::new(format!("opening {path}: {e}")))?;
        if !metadata.is_file() {
            // A FIFO or a device could block or never end.
            return Err(FetchError::new(format!("{path} is not a regular file")));
        }
        self.check_opened(path, &file)?;
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(lines.offset))
            .await
            .map_err(|e| FetchError::new(format!("seeking {path}: {e}")))?;
        let mut buf = vec![0; READ_CHUNK];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| FetchError::new(format!("reading {path}: {e}")))?;
            if n == 0 {
                return Ok(lines.finish_at_end());
            }
            // What is left of the chunk once the page is full belongs to the next page.
            lines.feed(&buf[..n])?;
            if lines.full() {
                return Ok(lines.finish(false));
            }
        }
    }

    /// The file actually opened is under an allowed directory: a path swapped for a symlink
    /// between the check and the open is caught here (Linux; elsewhere the check before the
    /// open stands alone).
    #[cfg(target_os = "linux")]
    fn check_opened(&self, path: &str, file: &tokio::fs::File) -> Result<(), FetchError> {
        use std::os::fd::AsRawFd;
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
        match opened {
            Ok(real) if self.http.allowed_dirs.contains_canonical(&real) => Ok(()),
            Ok(real) => Err(FetchError::new(format!(
                "{path} was opened as {}, which is not under an allowed directory",
                real.display()
            ))),
            // No /proc: the canonical path checked before the open stands.
            Err(_) => Ok(()),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn check_opened(&self, _path: &str, _file: &tokio::fs::File) -> Result<(), FetchError> {
        Ok(())
    }

    async fn read_url(&self, url: &str, mut lines: Lines) -> Result<FetchedPage, FetchError> {
        let shown = redact_url(url);
        let home = Home {
            url,
            headers: &self.config.headers,
        };
        let mut response = send(&self.http, &home, url, Some(lines.offset)).await?;
        let status = response.status();
        if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            // The offset is the object's end: the last page ended exactly there.
            return Ok(lines.finish(true));
        }
        if !status.is_success() {
            return Err(FetchError::new(format!("GET {shown}: HTTP {status}")));
        }
        // A server that ignores the range sends the whole object: skip what was read before.
        let mut skip = if status == reqwest::StatusCode::PARTIAL_CONTENT {
            0
        } else {
            lines.offset
        };
        while !lines.full() {
            let chunk = response.chunk().await.map_err(|e| {
                FetchError::new(format!(
                    "GET {shown}: reading the body: {}",
                    reqwest_error(e)
                ))
            })?;
            let Some(mut chunk) = chunk else {
                return Ok(lines.finish_at_end());
            };
            if skip > 0 {
                let n = chunk.len().min(usize::try_from(skip).unwrap_or(usize::MAX));
                skip -= n as u64;
                chunk = chunk.slice(n..);
            }
            lines
                .feed(&chunk)
                .map_err(|e| FetchError::new(format!("GET {shown}: {e}")))?;
        }
        Ok(lines.finish(false))
    }
}

#[async_trait]
impl Provider for Ndjson {
    async fn next(&self, cursor: Option<&Value>) -> Result<FetchedPage, FetchError> {
        let lines = Lines::at(cursor, self.config.page_size, &self.http);
        match (&self.config.url, &self.config.path) {
            (Some(url), _) => self.read_url(url, lines).await,
            (None, Some(path)) => self.read_file(path, lines).await,
            (None, None) => Err(FetchError::new("an ndjson source needs a path or a url")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineOptions;

    fn lines(max_line: usize, max_page_bytes: usize, page_size: u64) -> Lines {
        let http = HttpOptions::new(&EngineOptions {
            max_line_bytes: max_line,
            max_page_bytes,
            ..EngineOptions::default()
        })
        .expect("options");
        Lines::at(None, page_size, &http)
    }

    #[test]
    fn a_long_line_is_a_failed_item_and_only_its_cap_is_held() {
        let mut l = lines(16, 1024, 100);
        let long = format!("{{\"a\": \"{}\"}}\n", "x".repeat(100));
        for piece in [
            b"{\"id\": 1}\n".as_slice(),
            long.as_bytes(),
            b"{\"id\": 2}\n",
        ] {
            // Fed in small chunks, as a network would.
            for chunk in piece.chunks(7) {
                assert_eq!(l.feed(chunk).expect("feed"), chunk.len());
                assert!(l.line.len() <= 16);
            }
        }
        let page = l.finish_at_end();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.unreadable.len(), 1);
        assert!(
            page.unreadable[0].1.contains("line 2 is 110 bytes long"),
            "{:?}",
            page.unreadable
        );
        assert_eq!(page.next_cursor["line"], 3);
    }

    #[test]
    fn endless_input_without_newlines_fails_the_page_within_its_byte_budget() {
        let mut l = lines(16, 1000, 100);
        let zeros = [0u8; 300];
        let mut fed = 0;
        let error = loop {
            match l.feed(&zeros) {
                Ok(n) => fed += n,
                Err(e) => break e,
            }
            assert!(fed < 10_000, "the page never ended");
        };
        assert!(error.0.contains("no end within 1000 bytes"), "{}", error.0);
        assert!(l.line.len() <= 16);
    }

    #[test]
    fn a_page_ends_at_its_byte_budget_on_a_line_boundary() {
        let mut l = lines(1024, 25, 100);
        let data = b"{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3}\n{\"id\": 4}\n";
        let taken = l.feed(data).expect("feed");
        assert!(l.full());
        assert_eq!(taken, 30);
        let page = l.finish(false);
        assert_eq!(page.items.len(), 3);
        assert_eq!(page.next_cursor["offset"], 30);
    }
}
