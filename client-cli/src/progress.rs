//! The progress line on stderr while waiting: a spinner with the elapsed seconds when stderr is
//! a terminal, else one `waiting for …` line; nothing with `-q`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// A running progress display; [`Progress::finish`] clears it.
pub struct Progress {
    task: Option<JoinHandle<()>>,
    stopped: Arc<AtomicBool>,
}

impl Progress {
    /// Starts showing that we wait for `what`.
    pub fn start(what: &str, quiet: bool) -> Progress {
        let stopped = Arc::new(AtomicBool::new(false));
        if quiet {
            return Progress {
                task: None,
                stopped,
            };
        }
        if !std::io::stderr().is_terminal() {
            eprintln!("waiting for {what}");
            return Progress {
                task: None,
                stopped,
            };
        }
        let what = what.to_owned();
        let flag = Arc::clone(&stopped);
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let spin = ['|', '/', '-', '\\'];
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for i in 0usize.. {
                tick.tick().await;
                let s = start.elapsed().as_secs();
                let mut e = std::io::stderr().lock();
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let _ = write!(e, "\r\x1b[K{} waiting for {what} ({s} s)", spin[i % 4]);
                let _ = e.flush();
            }
        });
        Progress {
            task: Some(task),
            stopped,
        }
    }

    /// Stops and clears the line.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            let mut e = std::io::stderr().lock();
            self.stopped.store(true, Ordering::SeqCst);
            t.abort();
            let _ = write!(e, "\r\x1b[K");
            let _ = e.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}
