//! KEDA's generic parameter resolution (keda-compat §6.1): each parameter has an ordered list of
//! sources; the first whose value, trimmed, is non-empty wins; field errors are collected and
//! parsing goes on, so every field that did parse is filled.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::ParamError;
use crate::secret::Secret;

/// Where a parameter may come from, in KEDA's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The trigger's `metadata`.
    TriggerMetadata,
    /// The trigger's authentication (`authParams`).
    AuthParams,
    /// The env of the `envSourceContainerName` container, keyed by `metadata["<name>FromEnv"]`.
    ResolvedEnv,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TriggerMetadata => "triggerMetadata",
            Self::AuthParams => "authParams",
            Self::ResolvedEnv => "resolvedEnv",
        })
    }
}

/// Metadata only.
pub const META: &[Source] = &[Source::TriggerMetadata];
/// Metadata, then the env named by `<name>FromEnv`.
pub const META_ENV: &[Source] = &[Source::TriggerMetadata, Source::ResolvedEnv];
/// Metadata, then auth params.
pub const META_AUTH: &[Source] = &[Source::TriggerMetadata, Source::AuthParams];
/// Auth params only.
pub const AUTH: &[Source] = &[Source::AuthParams];

/// A parameter's value and its source.
struct Found {
    value: String,
    source: Source,
}

impl Found {
    /// The value as error messages may show it: trigger metadata as is (KEDA's messages);
    /// values from a TriggerAuthentication (Secrets, ConfigMaps) or the container's env never
    /// (they may be secret), as `<redacted>`.
    fn shown(&self) -> &str {
        if self.is_secret() {
            crate::secret::REDACTED
        } else {
            &self.value
        }
    }

    /// A parser's reason, which may quote the value: hidden for secret values.
    fn reason(&self, reason: String) -> String {
        if self.is_secret() {
            "not a valid value".into()
        } else {
            reason
        }
    }

    fn is_secret(&self) -> bool {
        !matches!(self.source, Source::TriggerMetadata)
    }
}

/// The three input maps of one trigger, plus the field errors collected so far.
#[derive(Debug)]
pub struct Params<'a> {
    metadata: &'a BTreeMap<String, String>,
    auth: &'a BTreeMap<String, Secret>,
    env: &'a BTreeMap<String, Secret>,
    /// Field errors in the order the fields were parsed.
    pub errors: Vec<ParamError>,
    /// The parameters whose value was taken from the authentication or the env.
    from_secrets: BTreeSet<String>,
}

impl<'a> Params<'a> {
    /// Parameters over the given maps.
    pub fn new(
        metadata: &'a BTreeMap<String, String>,
        auth: &'a BTreeMap<String, Secret>,
        env: &'a BTreeMap<String, Secret>,
    ) -> Self {
        Self {
            metadata,
            auth,
            env,
            errors: Vec::new(),
            from_secrets: BTreeSet::new(),
        }
    }

    /// The parameters whose value was read from the trigger's authentication or the container's
    /// env (which may come from Secrets): no output may show their values.
    pub fn from_secrets(&self) -> &BTreeSet<String> {
        &self.from_secrets
    }

