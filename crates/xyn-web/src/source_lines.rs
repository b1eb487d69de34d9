//! Where in a draft's text a validation issue is: issues name a node by its path
//! (`$.plan[2].with.url`, built by the checker as `{parent}.{key}` and `{parent}[{index}]`), the
//! editor shows lines.
//!
//! serde_yaml_ng, which parses blueprints, builds values without positions, and libyaml's marks
//! are reachable only through `unsafe-libyaml`'s raw API (and this crate has no `unsafe`). So the
//! text is read a second time with `saphyr-parser`, a pure-Rust YAML 1.2 event parser whose
//! events carry their span. JSON is YAML 1.2 in flow style, so one reader serves both. A syntax
//! error already carries its line in its message (`xyn_core::blueprint::parse_text`), which is
//! counted from the first non-blank character; it is shifted back to a line of the text.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};
use serde_json::{Value, json};

use crate::dto::IssueDto;

/// Nesting deeper than this is not followed (the parser itself refuses far less deep text).
const MAX_DEPTH: usize = 256;

/// The issues, each with the `line` (1-based) of `text` where its node starts when there is one.
pub fn located(mut issues: Vec<IssueDto>, text: &str) -> Vec<IssueDto> {
    let mut lines: Option<SourceLines> = None;
    for i in &mut issues {
        i.line = if i.path == "$" && i.code == xyn_core::blueprint::codes::SYNTAX {
            syntax_line(text, &i.message)
        } else {
            lines
                .get_or_insert_with(|| SourceLines::of(text))
                .line(&i.path)
        };
    }
    issues
}

/// The issues as JSON objects (`path`, `code`, `message`), each with the `line` (1-based) of
/// `text` where its node starts (`null` when there is none).
pub fn with_lines(issues: &[IssueDto], text: &str) -> Vec<Value> {
    located(issues.to_vec(), text)
        .into_iter()
        .map(|i| json!({"path": i.path, "code": i.code, "message": i.message, "line": i.line}))
        .collect()
}

/// The line of a syntax error, from the `(line N, column M)` that `parse_text` puts at the end
/// of its message, counted in `text` (the parser saw it without leading blank lines).
pub fn syntax_line(text: &str, message: &str) -> Option<usize> {
    let at = message.rfind("(line ")?;
    let digits: String = message[at + "(line ".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let n: usize = digits.parse().ok().filter(|n| *n > 0)?;
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let skipped = &text[..text.len() - trimmed.len()];
    let line = n + skipped.matches('\n').count();
    // An error at the end of the text is on the (empty) line after its last newline, which an
    // editor shows too.
    (line <= text.split('\n').count()).then_some(line)
}

/// The first line of every node of the first document, by its path.
#[derive(Debug, Default)]
pub struct SourceLines {
    nodes: HashMap<String, Node>,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    line: usize,
    mapping: bool,
}

/// An open collection. `path` is `None` inside a node that has no path (a mapping used as a
/// key), whose contents are skipped.
enum Frame {
    Seq {
        path: Option<String>,
        next: usize,
    },
    Map {
        path: Option<String>,
        /// `None` while a key is expected; the key (when it is text) and its line after it.
        key: Option<Option<(String, usize)>>,
    },
}

impl SourceLines {
    /// Reads `text`. Text that does not parse gives the nodes before the error (their lines
    /// are still right); an empty or unreadable text gives none.
    pub fn of(text: &str) -> Self {
        let mut nodes = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut seen_root = false;
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let line = span.start.line();
            let (is_map, is_seq, scalar) = match &event {
                Event::MappingStart(..) => (true, false, None),
                Event::SequenceStart(..) => (false, true, None),
                Event::Scalar(v, ..) => (false, false, Some(v.to_string())),
                Event::Alias(_) => (false, false, None),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    if stack.is_empty() && seen_root {
                        break;
                    }
                    continue;
                }
                Event::DocumentEnd if seen_root => break,
                _ => continue,
            };
            // The path of this node (and the line to show for it), or why it has none.
            let here: Option<(String, usize)> = match stack.last_mut() {
                None if seen_root => break,
                None => {
                    seen_root = true;
                    Some(("$".to_string(), line))
                }
                Some(Frame::Seq { path, next }) => {
                    let i = *next;
                    *next += 1;
                    path.as_ref().map(|p| (format!("{p}[{i}]"), line))
                }
                Some(Frame::Map { path, key }) => match key.take() {
                    // A key: remembered until its value comes; a mapping or sequence as a key
                    // has no path, and neither has its value.
                    None => {
                        *key = Some(scalar.map(|k| (k, line)));
                        if is_map || is_seq {
                            stack.push(open(is_map, None));
                        }
                        continue;
                    }
                    // A value: shown at its key's line (`with:` rather than the line below it).
                    Some(k) => path
                        .as_ref()
                        .zip(k)
                        .map(|(p, (k, key_line))| (format!("{p}.{k}"), key_line)),
                },
            };
            if let Some((path, line)) = &here {
                nodes.entry(path.clone()).or_insert(Node {
                    line: *line,
                    mapping: is_map,
                });
            }
            if is_map || is_seq {
                if stack.len() >= MAX_DEPTH {
                    break;
                }
                stack.push(open(is_map, here.map(|(p, _)| p)));
            }
        }
        SourceLines { nodes }
    }

    /// The line where the node at `path` starts. A field missing from a mapping that is there
    /// (`$.plan[1].action` when step 1 has no `action`) is shown at the mapping; the document
    /// as a whole and paths into nodes that are not there have no line.
    pub fn line(&self, path: &str) -> Option<usize> {
        if path == "$" {
            return None;
        }
        if let Some(n) = self.nodes.get(path) {
            return Some(n.line);
        }
        let (parent, _) = path.rsplit_once('.')?;
        match self.nodes.get(parent) {
            Some(n) if n.mapping && parent != "$" => Some(n.line),
            _ => None,
        }
    }
}

