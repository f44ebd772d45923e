//! Fuzz target `composite_key`: the composite key, varints, framing and prefix successors
//! (docs/format.md, section 2), and the timer key and timer set name of format version 2.

use arbitrary::Unstructured;

use crate::backend::key::{
    key_group_of, prefix_successor, read_framed, read_varint, write_framed, write_prefix,
    write_varint, CompositeKey,
};

use crate::backend::timers::{parse_timer_state_name, timer_state_name, write_timer_key, TimerKey};

use super::recipe;

/// Parses `data` as a composite key (and its front as a varint and a framed string);
/// checks what parses, then round-trips a valid key. The answer is the key parser's.
pub fn composite_key(data: &[u8]) -> Result<(), String> {
    let parsed = CompositeKey::parse(data);
    if let Some(key) = parsed {
        check_key(data, key);
    } else {
        assert!(
            CompositeKey::prefix_len(data).is_none(),
            "a prefix length of what does not parse"
        );
    }
    if let Some((value, used)) = read_varint(data) {
        assert!((1..=5).contains(&used), "a varint of {used} bytes");
        let mut minimal = Vec::new();
        write_varint(&mut minimal, value);
        assert!(
            minimal.len() <= used,
            "a varint shorter than its minimal encoding"
        );
        assert_eq!(read_varint(&minimal), Some((value, minimal.len())));
    }
    if let Some((framed, rest)) = read_framed(data) {
        let prefix = data.len() - framed.len() - rest.len();
        assert!(
            (1..=5).contains(&prefix),
            "a frame header of {prefix} bytes"
        );
        assert_eq!(&data[prefix..prefix + framed.len()], framed);
    }
    check_successor(data);
    check_timer(data);
    let mut u = Unstructured::new(data);
    if let Ok(built) = built_key(&mut u) {
        let (key_group, key, namespace, user_key) = &built;
        let mut bytes = Vec::new();
        write_prefix(&mut bytes, *key_group, key, namespace);
        let prefix_len = bytes.len();
        bytes.extend_from_slice(user_key);
        let expected = CompositeKey {
            key_group: *key_group,
            key,
            namespace,
            user_key,
        };
        assert_eq!(CompositeKey::parse(&bytes), Some(expected), "parse(encode)");
        assert_eq!(CompositeKey::prefix_len(&bytes), Some(prefix_len));
    }
    parsed
        .map(|_| ())
        .ok_or_else(|| "not a composite key".to_string())
}

/// A timer key that parses encodes back to the same bytes; a timer set name that parses
/// is built back from its parts.
fn check_timer(data: &[u8]) {
    if let Some(timer) = TimerKey::parse(data) {
        let mut again = Vec::new();
        write_timer_key(
            &mut again,
            timer.key_group,
            timer.timestamp,
            timer.key,
            timer.namespace,
        );
        assert!(again.len() <= data.len(), "an accepted timer key grew");
        assert_eq!(TimerKey::parse(&again), Some(timer), "parse(encode(parse))");
    }
    if let Ok(name) = std::str::from_utf8(data) {
        if let Some((service, domain)) = parse_timer_state_name(name) {
            assert_eq!(timer_state_name(service, domain), name, "timer set name");
        }
    }
}

type Parts = (u16, Vec<u8>, Vec<u8>, Vec<u8>);

fn built_key(u: &mut Unstructured<'_>) -> arbitrary::Result<Parts> {
    Ok((
        u.arbitrary()?,
        recipe::bytes(u, 300)?,
        recipe::bytes(u, 40)?,
        recipe::bytes(u, 40)?,
    ))
}

fn check_key(data: &[u8], key: CompositeKey<'_>) {
    assert_eq!(key_group_of(data), Some(key.key_group));
    let mut again = Vec::new();
    write_prefix(&mut again, key.key_group, key.key, key.namespace);
    let prefix_len = again.len();
    again.extend_from_slice(key.user_key);
    assert!(again.len() <= data.len(), "an accepted key grew");
    assert_eq!(
        CompositeKey::parse(&again),
        Some(key),
        "parse(encode(parse))"
    );
    assert_eq!(CompositeKey::prefix_len(&again), Some(prefix_len));
    assert_eq!(
        CompositeKey::prefix_len(data),
        Some(data.len() - key.user_key.len())
    );
    let mut framed = Vec::new();
    write_framed(&mut framed, key.key);
    assert_eq!(read_framed(&framed), Some((key.key, &[][..])));
}

/// The successor of a prefix is above every string that starts with it, and is itself
/// not one of them.
fn check_successor(prefix: &[u8]) {
    match prefix_successor(prefix) {
        Some(next) => {
            assert!(next.as_slice() > prefix);
            assert!(
                !next.starts_with(prefix),
                "the successor starts with the prefix"
            );
            let mut longest = prefix.to_vec();
            longest.extend_from_slice(&[0xFF; 4]);
            assert!(
                next > longest,
                "a string with the prefix sorts after its successor"
            );
        }
        None => assert!(
            prefix.iter().all(|&b| b == 0xFF),
            "no successor of {prefix:?}"
        ),
    }
}
