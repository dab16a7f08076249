//! Running untrusted programs (a model's generated code and its tests): each in its own session
//! and process group, in a fresh temporary directory that is removed afterwards, with a clean
//! environment, resource limits, output caps, and a wall-clock timeout that kills the whole
//! group — background children included — never a hang.
//!
//! | limit | how |
//! |---|---|
//! | wall time | polled; on expiry `SIGKILL` to the process group |
//! | CPU time | `RLIMIT_CPU`: `SIGXCPU` at the limit, `SIGKILL` from the kernel a second later if it is ignored |
//! | memory | `RLIMIT_AS` (allocations fail) |
//! | file size | `RLIMIT_FSIZE` (`SIGXFSZ`) |
//! | processes | `RLIMIT_NPROC`, per user: enforced because a sandbox started by root runs its program as a user of its own (below) |
//! | core dumps | `RLIMIT_CORE = 0` |
//! | output | the first `output_bytes` of stdout and stderr kept, the rest read and dropped |
//! | network | a new user + network namespace (`unshare`), where the kernel allows it; where it does not, `Outcome::network_isolated` is false and the caller says so |
//!
//! | user | run by root (CI, containers): a uid of its own per program (100000 and up, no login), its directory chowned to it; so it cannot write outside that directory (world-writable `/tmp` and `/dev/shm` aside), signal the evaluator or another program, or exceed its process count. Run by another user: that user, in a user namespace |
//!
//! The group is killed after the program exits as well, so nothing it started outlives it;
//! under root, so is every process its uid still has (one that left the group included).

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a program may use.
#[derive(Clone, Debug)]
pub struct Limits {
    pub wall: Duration,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub file_bytes: u64,
    pub processes: u64,
    pub output_bytes: usize,
    /// Ask for a network namespace of its own (no network at all).
    pub isolate_network: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall: Duration::from_secs(10),
            cpu_seconds: 10,
            memory_bytes: 2 << 30,
            file_bytes: 64 << 20,
            processes: 256,
            output_bytes: 1 << 20,
            isolate_network: true,
        }
    }
}

/// How a program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    /// Killed by this signal (`SIGXCPU`/`SIGKILL` past the CPU limit, `SIGXFSZ`, a crash).
    Signaled(i32),
    /// Still running at the wall-clock limit; the group was killed.
    TimedOut,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub ending: Ending,
    pub stdout: String,
    pub stderr: String,
    /// Output beyond `output_bytes` was dropped.
    pub truncated: bool,
    pub wall: Duration,
    /// The program ran in a network namespace of its own.
    pub network_isolated: bool,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.ending == Ending::Exited(0)
    }
}

