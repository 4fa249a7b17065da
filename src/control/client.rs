//! The CLI side of the control socket: sends one request, prints the answer
//! as a table (or as JSON with `--json`).

use super::{Request, Response};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {cause} (is the daemon running? see `banhammer run`; the socket is set by `socket =` in banhammer.conf or --socket)")]
    Connect { path: String, cause: std::io::Error },
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon sent something that is not an answer: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and returns the daemon's result.
pub fn call(socket: &Path, req: &Request) -> Result<Value, ClientError> {
    let mut s = UnixStream::connect(socket).map_err(|cause| ClientError::Connect {
        path: socket.display().to_string(),
        cause,
    })?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    let resp: Response = serde_json::from_str(&answer)
        .map_err(|e| ClientError::Protocol(format!("{e}: {answer:?}")))?;
    if resp.ok {
        Ok(resp.result.unwrap_or(Value::Null))
    } else {
        Err(ClientError::Refused(
            resp.error.unwrap_or_else(|| "refused".into()),
        ))
    }
}

/// Aligned columns; numbers right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| r.get(i).is_some_and(|c| c.parse::<f64>().is_ok()))
        })
        .collect();
    let fmt_row = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                s.push_str("  ");
            }
            if numeric.get(i).copied().unwrap_or(false) {
                s.push_str(&format!("{c:>w$}"));
            } else if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}"));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = fmt_row(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&fmt_row(r.clone()));
        out.push('\n');
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `1h 02m` style.
pub fn human_duration(secs: f64) -> String {
    let secs = secs.max(0.0) as u64;
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

fn local_time(epoch: f64) -> String {
    let t = crate::filter::date::local_naive(epoch);
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Human form of a result.
pub fn render(req: &Request, v: &Value) -> String {
    match req {
        Request::Status { jail: None } => {
            let empty = Vec::new();
            let jails = v.get("jails").and_then(Value::as_array).unwrap_or(&empty);
            let rows: Vec<Vec<String>> = jails
                .iter()
                .map(|j| {
                    vec![
                        s(&j["name"]),
                        s(&j["filter"]),
                        s(&j["currently_failed"]),
                        s(&j["total_failed"]),
                        s(&j["currently_banned"]),
                        s(&j["total_banned"]),
                        s(&j["lines"]),
                    ]
                })
                .collect();
            let mut out = format!("banhammer {} — {} jail(s)\n", s(&v["version"]), jails.len());
            out.push_str(&table(
                &[
                    "JAIL", "FILTER", "FAILING", "FAILURES", "BANNED", "BANS", "LINES",
                ],
                &rows,
            ));
            if let Some(sys) = v.get("syslog").filter(|x| !x.is_null()) {
                out.push_str(&format!(
                    "\nsyslog: listening on {}\n",
                    list(&sys["listen"])
                ));
                if let Some(c) = sys["counters"].as_object() {
                    let rows: Vec<Vec<String>> =
                        c.iter().map(|(k, n)| vec![k.clone(), s(n)]).collect();
                    out.push_str(&table(&["COUNTER", "VALUE"], &rows));
                }
            }
            if let Some(fw) = v
                .get("firewall")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
            {
                let rows: Vec<Vec<String>> = fw
                    .iter()
                    .map(|f| {
                        vec![
                            s(&f["backend"]),
                            s(&f["table"]),
                            s(&f["jails"]),
                            s(&f["elements"]),
                            s(&f["batches"]),
                            s(&f["errors"]),
                            f["last_error"].as_str().unwrap_or("-").to_string(),
                        ]
                    })
                    .collect();
                out.push('\n');
                out.push_str(&table(
                    &[
                        "FIREWALL",
                        "TABLE",
                        "JAILS",
                        "BANS",
                        "BATCHES",
                        "ERRORS",
                        "LAST ERROR",
                    ],
                    &rows,
                ));
            }
            if let Some(skipped) = v
                .get("skipped")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
            {
                out.push_str("\nskipped:\n");
                for p in skipped {
                    out.push_str(&format!("  {}\n", s(p)));
                }
            }
            out
        }
        Request::Status { jail: Some(_) } => {
            let mut out = String::new();
            let field = |k: &str| s(&v[k]);
            out.push_str(&format!(
                "Jail      {}\nFilter    {}\nBackend   {}\n",
                field("name"),
                field("filter"),
                field("backend")
            ));
            out.push_str(&format!(
                "Failures  {} source(s) failing now, {} failures in total\nBans      {} active, {} in total\nLines     {}\n",
                field("currently_failed"),
                field("total_failed"),
                field("currently_banned"),
                field("total_banned"),
                field("lines")
            ));
            if let Some(srcs) = v["sources"].as_array() {
                for src in srcs {
                    out.push_str(&format!("Source    {} ({})\n", s(&src[0]), s(&src[1])));
                }
            }
            if let Some(b) = v["banned"].as_array().filter(|a| !a.is_empty()) {
                out.push_str(&format!(
                    "Banned    {}\n",
                    b.iter().map(s).collect::<Vec<_>>().join(" ")
                ));
            }
            if let Some(senders) = v["senders"].as_array().filter(|a| !a.is_empty()) {
                let rows: Vec<Vec<String>> = senders
                    .iter()
                    .map(|x| {
                        vec![
                            x["host"].as_str().unwrap_or("-").to_string(),
                            s(&x["peer"]),
                            s(&x["failures"]),
                            local_time(x["last"].as_f64().unwrap_or(0.0)),
                        ]
                    })
                    .collect();
                out.push_str("\nSyslog senders with failures:\n");
                out.push_str(&table(&["HOST", "PEER", "FAILURES", "LAST"], &rows));
            }
            out
        }
        Request::Banned { .. } => {
            let now = crate::jail::now();
            let empty = Vec::new();
            let rows: Vec<Vec<String>> = v
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|b| {
                    let end = b["end"].as_f64();
                    vec![
                        s(&b["ip"]),
                        s(&b["jail"]),
                        local_time(b["start"].as_f64().unwrap_or(0.0)),
                        end.map_or("never".into(), local_time),
                        end.map_or("forever".into(), |e| human_duration(e - now)),
                        s(&b["failures"]),
                    ]
                })
                .collect();
            if rows.is_empty() {
                return "no active bans\n".into();
            }
            table(
                &["ADDRESS", "JAIL", "SINCE", "UNTIL", "REMAINING", "FAILURES"],
                &rows,
            )
        }
        Request::Ban { jail, .. } => format!("banned in {jail}: {}\n", list(v)),
        Request::Unban { .. } => {
            let l = list(v);
            if l.is_empty() {
                "nothing to unban\n".into()
            } else {
                format!("unbanned: {l}\n")
            }
        }
        Request::Reload { .. } => format!("{}\n", s(v)),
        Request::Ping => "pong\n".into(),
        Request::Stop { .. } => "stopping\n".into(),
        Request::Outbox { action, .. } if action == "list" => {
            let empty = Vec::new();
            let rows: Vec<Vec<String>> = v
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|m| {
                    vec![
                        s(&m["id"]),
                        s(&m["webhook"]),
                        s(&m["event"]),
                        s(&m["ip"]),
                        s(&m["state"]),
                        m["due"].as_f64().map(local_time).unwrap_or_default(),
                        s(&m["attempts"]),
                        m["last_error"]
                            .as_str()
                            .unwrap_or("")
                            .chars()
                            .take(60)
                            .collect(),
                    ]
                })
                .collect();
            if rows.is_empty() {
                return "no messages\n".into();
            }
            table(
                &[
                    "ID",
                    "WEBHOOK",
                    "EVENT",
                    "ADDRESS",
                    "STATE",
                    "DUE",
                    "TRIES",
                    "LAST ERROR",
                ],
                &rows,
            )
        }
        Request::Outbox { action, id, .. } => match action.as_str() {
            "cancel" => format!("cancelled {}\n", id.as_deref().unwrap_or_default()),
            "retry" => format!(
                "{} will be sent again now\n",
                id.as_deref().unwrap_or_default()
            ),
            _ => format!("{v}\n"),
        },
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "NUM", "LAST"],
            &[
                vec!["x".into(), "5".into(), "end".into()],
                vec!["long".into(), "123".into(), "e".into()],
            ],
        );
        assert_eq!(t, "A     NUM  LAST\nx       5  end\nlong  123  e\n");
        assert_eq!(human_duration(3725.0), "1h 02m");
        assert_eq!(human_duration(59.0), "59s");
    }
}
