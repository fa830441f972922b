//! What `hemostat diff` shows: the canonical YAML of a policy and a unified line diff.

use super::types::HealthPolicy;

/// The canonical YAML of a policy (without `status`): what diffs compare.
pub fn canonical_yaml(policy: &HealthPolicy) -> String {
    let mut policy = policy.clone();
    policy.status = None;
    serde_saphyr::to_string(&policy).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"))
}

/// A unified-style line diff with three lines of context; empty when equal.
pub(crate) fn unified_diff(old_name: &str, new_name: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence table (policies are small).
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (tag, old line no, new line no, text)
    let mut ops: Vec<(char, usize, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', i, j, a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', i, j, a[i]));
            i += 1;
        } else {
            ops.push(('+', i, j, b[j]));
            j += 1;
        }
    }
    if ops.iter().all(|op| op.0 == ' ') {
        return String::new();
    }
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let mut k = 0;
    while k < changed.len() {
        let first = changed[k].saturating_sub(CONTEXT);
        let mut last = changed[k];
        while k + 1 < changed.len() && changed[k + 1] <= last + 2 * CONTEXT + 1 {
            k += 1;
            last = changed[k];
        }
        let end = (last + CONTEXT + 1).min(ops.len());
        let hunk = &ops[first..end];
        let old_len = hunk.iter().filter(|o| o.0 != '+').count();
        let new_len = hunk.iter().filter(|o| o.0 != '-').count();
        let old_start = if old_len == 0 {
            hunk[0].1
        } else {
            hunk[0].1 + 1
        };
        let new_start = if new_len == 0 {
            hunk[0].2
        } else {
            hunk[0].2 + 1
        };
        out.push_str(&format!(
            "@@ -{old_start},{old_len} +{new_start},{new_len} @@\n"
        ));
        for (tag, _, _, line) in hunk {
            out.push(*tag);
            out.push_str(line);
            out.push('\n');
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_is_empty_when_equal_and_has_hunks_otherwise() {
        assert_eq!(unified_diff("a", "b", "x\ny\n", "x\ny\n"), "");
        let d = unified_diff(
            "a",
            "b",
            "1\n2\n3\n4\n5\n6\n7\n8\n9\n",
            "1\n2\n3\n4\nfive\n6\n7\n8\n9\n",
        );
        assert_eq!(
            d,
            "--- a\n+++ b\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
        let created = unified_diff("a", "b", "", "x\n");
        assert_eq!(created, "--- a\n+++ b\n@@ -0,0 +1,1 @@\n+x\n");
    }
}
