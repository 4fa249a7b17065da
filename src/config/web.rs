//! `[web]` and `[firewall]` in `banhammer.conf`: the ban page and admin
//! listeners, who may speak for a visitor (`trusted_proxies`), what the ban
//! page says, and the nftables settings. Resolved and validated here
//! (addresses parsed, ports checked); the web and firewall layers only read
//! the result.

use super::ini::{Config, Vars};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub struct WebConfig {
    /// Where the ban page listens (the target of the nftables redirect).
    pub banpage_listen: Option<SocketAddr>,
    /// TCP ports of banned visitors redirected to the ban page.
    pub banpage_ports: Vec<u16>,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Whom a banned visitor may contact (shown on the ban page).
    pub contact: Option<String>,
    /// A paragraph on how to appeal (shown on the ban page).
    pub appeal: Option<String>,
    /// The ban page shows the log lines that led to the ban.
    pub show_log_lines: bool,
    /// The operator's name for the site (page title).
    pub site_name: Option<String>,
    pub admin_listen: Option<SocketAddr>,
    /// argon2 hash of the admin password (`banhammer hash-password`).
    pub admin_password_hash: Option<String>,
    /// Bearer tokens for `/api/v1`.
    pub api_tokens: Vec<String>,
    /// TLS for the admin listener (the session cookie is then `Secure`).
    pub admin_tls_cert: Option<PathBuf>,
    pub admin_tls_key: Option<PathBuf>,
}

impl Default for WebConfig {
    fn default() -> WebConfig {
        WebConfig {
            banpage_listen: None,
            banpage_ports: vec![80],
            trusted_proxies: Vec::new(),
            contact: None,
            appeal: None,
            show_log_lines: false,
            site_name: None,
            admin_listen: None,
            admin_password_hash: None,
            api_tokens: Vec::new(),
            admin_tls_cert: None,
            admin_tls_key: None,
        }
    }
}

const WEB_KEYS: &[&str] = &[
    "banpage_listen",
    "banpage_ports",
    "trusted_proxies",
    "contact",
    "appeal",
    "show_log_lines",
    "site_name",
    "admin_listen",
    "admin_password_hash",
    "api_tokens",
    "admin_tls_cert",
    "admin_tls_key",
];

/// `[firewall]`: the nftables backend.
#[derive(Debug, Clone, PartialEq)]
pub struct FirewallConfig {
    /// The `nft` binary.
    pub nft: String,
}

impl Default for FirewallConfig {
    fn default() -> FirewallConfig {
        FirewallConfig { nft: "nft".into() }
    }
}

fn section_get(raw: &Config, section: &str, key: &str) -> Result<Option<String>, String> {
    raw.get(section, key, &Vars::new())
        .map(|v| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .map_err(|e| e.to_string())
}

fn warn_unknown(raw: &Config, section: &str, keys: &[&str], warnings: &mut Vec<String>) {
    for key in raw.own_options(section) {
        if !keys.contains(&key.as_str()) {
            warnings.push(format!("[{section}]: unknown option '{key}' ignored"));
        }
    }
}

/// `127.0.0.1:8080`, `[::]:80`, or a bare port (all addresses).
fn parse_listen(key: &str, v: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = v.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    v.parse::<SocketAddr>().map_err(|_| {
        format!("[web] {key} = {v:?}: write ADDRESS:PORT, such as 0.0.0.0:8080 or [::]:8080")
    })
}

impl WebConfig {
    pub fn read(raw: &Config, warnings: &mut Vec<String>) -> Result<WebConfig, String> {
        let mut c = WebConfig::default();
        if !raw.has_section("web") {
            return Ok(c);
        }
        warn_unknown(raw, "web", WEB_KEYS, warnings);
        let get = |k: &str| section_get(raw, "web", k);
        if let Some(v) = get("banpage_listen")? {
            c.banpage_listen = Some(parse_listen("banpage_listen", &v)?);
        }
        if let Some(v) = get("admin_listen")? {
            c.admin_listen = Some(parse_listen("admin_listen", &v)?);
        }
        if let Some(v) = get("banpage_ports")? {
            c.banpage_ports = v
                .split([' ', ',', '\n'])
                .filter(|w| !w.is_empty())
                .map(|w| {
                    w.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("[web] banpage_ports: {w:?} is not a TCP port"))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("trusted_proxies")? {
            c.trusted_proxies = v
                .split([' ', ',', '\n'])
                .filter(|w| !w.is_empty())
                .map(|w| {
                    w.parse::<IpNet>()
                        .or_else(|_| w.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            format!("[web] trusted_proxies: {w:?} is not an address or CIDR")
                        })
                })
                .collect::<Result<_, _>>()?;
        }
        c.contact = get("contact")?;
        c.appeal = get("appeal")?;
        c.site_name = get("site_name")?;
        c.show_log_lines = match get("show_log_lines")?.as_deref() {
            None => false,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "yes" | "true" | "on" => true,
                "0" | "no" | "false" | "off" => false,
                _ => return Err(format!("[web] show_log_lines = {v:?}: use yes or no")),
            },
        };
        c.admin_password_hash = get("admin_password_hash")?;
        c.api_tokens = get("api_tokens")?
            .map(|v| v.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        c.admin_tls_cert = get("admin_tls_cert")?.map(PathBuf::from);
        c.admin_tls_key = get("admin_tls_key")?.map(PathBuf::from);
        if c.admin_tls_cert.is_some() != c.admin_tls_key.is_some() {
            return Err("[web] admin_tls_cert and admin_tls_key go together".into());
        }
        Ok(c)
    }
}

impl FirewallConfig {
    pub fn read(raw: &Config, warnings: &mut Vec<String>) -> Result<FirewallConfig, String> {
        let mut c = FirewallConfig::default();
        if !raw.has_section("firewall") {
            return Ok(c);
        }
        warn_unknown(raw, "firewall", &["nft"], warnings);
        if let Some(v) = section_get(raw, "firewall", "nft")? {
            c.nft = v;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<WebConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("banhammer.conf");
        std::fs::write(&p, text).unwrap();
        let raw = Config::read_files(&[p]).map_err(|e| e.to_string())?;
        WebConfig::read(&raw, &mut Vec::new())
    }

    #[test]
    fn listeners_ports_and_proxies() {
        let c = read("[web]\nbanpage_listen = 8080\nbanpage_ports = 80 8000\ntrusted_proxies = 10.0.0.1 192.168.0.0/16\ncontact = abuse@example.org\n").unwrap();
        assert_eq!(c.banpage_listen, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(c.banpage_ports, [80, 8000]);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.contact.as_deref(), Some("abuse@example.org"));
        let e = read("[web]\nbanpage_ports = http\n").unwrap_err();
        assert!(e.contains("banpage_ports"), "{e}");
        let e = read("[web]\nbanpage_listen = localhost\n").unwrap_err();
        assert!(e.contains("ADDRESS:PORT"), "{e}");
    }
}