    /// The raw metadata value (untrimmed), for the few parameters KEDA reads directly.
    pub fn metadata(&self, name: &str) -> Option<&'a str> {
        self.metadata.get(name).map(String::as_str)
    }

    /// The raw auth param value (untrimmed).
    pub fn auth(&mut self, name: &str) -> Option<&'a Secret> {
        let value = self.auth.get(name);
        if value.is_some() {
            self.from_secrets.insert(name.to_owned());
        }
        value
    }

    /// The raw resolved-env value of the variable `metadata["<name>FromEnv"]` names.
    pub fn from_env(&self, name: &str) -> Option<&'a Secret> {
        let key = self.metadata.get(&format!("{name}FromEnv"))?;
        self.env.get(key)
    }

    /// The first non-blank value of `name` among `order`, trimmed.
    pub fn lookup(&mut self, name: &str, order: &[Source]) -> Option<String> {
        self.found(name, order).map(|found| found.value)
    }

    /// Whether the value [`Self::lookup`] finds for `name` comes from the authentication or the
    /// env (and so may not be shown).
    pub fn is_from_secrets(&self, name: &str, order: &[Source]) -> bool {
        self.first(name, order)
            .is_some_and(|found| found.is_secret())
    }

    /// [`Self::lookup`], remembering where the value came from (to keep it out of messages and
    /// views).
    fn found(&mut self, name: &str, order: &[Source]) -> Option<Found> {
        let found = self.first(name, order);
        if found.as_ref().is_some_and(Found::is_secret) {
            self.from_secrets.insert(name.to_owned());
        }
        found
    }

    fn first(&self, name: &str, order: &[Source]) -> Option<Found> {
        order.iter().find_map(|&source| {
            let raw = match source {
                Source::TriggerMetadata => self.metadata.get(name).map(String::as_str),
                Source::AuthParams => self.auth.get(name).map(Secret::expose),
                Source::ResolvedEnv => self.from_env(name).map(Secret::expose),
            };
            raw.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|value| Found {
                    value: value.to_owned(),
                    source,
                })
        })
    }

    /// Whether `name` has a non-blank value in `source`.
    pub fn is_set_in(&self, name: &str, source: Source) -> bool {
        self.first(name, &[source]).is_some()
    }

    fn missing(&mut self, name: &str, order: &[Source]) {
        let order = order
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        self.errors.push(ParamError::new(
            name,
            format!("missing required parameter \"{name}\" in [{order}]"),
        ));
    }

    /// A required string.
    pub fn required(&mut self, name: &str, order: &[Source]) -> Option<String> {
        let value = self.lookup(name, order);
        if value.is_none() {
            self.missing(name, order);
        }
        value
    }

    /// An optional string.
    pub fn optional(&mut self, name: &str, order: &[Source]) -> Option<String> {
        self.lookup(name, order)
    }

    /// A secret (auth params are secret by default; see [`Secret`]).
    pub fn secret(&mut self, name: &str, order: &[Source]) -> Option<Secret> {
        self.lookup(name, order).map(Secret::new)
    }

    /// A comma list with each element trimmed; `None` when absent.
    pub fn list(&mut self, name: &str, order: &[Source], required: bool) -> Option<Vec<String>> {
        match self.lookup(name, order) {
            Some(value) => Some(value.split(',').map(|s| s.trim().to_owned()).collect()),
            None => {
                if required {
                    self.missing(name, order);
                }
                None
            }
        }
    }

    /// An int64 with JSON number rules; `None` (and a field error) when it does not parse.
    pub fn int64(&mut self, name: &str, order: &[Source], default: i64) -> Option<i64> {
        let Some(found) = self.found(name, order) else {
            return Some(default);
        };
        let value = found.shown();
        match parse_go_json_int(&found.value, "int64", i64::MIN.into(), i64::MAX.into()) {
            Ok(parsed) => i64::try_from(parsed).ok(),
            Err(reason) => {
                let reason = found.reason(reason);
                self.errors.push(ParamError::new(
                    name,
                    format!(
                        "unable to set param \"{name}\" value \"{value}\": unable to unmarshal to \
                     field type int64: {reason}"
                    ),
                ));
                None
            }
        }
    }

    /// A bool with Go's `strconv.ParseBool` spellings; `None` (and a field error) when it does
    /// not parse.
    pub fn bool(&mut self, name: &str, order: &[Source], default: bool) -> Option<bool> {
        let Some(found) = self.found(name, order) else {
            return Some(default);
        };
        let value = found.shown();
        match parse_go_bool(&found.value) {
            Some(parsed) => Some(parsed),
            None => {
                self.errors.push(ParamError::new(
                    name,
                    format!(
                        "unable to set param \"{name}\" value \"{value}\": unable to parse boolean \
                     value \"{value}\""
                    ),
                ));
                None
            }
        }
    }

    /// One value of `allowed`, or `default` when absent; `None` (and a field error) otherwise.
    ///
    /// Unlike KEDA, a comma-joined value such as `latest,earliest` is rejected (difference D5).
    pub fn one_of(
        &mut self,
        name: &str,
        order: &[Source],
        default: &'static str,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        let Some(found) = self.found(name, order) else {
            return Some(default);
        };
        if let Some(allowed) = allowed.iter().find(|a| **a == found.value) {
            return Some(allowed);
        }
        let value = found.shown();
        let set = allowed.join(" ");
        let elements_all_allowed = found
            .value
            .split(',')
            .all(|part| allowed.contains(&part.trim()));
        if elements_all_allowed {
            self.errors.push(ParamError::new(
                name,
                format!(
                    "parameter \"{name}\" value \"{value}\" must be exactly one of [{set}]: \
                 comma-separated values are not accepted (KEDA accepts them and then behaves \
                 like neither; jobtide difference D5)"
                ),
            ));
        } else {
            self.errors.push(ParamError::new(
                name,
                format!("parameter \"{name}\" value \"{value}\" must be one of [{set}]"),
            ));
        }
        None
    }

    /// A list of int32 with ranges `a-b` (KEDA's generic slice parser with `rangeSeparator`).
    pub fn int32_ranges(&mut self, name: &str, order: &[Source]) -> Option<Vec<i32>> {
        let found = self.found(name, order)?;
        let value = found.shown();
        let mut out = Vec::new();
        for (i, element) in found.value.split(',').enumerate() {
            let element = element.trim();
            let result = if element.contains('-') {
                parse_generic_range(element)
            } else {
                parse_go_json_int(element, "int32", i32::MIN.into(), i32::MAX.into())
                    .map(|v| vec![v])
            };
            match result {
                Ok(values) => out.extend(values.into_iter().filter_map(|v| i32::try_from(v).ok())),
                Err(reason) => {
                    let reason = found.reason(reason);
                    self.errors.push(ParamError::new(name, format!(
                        "unable to set param \"{name}\" value \"{value}\": slice element {i}: {reason}"
                    )));
                    return None;
                }
            }
        }
        // Overlapping ranges name a partition twice; it counts once.
        Some(each_once(out))
    }
}

