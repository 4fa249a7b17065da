//! Fail2Ban command actions: `action.d/NAME.conf` files run as shell
//! commands (`actionstart`, `actionstop`, `actioncheck`, `actionban`,
//! `actionunban`, `actionflush`, `actionreban`, `actionrepair`).
//!
//! Owns one action of one jail: its commands with the static tags
//! (`[Init]` values, the `NAME[key=value]` options, other `[Definition]`
//! options) resolved once when the jail starts, for IPv4 and, where
//! `[Init?family=inet6]` differs, for IPv6. At each ban the dynamic tags
//! (`<ip>`, `<failures>`, `<matches>`, `<F-USER>`, ...) are filled in.
//! Their values come from log lines an attacker writes, so a value with any
//! shell metacharacter never enters the command text: it is passed as an
//! environment variable (`$f2bV_<tag>`), as Fail2Ban does. Commands run
//! under `/bin/sh -c` with a timeout (`timeout`, default 60 s) after which
//! their process group is killed.

use super::{ActionError, BanInfo};
use crate::config::ini::{split_conditional, Config, Vars};
use crate::config::jail::JailConfig;
use crate::config::options::NamedOptions;
use crate::filter::tags::substitute_recursive;
use indexmap::IndexMap;
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One family's resolved commands and static tags.
#[derive(Debug, Clone, Default)]
struct Commands {
    tags: IndexMap<String, String>,
}

impl Commands {
    fn get(&self, which: &str) -> Option<&str> {
        self.tags
            .get(which)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }
}

pub struct CommandAction {
    name: String,
    jail: String,
    v4: Commands,
    /// `None` when IPv6 uses the same commands.
    v6: Option<Commands>,
    timeout: Duration,
    started: [bool; 2],
    /// Active bans, so that a stop can lift them as Fail2Ban does.
    active: HashMap<String, BanInfo>,
}

/// Resolves an action's options as Fail2Ban's `DefinitionInitConfigReader`
/// does: `[Definition]` values, then `[Init]` defaults overridden by the
/// reference's options, `<tag>`s substituted among them.
fn resolve(
    cfg: &Config,
    name: &str,
    opts: &IndexMap<String, String>,
) -> Result<IndexMap<String, String>, String> {
    let err = |e: String| format!("action '{name}': {e}");
    let mut values: IndexMap<String, String> = IndexMap::new();
    for opt in cfg.options("Definition") {
        if opts.contains_key(&opt) {
            continue;
        }
        if let Some(v) = cfg
            .get("Definition", &opt, &Vars::new())
            .map_err(|e| err(e.to_string()))?
        {
            values.insert(opt, v);
        }
    }
    let mut init = opts.clone();
    if cfg.has_section("Init") {
        for opt in cfg.own_options("Init") {
            let v = cfg
                .get("Init", &opt, &Vars::new())
                .map_err(|e| err(e.to_string()))?
                .unwrap_or_default();
            init.entry(opt).or_insert(v);
        }
    }
    for (k, v) in init {
        values.insert(k, v);
    }
    let ignore: Vec<String> = values
        .keys()
        .filter(|k| split_conditional(k).is_some())
        .cloned()
        .collect();
    let mut extra = |tag: &str| cfg.get_ex("Definition", tag, &Vars::new()).ok().flatten();
    substitute_recursive(&values, &ignore, &mut extra).map_err(|e| err(e.to_string()))
}

