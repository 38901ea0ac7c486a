//! How to reach and authenticate to a Kafka cluster: the part of a trigger that decides which
//! client it can share (keda-compat §8.2, §8.3).

use std::collections::BTreeMap;

use crate::secret::Secret;

/// Brokers and security settings of a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaConnection {
    /// `bootstrapServers`, in the order given.
    pub bootstrap_servers: Vec<String>,
    /// `tls: enable` and its material; `None` for plaintext connections.
    pub tls: Option<Tls>,
    /// The SASL mechanism and its credentials.
    pub sasl: Sasl,
}

/// TLS settings (`tls: enable`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tls {
    /// `ca`: PEM CA certificates added to the system roots.
    pub ca: Option<Secret>,
    /// `cert` + `key` (+ `keyPassword`): a client certificate.
    pub client_cert: Option<ClientCert>,
    /// `unsafeSsl`: skip server certificate verification (`kafka` only).
    pub unsafe_ssl: bool,
}

/// A client certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCert {
    /// `cert`: PEM certificate.
    pub cert: Secret,
    /// `key`: PEM private key, possibly encrypted.
    pub key: Secret,
    /// `keyPassword`: decrypts an encrypted `key`.
    pub key_password: Option<Secret>,
}

/// SASL mechanism with its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sasl {
    /// `sasl: none` (or unset).
    None,
    /// `sasl: plaintext` (SASL/PLAIN).
    Plain(Credentials),
    /// `sasl: scram_sha256`.
    ScramSha256(Credentials),
    /// `sasl: scram_sha512`.
    ScramSha512(Credentials),
    /// `sasl: oauthbearer` with `saslTokenProvider: bearer` (client-credentials grant).
    OAuthBearer(OAuthBearer),
    /// `sasl: gssapi` (Kerberos).
    Gssapi(Gssapi),
}

impl Sasl {
    /// The `sasl` value as written in manifests.
    pub fn keda_name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Plain(_) => "plaintext",
            Self::ScramSha256(_) => "scram_sha256",
            Self::ScramSha512(_) => "scram_sha512",
            Self::OAuthBearer(_) => "oauthbearer",
            Self::Gssapi(_) => "gssapi",
        }
    }
}

/// Username and password.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: Secret,
}

/// OAuth 2 client-credentials token provider for SASL/OAUTHBEARER.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OAuthBearer {
    /// `username`: the OAuth client id.
    pub client_id: String,
    /// `password`: the OAuth client secret.
    pub client_secret: Secret,
    /// `oauthTokenEndpointUri`.
    pub token_endpoint_uri: String,
    /// `scopes`, split on `,` with no trimming (as KEDA).
    pub scopes: Vec<String>,
    /// `oauthExtensions`: SASL extensions sent with the token.
    pub extensions: BTreeMap<String, String>,
}

/// Kerberos settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gssapi {
    /// `username`: the principal's user part.
    pub username: String,
    /// Exactly one of `password` and `keytab`.
    pub credential: GssapiCredential,
    /// `realm`.
    pub realm: String,
    /// `kerberosConfig`: krb5.conf contents.
    pub kerberos_config: String,
    /// `kerberosServiceName`, default `kafka`.
    pub service_name: String,
    /// `kerberosDisableFAST`.
    pub disable_fast: bool,
}

/// How a Kerberos principal authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GssapiCredential {
    /// `password`.
    Password(Secret),
    /// `keytab`: the keytab file's contents (base64 in KEDA's docs; passed through as given).
    Keytab(Secret),
}