/// `ids` with every id after its first occurrence removed (order kept): overlapping
/// `partitionLimitation` ranges (`1-3,2-4`) name a partition once.
pub fn each_once(ids: Vec<i32>) -> Vec<i32> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.into_iter().filter(|id| seen.insert(*id)).collect()
}

fn parse_generic_range(element: &str) -> Result<Vec<i128>, String> {
    let parts: Vec<&str> = element.split('-').collect();
    let [start, end] = parts.as_slice() else {
        return Err(format!("expected format start-end, got \"{element}\""));
    };
    let start = parse_go_json_int(start, "int32", i32::MIN.into(), i32::MAX.into())
        .map_err(|e| format!("unable to parse start value \"{start}\": {e}"))?;
    let end = parse_go_json_int(end, "int32", i32::MIN.into(), i32::MAX.into())
        .map_err(|e| format!("unable to parse end value \"{end}\": {e}"))?;
    if start > end {
        // KEDA expands it to nothing, an empty limitation: silently every partition.
        return Err(format!("range \"{element}\" starts after it ends"));
    }
    if end - start >= MAX_RANGE_LEN {
        return Err(format!(
            "range \"{element}\" spans more than {MAX_RANGE_LEN} partitions (jobtide's limit)"
        ));
    }
    Ok((start..=end).collect())
}

/// The most partitions one range may expand to. KEDA has no limit and would try to allocate
/// `0-2147483647`; a Kafka topic has at most a few hundred thousand partitions in practice.
pub const MAX_RANGE_LEN: i128 = 1_000_000;

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The message Go's JSON scanner gives for invalid input (approximated for numbers).
fn go_json_syntax_error(value: &str) -> String {
    let Some(first) = value.chars().next() else {
        return "unexpected end of JSON input".into();
    };
    let literal = match first {
        't' => Some("true"),
        'f' => Some("false"),
        'n' => Some("null"),
        _ => None,
    };
    if let Some(literal) = literal {
        for (i, c) in value.chars().enumerate() {
            match literal.chars().nth(i) {
                Some(expected) if expected == c => {}
                Some(expected) => {
                    return format!(
                        "invalid character '{c}' in literal {literal} (expecting '{expected}')"
                    );
                }
                None => return format!("invalid character '{c}' after top-level value"),
            }
        }
        return "unexpected end of JSON input".into();
    }
    if first == '-' || first.is_ascii_digit() {
        let numeric_end = value
            .char_indices()
            .find(|(_, c)| !matches!(c, '0'..='9' | '-' | '+' | '.' | 'e' | 'E'))
            .map_or(value.len(), |(i, _)| i);
        let (number, rest) = value.split_at(numeric_end);
        return match rest.chars().next() {
            None => "unexpected end of JSON input".into(),
            Some(c) if serde_json::from_str::<serde_json::Number>(number).is_ok() => {
                format!("invalid character '{c}' after top-level value")
            }
            Some(c) => format!("invalid character '{c}' in numeric literal"),
        };
    }
    format!("invalid character '{first}' looking for beginning of value")
}

