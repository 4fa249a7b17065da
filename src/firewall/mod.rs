//! Enforcement: the actions a jail runs when it bans and unbans.
//!
//! Owns the action interface every backend implements (nftables and
//! command actions plug in here in the firewall issue) and the runner
//! thread that feeds a jail's actions in order. A failing action is logged
//! and does not affect the ban, which is already in the database.

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

/// Builds the actions a jail names; names without a backend yet fall back
/// to `log` (returned as warnings).
pub fn build_actions(jail: &str, names: &[String]) -> (Vec<Box<dyn Action>>, Vec<String>) {
    let mut out: Vec<Box<dyn Action>> = Vec::new();
    let mut warnings = Vec::new();
    let mut logged = false;
    for n in names {
        match n.as_str() {
            "dummy" => out.push(Box::new(DummyAction)),
            "log" => {
                if !logged {
                    out.push(Box::new(LogAction {
                        jail: jail.to_string(),
                    }));
                    logged = true;
                }
            }
            other => {
                warnings.push(format!(
                    "jail '{jail}': action '{other}' has no backend in this version; bans are recorded and logged only"
                ));
                if !logged {
                    out.push(Box::new(LogAction {
                        jail: jail.to_string(),
                    }));
                    logged = true;
                }
            }
        }
    }
    if out.is_empty() {
        out.push(Box::new(LogAction {
            jail: jail.to_string(),
        }));
    }
    (out, warnings)
}

pub enum ActionEvent {
    Ban(Arc<BanInfo>),
    Restore(Arc<BanInfo>),
    Unban(Arc<BanInfo>),
    Stop,
}

/// A jail's actions, run in order on their own thread.
#[derive(Clone)]
pub struct ActionRunner {
    tx: mpsc::Sender<ActionEvent>,
}

impl ActionRunner {
    pub fn spawn(
        jail: &str,
        mut actions: Vec<Box<dyn Action>>,
    ) -> std::io::Result<(ActionRunner, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<ActionEvent>();
        let name = jail.to_string();
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
                        ActionEvent::Stop => break,
                    };
                    for a in &mut actions {
                        let r = match what {
                            0 => a.ban(info),
                            1 => a.restore(info),
                            _ => a.unban(info),
                        };
                        if let Err(e) = r {
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
        Ok((ActionRunner { tx }, handle))
    }

    pub fn send(&self, ev: ActionEvent) {
        let _ = self.tx.send(ev);
    }
}
