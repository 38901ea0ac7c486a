//! Label selectors (equality- and set-based) and the field selectors jobtide uses.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn set_values(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// The real server's checks of one requirement: a qualified-name key, label values.
fn check(requirement: &Requirement, part: &str) -> Result<(), String> {
    use crate::validation::{label_key, label_value};
    let (key, values): (&str, &[String]) = match requirement {
        Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, std::slice::from_ref(v)),
        Requirement::In(k, vs) | Requirement::NotIn(k, vs) => (k, vs),
        Requirement::Exists(k) | Requirement::DoesNotExist(k) => (k, &[]),
    };
    if !label_key(key) {
        return Err(format!(
            "unable to parse requirement: {part:?}: key: Invalid value: {key:?}: name part must \
             consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
             alphanumeric character"
        ));
    }
    if let Some(value) = values.iter().find(|v| !label_value(v)) {
        return Err(format!(
            "unable to parse requirement: {part:?}: values: Invalid value: {value:?}: a valid \
             label must be an empty string or consist of alphanumeric characters, '-', '_' or \
             '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = part.strip_prefix('!') {
                Requirement::DoesNotExist(key.trim().to_owned())
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, values)) = part.split_once(" notin ") {
                Requirement::NotIn(
                    key.trim().to_owned(),
                    set_values(values)
                        .ok_or_else(|| format!("unable to parse requirement: {part}"))?,
                )
            } else if let Some((key, values)) = part.split_once(" in ") {
                Requirement::In(
                    key.trim().to_owned(),
                    set_values(values)
                        .ok_or_else(|| format!("unable to parse requirement: {part}"))?,
                )
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            {
                Requirement::Exists(part.to_owned())
            } else {
                return Err(format!("unable to parse requirement: {part}"));
            };
            check(&requirement, part)?;
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Whether an object with these labels matches.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector over the supported fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `metadata.name=x,status.phase!=Running`; `pods` additionally allow `status.phase`
    /// and `spec.nodeName` (how a kubelet watches the pods bound to its node; `spec.nodeName=`
    /// matches the unbound ones).
    pub fn parse(text: &str, kind: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            let supported = matches!(field, "metadata.name" | "metadata.namespace")
                || (kind == "Pod" && matches!(field, "status.phase" | "spec.nodeName"))
                || (kind == "Event" && crate::events::is_event_field("", field))
                || (kind == "Event" && crate::events::is_event_field("events.k8s.io", field));
            if !supported {
                return Err(format!(
                    "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                ));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether `object` matches.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = field
                .split('.')
                .try_fold(object, |v, k| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn set_based_and_equality_selectors() {
        let labels = json!({"app": "web", "tier": "front"});
        let labels = labels.as_object();
        for (selector, expected) in [
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing,app in (x,web)", true),
            ("missing notin (a)", true),
        ] {
            assert_eq!(
                LabelSelector::parse(selector).map(|s| s.matches(labels)),
                Ok(expected),
                "{selector}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
    }

    #[test]
    fn malformed_selectors_are_errors_not_match_all_or_match_nothing() {
        for selector in [
            "!!",
            "a=b=c",
            "a!=b!=c",
            "=x",
            "a in (b=c)",
            "-a",
            "a/b/c=d",
        ] {
            assert!(
                LabelSelector::parse(selector).is_err(),
                "{selector} must be refused"
            );
        }
        for selector in ["a=", "example.com/a=b", "a.b_c-d=E.f_g-h"] {
            assert!(LabelSelector::parse(selector).is_ok(), "{selector}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod =
            json!({"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Running"}});
        assert_eq!(
            FieldSelector::parse("status.phase=Running", "Pod").map(|s| s.matches(&pod)),
            Ok(true)
        );
        assert_eq!(
            FieldSelector::parse("metadata.name!=p", "Pod").map(|s| s.matches(&pod)),
            Ok(false)
        );
        assert!(FieldSelector::parse("status.phase=Running", "Job").is_err());
        assert_eq!(
            FieldSelector::parse("spec.nodeName=", "Pod").map(|s| s.matches(&pod)),
            Ok(true),
            "an unbound pod has no node name"
        );
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        assert_eq!(
            FieldSelector::parse("spec.nodeName=n1", "Pod").map(|s| s.matches(&bound)),
            Ok(true)
        );
        assert!(FieldSelector::parse("spec.nodeName=x", "Job").is_err());
    }
}