/// Runs `program args…` with `stdin` under `limits`, in a fresh temporary directory holding
/// `files` (name, contents) first.
pub fn run(program: &str, args: &[&str], files: &[(&str, &[u8])], stdin: &[u8], limits: &Limits) -> Result<Outcome> {
    let dir = tempfile::Builder::new()
        .prefix("syncoder-sandbox-")
        .tempdir()
        .context("creating the sandbox directory")?;
    for (name, bytes) in files {
        if name.contains('/') || name.starts_with('.') {
            anyhow::bail!("sandbox file name {name:?}: plain names only");
        }
        std::fs::write(dir.path().join(name), bytes).with_context(|| format!("writing sandbox file {name}"))?;
    }
    let user = own_user();
    if let Some(uid) = user {
        for entry in std::iter::once(dir.path().to_path_buf()).chain(files.iter().map(|(n, _)| dir.path().join(n))) {
            std::os::unix::fs::chown(&entry, Some(uid), Some(uid))
                .with_context(|| format!("giving {} to the sandbox's user {uid}", entry.display()))?;
        }
    }
    let start = Instant::now();
    let started = start_child(program, args, dir.path(), limits, limits.isolate_network, user);
    let (mut child, network_isolated) = match started {
        Ok(Some(c)) => c,
        // The namespace was granted but the uid could not be mapped in it (the program would
        // run as nobody, without its own directory): run it without, and say so.
        Ok(None) => start_child(program, args, dir.path(), limits, false, user)?
            .context("starting the sandboxed program without a network namespace")?,
        Err(e) => return Err(e),
    };
    let pgid = child.id() as libc::pid_t;

    let cap = limits.output_bytes;
    let out = capture(child.stdout.take(), cap);
    let err = capture(child.stderr.take(), cap);
    if let Some(mut input) = child.stdin.take() {
        // A program that exits without reading its input closes the pipe: not an error.
        let _ = input.write_all(stdin);
    }
    let ending = loop {
        if let Some(status) = child.try_wait().context("waiting for the sandboxed program")? {
            break match (status.code(), status.signal()) {
                (Some(c), _) => Ending::Exited(c),
                (None, Some(s)) => Ending::Signaled(s),
                _ => Ending::Signaled(0),
            };
        }
        if start.elapsed() >= limits.wall {
            // SAFETY: signalling the program's own process group (it called setsid).
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            let _ = child.wait();
            break Ending::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Whatever it left running in its group goes too, and under root whatever its uid runs.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
    if let Some(uid) = user {
        kill_every_process_of(uid);
    }
    let wall = start.elapsed();
    let (stdout, t1) = out.finish(Duration::from_secs(1));
    let (stderr, t2) = err.finish(Duration::from_secs(1));
    Ok(Outcome {
        ending,
        stdout,
        stderr,
        truncated: t1 || t2,
        wall,
        network_isolated,
    })
}

/// The uid a program runs as when root starts it: one of its own per program (distinct among
/// this process's concurrent programs, and by the pid among concurrent evaluators), so that
/// limits per user hold and one program cannot touch another. `None` when not root.
fn own_user() -> Option<u32> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let slot = NEXT.fetch_add(1, Ordering::Relaxed) % 256;
    Some(100_000 + (std::process::id() % 4000) * 256 + slot)
}

/// SIGKILL to every process `uid` has (what a program left behind outside its group).
fn kill_every_process_of(uid: u32) {
    use std::os::unix::process::CommandExt as _;
    // kill(-1) as that uid reaches exactly its processes (not the caller itself).
    let _ = Command::new("/bin/sh")
        .args(["-c", "kill -9 -1 2>/dev/null; exit 0"])
        .uid(uid)
        .gid(uid)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Starts the program (in its session, under the limits; without a network when `isolate` and
/// the kernel allows it: a network namespace of its own, under root before dropping to `user`,
/// otherwise inside a user namespace). `(child, isolated)`, or `None` when a user namespace was
/// granted but the uid and gid could not be mapped into it.
fn start_child(
    program: &str,
    args: &[&str],
    dir: &std::path::Path,
    limits: &Limits,
    isolate: bool,
    user: Option<u32>,
) -> Result<Option<(std::process::Child, bool)>> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let l = limits.clone();
    // The child reports through this pipe's one byte: 1 isolated, 0 not, 2 the maps failed.
    let (report_r, report_w) = pipe()?;
    // Inside its own user namespace the program keeps this uid and gid (identity maps), so it
    // still owns its directory. Prepared here: the child must not allocate.
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let maps: [(std::ffi::CString, Vec<u8>); 3] = [
        (c"/proc/self/setgroups".into(), b"deny".to_vec()),
        (c"/proc/self/uid_map".into(), format!("{uid} {uid} 1").into_bytes()),
        (c"/proc/self/gid_map".into(), format!("{gid} {gid} 1").into_bytes()),
    ];
    // SAFETY: between fork and exec only async-signal-safe calls are made (setsid, setrlimit,
    // unshare, open, write, close) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::close(report_r);
            let report = |b: u8| {
                libc::write(report_w, (&b as *const u8).cast(), 1);
                libc::close(report_w);
            };
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let set = |res, v: u64| {
                let r = libc::rlimit {
                    rlim_cur: v as libc::rlim_t,
                    rlim_max: v as libc::rlim_t,
                };
                libc::setrlimit(res, &r)
            };
            // SIGXCPU at the limit; SIGKILL a second later only for a program that ignores it
            // (equal limits would race the two).
            let cpu = l.cpu_seconds.max(1);
            libc::setrlimit(
                libc::RLIMIT_CPU,
                &libc::rlimit {
                    rlim_cur: cpu as libc::rlim_t,
                    rlim_max: (cpu + 1) as libc::rlim_t,
                },
            );
            set(libc::RLIMIT_AS, l.memory_bytes);
            set(libc::RLIMIT_FSIZE, l.file_bytes);
            set(libc::RLIMIT_NPROC, l.processes);
            set(libc::RLIMIT_CORE, 0);
            if let Some(uid) = user {
                // Root: a network namespace needs no user namespace; then this uid for good.
                let isolated = isolate && libc::unshare(libc::CLONE_NEWNET) == 0;
                report(u8::from(isolated));
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid as libc::gid_t) != 0
                    || libc::setuid(uid as libc::uid_t) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                return Ok(());
            }
            if !(isolate && libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) == 0) {
                report(0);
                return Ok(());
            }
            for (path, text) in &maps {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                let wrote = fd >= 0 && libc::write(fd, text.as_ptr().cast(), text.len()) == text.len() as isize;
                if fd >= 0 {
                    libc::close(fd);
                }
                if !wrote {
                    report(2);
                    return Err(std::io::Error::from_raw_os_error(libc::EPERM));
                }
            }
            report(1);
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // SAFETY: our copy of the write end (the child has its own), then one byte from the read
    // end, then closing it.
    let byte = unsafe {
        libc::close(report_w);
        let mut byte = [0u8; 1];
        let n = libc::read(report_r, byte.as_mut_ptr().cast(), 1);
        libc::close(report_r);
        if n == 1 {
            byte[0]
        } else {
            0
        }
    };
    match spawned {
        Ok(child) => Ok(Some((child, byte == 1))),
        Err(_) if byte == 2 => Ok(None),
        Err(e) => Err(e).with_context(|| format!("starting {program} in the sandbox")),
    }
}

