//! A line diff of two blueprint versions' definitions (as the blueprint page shows them), made
//! with `similar` and shaped for the `_blueprint_diff.html` partial: unchanged lines around each
//! change, the rest folded, every changed line marked by a sign as well as a colour.

use serde::Serialize;
use similar::{ChangeTag, TextDiff};

/// One line of the diff, or a fold of unchanged lines between hunks (`tag == "fold"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiffLine {
    /// `add`, `del`, `same` or `fold`.
    pub tag: &'static str,
    /// `+`, `-` or a space.
    pub sign: &'static str,
    pub old_no: Option<usize>,
    pub new_no: Option<usize>,
    pub text: String,
}

/// A diff with its counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LineDiff {
    pub lines: Vec<DiffLine>,
    pub added: usize,
    pub removed: usize,
}

/// Lines of context kept around each change.
pub const CONTEXT: usize = 3;

/// The diff of `old` to `new` by lines, with `context` unchanged lines around each change.
pub fn line_diff(old: &str, new: &str, context: usize) -> LineDiff {
    let diff = TextDiff::from_lines(old, new);
    let mut lines = Vec::new();
    let (mut added, mut removed) = (0, 0);
    let groups = diff.grouped_ops(context);
    let total_old = old.lines().count();
    let mut shown_to = 0usize;
    for group in &groups {
        let first_old = group.first().map_or(0, |op| op.old_range().start);
        if first_old > shown_to {
            lines.push(fold(first_old - shown_to));
        }
        for op in group {
            for change in diff.iter_changes(op) {
                let (tag, sign) = match change.tag() {
                    ChangeTag::Insert => {
                        added += 1;
                        ("add", "+")
                    }
                    ChangeTag::Delete => {
                        removed += 1;
                        ("del", "-")
                    }
                    ChangeTag::Equal => ("same", " "),
                };
                let text = change.value().trim_end_matches(['\n', '\r']).to_string();
                lines.push(DiffLine {
                    tag,
                    sign,
                    old_no: change.old_index().map(|i| i + 1),
                    new_no: change.new_index().map(|i| i + 1),
                    text,
                });
            }
        }
        shown_to = group.last().map_or(shown_to, |op| op.old_range().end);
    }
    if !groups.is_empty() && total_old > shown_to {
        lines.push(fold(total_old - shown_to));
    }
    LineDiff {
        lines,
        added,
        removed,
    }
}

fn fold(n: usize) -> DiffLine {
    DiffLine {
        tag: "fold",
        sign: " ",
        old_no: None,
        new_no: None,
        text: format!("{n} unchanged line{}", if n == 1 { "" } else { "s" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(d: &LineDiff) -> Vec<(&str, &str)> {
        d.lines.iter().map(|l| (l.sign, l.text.as_str())).collect()
    }

    #[test]
    fn marks_added_and_removed_lines_with_signs_and_numbers() {
        let d = line_diff("a\nb\nc\n", "a\nB\nc\nd\n", 3);
        assert_eq!(
            tags(&d),
            [(" ", "a"), ("-", "b"), ("+", "B"), (" ", "c"), ("+", "d")]
        );
        assert_eq!((d.added, d.removed), (2, 1));
        let added = &d.lines[2];
        assert_eq!(
            (added.tag, added.old_no, added.new_no),
            ("add", None, Some(2))
        );
        let removed = &d.lines[1];
        assert_eq!(
            (removed.tag, removed.old_no, removed.new_no),
            ("del", Some(2), None)
        );
    }

    #[test]
    fn identical_texts_have_no_lines() {
        let d = line_diff("a\nb\n", "a\nb\n", 3);
        assert!(d.lines.is_empty());
        assert_eq!((d.added, d.removed), (0, 0));
    }

    #[test]
    fn far_apart_changes_fold_the_unchanged_lines_between() {
        let old: String = (1..=20).map(|i| format!("l{i}\n")).collect();
        let new = old.replace("l2\n", "x2\n").replace("l18\n", "x18\n");
        let d = line_diff(&old, &new, 1);
        let folds: Vec<&str> = d
            .lines
            .iter()
            .filter(|l| l.tag == "fold")
            .map(|l| l.text.as_str())
            .collect();
        // l1 l2 l3 | l4..l16 folded (13) | l17 l18 l19 | l20 folded (1).
        assert_eq!(folds, ["13 unchanged lines", "1 unchanged line"]);
        assert_eq!((d.added, d.removed), (2, 2));
    }

    #[test]
    fn a_missing_final_newline_is_not_a_change_of_text() {
        let d = line_diff("a\nb", "a\nb\nc", 3);
        assert_eq!(d.added, 2);
        assert!(d.lines.iter().all(|l| !l.text.ends_with('\n')));
    }
}
