//! The `fota` binary as a child process: started with arguments, its stdout and stderr read
//! line by line on threads, so a test can wait (with a bound) for what it prints, and stopped
//! with SIGTERM.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running `fota` process and the lines it writes to stdout and stderr.
pub struct FotaProcess {
    pub child: Child,
    lines: Receiver<String>,
}

impl FotaProcess {
    /// Starts `fota ARGS` with `envs` added to its environment.
    pub fn spawn<I, S>(args: I, envs: &[(&str, &str)]) -> FotaProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fota"))
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fota starts");
        let (sender, lines) = channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        for output in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        FotaProcess { child, lines }
    }

    /// Waits up to `bound` for a line containing `text`; returns the line.
    pub fn logged(&mut self, text: &str, bound: Duration) -> String {
        let mut lines = self.lines_until(text, bound);
        lines.pop().expect("the line found")
    }

    /// Waits up to `bound` for a line containing `text`; returns every line printed since the
    /// last call, that one included.
    pub fn lines_until(&mut self, text: &str, bound: Duration) -> Vec<String> {
        let deadline = Instant::now() + bound;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    lines.push(line);
                    if found {
                        return lines;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "nothing printed {text:?} in {bound:?}:\n{}",
                        lines.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "fota exited before printing {text:?}:\n{}",
                        lines.join("\n")
                    )
                }
            }
        }
    }

    /// The first line containing `text` printed within `bound`, if one is (the lines before
    /// it are passed over).
    pub fn printed(&mut self, text: &str, bound: Duration) -> Option<String> {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The last `most` lines printed since the last wait on its lines: what a failed test
    /// shows of the engine's log.
    pub fn recent_lines(&self, most: usize) -> Vec<String> {
        let lines: Vec<String> = self.lines.try_iter().collect();
        lines[lines.len().saturating_sub(most)..].to_vec()
    }

    /// Asks the process to stop (SIGTERM); returns how it exited.
    pub fn terminate(mut self) -> ExitStatus {
        self.ask_to_stop();
        self.child.wait().expect("fota exits")
    }

    /// Sends SIGTERM, without waiting: what it prints while it stops is there to wait on.
    pub fn ask_to_stop(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

impl Drop for FotaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