fn open(mapping: bool, path: Option<String>) -> Frame {
    if mapping {
        Frame::Map { path, key: None }
    } else {
        Frame::Seq { path, next: 0 }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BP: &str = "\
id: bp.example.hello
name: Hello
trigger:
  event_type: demo.hello
inputs:
  - name: who
    type: string
plan:
  - kind: transform
    id: greet
    template:
      message: \"hello {{inputs.who}}\"
  - kind: action_task
    id: call
    action: http.call
    with:
      url: \"{{inputs.base}}/x\"
      headers: {accept: json, x.dotted: 1}
  -
    kind: gate
    id: approve
outputs: [{name: message, value: x}]
";

    fn line(text: &str, path: &str) -> Option<usize> {
        SourceLines::of(text).line(path)
    }

    #[test]
    fn nested_mappings_are_found_at_their_key() {
        assert_eq!(line(BP, "$.id"), Some(1));
        assert_eq!(line(BP, "$.trigger"), Some(3));
        assert_eq!(line(BP, "$.trigger.event_type"), Some(4));
        assert_eq!(line(BP, "$.plan[0].template.message"), Some(12));
    }

    #[test]
    fn steps_in_a_list_are_counted() {
        assert_eq!(line(BP, "$.plan"), Some(8));
        assert_eq!(line(BP, "$.plan[0]"), Some(9));
        assert_eq!(line(BP, "$.plan[1]"), Some(13));
        assert_eq!(line(BP, "$.plan[1].with"), Some(16));
        assert_eq!(line(BP, "$.plan[1].with.url"), Some(17));
        assert_eq!(line(BP, "$.inputs[0].type"), Some(7));
        // An item whose mapping starts on the line after its dash.
        assert_eq!(line(BP, "$.plan[2]"), Some(20));
        assert_eq!(line(BP, "$.plan[2].id"), Some(21));
    }

    #[test]
    fn flow_style_is_found_inside_the_line() {
        assert_eq!(line(BP, "$.plan[1].with.headers.accept"), Some(18));
        assert_eq!(line(BP, "$.outputs[0].value"), Some(22));
        // Keys are joined as the checker joins them, dots and all.
        assert_eq!(line(BP, "$.plan[1].with.headers.x.dotted"), Some(18));
        let flow = "{id: a,\n plan: [\n  {kind: gate,\n   mode: manual}]}";
        assert_eq!(line(flow, "$.plan[0].mode"), Some(4));
    }

    #[test]
    fn json_input_is_mapped_too() {
        let json = "{\n  \"id\": \"bp.j\",\n  \"plan\": [\n    {\n      \"kind\": \"gate\",\n      \"with\": {\"url\": 1}\n    }\n  ]\n}";
        assert_eq!(line(json, "$.id"), Some(2));
        assert_eq!(line(json, "$.plan[0]"), Some(4));
        assert_eq!(line(json, "$.plan[0].kind"), Some(5));
        assert_eq!(line(json, "$.plan[0].with.url"), Some(6));
    }

    #[test]
    fn a_path_that_is_not_there_has_no_line() {
        assert_eq!(line(BP, "$.plan[9].id"), None);
        assert_eq!(line(BP, "$.nope.deeper"), None);
        assert_eq!(line(BP, "$.plan[1].with.url.deeper"), None, "url is text");
        assert_eq!(line(BP, "$"), None, "the whole document");
        assert_eq!(line(BP, "$.missing"), None, "a missing top-level field");
        assert_eq!(line("", "$.id"), None);
        assert_eq!(line("just text", "$.id"), None);
    }

    #[test]
    fn a_missing_field_is_shown_at_its_mapping() {
        // Step 2 has no `mode`: the issue is on the step.
        assert_eq!(line(BP, "$.plan[2].mode"), Some(20));
        assert_eq!(line(BP, "$.trigger.cron"), Some(3));
    }

    #[test]
    fn mapping_keys_and_later_documents_are_ignored() {
        let text = "? {a: 1}\n: {b: 2}\nc: 3\n---\nd: 4\n";
        let l = SourceLines::of(text);
        assert_eq!(l.line("$.c"), Some(3));
        assert_eq!(l.line("$.a"), None);
        assert_eq!(l.line("$.d"), None);
    }

    #[test]
    fn text_that_breaks_off_keeps_the_lines_before() {
        let text = "id: a\nplan:\n  - {kind: gate\n  x: [\n";
        assert_eq!(line(text, "$.id"), Some(1));
    }

    #[test]
    fn deep_nesting_is_not_followed() {
        let text = format!("a: {}{}", "[".repeat(5_000), "]".repeat(5_000));
        assert_eq!(line(&text, "$.a"), Some(1));
    }

    #[test]
    fn syntax_errors_keep_their_line_counted_in_the_text() {
        // The error is on the second line of what the parser saw, in YAML and in JSON.
        for (text, expected) in [
            ("id: a\nb: c: d\nplan: []\n", 2),
            ("\n\n  \nid: a\nb: c: d\nplan: []\n", 5),
            ("{\"id\": \"a\",\n\"plan\": [}\n", 2),
            ("\n\n{\"id\": \"a\",\n\"plan\": [}\n", 4),
        ] {
            let Err(issue) = xyn_core::blueprint::parse_text(text) else {
                panic!("{text:?} parses");
            };
            assert_eq!(
                syntax_line(text, &issue.message),
                Some(expected),
                "{text:?}: {}",
                issue.message
            );
        }
        assert_eq!(syntax_line("a\nb\nc", "bad (line 2, column 1)"), Some(2));
        assert_eq!(syntax_line("\n\na\nb", "bad (line 2, column 1)"), Some(4));
        assert_eq!(syntax_line("a", "bad (line 0, column 1)"), None);
        assert_eq!(syntax_line("a", "bad (line 9, column 1)"), None);
        assert_eq!(syntax_line("a: [\n", "bad (line 2, column 1)"), Some(2));
        assert_eq!(syntax_line("a", "no position"), None);
    }

    #[test]
    fn issues_get_their_lines() {
        let issue = |path: &str, code: &str, message: &str| IssueDto {
            path: path.into(),
            code: code.into(),
            message: message.into(),
            line: None,
        };
        let out = with_lines(
            &[
                issue("$.plan[1].with.url", "template.unknown_input", "x"),
                issue("$.plan[7]", "x", "x"),
                issue("$", "syntax", "not valid YAML: y (line 3, column 2)"),
                issue("$", "plan.empty", "x (line 3, column 2)"),
            ],
            BP,
        );
        let lines: Vec<Value> = out.iter().map(|i| i["line"].clone()).collect();
        assert_eq!(lines, vec![json!(17), Value::Null, json!(3), Value::Null]);
        assert_eq!(out[0]["path"], "$.plan[1].with.url");
        assert_eq!(out[0]["code"], "template.unknown_input");
    }
}
