//! Secret and ConfigMap volumes for the local job runner: a pod is a local process, so its
//! volumes are directories of files under the runner's volume directory
//! (`<dir>/<namespace>/<pod>/<volume>/`), written before the process starts, removed with the pod.
//!
//! As the kubelet does, a pod whose Secret or ConfigMap (not marked `optional`) doesn't exist yet
//! waits (Pending, `ContainerCreating`) and starts once it does. A process can't see the paths
//! the manifest mounts at (`/var/run/…` is not the pod's), so the runner rewrites environment
//! values naming a mount path (the path itself or below it) to the local directory: that is how
//! `$JOBTIDE_MESSAGE_DIR` finds a dispatched message's files. Only the first container runs and
//! only its mounts count. `items` (key → relative path) are honoured; a path that is absolute or
//! climbs out with `..` is refused, as the API server refuses it.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use crate::env::Lookup;

/// A volume ready to be written: where the manifest mounts it, and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The volume's name.
    pub name: String,
    /// The container's `mountPath`.
    pub mount_path: String,
    /// Relative path → content.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
}

/// Why a pod can't start yet (or at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// A Secret or ConfigMap it mounts doesn't exist (yet): the pod waits.
    Missing(String),
    /// The volume can never be written (a bad `items` path).
    Invalid(String),
}

/// The Secret and ConfigMap volumes the pod's first container mounts, found by `lookup`.
pub fn prepare(lookup: Lookup<'_>, pod: &Value) -> Result<Vec<Prepared>, NotReady> {
    let volumes: BTreeMap<&str, &Value> = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    let mut prepared = Vec::new();
    for mount in pod
        .pointer("/spec/containers/0/volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(mount_path)) = (mount["name"].as_str(), mount["mountPath"].as_str())
        else {
            continue;
        };
        let Some(volume) = volumes.get(name) else {
            continue;
        };
        // The name becomes a directory under the pod's: only what the API server allows in a
        // volume name (a DNS-1123 label), so `../x` can't write outside it.
        if !is_volume_name(name) {
            return Err(NotReady::Invalid(format!(
                "volume name {name:?} must be a lowercase RFC 1123 label"
            )));
        }
        let (plural, source, object_name) = if let Some(secret) = volume.get("secret") {
            ("secrets", secret, secret["secretName"].as_str())
        } else if let Some(config_map) = volume.get("configMap") {
            ("configmaps", config_map, config_map["name"].as_str())
        } else {
            continue;
        };
        let object_name = object_name.unwrap_or_default();
        let optional = source["optional"].as_bool().unwrap_or(false);
        let object = lookup(plural, object_name);
        let data = match object {
            Some(object) => contents(plural, &object),
            None if optional => BTreeMap::new(),
            None => {
                return Err(NotReady::Missing(format!(
                    "MountVolume.SetUp failed for volume \"{name}\": {} \"{object_name}\" not found",
                    if plural == "secrets" {
                        "secret"
                    } else {
                        "configmap"
                    }
                )));
            }
        };
        let files = select(name, source, data)?;
        prepared.push(Prepared {
            name: name.to_owned(),
            mount_path: mount_path.to_owned(),
            files,
        });
    }
    Ok(prepared)
}

/// Writes `volumes` under `pod_dir`; the environment rewrite for them.
pub fn write(pod_dir: &Path, volumes: &[Prepared]) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut mounts = Vec::new();
    for volume in volumes {
        let dir = pod_dir.join(&volume.name);
        std::fs::create_dir_all(&dir)?;
        for (path, content) in &volume.files {
            let file = dir.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, content)?;
        }
        mounts.push((volume.mount_path.clone(), dir));
    }
    Ok(mounts)
}

/// `value` with a leading mount path replaced by its local directory.
pub fn rewrite(value: &str, mounts: &[(String, PathBuf)]) -> Option<String> {
    mounts.iter().find_map(|(mount_path, dir)| {
        let mount_path = mount_path.trim_end_matches('/');
        let rest = value.strip_prefix(mount_path)?;
        (rest.is_empty() || rest.starts_with('/')).then(|| format!("{}{rest}", dir.display()))
    })
}

