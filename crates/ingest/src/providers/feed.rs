//! `feed`: RSS 2.0, Atom and Media RSS, parsed by `feed-rs`. A feed is fetched whole as one page
//! (feeds are small); each entry becomes an item with its Media RSS fields:
//! `{"id", "title", "link", "summary", "content", "published", "updated", "authors",
//!   "categories", "media": [{"title", "description", "thumbnails", "content": [{"url", "type",
//!   "width", "height", "duration", "size"}]}]}`.

use super::http::{get, Home, HttpOptions};
use super::{FetchedPage, Provider};
use crate::error::FetchError;
use async_trait::async_trait;
use feed_rs::model::{Entry, MediaObject};
use serde_json::{json, Value};
use tributary_core::source::kinds::FeedConfig;
use tributary_core::source::secrets::redact_url;

pub(crate) struct Feed {
    config: FeedConfig,
    http: HttpOptions,
}

impl Feed {
    pub(crate) fn new(config: FeedConfig, http: HttpOptions) -> Result<Self, FetchError> {
        Ok(Self { config, http })
    }
}

fn media(m: &MediaObject) -> Value {
    json!({
        "title": m.title.as_ref().map(|t| t.content.clone()),
        "description": m.description.as_ref().map(|t| t.content.clone()),
        "duration": m.duration.map(|d| d.as_secs()),
        "thumbnails": m.thumbnails.iter().map(|t| t.image.uri.clone()).collect::<Vec<_>>(),
        "content": m.content.iter().map(|c| json!({
            "url": c.url.as_ref().map(|u| u.to_string()),
            "type": c.content_type.as_ref().map(|t| t.to_string()),
            "width": c.width,
            "height": c.height,
            "duration": c.duration.map(|d| d.as_secs()),
            "size": c.size,
        })).collect::<Vec<_>>(),
    })
}

/// An entry as an item; absent fields are left out so mappings can tell.
pub(crate) fn entry_item(e: &Entry) -> Value {
    let mut item = json!({
        "id": e.id,
        "title": e.title.as_ref().map(|t| t.content.clone()),
        "link": e.links.first().map(|l| l.href.clone()),
        "summary": e.summary.as_ref().map(|t| t.content.clone()),
        "content": e.content.as_ref().and_then(|c| c.body.clone()),
        "published": e.published.map(|t| t.to_rfc3339()),
        "updated": e.updated.map(|t| t.to_rfc3339()),
        "authors": e.authors.iter().filter_map(|a| a.name.clone()).collect::<Vec<_>>(),
        "categories": e.categories.iter().map(|c| c.term.clone()).collect::<Vec<_>>(),
        "media": e.media.iter().map(media).collect::<Vec<_>>(),
    });
    if let Value::Object(map) = &mut item {
        map.retain(|_, v| !v.is_null());
    }
    item
}

#[async_trait]
impl Provider for Feed {
    async fn next(&self, _cursor: Option<&Value>) -> Result<FetchedPage, FetchError> {
        let home = Home {
            url: &self.config.url,
            headers: &self.config.headers,
        };
        let fetched = get(&self.http, &home, &self.config.url).await?;
        let feed = feed_rs::parser::parse(fetched.body.as_slice()).map_err(|e| {
            FetchError::new(format!(
                "{}: not an RSS or Atom feed: {e}",
                redact_url(&self.config.url)
            ))
        })?;
        Ok(FetchedPage {
            items: feed.entries.iter().map(entry_item).collect(),
            unreadable: Vec::new(),
            next_cursor: Value::Null,
            done: true,
        })
    }
}