impl CommandAction {
    /// Reads `action.d/NAME` (with `.local` and `.d/`) for a jail.
    pub fn load(
        dir: &Path,
        spec: &NamedOptions,
        jail: &JailConfig,
    ) -> Result<CommandAction, String> {
        let name = spec.name.as_str();
        let cfg = Config::read_layered(&dir.join(name))
            .map_err(|e| format!("action '{name}': {e}"))?
            .ok_or_else(|| {
                format!(
                    "action '{name}' not found: no {name}.conf or {name}.local in {}",
                    dir.display()
                )
            })?;
        if !cfg.has_section("Definition") {
            return Err(format!(
                "action '{name}': no [Definition] section in {}",
                dir.join(format!("{name}.conf")).display()
            ));
        }
        let mut opts: IndexMap<String, String> = spec
            .options
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect();
        // Fail2Ban gives every action the jail's name as `name`
        opts.entry("name".into())
            .or_insert_with(|| jail.name.clone());
        let v4 = resolve(&cfg, name, &opts)?;
        // IPv6: the `[Init?family=inet6]` values, where there are any
        let mut opts6 = opts.clone();
        let mut differs = false;
        if cfg.has_section("Init") {
            for key in cfg.own_options("Init") {
                if let Some((base, cond)) = split_conditional(&key) {
                    if cond.trim_start_matches('?').replace(' ', "") == "family=inet6"
                        && !opts.contains_key(base)
                    {
                        if let Ok(Some(v)) = cfg.get("Init", &key, &Vars::new()) {
                            opts6.insert(base.to_string(), v);
                            differs = true;
                        }
                    }
                }
            }
        }
        let v6 = if differs {
            Some(Commands {
                tags: resolve(&cfg, name, &opts6)?,
            })
        } else {
            None
        };
        let mut v4 = Commands { tags: v4 };
        if v4.get("actionban").is_none() && v4.get("actionstart").is_none() {
            return Err(format!(
                "action '{name}': neither actionban nor actionstart is set"
            ));
        }
        let timeout = v4
            .tags
            .get("timeout")
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(60.0);
        // tags the action leaves open fall back to the jail's own options
        v4.tags.extend(
            jail.vars
                .iter()
                .filter(|(k, _)| !v4.tags.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>(),
        );
        Ok(CommandAction {
            name: name.to_string(),
            jail: jail.name.clone(),
            v6: v6.map(|mut c| {
                c.tags.extend(
                    jail.vars
                        .iter()
                        .filter(|(k, _)| !c.tags.contains_key(*k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<Vec<_>>(),
                );
                c
            }),
            v4,
            timeout: Duration::from_secs_f64(timeout),
            started: [false; 2],
            active: HashMap::new(),
        })
    }

    fn family(&self, ban: &BanInfo) -> usize {
        usize::from(ban.ip.contains(':'))
    }

    fn commands(&self, fam: usize) -> &Commands {
        match (fam, &self.v6) {
            (1, Some(c)) => c,
            _ => &self.v4,
        }
    }

    fn err(&self, msg: String) -> ActionError {
        ActionError {
            action: self.name.clone(),
            jail: self.jail.clone(),
            msg,
        }
    }

    /// Runs one of the action's commands with `ban`'s tags (if any).
    fn run(&self, which: &str, fam: usize, ban: Option<&BanInfo>) -> Result<bool, ActionError> {
        let Some(cmd) = self.commands(fam).get(which) else {
            return Ok(false);
        };
        let (script, env) = fill_dynamic(cmd, ban, fam);
        execute(&script, &env, self.timeout)
            .map_err(|e| self.err(format!("{which} failed: {e}")))?;
        Ok(true)
    }

    fn ensure_started(&mut self, fam: usize) -> Result<(), ActionError> {
        let idx = if self.v6.is_some() { fam } else { 0 };
        if self.started[idx] {
            return Ok(());
        }
        self.run("actionstart", fam, None)?;
        self.started[idx] = true;
        Ok(())
    }

    /// `actioncheck` before a ban; when it fails, `actionrepair` (or
    /// `actionstart` again), as Fail2Ban does.
    fn check(&mut self, fam: usize) -> Result<(), ActionError> {
        if self.run("actioncheck", fam, None).is_ok() {
            return Ok(());
        }
        tracing::warn!(target: "banhammer.actions", jail = %self.jail, action = %self.name, "actioncheck failed; repairing");
        if !self.run("actionrepair", fam, None)? {
            self.run("actionstart", fam, None)?;
        }
        Ok(())
    }
}

/// Replaces the dynamic tags of a ban; values that are not plain go to the
/// environment instead of the command text.
fn fill_dynamic(cmd: &str, ban: Option<&BanInfo>, fam: usize) -> (String, Vec<(String, String)>) {
    let mut values: IndexMap<String, String> = IndexMap::new();
    values.insert(
        "family".into(),
        if fam == 1 { "inet6" } else { "inet4" }.into(),
    );
    values.insert("br".into(), "\n".into());
    values.insert("sp".into(), " ".into());
    if let Some(b) = ban {
        let ip = b.ip.clone();
        values.insert("ip-rev".into(), reverse_name(&ip));
        values.insert("fid".into(), ip.clone());
        values.insert("ip".into(), ip);
        values.insert("failures".into(), b.failures.to_string());
        values.insert("ipfailures".into(), b.failures.to_string());
        values.insert("ipjailfailures".into(), b.failures.to_string());
        values.insert("time".into(), format!("{:.0}", b.start));
        values.insert(
            "bantime".into(),
            b.end
                .map_or("-1".to_string(), |e| format!("{:.0}", e - b.start)),
        );
        values.insert("bancount".into(), b.ban_count.to_string());
        let matches = b.matches.join("\n");
        values.insert("matches".into(), matches.clone());
        values.insert("ipmatches".into(), matches.clone());
        values.insert("ipjailmatches".into(), matches);
        for (k, v) in &b.fields {
            values.insert(format!("F-{}", k.to_uppercase()), v.clone());
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    let mut out = String::with_capacity(cmd.len());
    let mut rest = cmd;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('>');
        let tag = close.map(|c| &after[..c]);
        match tag.and_then(|t| values.get(t).map(|v| (t, v))) {
            Some((t, v)) => {
                if needs_escape(v) {
                    let var = format!(
                        "f2bV_{}",
                        t.chars()
                            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                            .collect::<String>()
                    );
                    out.push('$');
                    out.push_str(&var);
                    if !env.iter().any(|(k, _)| *k == var) {
                        env.push((var, v.clone()));
                    }
                } else {
                    out.push_str(v);
                }
                rest = &after[t.len() + 1..];
            }
            None => {
                // an F-* tag of a failure that did not capture it: empty,
                // as in Fail2Ban; anything else stays as written
                match tag {
                    Some(t) if t.starts_with("F-") && ban.is_some() => {
                        rest = &after[t.len() + 1..];
                    }
                    _ => {
                        out.push('<');
                        rest = after;
                    }
                }
            }
        }
    }
    out.push_str(rest);
    (out, env)
}

/// Characters that could change what a shell command does.
fn needs_escape(v: &str) -> bool {
    v.chars().any(|c| "\\#&;`|*?~<>^()[]{}$'\"\n\r".contains(c))
}

/// `1.2.0.192.` for 192.0.2.1 (Fail2Ban's `<ip-rev>`, for DNS blocklists).
fn reverse_name(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.", o[3], o[2], o[1], o[0])
        }
        Ok(std::net::IpAddr::V6(a)) => {
            let hex: String = a.octets().iter().map(|b| format!("{b:02x}")).collect();
            hex.chars().rev().flat_map(|c| [c, '.']).collect()
        }
        Err(_) => String::new(),
    }
}

/// Runs `script` under `/bin/sh -c` in its own process group; kills the
/// group when it takes longer than `timeout`.
pub fn execute(script: &str, env: &[(String, String)], timeout: Duration) -> Result<(), String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run /bin/sh: {e}"))?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let err: String = err.trim().chars().take(500).collect();
                return Err(format!(
                    "{status}{}",
                    if err.is_empty() {
                        String::new()
                    } else {
                        format!(": {err}")
                    }
                ));
            }
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Ok(None) => {
                let pgid = child.id() as libc::pid_t;
                // SAFETY: signals a process group we created (process_group(0)).
                unsafe {
                    libc::kill(-pgid, libc::SIGTERM);
                }
                std::thread::sleep(Duration::from_millis(200));
                // SAFETY: as above.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(format!("timed out after {timeout:?} (killed)"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl super::Action for CommandAction {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&mut self) -> Result<(), ActionError> {
        self.ensure_started(0)
    }

