//! [`Watchdog`]: a shell tied to the test process that cleans up after it
//! however it ends.

use crate::{HarnessError, io_error};
use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};

/// A shell waiting for its standard input to close — the test process
/// ended (even by SIGKILL, or a panic that never unwinds) or the watchdog
/// was [fired](Watchdog::fire) — that then runs its script: stop or kill
/// the engine it watches, remove its directory.
#[derive(Debug)]
pub(crate) struct Watchdog {
    shell: Child,
    stdin: ChildStdin,
}

impl Watchdog {
    /// Starts the shell; `script` runs once its standard input closes.
    pub(crate) fn spawn(script: &str) -> Result<Self, HarnessError> {
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(format!("while read -r _; do :; done; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_error("watchdog shell"))?;
        let stdin = shell.stdin.take().expect("piped stdin");
        Ok(Self { shell, stdin })
    }

    /// Runs the script now, as the end of the test process would, and waits
    /// for it; whether it succeeded.
    pub(crate) fn fire(self) -> bool {
        let Self {
            mut shell,
            mut stdin,
        } = self;
        let _ = stdin.flush();
        drop(stdin);
        shell.wait().is_ok_and(|status| status.success())
    }

    /// Stops the shell without running the script: what it watches is gone
    /// (and its process id may be reused, so it must never be signalled).
    pub(crate) fn disarm(self) {
        let Self { mut shell, stdin } = self;
        let _ = shell.kill();
        let _ = shell.wait();
        drop(stdin);
    }
}
