//! Range-based set reconciliation (SPEC.md §2.5, ADR 0018): the client and the server compare
//! fingerprints of ranges of their `(id, checksum)` sets, sorted by id in byte order, and split
//! only the ranges that differ, until each difference is pinned to a short list of ids.
//!
//! The exchange is driven by the client ([`Reconciler`]); the server ([`Judge`]) keeps nothing
//! between calls. Each call carries ranges, each with either the fingerprint of the client's items
//! in it or (below [`ITEM_LIST_THRESHOLD`] items) the items themselves, as ids with a short hash.
//! The server answers a fingerprint with "equal" or "different, and I hold `count` items there",
//! and an item list with which of the ids the client must send and how many items the server
//! holds that the client did not list (a replace commit's sweep removes those).
//!
//! An item's hash is the BLAKE3 of its id, a NUL and its checksum: a changed record is simply
//! another item. A range's fingerprint is the first 16 bytes of the BLAKE3 of the sum of its item
//! hashes modulo 2^256 and the item count (negentropy's construction), so it does not depend on
//! the order items are added in.

use crate::text::NUL_PROBLEM;
use crate::{Error, Result, Violation};
use std::cmp::Ordering;

/// Bytes of a range fingerprint.
pub const FINGERPRINT_BYTES: usize = 16;
/// Bytes of an item's hash in an item list: enough that two different versions of a record are
/// told apart except with probability 2^-64.
pub const LISTED_HASH_BYTES: usize = 8;
/// A range with at most this many client items is sent as an item list instead of split.
pub const ITEM_LIST_THRESHOLD: usize = 32;
/// How many sub-ranges a differing range is split into.
pub const SPLIT_FACTOR: usize = 16;
/// Longest range bound: bounds are prefixes of ids, which are at most 64 characters.
const MAX_BOUND_CHARS: usize = 64;

/// The hash of one `(id, checksum)` item.
pub fn item_hash(id: &str, checksum: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(id.as_bytes());
    hasher.update(&[0]);
    hasher.update(checksum.as_bytes());
    *hasher.finalize().as_bytes()
}

/// The short hash of an item as it travels in an item list.
pub fn listed_hash(hash: &[u8; 32]) -> [u8; LISTED_HASH_BYTES] {
    let mut short = [0; LISTED_HASH_BYTES];
    short.copy_from_slice(&hash[..LISTED_HASH_BYTES]);
    short
}

/// Sum and count of item hashes: the order-independent state a fingerprint is made from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accumulator {
    sum: [u64; 4],
    count: u64,
}

impl Accumulator {
    /// Adds one item's hash (as a little-endian 256-bit number, wrapping).
    pub fn add(&mut self, hash: &[u8; 32]) {
        let mut carry = false;
        for (limb, chunk) in self.sum.iter_mut().zip(hash.chunks_exact(8)) {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(chunk);
            let (partial, overflow_a) = limb.overflowing_add(u64::from_le_bytes(bytes));
            let (total, overflow_b) = partial.overflowing_add(u64::from(carry));
            *limb = total;
            carry = overflow_a || overflow_b;
        }
        self.count += 1;
    }

    /// Items added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The fingerprint of the items added.
    pub fn fingerprint(&self) -> [u8; FINGERPRINT_BYTES] {
        let mut hasher = blake3::Hasher::new();
        for limb in self.sum {
            hasher.update(&limb.to_le_bytes());
        }
        hasher.update(&self.count.to_le_bytes());
        let mut fingerprint = [0; FINGERPRINT_BYTES];
        fingerprint.copy_from_slice(&hasher.finalize().as_bytes()[..FINGERPRINT_BYTES]);
        fingerprint
    }
}

/// Ids from `lower` (inclusive) up to `upper` (exclusive; `None` is no upper end), byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRange {
    pub lower: String,
    pub upper: Option<String>,
}

impl IdRange {
    /// Every id.
    pub fn all() -> Self {
        Self {
            lower: String::new(),
            upper: None,
        }
    }

    /// Where `id` lies relative to the range.
    fn locate(&self, id: &str) -> Ordering {
        if id < self.lower.as_str() {
            Ordering::Less
        } else if self.upper.as_deref().is_some_and(|upper| id >= upper) {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }
}

/// An item as listed in a range: its id and the first bytes of its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedItem {
    pub id: String,
    pub hash: [u8; LISTED_HASH_BYTES],
}

/// What the client says of its items in a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeContent {
    Fingerprint([u8; FINGERPRINT_BYTES]),
    /// Every client item of the range, by increasing id.
    Items(Vec<ListedItem>),
}

