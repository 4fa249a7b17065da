//! Native nftables: one table, `inet banhammer`.
//!
//! Owns how the firewall model ([`super::table`]) is written for nftables:
//! per jail a set of addresses for each family with `flags timeout`
//! (`JAIL_v4`, `JAIL_v6`; the kernel lifts bans on time even while the
//! daemon is down) and one of networks with `flags interval, timeout`
//! (`JAIL_v4net`, `JAIL_v6net`, for `ipv6prefix` bans; nft reads an
//! interval set whole before every change, so addresses stay out of them),
//! drop/reject rules in an `input` and a `forward` chain at
//! priority `filter - 10` (forwarded and container traffic is covered, not
//! only local services; the forward rules match the port the client asked
//! for, before any DNAT), and, with a ban page configured, a `nat`
//! prerouting chain that redirects banned visitors' HTTP ports to it. A
//! rebuild replaces the whole table in one `nft -f -` transaction; a batch
//! uses idioms that succeed whether or not an element has expired in the
//! meantime (nft 1.0.6 has no `destroy`). Interval sets cannot hold
//! overlapping elements, which the model takes care of.

use super::table::{JailTable, Kernel, Ports, Redirect};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::process::Command;

/// The table banhammer owns.
pub const TABLE: &str = "banhammer";

/// The nftables backend.
#[derive(Debug, Clone)]
pub struct NftKernel {
    /// The `nft` binary.
    pub nft: String,
    pub redirect: Option<Redirect>,
}

impl Default for NftKernel {
    fn default() -> NftKernel {
        NftKernel {
            nft: "nft".into(),
            redirect: None,
        }
    }
}

impl Kernel for NftKernel {
    fn backend(&self) -> &'static str {
        "nftables"
    }
    fn table(&self) -> String {
        format!("inet {TABLE}")
    }
    fn set_name(&self, jail: &str, v6: bool) -> String {
        set_name(jail, v6)
    }
    fn overlap_ok(&self) -> bool {
        false
    }
    fn rebuild(&mut self, jails: &BTreeMap<String, JailTable>, now: f64) -> Result<(), String> {
        run_nft(
            &self.nft,
            &rebuild_script(jails, self.redirect.as_ref(), now),
        )
    }
    fn add_lines(&self, out: &mut Vec<String>, set: &str, key: &IpNet, end: Option<f64>, now: f64) {
        add_lines(out, set, key, end, now)
    }
    fn remove_lines(&self, out: &mut Vec<String>, set: &str, key: &IpNet) {
        remove_lines(out, set, key)
    }
    fn apply(&mut self, lines: &[String]) -> Result<(), String> {
        let mut s = lines.join("\n");
        s.push('\n');
        run_nft(&self.nft, &s)
    }
    fn flush(&mut self) -> Result<(), String> {
        run_nft(
            &self.nft,
            &format!("add table inet {TABLE}\ndelete table inet {TABLE}\n"),
        )
    }
}

/// A set's name for a jail: the jail name reduced to what nft accepts
/// everywhere, made unique with a hash when that changed it.
pub fn set_name(jail: &str, v6: bool) -> String {
    let clean: String = jail
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = if clean == jail && jail.starts_with(|c: char| c.is_ascii_alphabetic()) {
        clean
    } else {
        let mut h: u32 = 0x811c_9dc5;
        for b in jail.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        format!("j_{clean}_{h:08x}")
    };
    format!("{base}_{}", if v6 { "v6" } else { "v4" })
}

/// The kernel set a key lives in: single addresses in the jail's hash set
/// (`JAIL_v4`, `JAIL_v6`: cheap to change whatever their size), networks in
/// its interval set (`JAIL_v6net`), which nft handles much more slowly.
fn target(set: &str, key: &IpNet) -> String {
    if key.prefix_len() < key.max_prefix_len() {
        format!("{set}net")
    } else {
        set.to_string()
    }
}

fn element(key: &IpNet, end: Option<f64>, now: f64) -> Option<String> {
    let text = crate::jail::key_text(key);
    match end {
        None => Some(text),
        Some(e) => {
            let ms = ((e - now) * 1000.0).ceil();
            (ms >= 1.0).then(|| format!("{text} timeout {}ms", ms as u64))
        }
    }
}

