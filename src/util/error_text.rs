//! How a failed command's error is printed: its chain of causes once, never a cause whose text
//! an outer message already carries.

/// The error and its causes joined by `: `, skipping each cause already part of what is
/// printed before it (an error that formats its source into its own message, as
/// [`crate::engine::EngineError`] does, would otherwise show it twice).
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(String, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn chain(messages: &[&str]) -> E {
        let mut e: Option<Box<E>> = None;
        for m in messages.iter().rev() {
            e = Some(Box::new(E((*m).to_owned(), e)));
        }
        *e.unwrap()
    }

    #[test]
    fn each_cause_is_printed_once() {
        let cases: &[(&[&str], &str)] = &[
            (&["top"], "top"),
            (&["top", "middle", "bottom"], "top: middle: bottom"),
            (
                &[
                    "cannot reach the Docker engine at unix:///x (start it): Socket not found: /x",
                    "Socket not found: /x",
                ],
                "cannot reach the Docker engine at unix:///x (start it): Socket not found: /x",
            ),
            (
                &[
                    "outer: client error (Connect)",
                    "client error (Connect)",
                    "Connection refused",
                ],
                "outer: client error (Connect): Connection refused",
            ),
            (&["top", "", "bottom"], "top: bottom"),
        ];
        for (messages, want) in cases {
            assert_eq!(error_text(&chain(messages)), *want, "{messages:?}");
        }
    }
}