    fn ban(&mut self, ban: &BanInfo) -> Result<(), ActionError> {
        let fam = self.family(ban);
        self.ensure_started(fam)?;
        self.check(fam)?;
        self.active.insert(ban.ip.clone(), ban.clone());
        self.run("actionban", fam, Some(ban)).map(|_| ())
    }

    fn restore(&mut self, ban: &BanInfo) -> Result<(), ActionError> {
        let fam = self.family(ban);
        self.ensure_started(fam)?;
        self.active.insert(ban.ip.clone(), ban.clone());
        if self.run("actionreban", fam, Some(ban))? {
            return Ok(());
        }
        self.run("actionban", fam, Some(ban)).map(|_| ())
    }

    fn unban(&mut self, ban: &BanInfo) -> Result<(), ActionError> {
        self.active.remove(&ban.ip);
        let fam = self.family(ban);
        self.run("actionunban", fam, Some(ban)).map(|_| ())
    }

    /// As Fail2Ban stops a jail: lift its bans (`actionflush`, or one
    /// `actionunban` each), then `actionstop`.
    fn stop(&mut self) -> Result<(), ActionError> {
        let mut first_err = None;
        for fam in 0..2 {
            let idx = if self.v6.is_some() { fam } else { 0 };
            if !self.started[idx] || (fam == 1 && self.v6.is_none()) {
                continue;
            }
            let flushed = match self.run("actionflush", fam, None) {
                Ok(done) => done,
                Err(e) => {
                    first_err.get_or_insert(e);
                    false
                }
            };
            if !flushed {
                let bans: Vec<BanInfo> = self
                    .active
                    .values()
                    .filter(|b| self.family(b) == fam || self.v6.is_none())
                    .cloned()
                    .collect();
                for b in bans {
                    if let Err(e) = self.run("actionunban", fam, Some(&b)) {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Err(e) = self.run("actionstop", fam, None) {
                first_err.get_or_insert(e);
            }
            self.started[idx] = false;
        }
        self.active.clear();
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(ip: &str) -> BanInfo {
        BanInfo {
            id: 7,
            jail: "sshd".into(),
            ip: ip.into(),
            start: 1000.0,
            end: Some(1600.0),
            ban_count: 1,
            failures: 3,
            matches: vec!["line one".into(), "it's $(rm -rf /) time".into()],
            fields: vec![("user".into(), "bob; rm -rf ~".into())],
        }
    }

    #[test]
    fn hostile_values_go_to_the_environment() {
        let (cmd, env) = fill_dynamic(
            "echo <ip> <bantime> <failures> \"<F-USER>\" \"<matches>\" <HOST> <F-MISSING>",
            Some(&ban("192.0.2.1")),
            0,
        );
        assert_eq!(
            cmd,
            "echo 192.0.2.1 600 3 \"$f2bV_F_USER\" \"$f2bV_matches\" <HOST> "
        );
        assert!(env.contains(&("f2bV_F_USER".into(), "bob; rm -rf ~".into())));
        assert_eq!(env.len(), 2);
    }

    #[test]
    fn commands_run_with_a_timeout() {
        assert!(execute("exit 0", &[], Duration::from_secs(5)).is_ok());
        let e = execute("echo nope >&2; exit 3", &[], Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let t = Instant::now();
        let e = execute("sleep 30", &[], Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name("192.0.2.1"), "1.2.0.192.");
        assert!(reverse_name("2001:db8::1").starts_with("1.0.0.0."));
    }
}
