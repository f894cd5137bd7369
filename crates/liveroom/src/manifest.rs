//! The manifest: a description of the registry for code generators, served at
//! `/__live/manifest.json`: modules, each with its rooms, streams and RPCs; their args with names
//! and JSON Schemas (draft 2020-12), their result, data, presence and cursor types; named types
//! once, under the top-level `$defs`.

use crate::registry::{App, Entry, Live};
use crate::room::def::RoomDef;
use schemars::generate::SchemaSettings;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

impl Live {
    /// Describes the registry for code generators (served at `/__live/manifest.json`).
    ///
    /// ```
    /// use liveroom::{App, Ctx, JsonSchema, LiveError};
    /// #[derive(serde::Deserialize, JsonSchema)]
    /// struct Add { a: i64, b: i64 }
    ///
    /// let live = App::new()
    ///     .rpc("math/add", |_ctx: Ctx, Add { a, b }| async move { Ok::<_, LiveError>(a + b) })
    ///     .build();
    /// let add = &live.manifest()["modules"]["math"]["rpcs"]["add"];
    /// assert_eq!(add["args"], serde_json::json!(["a", "b"]));
    /// assert_eq!(add["params"][1]["schema"]["type"], "integer");
    /// assert_eq!(add["result"]["type"], "integer");
    /// ```
    pub fn manifest(&self) -> Value {
        describe(self.entries(), self.rooms())
    }
}

impl<S: Clone + Send + Sync + 'static> App<S> {
    /// The manifest of this registry without building or serving it (nothing starts, no
    /// database or Redis is needed), for writing it at build time:
    ///
    /// ```
    /// use liveroom::{App, Ctx, LiveError};
    /// let app = App::new().rpc("math/neg", |_: Ctx, (n,): (i64,)| async move { Ok::<_, LiveError>(-n) });
    /// let json = serde_json::to_string_pretty(&app.manifest()).unwrap();
    /// assert!(json.contains("\"neg\""));
    /// ```
    ///
    /// [`Server::run`](crate::Server::run) does this by itself when `LIVEROOM_MANIFEST` is set.
    pub fn manifest(&self) -> Value {
        describe(self.entries(), self.rooms())
    }
}

/// The manifest of `entries` and `rooms`.
fn describe(entries: &HashMap<String, Entry>, rooms: &[Arc<RoomDef>]) -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let g = &mut generator;
    let mut modules: BTreeMap<String, Value> = BTreeMap::new();
    let mut paths: Vec<(&String, &Entry)> = entries.iter().collect();
    paths.sort_by_key(|(path, _)| *path);
    for (path, entry) in paths {
        let (m, n) = path.rsplit_once('/').unwrap_or(("", path));
        match entry {
            Entry::Rpc(def) => {
                module(&mut modules, m)["rpcs"][n] = json!({
                    "args": def.params.names,
                    "params": def.params.describe(g),
                    "result": (def.result)(g).to_value(),
                })
            }
            Entry::Stream(def) => {
                let mut d = def.merge.describe();
                d["args"] = json!(def.params.names);
                d["params"] = json!(def.params.describe(g));
                d["data"] = (def.data)(g).to_value();
                module(&mut modules, m)["streams"][n] = d;
            }
            // Described with their room below.
            Entry::Room(..) | Entry::Action { .. } => {}
        }
    }
    for room in rooms {
        module(&mut modules, room.module())["rooms"][room.name()] = room.describe(g);
    }
    json!({ "version": 1, "modules": modules, "$defs": generator.definitions() })
}

/// The manifest entry of module `name`, created empty on first use.
fn module<'a>(modules: &'a mut BTreeMap<String, Value>, name: &str) -> &'a mut Value {
    modules
        .entry(name.to_owned())
        .or_insert_with(|| json!({ "rooms": {}, "streams": {}, "rpcs": {} }))
}
