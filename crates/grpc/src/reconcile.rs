//! Range-based sync's messages (SPEC.md §2.5) <-> the domain's ranges and answers, for the
//! service (ranges in, answers out) and the client (ranges out, answers in).

use tributary_core::reconcile::{
    IdRange, ListedItem, RangeAnswer, RangeContent, RangeQuery, FINGERPRINT_BYTES,
    LISTED_HASH_BYTES,
};
use tributary_core::{Error, Violation};
use tributary_proto::contribution::v1 as pb;
use tributary_proto::contribution::v1::range_answer::Answer;
use tributary_proto::contribution::v1::reconcile_range::Content;

/// Decodes a call's ranges; a missing or malformed fingerprint or item list is a violation
/// naming its range. (Order, bounds and caps are the domain's to check.)
pub fn ranges_from_proto(ranges: Vec<pb::ReconcileRange>) -> Result<Vec<RangeQuery>, Error> {
    let mut violations = Vec::new();
    let mut queries = Vec::with_capacity(ranges.len());
    for (index, range) in ranges.into_iter().enumerate() {
        let content = match range.content {
            Some(Content::Fingerprint(bytes)) => {
                match <[u8; FINGERPRINT_BYTES]>::try_from(&bytes[..]) {
                    Ok(fingerprint) => RangeContent::Fingerprint(fingerprint),
                    Err(_) => {
                        violations.push(Violation::new(
                            format!("ranges[{index}].fingerprint"),
                            format!(
                                "a fingerprint is {FINGERPRINT_BYTES} bytes, not {}",
                                bytes.len()
                            ),
                        ));
                        continue;
                    }
                }
            }
            Some(Content::Items(items)) => match items_from_proto(items) {
                Some(items) => RangeContent::Items(items),
                None => {
                    violations.push(Violation::new(
                        format!("ranges[{index}].items.hashes"),
                        format!("{LISTED_HASH_BYTES} bytes of hash per listed id are required"),
                    ));
                    continue;
                }
            },
            None => {
                violations.push(Violation::new(
                    format!("ranges[{index}]"),
                    "one of fingerprint or items is required",
                ));
                continue;
            }
        };
        queries.push(RangeQuery {
            range: IdRange {
                lower: range.lower_bound,
                upper: (!range.upper_bound.is_empty()).then_some(range.upper_bound),
            },
            content,
        });
    }
    if violations.is_empty() {
        Ok(queries)
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

fn items_from_proto(items: pb::ReconcileItems) -> Option<Vec<ListedItem>> {
    if items.hashes.len() != items.ids.len() * LISTED_HASH_BYTES {
        return None;
    }
    Some(
        items
            .ids
            .into_iter()
            .zip(items.hashes.chunks_exact(LISTED_HASH_BYTES))
            .map(|(id, chunk)| {
                let mut hash = [0; LISTED_HASH_BYTES];
                hash.copy_from_slice(chunk);
                ListedItem { id, hash }
            })
            .collect(),
    )
}

/// Encodes a call's ranges.
pub fn ranges_to_proto(queries: &[RangeQuery]) -> Vec<pb::ReconcileRange> {
    queries
        .iter()
        .map(|q| pb::ReconcileRange {
            lower_bound: q.range.lower.clone(),
            upper_bound: q.range.upper.clone().unwrap_or_default(),
            content: Some(match &q.content {
                RangeContent::Fingerprint(fingerprint) => {
                    Content::Fingerprint(fingerprint.to_vec())
                }
                RangeContent::Items(items) => Content::Items(pb::ReconcileItems {
                    ids: items.iter().map(|i| i.id.clone()).collect(),
                    hashes: items.iter().flat_map(|i| i.hash).collect(),
                }),
            }),
        })
        .collect()
}

/// Encodes the answers.
pub fn answers_to_proto(answers: Vec<RangeAnswer>) -> Vec<pb::RangeAnswer> {
    answers
        .into_iter()
        .map(|answer| pb::RangeAnswer {
            answer: Some(match answer {
                RangeAnswer::Fingerprint { matched, count } => {
                    Answer::Fingerprint(pb::FingerprintAnswer { matched, count })
                }
                RangeAnswer::Items {
                    send,
                    absent,
                    absent_ids,
                } => Answer::Items(pb::ItemsAnswer {
                    send,
                    absent,
                    absent_ids,
                }),
            }),
        })
        .collect()
}

/// Decodes the answers; `InvalidArgument` for an answer with neither kind.
pub fn answers_from_proto(answers: Vec<pb::RangeAnswer>) -> Result<Vec<RangeAnswer>, Error> {
    answers
        .into_iter()
        .enumerate()
        .map(|(index, answer)| match answer.answer {
            Some(Answer::Fingerprint(f)) => Ok(RangeAnswer::Fingerprint {
                matched: f.matched,
                count: f.count,
            }),
            Some(Answer::Items(i)) => Ok(RangeAnswer::Items {
                send: i.send,
                absent: i.absent,
                absent_ids: i.absent_ids,
            }),
            None => Err(Error::invalid(
                format!("ranges[{index}]"),
                "an empty answer",
            )),
        })
        .collect()
}
