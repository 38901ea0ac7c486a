//! Reading `-f` inputs: files, directories (their `.yaml`, `.yml` and `.json` files, sorted;
//! recursively with `-R`) and `-` for stdin, split into YAML documents the way kubectl splits
//! them (a line that is `---`, optionally followed by a comment). Anything else — a FIFO, a
//! socket, a device — is refused before it is opened (reading it could wait forever).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Where a document came from (in the JSON report: `file`, `document`, `line`, `item`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    /// The file as given (or `-` for stdin).
    pub file: String,
    /// 1-based document index within the file (empty documents count, as kubectl counts them).
    pub document: usize,
    /// The line the document starts on (1-based).
    pub line: usize,
    /// The item within a `kind: List` document, 0-based.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {} (line {})",
            self.file, self.document, self.line
        )?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// One parsed YAML document.
#[derive(Debug, Clone)]
pub struct Document {
    pub location: Location,
    /// The document as JSON; a non-finite number (below) holds its YAML spelling as a string.
    pub value: Value,
    /// The numbers JSON can't hold (`.inf`, `-.inf`, `.nan`): valid YAML, but no Kubernetes
    /// object can have them (kubectl can't even send them). Each is an invalid value of its
    /// field ([`super::typed`]).
    pub non_finite: Vec<NonFinite>,
}

/// A number JSON can't hold, at `path` (serde_path_to_error's form: `spec.triggers[0].x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFinite {
    pub path: String,
    /// `.inf`, `-.inf` or `.nan`.
    pub literal: &'static str,
}

/// Where a value sits in a document, as a chain of steps from the root; rendered only for a
/// non-finite number.
#[derive(Clone, Copy)]
enum Step<'p> {
    Root,
    Key(&'p str, &'p Step<'p>),
    Index(usize, &'p Step<'p>),
}

impl Step<'_> {
    fn render(&self) -> String {
        match self {
            Self::Root => String::new(),
            Self::Key(key, parent) => match parent.render() {
                parent if parent.is_empty() => (*key).to_owned(),
                parent => format!("{parent}.{key}"),
            },
            Self::Index(index, parent) => format!("{}[{index}]", parent.render()),
        }
    }
}

/// Builds the JSON value of a document as `serde_json::Value` does, except that a non-finite
/// number becomes its YAML spelling and is recorded in `found` (`Value` would make it `null`).
struct Tracked<'a, 'p> {
    step: Step<'p>,
    found: &'a RefCell<Vec<NonFinite>>,
}

