//! A handler's args: their names (read from the Rust type), parsing a call's positional `args`
//! with the path of what is wrong, and their JSON Schema for the manifest.
//!
//! Args are positional on the wire (`["b1", "Buy milk"]`). A handler declares them once, as its
//! args type:
//! - a **struct** whose fields, in order, are the args, named by their (serde) field names:
//!   `struct AddCard { title: String }` takes `["Buy milk"]` and is named `title`;
//! - a **tuple** (`(String, u32)`), whose args are named `arg0`, `arg1`, ...;
//! - `()` for none.
//!
//! Names come from serde's own description of the type (the field list a derived `Deserialize`
//! hands to the deserializer), so they can never drift from the fields or be declared twice.

use crate::error::{code, LiveError};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::{json, Value};

/// Writes the schema of one type into a shared generator (definitions go to its `$defs`).
pub(crate) type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`, as a `$ref` where `T` is a named type.
pub(crate) fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The args of one handler: names in wire order, whether they are real names (a struct) or
/// positions (a tuple), and the schema of the whole args type.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    pub names: Vec<String>,
    named: bool,
    /// The type takes the whole args array (a `Vec`, a `Value`): any number of args.
    rest: bool,
    schema: SchemaFn,
}

impl Params {
    /// Reads the names of `A`'s args.
    pub fn of<A: DeserializeOwned + JsonSchema>() -> Self {
        let (names, named, rest) = match probe::<A>() {
            Shape::Struct(fields) => (fields.iter().map(|f| f.to_string()).collect(), true, false),
            Shape::Tuple(n) => ((0..n).map(|i| format!("arg{i}")).collect(), false, false),
            Shape::Unit => (Vec::new(), true, false),
            Shape::Other => (vec!["args".to_owned()], false, true),
        };
        Params {
            names,
            named,
            rest,
            schema: schema_of::<A>,
        }
    }

    /// Whether the type takes all args as one array (so it has no fixed count).
    pub fn is_rest(&self) -> bool {
        self.rest
    }

    /// Parses `args` into `A`. `offset` is the position of the first of these args in the call
    /// (a room action's own args come after the room's). A wrong arg is answered `VALIDATION`
    /// with an issue whose path starts at that arg: its name, or its position for tuples.
    pub fn parse<A: DeserializeOwned>(
        &self,
        args: Vec<Value>,
        offset: usize,
    ) -> Result<A, LiveError> {
        let given = args.len();
        // serde reads `()` from `null`, not from `[]`: an empty args list means "no args".
        let input = if given == 0 && self.names.is_empty() {
            Value::Null
        } else {
            Value::Array(args)
        };
        if given > self.names.len() && !self.rest {
            let n = self.names.len();
            return Err(self.issue(
                vec![self.segment(n, offset)],
                format!("takes {n} args, got {given}"),
            ));
        }
        serde_path_to_error::deserialize(input).map_err(|e| {
            let mut path: Vec<Value> = Vec::new();
            for segment in e.path().iter() {
                use serde_path_to_error::Segment;
                let first = path.is_empty();
                match segment {
                    Segment::Seq { index } if first => path.push(self.segment(*index, offset)),
                    Segment::Seq { index } => path.push(json!(index)),
                    Segment::Map { key } => path.push(json!(key)),
                    Segment::Enum { variant } => path.push(json!(variant)),
                    Segment::Unknown => {}
                }
            }
            let inner = e.into_inner().to_string();
            if path.is_empty() && given < self.names.len() && !self.rest {
                // Too few args: point at the first one missing.
                path.push(self.segment(given, offset));
                return self.issue(path, format!("missing (takes {} args)", self.names.len()));
            }
            self.issue(path, inner)
        })
    }

    fn segment(&self, index: usize, offset: usize) -> Value {
        match self.names.get(index) {
            Some(name) if self.named => json!(name),
            _ => json!(index + offset),
        }
    }

    fn issue(&self, path: Vec<Value>, message: String) -> LiveError {
        let at = match path.first() {
            Some(Value::String(name)) => format!("argument `{name}`"),
            Some(Value::Number(n)) => format!("argument {n}"),
            _ => "arguments".to_owned(),
        };
        LiveError::new(code::VALIDATION, format!("Invalid {at}: {message}"))
            .with_issue(path, message)
    }

    /// The manifest's description of each arg: `{name, schema, required}`, and `rest: true`
    /// for a type that takes all args as one array.
    pub fn describe(&self, generator: &mut SchemaGenerator) -> Vec<Value> {
        let whole = (self.schema)(generator).to_value();
        let whole = resolve(generator, whole);
        let required: Vec<&str> = whole["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        self.names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                if self.rest {
                    return json!({ "name": name, "schema": whole, "required": false, "rest": true });
                }
                let (schema, needed) = if self.named {
                    (
                        whole["properties"][name].clone(),
                        required.contains(&name.as_str()),
                    )
                } else if let Some(items) = whole["prefixItems"].as_array() {
                    (items.get(i).cloned().unwrap_or(json!({})), true)
                } else {
                    (whole.clone(), true)
                };
                json!({ "name": name, "schema": schema, "required": needed })
            })
            .collect()
    }
}

/// The definition a `$ref` points at (the schema itself otherwise).
fn resolve(generator: &SchemaGenerator, schema: Value) -> Value {
    let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.rsplit_once('/'))
        .map(|(_, n)| n.to_owned())
    else {
        return schema;
    };
    generator
        .definitions()
        .get(&name)
        .cloned()
        .unwrap_or(schema)
}

/// What serde says a type looks like when asked to deserialize it.
enum Shape {
    Unit,
    Tuple(usize),
    Struct(&'static [&'static str]),
    Other,
}

fn probe<A: DeserializeOwned>() -> Shape {
    let mut shape = Shape::Other;
    let _ = A::deserialize(Probe(&mut shape));
    shape
}

/// A deserializer that records the shape it is asked for, then stops.
struct Probe<'a>(&'a mut Shape);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        *self.0 = Shape::Unit;
        Err(Stop)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, _: V) -> Result<V::Value, Stop> {
        *self.0 = Shape::Tuple(len);
        Err(Stop)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = Shape::Tuple(len);
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = Shape::Struct(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit_struct newtype_struct seq map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct MoveCard {
        card_id: String,
        position: f64,
        note: Option<String>,
    }

    fn names<A: DeserializeOwned + JsonSchema>() -> Vec<String> {
        Params::of::<A>().names
    }

    #[test]
    fn names_come_from_the_type() {
        assert_eq!(names::<MoveCard>(), ["cardId", "position", "note"]);
        assert_eq!(names::<(String, i64)>(), ["arg0", "arg1"]);
        assert!(names::<()>().is_empty());
        assert_eq!(names::<Vec<Value>>(), ["args"]);
    }

    #[test]
    fn a_struct_reads_positional_args() {
        let p = Params::of::<MoveCard>();
        let m: MoveCard = p
            .parse(vec![json!("c1"), json!(2.5), json!(null)], 0)
            .unwrap();
        assert_eq!((m.card_id.as_str(), m.position), ("c1", 2.5));
        let () = Params::of::<()>().parse(vec![], 0).unwrap();
    }

    #[test]
    fn errors_point_at_the_argument() {
        let p = Params::of::<MoveCard>();
        let e = p
            .parse::<MoveCard>(vec![json!("c1"), json!("x"), json!(null)], 0)
            .unwrap_err();
        assert_eq!(e.code(), "VALIDATION");
        assert_eq!(e.issues()[0].path, vec![json!("position")]);
        let e = p.parse::<MoveCard>(vec![json!("c1")], 0).unwrap_err();
        assert_eq!(e.issues()[0].path, vec![json!("position")], "{e:?}");
        let e = p
            .parse::<MoveCard>(vec![json!("c1"), json!(1), json!(null), json!(4)], 0)
            .unwrap_err();
        assert_eq!(e.issues()[0].path, vec![json!(3)]);

        let t = Params::of::<(String, Vec<u8>)>();
        let e = t
            .parse::<(String, Vec<u8>)>(vec![json!("a"), json!([1, "z"])], 1)
            .unwrap_err();
        assert_eq!(e.issues()[0].path, vec![json!(2), json!(1)]);
    }

    #[test]
    fn schemas_per_argument() {
        let mut g = schemars::generate::SchemaSettings::draft2020_12().into_generator();
        let d = Params::of::<MoveCard>().describe(&mut g);
        assert_eq!(d[0]["schema"]["type"], "string");
        assert_eq!(d[1]["schema"]["type"], "number");
        assert_eq!(
            (d[0]["required"].clone(), d[2]["required"].clone()),
            (json!(true), json!(false))
        );
        let d = Params::of::<(String, u8)>().describe(&mut g);
        assert_eq!(d[1]["schema"]["type"], "integer");
    }
}