/// One range of a reconcile call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeQuery {
    pub range: IdRange,
    pub content: RangeContent,
}

/// The server's answer for one range, in the order of the call's ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// For a fingerprint: whether the server's items give the same one, and how many it holds.
    Fingerprint { matched: bool, count: u64 },
    /// For an item list: the positions of the listed items to send in full (new or changed), and
    /// the server's items the client did not list (`absent` of them; ids of the first ones).
    Items {
        send: Vec<u32>,
        absent: u64,
        absent_ids: Vec<String>,
    },
}

/// How many ranges and listed items one call may carry.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub max_ranges: usize,
    pub max_items: usize,
}

impl Default for CallLimits {
    /// The server's defaults (`limits.max_reconcile_ranges`, `limits.max_batch_records`).
    fn default() -> Self {
        let limits = crate::limits::Limits::default();
        Self {
            max_ranges: limits.max_reconcile_ranges,
            max_items: limits.max_batch_records,
        }
    }
}

/// Checks a call's ranges before any work: ordered, non-overlapping, well-formed bounds and item
/// lists, within `limits`. Every problem is a violation naming its range.
pub fn check_call(queries: &[RangeQuery], limits: CallLimits) -> Result<()> {
    if queries.len() > limits.max_ranges {
        return Err(Error::ResourceExhausted {
            subject: "ranges".into(),
            description: format!(
                "{} ranges in one call; at most {} (limits.max_reconcile_ranges)",
                queries.len(),
                limits.max_ranges
            ),
        });
    }
    let listed: usize = queries
        .iter()
        .map(|q| match &q.content {
            RangeContent::Items(items) => items.len(),
            RangeContent::Fingerprint(_) => 0,
        })
        .sum();
    if listed > limits.max_items {
        return Err(Error::ResourceExhausted {
            subject: "ranges.items".into(),
            description: format!(
                "{listed} listed items in one call; at most {} (limits.max_batch_records)",
                limits.max_items
            ),
        });
    }
    let mut violations = Vec::new();
    let mut previous_upper: Option<Option<&str>> = None;
    for (index, query) in queries.iter().enumerate() {
        let field = format!("ranges[{index}]");
        check_bound(
            &format!("{field}.lower_bound"),
            &query.range.lower,
            &mut violations,
        );
        if let Some(upper) = &query.range.upper {
            check_bound(&format!("{field}.upper_bound"), upper, &mut violations);
            if upper.as_str() <= query.range.lower.as_str() {
                violations.push(Violation::new(
                    format!("{field}.upper_bound"),
                    "upper_bound must be greater than lower_bound (or empty: no upper end)",
                ));
            }
        }
        match previous_upper {
            Some(None) => violations.push(Violation::new(
                format!("{field}.lower_bound"),
                "a range follows one without an upper end",
            )),
            Some(Some(upper)) if query.range.lower.as_str() < upper => {
                violations.push(Violation::new(
                    format!("{field}.lower_bound"),
                    "ranges must be in order and must not overlap",
                ))
            }
            _ => {}
        }
        previous_upper = Some(query.range.upper.as_deref());
        if let RangeContent::Items(items) = &query.content {
            check_items(&field, &query.range, items, &mut violations);
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

fn check_bound(field: &str, bound: &str, out: &mut Vec<Violation>) {
    if bound.contains('\0') {
        out.push(Violation::new(field, NUL_PROBLEM));
    } else if bound.chars().count() > MAX_BOUND_CHARS {
        out.push(Violation::new(
            field,
            format!("a bound is at most {MAX_BOUND_CHARS} characters (ids are)"),
        ));
    }
}

fn check_items(field: &str, range: &IdRange, items: &[ListedItem], out: &mut Vec<Violation>) {
    let mut previous: Option<&str> = None;
    for (i, item) in items.iter().enumerate() {
        let item_field = format!("{field}.items.ids[{i}]");
        let chars = item.id.chars().count();
        if item.id.contains('\0') {
            out.push(Violation::new(item_field, NUL_PROBLEM));
        } else if chars == 0 || chars > MAX_BOUND_CHARS {
            out.push(Violation::new(
                item_field,
                "id is required (1..64 characters)",
            ));
        } else if range.locate(&item.id) != Ordering::Equal {
            out.push(Violation::new(item_field, "id lies outside its range"));
        } else if previous.is_some_and(|p| item.id.as_str() <= p) {
            out.push(Violation::new(
                item_field,
                "ids must be listed in increasing order, each once",
            ));
        }
        previous = Some(&item.id);
    }
}

/// The server's side of one call: fed the server's items in id order, answers every range.
/// Holds one accumulator and one range's listed items at a time; what it collects for a replace
/// session (kept ranges, kept ids) is bounded by the call's ranges and items.
pub struct Judge<'q> {
    queries: &'q [RangeQuery],
    max_absent_ids: usize,
    current: usize,
    acc: Accumulator,
    /// For an item-list range: which listed items the server holds unchanged / changed.
    seen: Vec<Seen>,
    absent: u64,
    absent_ids: Vec<String>,
    listed_absent_ids: usize,
    verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    No,
    Equal,
    Changed,
}

/// What a call decided: the answers, and what a replace session keeps.
#[derive(Debug, Default)]
pub struct Verdict {
    pub answers: Vec<RangeAnswer>,
    /// Ranges whose fingerprints matched: every server item in them is kept.
    pub kept_ranges: Vec<IdRange>,
    /// Listed ids the server holds unchanged.
    pub kept_ids: Vec<String>,
}

/// Where the judge wants the server's items read from next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seek {
    pub from: String,
    pub inclusive: bool,
}

impl<'q> Judge<'q> {
    /// A judge of `queries` (checked by [`check_call`]), listing at most `max_absent_ids`.
    pub fn new(queries: &'q [RangeQuery], max_absent_ids: usize) -> Self {
        let mut judge = Self {
            queries,
            max_absent_ids,
            current: 0,
            acc: Accumulator::default(),
            seen: Vec::new(),
            absent: 0,
            absent_ids: Vec::new(),
            listed_absent_ids: 0,
            verdict: Verdict::default(),
        };
        judge.enter_range();
        judge
    }

    /// Where to read from first: the first range's lower bound (`None`: no ranges).
    pub fn first_seek(&self) -> Option<Seek> {
        self.queries.get(self.current).map(|q| Seek {
            from: q.range.lower.clone(),
            inclusive: true,
        })
    }

    /// Where to read on from after a full page ending at `last`: straight on, or on at the next
    /// range's lower bound when the gap before it can be skipped. `None` once every range is done.
    pub fn seek_after(&self, last: &str) -> Option<Seek> {
        let query = self.queries.get(self.current)?;
        Some(if query.range.lower.as_str() > last {
            Seek {
                from: query.range.lower.clone(),
                inclusive: true,
            }
        } else {
            Seek {
                from: last.to_owned(),
                inclusive: false,
            }
        })
    }

    /// Feeds the server's next item (ids strictly increasing).
    pub fn push(&mut self, id: &str, checksum: &str) {
        let queries = self.queries;
        while let Some(query) = queries.get(self.current) {
            match query.range.locate(id) {
                Ordering::Less => return,
                Ordering::Equal => break,
                Ordering::Greater => self.finish_range(),
            }
        }
        let Some(query) = queries.get(self.current) else {
            return;
        };
        let hash = item_hash(id, checksum);
        match &query.content {
            RangeContent::Fingerprint(_) => self.acc.add(&hash),
            RangeContent::Items(items) => {
                match items.binary_search_by(|item| item.id.as_str().cmp(id)) {
                    Ok(i) => {
                        self.seen[i] = if items[i].hash == listed_hash(&hash) {
                            Seen::Equal
                        } else {
                            Seen::Changed
                        }
                    }
                    Err(_) => {
                        self.absent += 1;
                        if self.listed_absent_ids < self.max_absent_ids {
                            self.listed_absent_ids += 1;
                            self.absent_ids.push(id.to_owned());
                        }
                    }
                }
            }
        }
    }

    /// Answers every range (the ones no item reached included).
    pub fn finish(mut self) -> Verdict {
        while self.current < self.queries.len() {
            self.finish_range();
        }
        self.verdict
    }

    fn enter_range(&mut self) {
        self.acc = Accumulator::default();
        self.absent = 0;
        self.seen.clear();
        if let Some(RangeContent::Items(items)) = self.queries.get(self.current).map(|q| &q.content)
        {
            self.seen.resize(items.len(), Seen::No);
        }
    }

    fn finish_range(&mut self) {
        let queries = self.queries;
        let Some(query) = queries.get(self.current) else {
            return;
        };
        let answer = match &query.content {
            RangeContent::Fingerprint(theirs) => {
                let matched = self.acc.fingerprint() == *theirs;
                if matched {
                    self.verdict.kept_ranges.push(query.range.clone());
                }
                RangeAnswer::Fingerprint {
                    matched,
                    count: self.acc.count(),
                }
            }
            RangeContent::Items(items) => {
                let mut send = Vec::new();
                for (i, (item, seen)) in items.iter().zip(&self.seen).enumerate() {
                    if *seen == Seen::Equal {
                        self.verdict.kept_ids.push(item.id.clone());
                    } else {
                        send.push(u32::try_from(i).unwrap_or(u32::MAX));
                    }
                }
                RangeAnswer::Items {
                    send,
                    absent: self.absent,
                    absent_ids: std::mem::take(&mut self.absent_ids),
                }
            }
        };
        self.verdict.answers.push(answer);
        self.current += 1;
        self.enter_range();
    }
}

/// A client's set: `(id, item hash)` sorted by id, each id once.
#[derive(Debug, Clone, Default)]
pub struct ClientSet {
    items: Vec<(String, [u8; 32])>,
}

impl ClientSet {
    /// The set of `(id, checksum)` pairs; when an id appears more than once the last one counts
    /// (as in a session, where the last operation on an id wins).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut items: Vec<(String, [u8; 32])> = pairs
            .into_iter()
            .map(|(id, checksum)| {
                let hash = item_hash(&id, &checksum);
                (id, hash)
            })
            .collect();
        // Stable, so equal ids keep their input order and the last one can be kept.
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(String, [u8; 32])> = Vec::with_capacity(items.len());
        for item in items {
            match unique.last_mut() {
                Some(last) if last.0 == item.0 => *last = item,
                _ => unique.push(item),
            }
        }
        Self { items: unique }
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The id of item `index`.
    pub fn id(&self, index: usize) -> &str {
        &self.items[index].0
    }

    /// Positions `start..end` of the items in `range`.
    fn span(&self, range: &IdRange) -> (usize, usize) {
        let start = self
            .items
            .partition_point(|(id, _)| id.as_str() < range.lower.as_str());
        let end = match &range.upper {
            Some(upper) => self
                .items
                .partition_point(|(id, _)| id.as_str() < upper.as_str()),
            None => self.items.len(),
        };
        (start, end.max(start))
    }

    /// The first query of a range: its items when they are few, else its fingerprint.
    fn query(&self, range: IdRange, start: usize, end: usize) -> RangeQuery {
        if end - start <= ITEM_LIST_THRESHOLD {
            self.items_query(range, start, end)
        } else {
            self.fingerprint_query(range, start, end)
        }
    }

    fn items_query(&self, range: IdRange, start: usize, end: usize) -> RangeQuery {
        let items = self.items[start..end]
            .iter()
            .map(|(id, hash)| ListedItem {
                id: id.clone(),
                hash: listed_hash(hash),
            })
            .collect();
        RangeQuery {
            range,
            content: RangeContent::Items(items),
        }
    }

    fn fingerprint_query(&self, range: IdRange, start: usize, end: usize) -> RangeQuery {
        let mut acc = Accumulator::default();
        for (_, hash) in &self.items[start..end] {
            acc.add(hash);
        }
        RangeQuery {
            range,
            content: RangeContent::Fingerprint(acc.fingerprint()),
        }
    }

    /// `range` (holding items `start..end`) split into [`SPLIT_FACTOR`] sub-ranges of about equal
    /// item counts that together cover it, gaps included, each asked by fingerprint: most
    /// siblings of a difference are equal, and a fingerprint costs less than listing their items.
    fn split(&self, range: &IdRange, start: usize, end: usize) -> Vec<RangeQuery> {
        let n = end - start;
        let parts = SPLIT_FACTOR.min(n).max(1);
        let mut queries = Vec::with_capacity(parts);
        let mut lower = range.lower.clone();
        let mut from = start;
        for part in 1..=parts {
            let to = start + n * part / parts;
            if part == parts {
                queries.push(self.fingerprint_query(
                    IdRange {
                        lower,
                        upper: range.upper.clone(),
                    },
                    from,
                    end,
                ));
                break;
            }
            let upper = separator(&self.items[to - 1].0, &self.items[to].0);
            queries.push(self.fingerprint_query(
                IdRange {
                    lower: std::mem::replace(&mut lower, upper.clone()),
                    upper: Some(upper),
                },
                from,
                to,
            ));
            from = to;
        }
        queries
    }
}

/// The shortest prefix of `next` that is greater than `previous` (`previous < next`): a bound
/// between two neighbouring ids that costs as few bytes as possible.
fn separator(previous: &str, next: &str) -> String {
    let mut common = previous
        .bytes()
        .zip(next.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    // Back to the start of the character the first difference is in.
    while !next.is_char_boundary(common) {
        common -= 1;
    }
    // The first differing character of `next` (whole, so the prefix stays valid UTF-8).
    let end = next[common..]
        .char_indices()
        .nth(1)
        .map_or(next.len(), |(i, _)| common + i);
    next[..end].to_owned()
}

/// The client's side of the exchange: what to ask next, and what it has learnt.
#[derive(Debug)]
pub struct Reconciler<'s> {
    set: &'s ClientSet,
    pending: Vec<RangeQuery>,
    send: Vec<usize>,
    absent: u64,
    absent_ids: Vec<String>,
    rounds: u32,
}

/// What an exchange ended with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Positions in the [`ClientSet`] of the items to send in full (new or changed), ascending.
    pub send: Vec<usize>,
    /// Server items the client does not hold (a replace commit's sweep removes them).
    pub absent: u64,
    /// Ids of absent items, as far as the server listed them.
    pub absent_ids: Vec<String>,
    /// Rounds of calls the exchange took.
    pub rounds: u32,
}