impl<'de> DeserializeSeed<'de> for Tracked<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tracked<'_, '_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        if let Some(number) = serde_json::Number::from_f64(value) {
            return Ok(Value::Number(number));
        }
        let literal = if value.is_nan() {
            ".nan"
        } else if value.is_sign_negative() {
            "-.inf"
        } else {
            ".inf"
        };
        self.found.borrow_mut().push(NonFinite {
            path: self.step.render(),
            literal,
        });
        Ok(Value::String(literal.to_owned()))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let step = Step::Index(out.len(), &self.step);
            let found = self.found;
            match seq.next_element_seed(Tracked { step, found })? {
                Some(value) => out.push(value),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Tracked {
                step: Step::Key(&key, &self.step),
                found: self.found,
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Why the inputs could not be read (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{location}: not valid YAML: {message}")]
    Yaml { location: Location, message: String },
    #[error("{path}: no .yaml, .yml or .json files in this directory")]
    EmptyDirectory { path: String },
    /// Valid YAML beyond one of the reader's limits ([`budget`]).
    #[error("{location}: too large to read: {what} (jobtide's limit, docs/security.md)")]
    TooLarge { location: Location, what: String },
}

/// The most YAML nodes (scalars, lists and mappings, keys included) one document may hold: a
/// `kind: List` of 100,000 ScaledJobs of about 45 nodes each fits. Each node costs about 100
/// bytes of memory once parsed, so this bounds a document at roughly 500 MB.
pub const MAX_NODES: usize = 5_000_000;

/// The reader's limits, per document (each document is parsed on its own): [`MAX_NODES`], and
/// serde-saphyr's defaults for the rest — nesting at most 64 deep, 64 MiB of scalar text,
/// 50,000 aliases and anchors (no alias bombs).
fn budget() -> serde_saphyr::Budget {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = MAX_NODES;
    // Every node is one event, every list and mapping one more at its end.
    budget.max_events = 2 * MAX_NODES + 16;
    budget
}

/// The limit `breach` exceeded, said plainly.
fn exceeded(breach: &serde_saphyr::budget::BudgetBreach, budget: &serde_saphyr::Budget) -> String {
    use serde_saphyr::budget::BudgetBreach;
    match breach {
        BudgetBreach::Nodes { .. } => format!(
            "more than {} YAML nodes (scalars, lists and mappings) in one document",
            budget.max_nodes
        ),
        BudgetBreach::Events { .. } => format!(
            "more than {} YAML parser events in one document",
            budget.max_events
        ),
        BudgetBreach::Depth { .. } => {
            format!("lists and mappings nested deeper than {}", budget.max_depth)
        }
        BudgetBreach::ScalarBytes { .. } => format!(
            "more than {} bytes of values in one document",
            budget.max_total_scalar_bytes
        ),
        BudgetBreach::Aliases { .. }
        | BudgetBreach::Anchors { .. }
        | BudgetBreach::AliasAnchorRatio { .. }
        | BudgetBreach::RecordedAnchorEvents { .. }
        | BudgetBreach::RecordedAnchorBytes { .. } => format!(
            "too many YAML anchors or aliases (at most {} of each, and at most {} aliases per \
             anchor)",
            budget.max_aliases, budget.alias_anchor_ratio_multiplier
        ),
        other => format!("beyond the YAML reader's limits ({other:?})"),
    }
}

/// Reads every input in order.
pub fn read_all(inputs: &[String], recursive: bool) -> Result<Vec<Document>, InputError> {
    let mut documents = Vec::new();
    let mut walk = Walk::default();
    for input in inputs {
        if input == "-" {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| InputError::Read {
                    path: "-".into(),
                    source,
                })?;
            documents.extend(parse_documents("-", &text)?);
            continue;
        }
        let path = Path::new(input);
        let meta = fs::metadata(path).map_err(|source| InputError::Read {
            path: input.clone(),
            source,
        })?;
        let files = if meta.is_dir() {
            let files =
                walk.manifest_files(path, recursive)
                    .map_err(|source| InputError::Read {
                        path: input.clone(),
                        source,
                    })?;
            match files {
                // Walked already, as another input or inside one.
                None => Vec::new(),
                Some(files) if files.is_empty() => {
                    return Err(InputError::EmptyDirectory {
                        path: input.clone(),
                    });
                }
                Some(files) => files,
            }
        } else {
            vec![path.to_path_buf()]
        };
        for file in files {
            let name = file.display().to_string();
            let read_error = |source| InputError::Read {
                path: name.clone(),
                source,
            };
            // Opening a FIFO would block until a writer comes, and a device may never end.
            let file_type = fs::metadata(&file).map_err(read_error)?.file_type();
            if !file_type.is_file() {
                return Err(read_error(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "not a regular file ({}); give - to read stdin",
                        describe(file_type)
                    ),
                )));
            }
            let bytes = fs::read(&file).map_err(read_error)?;
            let text = String::from_utf8(bytes).map_err(|_| InputError::Read {
                path: name.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
            })?;
            documents.extend(parse_documents(&name, &text)?);
        }
    }
    Ok(documents)
}

/// What kind of non-regular file `file_type` is, for messages.
fn describe(file_type: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "a device";
        }
    }
    let _ = file_type;
    "not a file or directory"
}

/// The directories' manifest files, each real file once: symbolic links are followed (to a
/// file or a directory, as kubectl follows them), but a file or directory already reached by
/// another path — a second link to it, or a link back up the tree, which would otherwise be
/// walked forever — is skipped. Files and directories are told apart by their canonical path.
#[derive(Debug, Default)]
struct Walk {
    /// The canonical paths of the files and directories reached so far.
    seen: HashSet<PathBuf>,
}

impl Walk {
    /// The `.yaml`, `.yml` and `.json` files of `dir`, sorted by name; with `recursive` those of
    /// its subdirectories too, depth first in name order. `None` when `dir` was walked already.
    fn manifest_files(&mut self, dir: &Path, recursive: bool) -> io::Result<Option<Vec<PathBuf>>> {
        if !self.seen.insert(fs::canonicalize(dir)?) {
            return Ok(None);
        }
        let mut files = Vec::new();
        // Directories still to read, each with its entries left; an explicit stack, as a tree
        // may nest deeper than recursion should go.
        let mut stack = vec![sorted_entries(dir)?.into_iter()];
        while let Some(entries) = stack.last_mut() {
            let Some(path) = entries.next() else {
                stack.pop();
                continue;
            };
            // A dangling link can't be canonicalized: kept, reading it names the path.
            let canonical = fs::canonicalize(&path).ok();
            if path.is_dir() {
                if recursive && canonical.is_some_and(|c| self.seen.insert(c)) {
                    stack.push(sorted_entries(&path)?.into_iter());
                }
            } else if is_manifest(&path) && canonical.is_none_or(|c| self.seen.insert(c)) {
                files.push(path);
            }
        }
        Ok(Some(files))
    }
}

