//! The control plane's certificates and keys, made by the `openssl` CLI (as the Apache Kafka
//! peer's are): one CA for serving and client certificates, ECDSA P-256 keys, valid a week.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{PeerError, io, run};

/// The serving certificate's names: loopback, and what in-cluster clients would use.
const SERVING_NAMES: &str = "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
                             DNS:kubernetes.default.svc,IP:10.96.0.1";

/// A certificate and its key (PEM files).
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, unencrypted).
    pub key: PathBuf,
}

/// Every certificate and key the control plane uses.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA: signs the serving and the client certificates (`--client-ca-file`).
    pub ca: KeyPair,
    /// kube-apiserver's serving certificate, for [`SERVING_NAMES`].
    pub serving: KeyPair,
    /// `O=system:masters`: the admin.
    pub admin: KeyPair,
    /// `CN=system:kube-controller-manager`.
    pub controller_manager: KeyPair,
    /// `CN=system:kube-scheduler`.
    pub scheduler: KeyPair,
    /// The service-account token signing key (private) …
    pub service_account_key: PathBuf,
    /// … and its public half (`--service-account-key-file`).
    pub service_account_public: PathBuf,
    /// The extensions file the certificates are signed with (`[server]`, `[client]`).
    extensions: PathBuf,
    /// The directory everything is in.
    dir: PathBuf,
}

impl Pki {
    /// Makes everything in `dir`.
    pub fn make(dir: &Path) -> Result<Self, PeerError> {
        let extensions = dir.join("extensions.cnf");
        std::fs::write(
            &extensions,
            format!(
                "[server]\nbasicConstraints = critical,CA:FALSE\n\
                 keyUsage = critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage = serverAuth\nsubjectAltName = {SERVING_NAMES}\n\
                 [client]\nbasicConstraints = critical,CA:FALSE\n\
                 keyUsage = critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage = clientAuth\n"
            ),
        )
        .map_err(io(format!("writing {}", extensions.display())))?;
        let ca = KeyPair {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        };
        run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "7"])
                .args(["-subj", "/CN=jobtide-test-ca", "-keyout"])
                .arg(&ca.key)
                .arg("-out")
                .arg(&ca.cert),
            "openssl: making the CA",
        )?;
        let signer = Signer {
            dir,
            ca: &ca,
            extensions: &extensions,
        };
        let serving = signer.sign("apiserver", "/CN=kube-apiserver", "server", 1)?;
        let admin = signer.sign("admin", "/O=system:masters/CN=jobtide-admin", "client", 2)?;
        let controller_manager = signer.sign(
            "controller-manager",
            "/CN=system:kube-controller-manager",
            "client",
            3,
        )?;
        let scheduler = signer.sign("scheduler", "/CN=system:kube-scheduler", "client", 4)?;
        let service_account_key = dir.join("service-account.key");
        let service_account_public = dir.join("service-account.pub");
        run(
            Command::new("openssl")
                .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-out"])
                .arg(&service_account_key),
            "openssl: making the service-account key",
        )?;
        run(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&service_account_key)
                .arg("-out")
                .arg(&service_account_public),
            "openssl: the service-account public key",
        )?;
        Ok(Self {
            ca,
            serving,
            admin,
            controller_manager,
            scheduler,
            service_account_key,
            service_account_public,
            extensions,
            dir: dir.to_path_buf(),
        })
    }

    /// A client certificate for node `node`: `CN=system:node:<node>`, `O=system:nodes` — the
    /// identity a kubelet has, which the Node authorizer and the NodeRestriction admission
    /// plugin confine to its own Node, Lease and the pods bound to it.
    ///
    /// # Panics
    /// When `node` isn't a DNS subdomain (it names files and goes into the subject).
    pub fn node(&self, node: &str, serial: u32) -> Result<KeyPair, PeerError> {
        assert!(
            !node.is_empty()
                && node.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'.'),
            "not a node name: {node:?}"
        );
        Signer {
            dir: &self.dir,
            ca: &self.ca,
            extensions: &self.extensions,
        }
        .sign(
            &format!("node-{node}"),
            &format!("/O=system:nodes/CN=system:node:{node}"),
            "client",
            serial,
        )
    }
}

struct Signer<'a> {
    dir: &'a Path,
    ca: &'a KeyPair,
    extensions: &'a Path,
}

impl Signer<'_> {
    /// A new key and a certificate for `subject` with the `[section]` extensions.
    fn sign(
        &self,
        name: &str,
        subject: &str,
        section: &str,
        serial: u32,
    ) -> Result<KeyPair, PeerError> {
        let pair = KeyPair {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        let csr = self.dir.join(format!("{name}.csr"));
        run(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args([
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-subj",
                    subject,
                    "-keyout",
                ])
                .arg(&pair.key)
                .arg("-out")
                .arg(&csr),
            &format!("openssl: {name}'s key and request"),
        )?;
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "7", "-set_serial"])
                .arg(serial.to_string())
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&self.ca.cert)
                .arg("-CAkey")
                .arg(&self.ca.key)
                .arg("-extfile")
                .arg(self.extensions)
                .args(["-extensions", section, "-out"])
                .arg(&pair.cert),
            &format!("openssl: signing {name}'s certificate"),
        )?;
        Ok(pair)
    }
}
