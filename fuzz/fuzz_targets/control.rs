//! The control-socket protocol and the JSON API's bodies: any line is a
//! request or a clean error, a request survives a round trip, and the
//! addresses in it are parsed (or refused) without a panic.
#![no_main]
use banhammer::control::Request;
use banhammer::web::api::BanBody;
use libfuzzer_sys::fuzz_target;

fn addresses(r: &Request) -> Option<&Vec<String>> {
    match r {
        Request::Ban { ips, .. } | Request::Unban { ips, .. } | Request::Banned { ips } => {
            Some(ips)
        }
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<Request>(data) {
        let back = serde_json::to_string(&r).expect("a request serialises");
        let again: Request = serde_json::from_str(&back).expect("and parses back");
        assert_eq!(again, r);
        if let Some(ips) = addresses(&r) {
            let _ = banhammer::daemon::parse_ips(ips);
        }
    }
    if let Ok(b) = serde_json::from_slice::<BanBody>(data) {
        for r in [b.ban().ok(), Some(b.unban())].into_iter().flatten() {
            if let Some(ips) = addresses(&r) {
                if let Ok(parsed) = banhammer::daemon::parse_ips(ips) {
                    assert_eq!(parsed.len(), ips.len());
                }
            }
        }
    }
});
