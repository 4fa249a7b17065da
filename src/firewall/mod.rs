//! Enforcement: the actions a jail runs when it bans and unbans.
//!
//! Owns the action interface every backend implements, the mapping from a
//! jail's `action =` names to backends (native nftables for Fail2Ban's
//! nftables names, the built-in `log` and `dummy`, Fail2Ban command actions
//! from `action.d/`), and the runner thread that feeds a jail's actions in
//! order. A failing action is logged and does not affect the ban, which is
//! already in the database.

pub mod command;
pub mod ipset;
pub mod nft;
pub mod table;

use crate::config::jail::JailConfig;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

/// Everything an action may need to know about a ban: the stored record.
pub use crate::store::BanRecord as BanInfo;

#[derive(Debug, thiserror::Error)]
#[error("action '{action}' in jail '{jail}': {msg}")]
pub struct ActionError {
    pub action: String,
    pub jail: String,
    pub msg: String,
}

/// One enforcement backend.
pub trait Action: Send {
    fn name(&self) -> &str;
    fn start(&mut self) -> Result<(), ActionError> {
        Ok(())
    }
    fn ban(&mut self, ban: &BanInfo) -> Result<(), ActionError>;
    fn unban(&mut self, ban: &BanInfo) -> Result<(), ActionError>;
    /// Called for bans restored from the database at start.
    fn restore(&mut self, ban: &BanInfo) -> Result<(), ActionError> {
        self.ban(ban)
    }
    /// Called once every restored ban has been passed to [`Self::restore`].
    fn restored(&mut self) -> Result<(), ActionError> {
        Ok(())
    }
    fn stop(&mut self) -> Result<(), ActionError> {
        Ok(())
    }
}

/// `log`: records bans in the daemon's log only (the default until a
/// firewall backend is configured).
pub struct LogAction {
    jail: String,
}

impl Action for LogAction {
    fn name(&self) -> &str {
        "log"
    }
    fn ban(&mut self, ban: &BanInfo) -> Result<(), ActionError> {
        let until = ban
            .end
            .map_or("forever".to_string(), |e| format!("{:.0} s", e - ban.start));
        tracing::debug!(jail = %self.jail, ip = %ban.ip, until = %until, failures = ban.failures, "log action: ban");
        Ok(())
    }
    fn unban(&mut self, ban: &BanInfo) -> Result<(), ActionError> {
        tracing::debug!(jail = %self.jail, ip = %ban.ip, "log action: unban");
        Ok(())
    }
}

/// `dummy`: does nothing (Fail2Ban's test action).
pub struct DummyAction;

impl Action for DummyAction {
    fn name(&self) -> &str {
        "dummy"
    }
    fn ban(&mut self, _: &BanInfo) -> Result<(), ActionError> {
        Ok(())
    }
    fn unban(&mut self, _: &BanInfo) -> Result<(), ActionError> {
        Ok(())
    }
}

/// Runs a firewall tool (`argv`) with `input` on its standard input. The
/// error is the tool's own first lines, with a hint for the usual causes
/// (`package`: what to install when the binary is missing).
pub fn run_tool(argv: &[&str], input: &str, package: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let tool = argv.first().copied().unwrap_or_default();
    let mut child = Command::new(tool)
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("cannot run {tool:?}: not found (install the {package} package)")
            }
            _ => format!("cannot run {tool:?}: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // a write error shows up as the tool's own failure below
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let first: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect();
    let mut msg = first.join(" | ");
    if msg.contains("Operation not permitted") || msg.contains("Permission denied") {
        msg.push_str(" (banhammer needs CAP_NET_ADMIN to change the firewall)");
    } else if msg.contains("Protocol not supported")
        || msg.contains("No such file or directory") && msg.contains("Could not process rule")
    {
        msg.push_str(" (does this kernel have nf_tables?)");
    }
    Err(format!("{tool} failed ({}): {msg}", out.status))
}

/// What actions need from the daemon.
#[derive(Clone, Default)]
pub struct ActionEnv {
    /// The configuration directory (its `action.d/`).
    pub config_dir: PathBuf,
    /// The nftables owner thread.
    pub firewall: Option<table::Firewall>,
    /// The iptables + ipset owner thread.
    pub ipset: Option<table::Firewall>,
    /// Names of the `[webhook NAME]` sections.
    pub webhooks: Vec<String>,
}

/// An action option: the `NAME[key=value]` option, else the jail's own
/// value, else the action's default (Fail2Ban's `[Init]`).
fn option<'a>(
    opts: &'a crate::config::options::NamedOptions,
    jail: &'a JailConfig,
    key: &str,
    default: &'a str,
) -> &'a str {
    opts.options
        .get(key)
        .or_else(|| jail.vars.get(key))
        .map(String::as_str)
        .unwrap_or(default)
}

/// Whether a name is one of Fail2Ban's nftables actions.
pub fn is_nftables(name: &str) -> bool {
    matches!(
        name,
        "nftables" | "nftables-multiport" | "nftables-allports" | "nftables-common"
    )
}

/// Whether a name is one of Fail2Ban's iptables actions (run natively,
/// with ipset).
pub fn is_iptables(name: &str) -> bool {
    matches!(
        name,
        "iptables"
            | "iptables-multiport"
            | "iptables-allports"
            | "iptables-new"
            | "iptables-ipset"
            | "iptables-ipset-proto4"
            | "iptables-ipset-proto6"
            | "iptables-ipset-proto6-allports"
    )
}

