//! Reading a filter definition: `filter.d/NAME.conf` and friends plus the
//! jail's `NAME[key=value]` options, resolved to the strings the engine
//! compiles.
//!
//! Owns Fail2Ban's `FilterReader` rules: the `[Definition]` options
//! (`prefregex`, `failregex`, `ignoreregex`, `maxlines`, `datepattern`,
//! `journalmatch`, `usedns`), `[Init]` defaults that jail options override,
//! `known/` values, and the recursive `<tag>` substitution between options.

use super::tags::{substitute_recursive, RecursiveTagError};
use crate::config::ini::{split_conditional, Config, IniError, Vars};
use crate::config::options::NamedOptions;
use indexmap::IndexMap;
use std::path::{Path, PathBuf};

/// Options of `[Definition]` that make up a filter.
pub const FILTER_OPTIONS: [&str; 7] = [
    "usedns",
    "prefregex",
    "ignoreregex",
    "failregex",
    "maxlines",
    "datepattern",
    "journalmatch",
];

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("filter '{name}': no {name}.conf or {name}.local in {}; check the filter name or --filter-dir", dir.display())]
    NotFound { name: String, dir: PathBuf },
    #[error("filter '{name}': {cause}")]
    Ini { name: String, cause: IniError },
    #[error("filter '{name}': {cause}")]
    Tags {
        name: String,
        cause: RecursiveTagError,
    },
    #[error("filter '{name}': maxlines must be a whole number greater than 0, not {value:?}")]
    MaxLines { name: String, value: String },
}

/// A filter as read: resolved option strings, ready to compile.
#[derive(Debug, Clone, Default)]
pub struct FilterDefinition {
    pub name: String,
    /// Files read, in order (for error messages).
    pub files: Vec<PathBuf>,
    pub prefregex: Option<String>,
    pub failregex: Vec<String>,
    pub ignoreregex: Vec<String>,
    pub maxlines: Option<usize>,
    pub datepattern: Option<String>,
    /// One `journalctl`-style match per entry (`+` separates alternatives).
    pub journalmatch: Vec<String>,
    pub usedns: Option<String>,
    /// All combined, substituted options (for actions and reports).
    pub options: IndexMap<String, String>,
    pub warnings: Vec<String>,
}

