//! Fail2Ban's INI dialect: one reader for filter, action, jail and daemon files.
//!
//! Owns the raw, merged view of a layered configuration: `NAME.conf`,
//! `NAME.d/*.conf`, `NAME.local`, `NAME.d/*.local`, each file preceded by its
//! `[INCLUDES] before` files and followed by its `after` files (and every
//! included file by its own `.local`). Later files override earlier ones
//! option by option; the overridden values stay reachable as `known/OPTION`.
//! Values are returned with Python `ConfigParser` interpolation (`%(name)s`,
//! `%(section/name)s`, `%(known/name)s`, `%(__name__)s`, `%%`). The reader
//! does not know what any option means: resolving and validating values is
//! the job of the callers (filter reader, jail reader).

use indexmap::IndexMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a value was written: file and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One option value as read (multi-line values joined with `\n`).
#[derive(Debug, Clone)]
pub struct Value {
    pub text: String,
    pub origin: Origin,
}

/// Options of one section, keys lower-cased (Python's `optionxform`).
pub type Section = IndexMap<String, Value>;

/// Extra values that take precedence over a section's own options
/// (the `vars` of `ConfigParser.get`): e.g. a jail's `filter = x[mode=y]`.
pub type Vars = IndexMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum IniError {
    #[error("{}: cannot read: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{origin}: {msg}")]
    Syntax { origin: Origin, msg: String },
    #[error("{}: included file {} does not exist (named in [INCLUDES] {which}); fix the path or create the file", origin, path.display())]
    MissingInclude {
        origin: Origin,
        which: &'static str,
        path: PathBuf,
    },
    #[error("option '{option}' in [{section}]{}: {msg}", at(origin))]
    Interpolation {
        section: String,
        option: String,
        origin: Option<Origin>,
        msg: String,
    },
}

fn at(origin: &Option<Origin>) -> String {
    match origin {
        Some(o) => format!(" ({o})"),
        None => String::new(),
    }
}

/// Python's `MAX_INTERPOLATION_DEPTH`.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// A line that could not be read, with the section it stood in.
#[derive(Debug, Clone)]
pub struct SyntaxProblem {
    pub section: Option<String>,
    pub origin: Origin,
    pub msg: String,
}

impl SyntaxProblem {
    pub fn to_error(&self) -> IniError {
        IniError::Syntax {
            origin: self.origin.clone(),
            msg: self.msg.clone(),
        }
    }
}

/// One file parsed on its own, before merging.
#[derive(Debug, Default)]
pub struct IniFile {
    pub defaults: Section,
    pub sections: IndexMap<String, Section>,
    pub warnings: Vec<String>,
    /// Lines that could not be read (skipped; the rest of the file is kept).
    pub problems: Vec<SyntaxProblem>,
}

/// Parses one file's text with `ConfigParser`'s rules: `[section]` headers,
/// `key = value` or `key: value`, continuation lines indented deeper than
/// their option, full-line `#`/`;` comments, inline `;` comments after
/// whitespace, empty lines kept inside values and trailing ones dropped.
/// The first unreadable line is an error.
pub fn parse_str(path: &Path, text: &str) -> Result<IniFile, IniError> {
    let file = parse_lenient(path, text);
    match file.problems.first() {
        Some(p) => Err(p.to_error()),
        None => Ok(file),
    }
}