/// Builds the actions a jail names. An action that cannot work as
/// configured (bad options) is an error: the jail is skipped, as with a
/// bad filter, rather than run without the protection it asks for.
pub fn build_actions(
    cfg: &JailConfig,
    env: &ActionEnv,
) -> Result<(Vec<Box<dyn Action>>, Vec<String>), String> {
    let jail = cfg.name.as_str();
    let mut out: Vec<Box<dyn Action>> = Vec::new();
    let warnings = Vec::new();
    let mut logged = false;
    let mut kernel_seen: Vec<&str> = Vec::new();
    for a in &cfg.actions {
        let name = a.name.as_str();
        let action_dir = env.config_dir.join("action.d");
        let has_file = |n: &str| !crate::config::ini::layered_files(&action_dir.join(n)).is_empty();
        match name {
            // Fail2Ban's dummy.conf (it writes to a file) where there is one
            "dummy" if has_file("dummy") => {
                out.push(Box::new(command::CommandAction::load(&action_dir, a, cfg)?))
            }
            "dummy" => out.push(Box::new(DummyAction)),
            // notifications go from the store's outbox: nothing to run here
            "webhook" => {
                if a.options.get("name").is_none_or(|n| n.trim().is_empty()) {
                    return Err("action 'webhook' needs name=... (a [webhook NAME] section)".into());
                }
                if !env.webhooks.iter().any(|w| Some(w) == a.options.get("name")) {
                    return Err(format!(
                        "action 'webhook': no [webhook {}] section in banhammer.conf",
                        a.options.get("name").map(String::as_str).unwrap_or_default()
                    ));
                }
            }
            "log" => {
                if !logged {
                    out.push(Box::new(LogAction {
                        jail: jail.to_string(),
                    }));
                    logged = true;
                }
            }
            n if is_nftables(n) || is_iptables(n) => {
                let nft = is_nftables(n);
                let (fw, backend) = if nft {
                    (&env.firewall, "nftables")
                } else {
                    (&env.ipset, "iptables-ipset")
                };
                let Some(fw) = fw else {
                    return Err(format!("action '{n}': the {backend} backend is not running"));
                };
                if kernel_seen.contains(&backend) {
                    return Err(format!(
                        "action '{n}': one {backend} action per jail (list several ports in one: port=\"ssh,2222\")"
                    ));
                }
                kernel_seen.push(backend);
                let kind = if n.ends_with("allports") {
                    "allports"
                } else if n == "nftables" {
                    option(a, cfg, "type", "multiport")
                } else {
                    "multiport"
                };
                let rules = table::JailRules::new(
                    jail,
                    kind,
                    option(a, cfg, "port", "ssh"),
                    option(a, cfg, "protocol", "tcp"),
                    option(a, cfg, "blocktype", "reject"),
                )
                .map_err(|e| format!("action '{n}': {e}"))?;
                let rules = if nft {
                    rules
                } else {
                    ipset::check_rules(rules).map_err(|e| format!("action '{n}': {e}"))?
                };
                out.push(Box::new(table::SetAction::new(backend, rules, fw.clone())));
            }
            other if has_file(other) => {
                out.push(Box::new(command::CommandAction::load(&action_dir, a, cfg)?))
            }
            other => {
                return Err(format!(
                    "action '{other}': no {other}.conf in {} (built in: nftables, nftables-multiport, nftables-allports, log, dummy)",
                    action_dir.display()
                ))
            }
        }
    }
    if out.is_empty() {
        out.push(Box::new(LogAction {
            jail: jail.to_string(),
        }));
    }
    Ok((out, warnings))
}

pub enum ActionEvent {
    Ban(Arc<BanInfo>),
    Restore(Arc<BanInfo>),
    /// Every restored ban has been sent.
    Restored,
    Unban(Arc<BanInfo>),
    Stop,
}

/// A jail's actions, run in order on their own thread.
#[derive(Clone)]
pub struct ActionRunner {
    tx: mpsc::Sender<ActionEvent>,
    errors: Arc<std::sync::atomic::AtomicU64>,
}

impl ActionRunner {
    pub fn spawn(
        jail: &str,
        mut actions: Vec<Box<dyn Action>>,
    ) -> std::io::Result<(ActionRunner, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<ActionEvent>();
        let name = jail.to_string();
        let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = errors.clone();
        let failed = move || {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let handle = std::thread::Builder::new()
            .name(format!("act/{jail}"))
            .spawn(move || {
                for a in &mut actions {
                    if let Err(e) = a.start() {
                        tracing::error!(jail = %name, "{e}");
                    }
                }
                while let Ok(ev) = rx.recv() {
                    let (info, what) = match &ev {
                        ActionEvent::Ban(i) => (i, 0),
                        ActionEvent::Restore(i) => (i, 1),
                        ActionEvent::Unban(i) => (i, 2),
                        ActionEvent::Restored => {
                            for a in &mut actions {
                                if let Err(e) = a.restored() {
                                    tracing::error!(jail = %name, "{e}");
                                }
                            }
                            continue;
                        }
                        ActionEvent::Stop => break,
                    };
                    for a in &mut actions {
                        let r = match what {
                            0 => a.ban(info),
                            1 => a.restore(info),
                            _ => a.unban(info),
                        };
                        if let Err(e) = r {
                            failed();
                            tracing::error!(jail = %name, ip = %info.ip, "{e}");
                        }
                    }
                }
                for a in &mut actions {
                    if let Err(e) = a.stop() {
                        tracing::error!(jail = %name, "{e}");
                    }
                }
            })?;
        Ok((ActionRunner { tx, errors }, handle))
    }

    pub fn send(&self, ev: ActionEvent) {
        let _ = self.tx.send(ev);
    }

    /// Action calls that failed since the jail started.
    pub fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }
}
