//! Control: a unix socket speaking JSON lines, and the CLI that talks to it.
//!
//! Owns the protocol (one request object per line, one response per line),
//! the listener (which forwards requests to the daemon's main loop and
//! writes back what it answers) and the client side with its tables.

pub mod client;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Ping,
    Status {
        #[serde(default)]
        jail: Option<String>,
    },
    Banned {
        #[serde(default)]
        ips: Vec<String>,
    },
    Ban {
        jail: String,
        ips: Vec<String>,
    },
    Unban {
        #[serde(default)]
        ips: Vec<String>,
        #[serde(default)]
        all: bool,
    },
    Reload {
        #[serde(default)]
        jail: Option<String>,
    },
    Stop {
        /// Also remove the firewall table (bans stop working).
        #[serde(default)]
        flush: bool,
    },
    /// The webhook outbox: `list` (optionally one `state`), `cancel` or
    /// `retry` one message by `id`, `counts` per state.
    Outbox {
        action: String,
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        state: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    pub fn err(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(msg.into()),
        }
    }
}

/// A request on its way to the daemon, with where to send the answer.
pub type Incoming = (Request, oneshot::Sender<Response>);

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("control socket {}: {cause}", path.display())]
pub struct ControlError {
    pub path: PathBuf,
    pub cause: std::io::Error,
}

/// Binds the socket (root-only: mode 0600), replacing a stale one.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let err = |cause| ControlError {
        path: path.to_path_buf(),
        cause,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another banhammer is running (the socket answers); stop it first",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

/// Accepts connections until `cancel`; each request goes to `to_daemon`.
pub async fn serve(
    listener: UnixListener,
    to_daemon: mpsc::Sender<Incoming>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                let tx = to_daemon.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    let (rd, mut wr) = stream.into_split();
                    let mut lines = BufReader::new(rd).lines();
                    loop {
                        let line = tokio::select! {
                            _ = cancel.cancelled() => break,
                            l = lines.next_line() => l,
                        };
                        let Ok(Some(line)) = line else { break };
                        if line.trim().is_empty() {
                            continue;
                        }
                        let resp = if line.len() > MAX_LINE {
                            Response::err("request too long")
                        } else {
                            match serde_json::from_str::<Request>(&line) {
                                Err(e) => Response::err(format!("bad request: {e}")),
                                Ok(req) => {
                                    let (reply, rx) = oneshot::channel();
                                    if tx.send((req, reply)).await.is_err() {
                                        Response::err("the daemon is shutting down")
                                    } else {
                                        rx.await.unwrap_or_else(|_| Response::err("no answer (the daemon is shutting down)"))
                                    }
                                }
                            }
                        };
                        let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode the answer"}"#.into());
                        out.push('\n');
                        if wr.write_all(out.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_round_trip() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"ban","jail":"sshd","ips":["192.0.2.1"]}"#).unwrap();
        assert_eq!(
            r,
            Request::Ban {
                jail: "sshd".into(),
                ips: vec!["192.0.2.1".into()]
            }
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"status"}"#).unwrap();
        assert_eq!(r, Request::Status { jail: None });
        let r: Request = serde_json::from_str(r#"{"cmd":"unban","all":true}"#).unwrap();
        assert_eq!(
            r,
            Request::Unban {
                ips: vec![],
                all: true
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }
}
