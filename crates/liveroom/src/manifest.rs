//! The manifest: a description of the registry for code generators, served at
//! `/__live/manifest.json` (modules, each with its rooms, streams and RPCs, and their args).

use crate::registry::{Entry, Live};
use serde_json::{json, Value};
use std::collections::BTreeMap;

impl Live {
    /// Describes the registry for code generators (served at `/__live/manifest.json`).
    ///
    /// ```
    /// use liveroom::{App, Ctx, LiveError};
    /// let live = App::new()
    ///     .rpc("math/add", |_ctx: Ctx, (a, b): (i64, i64)| async move { Ok::<_, LiveError>(a + b) })
    ///     .arg_names("math/add", ["a", "b"])
    ///     .build();
    /// assert_eq!(live.manifest()["modules"]["math"]["rpcs"]["add"]["args"], serde_json::json!(["a", "b"]));
    /// ```
    pub fn manifest(&self) -> Value {
        let mut modules: BTreeMap<String, Value> = BTreeMap::new();
        let mut paths: Vec<(&String, &Entry)> = self.entries().iter().collect();
        paths.sort_by_key(|(path, _)| *path);
        for (path, entry) in paths {
            let (m, n) = path.rsplit_once('/').unwrap_or(("", path));
            match entry {
                Entry::Rpc(def) => {
                    module(&mut modules, m)["rpcs"][n] = json!({ "args": def.arg_names })
                }
                Entry::Stream(def) => {
                    let mut d = def.merge.describe();
                    d["args"] = json!(def.arg_names);
                    module(&mut modules, m)["streams"][n] = d;
                }
                // Described with their room below.
                Entry::Room(..) | Entry::Action { .. } => {}
            }
        }
        for room in self.rooms() {
            module(&mut modules, room.module())["rooms"][room.name()] = room.describe();
        }
        json!({ "version": 1, "modules": modules })
    }
}

/// The manifest entry of module `name`, created empty on first use.
fn module<'a>(modules: &'a mut BTreeMap<String, Value>, name: &str) -> &'a mut Value {
    modules
        .entry(name.to_owned())
        .or_insert_with(|| json!({ "rooms": {}, "streams": {}, "rpcs": {} }))
}