/// The whole table, from scratch, in one transaction.
pub(super) fn rebuild_script(
    jails: &BTreeMap<String, JailTable>,
    redirect: Option<&Redirect>,
    now: f64,
) -> String {
    let mut s = String::with_capacity(4096);
    s.push_str(&format!(
        "add table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n"
    ));
    for j in jails.values() {
        for (set, ty) in [(&j.v4, "ipv4_addr"), (&j.v6, "ipv6_addr")] {
            for net in [false, true] {
                let name = if net {
                    format!("{}net", set.name)
                } else {
                    set.name.clone()
                };
                let flags = if net { "interval, timeout" } else { "timeout" };
                s.push_str(&format!("  set {name} {{\n    type {ty}; flags {flags};\n"));
                let elems: Vec<String> = set
                    .elements
                    .iter()
                    .filter(|(k, _)| (k.prefix_len() < k.max_prefix_len()) == net)
                    .filter(|(k, _)| set.container(k).is_none())
                    .filter_map(|(k, e)| element(k, *e, now))
                    .collect();
                if !elems.is_empty() {
                    s.push_str("    elements = {\n      ");
                    s.push_str(&elems.join(",\n      "));
                    s.push_str("\n    }\n");
                }
                s.push_str("  }\n");
            }
        }
    }
    let mut input = Vec::new();
    let mut forward = Vec::new();
    let mut nat = Vec::new();
    if let Some(r) = redirect {
        // a banned visitor redirected to the ban page must reach it, even
        // from a jail that closes every port
        input.push(format!("ct status dnat tcp dport {} accept", r.to));
    }
    for j in jails.values() {
        let r = &j.rules;
        let sets = [
            ("ip", j.v4.name.clone()),
            ("ip", format!("{}net", j.v4.name)),
            ("ip6", j.v6.name.clone()),
            ("ip6", format!("{}net", j.v6.name)),
        ];
        for (fam, set) in &sets {
            match &r.ports {
                Ports::All => {
                    let rule = format!(
                        "meta l4proto {{ {} }} {fam} saddr @{set} {}",
                        r.protocols.join(", "),
                        r.blocktype
                    );
                    input.push(rule.clone());
                    forward.push(rule);
                }
                Ports::List(ports) => {
                    let ports = ports.join(", ");
                    for p in &r.protocols {
                        input.push(format!(
                            "meta l4proto {p} th dport {{ {ports} }} {fam} saddr @{set} {}",
                            r.blocktype
                        ));
                        // the port the client asked for, also when it was
                        // translated on the way to a container
                        forward.push(format!(
                            "meta l4proto {p} ct original proto-dst {{ {ports} }} {fam} saddr @{set} {}",
                            r.blocktype
                        ));
                    }
                }
            }
            if let Some(rd) = redirect {
                let ports: Vec<String> = rd.ports.iter().map(u16::to_string).collect();
                nat.push(format!(
                    "{fam} saddr @{set} tcp dport {{ {} }} redirect to :{}",
                    ports.join(", "),
                    rd.to
                ));
            }
        }
    }
    let chain = |s: &mut String, name: &str, head: &str, rules: &[String]| {
        s.push_str(&format!("  chain {name} {{\n    {head}\n"));
        for r in rules {
            s.push_str(&format!("    {r}\n"));
        }
        s.push_str("  }\n");
    };
    chain(
        &mut s,
        "input",
        "type filter hook input priority filter - 10; policy accept;",
        &input,
    );
    chain(
        &mut s,
        "forward",
        "type filter hook forward priority filter - 10; policy accept;",
        &forward,
    );
    if redirect.is_some() {
        chain(
            &mut s,
            "banpage",
            "type nat hook prerouting priority dstnat - 10; policy accept;",
            &nat,
        );
    }
    s.push_str("}\n");
    s
}

/// Lines that put `key` into set `set` (or refresh its timeout), whether or
/// not it is there or has just expired.
fn add_lines(out: &mut Vec<String>, set: &str, key: &IpNet, end: Option<f64>, now: f64) {
    let Some(el) = element(key, end, now) else {
        return;
    };
    remove_lines(out, set, key);
    let set = target(set, key);
    out.push(format!("add element inet {TABLE} {set} {{ {el} }}"));
}

/// Lines that take `key` out of set `set`, whether or not it is there.
fn remove_lines(out: &mut Vec<String>, set: &str, key: &IpNet) {
    let k = crate::jail::key_text(key);
    let set = target(set, key);
    out.push(format!(
        "add element inet {TABLE} {set} {{ {k} timeout 1s }}"
    ));
    out.push(format!("delete element inet {TABLE} {set} {{ {k} }}"));
}

/// Runs `nft -f -` with `script`; the error is nft's own message.
fn run_nft(nft: &str, script: &str) -> Result<(), String> {
    super::run_tool(&[nft, "-f", "-"], script, "nftables")
}

/// Reads the elements of a jail's sets back from the kernel (`nft -j`):
/// for tests and `banhammer status`.
pub fn list_elements(nft: &str, jail: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        let set = set_name(jail, v6);
        let o = Command::new(nft)
            .args(["-j", "list", "set", "inet", TABLE, &set])
            .output()
            .map_err(|e| format!("{nft}: {e}"))?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).map_err(|e| format!("nft -j: {e}"))?;
        let sets = v["nftables"].as_array().cloned().unwrap_or_default();
        for s in sets {
            for e in s["set"]["elem"].as_array().cloned().unwrap_or_default() {
                let val = if e["elem"].is_object() {
                    &e["elem"]["val"]
                } else {
                    &e
                };
                let text = match val {
                    serde_json::Value::String(s) => s.clone(),
                    v if v["prefix"].is_object() => format!(
                        "{}/{}",
                        v["prefix"]["addr"].as_str().unwrap_or_default(),
                        v["prefix"]["len"]
                    ),
                    v => v.to_string(),
                };
                out.push(text);
            }
        }
    }
    Ok(out)
}
