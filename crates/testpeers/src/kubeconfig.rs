//! Kubeconfig files for the control plane's clients.

use std::path::Path;

use crate::pki::KeyPair;
use crate::{PeerError, io};

/// How a kubeconfig's user authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// A client certificate (its subject is the user, O its groups).
    Certificate(&'a KeyPair),
    /// A bearer token (a ServiceAccount's, from the TokenRequest API).
    Token(&'a str),
    /// None: anonymous (an HTTP server such as the embedded one; kubectl asks an HTTPS server
    /// for a password instead).
    Anonymous,
}

/// Writes a kubeconfig at `path` for `server`, trusting `ca` (or, with `None`, any certificate:
/// for the components' self-signed health endpoints).
pub fn write(
    path: &Path,
    server: &str,
    ca: Option<&Path>,
    credentials: Credentials<'_>,
) -> Result<(), PeerError> {
    // JSON strings are YAML double-quoted scalars: paths and tokens are written escaped.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let path_str = |p: &Path| quote(&p.to_string_lossy());
    let trust = match ca {
        Some(ca) => format!("certificate-authority: {}", path_str(ca)),
        None => "insecure-skip-tls-verify: true".to_owned(),
    };
    let user = match credentials {
        Credentials::Certificate(pair) => format!(
            "  user:\n    client-certificate: {}\n    client-key: {}",
            path_str(&pair.cert),
            path_str(&pair.key)
        ),
        Credentials::Token(token) => format!("  user:\n    token: {}", quote(token)),
        Credentials::Anonymous => "  user: {}".to_owned(),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: peer\n  cluster:\n    server: {}\n    {trust}\n\
         users:\n- name: peer\n{user}\ncontexts:\n- name: peer\n  context:\n    cluster: peer\n    user: peer\n\
         current-context: peer\n",
        quote(server)
    );
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}