impl<'s> Reconciler<'s> {
    /// An exchange over `set`, starting with one range that covers every id.
    pub fn new(set: &'s ClientSet) -> Self {
        Self {
            set,
            pending: vec![set.query(IdRange::all(), 0, set.len())],
            send: Vec::new(),
            absent: 0,
            absent_ids: Vec::new(),
            rounds: 0,
        }
    }

    /// The next round's ranges (empty when the exchange is over), to be sent in calls of at most
    /// `limits` each ([`Reconciler::calls`]).
    pub fn next_round(&mut self) -> Vec<RangeQuery> {
        let round = std::mem::take(&mut self.pending);
        if !round.is_empty() {
            self.rounds += 1;
        }
        round
    }

    /// Cuts a round into calls within `limits`, keeping the ranges in order.
    pub fn calls(round: Vec<RangeQuery>, limits: CallLimits) -> Vec<Vec<RangeQuery>> {
        let mut calls = Vec::new();
        let mut call: Vec<RangeQuery> = Vec::new();
        let mut items = 0;
        for query in round {
            let listed = match &query.content {
                RangeContent::Items(list) => list.len(),
                RangeContent::Fingerprint(_) => 0,
            };
            if !call.is_empty()
                && (call.len() >= limits.max_ranges.max(1) || items + listed > limits.max_items)
            {
                calls.push(std::mem::take(&mut call));
                items = 0;
            }
            items += listed;
            call.push(query);
        }
        if !call.is_empty() {
            calls.push(call);
        }
        calls
    }

