//! GSSAPI (Kerberos) without tenant text in a shell.
//!
//! librdkafka gets Kerberos tickets by running `sasl.kerberos.kinit.cmd` through `/bin/sh`, after
//! substituting `%{sasl.kerberos.principal}` and friends into it. The principal is built from a
//! tenant's `username` and `realm`, so the default command is a shell injection (a username of
//! `x;touch /tmp/pwned;` runs `touch`). Here the command librdkafka runs holds only paths this
//! process chose, quoted: the jobtide binary's hidden `kafka kinit` helper and a private file
//! naming the principal, keytab and krb5.conf. The helper ([`run_kinit`]) starts `kinit` with an
//! argument vector, never a shell, and the parser (`jobtide_api`) accepts only conventional
//! principal, realm and service names besides.
//!
//! # Caveats
//! - librdkafka's Kerberos support (Cyrus SASL) keeps tickets in the process's one credential
//!   cache, and the tenant's `kerberosConfig` becomes a krb5.conf that `kinit` obeys (KDC
//!   addresses, cache and keytab locations, plugin modules). Triggers of different tenants in one
//!   process could therefore use each other's tickets: the operator refuses GSSAPI unless started
//!   with `--enable-gssapi` (one trust domain per operator), see docs/security.md.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use serde::{Deserialize, Serialize};

/// Whether, and how, clients of this process may use GSSAPI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GssapiSupport {
    /// GSSAPI triggers fail with [`crate::client_config::ConfigError::GssapiDisabled`].
    #[default]
    Disabled,
    /// Tickets come from this helper.
    Kinit(KinitHelper),
}

/// The command librdkafka runs for a ticket: `program args… SPEC_FILE`, where `program` and
/// `args` are chosen by this process (the jobtide binary and `kafka kinit`), never by a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinitHelper {
    /// The helper program (absolute path).
    pub program: PathBuf,
    /// Arguments before the spec file.
    pub args: Vec<String>,
}

impl KinitHelper {
    /// The running jobtide binary's `kafka kinit` subcommand.
    ///
    /// # Errors
    /// When the path of the running executable can't be found.
    pub fn this_binary() -> std::io::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
            args: vec!["kafka".into(), "kinit".into()],
        })
    }

    /// The `sasl.kerberos.kinit.cmd` text for `spec`: every word single-quoted for `/bin/sh`.
    pub fn command_line(&self, spec: &Path) -> String {
        let mut words = vec![shell_quote(&self.program.to_string_lossy())];
        words.extend(self.args.iter().map(|a| shell_quote(a)));
        words.push(shell_quote(&spec.to_string_lossy()));
        words.join(" ")
    }
}

/// What one `kinit` needs, written by this process to a private file the helper reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KinitSpec {
    /// `username@realm`, validated by the trigger parser.
    pub principal: String,
    /// The keytab file.
    pub keytab: PathBuf,
    /// The krb5.conf file.
    pub krb5_config: PathBuf,
}

/// Why the helper could not get a ticket.
#[derive(Debug, thiserror::Error)]
pub enum KinitError {
    /// The spec file could not be read or parsed.
    #[error("reading the kinit spec {path}: {message}")]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `kinit` could not be started.
    #[error("starting kinit: {0}")]
    Start(#[source] std::io::Error),
}

/// Runs `KINIT -k -t KEYTAB -- PRINCIPAL` with `KRB5_CONFIG` set, as an argument vector (no
/// shell). `kinit` is the program (the CLI passes `kinit`, looked up on `PATH`, or
/// `$JOBTIDE_KINIT`).
///
/// # Errors
/// When the spec can't be read or `kinit` can't be started; `kinit`'s own failure is its exit
/// status.
pub fn run_kinit(spec_path: &Path, kinit: &OsStr) -> Result<ExitStatus, KinitError> {
    let spec_error = |message: String| KinitError::Spec {
        path: spec_path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(spec_path).map_err(|e| spec_error(e.to_string()))?;
    let spec: KinitSpec = serde_json::from_str(&text).map_err(|e| spec_error(e.to_string()))?;
    Command::new(kinit)
        .env("KRB5_CONFIG", &spec.krb5_config)
        .arg("-k")
        .arg("-t")
        .arg(&spec.keytab)
        .arg("--")
        .arg(&spec.principal)
        .status()
        .map_err(KinitError::Start)
}

/// Writes `spec` to a private (0600) temporary file.
pub(crate) fn write_spec(spec: &KinitSpec) -> std::io::Result<tempfile::NamedTempFile> {
    let text = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
    private_file(&text)
}

/// A private (0600) temporary file holding `content`, removed on drop.
pub(crate) fn private_file(content: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new().prefix("jobtide-krb-").tempfile()?;
    file.write_all(content)?;
    file.flush()?;
    Ok(file)
}

/// `word` as one `/bin/sh` word: single quotes, with each `'` written as `'\''`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_keeps_every_byte_literal() {
        for word in [
            "plain",
            "a b",
            "x;touch /tmp/p;",
            "it's",
            "$(id)",
            "`id`",
            "\"q\"",
            "",
        ] {
            let out = Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(word)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }

    #[test]
    fn command_line_quotes_the_program_and_the_spec() {
        let helper = KinitHelper {
            program: "/opt/job tide/jobtide".into(),
            args: vec!["kafka".into(), "kinit".into()],
        };
        assert_eq!(
            helper.command_line(Path::new("/tmp/jobtide-krb-x")),
            "'/opt/job tide/jobtide' 'kafka' 'kinit' '/tmp/jobtide-krb-x'"
        );
    }

    #[test]
    fn the_helper_passes_the_principal_as_one_argument_after_a_double_dash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = dir.path().join("argv");
        let fake = dir.path().join("kinit");
        jobtide_testpeers::script::write_executable(
            &fake,
            &format!(
                "#!/bin/sh\nprintf '%s\\n' \"$KRB5_CONFIG\" \"$@\" > '{}'\n",
                record.display()
            ),
        );
        let spec = KinitSpec {
            principal: "x;touch /tmp/pwned;@R".into(),
            keytab: dir.path().join("kt"),
            krb5_config: dir.path().join("krb5.conf"),
        };
        let spec_file = write_spec(&spec).expect("spec");
        let status = run_kinit(spec_file.path(), fake.as_os_str()).expect("runs");
        assert!(status.success());
        let argv = std::fs::read_to_string(&record).expect("fake kinit ran");
        let lines: Vec<&str> = argv.lines().collect();
        assert_eq!(
            lines,
            [
                spec.krb5_config.to_str().unwrap_or_default(),
                "-k",
                "-t",
                spec.keytab.to_str().unwrap_or_default(),
                "--",
                "x;touch /tmp/pwned;@R",
            ]
        );
    }
}