fn sorted_entries(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    entries.sort();
    Ok(entries)
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

/// Splits `text` into documents and parses each within [`budget`]; empty and null documents are
/// skipped but counted.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Document>, InputError> {
    parse_documents_within(file, text, &budget())
}

fn parse_documents_within(
    file: &str,
    text: &str,
    budget: &serde_saphyr::Budget,
) -> Result<Vec<Document>, InputError> {
    let mut documents = Vec::new();
    for (index, (line, chunk)) in split(text).into_iter().enumerate() {
        let location = Location {
            file: file.to_owned(),
            document: index + 1,
            line,
            item: None,
        };
        let meaningful = chunk.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && t != "..."
        });
        if !meaningful {
            continue;
        }
        // No snippets: an error in a Secret's document must not echo its lines.
        let options = serde_saphyr::options! {
            with_snippet: false,
            budget: Some(budget.clone()),
            // Recorded by `Tracked`, reported as invalid values of their fields.
            non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        };
        let found = RefCell::new(Vec::new());
        let value: Value = serde_saphyr::with_deserializer_from_str_with_options(
            &chunk,
            options,
            |deserializer| {
                Tracked {
                    step: Step::Root,
                    found: &found,
                }
                .deserialize(deserializer)
            },
        )
        .map_err(|error| {
            if let serde_saphyr::Error::Budget { breach, .. } = &error {
                return InputError::TooLarge {
                    location: location.clone(),
                    what: exceeded(breach, budget),
                };
            }
            let text = error.without_snippet().to_string();
            let message = match error.location() {
                // The parser counts lines within the document; report them within the file.
                Some(at) => format!(
                    "line {}, column {}: {}",
                    at.line() + line as u64 - 1,
                    at.column(),
                    text.split(" at line ").next().unwrap_or(&text)
                ),
                None => text,
            };
            InputError::Yaml {
                location: location.clone(),
                message,
            }
        })?;
        if value.is_null() {
            continue;
        }
        documents.push(Document {
            location,
            value,
            non_finite: found.into_inner(),
        });
    }
    Ok(documents)
}

/// kubectl's document separator: a line starting with `---` followed by nothing but whitespace
/// or a comment. Returns (first line number, text) per document.
fn split(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_separator = line.strip_prefix("---").is_some_and(|rest| {
            let rest = rest.trim();
            rest.is_empty() || rest.starts_with('#')
        });
        if is_separator {
            out.push((start, std::mem::take(&mut current)));
            start = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    out.push((start, current));
    // A leading separator opens the first document; it does not end an empty one.
    if out.len() > 1 && out[0].1.trim().is_empty() && text.trim_start().starts_with("---") {
        out.remove(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_split_on_separator_lines_and_counted_like_kubectl() {
        let text = "---\na: 1\n--- # second\n\n---\nb: [1, 2]\n";
        let docs = parse_documents("f.yaml", text).expect("parse");
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].location.document, docs[0].location.line), (1, 2));
        assert_eq!((docs[1].location.document, docs[1].location.line), (3, 6));
        assert_eq!(docs[1].value["b"][1], 2);
    }

    #[test]
    fn a_separator_inside_a_block_scalar_line_is_not_a_separator() {
        let text = "a: |\n  x\n  ---\nb: 1\n";
        let docs = parse_documents("f.yaml", text).expect("parse");
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn a_directory_given_twice_or_inside_another_input_is_read_once() {
        let dir = tempfile::tempdir().expect("tmp");
        fs::create_dir(dir.path().join("sub")).expect("mkdir");
        fs::write(dir.path().join("sub/a.yaml"), "a: 1\n").expect("write");
        let root = dir.path().display().to_string();
        let sub = dir.path().join("sub").display().to_string();
        let documents = read_all(&[root.clone(), root, sub], true).expect("read");
        assert_eq!(documents.len(), 1);
    }

    #[test]
    fn a_document_beyond_a_limit_says_which_limit() {
        let mut small = budget();
        small.max_nodes = 10;
        let text = "a: 1\n---\nitems: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n";
        let error = parse_documents_within("big.yaml", text, &small)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "big.yaml: document 2 (line 3): too large to read: more than 10 YAML nodes \
                 (scalars, lists and mappings) in one document (jobtide's limit, \
                 docs/security.md)"
            )
        );
    }

    #[test]
    fn invalid_yaml_names_file_and_document() {
        let error = parse_documents("bad.yaml", "a: 1\n---\nb: [1,\n")
            .err()
            .map(|e| e.to_string());
        let error = error.unwrap_or_default();
        assert!(
            error.starts_with("bad.yaml: document 2 (line 3): not valid YAML"),
            "{error}"
        );
    }
}