/// Like [`parse_str`], but unreadable lines are recorded in `problems` and
/// skipped, so that one broken jail does not take the others down.
pub fn parse_lenient(path: &Path, text: &str) -> IniFile {
    let file: Arc<Path> = Arc::from(path);
    let mut out = IniFile::default();
    // (section name or None for DEFAULT, option) currently being continued
    let mut cur_section: Option<Option<String>> = None;
    let mut cur_option: Option<String> = None;
    let mut indent_level = 0usize;
    let mut pending: IndexMap<(Option<String>, String), (Vec<String>, Origin)> = IndexMap::new();
    let mut section_order: Vec<Option<String>> = Vec::new();

    for (idx, raw) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let comment_start = comment_start(line);
        let value = match comment_start {
            Some(c) => line[..c].trim(),
            None => line.trim(),
        };
        if value.is_empty() {
            // An empty line (not a comment) continues a value as an empty line.
            if comment_start.is_none() {
                if let (Some(sec), Some(opt)) = (&cur_section, &cur_option) {
                    if let Some(v) = pending.get_mut(&(sec.clone(), opt.clone())) {
                        v.0.push(String::new());
                    }
                }
            }
            continue;
        }
        let cur_indent = line.len() - line.trim_start().len();
        if cur_section.is_some() && cur_option.is_some() && cur_indent > indent_level {
            let key = (
                cur_section.clone().unwrap_or_default(),
                cur_option.clone().unwrap_or_default(),
            );
            if let Some(v) = pending.get_mut(&key) {
                v.0.push(value.to_string());
            }
            continue;
        }
        indent_level = cur_indent;
        let origin = Origin {
            file: file.clone(),
            line: lineno,
        };
        if let Some(header) = section_header(value) {
            let name = if header == "DEFAULT" {
                None
            } else {
                Some(header.to_string())
            };
            if section_order.contains(&name) {
                out.warnings.push(format!(
                    "{origin}: section [{header}] appears twice in this file; its options are merged"
                ));
            } else {
                section_order.push(name.clone());
            }
            cur_section = Some(name);
            cur_option = None;
            continue;
        }
        let Some(section) = cur_section.clone() else {
            out.problems.push(SyntaxProblem {
                section: None,
                origin,
                msg: format!("line before the first [section] header: {value:?}"),
            });
            continue;
        };
        let Some((name, val)) = split_option(value) else {
            out.problems.push(SyntaxProblem {
                section: section.clone(),
                origin,
                msg: format!("expected 'name = value' or a [section] header, found {value:?}"),
            });
            cur_option = None;
            continue;
        };
        let name = name.to_lowercase();
        let key = (section.clone(), name.clone());
        if pending.contains_key(&key) {
            out.warnings.push(format!(
                "{origin}: option '{name}' is set twice in [{}]; the later value wins",
                section.as_deref().unwrap_or("DEFAULT")
            ));
            pending.shift_remove(&key);
        }
        pending.insert(key, (vec![val.to_string()], origin));
        cur_option = Some(name);
    }

    for name in section_order.iter().flatten() {
        out.sections.entry(name.clone()).or_default();
    }
    for ((section, name), (lines, origin)) in pending {
        let text = lines.join("\n").trim_end().to_string();
        let value = Value { text, origin };
        match section {
            None => out.defaults.insert(name, value),
            Some(s) => out.sections.entry(s).or_default().insert(name, value),
        };
    }
    out
}

/// Byte index where a comment starts: a full-line `#`/`;` comment, or an
/// inline `;` at the start or after whitespace.
fn comment_start(line: &str) -> Option<usize> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with(';') {
        return Some(0);
    }
    let mut prev_space = true;
    for (i, ch) in line.char_indices() {
        if ch == ';' && (i == 0 || prev_space) {
            return Some(i);
        }
        prev_space = ch.is_whitespace();
    }
    None
}

/// `[name]` (greedy up to the last `]`, as `ConfigParser`'s SECTCRE).
fn section_header(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    if end == 0 {
        return None;
    }
    Some(&rest[..end])
}

/// `name = value` / `name : value`: split at the first `=` or `:`.
fn split_option(value: &str) -> Option<(&str, &str)> {
    let pos = value.find(['=', ':'])?;
    let name = value[..pos].trim_end();
    if name.is_empty() {
        return None;
    }
    Some((name, value[pos + 1..].trim()))
}

/// The merged configuration of several files (the state of Fail2Ban's
/// `SafeConfigParserWithIncludes` after `read`).
#[derive(Debug, Default, Clone)]
pub struct Config {
    pub defaults: Section,
    /// Sections in first-seen order; `KNOWN/NAME` sections hold values that
    /// a later file overrode.
    pub sections: IndexMap<String, Section>,
    /// Every file read, in reading order.
    pub files: Vec<PathBuf>,
    pub warnings: Vec<String>,
    /// Unreadable lines (lenient reading only).
    pub problems: Vec<SyntaxProblem>,
}