    /// Takes the server's answers to `queries`, one per range in order; a differing range is
    /// split for the next round. `InvalidArgument` when the answers do not fit the queries.
    pub fn absorb(&mut self, queries: &[RangeQuery], answers: &[RangeAnswer]) -> Result<()> {
        if answers.len() != queries.len() {
            return Err(Error::invalid(
                "ranges",
                format!("{} answers for {} ranges", answers.len(), queries.len()),
            ));
        }
        for (query, answer) in queries.iter().zip(answers) {
            let (start, end) = self.set.span(&query.range);
            match (answer, &query.content) {
                (RangeAnswer::Fingerprint { matched: true, .. }, RangeContent::Fingerprint(_)) => {}
                (RangeAnswer::Fingerprint { count: 0, .. }, RangeContent::Fingerprint(_)) => {
                    // The server holds nothing here: every client item is new.
                    self.send.extend(start..end);
                }
                (RangeAnswer::Fingerprint { .. }, RangeContent::Fingerprint(_))
                    if end - start <= ITEM_LIST_THRESHOLD =>
                {
                    let items = self.set.items_query(query.range.clone(), start, end);
                    self.pending.push(items);
                }
                (RangeAnswer::Fingerprint { .. }, RangeContent::Fingerprint(_)) => {
                    let parts = self.set.split(&query.range, start, end);
                    self.pending.extend(parts);
                }
                (
                    RangeAnswer::Items {
                        send,
                        absent,
                        absent_ids,
                    },
                    RangeContent::Items(items),
                ) => {
                    for &i in send {
                        let i = i as usize;
                        if i >= items.len() {
                            return Err(Error::invalid(
                                "ranges.send",
                                "an answer names an item the range did not list",
                            ));
                        }
                        self.send.push(start + i);
                    }
                    self.absent += absent;
                    self.absent_ids.extend(absent_ids.iter().cloned());
                }
                _ => {
                    return Err(Error::invalid(
                        "ranges",
                        "an answer's kind does not match its range's",
                    ))
                }
            }
        }
        Ok(())
    }

    /// Whether another round is needed.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// What the exchange found.
    pub fn outcome(mut self) -> Outcome {
        self.send.sort_unstable();
        self.send.dedup();
        Outcome {
            send: self.send,
            absent: self.absent,
            absent_ids: self.absent_ids,
            rounds: self.rounds,
        }
    }
}

#[cfg(test)]
mod tests;
