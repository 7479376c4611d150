//! Lenient serde types: a field of an unexpected type must not make the whole chunk unreadable (that would
//! lose its usage), so every field metering reads accepts any JSON value.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::Usage;

/// A JSON scalar, or `Other` for arrays and objects (skipped). `KEEP` false: strings give only their length,
/// so generated text is never copied.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Len(u64),
    U(u64),
    I(i64),
    F(f64),
    Bool(bool),
    Null,
    Other,
}

struct ScalarV<const KEEP: bool>;

impl<'de, const KEEP: bool> Visitor<'de> for ScalarV<KEEP> {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(if KEEP {
            Scalar::Str(Cow::Borrowed(v))
        } else {
            Scalar::Len(v.len() as u64)
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(if KEEP {
            Scalar::Str(Cow::Owned(v.to_owned()))
        } else {
            Scalar::Len(v.len() as u64)
        })
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// A token count: a non-negative integer (floats rounded, numeric strings accepted), else absent.
#[derive(Default, Clone, Copy)]
struct Tok(Option<u64>);

impl<'de> Deserialize<'de> for Tok {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Tok(match d.deserialize_any(ScalarV::<true>)? {
            Scalar::U(v) => Some(v),
            Scalar::I(v) => u64::try_from(v).ok(),
            // `as` saturates, which is the right thing for an absurd count.
            Scalar::F(v) if v.is_finite() && v >= 0.0 => Some(v.round() as u64),
            Scalar::Str(s) => s.trim().parse().ok(),
            _ => None,
        }))
    }
}

/// Byte length of a string value (decoded), 0 for anything else.
#[derive(Default, Clone, Copy)]
pub(super) struct StrLen(pub(super) u64);

impl<'de> Deserialize<'de> for StrLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(StrLen(match d.deserialize_any(ScalarV::<false>)? {
            Scalar::Len(n) => n,
            _ => 0,
        }))
    }
}

/// A string value, borrowed from the input when it has no escapes.
#[derive(Default)]
pub(super) struct Text<'a>(pub(super) Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(match d.deserialize_any(ScalarV::<true>)? {
            Scalar::Str(s) => Some(s),
            _ => None,
        }))
    }
}

/// A boolean value, else absent.
#[derive(Default)]
pub(super) struct Flag(pub(super) Option<bool>);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Flag(match d.deserialize_any(ScalarV::<false>)? {
            Scalar::Bool(b) => Some(b),
            _ => None,
        }))
    }
}

/// An object field that may be absent, `null`, of another type, or the object we want.
#[derive(Default)]
pub(super) enum Field<T> {
    #[default]
    Absent,
    Null,
    Other,
    Obj(T),
}

struct FieldV<T>(PhantomData<fn() -> T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for FieldV<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(a)).map(Field::Obj)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldV(PhantomData))
    }
}

impl Field<RawUsage> {
    pub(super) fn usage(&self) -> Option<Usage> {
        match self {
            Field::Obj(u) => u.to_usage(),
            _ => None,
        }
    }
}

/// Generated text inside one element of an array.
pub(super) trait HasContent {
    fn content(&self) -> u64;
}

/// An array whose elements are counted and whose generated text is summed, without keeping the elements.
pub(super) struct Seq<T> {
    pub(super) present: bool,
    pub(super) n: u64,
    pub(super) content: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T> Default for Seq<T> {
    fn default() -> Self {
        Seq {
            present: false,
            n: 0,
            content: 0,
            _t: PhantomData,
        }
    }
}

struct SeqV<T>(PhantomData<fn() -> T>);

impl<'de, T: Deserialize<'de> + HasContent> Visitor<'de> for SeqV<T> {
    type Value = Seq<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Seq::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut s = Seq {
            present: true,
            ..Seq::default()
        };
        while let Some(e) = a.next_element::<Field<T>>()? {
            s.n += 1;
            if let Field::Obj(t) = e {
                s.content = s.content.saturating_add(t.content());
            }
        }
        Ok(s)
    }
}

impl<'de, T: Deserialize<'de> + HasContent> Deserialize<'de> for Seq<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SeqV(PhantomData))
    }
}

/// `usage` in any of its shapes: chat/completions/embeddings (`prompt_tokens`, `completion_tokens`) or
/// Responses/images (`input_tokens`, `output_tokens`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawUsage {
    prompt_tokens: Tok,
    completion_tokens: Tok,
    input_tokens: Tok,
    output_tokens: Tok,
    total_tokens: Tok,
}

impl RawUsage {
    /// A usage counts as reported only with its prompt side and either its completion side or a total
    /// (embeddings report only `prompt_tokens` and `total_tokens`).
    fn to_usage(&self) -> Option<Usage> {
        let prompt = self.prompt_tokens.0.or(self.input_tokens.0)?;
        let completion = match self.completion_tokens.0.or(self.output_tokens.0) {
            Some(c) => c,
            None => self.total_tokens.0?.saturating_sub(prompt),
        };
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            images: 0,
        })
    }
}

/// One SSE data JSON: the union of the fields metering reads from chat, completions, Responses and images
/// events.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Chunk<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) ty: Text<'a>,
    #[serde(borrow)]
    pub(super) model: Text<'a>,
    pub(super) choices: Seq<Choice>,
    pub(super) usage: Field<RawUsage>,
    pub(super) delta: StrLen,
    #[serde(borrow)]
    pub(super) response: Field<RespEnv<'a>>,
}

/// The `response` object of Responses events.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RespEnv<'a> {
    #[serde(borrow)]
    pub(super) model: Text<'a>,
    pub(super) usage: Field<RawUsage>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Choice {
    delta: Field<Delta>,
    /// Completions.
    text: StrLen,
}

impl HasContent for Choice {
    fn content(&self) -> u64 {
        let d = match &self.delta {
            Field::Obj(d) => d.content(),
            _ => 0,
        };
        d.saturating_add(self.text.0)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta {
    content: StrLen,
    refusal: StrLen,
    /// Reasoning text of OpenAI-compatible servers (billed as completion tokens).
    reasoning_content: StrLen,
    tool_calls: Seq<ToolCall>,
    /// The legacy single function call.
    function_call: Field<FnCall>,
}

impl HasContent for Delta {
    fn content(&self) -> u64 {
        let f = match &self.function_call {
            Field::Obj(f) => f.arguments.0,
            _ => 0,
        };
        self.content
            .0
            .saturating_add(self.refusal.0)
            .saturating_add(self.reasoning_content.0)
            .saturating_add(self.tool_calls.content)
            .saturating_add(f)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCall {
    function: Field<FnCall>,
}

impl HasContent for ToolCall {
    fn content(&self) -> u64 {
        match &self.function {
            Field::Obj(f) => f.arguments.0,
            _ => 0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FnCall {
    arguments: StrLen,
}
