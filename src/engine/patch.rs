//! JSON Patch (RFC 6902) operations, built with escaped pointers (`/` in a key becomes `~1`).

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde_json::Value;

/// Collects the operations of one mutation. Pointers refer to the object as it came in.
#[derive(Debug, Default)]
pub struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    /// `add` creates the member, or replaces it when it exists.
    pub fn add<'t>(&mut self, tokens: impl IntoIterator<Item = &'t str>, value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(tokens),
            value,
        }));
    }

    /// `replace` requires the member to exist; used for array elements, where `add` would insert.
    pub fn replace<'t>(&mut self, tokens: impl IntoIterator<Item = &'t str>, value: Value) {
        self.ops.push(PatchOperation::Replace(ReplaceOperation {
            path: PointerBuf::from_tokens(tokens),
            value,
        }));
    }

    /// Sets `key` of the string map at `map_tokens` (labels, annotations), creating the map when
    /// the object has none. `current` is the map as the object has it.
    pub fn set_map_entry<'t>(
        &mut self,
        map_tokens: &[&'t str],
        current: Option<&std::collections::BTreeMap<String, String>>,
        key: &'t str,
        value: &str,
    ) {
        match current {
            None => self.add(
                map_tokens.iter().copied(),
                Value::Object([(key.to_owned(), Value::from(value))].into_iter().collect()),
            ),
            Some(map) if map.get(key).map(String::as_str) != Some(value) => {
                self.add(map_tokens.iter().copied().chain([key]), Value::from(value))
            }
            Some(_) => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn into_ops(self) -> Vec<PatchOperation> {
        self.ops
    }
}
