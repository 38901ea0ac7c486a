//! A trigger's [`KafkaConnection`] as librdkafka configuration (keda-compat §8.2, §8.3).
//!
//! The resulting [`ClientConfig`] holds secrets: never `Debug`-print or log it.

use jobtide_api::trigger::connection::{GssapiCredential, KafkaConnection, Sasl};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use thiserror::Error;

use crate::kerberos::{self, GssapiSupport, KinitSpec};

/// Why a connection can't be configured.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// GSSAPI with a password: librdkafka would need the password on a `kinit` command line.
    #[error("sasl gssapi with a password is not supported by jobtide yet; use a keytab")]
    GssapiPassword,
    /// GSSAPI is not enabled in this process (see [`kerberos`] for why the operator needs
    /// `--enable-gssapi`).
    #[error(
        "sasl gssapi is disabled in this process: librdkafka keeps Kerberos tickets in one \
         credential cache per process, so triggers of different tenants would share them; an \
         operator serving a single trust domain can enable it with --enable-gssapi"
    )]
    GssapiDisabled,
    /// librdkafka refused the configuration.
    #[error("creating the Kafka client: {0}")]
    Client(String),
    /// Writing the keytab or krb5.conf to a private temporary file failed.
    #[error("writing Kerberos material to a temporary file: {0}")]
    KerberosFile(#[source] std::io::Error),
}

/// Temporary files a configuration refers to (keytab, krb5.conf); removed on drop.
#[derive(Debug, Default)]
pub struct ConfigFiles {
    files: Vec<tempfile::NamedTempFile>,
}

/// How a client reads end offsets: the trigger's `isolationLevel` (high watermark by default,
/// as KEDA; the last stable offset with `read_committed`).
pub type Isolation = jobtide_api::trigger::IsolationLevel;

/// The librdkafka configuration for `connection`.
///
/// No tenant-controlled value reaches a shell: GSSAPI tickets come from `gssapi`'s helper, whose
/// command line holds only paths this process chose (see [`kerberos`]).
pub fn client_config(
    connection: &KafkaConnection,
    isolation: Isolation,
    gssapi: &GssapiSupport,
) -> Result<(ClientConfig, ConfigFiles), ConfigError> {
    let mut config = ClientConfig::new();
    let mut files = ConfigFiles::default();
    config
        .set("bootstrap.servers", connection.bootstrap_servers.join(","))
        .set("client.id", "jobtide")
        .set(
            "isolation.level",
            match isolation {
                Isolation::ReadUncommitted => "read_uncommitted",
                Isolation::ReadCommitted => "read_committed",
            },
        )
        // librdkafka reconnects with exponential backoff on its own (D11): never rebuild.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "10000")
        .set("topic.metadata.refresh.interval.ms", "60000")
        .set_log_level(RDKafkaLogLevel::Warning);
    let tls = connection.tls.is_some();
    if let Some(tls) = &connection.tls {
        if let Some(ca) = &tls.ca {
            config.set("ssl.ca.pem", ca.expose());
        }
        if let Some(client) = &tls.client_cert {
            config.set("ssl.certificate.pem", client.cert.expose());
            config.set("ssl.key.pem", client.key.expose());
            if let Some(password) = &client.key_password {
                config.set("ssl.key.password", password.expose());
            }
        }
        if tls.unsafe_ssl {
            config.set("enable.ssl.certificate.verification", "false");
            config.set("ssl.endpoint.identification.algorithm", "none");
        }
    }
    let sasl = !matches!(connection.sasl, Sasl::None);
    config.set(
        "security.protocol",
        match (sasl, tls) {
            (false, false) => "plaintext",
            (false, true) => "ssl",
            (true, false) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        },
    );
    match &connection.sasl {
        Sasl::None => {}
        Sasl::Plain(c) | Sasl::ScramSha256(c) | Sasl::ScramSha512(c) => {
            let mechanism = match &connection.sasl {
                Sasl::Plain(_) => "PLAIN",
                Sasl::ScramSha256(_) => "SCRAM-SHA-256",
                _ => "SCRAM-SHA-512",
            };
            config
                .set("sasl.mechanism", mechanism)
                .set("sasl.username", &c.username)
                .set("sasl.password", c.password.expose());
        }
        Sasl::OAuthBearer(oauth) => {
            config
                .set("sasl.mechanism", "OAUTHBEARER")
                .set("sasl.oauthbearer.method", "oidc")
                .set("sasl.oauthbearer.client.id", &oauth.client_id)
                .set(
                    "sasl.oauthbearer.client.secret",
                    oauth.client_secret.expose(),
                )
                .set(
                    "sasl.oauthbearer.token.endpoint.url",
                    &oauth.token_endpoint_uri,
                );
            let scopes: Vec<&str> = oauth
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            if !scopes.is_empty() {
                config.set("sasl.oauthbearer.scope", scopes.join(" "));
            }
            if !oauth.extensions.is_empty() {
                let extensions: Vec<String> = oauth
                    .extensions
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                config.set("sasl.oauthbearer.extensions", extensions.join(","));
            }
        }
        Sasl::Gssapi(settings) => {
            let GssapiSupport::Kinit(helper) = gssapi else {
                return Err(ConfigError::GssapiDisabled);
            };
            let GssapiCredential::Keytab(keytab) = &settings.credential else {
                return Err(ConfigError::GssapiPassword);
            };
            let keytab_file = kerberos::private_file(keytab.expose().as_bytes())
                .map_err(ConfigError::KerberosFile)?;
            let krb5_file = kerberos::private_file(settings.kerberos_config.as_bytes())
                .map_err(ConfigError::KerberosFile)?;
            let principal = format!("{}@{}", settings.username, settings.realm);
            let spec_file = kerberos::write_spec(&KinitSpec {
                principal: principal.clone(),
                keytab: keytab_file.path().to_owned(),
                krb5_config: krb5_file.path().to_owned(),
            })
            .map_err(ConfigError::KerberosFile)?;
            config
                .set("sasl.mechanism", "GSSAPI")
                .set("sasl.kerberos.service.name", &settings.service_name)
                .set("sasl.kerberos.principal", &principal)
                .set(
                    "sasl.kerberos.keytab",
                    keytab_file.path().display().to_string(),
                )
                .set(
                    "sasl.kerberos.kinit.cmd",
                    helper.command_line(spec_file.path()),
                );
            files.files.extend([keytab_file, krb5_file, spec_file]);
        }
    }
    Ok((config, files))
}

