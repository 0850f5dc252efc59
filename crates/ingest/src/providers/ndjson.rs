//! `ndjson`: newline-delimited JSON in a file or behind an `http(s)://` URL, read `page_size`
//! lines at a time from the byte offset in the cursor (`{"offset": bytes, "line": n}`), so
//! memory holds one page. A URL is read with `Range: bytes=<offset>-` and the response dropped
//! once the page is full.

use super::http::{send, with_causes, HttpOptions};
use super::{FetchedPage, Provider};
use crate::error::FetchError;
use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tributary_core::source::kinds::NdjsonConfig;

pub(crate) struct Ndjson {
    config: NdjsonConfig,
    http: HttpOptions,
}

impl Ndjson {
    pub(crate) fn new(config: NdjsonConfig, http: HttpOptions) -> Self {
        Self { config, http }
    }
}

/// A page being filled line by line, and where the next one starts.
struct Lines {
    page: FetchedPage,
    page_size: u64,
    read: u64,
    offset: u64,
    line_no: u64,
}

impl Lines {
    fn at(cursor: Option<&Value>, page_size: u64) -> Self {
        let number = |key: &str| cursor.and_then(|c| c.get(key)).and_then(Value::as_u64);
        Self {
            page: FetchedPage::default(),
            page_size,
            read: 0,
            offset: number("offset").unwrap_or(0),
            line_no: number("line").unwrap_or(0),
        }
    }

    fn full(&self) -> bool {
        self.read >= self.page_size
    }

    /// Takes one line (its bytes, newline included); blank lines are skipped, lines that are
    /// not JSON are reported unreadable.
    fn push(&mut self, raw: &[u8]) {
        self.offset += raw.len() as u64;
        self.line_no += 1;
        let text = String::from_utf8_lossy(raw);
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

    fn finish(mut self, done: bool) -> FetchedPage {
        self.page.done = done;
        self.page.next_cursor = json!({"offset": self.offset, "line": self.line_no});
        self.page
    }
}

impl Ndjson {
    async fn read_file(&self, path: &str, mut lines: Lines) -> Result<FetchedPage, FetchError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| FetchError::new(format!("opening {path}: {e}")))?;
        file.seek(std::io::SeekFrom::Start(lines.offset))
            .await
            .map_err(|e| FetchError::new(format!("seeking {path}: {e}")))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        while !lines.full() {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| FetchError::new(format!("reading {path}: {e}")))?;
            if n == 0 {
                return Ok(lines.finish(true));
            }
            lines.push(&line);
        }
        Ok(lines.finish(false))
    }

    async fn read_url(&self, url: &str, mut lines: Lines) -> Result<FetchedPage, FetchError> {
        let mut response = send(&self.http, url, &self.config.headers, Some(lines.offset)).await?;
        let status = response.status();
        if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            // The offset is the object's end: the last page ended exactly there.
            return Ok(lines.finish(true));
        }
        if !status.is_success() {
            return Err(FetchError::new(format!("GET {url}: HTTP {status}")));
        }
        // A server that ignores the range sends the whole object: skip what was read before.
        let mut skip = if status == reqwest::StatusCode::PARTIAL_CONTENT {
            0
        } else {
            lines.offset
        };
        let mut pending: Vec<u8> = Vec::new();
        while !lines.full() {
            let chunk = response.chunk().await.map_err(|e| {
                FetchError::new(format!("GET {url}: reading the body: {}", with_causes(&e)))
            })?;
            let Some(mut chunk) = chunk else {
                if !pending.is_empty() {
                    lines.push(&pending);
                }
                return Ok(lines.finish(true));
            };
            if skip > 0 {
                let n = chunk.len().min(usize::try_from(skip).unwrap_or(usize::MAX));
                skip -= n as u64;
                chunk = chunk.slice(n..);
            }
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                lines.push(&pending[start..=start + end]);
                start += end + 1;
                if lines.full() {
                    break;
                }
            }
            pending.drain(..start);
            if pending.len() > self.http.max_page_bytes {
                return Err(FetchError::new(format!(
                    "GET {url}: line {} is longer than {} bytes",
                    lines.line_no + 1,
                    self.http.max_page_bytes
                )));
            }
        }
        Ok(lines.finish(false))
    }
}

#[async_trait]
impl Provider for Ndjson {
    async fn next(&self, cursor: Option<&Value>) -> Result<FetchedPage, FetchError> {
        let lines = Lines::at(cursor, self.config.page_size);
        match (&self.config.url, &self.config.path) {
            (Some(url), _) => self.read_url(url, lines).await,
            (None, Some(path)) => self.read_file(path, lines).await,
            (None, None) => Err(FetchError::new("an ndjson source needs a path or a url")),
        }
    }
}