impl Config {
    /// Reads `BASE.conf`, `BASE.d/*.conf`, `BASE.local`, `BASE.d/*.local`
    /// (those that exist) with their includes. `Ok(None)` if none exists.
    pub fn read_layered(base: &Path) -> Result<Option<Config>, IniError> {
        let files = layered_files(base);
        if files.is_empty() {
            return Ok(None);
        }
        Config::read_files(&files).map(Some)
    }

    /// Reads the given files (and their includes) in order; the first
    /// unreadable line is an error.
    pub fn read_files(files: &[PathBuf]) -> Result<Config, IniError> {
        let cfg = Config::read_files_lenient(files)?;
        match cfg.problems.first() {
            Some(p) => Err(p.to_error()),
            None => Ok(cfg),
        }
    }

    /// Like [`read_files`](Self::read_files), but unreadable lines are kept
    /// in `problems` (with their section) instead of failing the whole read.
    pub fn read_files_lenient(files: &[PathBuf]) -> Result<Config, IniError> {
        let mut order = Vec::new();
        let mut cache: IndexMap<PathBuf, Arc<IniFile>> = IndexMap::new();
        for f in with_locals(files) {
            collect_includes(&f, &[], &mut order, &mut cache)?;
        }
        let mut cfg = Config::default();
        for path in order {
            let Some(file) = cache.get(&path).cloned() else {
                continue;
            };
            cfg.merge(&file);
            cfg.warnings.extend(file.warnings.iter().cloned());
            cfg.problems.extend(file.problems.iter().cloned());
            cfg.files.push(path);
        }
        Ok(cfg)
    }

    /// Merges one parsed file over the current state.
    pub fn merge(&mut self, file: &IniFile) {
        for (k, v) in &file.defaults {
            self.defaults.insert(k.clone(), v.clone());
        }
        for (name, sec) in &file.sections {
            let (name, sec) = match split_conditional(name) {
                Some((base, cond)) => {
                    let renamed: Section = sec
                        .iter()
                        .map(|(k, v)| (format!("{k}{cond}"), v.clone()))
                        .collect();
                    (base.to_string(), renamed)
                }
                None => (name.clone(), sec.clone()),
            };
            if let Some(existing) = self.sections.get_mut(&name) {
                let previous: Vec<(String, Value)> = existing
                    .iter()
                    .filter(|(k, _)| sec.contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (k, v) in sec {
                    existing.insert(k, v);
                }
                let known = self.sections.entry(format!("KNOWN/{name}")).or_default();
                for (k, v) in previous {
                    known.insert(k, v);
                }
            } else {
                self.sections.insert(name, sec);
            }
        }
    }

    pub fn has_section(&self, section: &str) -> bool {
        self.sections.contains_key(section)
    }

    /// Option names of a section (without `[DEFAULT]`'s), in file order.
    pub fn own_options(&self, section: &str) -> Vec<String> {
        self.sections
            .get(section)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Option names of a section together with `[DEFAULT]`'s.
    pub fn options(&self, section: &str) -> Vec<String> {
        let mut names = self.own_options(section);
        for k in self.defaults.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
        names
    }

    /// The raw (uninterpolated) value as `get` would find it.
    pub fn raw(&self, section: &str, option: &str) -> Option<&Value> {
        let option = option.to_lowercase();
        self.sections
            .get(section)
            .and_then(|s| s.get(&option))
            .or_else(|| self.defaults.get(&option))
    }

    /// `ConfigParser.get(section, option, vars=vars)`: `Ok(None)` if the
    /// section (other than `DEFAULT`) or the option does not exist.
    pub fn get(
        &self,
        section: &str,
        option: &str,
        vars: &Vars,
    ) -> Result<Option<String>, IniError> {
        let option = option.to_lowercase();
        if section != "DEFAULT" && !self.sections.contains_key(section) {
            return Ok(None);
        }
        let (raw, origin) = if let Some(v) = vars.get(&option) {
            (v.clone(), None)
        } else if let Some(v) = self.raw(section, &option) {
            (v.text.clone(), Some(v.origin.clone()))
        } else {
            return Ok(None);
        };
        let mut interp = Interpolation {
            cfg: self,
            section,
            option: &option,
            origin,
            vars,
        };
        let mut out = String::with_capacity(raw.len());
        interp.expand(&raw, &mut out, 1)?;
        Ok(Some(out))
    }

    /// Fail2Ban's `get_ex`: like `get`, but `SECTION/OPTION` names another
    /// section's option (`known/OPTION` the value before the last override,
    /// falling back to the current one; `default/OPTION` the `[DEFAULT]` one).
    pub fn get_ex(
        &self,
        section: &str,
        option: &str,
        vars: &Vars,
    ) -> Result<Option<String>, IniError> {
        if let Some((sec, opt)) = split_section_option(option) {
            let candidates: Vec<String> = match sec.to_lowercase().as_str() {
                "known" => vec![format!("KNOWN/{section}"), section.to_string()],
                "default" => vec!["DEFAULT".to_string()],
                _ => vec![sec.to_string()],
            };
            for c in candidates {
                if let Some(v) = self.get(&c, opt, &Vars::new())? {
                    return Ok(Some(v));
                }
            }
        }
        self.get(section, option, vars)
    }
}

/// `SECTION/OPTION` as Fail2Ban writes cross-section references.
pub fn split_section_option(name: &str) -> Option<(&str, &str)> {
    let (sec, opt) = name.split_once('/')?;
    let sec_ok = !sec.is_empty()
        && sec
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let opt_ok = !opt.is_empty() && !opt.chars().any(|c| c.is_whitespace() || c == '>');
    (sec_ok && opt_ok).then_some((sec, opt))
}

/// `Init?family=inet6` -> (`Init`, `?family=inet6`).
pub fn split_conditional(name: &str) -> Option<(&str, &str)> {
    let q = name.find('?')?;
    let base = &name[..q];
    if q + 1 >= name.len()
        || base.is_empty()
        || !base.chars().all(|c| c.is_alphanumeric() || c == '_')
    {
        return None;
    }
    Some((base, &name[q..]))
}

struct Interpolation<'a> {
    cfg: &'a Config,
    section: &'a str,
    option: &'a str,
    origin: Option<Origin>,
    vars: &'a Vars,
}

impl Interpolation<'_> {
    fn error(&self, msg: String) -> IniError {
        IniError::Interpolation {
            section: self.section.to_string(),
            option: self.option.to_string(),
            origin: self.origin.clone(),
            msg,
        }
    }

