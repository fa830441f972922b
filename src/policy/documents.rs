//! The one document splitter: a multi-document YAML text cut on `---` / `...` markers at the
//! start of a line, blank documents dropped, so a broken document never hides the valid ones.
//! Lines end as YAML ends them: at LF, CRLF or a lone CR, so that line numbers agree with the
//! parser's.

/// One YAML document cut out of a multi-document text, with the line it starts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The document's text, its `---` start marker included.
    pub text: &'a str,
    /// The 1-based line it starts on.
    pub first_line: u64,
}

impl<'a> Chunk<'a> {
    /// The text without a start marker line that carries nothing else (`---` alone): what
    /// is stored for an applied document.
    pub fn body(&self) -> &'a str {
        match lines_inclusive(self.text).next() {
            Some(first) if bare(first) == "---" => &self.text[first.len()..],
            _ => self.text,
        }
    }
}

/// The lines of `text`, each with its line break: LF, CRLF or a lone CR (YAML's three), so
/// that a line number counted here is the parser's.
pub(crate) fn lines_inclusive(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bytes = rest.as_bytes();
        let end = match bytes.iter().position(|b| matches!(b, b'\n' | b'\r')) {
            None => rest.len(),
            Some(i) if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') => i + 2,
            Some(i) => i + 1,
        };
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

/// A line without its line break.
pub(crate) fn bare(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
}

/// Splits on `---` document markers (and `...` end markers) at the start of a line, so that a
/// broken document never hides the valid ones around it.
pub fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1u64;
    let mut offset = 0usize;
    for (line_no, line) in (1u64..).zip(lines_inclusive(text)) {
        let bare = bare(line);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start || is_end {
            chunks.push(Chunk {
                text: &text[start..offset],
                first_line: start_line,
            });
            // A start marker stays with the document it opens (it may carry content after it).
            start = if is_start {
                offset
            } else {
                offset + line.len()
            };
            start_line = if is_start { line_no } else { line_no + 1 };
        }
        offset += line.len();
    }
    chunks.push(Chunk {
        text: &text[start..],
        first_line: start_line,
    });
    chunks
        .into_iter()
        .filter(|c| !is_blank_document(c.text))
        .collect()
}

fn is_blank_document(text: &str) -> bool {
    lines_inclusive(text).all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t.starts_with('%')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(text: &str) -> Vec<&str> {
        split_documents(text).iter().map(|c| c.body()).collect()
    }

    #[test]
    fn split_keeps_each_document() {
        let text = "# c\na: 1\n---\nb: 2\n--- \nc: 3\n...\n";
        assert_eq!(bodies(text), vec!["# c\na: 1\n", "b: 2\n", "--- \nc: 3\n"]);
    }

    #[test]
    fn chunks_keep_their_marker_and_first_line() {
        let chunks = split_documents("a: 1\n---\nb: 2\n");
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[1].text, chunks[1].first_line), ("---\nb: 2\n", 2));
        assert_eq!(chunks[1].body(), "b: 2\n");
    }

    #[test]
    fn a_lone_cr_ends_a_line_as_in_yaml() {
        // Found by the policy_load fuzz target: the parser counts a lone CR as a line break,
        // the splitter did not, so positions after one pointed past the end of the input.
        let lines: Vec<&str> = lines_inclusive("a\rb\r\nc\nd").collect();
        assert_eq!(lines, ["a\r", "b\r\n", "c\n", "d"]);
        let chunks = split_documents("# c\ra: 1\r---\rb: 2\r");
        let got: Vec<(&str, u64)> = chunks.iter().map(|c| (c.body(), c.first_line)).collect();
        assert_eq!(got, [("# c\ra: 1\r", 1), ("b: 2\r", 3)]);
    }
}
