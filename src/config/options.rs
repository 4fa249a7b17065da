//! `NAME[key=value, ...]` references, as jails write `filter =` and `action =`.
//!
//! Owns only syntax: splitting a reference into its name and its ordered
//! options, and splitting a multi-reference value (`action = a[x=1] b`) into
//! references. What the options mean is decided by the filter/action readers.

use indexmap::IndexMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} in {spec:?}")]
pub struct OptionSyntaxError {
    pub spec: String,
    pub msg: String,
}

/// A parsed `NAME[key=value, ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamedOptions {
    pub name: String,
    pub options: IndexMap<String, String>,
}

/// Parses `NAME`, `NAME[k=v, k2="v, with comma"]`, `NAME[a=1][b=2]`.
/// Values may be quoted with `"` or `'`; blanks around keys and values are
/// dropped. The name is everything before the first `[`, trimmed.
pub fn parse_named(spec: &str) -> Result<NamedOptions, OptionSyntaxError> {
    let err = |msg: String| OptionSyntaxError {
        spec: spec.to_string(),
        msg,
    };
    let trimmed = spec.trim_end();
    let (name, body) = match trimmed.find('[') {
        None => (trimmed, None),
        Some(open) => {
            if !trimmed.ends_with(']') {
                return Err(err("missing closing ']'".into()));
            }
            (
                &trimmed[..open],
                Some(&trimmed[open + 1..trimmed.len() - 1]),
            )
        }
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(err("missing name before '['".into()));
    }
    let mut options = IndexMap::new();
    if let Some(body) = body {
        parse_option_list(body, &mut options).map_err(err)?;
    }
    Ok(NamedOptions {
        name: name.to_string(),
        options,
    })
}

fn is_key_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// The inside of the brackets: `k=v, k2='v2'` (also `...][...` groups).
fn parse_option_list(body: &str, out: &mut IndexMap<String, String>) -> Result<(), String> {
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            return Ok(());
        }
        if chars[i] == ',' {
            // a trailing comma is allowed: `[a=1, ]`
            let mut j = i + 1;
            skip_ws(&mut j);
            if j >= chars.len() {
                return Ok(());
            }
            return Err(format!("unexpected ',' at {i}"));
        }
        let start = i;
        while i < chars.len() && is_key_char(chars[i]) {
            i += 1;
        }
        let key_end = i;
        skip_ws(&mut i);
        if key_end == start || i >= chars.len() || chars[i] != '=' {
            let rest: String = chars[start..].iter().take(25).collect();
            return Err(format!("expected key=value at {start}: {rest:?}"));
        }
        let key: String = chars[start..key_end].iter().collect();
        i += 1; // '='
        skip_ws(&mut i);
        let value: String;
        if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
            let q = chars[i];
            let vstart = i + 1;
            let Some(len) = chars[vstart..].iter().position(|&c| c == q) else {
                return Err(format!("unterminated quote after {key}="));
            };
            value = chars[vstart..vstart + len].iter().collect();
            i = vstart + len + 1;
        } else {
            let vstart = i;
            while i < chars.len() && chars[i] != ',' && chars[i] != ']' {
                i += 1;
            }
            value = chars[vstart..i].iter().collect();
        }
        out.insert(key.trim().to_string(), value.trim().to_string());
        // separator: ',' or '][' or end
        let mut j = i;
        skip_ws(&mut j);
        if j >= chars.len() {
            return Ok(());
        }
        if chars[i] == ',' {
            i += 1;
            continue;
        }
        if chars[i] == ']' {
            let mut k = i + 1;
            skip_ws(&mut k);
            if k < chars.len() && chars[k] == '[' {
                i = k + 1;
                continue;
            }
        }
        let rest: String = chars[i..].iter().take(25).collect();
        return Err(format!("unexpected text after option {key:?}: {rest:?}"));
    }
}

/// Splits a value holding several references separated by blanks or new
/// lines, keeping `[...]` groups (which may contain blanks and new lines)
/// with their name: `a[x=1, y="2 3"] b` -> [`a[x=1, y="2 3"]`, `b`].
pub fn split_references(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for c in value.chars() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
                continue;
            }
            None if depth > 0 && (c == '"' || c == '\'') => {
                quote = Some(c);
                cur.push(c);
                continue;
            }
            None => {}
        }
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                // `name [opts]`: a blank between name and '[' belongs to it
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    // join a lone `[...]` with the name before it
    let mut joined: Vec<String> = Vec::new();
    for part in out {
        match joined.last_mut() {
            Some(last) if part.starts_with('[') => last.push_str(&part),
            _ => joined.push(part),
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_options() {
        let n = parse_named("sshd[mode=aggressive, logtype = journal]").unwrap();
        assert_eq!(n.name, "sshd");
        assert_eq!(n.options["mode"], "aggressive");
        assert_eq!(n.options["logtype"], "journal");
        let n = parse_named(r#"x[a="1, 2]", b='q', c=3][d=4]"#).unwrap();
        assert_eq!(n.options["a"], "1, 2]");
        assert_eq!(n.options["b"], "q");
        assert_eq!(n.options["c"], "3");
        assert_eq!(n.options["d"], "4");
        assert_eq!(parse_named(" plain ").unwrap().name, "plain");
        assert_eq!(parse_named("x[]").unwrap().options.len(), 0);
        assert!(parse_named("[a=1]").is_err());
        assert!(parse_named("x[a=1").is_err());
        assert_eq!(parse_named("x[a=1 b=2]").unwrap().options["a"], "1 b=2");
        assert!(parse_named("x[novalue]").is_err());
    }

    #[test]
    fn split_several_references() {
        let v = split_references(
            "iptables[name=SSH, port=\"22 2222\"]\n   sendmail-whois[dest=a@b]  dummy",
        );
        assert_eq!(
            v,
            [
                "iptables[name=SSH, port=\"22 2222\"]",
                "sendmail-whois[dest=a@b]",
                "dummy"
            ]
        );
    }
}