    /// Looks a `%(name)s` reference up: vars, the section, `[DEFAULT]`,
    /// `__name__`, and `section/option` references.
    fn lookup(&self, name: &str) -> Option<String> {
        let key = name.to_lowercase();
        if let Some(v) = self.vars.get(&key) {
            return Some(v.clone());
        }
        if let Some(v) = self
            .cfg
            .sections
            .get(self.section)
            .and_then(|s| s.get(&key))
        {
            return Some(v.text.clone());
        }
        if let Some(v) = self.cfg.defaults.get(&key) {
            return Some(v.text.clone());
        }
        if key == "__name__" {
            return Some(self.section.to_string());
        }
        let (sec, opt) = split_section_option(name)?;
        let opt = opt.to_lowercase();
        let from = |s: &str| {
            self.cfg
                .sections
                .get(s)
                .and_then(|s| s.get(&opt))
                .map(|v| v.text.clone())
        };
        let found = match sec.to_lowercase().as_str() {
            "default" => None,
            "known" => from(&format!("KNOWN/{}", self.section)),
            _ => from(sec),
        };
        found.or_else(|| self.cfg.defaults.get(&opt).map(|v| v.text.clone()))
    }

    fn expand(&mut self, rest: &str, out: &mut String, depth: usize) -> Result<(), IniError> {
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(self.error(format!(
                "interpolation is nested deeper than {MAX_INTERPOLATION_DEPTH} levels (a value refers to itself?)"
            )));
        }
        let mut rest = rest;
        while let Some(p) = rest.find('%') {
            out.push_str(&rest[..p]);
            rest = &rest[p..];
            let next = rest[1..].chars().next();
            match next {
                Some('%') => {
                    out.push('%');
                    rest = &rest[2..];
                }
                Some('(') => {
                    let Some(close) = rest.find(")s") else {
                        return Err(self.error(format!("bad interpolation reference {:?}", short(rest))));
                    };
                    let name = &rest[2..close];
                    if name.is_empty() || name.contains(')') {
                        return Err(self.error(format!("bad interpolation reference {:?}", short(rest))));
                    }
                    let Some(value) = self.lookup(name) else {
                        return Err(self.error(format!("%({name})s refers to an option that is not defined")));
                    };
                    rest = &rest[close + 2..];
                    if value.contains('%') {
                        self.expand(&value, out, depth + 1)?;
                    } else {
                        out.push_str(&value);
                    }
                }
                _ => {
                    return Err(self.error(format!(
                        "'%' must be followed by '%' or '(', found {:?} (write %% for a literal percent sign)",
                        short(rest)
                    )))
                }
            }
        }
        out.push_str(rest);
        Ok(())
    }
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// `BASE.conf`, `BASE.d/*.conf`, `BASE.local`, `BASE.d/*.local` that exist.
pub fn layered_files(base: &Path) -> Vec<PathBuf> {
    let base_str = base.as_os_str().to_string_lossy().to_string();
    let dir = PathBuf::from(format!("{base_str}.d"));
    let in_dir = |ext: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == ext) && p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut files = vec![PathBuf::from(format!("{base_str}.conf"))];
    files.extend(in_dir("conf"));
    files.push(PathBuf::from(format!("{base_str}.local")));
    files.extend(in_dir("local"));
    files.into_iter().filter(|p| p.is_file()).collect()
}