/// A Secret's or ConfigMap's keys and bytes.
fn contents(plural: &str, object: &Value) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let decode = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default()
    };
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        let bytes = if plural == "secrets" {
            decode(text)
        } else {
            text.as_bytes().to_vec()
        };
        out.insert(key.clone(), bytes);
    }
    for (key, value) in object["binaryData"].as_object().into_iter().flatten() {
        out.insert(key.clone(), decode(value.as_str().unwrap_or_default()));
    }
    out
}

/// The files of a volume: every key as a file, or only the `items` asked, at their paths.
fn select(
    volume: &str,
    source: &Value,
    mut data: BTreeMap<String, Vec<u8>>,
) -> Result<BTreeMap<PathBuf, Vec<u8>>, NotReady> {
    let Some(items) = source["items"].as_array() else {
        // Keys become file names: only what the API server allows in a key.
        if let Some(key) = data.keys().find(|key| !is_valid_key(key)) {
            return Err(NotReady::Invalid(format!(
                "volume \"{volume}\": key {key:?} is not a valid file name"
            )));
        }
        return Ok(data
            .into_iter()
            .map(|(k, v)| (PathBuf::from(k), v))
            .collect());
    };
    let mut files = BTreeMap::new();
    for item in items {
        let key = item["key"].as_str().unwrap_or_default();
        let path = item["path"].as_str().unwrap_or(key);
        let relative = Path::new(path);
        let safe = !path.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(NotReady::Invalid(format!(
                "volume \"{volume}\": items path {path:?} must be relative and may not contain '..'"
            )));
        }
        if let Some(content) = data.remove(key) {
            files.insert(relative.to_path_buf(), content);
        }
    }
    Ok(files)
}

/// A volume name as the API server validates it: a DNS-1123 label.
fn is_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A Secret or ConfigMap key as the API server validates it: `[-._a-zA-Z0-9]+`, not `.`/`..`.
fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn env_values_naming_a_mount_path_point_at_the_local_directory() {
        let mounts = vec![(
            "/var/run/jobtide/message".to_owned(),
            PathBuf::from("/tmp/pods/ns/p/jobtide-message"),
        )];
        assert_eq!(
            rewrite("/var/run/jobtide/message", &mounts).as_deref(),
            Some("/tmp/pods/ns/p/jobtide-message")
        );
        assert_eq!(
            rewrite("/var/run/jobtide/message/value", &mounts).as_deref(),
            Some("/tmp/pods/ns/p/jobtide-message/value")
        );
        assert_eq!(rewrite("/var/run/jobtide/messages", &mounts), None);
        assert_eq!(rewrite("orders", &mounts), None);
    }

    #[test]
    fn items_paths_that_climb_out_are_refused() {
        let data = BTreeMap::from([("k".to_owned(), b"v".to_vec())]);
        for path in ["../x", "/etc/passwd", "a/../../x", ""] {
            let source = json!({"items": [{"key": "k", "path": path}]});
            assert!(
                matches!(
                    select("v", &source, data.clone()),
                    Err(NotReady::Invalid(_))
                ),
                "{path}"
            );
        }
        let bad_key = BTreeMap::from([("..".to_owned(), b"v".to_vec())]);
        assert!(matches!(
            select("v", &json!({}), bad_key),
            Err(NotReady::Invalid(_))
        ));
        let source = json!({"items": [{"key": "k", "path": "dir/file"}]});
        assert_eq!(
            select("v", &source, data).unwrap(),
            BTreeMap::from([(PathBuf::from("dir/file"), b"v".to_vec())])
        );
    }

    #[test]
    fn a_volume_name_that_could_climb_out_of_the_pod_directory_is_refused() {
        for name in ["../x", "a/b", "..", "", "UPPER", "-a"] {
            assert!(!is_volume_name(name), "{name}");
        }
        assert!(is_volume_name("jobtide-message"));
    }

    #[test]
    fn secret_bytes_are_decoded_intact() {
        let secret = json!({"data": {"value": "/wB4"}});
        assert_eq!(contents("secrets", &secret)["value"], [0xff, 0x00, b'x']);
        let config_map = json!({"data": {"a": "text"}, "binaryData": {"b": "/w=="}});
        let files = contents("configmaps", &config_map);
        assert_eq!(
            (files["a"].as_slice(), files["b"].as_slice()),
            (&b"text"[..], &[0xff][..])
        );
    }
}
