use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const LIMITS: CallLimits = CallLimits {
    max_ranges: 4_096,
    max_items: 10_000,
};

/// Runs a whole exchange against `server` (id -> checksum), the server reading its items in
/// pages of `page` the way the service does; answers the outcome and the verdicts.
fn exchange(client: &ClientSet, server: &BTreeMap<String, String>, page: usize) -> Outcome {
    let mut reconciler = Reconciler::new(client);
    loop {
        let round = reconciler.next_round();
        if round.is_empty() {
            break;
        }
        for call in Reconciler::calls(round, LIMITS) {
            check_call(&call, LIMITS).expect("the client's calls are well formed");
            let verdict = judge(&call, server, page);
            reconciler
                .absorb(&call, &verdict.answers)
                .expect("answers fit");
        }
        assert!(reconciler.rounds <= 12, "an exchange ends in a few rounds");
    }
    reconciler.outcome()
}

fn judge(call: &[RangeQuery], server: &BTreeMap<String, String>, page: usize) -> Verdict {
    let mut judge = Judge::new(call, 10_000);
    let mut seek = judge.first_seek();
    while let Some(Seek { from, inclusive }) = seek {
        let items: Vec<(&String, &String)> = server
            .iter()
            .filter(|(id, _)| {
                if inclusive {
                    id.as_str() >= from.as_str()
                } else {
                    id.as_str() > from.as_str()
                }
            })
            .take(page)
            .collect();
        for (id, checksum) in &items {
            judge.push(id, checksum);
        }
        seek = match items.last() {
            Some((last, _)) if items.len() == page => judge.seek_after(last),
            _ => None,
        };
    }
    judge.finish()
}

/// What per-record digests answer: the client ids that are new or changed, and the server ids
/// the client does not hold.
fn by_digests(
    client: &BTreeMap<String, String>,
    server: &BTreeMap<String, String>,
) -> (Vec<String>, Vec<String>) {
    let send = client
        .iter()
        .filter(|(id, checksum)| server.get(*id) != Some(checksum))
        .map(|(id, _)| id.clone())
        .collect();
    let absent = server
        .keys()
        .filter(|id| !client.contains_key(*id))
        .cloned()
        .collect();
    (send, absent)
}

fn set(map: &BTreeMap<String, String>) -> ClientSet {
    ClientSet::new(map.iter().map(|(k, v)| (k.clone(), v.clone())))
}

fn numbered(n: usize, version: &str) -> BTreeMap<String, String> {
    (0..n)
        .map(|i| (format!("id-{i:07}"), format!("{version}-{i}")))
        .collect()
}

fn check_against_digests(
    client: &BTreeMap<String, String>,
    server: &BTreeMap<String, String>,
) -> Outcome {
    let outcome = exchange(&set(client), server, 1_000);
    let (send, absent) = by_digests(client, server);
    let ids = set(client);
    let sent: Vec<String> = outcome.send.iter().map(|&i| ids.id(i).to_owned()).collect();
    assert_eq!(sent, send, "ids to send");
    assert_eq!(outcome.absent, absent.len() as u64, "absent count");
    let mut listed = outcome.absent_ids.clone();
    listed.sort();
    assert_eq!(listed, absent, "absent ids");
    outcome
}

#[test]
fn an_unchanged_set_is_confirmed_in_one_round() {
    let server = numbered(100_000, "v1");
    let outcome = check_against_digests(&server.clone(), &server);
    assert_eq!(outcome.rounds, 1);
    assert!(outcome.send.is_empty());
}

#[test]
fn a_few_changes_among_many_are_found() {
    let server = numbered(50_000, "v1");
    let mut client = server.clone();
    for i in (0..50_000).step_by(997) {
        client.insert(format!("id-{i:07}"), "v2".into());
    }
    client.insert("id-9999999".into(), "new".into());
    client.remove("id-0000001");
    let outcome = check_against_digests(&client, &server);
    assert_eq!(outcome.send.len(), 52);
    assert_eq!(outcome.absent, 1);
}

#[test]
fn empty_sides() {
    let empty = BTreeMap::new();
    let some = numbered(1_000, "v1");
    let first_load = check_against_digests(&some, &empty);
    assert_eq!((first_load.send.len(), first_load.rounds), (1_000, 1));
    let all_gone = check_against_digests(&empty, &some);
    assert_eq!((all_gone.absent, all_gone.rounds), (1_000, 1));
    let nothing = check_against_digests(&empty, &empty);
    assert_eq!(
        nothing,
        Outcome {
            rounds: 1,
            ..Outcome::default()
        }
    );
}

#[test]
fn every_record_changed() {
    let server = numbered(5_000, "v1");
    let client = numbered(5_000, "v2");
    assert_eq!(check_against_digests(&client, &server).send.len(), 5_000);
}

