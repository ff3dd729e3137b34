//! JSON-lines records: logstash-logback-encoder (`@timestamp`, `level`, `message`,
//! `stack_trace`), ECS (`@timestamp`, `log.level` flat or nested, `error.stack_trace` flat or
//! nested), log4j2 JsonTemplateLayout's logstash template (`exception.stacktrace`,
//! `exception.exception_class`), GELF (`full_message`) and similar layouts (`timestamp`,
//! `time`, `severity`).
//!
//! Only the few fields that matter are decoded; strings without escapes are borrowed.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The fields of a JSON log record that the analysis uses.
#[derive(Debug, Default)]
pub(crate) struct JsonRecord<'a> {
    pub time: Option<Scalar<'a>>,
    pub level: Option<Cow<'a, str>>,
    pub message: Option<Cow<'a, str>>,
    pub stack_trace: Option<Cow<'a, str>>,
    /// ECS `error.type` (the exception class, when the trace itself is not logged).
    pub error_type: Option<Cow<'a, str>>,
    /// ECS `error.message`.
    pub error_message: Option<Cow<'a, str>>,
    /// A `type` key (kept for nested `error` objects).
    kind: Option<Cow<'a, str>>,
}

/// A JSON value reduced to what a field can usefully be.
#[derive(Debug)]
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
}

enum Value<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Obj(Box<JsonRecord<'a>>),
    Other,
}

impl<'a> Value<'a> {
    fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Value::Num(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Value::Num(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Value::Num(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Value::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Value::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(Value::Obj(Box::new(RecordVisitor.visit_map(map)?)))
    }
}

impl<'de> de::Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = JsonRecord<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut r = JsonRecord::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "@timestamp" | "timestamp" | "time" | "ts" | "date" => {
                    let v = map.next_value::<Value<'de>>()?;
                    if r.time.is_none() {
                        r.time = match v {
                            Value::Str(s) => Some(Scalar::Str(s)),
                            Value::Num(n) => Some(Scalar::Num(n)),
                            _ => None,
                        };
                    }
                }
                "level" | "log.level" | "severity" | "loglevel" | "levelname" => {
                    let v = map.next_value::<Value<'de>>()?;
                    if r.level.is_none() {
                        r.level = v.into_str();
                    }
                }
                "message" | "msg" | "exception_message" => {
                    let v = map.next_value::<Value<'de>>()?;
                    if r.message.is_none() {
                        r.message = v.into_str();
                    }
                }
                "stack_trace" | "error.stack_trace" | "stacktrace" | "stackTrace"
                | "StackTrace" | "full_message" | "exception" | "error" | "throwable"
                | "thrown" => match map.next_value::<Value<'de>>()? {
                    Value::Str(s) if r.stack_trace.is_none() => r.stack_trace = Some(s),
                    Value::Obj(o) => {
                        if r.stack_trace.is_none() {
                            r.stack_trace = o.stack_trace;
                        }
                        if r.error_type.is_none() {
                            r.error_type = o.kind;
                            r.error_message = o.message;
                        }
                    }
                    _ => {}
                },
                "error.type" => {
                    let v = map.next_value::<Value<'de>>()?;
                    r.error_type = v.into_str();
                }
                "error.message" => {
                    let v = map.next_value::<Value<'de>>()?;
                    r.error_message = v.into_str();
                }
                "type" | "exception_class" => {
                    let v = map.next_value::<Value<'de>>()?;
                    r.kind = v.into_str();
                }
                "log" => {
                    if let Value::Obj(o) = map.next_value::<Value<'de>>()?
                        && r.level.is_none()
                    {
                        r.level = o.level;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(r)
    }
}

/// Decodes a JSON-lines record, or `None` when `line` is not a JSON object.
pub(crate) fn parse(line: &[u8]) -> Option<JsonRecord<'_>> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let r = de.deserialize_map(RecordVisitor).ok()?;
    de.end().ok()?;
    Some(r)
}

/// Does this line look like a JSON object (first and last non-blank bytes are braces)?
pub(crate) fn looks_like_json(line: &[u8]) -> bool {
    let s = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&line[..0], |i| &line[i..]);
    s.first() == Some(&b'{') && s.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logstash_and_ecs() {
        let l = br#"{"@timestamp":"2026-11-23T18:44:43.568Z","level":"ERROR","message":"boom","stack_trace":"java.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)\n"}"#;
        let r = parse(l).expect("json");
        assert!(matches!(r.time, Some(Scalar::Str(ref s)) if s.starts_with("2026")));
        assert_eq!(r.level.as_deref(), Some("ERROR"));
        assert!(
            r.stack_trace
                .as_deref()
                .is_some_and(|s| s.contains("\tat a.B.c"))
        );

        let l = br#"{"@timestamp":"2026-11-23T18:44:43.568Z","log.level":"error","message":"m","error.stack_trace":"x.Y: z\n\tat a.B.c(B.java:1)","ecs.version":"1.2.0"}"#;
        let r = parse(l).expect("json");
        assert_eq!(r.level.as_deref(), Some("error"));
        assert!(r.stack_trace.is_some());

        let l = br#"{"@timestamp":"t","log":{"level":"WARN","logger":"x"},"error":{"type":"x.Y","stack_trace":"x.YException: z"},"n":[1,{"a":2}]}"#;
        let r = parse(l).expect("json");
        assert_eq!(r.level.as_deref(), Some("WARN"));
        assert_eq!(r.stack_trace.as_deref(), Some("x.YException: z"));
        assert_eq!(r.error_type.as_deref(), Some("x.Y"));

        let l = br#"{"@timestamp":"t","type":"access","error.type":"java.io.IOException","error.message":"disk"}"#;
        let r = parse(l).expect("json");
        assert_eq!(r.error_type.as_deref(), Some("java.io.IOException"));
        assert_eq!(r.error_message.as_deref(), Some("disk"));

        let l = br#"{"@timestamp":"t","level":"ERROR","exception":{"exception_class":"java.io.IOException","exception_message":"disk","stacktrace":"java.io.IOException: disk\n\tat a.B.c(B.java:1)"}}"#;
        let r = parse(l).expect("json");
        assert!(
            r.stack_trace
                .as_deref()
                .is_some_and(|s| s.starts_with("java.io.IOException"))
        );
        assert_eq!(r.error_type.as_deref(), Some("java.io.IOException"));

        assert!(parse(b"{not json}").is_none());
        assert!(parse(b"{\"a\":1} trailing").is_none());
        assert!(looks_like_json(b"  {\"a\":1}  "));
        assert!(!looks_like_json(b"{ block"));
    }
}
