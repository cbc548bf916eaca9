//! Process tests: a test binary starts itself again as "the other
//! process" (another writer, a worker to kill), which runs only its
//! ignored `child_process_entry_point` test and talks back through
//! standard output.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// This test binary again, running only its ignored
/// `child_process_entry_point` test, its output passed through
/// (`--nocapture`) for the parent to read. Add the environment that tells
/// the child what to do.
pub fn child_process() -> Command {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"));
    child.args([
        "child_process_entry_point",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    child
}

/// Waits for `child` without holding up the runtime, asserts that it
/// exited cleanly, and returns what it printed.
pub async fn finished(child: Child) -> String {
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the other process failed: {stdout}"
    );
    stdout
}

/// What a child process reported: the rest of each line it began with
/// `RESULT ` (the test harness may print its own words before the first).
pub fn results(stdout: &str) -> Vec<&str> {
    stdout
        .split("RESULT ")
        .skip(1)
        .filter_map(|chunk| chunk.lines().next())
        .collect()
}

/// For the child: lines sent here reach standard output in order, each
/// flushed before the next is taken, so a parent that kills the child
/// has read every line sent before the kill.
pub fn report_lines() -> std::sync::mpsc::Sender<String> {
    let (report, reports) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for line in reports {
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    });
    report
}

/// Starts `command`, waits for a line ending in `READY`, lets the child
/// run `after` longer, kills it with SIGKILL and returns every line it
/// printed after `READY`. Blocks: call it from `spawn_blocking`.
pub fn run_until_killed(mut command: Command, after: Duration) -> Vec<String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The test harness prints its own lines first.
    let started = lines_rx
        .iter()
        .take(100)
        .any(|line| line.ends_with("READY"));
    assert!(started, "the child started");
    std::thread::sleep(after);
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    reader.join().expect("reader thread");
    lines_rx.try_iter().collect()
}
