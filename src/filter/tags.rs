//! `<tag>` substitution, in the two places Fail2Ban does it.
//!
//! Owns (1) the recursive substitution of option values into each other
//! (`<mdre-<mode>>`, `<lt_<logtype>/__prefix_line>`), run once when a filter
//! or action is read, and (2) the expansion of the regex tags (`<HOST>`,
//! `<ADDR>`, `<F-USER>...</F-USER>`, `<SKIPLINES>`, ...) into named groups,
//! run once per failregex when it is compiled.

use indexmap::IndexMap;

/// How many times one tag may be replaced inside one value before the
/// substitution is declared recursive (Fail2Ban's `MAX_TAG_REPLACE_COUNT`).
const MAX_TAG_REPLACE_COUNT: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "option '{option}' refers to <{tag}> recursively and cannot be resolved (value now: {value:?})"
)]
pub struct RecursiveTagError {
    pub option: String,
    pub tag: String,
    pub value: String,
}

/// Finds the next `<name>` (name without blanks, `<` or `>`) at or after `from`.
fn next_tag(value: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = value.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let mut j = i + 1;
            while j < bytes.len()
                && !matches!(
                    bytes[j],
                    b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b' | b'<' | b'>'
                )
            {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'>' && j > i + 1 {
                return Some((i, j + 1));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

/// Replaces `<tag>` references between values until none resolves any more.
/// `extra` is asked for tags that are not among `values` (Fail2Ban's
/// `addrepl`: other options of the `[Definition]` section, `section/opt`);
/// unknown tags are left as they are (they may be regex tags like `<HOST>`).
/// Keys in `ignore` are neither substituted into nor used.
pub fn substitute_recursive(
    values: &IndexMap<String, String>,
    ignore: &[String],
    extra: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<IndexMap<String, String>, RecursiveTagError> {
    let mut tags = values.clone();
    let mut done: Vec<String> = Vec::new();
    let mut counts: IndexMap<String, IndexMap<String, usize>> = IndexMap::new();
    loop {
        let mut repeat = false;
        let keys: Vec<String> = tags.keys().cloned().collect();
        for tag in keys {
            if ignore.contains(&tag) || done.contains(&tag) {
                continue;
            }
            let orig = tags[&tag].clone();
            let mut value = orig.clone();
            let mut rplc = counts.get(&tag).cloned().unwrap_or_default();
            let mut m = next_tag(&value, 0);
            while let Some((s, e)) = m {
                let rtag = value[s + 1..e - 1].to_string();
                if ignore.contains(&rtag) {
                    m = next_tag(&value, e);
                    continue;
                }
                if rtag == tag || rplc.get(&rtag).copied().unwrap_or(1) > MAX_TAG_REPLACE_COUNT {
                    return Err(RecursiveTagError {
                        option: tag,
                        tag: rtag,
                        value,
                    });
                }
                let repl = match tags.get(&rtag) {
                    Some(v) => Some(v.clone()),
                    None => extra(&rtag),
                };
                let Some(repl) = repl else {
                    m = next_tag(&value, e);
                    continue;
                };
                value = value.replace(&format!("<{rtag}>"), &repl);
                *rplc.entry(rtag).or_insert(0) += 1;
                m = next_tag(&value, s);
            }
            if value != orig {
                if next_tag(&value, 0).is_some() {
                    counts.insert(tag.clone(), rplc);
                    repeat = true;
                }
                tags.insert(tag.clone(), value.clone());
            }
            if !value.contains('<') {
                done.push(tag);
            }
        }
        if !repeat {
            return Ok(tags);
        }
    }
}

/// `usedns` as it affects the regex: `no` leaves host names out of `<HOST>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UseDns {
    Yes,
    #[default]
    Warn,
    No,
    Raw,
}

impl UseDns {
    pub fn parse(s: &str) -> Option<UseDns> {
        match s.trim().to_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => Some(UseDns::Yes),
            "warn" => Some(UseDns::Warn),
            "no" | "false" | "off" | "0" => Some(UseDns::No),
            "raw" => Some(UseDns::Raw),
            _ => None,
        }
    }
}

const IP4: &str = r"(?:\d{1,3}\.){3}\d{1,3}";
// Fail2Ban writes the last part as `(?:[0-9a-fA-F]{1,4}|(?<=:):)`; the
// look-behind always holds there (every repetition ends with ':'), so it is
// dropped to keep `<HOST>` on the linear-time engine.
const IP6: &str = r"(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|:)";

fn r_ip4() -> String {
    format!(r"(?:::f{{4,6}}:)?(?P<ip4>{IP4})")
}
fn r_ip6() -> String {
    format!(r"(?P<ip6>{IP6})")
}
const R_DNS: &str = r"(?P<dns>[\w\-.^_]*\w)";
fn r_addr() -> String {
    format!(r"\[?(?:{}|{})\]?", r_ip4(), r_ip6())
}
fn r_subnet() -> String {
    format!(r"\[?(?:{}|{})(?:/(?P<cidr>\d+))?\]?", r_ip4(), r_ip6())
}

/// The fixed replacement of a regex tag (name without `<>`), if it has one.
fn fixed_tag(name: &str, use_dns: UseDns) -> Option<String> {
    Some(match name {
        "HOST" => match use_dns {
            UseDns::No => r_addr(),
            _ => format!("(?:{}|{R_DNS})", r_addr()),
        },
        "IP4" | "F-IP4/" => r_ip4(),
        "IP6" | "F-IP6/" => r_ip6(),
        "ADDR" | "F-ADDR/" => r_addr(),
        "CIDR" | "F-CIDR/" => r"(?P<cidr>\d+)".to_string(),
        "SUBNET" | "F-SUBNET/" => r_subnet(),
        "DNS" | "F-DNS/" => R_DNS.to_string(),
        "F-ID/" => r"(?P<fid>\S+)".to_string(),
        "F-PORT/" => r"(?P<fport>\w+)".to_string(),
        _ => return None,
    })
}

/// Group name for a custom `<F-NAME>` tag (`ID` -> `fid`, `PORT` -> `fport`).
pub fn custom_group_name(tag: &str) -> String {
    let lower = tag.to_lowercase();
    match lower.as_str() {
        "id" => "fid".to_string(),
        "port" => "fport".to_string(),
        _ => lower,
    }
}

/// Expands the regex tags of one failregex/ignoreregex/prefregex.
pub fn resolve_regex_tags(regex: &str, use_dns: UseDns) -> String {
    let mut out = String::with_capacity(regex.len() * 2);
    let mut open: Vec<String> = Vec::new();
    let mut skiplines = 0usize;
    let bytes = regex.as_bytes();
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        // `</?[\w\-]+/?>`
        let mut j = i + 1;
        if j < bytes.len() && bytes[j] == b'/' {
            j += 1;
        }
        let name_start = j;
        while j < bytes.len() {
            let c = regex[j..].chars().next().unwrap_or('>');
            if c.is_alphanumeric() || c == '_' || c == '-' {
                j += c.len_utf8();
            } else {
                break;
            }
        }
        if j == name_start {
            i += 1;
            continue;
        }
        if j < bytes.len() && bytes[j] == b'/' {
            j += 1;
        }
        if j >= bytes.len() || bytes[j] != b'>' {
            i += 1;
            continue;
        }
        let tag = &regex[i + 1..j];
        let repl: Option<String> = if tag == "SKIPLINES" {
            let r = format!(r"\n(?P<skiplines{skiplines}>(?:(?:.*\n)*?))");
            skiplines += 1;
            Some(r)
        } else if let Some(fixed) = fixed_tag(tag, use_dns) {
            Some(fixed)
        } else if let Some((close, name)) = custom_tag(tag) {
            if close {
                open.contains(&name.to_string()).then(|| ")".to_string())
            } else {
                open.push(name.to_string());
                Some(format!("(?P<{}>", custom_group_name(name)))
            }
        } else {
            None
        };
        if let Some(r) = repl {
            out.push_str(&regex[last..i]);
            out.push_str(&r);
            last = j + 1;
        }
        i = j + 1;
    }
    out.push_str(&regex[last..]);
    out
}

/// `F-NAME` / `/F-NAME` (upper-case names only): (is_close, NAME).
fn custom_tag(tag: &str) -> Option<(bool, &str)> {
    let (close, rest) = match tag.strip_prefix('/') {
        Some(r) => (true, r),
        None => (false, tag),
    };
    let name = rest.strip_prefix("F-")?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-');
    ok.then_some((close, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> IndexMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nested_tags_resolve_inside_out() {
        let v = map(&[
            ("failregex", "^<lt_<logtype>/x> <mdre-<mode>> <HOST>"),
            ("mode", "ddos"),
            ("logtype", "file"),
        ]);
        let mut extra = |t: &str| match t {
            "lt_file/x" => Some("PREFIX".to_string()),
            "mdre-ddos" => Some("DD <a>".to_string()),
            "a" => Some("A".to_string()),
            _ => None,
        };
        let out = substitute_recursive(&v, &[], &mut extra).unwrap();
        assert_eq!(out["failregex"], "^PREFIX DD A <HOST>");
    }

    #[test]
    fn self_reference_is_an_error() {
        let v = map(&[("a", "x<a>")]);
        assert!(substitute_recursive(&v, &[], &mut |_| None).is_err());
        let v = map(&[("a", "<b>"), ("b", "<a>")]);
        assert!(substitute_recursive(&v, &[], &mut |_| None).is_err());
    }

    #[test]
    fn regex_tags() {
        let r = resolve_regex_tags(
            "^<F-USER>\\S+</F-USER> from <HOST> <F-ID/> </F-NOPE> <SKIPLINES>",
            UseDns::Warn,
        );
        assert!(r.starts_with("^(?P<user>\\S+) from (?:\\[?(?:(?:::f{4,6}:)?(?P<ip4>"));
        assert!(r.contains("(?P<fid>\\S+) </F-NOPE> \\n(?P<skiplines0>"));
        assert!(!resolve_regex_tags("<HOST>", UseDns::No).contains("dns"));
        assert_eq!(
            resolve_regex_tags("(?P<x>a)<b>", UseDns::Warn),
            "(?P<x>a)<b>"
        );
    }
}
