//! iptables with ipset, for hosts without nftables (Fail2Ban's
//! `iptables-*` action names).
//!
//! Owns how the firewall model ([`super::table`]) is written for iptables:
//! per jail two `hash:net` sets with timeouts (`bh-JAIL-v4`, `bh-JAIL-v6`;
//! the kernel lifts bans on time, daemon or not), and banhammer's own chains
//! (`banhammer-input`, `banhammer-forward`, and with a ban page
//! `banhammer-banpage` in `nat`) with one rule per jail and family, jumped
//! to from `INPUT`, `FORWARD` and `PREROUTING`. A rebuild loads the sets
//! with one `ipset restore` and the chains with one `iptables-restore
//! --noflush` per family; a batch is one `ipset restore -exist`, which
//! neither fails on an element that has expired nor on one that is there.
//! ipset takes timeouts up to 2147483 s (24.8 days): longer bans are
//! written with that and refreshed by the model.

use super::table::{JailRules, JailTable, Kernel, Ports, Redirect};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

/// ipset's longest timeout, in seconds.
const MAX_TIMEOUT: f64 = 2_147_483.0;

/// The chains banhammer owns, and the built-in chains that jump to them.
const CHAINS: &[(&str, &str, &str)] = &[
    ("filter", "INPUT", "banhammer-input"),
    ("filter", "FORWARD", "banhammer-forward"),
];
const NAT_CHAIN: (&str, &str, &str) = ("nat", "PREROUTING", "banhammer-banpage");

#[derive(Debug, Clone)]
pub struct IpsetKernel {
    pub redirect: Option<Redirect>,
}

/// Checks that a jail's rules can be written for iptables (the block
/// types it knows).
pub fn check_rules(rules: JailRules) -> Result<JailRules, String> {
    match rules.blocktype.as_str() {
        "drop" | "reject" | "reject with tcp reset" => Ok(rules),
        other => Err(format!(
            "blocktype {other:?} has no iptables form here (use DROP, REJECT or REJECT --reject-with tcp-reset)"
        )),
    }
}

