//! Input strategies shared by the fuzz targets of every crate (feature
//! `fuzzing`, enabled only by their dev-dependencies).

use proptest::prelude::*;

/// Arbitrary bytes, or `valid` with up to five bytes changed: decoders see
/// both garbage and inputs that get past their first field.
pub fn damaged(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6).prop_map(move |edits| {
            let mut bytes = valid.clone();
            for (at, value) in edits {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = value;
                }
            }
            bytes
        }),
    ]
}
