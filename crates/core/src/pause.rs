//! The `autoscaling.keda.sh/paused` annotation (keda-compat §1.4, §5.4).

/// The annotation that pauses a ScaledJob.
pub const PAUSED_ANNOTATION: &str = "autoscaling.keda.sh/paused";

/// Whether a ScaledJob with this annotation value is paused: absent or a false spelling of Go's
/// `strconv.ParseBool` (`0 f F FALSE false False`) is not paused; a true spelling **or a value
/// that doesn't parse** is paused (KEDA ≥ 2.13).
pub fn is_paused(annotation: Option<&str>) -> bool {
    match annotation {
        None | Some("0" | "f" | "F" | "FALSE" | "false" | "False") => false,
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bool_spellings_and_unparsable_values() {
        for (value, paused) in [
            (None, false),
            (Some("false"), false),
            (Some("0"), false),
            (Some("F"), false),
            (Some("False"), false),
            (Some("true"), true),
            (Some("1"), true),
            (Some("T"), true),
            (Some("TRUE"), true),
            (Some("yes"), true),
            (Some(""), true),
            (Some(" false"), true),
        ] {
            assert_eq!(is_paused(value), paused, "annotation {value:?}");
        }
    }
}
