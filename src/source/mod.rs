//! Sources: where log lines come from. Each source runs on its own thread
//! (file tailers, journal readers) and hands lines to one jail.

pub mod file;
pub mod journal;
pub mod syslog;

use crate::jail::{Checkpoint, JailMsg, Line, Matcher};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a source reports.
pub enum SourceEvent {
    Chunk {
        lines: Vec<Line>,
        checkpoint: Option<Checkpoint>,
    },
    Status {
        id: String,
        state: String,
    },
}

/// Runs a source on its own thread, running the jail's filter on each chunk
/// and delivering what it found to the jail's channel (waiting when the
/// jail is busy: backpressure, nothing dropped).
pub fn spawn<F>(
    name: String,
    matcher: Arc<Matcher>,
    jail: mpsc::Sender<JailMsg>,
    cancel: CancellationToken,
    run: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce(CancellationToken, &dyn Fn(SourceEvent) -> bool) + Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        let deliver = |ev: SourceEvent| -> bool {
            let msg = match ev {
                SourceEvent::Chunk { lines, checkpoint } => JailMsg::Chunk {
                    lines: lines.len() as u64,
                    found: matcher.scan(&lines),
                    checkpoint,
                },
                SourceEvent::Status { id, state } => JailMsg::Source { id, state },
            };
            jail.blocking_send(msg).is_ok()
        };
        run(cancel, &deliver);
    })
}

/// Sets the calling thread's nice value. Threads that work through a
/// backlog (matching, delivery) run at a positive one so that, when the
/// CPUs are short, the threads that must keep up with the network (the UDP
/// receiver) and with enforcement are served first. A negative value needs
/// CAP_SYS_NICE, which the shipped unit does not grant: there the call
/// fails and changes nothing.
pub fn set_thread_nice(nice: i32) {
    // SAFETY: setpriority with who = 0 changes the calling thread only.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
}