/// Each file followed by its `.local` twin, if that exists and is not listed.
fn with_locals(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for f in files {
        out.push(f.clone());
        let local = f.with_extension("local");
        if &local != f && !files.contains(&local) && local.is_file() {
            out.push(local);
        }
    }
    out
}

fn read_ini(path: &Path) -> Result<IniFile, IniError> {
    let bytes = std::fs::read(path).map_err(|cause| IniError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| IniError::Syntax {
        origin: Origin {
            file: Arc::from(path),
            line: 1,
        },
        msg: format!(
            "file is not valid UTF-8 (byte {}); convert it to UTF-8",
            e.utf8_error().valid_up_to()
        ),
    })?;
    Ok(parse_lenient(path, &text))
}

/// Depth-first include expansion: before-files, the file, after-files.
fn collect_includes(
    path: &Path,
    seen: &[PathBuf],
    order: &mut Vec<PathBuf>,
    cache: &mut IndexMap<PathBuf, Arc<IniFile>>,
) -> Result<(), IniError> {
    let file = match cache.get(path) {
        Some(f) => f.clone(),
        None => {
            let f = Arc::new(read_ini(path)?);
            cache.insert(path.to_path_buf(), f.clone());
            f
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut chain = seen.to_vec();
    chain.push(path.to_path_buf());
    let includes = file.sections.get("INCLUDES");
    let mut cfg_one = Config::default();
    cfg_one.merge(&file);
    for which in ["before", "after"] {
        if which == "after" {
            order.push(path.to_path_buf());
        }
        let Some(value) = includes.and_then(|s| s.get(which)) else {
            continue;
        };
        let text = cfg_one
            .get("INCLUDES", which, &Vars::new())?
            .unwrap_or_default();
        for name in text.split('\n').map(str::trim).filter(|s| !s.is_empty()) {
            let target = if Path::new(name).is_absolute() {
                PathBuf::from(name)
            } else {
                dir.join(name)
            };
            if chain.contains(&target) {
                continue;
            }
            if !target.is_file() {
                // Fail2Ban skips missing includes silently; `after` files are
                // usually optional `.local` overrides, but a missing `before`
                // file leaves the filter without its definitions.
                if which == "before" {
                    return Err(IniError::MissingInclude {
                        origin: value.origin.clone(),
                        which,
                        path: target,
                    });
                }
                continue;
            }
            for f in with_locals(std::slice::from_ref(&target)) {
                collect_includes(&f, &chain, order, cache)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        let f = parse_str(Path::new("t.conf"), text).unwrap();
        let mut c = Config::default();
        c.merge(&f);
        c
    }

    fn get(c: &Config, s: &str, o: &str) -> Option<String> {
        c.get(s, o, &Vars::new()).unwrap()
    }

    #[test]
    fn multiline_values_comments_and_case() {
        let c = parse(
            "[Definition]\nFailRegex = ^a <HOST>$\n   ^b <HOST>$\n# comment\n\n    ^c ; inline\nother=x;y ; z\n",
        );
        assert_eq!(
            get(&c, "Definition", "failregex").unwrap(),
            "^a <HOST>$\n^b <HOST>$\n\n^c"
        );
        assert_eq!(get(&c, "Definition", "other").unwrap(), "x;y");
    }

    #[test]
    fn interpolation_default_section_and_known() {
        let mut c = parse("[DEFAULT]\nd = dv\n[A]\nx = 1\ny = %(x)s-%(d)s-%(__name__)s\nz = %(B/w)s 100%%\n[B]\nw = bw\n");
        assert_eq!(get(&c, "A", "y").unwrap(), "1-dv-A");
        assert_eq!(get(&c, "A", "z").unwrap(), "bw 100%");
        let over = parse_str(Path::new("t.local"), "[A]\nx = 2 and %(known/x)s\n").unwrap();
        c.merge(&over);
        assert_eq!(get(&c, "A", "x").unwrap(), "2 and 1");
        let mut vars = Vars::new();
        vars.insert("x".into(), "V".into());
        assert_eq!(c.get("A", "y", &vars).unwrap().unwrap(), "V-dv-A");
    }

    #[test]
    fn interpolation_errors_name_the_option() {
        let c = parse("[A]\ny = %(nope)s\nloop = %(loop)s\nbad = 5%\n");
        let e = c.get("A", "y", &Vars::new()).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("t.conf:2"), "{e}");
        assert!(c.get("A", "loop", &Vars::new()).is_err());
        assert!(c.get("A", "bad", &Vars::new()).is_err());
    }

    #[test]
    fn conditional_sections_are_renamed() {
        let c = parse("[Init]\na = 1\n[Init?family=inet6]\na = 2\n");
        assert_eq!(get(&c, "Init", "a").unwrap(), "1");
        assert_eq!(get(&c, "Init", "a?family=inet6").unwrap(), "2");
    }

    #[test]
    fn syntax_errors_carry_file_and_line() {
        let e = parse_str(Path::new("x.conf"), "[A]\nok = 1\nthis line is wrong\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.conf:3: expected 'name = value' or a [section] header, found \"this line is wrong\""
        );
        let e = parse_str(Path::new("x.conf"), "k = v\n").unwrap_err();
        assert!(e.to_string().starts_with("x.conf:1:"));
    }

    #[test]
    fn includes_before_after_and_locals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("common.conf"),
            "[INCLUDES]\nafter = common.local\n[DEFAULT]\nc = common\n",
        )
        .unwrap();
        std::fs::write(p.join("common.local"), "[DEFAULT]\nc = common-local\n").unwrap();
        std::fs::write(
            p.join("f.conf"),
            "[INCLUDES]\nbefore = common.conf\n[Definition]\nv = %(c)s\n",
        )
        .unwrap();
        std::fs::write(p.join("f.local"), "[Definition]\nv = %(known/v)s+local\n").unwrap();
        std::fs::create_dir(p.join("f.d")).unwrap();
        std::fs::write(p.join("f.d/a.conf"), "[Definition]\nw = d\n").unwrap();
        let c = Config::read_layered(&p.join("f")).unwrap().unwrap();
        let names: Vec<String> = c
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into())
            .collect();
        // as in Fail2Ban, common.local is read twice (as common.conf's twin and
        // as its `after` include); reading it again changes nothing
        assert_eq!(
            names,
            [
                "common.conf",
                "common.local",
                "common.local",
                "f.conf",
                "a.conf",
                "f.local"
            ]
        );
        assert_eq!(get(&c, "Definition", "v").unwrap(), "common-local+local");
        assert_eq!(get(&c, "Definition", "w").unwrap(), "d");
        assert!(Config::read_layered(&p.join("missing")).unwrap().is_none());
        std::fs::write(
            p.join("g.conf"),
            "[INCLUDES]\nbefore = nothere.conf\n[Definition]\n",
        )
        .unwrap();
        let e = Config::read_layered(&p.join("g")).unwrap_err().to_string();
        assert!(e.contains("nothere.conf") && e.contains("g.conf:2"), "{e}");
    }
}