#[test]
fn the_fingerprint_does_not_depend_on_order_and_sees_every_item() {
    let hashes: Vec<[u8; 32]> = (0..50).map(|i| item_hash(&i.to_string(), "c")).collect();
    let mut forward = Accumulator::default();
    hashes.iter().for_each(|h| forward.add(h));
    let mut backward = Accumulator::default();
    hashes.iter().rev().for_each(|h| backward.add(h));
    assert_eq!(forward.fingerprint(), backward.fingerprint());
    let mut fewer = Accumulator::default();
    hashes[1..].iter().for_each(|h| fewer.add(h));
    assert_ne!(forward.fingerprint(), fewer.fingerprint());
    assert_ne!(item_hash("a", "bc"), item_hash("ab", "c"));
}

#[test]
fn separators_are_short_and_between_their_neighbours() {
    for (a, b, expected) in [
        ("apple", "banana", "b"),
        ("id-0001", "id-0002", "id-0002"),
        ("ab", "abc", "abc"),
        ("x", "xé", "xé"),
        ("aé", "aö", "aö"),
    ] {
        let s = separator(a, b);
        assert_eq!(s, expected);
        assert!(a < s.as_str() && s.as_str() <= b);
    }
}

#[test]
fn hostile_calls_are_refused_with_the_range_named() {
    let fp = RangeContent::Fingerprint([0; FINGERPRINT_BYTES]);
    let range = |lower: &str, upper: Option<&str>| IdRange {
        lower: lower.into(),
        upper: upper.map(Into::into),
    };
    let q = |r: IdRange, c: RangeContent| RangeQuery {
        range: r,
        content: c,
    };
    let field = |e: Error| match e {
        Error::InvalidArgument(v) => v[0].field.clone(),
        other => panic!("{other:?}"),
    };
    let overlap = vec![
        q(range("a", Some("m")), fp.clone()),
        q(range("k", None), fp.clone()),
    ];
    assert_eq!(
        field(check_call(&overlap, LIMITS).unwrap_err()),
        "ranges[1].lower_bound"
    );
    let inverted = vec![q(range("m", Some("a")), fp.clone())];
    assert_eq!(
        field(check_call(&inverted, LIMITS).unwrap_err()),
        "ranges[0].upper_bound"
    );
    let after_open_end = vec![
        q(range("", None), fp.clone()),
        q(range("z", None), fp.clone()),
    ];
    assert_eq!(
        field(check_call(&after_open_end, LIMITS).unwrap_err()),
        "ranges[1].lower_bound"
    );
    let item = |id: &str| ListedItem {
        id: id.into(),
        hash: [0; LISTED_HASH_BYTES],
    };
    let unsorted = vec![q(
        range("", None),
        RangeContent::Items(vec![item("b"), item("a")]),
    )];
    assert_eq!(
        field(check_call(&unsorted, LIMITS).unwrap_err()),
        "ranges[0].items.ids[1]"
    );
    let outside = vec![q(
        range("c", Some("d")),
        RangeContent::Items(vec![item("e")]),
    )];
    assert_eq!(
        field(check_call(&outside, LIMITS).unwrap_err()),
        "ranges[0].items.ids[0]"
    );
    let nul = vec![q(range("a\0", None), fp.clone())];
    assert_eq!(
        field(check_call(&nul, LIMITS).unwrap_err()),
        "ranges[0].lower_bound"
    );
    let many: Vec<RangeQuery> = (0..LIMITS.max_ranges + 1)
        .map(|i| {
            q(
                range(&format!("{i:08}"), Some(&format!("{i:08}~"))),
                fp.clone(),
            )
        })
        .collect();
    assert!(matches!(
        check_call(&many, LIMITS),
        Err(Error::ResourceExhausted { subject, .. }) if subject == "ranges"
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the two sets, the exchange ends with what per-record digests answer.
    #[test]
    fn reconciling_answers_what_digests_answer(
        server in proptest::collection::btree_map("[a-c]{1,6}", "[xy]", 0..400),
        edits in proptest::collection::vec(("[a-c]{1,6}", 0..3u8), 0..200),
        page in 1usize..50,
    ) {
        let mut client = server.clone();
        for (id, edit) in edits {
            match edit {
                0 => { client.remove(&id); }
                1 => { client.insert(id, "z".into()); }
                _ => { client.insert(id, "x".into()); }
            }
        }
        let outcome = exchange(&set(&client), &server, page);
        let (send, absent) = by_digests(&client, &server);
        let ids = set(&client);
        let sent: Vec<String> = outcome.send.iter().map(|&i| ids.id(i).to_owned()).collect();
        prop_assert_eq!(sent, send);
        prop_assert_eq!(outcome.absent, absent.len() as u64);
    }
}
