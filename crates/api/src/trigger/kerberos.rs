//! jobtide's own checks of the Kerberos names a `kafka` trigger hands to librdkafka and `kinit`
//! (beyond KEDA's, which only require them): a tenant's `username`, `realm` and
//! `kerberosServiceName` never reach a shell (see `jobtide_kafka::kerberos`), and these checks
//! refuse anything that isn't a conventional name besides, so no such value can be read as an
//! option, a second principal or shell syntax by any tool later. The messages never repeat the
//! value: it may come from a Secret.

/// Longest accepted name (MIT Kerberos has no fixed limit; DNS-derived names stay far below).
pub const MAX_NAME_LEN: usize = 255;

/// `username`: one or more `/`-separated components (`user`, `service/host.example.com`) of
/// letters, digits, `.`, `_` and `-`, not starting with `-`.
pub fn check_username(value: &str) -> Result<(), String> {
    check(
        value,
        "a Kerberos principal name (letters, digits, '.', '_', '-', components separated by \
         '/', not starting with '-'; the realm goes in 'realm')",
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'),
    )?;
    if value.split('/').any(str::is_empty) {
        return Err("must not have an empty '/'-separated component".into());
    }
    Ok(())
}

/// `realm`: letters, digits, `.`, `_` and `-`, not starting with `-` or `.`.
pub fn check_realm(value: &str) -> Result<(), String> {
    check(
        value,
        "a Kerberos realm (letters, digits, '.', '_', '-', not starting with '-' or '.')",
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
    )?;
    if value.starts_with('.') {
        return Err("must not start with '.'".into());
    }
    Ok(())
}

/// `kerberosServiceName`: letters, digits, `.`, `_` and `-`, not starting with `-`.
pub fn check_service_name(value: &str) -> Result<(), String> {
    check(
        value,
        "a Kerberos service name (letters, digits, '.', '_', '-', not starting with '-')",
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
    )
}

fn check(value: &str, what: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} characters long"));
    }
    if value.starts_with('-') || !value.chars().all(allowed) {
        return Err(format!("must be {what}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventional_names_pass() {
        for name in [
            "kafka-client",
            "svc/host.example.com",
            "a_b.c",
            "HTTP/web-1",
        ] {
            assert_eq!(check_username(name), Ok(()), "{name}");
        }
        for realm in ["EXAMPLE.COM", "corp-1.example.org"] {
            assert_eq!(check_realm(realm), Ok(()), "{realm}");
        }
        assert_eq!(check_service_name("kafka"), Ok(()));
    }

    #[test]
    fn shell_syntax_options_and_extra_principals_are_refused() {
        let hostile = [
            "x;touch /tmp/pwned;",
            "$(id)",
            "`id`",
            "a b",
            "a|b",
            "a&b",
            "a>b",
            "-V",
            "a@OTHER.REALM",
            "a\nb",
            "a'b",
            "a\"b",
            "%{sasl.kerberos.keytab}",
            "",
            "a//b",
            "/a",
        ];
        for value in hostile {
            assert!(check_username(value).is_err(), "username {value:?}");
            assert!(check_realm(value).is_err(), "realm {value:?}");
            assert!(check_service_name(value).is_err(), "service name {value:?}");
        }
        assert!(check_realm(".EXAMPLE").is_err());
        assert!(check_username(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn messages_never_repeat_the_value() {
        let marker = "MARKER;rm -rf";
        for error in [
            check_username(marker),
            check_realm(marker),
            check_service_name(marker),
        ] {
            let message = error.expect_err("refused");
            assert!(!message.contains("MARKER"), "{message}");
        }
    }
}
