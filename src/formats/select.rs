//! Which trainable parameters get the scheme (`rewrite --include GLOB --exclude GLOB`): all of them
//! by default; with includes, those matching one; never those matching an exclude. A pattern that
//! matches no trainable parameter is an error (it is most likely a typo), as is a selection of
//! nothing.

use crate::error::{Error, Result};

/// Glob matching on a whole parameter name: `*` any run of characters (dots and slashes
/// included), `?` one character, `[abc]`, `[a-z]`, `[!a-z]` one character of (not of) a set.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with backtracking to the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => {
                pi += 1;
                ni += 1;
                continue;
            }
            Some('[') => match class(&p, pi, n[ni]) {
                Some((true, next)) => {
                    pi = next;
                    ni += 1;
                    continue;
                }
                // An unterminated class is a literal `[`.
                None if n[ni] == '[' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            },
            Some(&c) if c == n[ni] => {
                pi += 1;
                ni += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `c` is in the class starting at `p[start] == '['`, and where the class ends; None for
/// an unterminated class (then the caller matches `[` literally).
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = matches!(p.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while let Some(&item) = p.get(i) {
        if item == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            let end = p[i + 2];
            matched |= item <= c && c <= end;
            i += 3;
        } else {
            matched |= item == c;
            i += 1;
        }
        first = false;
    }
    None
}

/// The trainable parameters the scheme wraps, in their order.
pub fn select(trainable: &[String], include: &[String], exclude: &[String]) -> Result<Vec<String>> {
    for (flag, patterns) in [("--include", include), ("--exclude", exclude)] {
        for pattern in patterns {
            if !trainable.iter().any(|name| glob_match(pattern, name)) {
                let known: Vec<&str> = trainable.iter().take(8).map(String::as_str).collect();
                let more = if trainable.len() > 8 { ", ..." } else { "" };
                return Err(Error::InvalidOption(format!(
                    "{flag} {pattern:?} matches no trainable parameter (they are: {}{more})",
                    known.join(", ")
                )));
            }
        }
    }
    let selected: Vec<String> = trainable
        .iter()
        .filter(|name| include.is_empty() || include.iter().any(|p| glob_match(p, name)))
        .filter(|name| !exclude.iter().any(|p| glob_match(p, name)))
        .cloned()
        .collect();
    if selected.is_empty() {
        return Err(Error::InvalidOption(
            "--include/--exclude leave no trainable parameter to wrap".into(),
        ));
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_match("*", "encoder.layers.0.weight"));
        assert!(glob_match("encoder.*.weight", "encoder.layers.0.weight"));
        assert!(!glob_match("encoder.*.weight", "encoder.layers.0.bias"));
        assert!(glob_match("W?", "W1") && !glob_match("W?", "W12"));
        assert!(glob_match("b[13]", "b1") && !glob_match("b[13]", "b2"));
        assert!(glob_match("b[!13]", "b2") && glob_match("x[a-c]", "xb"));
        assert!(glob_match("*norm*", "layer_norm.weight") && !glob_match("norm", "layer_norm"));
        assert!(glob_match("a*b*c", "aXbYc") && !glob_match("a*b*c", "aXcYb"));
        assert!(glob_match("w[0", "w[0") && glob_match("*[", "a[") && !glob_match("w[0", "w0"));
    }

    #[test]
    fn selection_includes_excludes_and_refuses_typos() {
        let names: Vec<String> = ["W1", "b1", "emb.weight", "W2"].map(String::from).to_vec();
        let none: Vec<String> = vec![];
        assert_eq!(select(&names, &none, &none).unwrap(), names);
        assert_eq!(select(&names, &["W*".into()], &none).unwrap(), ["W1", "W2"]);
        assert_eq!(
            select(&names, &none, &["emb.*".into()]).unwrap(),
            ["W1", "b1", "W2"]
        );
        assert!(
            select(&names, &["Wx*".into()], &none)
                .unwrap_err()
                .to_string()
                .contains("Wx*")
        );
        assert!(select(&names, &["W*".into()], &["W*".into()]).is_err());
    }
}
