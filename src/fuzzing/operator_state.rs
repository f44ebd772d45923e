//! Fuzz target `operator_state`: one subtask's operator state as `_metadata` stores it
//! (docs/format.md, section 9), and how a restore deals it out.

use arbitrary::Unstructured;

use crate::backend::meta::Reader;
use crate::operator_state::{OperatorStateKind, OperatorStateSnapshot};

use super::recipe;

/// Decodes `data` as operator state; checks what it accepts (re-encoding, redistribution
/// at a few parallelisms), then round-trips a valid one. The answer is the decoder's, and
/// bytes left after the state are an error here (inside `_metadata` the next subtask's
/// state follows).
pub fn operator_state(data: &[u8]) -> Result<(), String> {
    let mut reader = Reader(data);
    let decoded = OperatorStateSnapshot::decode(&mut reader);
    let trailing = reader.0.len();
    if let Ok(state) = &decoded {
        let again = encode(state);
        assert!(
            again.len() + trailing <= data.len(),
            "accepted operator state grew"
        );
        let mut reader = Reader(&again);
        assert_eq!(
            OperatorStateSnapshot::decode(&mut reader).as_ref(),
            Ok(state),
            "accepted operator state does not survive encode and decode"
        );
        assert!(reader.0.is_empty(), "encode wrote more than decode reads");
        check_redistribution(std::slice::from_ref(state));
    }
    let mut u = Unstructured::new(data);
    let mut subtasks = Vec::new();
    for _ in 0..recipe::count(&mut u, 3).unwrap_or(0) {
        let Ok(state) = recipe::operator_state(&mut u) else {
            break;
        };
        let bytes = encode(&state);
        let mut reader = Reader(&bytes);
        assert_eq!(
            OperatorStateSnapshot::decode(&mut reader),
            Ok(state.clone()),
            "decode(encode)"
        );
        assert!(reader.0.is_empty());
        subtasks.push(state);
    }
    check_redistribution(&subtasks);
    match decoded {
        Ok(_) if trailing > 0 => Err(format!("{trailing} bytes after the operator state")),
        other => other.map(|_| ()),
    }
}

fn encode(state: &OperatorStateSnapshot) -> Vec<u8> {
    let mut out = Vec::new();
    state.encode(&mut out);
    out
}

/// Lists are dealt round-robin (element `j` of the concatenation to subtask `j mod p`),
/// union lists go whole to everyone, broadcast state is subtask 0's everywhere.
fn check_redistribution(old: &[OperatorStateSnapshot]) {
    for parallelism in [1u32, 2, 3, 7] {
        let new = OperatorStateSnapshot::redistribute(old, parallelism);
        assert_eq!(new.len(), parallelism as usize);
        let mut names: Vec<&String> = old.iter().flat_map(|s| s.states.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let entries: Vec<_> = old.iter().filter_map(|s| s.states.get(name)).collect();
            let Some(first) = entries.first() else {
                continue;
            };
            let all: Vec<_> = entries.iter().flat_map(|e| e.items.iter()).collect();
            for (i, subtask) in new.iter().enumerate() {
                let Some(got) = subtask.states.get(name) else {
                    panic!("subtask {i} of {parallelism} lacks '{name}'");
                };
                assert_eq!(got.kind, first.kind);
                let expected: Vec<_> = match first.kind {
                    OperatorStateKind::List => all
                        .iter()
                        .skip(i)
                        .step_by(parallelism as usize)
                        .copied()
                        .collect(),
                    OperatorStateKind::UnionList => all.clone(),
                    OperatorStateKind::Broadcast => first.items.iter().collect(),
                };
                let got: Vec<_> = got.items.iter().collect();
                assert_eq!(got, expected, "'{name}' on subtask {i} of {parallelism}");
            }
        }
    }
}