/// A pipe's (read, write) descriptors, close-on-exec.
fn pipe() -> Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: a plain pipe2 call into a two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    Ok((fds[0], fds[1]))
}

/// A stream read to its end on a thread, keeping the first `cap` bytes.
struct Capture {
    kept: Arc<Mutex<(Vec<u8>, bool)>>,
    done: std::sync::mpsc::Receiver<()>,
}

fn capture<R: Read + Send + 'static>(r: Option<R>, cap: usize) -> Capture {
    let kept = Arc::new(Mutex::new((Vec::new(), false)));
    let (tx, done) = std::sync::mpsc::channel();
    let k = kept.clone();
    std::thread::spawn(move || {
        if let Some(mut r) = r {
            let mut buf = [0u8; 8192];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut g = k.lock().unwrap_or_else(|e| e.into_inner());
                        let room = cap.saturating_sub(g.0.len());
                        g.0.extend_from_slice(&buf[..n.min(room)]);
                        g.1 |= n > room;
                    }
                }
            }
        }
        let _ = tx.send(());
    });
    Capture { kept, done }
}

impl Capture {
    /// What was read, waiting at most `grace` for the stream's end (a process that escaped
    /// the group may still hold it open: the output is then marked truncated, never waited
    /// for).
    fn finish(self, grace: Duration) -> (String, bool) {
        let closed = self.done.recv_timeout(grace).is_ok();
        let g = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        (String::from_utf8_lossy(&g.0).into_owned(), g.1 || !closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Limits {
        Limits {
            wall: Duration::from_secs(5),
            ..Default::default()
        }
    }

    #[test]
    fn a_program_runs_in_a_fresh_directory_with_its_files() {
        let o = run(
            "sh",
            &["-c", "cat in.txt; pwd; echo err >&2; exit 3"],
            &[("in.txt", b"hello\n")],
            b"",
            &quick(),
        )
        .unwrap();
        assert_eq!(o.ending, Ending::Exited(3));
        assert!(o.stdout.starts_with("hello\n"), "{}", o.stdout);
        let dir = o.stdout.lines().nth(1).unwrap();
        assert!(dir.contains("syncoder-sandbox-"), "{dir}");
        assert!(
            !std::path::Path::new(dir).exists(),
            "the directory is removed afterwards"
        );
        assert_eq!(o.stderr, "err\n");
        let o = run("sh", &["-c", "read x; echo got $x"], &[], b"42\n", &quick()).unwrap();
        assert_eq!((o.ending, o.stdout.as_str()), (Ending::Exited(0), "got 42\n"));
        assert!(run("sh", &[], &[("../x", b"")], b"", &quick()).is_err());
        assert!(run("/nonexistent/program", &[], &[], b"", &quick()).is_err());
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let limits = Limits {
            wall: Duration::from_millis(500),
            ..Default::default()
        };
        // A background child that would outlive its parent (holding its output open), then a
        // loop.
        let t = Instant::now();
        let o = run(
            "sh",
            &["-c", "sleep 60 & echo $!; while :; do :; done"],
            &[],
            b"",
            &limits,
        )
        .unwrap();
        assert_eq!(o.ending, Ending::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let pid: i32 = o.stdout.trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
        assert!(!alive || zombie, "the background child {pid} survived");
        // A child that leaves the group (its own session) is not waited for either.
        let t = Instant::now();
        let script = "setsid sh -c 'echo escaped $$; exec sleep 3' & sleep 0.3; echo done";
        let o = run("sh", &["-c", script], &[], b"", &limits).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(o.stdout.contains("escaped"), "{o:?}");
        if own_user().is_some() {
            // Under root the escapee runs as the program's own uid, and goes with it.
            assert!(!o.truncated, "{o:?}");
            let pid: i32 = o
                .stdout
                .lines()
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .unwrap()
                .parse()
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: signal 0 only asks whether the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
            assert!(!alive || zombie, "the escaped process {pid} survived");
        } else {
            assert!(o.truncated, "{o:?}");
        }
    }

    #[test]
    fn cpu_memory_file_and_output_limits_hold() {
        // Stopped by the CPU limit, not the (much longer) wall clock.
        let limits = Limits {
            wall: Duration::from_secs(60),
            cpu_seconds: 1,
            ..Default::default()
        };
        let o = run("sh", &["-c", "while :; do :; done"], &[], b"", &limits).unwrap();
        assert!(
            matches!(o.ending, Ending::Signaled(libc::SIGXCPU | libc::SIGKILL)),
            "{:?}",
            o.ending
        );

        let limits = Limits {
            file_bytes: 1 << 20,
            ..quick()
        };
        let o = run("sh", &["-c", "head -c 4000000 /dev/zero > big"], &[], b"", &limits).unwrap();
        assert!(!o.passed(), "{:?}", o.ending);

        let limits = Limits {
            memory_bytes: 256 << 20,
            ..quick()
        };
        if std::process::Command::new("python3")
            .arg("-c")
            .arg("1")
            .output()
            .is_ok()
        {
            let o = run("python3", &["-c", "x = bytearray(1 << 30)"], &[], b"", &limits).unwrap();
            assert!(
                !o.passed() && o.stderr.contains("MemoryError"),
                "{:?} {}",
                o.ending,
                o.stderr
            );
        }

        let limits = Limits {
            output_bytes: 1000,
            ..quick()
        };
        let o = run(
            "sh",
            &["-c", "head -c 5000000 /dev/zero | tr '\\0' a"],
            &[],
            b"",
            &limits,
        )
        .unwrap();
        assert!(
            o.passed() && o.truncated && o.stdout.len() == 1000,
            "{} {:?}",
            o.stdout.len(),
            o.ending
        );
    }

    #[test]
    fn the_network_is_unreachable_where_isolation_is_possible() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
        let o = run("bash", &["-c", &probe], &[], b"", &quick()).unwrap();
        if o.network_isolated {
            assert!(!o.stdout.contains("connected"), "reached the host's loopback: {o:?}");
        } else {
            eprintln!("this kernel refuses unprivileged network namespaces: not isolated here");
            assert!(o.stdout.contains("connected"), "{o:?}");
        }
        let open = Limits {
            isolate_network: false,
            ..quick()
        };
        let o = run("bash", &["-c", &probe], &[], b"", &open).unwrap();
        assert!(!o.network_isolated && o.stdout.contains("connected"), "{o:?}");
    }
}
