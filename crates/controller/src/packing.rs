//! The compact form of the JSON the operator keeps per object: compressed with zstd against a
//! dictionary of the object's kind.
//!
//! Why: a kept ScaledJob's spec and status are about 850 bytes of JSON (the 10,000-ScaledJob
//! benchmark), most of them field names and KEDA's condition messages that every ScaledJob
//! repeats. One small document alone compresses poorly (deflate: 873 → 456 bytes); against a
//! dictionary that holds those repeated parts it compresses well. zstd takes any bytes as a
//! "raw content" dictionary, so a kind's dictionary is simply a typical object of it, written by
//! the same serializer as the objects (no training step, no file to ship).
//!
//! Format: a tag byte, then either `0`: the JSON as it is, or `1`: the JSON's length (u32,
//! little-endian) and a zstd frame. Packing never fails: if zstd refused (it has no reason to),
//! the JSON is kept as it is.
//!
//! Each packer holds one compression and one decompression context behind a mutex: a
//! reconcile unpacks a few hundred bytes in microseconds, so contention is no concern, and two
//! contexts cost far less than one context per call would churn.

use std::borrow::Cow;
use std::sync::Mutex;

use zstd::bulk::{Compressor, Decompressor};

/// zstd's level: the fast default; the dictionary, not the level, does the work here.
const LEVEL: i32 = 3;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Packs and unpacks one kind's JSON (see the module docs).
pub struct Packer {
    kind: &'static str,
    contexts: Option<Mutex<(Compressor<'static>, Decompressor<'static>)>>,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Packer {
    /// A packer for `kind` with `dictionary` (a typical object's JSON). Without working zstd
    /// contexts it keeps JSON as it is.
    pub fn new(kind: &'static str, dictionary: &[u8]) -> Self {
        let contexts = Compressor::with_dictionary(LEVEL, dictionary)
            .and_then(|c| Ok((c, Decompressor::with_dictionary(dictionary)?)));
        if let Err(error) = &contexts {
            tracing::warn!(kind, %error, "zstd unavailable: kept objects stay uncompressed");
        }
        Self {
            kind,
            contexts: contexts.ok().map(Mutex::new),
        }
    }

    fn contexts(
        &self,
    ) -> Option<std::sync::MutexGuard<'_, (Compressor<'static>, Decompressor<'static>)>> {
        self.contexts.as_ref().map(|contexts| {
            contexts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }

    /// `json` packed.
    pub fn pack(&self, json: &[u8]) -> Box<[u8]> {
        let compressed = u32::try_from(json.len()).ok().and_then(|length| {
            let frame = self.contexts()?.0.compress(json).ok()?;
            let mut packed = Vec::with_capacity(5 + frame.len());
            packed.push(ZSTD);
            packed.extend_from_slice(&length.to_le_bytes());
            packed.extend_from_slice(&frame);
            Some(packed)
        });
        compressed
            .unwrap_or_else(|| {
                let mut packed = Vec::with_capacity(1 + json.len());
                packed.push(RAW);
                packed.extend_from_slice(json);
                packed
            })
            .into_boxed_slice()
    }

    /// The JSON `packed` holds.
    pub fn unpack<'a>(&self, packed: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
        match packed.split_first() {
            Some((&RAW, json)) => Ok(Cow::Borrowed(json)),
            Some((&ZSTD, rest)) if rest.len() >= 4 => {
                let (length, frame) = rest.split_at(4);
                let mut bytes = [0; 4];
                bytes.copy_from_slice(length);
                let length = u32::from_le_bytes(bytes) as usize;
                let mut contexts = self
                    .contexts()
                    .ok_or_else(|| format!("a packed {} needs zstd", self.kind))?;
                let json = contexts
                    .1
                    .decompress(frame, length)
                    .map_err(|error| format!("unpacking a {}: {error}", self.kind))?;
                if json.len() == length {
                    Ok(Cow::Owned(json))
                } else {
                    Err(format!("unpacking a {}: a wrong length", self.kind))
                }
            }
            _ => Err(format!("a packed {} has no valid tag", self.kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DICTIONARY: &[u8] = br#"{"metadata":{"name":"x","labels":{"app":"worker"}},"status":{"phase":"Succeeded","conditions":[{"type":"Ready","status":"False","reason":"PodCompleted"}]}}"#;

    #[test]
    fn packed_json_unpacks_to_itself_and_similar_json_packs_small() {
        let pods = Packer::new("Pod", DICTIONARY);
        let json = br#"{"metadata":{"name":"orders-7","labels":{"app":"worker"}},"status":{"phase":"Succeeded","conditions":[{"type":"Ready","status":"False","reason":"PodCompleted"}]}}"#;
        let packed = pods.pack(json);
        assert_eq!(packed[0], ZSTD);
        assert!(
            packed.len() < json.len() / 3,
            "{} of {}",
            packed.len(),
            json.len()
        );
        assert_eq!(&*pods.unpack(&packed).unwrap(), json);
        let large = vec![b'x'; 70_000];
        for json in [&b""[..], b"{}", &large] {
            assert_eq!(&*pods.unpack(&pods.pack(json)).unwrap(), json);
        }
    }

    #[test]
    fn raw_json_is_read_and_broken_packings_are_errors_not_panics() {
        let pods = Packer::new("Pod", DICTIONARY);
        assert_eq!(&*pods.unpack(b"\0{}").unwrap(), b"{}");
        let mut wrong_length = pods.pack(DICTIONARY).into_vec();
        assert!(pods.unpack(&[]).is_err());
        assert!(pods.unpack(&[7, 1, 2]).is_err());
        assert!(pods.unpack(&wrong_length[..3]).is_err());
        wrong_length[1] ^= 0xff;
        assert!(pods.unpack(&wrong_length).is_err());
        let cut = pods.pack(DICTIONARY);
        assert!(pods.unpack(&cut[..cut.len() - 2]).is_err());
    }
}
