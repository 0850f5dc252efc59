//! `ndjson`: a file of newline-delimited JSON, read `page_size` lines at a time from the byte
//! offset in the cursor (`{"offset": bytes, "line": n}`), so memory holds one page.

use super::{FetchedPage, Provider};
use crate::error::FetchError;
use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tributary_core::source::kinds::NdjsonConfig;

pub(crate) struct Ndjson {
    config: NdjsonConfig,
}

impl Ndjson {
    pub(crate) fn new(config: NdjsonConfig) -> Self {
        Self { config }
    }
}

#[async_trait]
impl Provider for Ndjson {
    async fn next(&self, cursor: Option<&Value>) -> Result<FetchedPage, FetchError> {
        let number = |key: &str| cursor.and_then(|c| c.get(key)).and_then(Value::as_u64);
        let (mut offset, mut line_no) =
            (number("offset").unwrap_or(0), number("line").unwrap_or(0));
        let path = &self.config.path;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| FetchError::new(format!("opening {path}: {e}")))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| FetchError::new(format!("seeking {path}: {e}")))?;
        let mut reader = BufReader::new(file);
        let mut page = FetchedPage::default();
        let mut line = String::new();
        let mut read = 0;
        while read < self.config.page_size {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .await
                .map_err(|e| FetchError::new(format!("reading {path}: {e}")))?;
            if n == 0 {
                page.done = true;
                break;
            }
            offset += n as u64;
            line_no += 1;
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            read += 1;
            match serde_json::from_str::<Value>(text) {
                Ok(item) => page.items.push(item),
                Err(e) => page
                    .unreadable
                    .push((text.to_owned(), format!("line {line_no} is not JSON: {e}"))),
            }
        }
        page.next_cursor = json!({"offset": offset, "line": line_no});
        Ok(page)
    }
}
