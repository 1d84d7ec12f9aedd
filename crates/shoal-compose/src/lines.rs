//! The line index of one compose file: the line where each key path is set.
//!
//! `serde_yaml` values carry no positions, so the text is parsed a second time with
//! `yaml-rust2`'s event parser and every key (and list item) is recorded with its line. Aliases
//! and merge keys (`<<`) copy the lines of the anchored node, so an error in a value that came
//! from an anchor points at the line that wrote it. The same pass finds duplicate keys, which
//! Docker refuses.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::error::index_component;

/// The merge key of YAML 1.1 (`<<: *anchor`).
const MERGE_KEY: &str = "<<";

/// The most paths indexed per file; aliases stop being copied beyond it.
const MAX_ENTRIES: usize = 100_000;

/// A key written twice in the same mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The path of the key (its mapping's path plus the key).
    pub path: Vec<String>,
    /// The key.
    pub key: String,
    /// Where it is written the second time.
    pub line: usize,
    /// Where it was written first.
    pub first_line: usize,
}

/// The lines of the key paths of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineIndex {
    lines: HashMap<Vec<String>, usize>,
    /// The first duplicate key found, if any.
    pub duplicate: Option<DuplicateKey>,
}

impl LineIndex {
    /// Indexes `text`. Fails with the scanner's message and line when the text is not YAML.
    pub fn build(text: &str) -> Result<LineIndex, (usize, String)> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        parser
            .load(&mut builder, false)
            .map_err(|e| (e.marker().line(), e.info().to_string()))?;
        Ok(LineIndex {
            lines: builder.lines,
            duplicate: builder.duplicate,
        })
    }

    /// The line where exactly `path` is set.
    pub fn exact(&self, path: &[String]) -> Option<usize> {
        self.lines.get(path).copied()
    }

    /// The line of the longest prefix of `path` that this file sets, with the prefix's length.
    pub fn nearest(&self, path: &[String]) -> Option<(usize, usize)> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.lines.get(&path[..n]).map(|line| (*line, n)))
    }

    /// The number of indexed paths.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no path is indexed.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[derive(Debug)]
enum Frame {
    Map {
        path: Vec<String>,
        /// The key whose value comes next, if a key was read.
        key: Option<String>,
        seen: HashMap<String, usize>,
        /// The keys of this mapping only fill gaps (it is merged with `<<`).
        merge: bool,
    },
    Seq {
        path: Vec<String>,
        next: usize,
        /// The items are merged into `path` (`<<: [*a, *b]`).
        merge: bool,
    },
    /// A complex key (a mapping or a list used as a key), skipped.
    Skip(usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<Vec<String>, usize>,
    anchors: HashMap<usize, Vec<String>>,
    duplicate: Option<DuplicateKey>,
}

/// Where a node goes: its path, and whether it only fills gaps (merged).
struct Slot {
    path: Vec<String>,
    merge: bool,
}

impl Builder {
    fn record(&mut self, path: Vec<String>, line: usize, merge: bool) {
        if merge {
            self.lines.entry(path).or_insert(line);
        } else {
            self.lines.insert(path, line);
        }
    }

    /// Copies the lines under the anchored node `id` to `target`.
    fn copy_anchor(&mut self, id: usize, target: &[String], merge: bool) {
        let Some(source) = self.anchors.get(&id) else {
            return;
        };
        if self.lines.len() > MAX_ENTRIES {
            return;
        }
        let copies: Vec<(Vec<String>, usize)> = self
            .lines
            .iter()
            .filter(|(p, _)| p.len() > source.len() && p.starts_with(source))
            .map(|(p, line)| {
                let mut to = target.to_vec();
                to.extend_from_slice(&p[source.len()..]);
                (to, *line)
            })
            .collect();
        for (path, line) in copies {
            self.record(path, line, merge);
        }
    }