impl FilterDefinition {
    /// The file most likely to hold the regexes (the last one read that
    /// is not an include), for error messages.
    pub fn main_file(&self) -> String {
        self.files
            .iter()
            .rev()
            .find(|f| f.file_stem().and_then(|s| s.to_str()) == Some(self.name.as_str()))
            .or(self.files.last())
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// Reads filter `spec.name` from `dir` (a `filter.d` directory).
pub fn read_filter(dir: &Path, spec: &NamedOptions) -> Result<FilterDefinition, ReadError> {
    read_filter_at(&dir.join(&spec.name), &spec.name, &spec.options).map_err(|e| match e {
        ReadError::NotFound { name, .. } => ReadError::NotFound {
            name,
            dir: dir.to_path_buf(),
        },
        e => e,
    })
}

/// Reads the filter whose files are `BASE.conf` etc.
pub fn read_filter_at(
    base: &Path,
    name: &str,
    jail_opts: &IndexMap<String, String>,
) -> Result<FilterDefinition, ReadError> {
    let ini = |cause| ReadError::Ini {
        name: name.to_string(),
        cause,
    };
    let cfg = Config::read_layered(base)
        .map_err(ini)?
        .ok_or_else(|| ReadError::NotFound {
            name: name.to_string(),
            dir: base.parent().map(Path::to_path_buf).unwrap_or_default(),
        })?;
    resolve(cfg, name, jail_opts)
}

/// Fail2Ban's `DefinitionInitConfigReader.getOptions` + `getCombined` for a
/// filter used on its own (`test-filter`, `regex`).
pub fn resolve(
    cfg: Config,
    name: &str,
    jail_opts: &IndexMap<String, String>,
) -> Result<FilterDefinition, ReadError> {
    resolve_for_jail(cfg, name, jail_opts, &Vars::new(), &IndexMap::new())
}

/// The filter's `[Definition]` options (all of them, substituted as the
/// filter itself sees them), as a jail publishes them under `known/`.
pub fn definition_options(
    cfg: &Config,
    name: &str,
    spec_opts: &IndexMap<String, String>,
) -> Result<IndexMap<String, String>, ReadError> {
    combined_options(cfg, name, spec_opts, &Vars::new(), &IndexMap::new(), true)
}

/// [`resolve`] inside a jail: `jail_vars` are the jail's option values
/// (interpolation variables below the filter spec's options), and
/// `overrides` are filter options the jail sets itself (`failregex`,
/// `maxlines`, ...), which replace the filter's.
pub fn resolve_for_jail(
    cfg: Config,
    name: &str,
    jail_opts: &IndexMap<String, String>,
    jail_vars: &Vars,
    overrides: &IndexMap<String, String>,
) -> Result<FilterDefinition, ReadError> {
    let mut options = combined_options(&cfg, name, jail_opts, jail_vars, overrides, false)?;
    for (k, v) in overrides {
        options.insert(k.clone(), v.clone());
    }
    let lines = |k: &str| -> Vec<String> {
        options
            .get(k)
            .map(|v| {
                v.split('\n')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let maxlines = match options.get("maxlines").map(|s| s.trim()) {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(ReadError::MaxLines {
                    name: name.to_string(),
                    value: v.to_string(),
                })
            }
        },
    };
    Ok(FilterDefinition {
        name: name.to_string(),
        files: cfg.files.clone(),
        prefregex: options.get("prefregex").filter(|s| !s.is_empty()).cloned(),
        failregex: lines("failregex"),
        ignoreregex: lines("ignoreregex"),
        maxlines,
        datepattern: options.get("datepattern").cloned(),
        journalmatch: lines("journalmatch"),
        usedns: options.get("usedns").cloned(),
        warnings: cfg.warnings.clone(),
        options,
    })
}

/// `getOptions` + `getCombined`: the filter options (the ones the engine
/// uses, or with `all` every `[Definition]` option) with the spec's options
/// and `[Init]` values, `<tag>`-substituted.
fn combined_options(
    cfg: &Config,
    name: &str,
    jail_opts: &IndexMap<String, String>,
    jail_vars: &Vars,
    skip: &IndexMap<String, String>,
    all: bool,
) -> Result<IndexMap<String, String>, ReadError> {
    let ini = |cause| ReadError::Ini {
        name: name.to_string(),
        cause,
    };
    let mut pvars: Vars = jail_vars.clone();
    for (k, v) in jail_opts {
        pvars.insert(k.to_lowercase(), v.clone());
    }
    let keys: Vec<String> = if all {
        cfg.options("Definition")
    } else {
        FILTER_OPTIONS.iter().map(|s| s.to_string()).collect()
    };
    let mut opts: IndexMap<String, String> = IndexMap::new();
    for opt in keys {
        if jail_opts.contains_key(&opt) || skip.contains_key(&opt) {
            continue;
        }
        if let Some(v) = cfg.get("Definition", &opt, &pvars).map_err(ini)? {
            opts.insert(opt, v);
        }
    }
    let mut init: IndexMap<String, String> = jail_opts.clone();
    if cfg.has_section("Init") {
        for opt in cfg.own_options("Init") {
            let v = cfg
                .get("Init", &opt, &Vars::new())
                .map_err(ini)?
                .unwrap_or_default();
            if !opt.starts_with("known/") {
                init.insert(format!("known/{opt}"), v.clone());
            }
            init.entry(opt).or_insert(v);
        }
    }
    let mut combined = opts;
    for (k, v) in init {
        combined.insert(k, v);
    }
    let ignore: Vec<String> = combined
        .keys()
        .filter_map(|k| split_conditional(k).map(|(base, _)| base.to_string()))
        .collect();
    let mut cache: IndexMap<String, Option<String>> = IndexMap::new();
    let mut extra = |tag: &str| -> Option<String> {
        if let Some(v) = cache.get(tag) {
            return v.clone();
        }
        let v = cfg.get_ex("Definition", tag, &pvars).ok().flatten();
        cache.insert(tag.to_string(), v.clone());
        v
    };
    substitute_recursive(&combined, &ignore, &mut extra).map_err(|cause| ReadError::Tags {
        name: name.to_string(),
        cause,
    })
}
