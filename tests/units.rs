//! `units/banhammer.service` is a valid unit and a well-sandboxed one.

mod common;
use common::*;
use std::process::Command;

fn unit_with_test_binary(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("units/banhammer.service")).unwrap();
    let p = dir.join("banhammer.service");
    std::fs::write(&p, text.replace("/usr/local/bin/banhammer", bin())).unwrap();
    p
}

#[test]
fn the_service_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_test_binary(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {err}");
    assert!(
        !err.contains("banhammer.service"),
        "warnings about the unit: {err}"
    );
}

#[test]
fn the_service_unit_is_sandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_test_binary(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for banhammer.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in: {text}"));
    assert!(score <= 3.0, "exposure {score} (want at most 3.0):\n{text}");
    for needed in [
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
    ] {
        assert!(
            std::fs::read_to_string(&unit).unwrap().contains(needed),
            "unit lacks {needed}"
        );
    }
}
