//! AWS credentials for MSK IAM (keda-compat §8.4). jobtide cannot authenticate with MSK IAM yet;
//! this check exists so that `validate` reports KEDA's own errors first, and a KEDA-valid MSK
//! trigger as "not supported by jobtide yet".

use super::params::{AUTH, META, Params};

/// KEDA's order: a role ARN, else an access key pair from auth params, else from metadata/env.
pub(super) fn authorization(p: &mut Params<'_>) -> Result<(), String> {
    if p.optional("awsRoleArn", AUTH).is_some() {
        return Ok(());
    }
    let auth_key = p
        .optional("awsAccessKeyID", AUTH)
        .or_else(|| p.optional("awsAccessKeyId", AUTH));
    if auth_key.is_some() {
        return match p.optional("awsSecretAccessKey", AUTH) {
            Some(_) => Ok(()),
            None => Err("awsSecretAccessKey not found".into()),
        };
    }
    let meta_key = p.optional("awsAccessKeyID", META).or_else(|| {
        p.from_env("awsAccessKeyID")
            .map(|s| s.expose().trim().to_owned())
            .filter(|s| !s.is_empty())
    });
    if meta_key.is_none() {
        return Err("awsAccessKeyID not found".into());
    }
    let secret = p
        .from_env("awsSecretAccessKey")
        .is_some_and(|s| !s.is_blank());
    if secret {
        Ok(())
    } else {
        Err("awsSecretAccessKey not found".into())
    }
}