#[cfg(test)]
mod tests {
    use jobtide_api::secret::Secret;
    use jobtide_api::trigger::connection::{ClientCert, Credentials, Gssapi, OAuthBearer, Tls};

    use super::*;

    fn connection(sasl: Sasl, tls: Option<Tls>) -> KafkaConnection {
        KafkaConnection {
            bootstrap_servers: vec!["a:9092".into(), "b:9092".into()],
            tls,
            sasl,
        }
    }

    fn get<'a>(config: &'a ClientConfig, key: &str) -> Option<&'a str> {
        config.get(key)
    }

    #[test]
    fn plaintext_without_security() {
        let (config, _) = client_config(
            &connection(Sasl::None, None),
            Isolation::default(),
            &GssapiSupport::Disabled,
        )
        .expect("config");
        assert_eq!(get(&config, "bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(get(&config, "security.protocol"), Some("plaintext"));
        assert_eq!(get(&config, "isolation.level"), Some("read_uncommitted"));
    }

    #[test]
    fn scram_over_tls_with_client_certificate() {
        let tls = Tls {
            ca: Some(Secret::new("CA")),
            client_cert: Some(ClientCert {
                cert: Secret::new("C"),
                key: Secret::new("K"),
                key_password: Some(Secret::new("P")),
            }),
            unsafe_ssl: true,
        };
        let sasl = Sasl::ScramSha512(Credentials {
            username: "u".into(),
            password: Secret::new("pw"),
        });
        let (config, _) = client_config(
            &connection(sasl, Some(tls)),
            Isolation::ReadCommitted,
            &GssapiSupport::Disabled,
        )
        .expect("config");
        for (key, value) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "pw"),
            ("ssl.ca.pem", "CA"),
            ("ssl.certificate.pem", "C"),
            ("ssl.key.pem", "K"),
            ("ssl.key.password", "P"),
            ("enable.ssl.certificate.verification", "false"),
            ("isolation.level", "read_committed"),
        ] {
            assert_eq!(get(&config, key), Some(value), "{key}");
        }
    }

    #[test]
    fn oauthbearer_uses_librdkafkas_oidc_client_credentials() {
        let sasl = Sasl::OAuthBearer(OAuthBearer {
            client_id: "id".into(),
            client_secret: Secret::new("s"),
            token_endpoint_uri: "https://idp/token".into(),
            scopes: vec!["a".into(), "b".into()],
            extensions: [("logicalCluster".to_owned(), "lkc".to_owned())].into(),
        });
        let (config, _) = client_config(
            &connection(sasl, None),
            Isolation::default(),
            &GssapiSupport::Disabled,
        )
        .expect("config");
        assert_eq!(get(&config, "security.protocol"), Some("sasl_plaintext"));
        assert_eq!(get(&config, "sasl.oauthbearer.method"), Some("oidc"));
        assert_eq!(get(&config, "sasl.oauthbearer.scope"), Some("a b"));
        assert_eq!(
            get(&config, "sasl.oauthbearer.extensions"),
            Some("logicalCluster=lkc")
        );
    }

    fn gssapi(username: &str, credential: GssapiCredential) -> Sasl {
        Sasl::Gssapi(Gssapi {
            username: username.into(),
            credential,
            realm: "EXAMPLE.COM".into(),
            kerberos_config: "[libdefaults]".into(),
            service_name: "kafka".into(),
            disable_fast: false,
        })
    }

    fn helper() -> GssapiSupport {
        GssapiSupport::Kinit(kerberos::KinitHelper {
            program: "/usr/local/bin/jobtide".into(),
            args: vec!["kafka".into(), "kinit".into()],
        })
    }

    #[test]
    fn gssapi_keytab_goes_to_a_private_file_and_password_is_refused() {
        let keytab = GssapiCredential::Keytab(Secret::new("KT"));
        let (config, files) = client_config(
            &connection(gssapi("svc", keytab), None),
            Isolation::default(),
            &helper(),
        )
        .expect("config");
        assert_eq!(
            get(&config, "sasl.kerberos.principal"),
            Some("svc@EXAMPLE.COM")
        );
        let keytab = get(&config, "sasl.kerberos.keytab")
            .unwrap_or_default()
            .to_owned();
        assert_eq!(std::fs::read_to_string(&keytab).ok().as_deref(), Some("KT"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&keytab).expect("keytab").permissions(),
        );
        assert_eq!(mode & 0o077, 0, "keytab readable by others: {mode:o}");
        drop(files);
        assert!(
            !std::path::Path::new(&keytab).exists(),
            "removed with the config files"
        );
        let password = GssapiCredential::Password(Secret::new("p"));
        assert!(matches!(
            client_config(
                &connection(gssapi("svc", password), None),
                Isolation::default(),
                &helper()
            ),
            Err(ConfigError::GssapiPassword)
        ));
    }

    #[test]
    fn gssapi_is_refused_unless_this_process_enabled_it() {
        let keytab = GssapiCredential::Keytab(Secret::new("KT"));
        let error = client_config(
            &connection(gssapi("svc", keytab), None),
            Isolation::default(),
            &GssapiSupport::Disabled,
        )
        .err();
        assert!(
            matches!(error, Some(ConfigError::GssapiDisabled)),
            "{error:?}"
        );
    }

    #[test]
    fn the_kinit_command_holds_no_tenant_text() {
        // The parser refuses such a username; this checks the layer below it on its own.
        let hostile = "x;touch /tmp/pwned;$(id)`id`%{sasl.kerberos.keytab}";
        let keytab = GssapiCredential::Keytab(Secret::new("KT"));
        let (config, _files) = client_config(
            &connection(gssapi(hostile, keytab), None),
            Isolation::default(),
            &helper(),
        )
        .expect("config");
        let command = get(&config, "sasl.kerberos.kinit.cmd").unwrap_or_default();
        assert!(
            command.starts_with("'/usr/local/bin/jobtide' 'kafka' 'kinit' '"),
            "{command}"
        );
        for fragment in ["touch", "pwned", "$(", "`", "%{", "EXAMPLE"] {
            assert!(!command.contains(fragment), "{fragment} in {command}");
        }
    }
}
