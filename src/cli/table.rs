//! Column tables for the terminal, and the cell text of a JSON value.

use serde_json::Value;

/// Left-aligned columns three spaces apart; the last cell of a row is not padded and each
/// line's trailing spaces are trimmed.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The header row of a table.
pub(crate) fn header<const N: usize>(names: [&str; N]) -> Vec<String> {
    names.map(str::to_owned).to_vec()
}

/// The cell at `pointer` in `value`: `-` when absent or null, a float with one decimal.
pub(crate) fn cell(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// Every line of `text` indented by two spaces, appended to `out`.
pub(crate) fn push_indented(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str(&format!("  {line}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_are_trimmed() {
        let rows = vec![
            header(["A", "BB", "C"]),
            vec!["xyz".into(), "".into(), "".into()],
        ];
        assert_eq!(table(&rows), "A     BB   C\nxyz\n");
    }

    #[test]
    fn cells_show_absent_values_as_a_dash_and_floats_with_one_decimal() {
        let v = serde_json::json!({"s": "x", "f": 1.26, "i": 3, "n": null, "b": true});
        for (pointer, want) in [
            ("/s", "x"),
            ("/f", "1.3"),
            ("/i", "3"),
            ("/n", "-"),
            ("/zz", "-"),
            ("/b", "true"),
        ] {
            assert_eq!(cell(&v, pointer), want, "{pointer}");
        }
    }
}
