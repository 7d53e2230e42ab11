//! `${PORT}`-style references in a spec's `args` and `env` values, filled in
//! when the program is spawned, so a program needs no shell to learn its
//! port (`"FREQTRADE__API_SERVER__LISTEN_PORT": "${PORT}"`). Pure.
//!
//! `${NAME}` is replaced for the names in [`NAMES`]; `$$` is a literal `$`;
//! any other `$` stays as it is. An unknown name or an unclosed `${` is an
//! error, so a typo is a 400 rather than a program started with it.

/// The names a spec may refer to.
pub const NAMES: [&str; 5] = ["PORT", "SLOT", "HOME", "TENANT_ID", "HOST"];

/// `s` with every reference replaced by `value(name)`.
pub fn expand(s: &str, value: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let name = &tail[..end];
            let v = value(name).ok_or_else(|| {
                format!(
                    "unknown ${{{name}}} in {s:?}: want one of {} (or $$ for a $)",
                    NAMES.join(" ")
                )
            })?;
            out.push_str(&v);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `s` only refers to known names (what [`expand`] would accept).
pub fn check(s: &str) -> Result<(), String> {
    expand(s, |n| NAMES.contains(&n).then(String::new)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("9003".into()),
            "HOST" => Some("0.0.0.0".into()),
            _ => None,
        }
    }

    #[test]
    fn references_escapes_and_plain_dollars() {
        assert_eq!(expand("--port=${PORT}", v).unwrap(), "--port=9003");
        assert_eq!(expand("${HOST}:${PORT}", v).unwrap(), "0.0.0.0:9003");
        assert_eq!(expand("$${PORT} costs $5", v).unwrap(), "${PORT} costs $5");
        assert_eq!(expand("a$", v).unwrap(), "a$");
        assert_eq!(expand("no refs", v).unwrap(), "no refs");
    }

    #[test]
    fn typos_are_errors() {
        assert!(expand("${PROT}", v)
            .unwrap_err()
            .contains("unknown ${PROT}"));
        assert!(expand("${PORT", v).unwrap_err().contains("unclosed"));
        assert!(check("${TENANT_ID}-${SLOT}-${HOME}").is_ok());
        assert!(check("${NOPE}").is_err());
    }
}