/// An ipset name (at most 31 characters): `bh-JAIL-v4`, the jail name
/// shortened and made unique with a hash where needed.
pub fn set_name(jail: &str, v6: bool) -> String {
    let fam = if v6 { "v6" } else { "v4" };
    let clean: String = jail
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == jail && jail.len() <= 24 {
        return format!("bh-{jail}-{fam}");
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in jail.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let short: String = clean.chars().take(16).collect();
    format!("bh-{short}-{h:08x}-{fam}")
        .chars()
        .take(31)
        .collect()
}

fn element(key: &IpNet, end: Option<f64>, now: f64) -> Option<String> {
    let text = crate::jail::key_text(key);
    match end {
        None => Some(format!("{text} timeout 0")),
        Some(e) => {
            let s = (e - now).ceil().min(MAX_TIMEOUT);
            (s >= 1.0).then(|| format!("{text} timeout {}", s as u64))
        }
    }
}

fn run(argv: &[&str], input: &str) -> Result<(), String> {
    super::run_tool(argv, input, "iptables and ipset")
}

/// Whether `iptables -C` finds a rule (`table`, `chain`, `rule`).
fn has_rule(cmd: &str, table: &str, chain: &str, rule: &[&str]) -> bool {
    Command::new(cmd)
        .args(["-w", "-t", table, "-C", chain])
        .args(rule)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn rules_for(t: &JailTable, v6: bool) -> Vec<(&'static str, String)> {
    let r = &t.rules;
    let set = if v6 { &t.v6.name } else { &t.v4.name };
    let target = match r.blocktype.as_str() {
        "drop" => "DROP".to_string(),
        "reject with tcp reset" => "REJECT --reject-with tcp-reset".to_string(),
        _ if v6 => "REJECT --reject-with icmp6-port-unreachable".to_string(),
        _ => "REJECT --reject-with icmp-port-unreachable".to_string(),
    };
    let mut out = Vec::new();
    for p in &r.protocols {
        let ports = match &r.ports {
            Ports::All => String::new(),
            Ports::List(ports) => {
                let list: Vec<String> = ports.iter().map(|p| p.replace('-', ":")).collect();
                format!(" -m multiport --dports {}", list.join(","))
            }
        };
        let m = format!("-p {p}{ports} -m set --match-set {set} src -j {target}");
        out.push(("banhammer-input", m.clone()));
        // forwarded: the port the client asked for, before any DNAT (one
        // port or range per conntrack match)
        match &r.ports {
            Ports::All => out.push(("banhammer-forward", m)),
            Ports::List(ports) => {
                for port in ports {
                    out.push((
                        "banhammer-forward",
                        format!(
                            "-p {p} -m conntrack --ctorigdstport {} -m set --match-set {set} src -j {target}",
                            port.replace('-', ":")
                        ),
                    ));
                }
            }
        }
    }
    out
}

impl IpsetKernel {
    fn ensure_jumps(&self, v6: bool) -> Result<(), String> {
        let cmd = if v6 { "ip6tables" } else { "iptables" };
        let mut chains: Vec<(&str, &str, &str)> = CHAINS.to_vec();
        if self.redirect.is_some() {
            chains.push(NAT_CHAIN);
        }
        for (table, from, to) in chains {
            if !has_rule(cmd, table, from, &["-j", to]) {
                let st = Command::new(cmd)
                    .args(["-w", "-t", table, "-I", from, "1", "-j", to])
                    .stderr(Stdio::piped())
                    .output()
                    .map_err(|e| format!("{cmd}: {e}"))?;
                if !st.status.success() {
                    return Err(format!(
                        "{cmd} -t {table} -I {from} -j {to}: {}",
                        String::from_utf8_lossy(&st.stderr).trim()
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Kernel for IpsetKernel {
    fn backend(&self) -> &'static str {
        "iptables-ipset"
    }
    fn table(&self) -> String {
        "ipset bh-* + chains banhammer-*".into()
    }
    fn set_name(&self, jail: &str, v6: bool) -> String {
        set_name(jail, v6)
    }
    fn overlap_ok(&self) -> bool {
        true
    }
    fn max_timeout(&self) -> Option<f64> {
        Some(MAX_TIMEOUT)
    }

    fn rebuild(&mut self, jails: &BTreeMap<String, JailTable>, now: f64) -> Result<(), String> {
        let mut sets = String::new();
        for t in jails.values() {
            for (set, fam) in [(&t.v4, "inet"), (&t.v6, "inet6")] {
                sets.push_str(&format!(
                    "create {} hash:net family {fam} timeout 0 maxelem 1048576 -exist\nflush {}\n",
                    set.name, set.name
                ));
                for (k, e) in &set.elements {
                    if let Some(el) = element(k, *e, now) {
                        sets.push_str(&format!("add {} {el}\n", set.name));
                    }
                }
            }
        }
        run(&["ipset", "restore", "-exist"], &sets)?;
        for v6 in [false, true] {
            let mut text =
                String::from("*filter\n:banhammer-input - [0:0]\n:banhammer-forward - [0:0]\n");
            for t in jails.values() {
                for (chain, rule) in rules_for(t, v6) {
                    text.push_str(&format!("-A {chain} {rule}\n"));
                }
            }
            text.push_str("COMMIT\n");
            if let Some(r) = &self.redirect {
                text.push_str("*nat\n:banhammer-banpage - [0:0]\n");
                let ports: Vec<String> = r.ports.iter().map(u16::to_string).collect();
                for t in jails.values() {
                    let set = if v6 { &t.v6.name } else { &t.v4.name };
                    text.push_str(&format!(
                        "-A banhammer-banpage -p tcp -m multiport --dports {} -m set --match-set {set} src -j REDIRECT --to-ports {}\n",
                        ports.join(","),
                        r.to
                    ));
                }
                text.push_str("COMMIT\n");
            }
            let cmd = if v6 {
                "ip6tables-restore"
            } else {
                "iptables-restore"
            };
            run(&[cmd, "-w", "--noflush"], &text)?;
            self.ensure_jumps(v6)?;
        }
        Ok(())
    }

    fn add_lines(&self, out: &mut Vec<String>, set: &str, key: &IpNet, end: Option<f64>, now: f64) {
        if let Some(el) = element(key, end, now) {
            // -exist: a present element gets the new timeout
            out.push(format!("add {set} {el}"));
        }
    }

    fn remove_lines(&self, out: &mut Vec<String>, set: &str, key: &IpNet) {
        out.push(format!("del {set} {}", crate::jail::key_text(key)));
    }

    fn apply(&mut self, lines: &[String]) -> Result<(), String> {
        let mut s = lines.join("\n");
        s.push('\n');
        run(&["ipset", "restore", "-exist"], &s)
    }

    fn flush(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        for cmd in ["iptables", "ip6tables"] {
            let mut chains: Vec<(&str, &str, &str)> = CHAINS.to_vec();
            chains.push(NAT_CHAIN);
            for (table, from, to) in chains {
                while has_rule(cmd, table, from, &["-j", to]) {
                    let _ = Command::new(cmd)
                        .args(["-w", "-t", table, "-D", from, "-j", to])
                        .status();
                }
                for op in ["-F", "-X"] {
                    let _ = Command::new(cmd)
                        .args(["-w", "-t", table, op, to])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        // the sets of every jail banhammer made
        let out = Command::new("ipset")
            .args(["list", "-n"])
            .output()
            .map_err(|e| format!("ipset: {e}"))?;
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            if name.starts_with("bh-") && (name.ends_with("-v4") || name.ends_with("-v6")) {
                if let Err(e) = run(&["ipset", "destroy", name], "") {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::table::word_ok;

    #[test]
    fn set_names_fit_ipset() {
        assert_eq!(set_name("sshd", false), "bh-sshd-v4");
        let long = set_name("a-very-long-jail-name-for-a-web-application", true);
        assert!(long.len() <= 31, "{long}");
        assert!(long.ends_with("-v6"), "{long}");
        assert_ne!(set_name("a b", false), set_name("a_b", false));
        assert!(word_ok("bh-sshd-v4"));
    }

    #[test]
    fn long_bans_are_capped() {
        let k: IpNet = "192.0.2.1/32".parse().unwrap();
        assert_eq!(
            element(&k, Some(100.0 + 60.0), 100.0).unwrap(),
            "192.0.2.1 timeout 60"
        );
        assert_eq!(
            element(&k, Some(1e9), 0.0).unwrap(),
            "192.0.2.1 timeout 2147483"
        );
        assert_eq!(element(&k, None, 0.0).unwrap(), "192.0.2.1 timeout 0");
        assert!(element(&k, Some(10.0), 20.0).is_none());
    }
}