    /// The slot of the node starting now, or `None` for the root, a key, or a skipped node.
    /// Reading a mapping key is handled here too (returns `None`).
    fn slot(&mut self, ev: &Event, line: usize) -> Option<Slot> {
        let top = self.stack.last_mut()?;
        match top {
            Frame::Skip(_) => None,
            Frame::Seq { path, next, merge } => {
                let slot = if *merge {
                    Slot {
                        path: path.clone(),
                        merge: true,
                    }
                } else {
                    let mut p = path.clone();
                    p.push(index_component(*next));
                    Slot {
                        path: p,
                        merge: false,
                    }
                };
                *next += 1;
                if !slot.merge {
                    self.lines.insert(slot.path.clone(), line);
                }
                Some(slot)
            }
            Frame::Map {
                path,
                key,
                seen,
                merge,
            } => match key.take() {
                Some(k) if k == MERGE_KEY => Some(Slot {
                    path: path.clone(),
                    merge: true,
                }),
                Some(k) => {
                    let mut p = path.clone();
                    p.push(k);
                    Some(Slot {
                        path: p,
                        merge: *merge,
                    })
                }
                None => {
                    let name = match ev {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => "?".to_string(),
                    };
                    let mut key_path = path.clone();
                    key_path.push(name.clone());
                    let mut first_line = None;
                    if name != MERGE_KEY {
                        match seen.get(&name) {
                            Some(first) => first_line = Some(*first),
                            None => {
                                seen.insert(name.clone(), line);
                            }
                        }
                    }
                    let merge = *merge;
                    *key = Some(name.clone());
                    if let Some(first_line) = first_line {
                        if self.duplicate.is_none() {
                            self.duplicate = Some(DuplicateKey {
                                path: key_path.clone(),
                                key: name.clone(),
                                line,
                                first_line,
                            });
                        }
                    }
                    // `<<` is recorded too (for errors about the merge itself); no real key
                    // path goes through it.
                    self.record(key_path, line, merge);
                    if matches!(ev, Event::MappingStart(..) | Event::SequenceStart(..)) {
                        self.stack.push(Frame::Skip(0));
                    }
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        if let Some(Frame::Skip(depth)) = self.stack.last_mut() {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => *depth += 1,
                Event::MappingEnd | Event::SequenceEnd => {
                    if *depth == 0 {
                        self.stack.pop();
                    } else {
                        *depth -= 1;
                    }
                }
                _ => {}
            }
            return;
        }
        match &ev {
            Event::Scalar(_, _, anchor, _) => {
                if let Some(slot) = self.slot(&ev, line) {
                    if *anchor > 0 {
                        self.anchors.insert(*anchor, slot.path);
                    }
                }
            }
            Event::Alias(id) => {
                if let Some(slot) = self.slot(&ev, line) {
                    self.copy_anchor(*id, &slot.path, slot.merge);
                }
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                let slot = if self.stack.is_empty() {
                    Some(Slot {
                        path: Vec::new(),
                        merge: false,
                    })
                } else {
                    self.slot(&ev, line)
                };
                if let Some(slot) = slot {
                    if *anchor > 0 {
                        self.anchors.insert(*anchor, slot.path.clone());
                    }
                    self.stack.push(match ev {
                        Event::MappingStart(..) => Frame::Map {
                            path: slot.path,
                            key: None,
                            seen: HashMap::new(),
                            merge: slot.merge,
                        },
                        _ => Frame::Seq {
                            path: slot.path,
                            next: 0,
                            merge: slot.merge,
                        },
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn keys_and_list_items_have_their_lines() {
        let text = "version: \"3.8\"\nservices:\n  web:\n    image: nginx\n    ports:\n      - \"80:80\"\n      - target: 443\n        published: 8443\n";
        let idx = LineIndex::build(text).expect("index");
        assert_eq!(idx.exact(&p("version")), Some(1));
        assert_eq!(idx.exact(&p("services.web")), Some(3));
        assert_eq!(idx.exact(&p("services.web.image")), Some(4));
        assert_eq!(idx.exact(&p("services.web.ports.[0]")), Some(6));
        assert_eq!(idx.exact(&p("services.web.ports.[1].published")), Some(8));
        assert_eq!(idx.nearest(&p("services.web.image.x.y")), Some((4, 3)));
        assert_eq!(idx.duplicate, None);
    }

    #[test]
    fn aliases_and_merge_keys_copy_the_anchor_lines() {
        let text = "x-base: &base\n  image: busybox\n  deploy:\n    replicas: 2\nservices:\n  a: *base\n  b:\n    <<: *base\n    image: alpine\n  c:\n    <<: [*base]\n";
        let idx = LineIndex::build(text).expect("index");
        assert_eq!(idx.exact(&p("services.a")), Some(6));
        assert_eq!(idx.exact(&p("services.a.deploy.replicas")), Some(4));
        assert_eq!(idx.exact(&p("services.b.image")), Some(9));
        assert_eq!(idx.exact(&p("services.b.deploy.replicas")), Some(4));
        assert_eq!(idx.exact(&p("services.c.image")), Some(2));
        assert_eq!(idx.exact(&p("services.b.<<")), Some(8));
    }

    #[test]
    fn complex_keys_are_skipped() {
        let text = "? [a, {b: c}]\n: value\nservices:\n  web:\n    image: x\n";
        let idx = LineIndex::build(text).expect("index");
        assert_eq!(idx.exact(&p("services.web.image")), Some(5));
        assert_eq!(idx.exact(&p("services")), Some(3));
    }

    #[test]
    fn duplicate_keys_are_found() {
        let text = "services:\n  web:\n    image: a\n    image: b\n";
        let idx = LineIndex::build(text).expect("index");
        let dup = idx.duplicate.expect("duplicate");
        assert_eq!(dup.path, p("services.web.image"));
        assert_eq!((dup.line, dup.first_line), (4, 3));
    }

    #[test]
    fn bad_yaml_is_refused_with_its_line() {
        let err = LineIndex::build("a: b\n  c: d\n").expect_err("not yaml");
        assert_eq!(err.0, 2);
    }
}