/// Go's `json.Unmarshal` of `value` into an integer of `type_name` bounded by `min..=max`,
/// with messages shaped like Go's.
fn parse_go_json_int(value: &str, type_name: &str, min: i128, max: i128) -> Result<i128, String> {
    let parsed: serde_json::Value =
        serde_json::from_str(value).map_err(|_| go_json_syntax_error(value))?;
    let kind = match &parsed {
        serde_json::Value::Number(number) => {
            let as_int = number
                .as_i64()
                .map(i128::from)
                .or_else(|| number.as_u64().map(i128::from));
            return match as_int {
                Some(v) if (min..=max).contains(&v) => Ok(v),
                _ => Err(format!(
                    "json: cannot unmarshal number {value} into Go value of type {type_name}"
                )),
            };
        }
        serde_json::Value::String(_) => "string",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
        serde_json::Value::Null => "null",
    };
    Err(format!(
        "json: cannot unmarshal {kind} into Go value of type {type_name}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(errors: &[ParamError]) -> Vec<String> {
        errors.iter().map(|e| e.message.clone()).collect()
    }

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn secrets(pairs: &[(&str, &str)]) -> BTreeMap<String, Secret> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Secret::new(*v)))
            .collect()
    }

    #[test]
    fn first_non_blank_trimmed_source_wins() {
        let meta = metadata(&[("sasl", "  "), ("topicFromEnv", "TOPIC"), ("topic", "")]);
        let auth = secrets(&[("sasl", "plaintext\n")]);
        let env = secrets(&[("TOPIC", " orders ")]);
        let mut params = Params::new(&meta, &auth, &env);
        assert_eq!(
            params.lookup("sasl", META_AUTH).as_deref(),
            Some("plaintext")
        );
        assert_eq!(params.lookup("topic", META_ENV).as_deref(), Some("orders"));
        assert_eq!(params.lookup("topic", META), None);
    }

    #[test]
    fn values_from_authentication_or_env_never_appear_in_messages() {
        let marker = "MARKER-4711,x";
        let meta = metadata(&[("fromEnvFromEnv", "V"), ("topicFromEnv", "V")]);
        let auth = secrets(&[
            ("sasl", marker),
            ("n", marker),
            ("b", marker),
            ("r", marker),
        ]);
        let env = secrets(&[("V", marker)]);
        let mut params = Params::new(&meta, &auth, &env);
        assert_eq!(params.one_of("sasl", META_AUTH, "none", &["none"]), None);
        assert_eq!(params.int64("n", AUTH, 0), None);
        assert_eq!(params.bool("b", AUTH, false), None);
        assert_eq!(params.int32_ranges("r", AUTH), None);
        assert_eq!(params.int64("fromEnv", META_ENV, 0), None);
        let messages = messages(&params.errors);
        assert_eq!(messages.len(), 5, "{messages:?}");
        for message in &messages {
            assert!(!message.contains("MARKER"), "{message}");
            assert!(message.contains("<redacted>"), "{message}");
        }
        // Trigger metadata is the manifest's own text: KEDA's messages show it.
        let meta = metadata(&[("sasl", "bogus")]);
        let empty = BTreeMap::new();
        let mut params = Params::new(&meta, &empty, &empty);
        assert_eq!(params.one_of("sasl", META_AUTH, "none", &["none"]), None);
        assert!(messages_of(&params)[0].contains("\"bogus\""));
    }

    fn messages_of(params: &Params<'_>) -> Vec<String> {
        messages(&params.errors)
    }

    #[test]
    fn missing_required_names_the_sources() {
        let empty = BTreeMap::new();
        let none = BTreeMap::new();
        let mut params = Params::new(&empty, &none, &none);
        assert_eq!(params.required("consumerGroup", META_ENV), None);
        assert_eq!(
            messages(&params.errors),
            vec!["missing required parameter \"consumerGroup\" in [triggerMetadata resolvedEnv]"]
        );
    }

    #[test]
    fn int64_follows_json_number_rules() {
        let none = BTreeMap::new();
        for (value, expected) in [
            ("50", Some(50)),
            ("-3", Some(-3)),
            ("1.5", None),
            ("+5", None),
            ("ten", None),
            ("\"5\"", None),
            ("99999999999999999999", None),
        ] {
            let meta = metadata(&[("lagThreshold", value)]);
            let mut params = Params::new(&meta, &none, &none);
            assert_eq!(
                params.int64("lagThreshold", META, 10),
                expected,
                "value {value}"
            );
            assert_eq!(
                params.errors.is_empty(),
                expected.is_some(),
                "value {value}"
            );
        }
        for (value, reason) in [
            (
                "ten",
                "invalid character 'e' in literal true (expecting 'r')",
            ),
            (
                "abc",
                "invalid character 'a' looking for beginning of value",
            ),
            ("5x", "invalid character 'x' after top-level value"),
            (
                "1.5",
                "json: cannot unmarshal number 1.5 into Go value of type int64",
            ),
            (
                "\"5\"",
                "json: cannot unmarshal string into Go value of type int64",
            ),
            (
                "true",
                "json: cannot unmarshal bool into Go value of type int64",
            ),
        ] {
            let meta = metadata(&[("lagThreshold", value)]);
            let mut params = Params::new(&meta, &none, &none);
            params.int64("lagThreshold", META, 10);
            assert_eq!(
                messages(&params.errors),
                vec![format!(
                    "unable to set param \"lagThreshold\" value \"{value}\": unable to unmarshal \
                     to field type int64: {reason}"
                )]
            );
        }
    }

    #[test]
    fn bool_accepts_go_spellings_only() {
        for (value, expected) in [
            ("true", Some(true)),
            ("T", Some(true)),
            ("1", Some(true)),
            ("False", Some(false)),
            ("0", Some(false)),
            ("yes", None),
            ("tRUE", None),
        ] {
            assert_eq!(parse_go_bool(value), expected, "value {value}");
        }
    }

    #[test]
    fn enum_rejects_comma_joined_values_d5() {
        let none = BTreeMap::new();
        let meta = metadata(&[("offsetResetPolicy", "latest,earliest")]);
        let mut params = Params::new(&meta, &none, &none);
        assert_eq!(
            params.one_of("offsetResetPolicy", META, "latest", &["latest", "earliest"]),
            None
        );
        assert!(
            params.errors[0]
                .message
                .contains("must be exactly one of [latest earliest]"),
            "{:?}",
            params.errors
        );

        let meta = metadata(&[("offsetResetPolicy", "newest")]);
        let mut params = Params::new(&meta, &none, &none);
        assert_eq!(
            params.one_of("offsetResetPolicy", META, "latest", &["latest", "earliest"]),
            None
        );
        assert_eq!(
            messages(&params.errors),
            vec![
                "parameter \"offsetResetPolicy\" value \"newest\" must be one of [latest earliest]"
            ]
        );
    }

    #[test]
    fn int32_ranges_expand_inclusively() {
        let none = BTreeMap::new();
        let meta = metadata(&[("partitionLimitation", "1-4, 8 ,10-12")]);
        let mut params = Params::new(&meta, &none, &none);
        assert_eq!(
            params.int32_ranges("partitionLimitation", META),
            Some(vec![1, 2, 3, 4, 8, 10, 11, 12])
        );
        let meta = metadata(&[("partitionLimitation", "1-2-3")]);
        let mut params = Params::new(&meta, &none, &none);
        assert_eq!(params.int32_ranges("partitionLimitation", META), None);
        assert_eq!(
            messages(&params.errors),
            vec![
                "unable to set param \"partitionLimitation\" value \"1-2-3\": slice element 0: expected format start-end, got \"1-2-3\""
            ]
        );
    }
}
